"""The audit journal's two formats of predictions, read by every reader: the record per row
written before issue 20 and the record per request written now (ids, inputs as columns), in
real journal files. Each reader must see the same rows, ids, inputs and outputs either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeflow.monitoring.compare import collect
from pipeflow.monitoring.monitor import audit_schema, load_window
from pipeflow.serving.fleet import Fleet
from pipeflow.store import journal
from pipeflow.ui.traffic import TrafficIndex

RECORD = {  # a registry record's signature, as train writes it
    "version": 3,
    "signature": {
        "features": [
            {"name": "size", "dtype": "float64", "role": "numeric"},
            {"name": "colour", "dtype": "object", "role": "categorical"},
        ],
        "classes": ["no", "yes"],
    },
}

ROWS = [  # (id, inputs, output, probabilities, flags)
    ("pold-1", {"size": 1.5, "colour": "red"}, "no", {"no": 0.9, "yes": 0.1}, []),
    ("pold-2", {"size": None, "colour": "blue"}, "yes", {"no": 0.2, "yes": 0.8}, ["odd"]),
    ("pnew-1", {"size": 2.0, "colour": "red"}, "yes", {"no": 0.4, "yes": 0.6}, []),
    ("pnew-2", {"size": 3.5, "colour": None}, "no", {"no": 0.7, "yes": 0.3}, ["colour: x"]),
    ("pnew-3", {"size": 4.0, "colour": "green"}, "no", {"no": 0.6, "yes": 0.4}, []),
]
WHEN = 1_700_000_000.0


def old_journal(folder: Path) -> None:
    """Two rows as the server wrote them before: one record per row, written by hand."""
    where = folder / "predictions"
    where.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "id": pid, "time": WHEN, "model": "m", "version": 3, "role": "primary",
                "route": "v1", "inputs": inputs, "output": out, "probabilities": probs,
                "flags": flags, "latency_ms": 5.0, "caller": "anonymous",
            }
        )
        for pid, inputs, out, probs, flags in ROWS[:2]
    ]  # fmt: skip
    (where / "oldhost-1-0000000000000000.jsonl").write_text("\n".join(lines) + "\n")


def new_journal(folder: Path) -> None:
    """Three rows of one request, as the batcher writes them now (pipeflow.serving.batcher)."""
    import numpy as np

    rows = ROWS[2:]
    journal.AuditLog(folder, "predictions").append(
        [
            {
                "id": rows[0][0],
                "ids": [r[0] for r in rows],
                "rows": len(rows),
                "time": WHEN + 1,
                "model": "m",
                "version": 3,
                "role": "canary",
                "route": "v1",
                "inputs": {
                    "size": np.array([r[1]["size"] for r in rows]),  # numbers as the model saw
                    "colour": [r[1]["colour"] for r in rows],
                },
                "output": [r[2] for r in rows],
                "probabilities": {c: [r[3][c] for r in rows] for c in ("no", "yes")},
                "flags": [r[4] for r in rows],
                "latency_ms": 7.0,
                "caller": "anonymous",
            }
        ]
    )


@pytest.fixture
def both(tmp_path: Path) -> Path:
    old_journal(tmp_path)
    new_journal(tmp_path)
    return tmp_path


def test_read_and_find_give_one_record_per_row_in_either_format(both: Path) -> None:
    read = {r["id"]: r for r in journal.read(both, "predictions")}
    assert set(read) == {r[0] for r in ROWS}
    for pid, inputs, out, probs, flags in ROWS:
        assert read[pid]["inputs"] == inputs
        assert read[pid]["output"] == out and read[pid]["probabilities"] == probs
        assert read[pid]["flags"] == flags and read[pid]["model"] == "m"
        (found,) = journal.find(both, "predictions", pid)  # what `pipeflow lineage ID` shows
        assert found == read[pid]
    assert read["pnew-2"]["role"] == "canary" and read["pnew-2"]["latency_ms"] == 7.0
    assert "ids" not in read["pnew-2"] and "rows" not in read["pnew-2"]


def test_the_fleet_view_and_the_traffic_index_count_rows_of_either_format(both: Path) -> None:
    fleet = Fleet(both, set)
    fleet.refresh(WHEN + 2)
    window = fleet.window("m", 3, WHEN - 1, WHEN + 3)
    assert window["answered"] == 5 and window["p95_ms"] == pytest.approx(7.0, rel=0.02)
    assert fleet.recent.get("pnew-3") == ("m", 3, "no")  # feedback for it finds its output
    assert fleet.label("pnew-3", "no", WHEN + 2) and fleet.counts_of("m", 3) == [1, 1]
    traffic = TrafficIndex(both, 60).totals()
    assert traffic["requests"] == 5 and traffic["flagged"] == 2


def test_monitoring_and_the_live_comparison_read_rows_of_either_format(both: Path) -> None:
    inputs, meta = load_window(
        both, "m", WHEN - 1, WHEN + 2, 3,
        schema=audit_schema(RECORD), request_schema=audit_schema(RECORD, requests=True),
    )  # fmt: skip
    assert sorted(meta["id"]) == sorted(r[0] for r in ROWS)
    plain = inputs.astype(object).where(inputs.notna(), None).to_dict("records")
    by_id = dict(zip(meta["id"], range(len(meta)), strict=True))
    for pid, row, out, _, flags in ROWS:
        at = by_id[pid]
        assert meta["output"][at] == out and bool(meta["flagged"][at]) == bool(flags)
        assert plain[at] == row
    found = collect(both, [("m", 3)], WHEN - 1, WHEN + 2)[("m", 3)]
    assert found["answered"] == 5 and found["roles"] == {"primary": 2, "canary": 3}
    assert found["outputs"]["pnew-1"] == "yes"


def test_a_window_that_holds_none_of_the_request_records_reads_as_empty(both: Path) -> None:
    """A request segment whose every record is outside the window (a monitor pass after the
    month's traffic, `pipeflow monitor --window 2s` on a quiet server) is no rows, not an error."""
    for start, end in ((WHEN + 10, WHEN + 12), (WHEN - 10, WHEN - 5)):
        inputs, meta = load_window(
            both, "m", start, end, 3,
            schema=audit_schema(RECORD), request_schema=audit_schema(RECORD, requests=True),
        )  # fmt: skip
        assert inputs.empty and meta.empty
    # only the old record-per-row segment in the window: its two rows, the request skipped
    inputs, meta = load_window(
        both, "m", WHEN - 1, WHEN + 0.5, 3,
        schema=audit_schema(RECORD), request_schema=audit_schema(RECORD, requests=True),
    )  # fmt: skip
    assert sorted(meta["id"]) == ["pold-1", "pold-2"]


def test_an_explained_request_reads_back_one_explanation_per_row_beside_old_records(
    both: Path,
) -> None:
    explained = {
        "id": "pexp-1", "ids": ["pexp-1", "pexp-2"], "rows": 2, "time": WHEN + 1.5,
        "model": "m", "version": 3, "role": "primary", "route": "v1",
        "inputs": {"size": [1.0, 2.0], "colour": ["red", "blue"]},
        "output": ["no", "yes"], "probabilities": {"no": [0.8, 0.3], "yes": [0.2, 0.7]},
        "flags": None, "latency_ms": 9.0, "caller": "anonymous",
        "explanation": {
            "method": "kernel", "output": "probability", "evaluations": 20,
            "base": [0.5, 0.5], "class": ["yes", "yes"],
            "contributions": {"size": [-0.2, 0.1], "colour": [-0.1, 0.1], "odd": [1.0]},
        },
    }  # fmt: skip
    journal.AuditLog(both, "predictions").append([explained])
    read = {r["id"]: r for r in journal.read(both, "predictions")}
    assert read["pexp-2"]["explanation"] == {
        "method": "kernel",
        "output": "probability",
        "evaluations": 20,
        "base": 0.5,
        "contributions": {"size": 0.1, "colour": 0.1, "odd": None},
        "class": "yes",
    }  # fmt: skip  (a column of the wrong length reads as nulls, as inputs do)
    assert read["pexp-1"]["inputs"] == {"size": 1.0, "colour": "red"}
    assert all("explanation" not in read[r[0]] for r in ROWS)  # old and plain records as ever
    (found,) = journal.find(both, "predictions", "pexp-1")
    assert found == read["pexp-1"]
    inputs, meta = load_window(
        both, "m", WHEN - 1, WHEN + 2, 3,
        schema=audit_schema(RECORD), request_schema=audit_schema(RECORD, requests=True),
    )  # fmt: skip
    assert sorted(meta["id"]) == sorted([r[0] for r in ROWS] + ["pexp-1", "pexp-2"])
