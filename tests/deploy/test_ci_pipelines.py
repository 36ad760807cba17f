"""The CI/CD pipelines of docs/ci/ (GitHub Actions and GitLab CI), run for real on this machine.

Both files are parsed; their commands (all but the install, which the Dockerfile tests cover) must
be the same sequence with the same settings, so the two cannot drift apart, and each install names
the plugins the spec's stage types come from. That sequence is then
run in bash, as the CI runner would run it, against a store in a temporary folder: check the
claims spec, run it with `params.alias=staging` (its promote stage gates the model), serve
staging and smoke-test it with the run's held-out rows (docs/ci/smoke.py), promote to production.
A smoke test that fails (an accuracy bar above what the model reaches) must stop the sequence
before production moves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import pipeflow_ok

from pipeflow.testing import cli_env, free_port

ROOT = Path(__file__).parents[2]
CI = ROOT / "docs" / "ci"
SETTINGS = ("SPEC", "MODEL", "MIN_ACCURACY", "SMOKE_PORT")

pytestmark = pytest.mark.slow


def github() -> tuple[list[str], dict[str, str]]:
    """The commands of the GitHub workflow's `run` steps, jobs in `needs` order, and its env."""
    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    jobs, ordered = flow["jobs"], []
    while len(ordered) < len(jobs):  # a job after the jobs it needs
        for name, job in jobs.items():
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            if name not in ordered and all(n in ordered for n in needs):
                ordered.append(name)
    commands = [
        line.strip()
        for name in ordered
        for step in jobs[name]["steps"]
        if "run" in step and step.get("name") != "install"
        for line in step["run"].splitlines()
        if line.strip()
    ]
    return commands, {k: str(v) for k, v in flow["env"].items()}


def gitlab() -> tuple[list[str], dict[str, str]]:
    """The commands of the GitLab pipeline's jobs, in the order of its stages, and its variables."""
    flow = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    jobs = [
        (flow["stages"].index(job["stage"]), job["script"])
        for job in flow.values()
        if isinstance(job, dict) and "stage" in job
    ]
    commands = [line.strip() for _, script in sorted(jobs, key=lambda j: j[0]) for line in script]
    return commands, {k: str(v) for k, v in flow["variables"].items()}


def test_the_github_and_gitlab_pipelines_hold_the_same_commands_and_settings() -> None:
    gh_commands, gh_env = github()
    gl_commands, gl_env = gitlab()
    assert gh_commands == gl_commands
    assert {k: gh_env[k] for k in SETTINGS} == {k: gl_env[k] for k in SETTINGS}
    assert gh_commands[0].startswith("pipeflow check")
    assert gh_commands[-1].startswith("pipeflow models promote")
    # the production job waits for a person on both
    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    assert flow["jobs"]["production"]["environment"] == "production"
    assert yaml.safe_load((CI / "gitlab-ci.yml").read_text())["promote"]["when"] == "manual"


def run_pipeline(project: Path, store: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    commands, env = github()
    bin_dir = str(Path(sys.executable).parent)
    environment = cli_env(
        **{
            **{k: env[k] for k in SETTINGS},
            "PIPEFLOW_STORE__ROOT": str(store / "store"),
            "PIPEFLOW_STORE__METADATA": str(store / "history.db"),
            "SMOKE_PORT": str(free_port()),
            "COMMIT": "local-test",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            **settings,
        }
    )
    script = "set -eo pipefail\n" + "\n".join(commands) + "\n"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_ci_pipeline_gates_smoke_tests_staging_and_promotes_it_to_production(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "specs" / "claims", project / "specs" / "claims", ignore=shutil.ignore_patterns(".*")
    )
    shutil.copytree(CI, project / "docs" / "ci")
    where = ["--store", tmp_path / "store"]

    # a smoke test the model cannot pass: the sequence stops, production is never set
    failed = run_pipeline(project, tmp_path, MIN_ACCURACY="0.9999")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "ok   predict:" in failed.stdout
    assert "FAIL accuracy:" in failed.stdout
    shown = json.loads(
        pipeflow_ok(["models", "show", "claims-categoriser", "--json", *where]).stdout
    )
    assert set(shown["aliases"]) == {"staging"}

    # the pipeline as written: the run is reused from the store, staging passes, production moves
    done = run_pipeline(project, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   ready:" in done.stdout
    accuracy = next(line for line in done.stdout.splitlines() if "accuracy:" in line)
    assert accuracy.startswith("ok   accuracy:"), done.stdout
    assert float(accuracy.split()[2]) >= 0.94
    shown = json.loads(
        pipeflow_ok(["models", "show", "claims-categoriser", "--json", *where]).stdout
    )
    assert shown["aliases"]["production"] == shown["aliases"]["staging"]
    moves = [m for m in shown["history"] if m["alias"] == "production"]
    assert len(moves) == 1 and "smoke-tested by CI at commit local-test" in moves[0]["reason"]
    # the held-out rows the smoke test sent are the run's, every one of them
    heldout = (project / "heldout.csv").read_text().splitlines()
    assert f"ok   predict: {len(heldout) - 1} rows answered" in done.stdout


def test_both_pipelines_install_the_plugins_their_spec_uses() -> None:
    """`pipeflow check` refuses a stage type nobody installed: the claims spec's `sql` stage is
    the pipeflow-sql plugin's, so the install that precedes loading the spec must name it."""
    from importlib.metadata import entry_points

    spec = yaml.safe_load((ROOT / github()[1]["SPEC"]).read_text())
    used = {stage["type"] for stage in spec["stages"].values()}
    plugins = {
        ep.dist.name
        for ep in entry_points(group="pipeflow.stages")
        if ep.name in used and ep.dist is not None and ep.dist.name != "pipeflow"
    }
    assert plugins == {"pipeflow-sql"}
    staging = yaml.safe_load((CI / "github-actions.yml").read_text())["jobs"]["staging"]
    installs = [step["run"] for step in staging["steps"] if step.get("name") == "install"]
    installs += yaml.safe_load((CI / "gitlab-ci.yml").read_text())["default"]["before_script"]
    # a plugin by its name or as the checkout's folder of it (./plugins/pipeflow-sql)
    assert installs and all(plugins <= {Path(w).name for w in line.split()} for line in installs)


def test_no_pipeline_installs_pipeflow_by_name_from_the_package_index() -> None:
    """The `pipeflow` on PyPI is an unrelated project: an install line naming it would put
    somebody else's package on the CI machine. Every job installs pipeflow from the checkout."""
    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    installs = [
        step["run"]
        for job in flow["jobs"].values()
        for step in job["steps"]
        if step.get("name") == "install"
    ]
    installs += yaml.safe_load((CI / "gitlab-ci.yml").read_text())["default"]["before_script"]
    assert len(installs) == 3
    for line in installs:
        words = [w.strip("'\"") for w in line.split()[2:]]
        assert not [w for w in words if w.split("[")[0] == "pipeflow"], line
        assert any(w.split("[")[0] == "." for w in words), line
    # a job that installs from the checkout checks it out first
    for job in flow["jobs"].values():
        uses = [step.get("uses", "") for step in job["steps"]]
        assert any(u.startswith("actions/checkout@") for u in uses)
