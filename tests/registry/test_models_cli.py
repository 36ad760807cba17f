"""The registry end to end: a real spec promotes real models; `pipeflow models` and `pipeflow
lineage` read what it recorded.

Each test sets up the registry it needs from module fixtures (tumours v1; v1 and a v2 that failed
its gate; v1, v2 and a promoted v3), and one that changes a registry changes a copy of its own: no
test depends on another having run before it, on the same worker or at all (``--dist worksteal``
may split the module)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import copy_project, pipeflow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """tumours v1 in production after one run; the tests given it only read its registry."""
    return tumours_v1(tmp_path_factory.mktemp("registry") / "tumours")


@dataclass(frozen=True)
class Ran:
    """A project after one more ``pipeflow run``, and what that run said."""

    project: Path
    run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def failed_gate(
    tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]
) -> Ran:
    """tumours v1, then a run whose v2 fails the accuracy gate (nothing changes it after)."""
    project = tumours_v1(tmp_path_factory.mktemp("failed-gate") / "tumours")
    run = pipeflow(
        [
            "run",
            "pipeline.yaml",
            "--quiet",
            "--set",
            "params.C=0.5",
            "--set",
            "params.min_accuracy=0.9999",
        ],
        cwd=project,
        timeout=300,
    )
    return Ran(project, run)


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory: pytest.TempPathFactory, failed_gate: Ran) -> Ran:
    """A copy of :func:`failed_gate`'s project, then a run whose v3 passes: v1, v2 (not
    promoted) and v3 in production, all from one source file (nothing changes it after)."""
    project = copy_project(failed_gate.project, tmp_path_factory.mktemp("three") / "tumours")
    run = pipeflow(
        ["run", "pipeline.yaml", "--quiet", "--set", "params.C=0.2"], cwd=project, timeout=300
    )
    return Ran(project, run)


def show(project: Path) -> dict:
    out = pipeflow(["models", "show", "tumours", "--json"], cwd=project)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_first_run_registers_and_promotes_with_a_full_record(project: Path) -> None:
    data = show(project)
    assert data["aliases"] == {"production": 1}
    v1 = data["versions"][0]
    assert v1["metrics"]["accuracy"] >= 0.9
    assert [g["kind"] for g in v1["gates"]] == ["threshold", "bias"]
    assert all(g["passed"] for g in v1["gates"])
    assert v1["signature"]["classes"] == ["benign", "malignant"]
    assert len(v1["data"]["train"]) == 64 and len(v1["data"]["evaluation"]) == 64
    assert v1["bias"]["attribute"] == "size_band"
    assert v1["importance"]["features"][0]["name"]
    assert v1["run"]["pipeline"] == "tumours" and v1["run"]["stage"] == "promote"
    listed = pipeflow(["models", "list"], cwd=project)
    assert listed.returncode == 0 and "production -> v1" in listed.stdout


def test_a_failed_gate_leaves_the_alias_and_names_both_numbers(failed_gate: Ran) -> None:
    project, out = failed_gate.project, failed_gate.run
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "tumours@2 registered but not promoted to 'production'" in text
    assert "needed >= 0.9999" in text and "accuracy is 0." in text
    data = show(project)
    assert data["aliases"] == {"production": 1}
    assert len(data["versions"]) == 2 and not data["versions"][1]["gates"][0]["passed"]


def test_promotion_rollback_and_history(three_versions: Ran, tmp_path: Path) -> None:
    out = three_versions.run
    assert out.returncode == 0, out.stdout + out.stderr
    project = copy_project(three_versions.project, tmp_path / "tumours")  # changed below
    assert show(project)["aliases"] == {"production": 3}

    back = pipeflow(
        ["models", "rollback", "tumours", "production", "--reason", "complaints"], cwd=project
    )
    assert back.returncode == 0, back.stderr
    assert "v1 (rolled back from v3)" in back.stdout
    refused = pipeflow(
        ["models", "promote", "tumours", "2", "--to", "production", "--gate", "accuracy>=0.9999"],
        cwd=project,
    )
    assert refused.returncode == 1 and "needed >= 0.9999" in refused.stderr
    staged = pipeflow(
        [
            "models",
            "promote",
            "tumours",
            "3",
            "--to",
            "staging",
            "--reason",
            "try it",
            "--champion",
            "accuracy:0.01",
        ],
        cwd=project,
    )
    assert staged.returncode == 0, staged.stderr
    moved = pipeflow(["models", "promote", "tumours", "staging", "--to", "production"], cwd=project)
    assert moved.returncode == 0 and "-> v3 (was v1)" in moved.stdout

    data = show(project)
    assert data["aliases"] == {"production": 3, "staging": 3}
    production = [e for e in data["history"] if e["alias"] == "production"]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in production] == [
        ("promote", None, 1),
        ("promote", 1, 3),
        ("rollback", 3, 1),
        ("promote", 1, 3),
    ]
    table = pipeflow(["models", "show", "tumours"], cwd=project)
    assert "complaints" in table.stdout and "rollback" in table.stdout


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)


def test_model_card_renders_as_markdown_and_html(project: Path) -> None:
    md = pipeflow(["models", "card", "tumours@1"], cwd=project)
    assert md.returncode == 0, md.stderr
    assert "tumours" in md.stdout and "pathologist" in md.stdout
    assert "size_band" in md.stdout and "data.csv" in md.stdout  # bias attribute, lineage source
    out = project / "card.html"
    html = pipeflow(
        ["models", "card", "tumours@production", "--format", "html", "-o", str(out)], cwd=project
    )
    assert html.returncode == 0, html.stderr
    parser = _Parser()
    parser.feed(out.read_text())
    assert "table" in parser.tags and "script" not in parser.tags


def test_lineage_reaches_the_source_file_and_versions_sharing_it(three_versions: Ran) -> None:
    project = three_versions.project
    out = pipeflow(["lineage", "tumours@1", "--json"], cwd=project)
    assert out.returncode == 0, out.stderr
    lineage = json.loads(out.stdout)
    assert [s["stage"] for s in lineage["stages"]] == ["raw", "split", "model", "scores", "promote"]
    (source,) = lineage["sources"]
    assert source["stage"] == "raw" and source["source"] == "data.csv"
    assert len(source["fingerprint"]) == 64
    shared = {s["model"] for s in lineage["shared_with"]}
    assert {"tumours@2", "tumours@3"} <= shared
    text = pipeflow(["lineage", "tumours@1"], cwd=project)
    assert "data.csv" in text.stdout and "tumours@3" in text.stdout


def test_clear_errors_for_unknown_models_and_versions(project: Path) -> None:
    for args, expected in [
        (("models", "show", "tumour"), "did you mean 'tumours'"),
        (("models", "card", "tumours@9"), "has no version 9"),
        (("lineage", "tumours@canary"), "has no alias 'canary'"),
        (("models", "rollback", "tumours", "nope"), "has no alias 'nope'"),
        (("models", "promote", "tumours", "1", "--to", "a/b"), "invalid alias"),
    ]:
        out = pipeflow(args, cwd=project)
        assert out.returncode != 0 and expected in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_promoting_a_version_the_fleet_withdrew_as_canary_says_so(
    failed_gate: Ran, tmp_path: Path
) -> None:
    """A replica that withdrew v2 as its canary recorded a fleet event; a person may still promote
    v2 (that is how it is tried again), and the command says what the fleet did with it."""
    from pipeflow.registry import Registry
    from pipeflow.workspace import open_workspace

    project = copy_project(failed_gate.project, tmp_path / "tumours")
    registry = Registry(open_workspace(str(project / "pipeline.yaml")).store)
    registry.record_fleet_event(  # what Rollout.publish records on a replica
        "tumours",
        {
            "event": "canary_withdrawn",
            "version": 2,
            "primary": "tumours@1",
            "reason": "error rate 0.31 > 0.05",
            "requests": 40,
            "errors": 12,
            "replica": "web-2",
        },
    )
    moved = pipeflow(
        ["models", "promote", "tumours", "2", "--to", "staging", "--reason", "retry"], cwd=project
    )
    assert moved.returncode == 0, moved.stderr
    assert "tumours@staging -> v2 (was unset)" in moved.stdout
    assert "v2 was withdrawn as the serving fleet's canary" in moved.stderr
    assert "replica web-2: error rate 0.31 > 0.05" in moved.stderr
    assert show(project)["aliases"]["staging"] == 2
    # v1 was never a withdrawn canary: no word about it
    other = pipeflow(["models", "promote", "tumours", "1", "--to", "staging"], cwd=project)
    assert other.returncode == 0 and "withdrawn" not in other.stdout + other.stderr
