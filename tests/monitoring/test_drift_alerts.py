"""Drift measures on known distributions, and alert rules with sinks, cooldown and a webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeflow.governance.profile import reference_profile
from pipeflow.monitoring.alerts import Rule, Sink, evaluate, parse_duration
from pipeflow.monitoring.drift import feature_drift, psi
from pipeflow.monitoring.history import load_alerts

RNG = np.random.default_rng(0)
TRAIN = pd.DataFrame(
    {
        "amount": RNG.lognormal(8, 0.5, 20000),
        "region": RNG.choice(["north", "south", "east"], 20000, p=[0.5, 0.3, 0.2]),
        "text": RNG.choice(
            ["burst pipe in the kitchen", "car stolen overnight", "fire in the garage"], 20000
        ),
    }
)
ROLES = {"amount": "numeric", "region": "categorical", "text": "text"}
REFERENCE = reference_profile(TRAIN, ROLES)


def live(n: int, *, shift: float = 0.0, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(8 + shift, 0.5, n),
            "region": rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2]),
            "text": rng.choice(
                ["burst pipe in the kitchen", "car stolen overnight", "fire in the garage"], n
            ),
        }
    )


def test_the_same_distribution_shows_no_drift() -> None:
    report = feature_drift(REFERENCE, live(5000))
    assert report["amount"]["psi"] < 0.02 and report["amount"]["ks"] < 0.05
    assert report["region"]["psi"] < 0.02 and report["region"]["p_value"] > 0.001
    assert report["text"]["vocabulary_js"] < 0.05 and report["text"]["oov_rate"] == 0
    assert not any(f["drifted"] for f in report.values())


def test_shifted_amounts_new_categories_and_new_phrasing_are_drift() -> None:
    frame = live(5000, shift=1.0)
    frame.loc[:999, "region"] = "mars"
    frame.loc[:2999, "text"] = "hail dented the roof and the conservatory"
    report = feature_drift(REFERENCE, frame)
    assert report["amount"]["drifted"] and report["amount"]["psi"] > 1.0
    assert report["amount"]["ks"] > 0.5
    assert report["region"]["unseen_rate"] == pytest.approx(0.2)
    assert report["region"]["drifted"] and report["region"]["p_value"] < 1e-6
    assert report["text"]["oov_rate"] > 0.3 and report["text"]["drifted"]


def test_missing_features_and_non_finite_values_do_not_crash() -> None:
    frame = live(100)
    frame["amount"] = [np.nan, np.inf, -np.inf, None] * 25
    report = feature_drift(REFERENCE, frame.drop(columns=["text"]))
    assert report["amount"]["missing_rate"] == 1.0 and report["amount"]["psi"] is None
    assert report["text"]["note"] == "not in the live inputs"


def test_psi_is_zero_for_equal_counts_and_grows_with_the_shift() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0)
    assert psi([10, 20, 30], [30, 20, 10]) > psi([10, 20, 30], [15, 20, 25]) > 0


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("1h") == 3600 and parse_duration(30) == 30
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> str:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts"
    server.shutdown()


def test_rules_fire_to_every_sink_once_per_cooldown(tmp_path: Path, webhook: str, caplog) -> None:
    report = {
        "model": "m",
        "version": 3,
        "window": {"seconds": 3600},
        "drift_share": 0.5,
        "accuracy": {"accuracy": 0.81},
        "features": {"amount": {"psi": 0.4}, "region": {"psi": 0.01}, "text": {"psi": 0.3}},
    }
    rules = [
        Rule(metric="drift_share", threshold="> 0.3", severity="critical", cooldown="1h"),
        Rule(metric="accuracy.accuracy", threshold="< 0.9", cooldown="10m"),
        Rule(metric="features.*.psi", threshold="> 0.2"),
        Rule(metric="prediction.psi", threshold="> 0.2"),  # not in the report: never fires
    ]
    sinks = [
        Sink(type="log"),
        Sink(type="file", path=str(tmp_path / "alerts.jsonl")),
        Sink(type="webhook", url=webhook),
    ]
    with caplog.at_level("WARNING", logger="pipeflow.alerts"):
        fired = evaluate(report, rules, sinks, tmp_path, now=1000.0)
    assert sorted(a["metric"] for a in fired) == [
        "accuracy.accuracy",
        "drift_share",
        "features.amount.psi",
        "features.text.psi",
    ]
    assert not any(a["suppressed"] for a in fired)
    assert len(_Hook.received) == 4 and {a["model"] for a in _Hook.received} == {"m"}
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 4
    assert "ALERT" in caplog.text and "drift_share" in caplog.text
    # within the cooldown: counted, not sent; after 10 minutes the accuracy rule fires again
    again = evaluate(report, rules, sinks, tmp_path, now=1300.0)
    assert all(a["suppressed"] for a in again) and len(_Hook.received) == 4
    later = evaluate(report, rules, sinks, tmp_path, now=1000.0 + 601)
    assert [a["metric"] for a in later if not a["suppressed"]] == ["accuracy.accuracy"]
    assert len(load_alerts(tmp_path)) == 5


def test_a_dead_webhook_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    report = {"model": "m", "version": 1, "drift_share": 1.0}
    sinks = [Sink(type="webhook", url="http://127.0.0.1:9/nothing", timeout_s=1)]
    fired = evaluate(report, [Rule(metric="drift_share", threshold=0.5)], sinks, tmp_path)
    assert len(fired) == 1 and "webhook" in caplog.text


def test_bad_rules_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match="comparison"):
        Rule(metric="drift_share", threshold="about 0.3")
    with pytest.raises(ValueError, match="duration"):
        Rule(metric="drift_share", threshold="> 0.3", cooldown="a while")
    with pytest.raises(ValueError, match="http"):
        Sink(type="webhook", url="file:///etc/passwd")


def test_rules_on_bias_and_business_the_version_lacks_are_refused_naming_the_rule() -> None:
    from pipeflow.errors import UsageError
    from pipeflow.monitoring.kpis import check_rules

    bare = {"name": "m", "version": 2}
    declared = {**bare, "bias": {"attribute": "region"}, "business": {"value_per_correct": 1}}
    rules = [
        Rule(metric="drift_share", threshold="> 0.3"),
        Rule(metric="bias.demographic_parity_difference", threshold="> 0.1"),
        Rule(metric="business.cost_per_prediction", threshold="> 3"),
    ]
    check_rules(declared, rules)
    with pytest.raises(UsageError, match=r"alerts\[1\]\.metric .*m@2 declares no sensitive"):
        check_rules(bare, rules)
    with pytest.raises(UsageError, match=r"alerts\[2\]\.metric .*m@2 declares no business"):
        check_rules(bare, [rules[0], rules[0], rules[2]])
    with pytest.raises(UsageError, match="no business metric 'profit'"):
        check_rules(declared, [Rule(metric="business.profit", threshold="> 1")])


def test_a_rule_on_a_business_metric_fires(tmp_path: Path) -> None:
    report = {"model": "m", "version": 1, "business": {"cost_per_prediction": 4.5}}
    fired = evaluate(
        report, [Rule(metric="business.cost_per_prediction", threshold="> 3")], [], tmp_path
    )
    assert [(a["metric"], a["value"]) for a in fired] == [("business.cost_per_prediction", 4.5)]
