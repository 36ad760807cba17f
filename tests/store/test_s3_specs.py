"""Every example spec runs on an S3 store (moto's server, through s3fs as a real endpoint is, the
metadata in local SQLite) and stores the same bytes as on a local store: the same artifact digest
for every stage output; ``pipeflow store check`` finds the S3 store clean; a second run reuses
everything from S3. The local run is the session's (the ``example_run`` fixture), which
tests/test_specs.py starts from too: each spec runs locally once, not twice."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ExampleRun, cli_env, pipeflow, pipeflow_ok

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*/pipeline.yaml"))

#: fields of a registry record that say which run wrote it and when, so differ between two runs
PER_RUN = {"created", "time", "run_id", "reason"}


def _copy(spec: Path, where: Path, root: str | None = None) -> Path:
    shutil.copytree(spec.parent, where, ignore=shutil.ignore_patterns(".pipeflow", "__pycache__"))
    path = where / "pipeline.yaml"
    if root is not None:  # the store URL in the spec itself, as a team would write it
        path.write_text(path.read_text() + f'\nstore: {{root: "{root}"}}\n')
    return path


def _outputs(shown: dict) -> tuple[dict, dict[tuple[str, str], str]]:
    """Stage -> state, and (stage, port) -> digest for every output but a promotion's (its
    version record and model card name the run and the time: compared by :func:`_registry`),
    from ``runs show latest --json``."""
    states = {s["stage"]: s["state"] for s in shown["stages"]}
    promotions = {s["stage"] for s in shown["stages"] if s["type"] == "promote"}
    digests = {
        (o["stage"], o["port"]): o["digest"]
        for o in shown["outputs"]
        if o["stage"] not in promotions
    }
    return states, digests


def _shown(spec: Path, env: dict[str, str]) -> dict:
    argv = ["runs", "show", "latest", "--json", "--spec", spec]
    return json.loads(pipeflow_ok(argv, env=env).stdout)


def _models(spec: Path, env: dict[str, str]) -> dict[str, dict]:
    """``models show NAME --json`` of every model of the spec's registry."""
    listed = pipeflow_ok(["models", "list", "--json", "--spec", spec], env=env).stdout
    return {
        name: json.loads(
            pipeflow_ok(["models", "show", name, "--json", "--spec", spec], env=env).stdout
        )
        for name in sorted(m["name"] for m in json.loads(listed))
    }


def _registry(models: dict[str, dict]) -> list[dict]:
    """Every model as ``models show --json`` has it, per-run fields out."""
    out = []
    for _, shown in sorted(models.items()):
        model = copy.deepcopy(shown)
        for record in [*model["versions"], *model["history"]]:
            for field in PER_RUN:
                record.pop(field, None)
            record.get("run", {}).pop("run_id", None)
        out.append(model)
    return out


def _monitor_stages(spec: Path) -> set[str]:
    from pipeflow.spec.load import load

    return {n for n, st in load(spec).spec.stages.items() if st.type == "monitor"}


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[p.parent.name for p in SPECS])
def test_example_spec_on_s3_stores_the_same_digests_as_on_a_local_store(
    spec: Path, tmp_path: Path, s3, example_run: Callable[[Path], ExampleRun]
) -> None:
    env = cli_env(**s3.env)
    root = f"{s3.bucket()}/{spec.parent.name}"
    remote = _copy(spec, tmp_path / "s3", root)

    local = example_run(spec)  # the session's first local run of the spec (tests/test_specs.py's)
    assert local.first.returncode == 0, local.first.stdout + local.first.stderr
    first = pipeflow(["run", remote, "--quiet"], env=env, timeout=600)
    local_states, local_digests = _outputs(local.shown)
    states, digests = _outputs(_shown(remote, env))

    assert first.returncode == 0, first.stdout + first.stderr
    assert states == local_states and all(st == "done" for st in states.values()), states
    # a monitor stage's report says when it looked: its bytes differ between any two runs
    monitors = {s for s, _ in local_digests if s in _monitor_stages(local.spec)}
    expected = {k: d for k, d in local_digests.items() if k[0] not in monitors}
    assert expected and {k: d for k, d in digests.items() if k[0] not in monitors} == expected
    assert _registry(_models(remote, env)) == _registry(local.models)  # the same promotion

    check = pipeflow_ok(["store", "check", "--spec", remote], env=env)
    assert check.stdout.startswith(f"ok: store s3://{root.removeprefix('s3://')}"), check.stdout

    pipeflow(["run", remote, "--quiet"], env=env, timeout=300)
    again, _ = _outputs(_shown(remote, env))
    assert all(st == "cached" for s, st in again.items() if s not in monitors), again
