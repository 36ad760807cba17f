"""A replica counts its own predictions as it writes them, and never parses them back: the
fleet's cells come out the same as a reader of the whole journal folds them."""

from __future__ import annotations

from pathlib import Path

from pipeflow.serving.fleet import Fleet
from pipeflow.store.journal import AuditLog

WHEN = 1_700_000_000.0


def _record(first: int, rows: int, when: float, latency_ms: float) -> dict[str, object]:
    ids = [f"p-{i:x}" for i in range(first, first + rows)]
    return {
        "id": ids[0], "ids": ids, "rows": rows, "time": when, "model": "m", "version": 3,
        "role": "primary", "route": "v1", "inputs": {"x": [1.0] * rows},
        "output": ["yes"] * rows, "probabilities": None, "flags": None,
        "latency_ms": latency_ms, "caller": "anonymous",
    }  # fmt: skip


def test_own_records_counted_at_write_give_the_cells_a_reader_of_the_journal_folds(
    tmp_path: Path,
) -> None:
    audit = AuditLog(tmp_path, "predictions")
    own = Fleet(tmp_path, lambda: audit.names)
    batches = [
        [_record(1, 1000, WHEN, 12.5), _record(1001, 3, WHEN, 80.0)],
        [_record(1004, 1, WHEN + 1.5, 4.0)],
    ]
    for records in batches:  # what the batcher does: write, then count
        audit.append(records)
        own.answered("m", 3, records[0]["time"], [(r["rows"], r["latency_ms"]) for r in records])
    own.refresh(WHEN + 2)  # reads nothing of its own: no row is counted twice
    reader = Fleet(tmp_path, set)  # another replica, or a restart: reads the whole journal
    reader.refresh(WHEN + 2)
    for start, end in ((WHEN, WHEN + 1), (WHEN + 1, WHEN + 2), (WHEN - 1, WHEN + 3)):
        assert own.window("m", 3, start, end) == reader.window("m", 3, start, end)
    window = own.window("m", 3, WHEN - 1, WHEN + 3)
    assert window["answered"] == 1004 and window["errors"] == 0
    assert own.followers["predictions"].offsets == {}  # its own segment was never opened
    assert reader.followers["predictions"].offsets  # the reader's was
