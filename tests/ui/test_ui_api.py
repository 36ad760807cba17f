"""The dashboard's JSON API over a small store built with pipeflow's own writers: a metadata DB
with a done and a failed run, a registry with two versions and an alias history, a prediction
audit log with known latencies, drift reports in the monitoring history's format, and alerts."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeflow.monitoring.history import alert_log, save_report
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore
from pipeflow.store.database import open_metadata
from pipeflow.store.journal import AuditLog
from pipeflow.ui.app import create_app
from pipeflow.ui.traffic import Cell

T0 = 1_700_000_040.0  # a minute boundary


def _record_runs(db_path: Path) -> None:
    db = open_metadata(db_path)
    try:
        stages = [("raw", "ingest"), ("model", "train")]
        db.start_run(
            "20240101-000000-aaaaaa",
            "tumours",
            spec_path="pipeline.yaml",
            spec_digest="d" * 64,
            executor="threads",
            params={"C": 1.0},
            overrides=["params.C=1.0"],
            stages=stages,
        )
        now = time.time()
        db.record_stages(
            "20240101-000000-aaaaaa",
            [
                {"stage": "raw", "type": "ingest", "state": "cached", "started": now, "ended": now},
                {
                    "stage": "model",
                    "type": "train",
                    "state": "done",
                    "started": now,
                    "ended": now + 1.5,
                    "attempts": 1,
                    "config": {"estimator": "x"},
                    "input_digests": {"train": "a" * 64},
                },
            ],
        )
        db.finish_run("20240101-000000-aaaaaa", "done")
        db.start_run(
            "20240102-000000-bbbbbb",
            "tumours",
            spec_path="pipeline.yaml",
            spec_digest="d" * 64,
            executor="threads",
            params={},
            overrides=[],
            stages=stages,
        )
        db.record_stages(
            "20240102-000000-bbbbbb",
            [
                {
                    "stage": "model",
                    "type": "train",
                    "state": "failed",
                    "started": now,
                    "ended": now + 0.2,
                    "attempts": 2,
                    "error": "ValueError: <b>bad</b> input",
                    "traceback": "Traceback ...",
                }
            ],
        )
        db.finish_run("20240102-000000-bbbbbb", "failed", "stage 'model' failed")
    finally:
        db.close()


def _register_models(store: ArtifactStore) -> None:
    registry = Registry(store)
    for n, accuracy in ((1, 0.91), (2, float("nan"))):
        data = f"model {n}".encode()
        ref = ArtifactRef(store.put(data), "bytes", "model", len(data))
        registry.register(
            "tumours",
            ref,
            metrics={"accuracy": accuracy, "confusion": [[1, 0], [0, 1]]},
            run={"run_id": "20240101-000000-aaaaaa", "stage": "model", "pipeline": "tumours"},
            reference={"huge": list(range(1000))},
        )
    registry.move_alias("tumours", "production", 1, reason="first")
    registry.move_alias("tumours", "production", 2, reason="better")
    registry.rollback("tumours", "production", reason="worse live")


def _write_traffic(audit_dir: Path) -> None:
    log = AuditLog(audit_dir, "predictions")
    records: list[dict[str, Any]] = []
    # v1: 10 requests in the first minute (latency 1..10 ms, one flagged), 5 in the third
    for i in range(10):
        records.append(
            _prediction(T0 + i, 1, "primary", float(i + 1), ["unusual"] if i == 0 else [])
        )
    for i in range(5):
        records.append(_prediction(T0 + 120 + i, 1, "primary", 2.0, []))
    # v2 as a canary: 4 requests in the second minute
    for i in range(4):
        records.append(_prediction(T0 + 60 + i, 2, "canary", 50.0, []))
    records.append(_prediction(T0 + 5, 1, "primary", 1.0, [], model="other"))
    log.append(records)
    log.close()
    events = AuditLog(audit_dir, "events")
    events.append(
        [
            {
                "id": "e1",
                "time": T0 + 90,
                "event": "canary_withdrawn",
                "model": "tumours",
                "version": 2,
                "reason": "p95 latency 50.0 ms > 20 ms",
            }
        ]
    )
    events.close()


def _prediction(
    when: float, version: int, role: str, latency: float, flags: list[str], model: str = "tumours"
) -> dict[str, Any]:
    return {
        "id": f"{model}-{version}-{when}",
        "time": when,
        "model": model,
        "version": version,
        "role": role,
        "route": "v1",
        "inputs": {"x": 1},
        "output": "benign",
        "probabilities": None,
        "flags": flags,
        "latency_ms": latency,
        "caller": "test",
    }


def _report(end: float, drift_share: float, accuracy: float | None) -> dict[str, Any]:
    """A report in the format documented in pipeflow.monitoring.history."""
    return {
        "model": "tumours",
        "version": 1,
        "alias": "production",
        "created": end + 1,
        "window": {"start": end - 3600, "end": end, "seconds": 3600},
        "rows": 100,
        "drift_share": drift_share,
        "drifted": drift_share > 0.3,
        "features": {
            "mean_radius": {"role": "numeric", "psi": 0.31, "ks": 0.2, "drifted": True},
            "size_band": {
                "role": "categorical",
                "psi": 0.02,
                "chi2": 1.0,
                "p_value": 0.5,
                "unseen_rate": 0.0,
                "drifted": False,
            },
            "notes": {
                "role": "text",
                "length_psi": 0.05,
                "vocabulary_js": 0.1,
                "oov_rate": 0.0,
                "drifted": False,
            },
        },
        "prediction": {"psi": 0.1, "distribution": {}, "reference": {}},
        "accuracy": {"labelled": 0 if accuracy is None else 50, "accuracy": accuracy},
        "latency_ms": {"p50": 2.0, "p95": 4.0, "p99": 7.0},
        "flagged_rate": 0.01,
        "alerts": [],
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    _record_runs(root / "pipeflow.db")
    _register_models(ArtifactStore(str(root)))
    _write_traffic(root / "audit")
    save_report(root, _report(T0, 0.2, None))
    save_report(root, _report(T0 + 3600, 0.5, 0.9))
    alert_log(root).append(
        [
            {
                "id": "a1",
                "time": T0 + 3601,
                "key": "tumours:drift",
                "rule": "drift",
                "metric": "drift_share",
                "value": 0.5,
                "op": ">",
                "threshold": 0.3,
                "severity": "warning",
                "model": "tumours",
                "version": 1,
                "message": "drift share 0.5 > 0.3",
                "sinks": ["log"],
            }
        ]
    )
    return root


@pytest.fixture
def client(store: Path) -> TestClient:
    return TestClient(create_app(str(store), store / "pipeflow.db"))


def test_runs_list_newest_first_with_stage_counts_and_durations(client: TestClient) -> None:
    runs = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == ["20240102-000000-bbbbbb", "20240101-000000-aaaaaa"]
    failed, done = runs
    assert failed["state"] == "failed" and failed["n_failed"] == 1
    assert done["n_done"] == 1 and done["n_cached"] == 1
    assert done["overrides"] == ["params.C=1.0"] and done["duration_s"] >= 0
    assert len(client.get("/api/runs?limit=1").json()["runs"]) == 1


def test_a_run_shows_its_stages_with_state_timings_cache_hits_and_errors(client) -> None:
    run = client.get("/api/runs/20240101").json()  # a unique prefix is enough
    assert run["id"] == "20240101-000000-aaaaaa" and run["params"] == {"C": 1.0}
    by_stage = {s["stage"]: s for s in run["stages"]}
    assert by_stage["raw"]["state"] == "cached" and by_stage["raw"]["cache_hit"] is True
    assert math.isclose(by_stage["model"]["duration_s"], 1.5)
    assert by_stage["model"]["input_digests"] == {"train": "a" * 64}
    failed = client.get("/api/runs/latest").json()
    (model,) = [s for s in failed["stages"] if s["stage"] == "model"]
    assert model["error"] == "ValueError: <b>bad</b> input" and model["attempts"] == 2
    assert failed["error"] == "stage 'model' failed"


def test_an_unknown_or_ambiguous_run_is_an_error_naming_it(client: TestClient) -> None:
    r = client.get("/api/runs/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = client.get("/api/runs/2024")
    assert r.status_code == 400 and "ambiguous" in r.json()["error"]


def test_models_list_aliases_and_a_headline_metric(client: TestClient) -> None:
    (m,) = client.get("/api/models").json()["models"]
    assert m["name"] == "tumours" and m["versions"] == 2 and m["latest"] == 2
    assert m["aliases"] == {"production": 1}  # promoted to 2, rolled back to 1
    assert m["headline"] is None  # v2's accuracy is NaN: not a number to headline


def test_a_model_shows_versions_aliases_and_history_without_the_bulky_fields(client) -> None:
    r = client.get("/api/models/tumours")
    assert r.status_code == 200
    m = r.json()
    v1, v2 = m["versions"]
    assert v1["metrics"] == {"accuracy": 0.91}  # scalar metrics only
    assert v2["metrics"] == {"accuracy": None}  # NaN sent as null, the response stays JSON
    assert v1["aliases"] == ["production"] and v2["aliases"] == []
    assert "reference" not in v1 and v1["run"]["run_id"] == "20240101-000000-aaaaaa"
    assert [(e["action"], e["to_version"]) for e in m["history"]] == [
        ("promote", 1),
        ("promote", 2),
        ("rollback", 1),
    ]


def test_an_unknown_or_invalid_model_is_a_4xx(client: TestClient) -> None:
    r = client.get("/api/models/nope")
    assert r.status_code == 404 and "tumours" in r.json()["error"]  # lists what there is
    assert client.get("/api/models/..%2Fetc").status_code in (400, 404)
    assert client.get("/api/models/tumours/lineage/9").status_code == 404


def test_lineage_of_a_version_names_its_run(client: TestClient) -> None:
    lineage = client.get("/api/models/tumours/lineage/1").json()
    assert lineage["model"] == "tumours@1" and lineage["run_id"] == "20240101-000000-aaaaaa"


def test_traffic_is_bucketed_per_version_with_percentiles_flags_and_events(client) -> None:
    t = client.get("/api/traffic", params={"model": "tumours", "bucket_s": 60}).json()
    assert t["models"] == ["other", "tumours"]
    series = {s["version"]: s for s in t["series"]}
    assert set(series) == {1, 2} and series[2]["roles"] == ["canary"]
    v1 = [(p["t"], p["requests"], p["flagged"]) for p in series[1]["points"]]
    assert v1 == [(T0, 10, 1), (T0 + 60, 0, 0), (T0 + 120, 5, 0)]  # the empty minute is a 0
    first = series[1]["points"][0]
    assert abs(first["p50_ms"] - 5.0) / 5.0 < 0.03 and abs(first["p95_ms"] - 9.0) / 9.0 < 0.03
    assert series[1]["points"][1]["p95_ms"] is None
    versions = {v["version"]: v for v in t["versions"]}
    assert versions[1]["requests"] == 15 and versions[1]["flagged"] == 1
    assert versions[2]["requests"] == 4 and math.isclose(versions[2]["p95_ms"], 50, rel_tol=0.02)
    (event,) = t["events"]
    assert event["event"] == "canary_withdrawn" and event["version"] == 2
    everything = client.get("/api/traffic", params={"bucket_s": 3600}).json()
    assert {s["label"] for s in everything["series"]} == {"other v1", "tumours v1", "tumours v2"}
    assert client.get("/api/traffic", params={"bucket_s": 0}).status_code == 422


def test_traffic_reads_only_what_was_appended_since_and_skips_a_torn_line(store, client) -> None:
    def requests() -> int:
        t = client.get("/api/traffic", params={"model": "tumours"}).json()
        return sum(v["requests"] for v in t["versions"])

    assert requests() == 19
    log = AuditLog(store / "audit", "predictions")
    log.append([_prediction(T0 + 130, 1, "primary", 3.0, [])])
    assert requests() == 20
    with open(log.path, "ab") as fh:  # a write still in progress: no newline yet
        fh.write(b'{"id":"torn","time":1700000170,"model":"tumours","version":1')
    assert requests() == 20
    with open(log.path, "ab") as fh:
        fh.write(b',"latency_ms":1.0,"flags":[]}\n')
    assert requests() == 21
    log.close()


def test_drift_is_a_time_series_of_reports_with_per_feature_psi(client: TestClient) -> None:
    d = client.get("/api/drift").json()
    assert d["model"] == "tumours" and d["models"] == ["tumours"]
    assert [r["drift_share"] for r in d["reports"]] == [0.2, 0.5]
    assert [r["accuracy"] for r in d["reports"]] == [None, 0.9]
    assert [r["time"] for r in d["reports"]] == [T0, T0 + 3600]
    assert d["reports"][1]["features"] == {"mean_radius": 0.31, "size_band": 0.02, "notes": 0.05}
    features = d["latest"]["features"]
    assert [f["name"] for f in features] == ["mean_radius", "notes", "size_band"]  # by PSI
    assert features[1]["metric"] == "length_psi" and features[0]["drifted"] is True
    assert client.get("/api/drift", params={"model": "nope"}).json()["reports"] == []


def test_drift_carries_the_latest_business_metrics_and_bias_and_their_series(
    store: Path, client: TestClient
) -> None:
    from pipeflow.governance.fairness import bias_metrics

    bias = bias_metrics(["a"] * 4, ["a", "a", "a", "b"], ["x", "x", "y", "y"], attribute="band")
    breach = {"metric": "accuracy_difference", "value": 0.5, "limit": 0.1}
    report = {
        **_report(T0 + 7200, 0.1, 0.75),
        "business": {"rows": 4, "cost_per_prediction": 5.0, "sla_breach_rate": 0.25},
        "bias": {
            **bias,
            "source": "feedback",
            "limits": {"accuracy_difference": 0.1},
            "breaches": [breach],
        },
    }
    save_report(store, report)
    d = client.get("/api/drift").json()
    assert [r["cost_per_prediction"] for r in d["reports"]] == [None, None, 5.0]
    assert [r["bias_difference"] for r in d["reports"]] == [None, None, 0.5]
    assert d["latest"]["business"] == {
        "rows": 4,
        "cost_per_prediction": 5.0,
        "sla_breach_rate": 0.25,
    }
    latest = d["latest"]["bias"]
    assert latest["attribute"] == "band" and latest["breaches"] == [breach]
    assert latest["differences"]["accuracy_difference"] == 0.5
    assert latest["groups"] == [
        {"name": "x", "rows": 2, "accuracy": 1.0, "excluded": False},
        {"name": "y", "rows": 2, "accuracy": 0.5, "excluded": False},
    ]


def test_alerts_newest_first(client: TestClient) -> None:
    data = client.get("/api/alerts").json()
    assert data["total"] == 1 and data["alerts"][0]["message"] == "drift share 0.5 > 0.3"
    assert client.get("/api/alerts", params={"model": "other"}).json()["alerts"] == []


def test_summary_counts_runs_models_predictions_and_alerts(client: TestClient) -> None:
    s = client.get("/api/summary").json()
    assert s["runs"]["count"] == 2 and s["runs"]["latest"]["id"] == "20240102-000000-bbbbbb"
    assert [m["name"] for m in s["models"]] == ["tumours"]
    assert s["traffic"]["requests"] == 20 and s["traffic"]["flagged"] == 1
    assert s["alerts"]["total"] == 1 and s["monitored"] == ["tumours"]


def test_an_empty_store_answers_every_route_with_empty_data_and_creates_nothing(tmp_path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    client = TestClient(create_app(str(root), root / "pipeflow.db"))
    assert client.get("/api/runs").json()["runs"] == []
    assert client.get("/api/models").json()["models"] == []
    assert client.get("/api/traffic").json()["series"] == []
    assert client.get("/api/drift").json() == {
        "model": None,
        "models": [],
        "reports": [],
        "latest": None,
    }
    assert client.get("/api/alerts").json() == {"alerts": [], "total": 0}
    s = client.get("/api/summary").json()
    assert s["runs"] == {"count": 0, "latest": None} and s["traffic"]["requests"] == 0
    assert list(root.iterdir()) == []  # read-only: no database, no folders


def test_pages_are_served_with_a_csp_that_forbids_inline_script(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "/static/app.js" in index.text
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert "<script>" not in index.text  # the app is one external file
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "innerHTML" not in js.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/api/runs").headers["cache-control"] == "no-store"


def test_a_loopback_dashboard_refuses_other_host_names(store: Path) -> None:
    app = create_app(str(store), store / "pipeflow.db", allowed_hosts=["127.0.0.1", "localhost"])
    client = TestClient(app, base_url="http://127.0.0.1:8050")
    assert client.get("/api/summary").status_code == 200
    evil = client.get("/api/summary", headers={"host": "attacker.example"})
    assert evil.status_code == 400  # DNS rebinding: another site's name for 127.0.0.1


def test_latency_quantiles_are_within_one_percent() -> None:
    cell = Cell()
    values = [0.5 + i * 0.37 for i in range(1000)]
    for v in values:
        cell.add(v, False)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[int(q * (len(ordered) - 1))]
        assert abs(cell.quantile(q) - exact) / exact < 0.011
    assert Cell().quantile(0.5) is None


def test_the_dashboard_of_a_spec_reads_its_store_with_the_specs_storage_options(
    tmp_path, monkeypatch
) -> None:
    """``--spec``: the store the spec names, opened with its storage options (the dashboard used
    to reopen it from the bare URL), and the spec's database; the same rule as the registry."""
    import argparse

    from pipeflow.cli._common import locate
    from pipeflow.testing import write_spec

    spec = write_spec(
        tmp_path,
        """
        pipeline: p
        store: {root: kept, storage_options: {auto_mkdir: true}}
        stages:
          one: {type: python, with: {function: "steps:one"}}
        """,
        {"steps.py": "def one():\n    return 1\n"},
    )
    monkeypatch.chdir(tmp_path.parent)  # anywhere but the spec's folder
    located = locate(argparse.Namespace(spec=str(spec), store=None, db=None))
    assert located.store.storage_options == {"auto_mkdir": True}
    assert located.store.root == str(tmp_path / "kept")
    assert located.db_path == str(tmp_path / ".pipeflow" / "pipeflow.db")
    _register_models(located.store)  # written through the spec's store: kept/registry/...
    assert (tmp_path / "kept").is_dir()
    app = create_app(located.store, located.db_path)
    answer = TestClient(app).get("/api/models").json()
    assert answer["store"] == located.store.url
    assert [m["name"] for m in answer["models"]] == ["tumours"]


