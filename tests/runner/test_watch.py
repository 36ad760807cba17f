"""Triggers: cron matching, and `pipeflow watch --once` starting a run when a source changes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from helpers import pipeflow

from pipeflow.runner.watch import cron_due, cron_matches, parse_cron
from pipeflow.store import journal as audit


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_cron_fields() -> None:
    nightly = parse_cron("0 2 * * *")
    assert cron_matches(nightly, at("2026-11-25 02:00"))
    assert not cron_matches(nightly, at("2026-11-25 02:01"))
    quarter = parse_cron("*/15 9-17 * * 1-5")
    assert cron_matches(quarter, at("2026-11-25 09:45"))  # a Wednesday
    assert not cron_matches(quarter, at("2026-11-28 09:45"))  # Saturday
    sundays = parse_cron("30 6 * * 7")
    assert cron_matches(sundays, at("2026-11-29 06:30"))
    for bad in ("* * * *", "61 * * * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"):
        with pytest.raises(ValueError, match="cron expression"):
            parse_cron(bad)


def test_a_slot_passed_while_busy_is_not_skipped() -> None:
    since, now = at("2026-11-25 01:58").timestamp(), at("2026-11-25 02:07").timestamp()
    assert cron_due("0 2 * * *", since, now) == at("2026-11-25 02:00").timestamp()
    assert cron_due("0 3 * * *", since, now) is None


def _watch(project: Path) -> subprocess.CompletedProcess[str]:
    return pipeflow(["watch", "pipeline.yaml", "--once"], cwd=project)


def test_watch_runs_the_pipeline_when_the_watched_source_changes(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline: watched\n"
        "triggers: {on_data_change: [raw], schedule: '0 0 1 1 *'}\n"
        "stages:\n"
        "  raw: {type: ingest, with: {path: data.csv}}\n"
    )
    first = _watch(tmp_path)  # never run: that is a change
    assert first.returncode == 0, first.stdout + first.stderr
    assert "has never been run" in first.stdout and "done" in first.stdout
    quiet = _watch(tmp_path)
    assert quiet.returncode == 0 and "no trigger fired" in quiet.stdout
    (tmp_path / "data.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    changed = _watch(tmp_path)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "source of 'raw' changed" in changed.stdout
    events = list(audit.read(tmp_path / ".pipeflow" / "watch", "events"))
    fired = [e for e in events if e["event"] == "trigger"]
    finished = [e for e in events if e["event"] == "run_finished"]
    assert len(fired) == 2 and [e["state"] for e in finished] == ["done", "done"]
    assert fired[1]["causes"][0]["cause"] == "data_change"
    shown = pipeflow(["runs", "list"], cwd=tmp_path, timeout=60)
    assert shown.stdout.count("watched") == 2
    json.dumps(events)


def test_watch_refuses_a_spec_without_triggers(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline: plain\nstages:\n  raw: {type: python, with: {function: 'json:dumps', kwargs: {obj: 1}}}\n"
    )
    out = _watch(tmp_path)
    assert out.returncode == 2 and "declares no triggers" in out.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--interval", "0"), ("--interval", "-1"), ("--lease", "nan")]
)
def test_watch_refuses_a_period_that_is_not_positive(tmp_path: Path, flag: str, value: str) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline: watched\n"
        "triggers: {schedule: '0 0 1 1 *'}\n"
        "stages:\n"
        "  raw: {type: python, with: {function: 'json:dumps', kwargs: {obj: 1}}}\n"
    )
    out = pipeflow(["watch", "pipeline.yaml", "--once", flag, value], cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{flag} {value}: expected a positive number of seconds" in out.stderr
    assert "Traceback" not in out.stderr and "watching" not in out.stdout


def test_cron_day_fields_match_either_when_both_are_restricted() -> None:
    first_or_monday = parse_cron("0 9 1 * 1")
    assert cron_matches(first_or_monday, at("2026-12-01 09:00"))  # the 1st, a Tuesday
    assert cron_matches(first_or_monday, at("2026-11-30 09:00"))  # a Monday
    assert not cron_matches(first_or_monday, at("2026-12-02 09:00"))
    weekdays = parse_cron("0 9 * * 1-5")  # day-of-month unrestricted: weekday alone decides
    assert not cron_matches(weekdays, at("2026-11-28 09:00"))


def test_check_names_bad_trigger_stages(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x\n1\n")
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline: watched\n"
        "triggers: {on_data_change: [rawx], on_drift: raw}\n"
        "stages:\n"
        "  raw: {type: ingest, with: {path: data.csv}}\n"
    )
    out = pipeflow(["check", "pipeline.yaml"], cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert "names no stage 'rawx'" in out.stderr and "pipeline.yaml:2" in out.stderr
    assert "stage 'raw' (ingest) does not monitor" in out.stderr
