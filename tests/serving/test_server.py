"""`pipeflow serve` as a real process on 127.0.0.1: validation, protocols, auth, audit, metrics,
hot reload under traffic, canary withdrawal and SIGKILL mid-traffic."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
from helpers import PREDICT, pipeflow, register_failing_model, sample_rows

from pipeflow.store import journal as audit


def test_predicts_one_row_or_many_with_ids_probabilities_and_the_version(serve, tumours) -> None:
    s = serve("tumours@production")
    with s.client() as c:
        one = c.post(PREDICT, json=sample_rows(tumours, 1)[0])
        many = c.post(PREDICT, json=sample_rows(tumours, 5))
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "tumours" and body["version"] == 1
    (p,) = body["predictions"]
    assert p["prediction"] in ("benign", "malignant")
    assert math.isclose(sum(p["probabilities"].values()), 1.0)
    ids = [q["id"] for q in many.json()["predictions"]] + [p["id"]]
    assert len(ids) == 6 == len(set(ids))


def test_bad_input_gets_a_4xx_naming_the_field_and_the_server_stays_up(serve, tumours) -> None:
    s = serve("tumours@production")
    good = sample_rows(tumours, 1)[0]
    cases = [
        ({**good, "mean_radius": "big"}, 422, "mean_radius", "a number"),
        ({k: v for k, v in good.items() if k != "size_band"}, 422, "size_band", "required"),
        ({**good, "surprise": 1}, 422, "surprise", "no such field"),
        ({**good, "size_band": 7}, 422, "size_band", "a string"),
        ([good, "not a row"], 422, None, "an object"),
        ([], 422, None, "no rows"),
        (42, 422, None, "a JSON object"),
    ]
    with s.client() as c:
        for payload, status, field, expected in cases:
            r = c.post(PREDICT, json=payload)
            assert r.status_code == status, (payload, r.text)
            error = r.json()["error"]
            text = json.dumps(error)
            assert expected in text, text
            if field:
                assert any(f["field"] == field for f in error["fields"]), text
        nan = json.dumps(good).replace(str(good["mean_radius"]), "NaN", 1)
        r = c.post(PREDICT, content=nan, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.text and "mean_radius" in r.text
        r = c.post(
            PREDICT, content=b'{"mean_radius": 1,', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_json"
        r = c.post(PREDICT, content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = c.post(PREDICT, content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = c.post(PREDICT, content=json.dumps(good), headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = c.post(PREDICT, content=b"x" * 6_000_000, headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/models/other/predict", json=good)
        assert r.status_code == 404 and "tumours" in r.text
        assert c.post(PREDICT, json=good).status_code == 200  # still serving
        metrics = c.get("/metrics").text
    assert 'pipeflow_errors_total{type="validation_error"}' in metrics
    assert 'pipeflow_errors_total{type="too_large"}' in metrics


def test_inputs_unlike_the_training_data_are_flagged_or_refused(serve, tumours) -> None:
    odd = {**sample_rows(tumours, 1)[0], "mean_radius": 1e6, "size_band": "enormous"}
    s = serve("tumours@production")
    with s.client() as c:
        r = c.post(PREDICT, json=odd)
        assert r.status_code == 200
        flags = r.json()["predictions"][0]["flags"]
        assert any("mean_radius" in f and "training range" in f for f in flags)
        assert any("size_band" in f and "not seen" in f for f in flags)
        assert "pipeflow_unusual_inputs_total" in c.get("/metrics").text
    strict = serve("tumours@production", "--reject-unusual")
    with strict.client() as c:
        r = c.post(PREDICT, json=odd)
        assert r.status_code == 422 and "mean_radius" in r.text


def test_open_inference_protocol_and_mlflow_payloads(serve, tumours) -> None:
    sample = sample_rows(tumours, 3)
    names = list(sample[0])
    s = serve("tumours@production")
    with s.client() as c:
        native = [p["prediction"] for p in c.post(PREDICT, json=sample).json()["predictions"]]
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").status_code == 200
        meta = c.get("/v2/models/tumours").json()
        assert [i["name"] for i in meta["inputs"]] == names
        tensors = [
            {
                "name": n,
                "shape": [3],
                "datatype": "BYTES" if isinstance(sample[0][n], str) else "FP64",
                "data": [r[n] for r in sample],
            }
            for n in names
        ]
        v2 = c.post("/v2/models/tumours/infer", json={"id": "req-1", "inputs": tensors})
        assert v2.status_code == 200, v2.text
        out = {o["name"]: o for o in v2.json()["outputs"]}
        assert out["predict"]["data"] == native and v2.json()["id"] == "req-1"
        assert out["predict_proba"]["shape"] == [3, 2]
        bad = c.post(
            "/v2/models/tumours/infer",
            json={"inputs": [{**tensors[0], "shape": [4]}, *tensors[1:]]},
        )
        assert bad.status_code == 422 and names[0] in bad.text
        split = {"columns": names, "data": [[r[n] for n in names] for r in sample]}
        for payload in (
            {"dataframe_split": split},
            {"dataframe_records": sample},
            {"instances": sample},
            {"inputs": {n: [r[n] for r in sample] for n in names}},
        ):
            r = c.post("/invocations", json=payload)
            assert r.status_code == 200, (payload.keys(), r.text)
            assert r.json()["predictions"] == native
        r = c.post("/invocations", json={"dataframe_records": [{**sample[0], "mean_radius": "x"}]})
        assert r.status_code == 422 and "mean_radius" in r.text
        schema = c.get("/openapi.json").json()
        body = schema["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"][
            "application/json"
        ]
        assert "mean_radius" in json.dumps(body)


def test_bearer_tokens_with_scopes_and_open_probes(serve, tumours, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("predictor-token-0123456789 predict\nwatcher-token-0123456789 metrics\n")
    s = serve("tumours@production", "--tokens", str(tokens))
    good = sample_rows(tumours, 1)[0]
    with s.client() as c:
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        r = c.post(PREDICT, json=good)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.post(PREDICT, json=good, headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 401
        watcher = {"Authorization": "Bearer watcher-token-0123456789"}
        assert c.post(PREDICT, json=good, headers=watcher).status_code == 403
        assert c.get("/metrics", headers=watcher).status_code == 200
        predictor = {"Authorization": "Bearer predictor-token-0123456789"}
        assert c.post(PREDICT, json=good, headers=predictor).status_code == 200
        assert c.get("/metrics", headers=predictor).status_code == 403
        feedback = c.post(
            "/v1/models/tumours/feedback",
            json={"id": "x-1", "outcome": "benign"},
            headers=predictor,
        )
        assert feedback.status_code == 403


def test_every_prediction_and_feedback_is_audited(serve, tumours, own_store: Path) -> None:
    s = serve("tumours@production", store=own_store)
    with s.client() as c:
        answered = [
            p
            for _ in range(5)
            for p in c.post(PREDICT, json=sample_rows(tumours, 4)).json()["predictions"]
        ]
        r = c.post(
            "/v1/models/tumours/feedback",
            json=[{"id": p["id"], "outcome": "benign"} for p in answered[:3]],
        )
        assert r.json() == {"recorded": 3}
        bad = c.post("/v1/models/tumours/feedback", json={"id": "../../etc/passwd", "outcome": 1})
        assert bad.status_code == 422 and "id" in bad.text
    records = {r["id"]: r for r in audit.read(own_store / "audit", "predictions")}
    assert set(records) == {p["id"] for p in answered}
    first = records[answered[0]["id"]]
    assert first["model"] == "tumours" and first["version"] == 1
    assert first["output"] == answered[0]["prediction"] and first["inputs"]["mean_radius"]
    assert first["latency_ms"] > 0 and first["caller"] == "anonymous"
    fed = list(audit.read(own_store / "audit", "feedback"))
    assert [f["id"] for f in fed] == [p["id"] for p in answered[:3]]
    # lineage of one prediction: its record, its feedback, and the model version's lineage
    shown = pipeflow(
        ["lineage", answered[0]["id"], "--store", str(own_store), "--json"], cwd=tumours
    )
    assert shown.returncode == 0, shown.stderr
    lineage = json.loads(shown.stdout)
    assert lineage["prediction"]["output"] == answered[0]["prediction"]
    assert lineage["prediction"]["feedback"][0]["outcome"] == "benign"
    assert lineage["model"] == "tumours@1" and lineage["run_id"]
    unknown = pipeflow(["lineage", "no-such-prediction", "--store", str(own_store)], cwd=tumours)
    assert unknown.returncode == 1 and "neither a prediction id" in unknown.stderr


def _traffic(url: str, payload: list, stop: threading.Event, out: list, workers: int = 4) -> None:
    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post(PREDICT, json=payload)
                out.append((r.status_code, r.json()))

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(workers):
            pool.submit(loop)


def test_an_alias_move_is_picked_up_during_traffic_with_no_failed_request(
    serve, tumours, own_store: Path
) -> None:
    s = serve("tumours@production", "--reload-interval", "0.2", store=own_store)
    stop, out = threading.Event(), []
    runner = threading.Thread(target=_traffic, args=(s.url, sample_rows(tumours, 2), stop, out))
    runner.start()
    try:
        time.sleep(1.0)
        moved = pipeflow(
            ["models", "promote", "tumours", "2", "--to", "production", "--store", str(own_store)],
            cwd=tumours,
        )
        assert moved.returncode == 0, moved.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (out and out[-1][1].get("version") == 2):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        runner.join(60)
    assert out, "no traffic was answered"
    statuses = {status for status, _ in out}
    assert statuses == {200}, [b for st, b in out if st != 200][:3]
    versions = [b["version"] for _, b in out]
    assert versions[0] == 1 and versions[-1] == 2
    events = list(audit.read(own_store / "audit", "events"))
    assert any(e["event"] == "reloaded" and e["version"] == 2 for e in events)


def test_a_failing_canary_is_withdrawn_and_the_event_recorded(
    serve, tumours, own_store: Path
) -> None:
    version = register_failing_model(own_store)
    s = serve(
        "tumours@production",
        "--canary",
        f"tumours@{version}",
        "--weight",
        "0.5",
        "--min-requests",
        "5",
        "--max-error-rate",
        "0.2",
        store=own_store,
    )
    payload = sample_rows(tumours, 1)
    with s.client() as c:
        results = [c.post(PREDICT, json=payload) for _ in range(80)]
        described = c.get("/v1/models/tumours").json()
    failed = [i for i, r in enumerate(results) if r.status_code != 200]
    assert failed, "the canary never took traffic"
    assert all(results[i].status_code == 500 for i in failed)
    assert all("model_error" in results[i].text for i in failed)
    assert max(failed) < 60, "the canary kept taking traffic after breaching its limit"
    assert all(r.status_code == 200 for r in results[max(failed) + 1 :])
    assert described["canary"]["weight"] == 0
    (event,) = [
        e for e in audit.read(own_store / "audit", "events") if e["event"] == "canary_withdrawn"
    ]
    assert event["version"] == version and "error rate" in event["reason"]
    assert "ALERT" in s.log.read_text()
    # the failures are events monitoring counts, per version
    shown = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--store", str(own_store),
         "--json", "--all-versions"],
        cwd=tumours,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    errors = json.loads(shown.stdout)["errors"]
    assert errors["model_errors"] == len(failed) and errors["error_rate"] > 0


def test_sigkill_mid_traffic_loses_no_acknowledged_prediction(
    serve, tumours, own_store: Path
) -> None:
    s = serve("tumours@production", store=own_store)
    stop, out = threading.Event(), []
    runner = threading.Thread(
        target=_traffic_tolerant, args=(s.url, sample_rows(tumours, 3), stop, out)
    )
    runner.start()
    time.sleep(2.0)
    s.kill()
    stop.set()
    runner.join(60)
    acknowledged = {p["id"] for body in out for p in body["predictions"]}
    assert len(acknowledged) > 20
    for path in audit.files(own_store / "audit", "predictions"):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), "a partial line was left"
        for line in data.splitlines():
            json.loads(line)
    audited = {r["id"] for r in audit.read(own_store / "audit", "predictions")}
    assert acknowledged <= audited
    again = serve("tumours@production", store=own_store)
    with again.client() as c:
        assert c.post(PREDICT, json=sample_rows(tumours, 1)).status_code == 200


def _traffic_tolerant(url: str, payload: list, stop: threading.Event, out: list) -> None:
    def loop() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(PREDICT, json=payload)
                except httpx.HTTPError:
                    return  # the server is gone: what was acknowledged is in `out`
                if r.status_code == 200:
                    out.append(r.json())

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(loop)


def test_start_up_refuses_an_unwritable_audit_log_and_a_busy_port(tumours, tmp_path: Path) -> None:
    blocked = tmp_path / "audit-is-a-file"
    blocked.write_text("not a folder")
    out = pipeflow(
        ["serve", "tumours@production", "--audit-dir", str(blocked), "--port", "0",
         "--store", str(tumours / ".pipeflow")],
        cwd=tumours,
    )  # fmt: skip
    assert out.returncode == 2 and "cannot write the audit log" in out.stderr, out.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = pipeflow(
            [
                "serve",
                "tumours@production",
                "--port",
                str(port),
                "--store",
                str(tumours / ".pipeflow"),
            ],
            cwd=tumours,
        )
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr


def _register_fragile_model(store: Path, tumours: Path) -> int:
    """A model that fails on negative inputs (sqrt then a NaN-refusing estimator), and only there."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeflow.registry import Registry
    from pipeflow.store.artifacts import ArtifactStore

    frame = pd.read_csv(tumours / "data.csv")
    y = frame.pop("diagnosis")
    X = frame.drop(columns=["size_band"])
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=5000)).fit(X, y)
    st = ArtifactStore(str(store))
    registry = Registry(st)
    signature = {
        "features": [{"name": c, "dtype": "float64", "role": "numeric"} for c in X.columns]
    }
    record = registry.register("tumours", st.save(model, "model"), signature=signature, metrics={})
    return int(record["version"])