def test_the_dashboard_of_an_s3_store_reads_every_machines_shipped_records(
    s3, tmp_path, monkeypatch
) -> None:
    """Traffic, events, drift and alerts of a store on (moto's) S3: two machines' spools
    shipped to ``<store>/journal``, the dashboard on a third with its own empty spool; a
    segment read from a spool and then shipped is counted once, and downloaded once."""
    from pipeflow.monitoring.history import record_alerts
    from pipeflow.store.shipping import Shipper

    store = ArtifactStore(
        s3.bucket(), {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"}
    )
    _register_models(store)
    for machine in ("a", "b"):  # the same records as the local test, split over two machines
        _write_traffic(tmp_path / machine)
        shipper = Shipper(store, "audit", tmp_path / machine)
        for segment in sorted((tmp_path / machine).rglob("*.jsonl")):  # closed: shipped
            shipper._ship(segment)
    assert not any((tmp_path / "a").rglob("*.jsonl"))
    save_report(store, _report(T0, 0.2, None))
    save_report(store, _report(T0 + 3600, 0.5, 0.9))
    record_alerts(store, [{"id": "a1", "time": T0 + 3601, "model": "tumours", "message": "m"}])
    monkeypatch.setenv("PIPEFLOW_SPOOL", str(tmp_path / "dashboard-spool"))
    client = TestClient(create_app(store, None))
    t = client.get("/api/traffic", params={"model": "tumours", "bucket_s": 60}).json()
    versions = {v["version"]: v["requests"] for v in t["versions"]}
    assert versions == {1: 30, 2: 8} and len(t["events"]) == 2
    assert [r["drift_share"] for r in client.get("/api/drift").json()["reports"]] == [0.2, 0.5]
    assert [a["id"] for a in client.get("/api/alerts").json()["alerts"]] == ["a1"]
    # a third machine's spool, read by the dashboard before it is shipped, then shipped
    sources = client.app.state.sources
    sources.journal.local = tmp_path / "c"
    log = AuditLog(tmp_path / "c", "predictions")
    log.append([_prediction(T0 + 130, 1, "primary", 3.0, [])])
    log.close()
    assert client.get("/api/summary").json()["traffic"]["requests"] == 41
    Shipper(store, "audit", tmp_path / "c")._ship(log.path)
    fetched: list[str] = []
    fetch = sources.journal._fetch
    sources.journal._fetch = lambda kind, name: fetched.append(name) or fetch(kind, name)
    for _ in range(2):
        assert client.get("/api/summary").json()["traffic"]["requests"] == 41
    assert len(fetched) == 1  # only the newly shipped segment, and only once


def test_logged_metrics_are_served_per_run_and_across_runs_and_runs_filter_by_where(
    tmp_path: Path,
) -> None:
    from pipeflow.core.tracking import Metric

    db = open_metadata(tmp_path / "pipeflow.db")
    try:
        for i, (run_id, accuracy) in enumerate((("r-1", 0.7), ("r-2", 0.95))):
            db.start_run(
                run_id,
                "trk",
                spec_path="pipeline.yaml",
                spec_digest="d" * 64,
                executor="threads",
                params={},
                overrides=[],
                stages=[("fit", "python")],
                tags={"team": "fraud"} if i else None,
                note="the better one" if i else None,
            )
            db.write([("UPDATE runs SET started = ? WHERE id = ?", (T0 + i, run_id))])
            losses = [Metric("loss", s, 1 / (s + 1), T0) for s in range(4)]
            db.record_stages(
                run_id,
                [
                    {
                        "stage": "fit",
                        "type": "python",
                        "state": "done",
                        "metrics": [*losses, Metric("accuracy", 0, accuracy, T0)],
                        "logged_params": {"optimizer": "adam"},
                    }
                ],
            )
    finally:
        db.close()
    client = TestClient(create_app(str(tmp_path), tmp_path / "pipeflow.db"))
    across = client.get("/api/metrics").json()
    assert across["names"] == ["accuracy", "loss"] and across["name"] == "accuracy"
    assert [(p["run_id"], p["value"]) for p in across["points"]] == [("r-1", 0.7), ("r-2", 0.95)]
    loss = client.get("/api/metrics?name=loss").json()["points"]
    assert [(p["run_id"], p["step"], p["value"]) for p in loss] == [
        ("r-1", 3, 0.25),
        ("r-2", 3, 0.25),
    ]
    run = client.get("/api/runs/r-2").json()
    assert run["tags"] == {"team": "fraud"} and run["note"] == "the better one"
    assert [(m["step"], m["value"]) for m in run["metrics"] if m["name"] == "loss"] == [
        (0, 1.0),
        (1, 0.5),
        (2, 1 / 3),
        (3, 0.25),
    ]
    assert run["logged_params"] == [
        {"stage": "fit", "name": "optimizer", "value": "adam", "from_run": "r-2"}
    ]
    found = client.get("/api/runs", params={"where": "metrics.accuracy > 0.9"}).json()["runs"]
    assert [(r["id"], r["tags"]) for r in found] == [("r-2", {"team": "fraud"})]
    bad = client.get("/api/runs", params={"where": "metrics.accuracy >> 1"})
    assert bad.status_code == 400 and "(column 19)" in bad.json()["error"]
