"""A shadow version scores the answered rows off the answer path: every answer is the primary's,
the shadow's predictions are audited under the same prediction ids (so feedback scores both, and
`models compare --live` pairs them), a failing shadow fails no request, and a full queue drops
requests for the shadow, counted, instead of making anyone wait."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import (
    PREDICT,
    counter,
    pipeflow,
    register_failing_model,
    sample_rows,
    true_labels,
    wait_until,
)

from pipeflow.registry import Registry
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore

FEEDBACK = "/v1/models/tumours/feedback"


def _shadowed(store: Path) -> list[dict]:
    return list(audit.read(store / "audit", "shadow"))


@pytest.mark.slow
def test_a_shadow_is_audited_under_the_answers_ids_and_a_failing_one_fails_no_request(
    serve, tumours, own_store: Path
) -> None:
    failing = register_failing_model(own_store)
    with ThreadPoolExecutor(2) as pool:
        good, bad = pool.map(
            lambda shadow: serve("tumours@production", "--shadow", shadow, store=own_store),
            ["tumours@2", f"tumours@{failing}"],
        )
    rows, truth = sample_rows(tumours, 30), true_labels(tumours, 30)
    answers = {}
    with good.client() as c:
        for row in rows[:25]:
            r = c.post(PREDICT, json=row)
            assert r.status_code == 200 and r.json()["version"] == 1
            answers[r.json()["predictions"][0]["id"]] = r.json()["predictions"][0]["prediction"]
        r = c.post(PREDICT, json=rows[25:])  # one request of 5 rows
        assert r.json()["version"] == 1
        answers.update({p["id"]: p["prediction"] for p in r.json()["predictions"]})
    with bad.client() as c:
        codes = [c.post(PREDICT, json=row).status_code for row in rows[:10]]
    assert codes == [200] * 10  # the shadow's failures are not the answers'
    wait_until(lambda: len(_shadowed(own_store)) == 40, 10, "the shadow's records")
    records = _shadowed(own_store)
    scored = {r["id"]: r for r in records if r["version"] == 2}
    assert set(scored) == set(answers)  # row for row, under the answers' ids
    assert {(r["role"], r["model"], r["answered_by"]) for r in scored.values()} == {
        ("shadow", "tumours", 1)
    }
    model, _ = Registry(ArtifactStore(str(own_store))).load_model("tumours", 2)
    import pandas as pd

    expected = model.predict(pd.DataFrame(rows)).tolist()
    assert [scored[pid]["output"] for pid in answers] == expected
    failed = [r for r in records if r["version"] == failing]
    assert len(failed) == 10 and all("error" in r and "output" not in r for r in failed)
    # the answers' journal holds answers only
    assert {r["version"] for r in audit.read(own_store / "audit", "predictions")} == {1}
    with good.client() as c:
        metrics = c.get("/metrics").text
    assert counter(metrics, "pipeflow_shadow_rows_total") == 30
    assert counter(metrics, "pipeflow_shadow_dropped_total") == 0
    with bad.client() as c:
        assert counter(c.get("/metrics").text, "pipeflow_shadow_errors_total") == 10
    # feedback for an answer's id scores the shadow too: compare pairs them
    with good.client() as c:
        items = [{"id": pid, "outcome": t} for pid, t in zip(answers, truth, strict=True)]
        assert c.post(FEEDBACK, json=items).json() == {"recorded": 30}
    done = pipeflow(["models", "compare", "tumours@1", "tumours@2", "--live", "--json",
                     "--store", str(own_store)], cwd=tumours)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    one, two = report["variants"]
    right_one = sum(str(answers[pid]) == t for pid, t in zip(answers, truth, strict=True))
    right_two = sum(str(e) == t for e, t in zip(expected, truth, strict=True))
    assert (one["accuracy"]["count"], one["accuracy"]["of"]) == (right_one, 30)
    assert (two["accuracy"]["count"], two["accuracy"]["of"]) == (right_two, 30)
    assert two["roles"] == {"shadow": 30} and one["roles"] == {"primary": 40}
    paired = report["tests"]["paired_accuracy"]
    assert paired["pairs"] == 30 and paired["test"] == "McNemar's exact test"


def test_a_full_shadow_queue_drops_requests_and_counts_them(tumours, own_store: Path) -> None:
    import asyncio

    from pipeflow.serving.app import create_app
    from pipeflow.serving.batcher import Pending
    from pipeflow.serving.config import ServeConfig

    app = create_app(
        ServeConfig(store_url=str(own_store), model="tumours", shadow="tumours@2", shadow_queue=2)
    )
    shadow = app.state.server.shadow  # its thread is not started: nothing leaves the queue
    loop = asyncio.new_event_loop()
    try:
        item = Pending(sample_rows(tumours, 1), [], None, [[]], "test", "v1", 0.0,
                       loop.create_future())  # fmt: skip
        offered = [shadow.offer(item, [f"p{i}"], 1) for i in range(5)]
    finally:
        loop.close()
    assert offered == [True, True, False, False, False]
    metrics = app.state.server.metrics.exposition()[0].decode()
    assert counter(metrics, "pipeflow_shadow_dropped_total") == 3
