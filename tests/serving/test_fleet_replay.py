"""A replica that starts replays the fleet's journal record by record (pipeflow.serving.fleet):
it folds the state the replica that wrote it had, keeps only its last predictions in memory yet
counts feedback for an earlier one, and skips a torn or bad line as the journal's readers do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from helpers import PREDICT, counter, sample_rows, true_labels, wait_until

from pipeflow.serving.fleet import Fleet
from pipeflow.store.journal import AuditLog

FEEDBACK = "/v1/models/tumours/feedback"
WHEN = 1_700_000_000.0


def test_a_restarted_replica_folds_what_real_requests_wrote_as_the_replica_that_answered(
    serve: Any, tumours: Path, own_store: Path
) -> None:
    server = serve("tumours@production", "--reload-interval", "0.2", store=own_store)
    rows, truth = sample_rows(tumours, 401), true_labels(tumours, 401)
    answered: list[dict[str, Any]] = []
    with server.client() as c:
        for start, end in ((0, 200), (200, 400), (400, 401)):
            r = c.post(PREDICT, json=rows[start:end])
            assert r.status_code == 200, r.text
            answered += r.json()["predictions"]
        labelled = [
            {"id": p["id"], "outcome": t} for p, t in zip(answered, truth[:50], strict=False)
        ]
        wrong = "benign" if truth[0] == "malignant" else "malignant"
        items = [*labelled, {"id": answered[0]["id"], "outcome": wrong}]  # replaces the first
        items.append({"id": "not-answered-yet", "outcome": truth[0]})
        assert c.post(FEEDBACK, json=items).json() == {"recorded": 52}
    right = sum(p["prediction"] == t for p, t in zip(answered[1:50], truth[1:50], strict=True))
    right += answered[0]["prediction"] == wrong

    def gauges() -> tuple[float, float]:
        with server.client() as c:
            text = c.get("/metrics").text
        return counter(text, "pipeflow_fleet_labelled"), counter(text, "pipeflow_fleet_accuracy")

    # the answering replica's own view, labelled as the feedback came
    wait_until(lambda: gauges() == (50, round(right / 50, 4)), 10, "the replica's accuracy")
    server.stop()

    replay = Fleet(own_store / "audit", set)
    replay.refresh(time.time())

    assert replay.counts_of("tumours", 1) == [right, 50]
    assert set(replay.labels) == {p["id"] for p in answered[:50]}
    assert list(replay.pending) == ["not-answered-yet"]
    for p in answered:
        assert replay.recent.get(p["id"]) == ("tumours", 1, p["prediction"])
    window = replay.window("tumours", 1, time.time() - 600, time.time() + 1)
    assert (window["answered"], window["errors"], window["labelled"]) == (401, 0, 50)
    assert window["p95_ms"] is not None


def _request(first: int, rows: int, when: float, output: str = "yes") -> dict[str, Any]:
    ids = [f"p-{i}" for i in range(first, first + rows)]
    return {
        "id": ids[0], "ids": ids, "rows": rows, "time": when, "model": "m", "version": 2,
        "inputs": {"x": [0.5] * rows}, "output": [output] * rows, "probabilities": None,
        "latency_ms": 10.0,
    }  # fmt: skip


def test_feedback_counts_for_a_prediction_the_replay_no_longer_keeps_and_bad_lines_are_skipped(
    tmp_path: Path,
) -> None:
    predictions = AuditLog(tmp_path, "predictions")
    predictions.append([_request(0, 10, WHEN - 7200, "old")])  # beyond the hour kept in cells
    predictions.append([_request(10 * k, 10, WHEN + k) for k in range(1, 6)])
    predictions.append([{"id": "p-row", "time": WHEN, "model": "m", "version": 2, "output": "no"}])
    AuditLog(tmp_path, "feedback").append(
        [
            {"id": "p-10", "time": WHEN + 9, "outcome": "yes"},  # the first request's
            {"id": "p-5", "time": WHEN + 9, "outcome": "old"},  # beyond the horizon's
            {"id": "p-row", "time": WHEN + 9, "outcome": "yes"},  # a row's record (before)
            {"id": "p-999", "time": WHEN + 9, "outcome": "yes"},  # not answered (yet)
        ]
    )
    segment = predictions.path
    assert segment is not None
    torn = b'{"id": "p-torn", "ids": ["p-torn"], "model": "m", "version": 2, "ti'
    with open(segment, "ab") as fh:  # not JSON, not an object, a wrong type, a torn tail
        fh.write(b"{not json\n[1, 2]\n" + b'{"model": "m", "version": "2", "ids": ["x"]}\n')
        fh.write(torn)

    fleet = Fleet(tmp_path, set)
    fleet.recent.keep = 10  # the last 10 to 20 predictions kept: p-10 is gone by the end
    fleet.refresh(WHEN + 10)

    assert fleet.recent.get("p-10") is None and fleet.recent.get("p-59") is not None
    assert fleet.counts_of("m", 2) == [2, 3]  # p-10 right, p-5 right, p-row wrong
    assert list(fleet.pending) == ["p-999"]
    assert {k[2] for k in fleet.cells} == {int(WHEN) + k for k in range(0, 10)} - {
        int(WHEN) + k for k in (6, 7, 8)
    }  # the answers' seconds and the labels' (WHEN + 9); none two hours old
    window = fleet.window("m", 2, WHEN - 1, WHEN + 10)
    assert (window["answered"], window["labelled"], window["accuracy"]) == (51, 3, 0.6667)
    offsets = fleet.followers["predictions"].offsets
    assert offsets[segment.name] == segment.stat().st_size - len(torn)  # read again next time
