"""How a cache manifest is found, as a store holds them: one file per long stage
(``cache/ab/<key>.json``), short stages' in batch files. A run in a later ``pipeflow run``
process reuses every stage of a store written that way (both kinds present), and a missing
manifest file is a miss (the stage runs again). Real processes, a real local store."""

from __future__ import annotations

from pathlib import Path

from helpers import pipeflow_ok, stage_lines

from pipeflow.testing import write_spec

SPEC = """
    pipeline: lookup
    stages:
      slow: {type: python, with: {function: "steps:slow"}}
      quick: {type: python, inputs: {x: slow}, with: {function: "steps:quick"}}
      last: {type: python, inputs: {x: quick}, with: {function: "steps:quick"}}
"""
STEPS = """
    import time

    def slow():
        time.sleep(0.2)  # past ArtifactStore.durable_after_s: its manifest is a file of its own
        return {"out": 1}

    def quick(x):
        return {"out": x["out"] + 1}
"""


def _manifest_files(spec: Path) -> list[Path]:
    cache = spec.parent / ".pipeflow" / "cache"
    return [p for p in cache.glob("??/*.json")]


def test_a_later_process_reuses_stages_whose_manifests_are_files_and_batches(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    first = stage_lines(pipeflow_ok(["run", spec]).stdout)
    assert {s for s, (state, _) in first.items()} == {"slow", "quick", "last"}
    assert all(state == "done" for state, _ in first.values())
    assert len(_manifest_files(spec)) == 1  # the slow stage's; the quick ones are batched
    assert list((spec.parent / ".pipeflow" / "cache" / "batches").glob("*.jsonl"))

    again = stage_lines(pipeflow_ok(["run", spec]).stdout)
    assert {s: state for s, (state, _) in again.items()} == dict.fromkeys(first, "cached")


def test_a_stage_whose_manifest_file_is_gone_runs_again_and_the_rest_are_reused(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    pipeflow_ok(["run", spec])
    (manifest,) = _manifest_files(spec)
    manifest.unlink()

    again = stage_lines(pipeflow_ok(["run", spec]).stdout)
    # slow runs again, gives the same bytes, so its consumers are found in the store at run time
    assert again["slow"][0] == "done"
    assert again["quick"][0] == "cached" and again["last"][0] == "cached"
    assert len(_manifest_files(spec)) == 1  # written again
