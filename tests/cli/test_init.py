"""``pipeflow init``: each template, written into a new folder by the real command, passes
``pipeflow check`` and runs with ``pipeflow run`` as written (its sample data generated, its model
registered and promoted); a second run is all cache. A folder that is not empty is refused
unless ``--force``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_line_error, pipeflow, pipeflow_ok

TEMPLATES = ["classification", "regression", "text"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("template", TEMPLATES)
def test_a_new_project_checks_runs_and_registers_its_model(template: str, tmp_path: Path) -> None:
    made = pipeflow_ok(["init", "shop-" + template, "--template", template], cwd=tmp_path)
    project = tmp_path / f"shop-{template}"
    name = f"shop-{template}"
    assert f"created {name} ({template})" in made.stdout
    assert f"pipeflow serve {name}@production" in made.stdout
    written = {p.name for p in project.iterdir()}
    assert written == {
        "pipeline.yaml",
        "steps.py",
        "generate.py",
        "README.md",
        ".gitignore",
        "data",
    }
    assert len(list((project / "data").glob("*.csv"))) == 1
    assert "{{" not in (project / "pipeline.yaml").read_text() + (project / "README.md").read_text()

    checked = pipeflow(["check", "pipeline.yaml"], cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    first = pipeflow(["run", "pipeline.yaml"], cwd=project, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "7 done, 0 cached, 0 failed" in first.stdout
    again = pipeflow(["run", "pipeline.yaml"], cwd=project, timeout=300)
    assert "0 done, 7 cached, 0 failed" in again.stdout, again.stdout + again.stderr

    shown = json.loads(pipeflow_ok(["models", "show", name, "--json"], cwd=project).stdout)
    assert shown["aliases"] == {"production": 1}  # every gate passed on the sample data


def test_a_folder_that_is_not_empty_is_refused_unless_forced(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = pipeflow(["init", mine], cwd=tmp_path)
    assert refused.returncode == 2
    assert "is not empty (notes.txt): give an empty or new folder, or pass --force" in (
        one_line_error(refused.stderr)
    )
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    forced = pipeflow(["init", mine, "--force", "--template", "regression"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    assert "pipeline: mine" in (mine / "pipeline.yaml").read_text()
    assert (mine / "data" / "houses.csv").exists()


def test_a_name_that_cannot_name_a_pipeline_is_refused(tmp_path: Path) -> None:
    bad = pipeflow(["init", "x", "--name", "Not A Name"], cwd=tmp_path)
    assert bad.returncode == 2
    assert "--name 'Not A Name': expected 1-100 lower-case letters" in one_line_error(bad.stderr)
    assert not (tmp_path / "x").exists()
