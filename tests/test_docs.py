"""The docs site: the generated key reference is current, the hand-written spec reference lists
exactly the keys the code accepts, and `mkdocs build --strict` (every link and anchor checked)
passes — what `make docs` runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import spec_reference  # noqa: E402


def hand_written_tables() -> dict[str, set[str]]:
    """The keys in the first column of the first key table of each section of
    docs/spec-reference.md, by the title of the generated page's section it describes; and the
    transform stage's table of steps (`Step`), whose `drop / select` row names two."""
    titles = {
        "## Top level": "Top level",
        "### `executor`": "`executor`",
        "### `store`": "`store`",
        "### `triggers`": "`triggers`",
        "## Stages": "A stage",
    }
    tables: dict[str, set[str]] = {}
    section, done = None, set()
    for line in (ROOT / "docs" / "spec-reference.md").read_text().splitlines():
        if line.startswith("#"):
            stage = re.match(r"## (?:Built-in|Plugin) stage type `(\w+)`", line)
            section = f"Stage type `{stage[1]}`: `with:`" if stage else titles.get(line.strip())
            continue
        steps = section == "Stage type `transform`: `with:`" and section in done
        if steps and line.startswith("| `"):  # the steps table, after the with: table
            tables.setdefault("Step", set()).update(re.findall(r"`(\w+)`", line.split("|")[1]))
            continue
        key = re.match(r"\| `([A-Za-z0-9_]+)` \|", line)
        if section and key and section not in done:
            tables.setdefault(section, set()).add(key[1])
        elif section in tables and not line.startswith("|"):
            done.add(section)
    return tables


def test_the_generated_key_reference_is_current() -> None:
    assert spec_reference.main(["--check"]) == 0, "run: python tools/spec_reference.py"


def test_the_hand_written_spec_reference_lists_every_key_the_schema_has_and_no_other() -> None:
    schema = spec_reference.schema()
    expected = {
        title: set(node.get("properties", {})) for title, node in spec_reference.sections(schema)
    }
    expected["Step"] = set(schema["$defs"]["Step"]["properties"])
    # "Everything train takes, plus a search": the tune table lists what it adds
    train = "Stage type `train`: `with:`"
    expected["Stage type `tune`: `with:`"] -= expected[train]
    written = hand_written_tables()
    assert set(written) == set(expected), "a section of docs/spec-reference.md is missing"
    drift = {
        title: {
            "undocumented": sorted(expected[title] - written[title]),
            "not in the code": sorted(written[title] - expected[title]),
        }
        for title in expected
        if expected[title] != written[title]
    }
    assert not drift, f"docs/spec-reference.md differs from the schema: {drift}"


@pytest.mark.slow
def test_the_docs_site_builds_with_every_link_and_anchor_checked(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "spec-keys" / "index.html").exists()
    assert (tmp_path / "site" / "ci" / "github-actions.yml").exists()
    # the client scripts docs/serving.md links to are files of the site too
    assert (tmp_path / "site" / "examples" / "ab_client.py").exists()
