"""The guard of `production`: a bad version promoted under live traffic to three replicas is
rolled back by one of them within the window, recorded with its measurements, alerted, followed by
every replica with no failed request, and refused when promoted again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import (
    PREDICT,
    free_port,
    one_line_error,
    pipeflow,
    register_mislabelled_model,
    sample_rows,
    true_labels,
    wait_until,
)

from pipeflow.registry import Registry
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore

FEEDBACK = "/v1/models/tumours/feedback"
WINDOW_S = 30


def _client_loop(
    urls: list[str], rows: list, truth: list, stop: threading.Event, out: list
) -> None:
    """Post one row at a time round the replicas; label each answer at the next replica."""
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    try:
        i = 0
        while not stop.is_set():
            row = i % len(rows)
            r = clients[i % 3].post(PREDICT, json=rows[row])
            body = r.json()
            out.append((r.status_code, body.get("version"), time.monotonic()))
            if r.status_code == 200:
                pid = body["predictions"][0]["id"]
                clients[(i + 1) % 3].post(FEEDBACK, json={"id": pid, "outcome": truth[row]})
            i += 1
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_a_bad_version_promoted_under_traffic_is_rolled_back_once_with_no_failed_request(
    serve, tumours, own_store: Path, tmp_path: Path
) -> None:
    bad = register_mislabelled_model(tumours, own_store)
    alerts = tmp_path / "alerts.jsonl"
    guard = tmp_path / "guard.yaml"
    guard.write_text(
        f"min_accuracy: 0.8\np95_ms: 5000\nwindow: {WINDOW_S}s\nmin_requests: 20\n"
        f"sinks:\n  - type: file\n    path: {alerts}\n  - type: log\n"
    )
    replicas = [
        serve("tumours@production", "--reload-interval", "0.2", "--guard", str(guard),
              store=own_store)
        for _ in range(3)
    ]  # fmt: skip
    assert (
        "guarded (p95_ms 5000, min_accuracy 0.8, window 30s, min_requests 20)"
        in replicas[0].log.read_text()
    )
    rows, truth = sample_rows(tumours, 60), true_labels(tumours, 60)
    stop, out = threading.Event(), []
    loop = threading.Thread(
        target=_client_loop, args=([s.url for s in replicas], rows, truth, stop, out)
    )
    loop.start()
    registry = Registry(ArtifactStore(str(own_store)))
    try:
        wait_until(lambda: len(out) > 60, 30, "traffic on version 1")  # v1 passes its guard
        promoted = time.monotonic()
        moved = pipeflow(
            ["models", "promote", "tumours", str(bad), "--to", "production",
             "--store", str(own_store)],
            cwd=tumours,
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        wait_until(
            lambda: registry.history("tumours", "production")[-1]["action"] == "rollback",
            WINDOW_S,
            "the guard's rollback",
        )
        rolled_back = time.monotonic()

        def all_on_v1() -> bool:
            return all(httpx.get(s.url + "/ready").json()["version"] == 1 for s in replicas)

        wait_until(all_on_v1, 10, "every replica to serve version 1 again")
        time.sleep(1.0)  # and it stays there: no flapping
    finally:
        stop.set()
        loop.join(60)
    assert rolled_back - promoted < WINDOW_S, f"rolled back {rolled_back - promoted:.1f}s after"
    assert {status for status, _, _ in out} == {200}, "a request failed during the switch"
    assert any(version == bad for _, version, _ in out), "the bad version never served"
    assert out[-1][1] == 1 and all_on_v1()
    history = registry.history("tumours", "production")
    assert [e["action"] for e in history[-2:]] == ["promote", "rollback"]
    event = history[-1]
    assert (event["from_version"], event["to_version"]) == (bad, 1)
    assert event["reason"].startswith("guard: live accuracy") and event["user"] == "pipeflow-guard"
    measured = event["guard"]["measurements"]
    assert measured["labelled"] >= 20 and measured["accuracy"] < 0.8
    assert event["guard"]["limits"]["min_accuracy"] == 0.8
    # one replica rolled back and alerted, once
    (alert,) = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["rule"] == "guard" and alert["version"] == bad and alert["to_version"] == 1
    assert alert["measurements"]["accuracy"] == measured["accuracy"]
    rollbacks = [e for e in audit.read(own_store / "audit", "events")
                 if e["event"] == "guard_rollback"]  # fmt: skip
    assert len(rollbacks) == 1
    # the version rolled back is not promoted again without a person
    refused = pipeflow(
        ["models", "promote", "tumours", str(bad), "--to", "production", "--store", str(own_store)],
        cwd=tumours,
    )
    assert refused.returncode == 1
    message = one_line_error(refused.stderr)
    assert f"tumours@{bad} was rolled back from 'production' by the serving guard" in message
    assert "live accuracy" in message and "--force" in message
    assert registry.holder("tumours", "production") == 1
    no_reason = pipeflow(
        ["models", "promote", "tumours", str(bad), "--to", "production", "--force",
         "--store", str(own_store)],
        cwd=tumours,
    )  # fmt: skip
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr


def test_a_guard_that_names_no_limit_or_a_bad_value_is_refused_in_one_line(tumours) -> None:
    for guard, expected in (
        ("window=5m", "a guard needs at least one limit: error_rate, p95_ms, min_accuracy"),
        ("min_accuracy=1.5", "min_accuracy: Input should be less than or equal to 1"),
        ("min_accuracy=0.9,windw=5m", "windw: Extra inputs are not permitted"),
        ("p95_ms", "expected KEY=VALUE"),
    ):
        done = pipeflow(["serve", "tumours@production", "--guard", guard], cwd=tumours)
        assert done.returncode == 2, done.stderr
        assert expected in one_line_error(done.stderr), done.stderr
    port = str(free_port())  # the port is checked after the guard: a free one
    pinned = pipeflow(
        ["serve", "tumours@1", "--guard", "min_accuracy=0.9", "--port", port], cwd=tumours
    )
    assert pinned.returncode == 2
    assert "--guard guards an alias: serve tumours@ALIAS" in one_line_error(pinned.stderr)
