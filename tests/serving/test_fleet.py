"""Three `pipeflow serve` processes over one store behave as one service: a canary withdrawn by
one is withdrawn by all, a restarted one never routes to it, and feedback posted to any replica
counts in every replica's live accuracy, in `pipeflow monitor` and in the dashboard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import (
    PREDICT,
    counter,
    pipeflow,
    register_failing_model,
    sample_rows,
    start_server,
    true_labels,
    wait_until,
)

FEEDBACK = "/v1/models/tumours/feedback"


def _canary_weight(server) -> float:  # noqa: ANN001 (helpers.Served)
    with server.client() as c:
        return c.get("/v1/models/tumours").json()["canary"]["weight"]


@pytest.mark.slow
def test_a_canary_withdrawn_by_one_replica_is_withdrawn_by_all_and_after_a_restart(
    serve, tumours, own_store: Path
) -> None:
    version = register_failing_model(own_store)
    args = (
        "tumours@production", "--canary", f"tumours@{version}", "--weight", "0.5",
        "--min-requests", "5", "--max-error-rate", "0.2", "--reload-interval", "0.2",
    )  # fmt: skip
    a, b, c = (serve(*args, store=own_store) for _ in range(3))
    assert [_canary_weight(s) for s in (a, b, c)] == [0.5, 0.5, 0.5]
    payload = sample_rows(tumours, 1)
    with a.client() as client:
        failed = [client.post(PREDICT, json=payload).status_code != 200 for _ in range(60)]
    assert any(failed) and _canary_weight(a) == 0  # replica a judged and withdrew it
    # b and c took no canary traffic, yet follow within their reload interval
    wait_until(lambda: _canary_weight(b) == 0 == _canary_weight(c), 10, "b and c to withdraw")
    for s in (b, c):
        with s.client() as client:
            answers = [client.post(PREDICT, json=payload) for _ in range(30)]
        assert {(r.status_code, r.json()["version"]) for r in answers} == {(200, 1)}
    fleet = sorted((own_store / "registry" / "tumours" / "fleet").glob("*.json"))
    assert [p.name for p in fleet] == ["1.json"]  # one decision, recorded once
    event = json.loads(fleet[0].read_text())
    assert event["event"] == "canary_withdrawn" and event["version"] == version
    assert "error rate" in event["reason"]
    # a restarted replica replays the fleet's events: it starts with the canary withdrawn
    c.stop()
    again = serve(*args, store=own_store)
    assert _canary_weight(again) == 0
    with again.client() as client:
        answers = [client.post(PREDICT, json=payload) for _ in range(30)]
    assert {(r.status_code, r.json()["version"]) for r in answers} == {(200, 1)}
    assert "(withdrawn by the fleet)" in again.log.read_text()


def _labelled(server) -> tuple[float, float]:  # noqa: ANN001
    with server.client() as c:
        text = c.get("/metrics").text
    return counter(text, "pipeflow_fleet_labelled"), counter(text, "pipeflow_fleet_accuracy")


@pytest.mark.slow
def test_feedback_to_any_replica_counts_in_every_replicas_live_accuracy_monitor_and_dashboard(
    serve, tumours, own_store: Path
) -> None:
    servers = [serve("tumours@production", "--reload-interval", "0.2", store=own_store)
               for _ in range(3)]  # fmt: skip
    rows, truth = sample_rows(tumours, 30), true_labels(tumours, 30)
    right = 0
    for i, server in enumerate(servers):  # 10 rows answered by each replica ...
        with server.client() as c:
            answered = c.post(PREDICT, json=rows[10 * i : 10 * i + 10]).json()["predictions"]
        items = [
            {"id": p["id"], "outcome": t}
            for p, t in zip(answered, truth[10 * i : 10 * i + 10], strict=True)
        ]
        right += sum(p["prediction"] == t for p, t in zip(answered, truth[10 * i :], strict=False))
        with servers[(i + 1) % 3].client() as c:  # ... and labelled at the next one
            r = c.post(FEEDBACK, json=items)
        assert r.status_code == 200 and r.json() == {"recorded": 10}
    expected = (30.0, right / 30)
    for server in servers:
        wait_until(lambda s=server: _labelled(s) == expected, 10, "the fleet's accuracy")
    # pipeflow monitor and the dashboard read every replica's journal
    shown = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--store", str(own_store), "--json"],
        cwd=tumours,
    )
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["rows"] == 30
    assert report["accuracy"]["labelled"] == 30
    assert report["accuracy"]["accuracy"] == pytest.approx(right / 30, abs=1e-4)
    from pipeflow.ui.app import create_app

    with TestClient(create_app(str(own_store), own_store / "pipeflow.db")) as dashboard:
        traffic = dashboard.get("/api/traffic", params={"model": "tumours"}).json()
    (v1,) = traffic["versions"]
    assert v1["requests"] == 30 and v1["p95_ms"] is not None


@pytest.mark.slow
def test_on_s3_two_machines_share_a_withdrawal_and_each_others_feedback(
    tumours, s3: Any, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    shutil.copytree(tumours / ".pipeflow", local, ignore=shutil.ignore_patterns("audit"))
    version = register_failing_model(local)
    url = s3.bucket()
    for part in ("registry", "objects"):  # the registry, with the failing version, on S3
        s3.filesystem().put(str(local / part), f"{url[5:]}/{part}", recursive=True)
    a, b = (
        start_server(
            tumours, "tumours@production", "--canary", f"tumours@{version}", "--weight", "0.5",
            "--min-requests", "5", "--max-error-rate", "0.2", "--reload-interval", "0.2",
            "--ship-interval", "0.5", store=url,  # type: ignore[arg-type]
            env={**s3.env, "PIPEFLOW_SPOOL": str(tmp_path / f"machine-{m}")}, log_dir=tmp_path,
        )
        for m in range(2)
    )  # fmt: skip
    try:
        payload = sample_rows(tumours, 1)
        with a.client() as client:
            codes = [client.post(PREDICT, json=payload).status_code for _ in range(60)]
        assert 500 in codes and _canary_weight(a) == 0  # a withdrew it
        wait_until(lambda: _canary_weight(b) == 0, 10, "b to apply a's withdrawal")
        rows, truth = sample_rows(tumours, 10), true_labels(tumours, 10)
        with a.client() as client:
            answered = client.post(PREDICT, json=rows).json()["predictions"]
        with b.client() as client:  # b learns a's predictions once a has shipped them
            items = [{"id": p["id"], "outcome": t} for p, t in zip(answered, truth, strict=True)]
            assert client.post(FEEDBACK, json=items).json() == {"recorded": 10}
        right = sum(p["prediction"] == t for p, t in zip(answered, truth, strict=True))
        for server in (a, b):
            wait_until(
                lambda s=server: _labelled(s) == (10.0, right / 10), 20, "the fleet's accuracy"
            )
    finally:
        a.stop()
        b.stop()