def test_a_request_the_model_fails_on_does_not_fail_its_batch_neighbours(
    serve, tumours, own_store: Path
) -> None:
    import asyncio

    version = _register_fragile_model(own_store, tumours)
    s = serve(f"tumours@{version}", store=own_store)
    good = {k: v for k, v in sample_rows(tumours, 1)[0].items() if k != "size_band"}
    bad = {**good, "mean_radius": -5.0}

    async def burst() -> list[tuple[bool, int]]:
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
            payloads = [bad if i % 10 == 0 else good for i in range(200)]
            answers = await asyncio.gather(*(c.post(PREDICT, json=p) for p in payloads))
            return [(p is bad, r.status_code) for p, r in zip(payloads, answers, strict=True)]

    outcomes = asyncio.run(burst())
    assert {code for is_bad, code in outcomes if is_bad} == {500}
    assert {code for is_bad, code in outcomes if not is_bad} == {200}


def test_the_store_can_be_named_by_spec_and_a_missing_store_is_a_usage_error(
    tumours: Path, tmp_path: Path
) -> None:
    from pipeflow.testing import serve as serve_process

    # from another folder: only the spec leads to the store
    served = serve_process(tmp_path, "tumours@production", "--spec", str(tumours / "pipeline.yaml"))
    try:
        ready = httpx.get(served.url + "/ready", timeout=10).json()
        assert ready == {"status": "ready", "model": "tumours", "version": 1}
        assert str(tumours / ".pipeflow" / "audit") in served.log.read_text()
    finally:
        served.stop()
    missing = pipeflow(
        ["serve", "tumours@production", "--store", str(tmp_path / "nowhere")], cwd=tumours
    )
    assert missing.returncode == 2
    assert f"no pipeflow store at {tmp_path / 'nowhere'}" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "--port 99999: expected a port from 0 to 65535"),
        (["--max-body-mb", "-1"], "--max-body-mb -1: expected a size above 0 megabytes"),
        (["--reload-interval", "0"], "--reload-interval 0: expected 0.1 seconds or more"),
        (["--workers", "0"], "--workers 0: expected 1 or more processes"),
        (["--drain-seconds", "-1"], "--drain-seconds -1: expected 0 to 3600 seconds"),
        (["--drain-seconds", "5", "--workers", "2"], "--drain-seconds needs --workers 1"),
        (["--min-accuracy", "95"], "--min-accuracy 95: expected a share between 0 and 1"),
        (["--weight", "1.5"], "--weight 1.5: expected a share between 0 and 1"),
        (["--min-requests", "0"], "--min-requests 0: expected 1 or more requests"),
        (["--ship-interval", "0.05"], "--ship-interval 0.05: expected 0.1 seconds or more"),
        (["--canary", "tumours"], "--canary tumours: name the version, e.g. tumours@3"),
        (["--canary", "other@2"], "a canary is another version of tumours, not a version of other"),
        (["--canary", "tumours@1"], "is tumours@1, the version tumours@production already serves"),
    ],
)
def test_bad_serve_options_exit_2_naming_the_option(
    tumours: Path, args: list[str], message: str
) -> None:
    done = pipeflow(["serve", "tumours@production", "--port", "8", *args], cwd=tumours)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "serving" not in done.stdout
