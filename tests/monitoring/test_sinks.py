"""Alert sinks load through the ``pipeflow.sinks`` entry points: pipeflow's own and a plugin's
by the same path, a plugin's settings under ``options:``, and an unknown or half-declared sink is
refused when the rules are read, not when the first alert fires."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeflow.core.entrypoints import entry_points
from pipeflow.monitoring import sinks
from pipeflow.monitoring.alerts import Rule, Sink, evaluate

PLUGIN = """
    import json

    class MemoSink:
        def __init__(self, config):
            self.out = config.options["out"]

        def send(self, alert):
            with open(self.out, "a") as fh:
                fh.write(json.dumps({"rule": alert["rule"], "model": alert["model"]}) + "\\n")
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution (a dist-info folder on sys.path) declaring a ``memo`` sink."""
    site = tmp_path / "site"
    dist = site / "memo_sinks-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "memo_sinks.py").write_text(textwrap.dedent(PLUGIN))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memo-sinks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pipeflow.sinks]\nmemo = memo_sinks:MemoSink\n")
    monkeypatch.syspath_prepend(str(site))
    entry_points.cache_clear()
    sinks._sink_class.cache_clear()
    yield tmp_path
    sys.modules.pop("memo_sinks", None)
    entry_points.cache_clear()
    sinks._sink_class.cache_clear()


def test_the_built_in_sinks_are_entry_points_of_pipeflow_itself() -> None:
    found = sinks._entry_points()
    assert {"log", "file", "webhook"} <= set(found)
    assert {found[n].dist.name for n in ("log", "file", "webhook")} == {"pipeflow"}
    assert isinstance(sinks.open_sink(Sink(type="log")), sinks.AlertSink)


def test_a_plugin_sink_receives_alerts_with_its_options(plugin: Path) -> None:
    out = plugin / "memo.jsonl"
    declared = Sink(type="memo", options={"out": str(out)})
    report = {"model": "m", "version": 1, "drift_share": 0.9}
    fired = evaluate(report, [Rule(metric="drift_share", threshold=0.5)], [declared], plugin)
    assert len(fired) == 1 and fired[0]["sinks"] == ["memo"]
    assert out.read_text().splitlines() == ['{"rule": "drift_share > 0.5", "model": "m"}']


def test_unknown_and_half_declared_sinks_are_refused_up_front() -> None:
    with pytest.raises(
        ValueError, match=r"unknown sink type; did you mean 'webhook'\? .*; got 'webhok'"
    ):
        Sink(type="webhok", url="http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="a file sink needs `path:`"):
        Sink(type="file")
    with pytest.raises(ValueError, match="a webhook sink needs `url:`"):
        Sink(type="webhook")
