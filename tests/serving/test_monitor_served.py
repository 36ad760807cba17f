"""`pipeflow monitor` and the `monitor` stage on the audit log of a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from helpers import PREDICT, pipeflow

from pipeflow.monitoring.history import load_alerts, load_reports


def _send(served, tumours: Path, *, scale: float = 1.0, n: int = 200) -> None:
    frame = pd.read_csv(tumours / "data.csv").sample(n, random_state=1, replace=True)
    truth = frame.pop("diagnosis").tolist()
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric] * scale
    with served.client() as c:
        ids = []
        records = frame.to_dict(orient="records")
        for i in range(0, n, 50):
            r = c.post(PREDICT, json=records[i : i + 50])
            assert r.status_code == 200, r.text
            ids += [p["id"] for p in r.json()["predictions"]]
        feedback = [{"id": i, "outcome": t} for i, t in zip(ids, truth, strict=True)]
        assert c.post("/v1/models/tumours/feedback", json=feedback).status_code == 200


def test_monitor_sees_no_drift_then_drift_and_alerts(
    serve, tumours, own_store: Path, tmp_path: Path
) -> None:
    served = serve("tumours@production", store=own_store)
    _send(served, tumours)
    calm = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--store", str(own_store), "--json"],
        cwd=tumours,
    )
    assert calm.returncode == 0, calm.stderr
    report = json.loads(calm.stdout)
    assert report["rows"] == 200 and report["drift_share"] < 0.2
    assert report["accuracy"]["labelled"] == 200 and report["accuracy"]["accuracy"] > 0.9
    # the outcomes sent as feedback, and the answers, against the training target (prior shift)
    assert report["target"]["against"] == "training target" and report["target"]["test"] == "chi2"
    assert report["target"]["rows"] == 200 and not report["target"]["drifted"]
    assert report["prediction"]["against"] == "training target"
    assert all(f["rule"] for f in report["features"].values())

    _send(served, tumours, scale=2.5)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "drift: {alpha: 0.01}\n"
        "alerts:\n"
        "  - {metric: drift_share, threshold: '> 0.3', severity: critical}\n"
        "  - {metric: accuracy.accuracy, threshold: '< 0.9'}\n"
        "sinks:\n"
        f"  - {{type: file, path: {tmp_path / 'alerts.jsonl'}}}\n"
    )
    html = tmp_path / "drift.html"
    shifted = pipeflow(
        ["monitor", "tumours@production", "--window", "10m", "--store", str(own_store),
         "--rules", str(rules), "--html", str(html)],
        cwd=tumours,
    )  # fmt: skip
    assert shifted.returncode == 0, shifted.stderr
    assert "alert [critical]" in shifted.stdout and "drift_share" in shifted.stdout
    text = html.read_text()
    assert "mean_radius" in text and "<script" not in text
    fired = {a["metric"] for a in load_alerts(own_store)}
    assert {"drift_share", "accuracy.accuracy"} <= fired
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == len(fired)
    history = load_reports(own_store, "tumours")
    assert len(history) == 2 and history[-1]["drift_share"] > 0.3
    assert history[-1]["policy"]["alpha"] == 0.01 and history[0]["policy"]["alpha"] == 0.05
    bad = pipeflow(
        ["monitor", "tumours@production", "--window", "soon", "--store", str(own_store)],
        cwd=tumours,
    )
    assert bad.returncode == 2 and "--window" in bad.stderr


def test_monitor_stage_records_a_report(serve, tumours, own_store: Path) -> None:
    served = serve("tumours@production", store=own_store)
    _send(served, tumours, n=100)
    project = own_store.parent
    (project / "monitoring.yaml").write_text(
        "pipeline: watchtower\n"
        f"store: {{root: {own_store}}}\n"
        "stages:\n"
        "  drift:\n"
        "    type: monitor\n"
        "    with: {model: tumours@production, window: 10m, alerts: [{metric: drift_share, threshold: '> 0.9'}]}\n"
    )
    run = pipeflow(["run", "monitoring.yaml", "--quiet"], cwd=project, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    again = pipeflow(["run", "monitoring.yaml", "--quiet"], cwd=project, timeout=300)
    assert "1 done" in again.stdout  # never cached: a new window each time
    assert len(load_reports(own_store, "tumours")) == 2


def test_watch_retrains_when_the_monitor_finds_drift(serve, tumours, own_store: Path) -> None:
    from pipeflow.store import journal as audit

    served = serve("tumours@production", store=own_store)
    project = own_store.parent
    (project / "watched.yaml").write_text(
        "pipeline: watched\n"
        f"store: {{root: {own_store}}}\n"
        "triggers: {on_drift: drift}\n"
        "stages:\n"
        "  drift:\n"
        "    type: monitor\n"
        "    with: {model: tumours@production, window: 10m}\n"
    )
    _send(served, tumours, n=100)
    calm = pipeflow(["watch", "watched.yaml", "--once"], cwd=project, timeout=300)
    assert calm.returncode == 0 and "no trigger fired" in calm.stdout, calm.stdout + calm.stderr
    _send(served, tumours, scale=3.0, n=300)
    fired = pipeflow(["watch", "watched.yaml", "--once"], cwd=project, timeout=300)
    assert fired.returncode == 0, fired.stdout + fired.stderr
    assert "triggered" in fired.stdout and "drifted feature" in fired.stdout
    (event,) = [e for e in audit.read(own_store / "watch", "events") if e["event"] == "trigger"]
    assert event["causes"][0]["cause"] == "drift" and event["causes"][0]["report_window_end"]
