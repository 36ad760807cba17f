"""`pipeflow data list/show`: every version of an ingested dataset, and which runs used it."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import pipeflow

from pipeflow.testing import write_spec


def test_each_content_of_a_source_is_a_version_with_its_runs(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: data-demo
        stages:
          raw: {type: ingest, with: {path: claims.csv}}
          n:
            type: python
            inputs: {t: raw}
            with: {function: "steps:count"}
        """,
        {"steps.py": "def count(t):\n    return len(t)\n", "claims.csv": "id\n1\n2\n"},
    )
    assert pipeflow(["run", str(spec)]).returncode == 0
    assert pipeflow(["run", str(spec)]).returncode == 0  # same data: same version, cached
    (tmp_path / "claims.csv").write_text("id\n1\n2\n3\n")
    assert pipeflow(["run", str(spec)]).returncode == 0

    listed = pipeflow(["data", "list", "--spec", str(spec), "--json"])
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert [v["runs"] for v in versions] == [
        1,
        2,
    ]  # newest first: the new file, then the old one used twice
    assert {v["source"] for v in versions} == {"claims.csv"}

    shown = pipeflow(["data", "show", versions[1]["version"][:10], "--spec", str(spec), "--json"])
    assert shown.returncode == 0, shown.stderr
    uses = json.loads(shown.stdout)["runs"]
    assert len(uses) == 2 and all(u["digest"] for u in uses)

    missing = pipeflow(["data", "show", "ffffffffff", "--spec", str(spec)])
    assert missing.returncode == 2 and "no dataset version" in missing.stderr
    text = pipeflow(["data", "list", "--spec", str(spec)])
    assert text.returncode == 0 and "claims.csv" in text.stdout
