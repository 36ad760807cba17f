"""`pipeflow models archive` end to end: real commands on the tumours registry, a real
`pipeflow serve` that refuses an archived version at start and whose alias watch never switches
to one, and batch `predict` refusing it too."""

from __future__ import annotations

import json
import time
from pathlib import Path

from helpers import PREDICT, one_line_error, pipeflow, sample_rows

from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore


def _models(own_store: Path, *args: str, cwd: Path):
    return pipeflow(["models", *args, "--store", str(own_store)], cwd=cwd)


def test_archive_is_shown_refused_by_promotion_serve_and_predict_then_restored(
    tumours: Path, own_store: Path, tmp_path: Path
) -> None:
    held = _models(own_store, "archive", "tumours@1", cwd=tumours)
    assert held.returncode == 1
    assert "tumours@1 holds alias 'production'" in one_line_error(held.stderr)

    done = _models(own_store, "archive", "tumours@2", "--reason", "worse than v1", cwd=tumours)
    assert done.returncode == 0, done.stderr
    shown = json.loads(_models(own_store, "show", "tumours", "--json", cwd=tumours).stdout)
    assert shown["archived"] == [2]
    assert [v["archived"] for v in shown["versions"]] == [False, True]
    assert shown["archive_history"][0]["reason"] == "worse than v1"
    table = _models(own_store, "show", "tumours", cwd=tumours).stdout
    assert "archived" in table and "archive history" in table
    listed = json.loads(_models(own_store, "list", "--json", cwd=tumours).stdout)
    assert listed[0]["archived"] == [2]

    promoted = _models(own_store, "promote", "tumours", "2", "--to", "production", cwd=tumours)
    assert promoted.returncode == 1
    assert "tumours@2 not promoted to 'production': it is archived" in one_line_error(
        promoted.stderr
    )

    served = pipeflow(
        ["serve", "tumours@2", "--store", str(own_store), "--port", "0"], cwd=tumours, timeout=60
    )
    assert served.returncode == 1
    message = one_line_error(served.stderr)
    assert "tumours@2 is archived" in message and "pipeflow models restore tumours@2" in message

    rows = tmp_path / "rows.csv"
    import pandas as pd

    pd.DataFrame(sample_rows(tumours, 3)).to_csv(rows, index=False)
    scored = pipeflow(
        ["predict", "tumours@2", "--input", rows, "--output", tmp_path / "out.csv"]
        + ["--store", str(own_store)],
        cwd=tumours,
    )
    assert scored.returncode == 1 and "tumours@2 is archived" in one_line_error(scored.stderr)
    assert not (tmp_path / "out.csv").exists()

    back = _models(own_store, "unarchive", "tumours@2", cwd=tumours)
    assert back.returncode == 0, back.stderr
    promoted = _models(own_store, "promote", "tumours", "2", "--to", "staging", cwd=tumours)
    assert promoted.returncode == 0, promoted.stderr


def test_the_alias_watch_never_switches_to_an_archived_version(
    serve, tumours: Path, own_store: Path
) -> None:
    registry = Registry(ArtifactStore(str(own_store)))
    registry.archive("tumours", 2, reason="retired")
    s = serve("tumours@production", "--reload-interval", "0.2", store=own_store)
    # a promotion that checked v2 before the archive landed: its alias event names v2 anyway
    events = registry.history("tumours", "production")
    raced = {**events[-1], "seq": events[-1]["seq"] + 1, "from_version": 1, "to_version": 2}
    raced["time"] = time.time()
    path = f"registry/tumours/aliases/production/{raced['seq']}.json"
    assert registry.store.create_exclusive(path, json.dumps(raced).encode())
    assert registry.holder("tumours", "production") == 2

    with s.client() as c:
        time.sleep(1.5)  # several reload intervals
        assert c.post(PREDICT, json=sample_rows(tumours, 1)).json()["version"] == 1
        assert "tumours@2 is archived" in s.log.read_text()
        registry.restore("tumours", 2, reason="archived by mistake")
        deadline = time.monotonic() + 20
        version = 1
        while time.monotonic() < deadline and version != 2:
            time.sleep(0.1)
            version = c.post(PREDICT, json=sample_rows(tumours, 1)).json()["version"]
    assert version == 2  # restored: the watch now follows the alias
