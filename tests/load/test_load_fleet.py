"""``benchmarks/load_fleet.py`` run for real, small: 50 keep-alive clients at 3 ``pipeflow serve``
replicas behind its round-robin proxy (and at one replica, its baseline), so the script cannot
rot. Asserted: it exits 0, every request was answered 200, the proxy gave every replica its turn
and every replica audited what it answered, and the audit line says records = acknowledged with
nothing missing. Throughput and latency are printed by the script, never compared here."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_fleet.py"
AUDIT = re.compile(
    r"^PASS  audit log across the fleet: ([\d,]+) records = ([\d,]+) acknowledged answers; "
    r"acknowledged ids missing from the journals: 0, records never acknowledged: 0",
    re.M,
)
FLEET = re.compile(r"^info  3 replicas: (.*)$", re.M)
PER_REPLICA = re.compile(r"replica (\d) ([\d,]+) connections / ([\d,]+) records")


def load_fleet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_fleet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_fleet"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_fleet_load_script_answers_every_client_and_audits_exactly_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    out = tmp_path / "fleet.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--clients", "50", "--duration", "2"]
    cmd += ["--baseline-duration", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    shown = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, shown

    audit = AUDIT.search(done.stdout)
    assert audit, shown
    records, acknowledged = (int(x.replace(",", "")) for x in audit.groups())
    assert records == acknowledged > 0
    # the proxy took turns: 50 connections over 3 replicas, and each one audited its answers
    (fleet_line,) = FLEET.findall(done.stdout)
    replicas = [(int(c.replace(",", "")), int(r.replace(",", ""))) for _, c, r in
                PER_REPLICA.findall(fleet_line)]  # fmt: skip
    assert sorted(c for c, _ in replicas) == [16, 17, 17], fleet_line
    assert all(r > 1 for _, r in replicas), fleet_line  # more than the warm-up's single row

    results = json.loads(out.read_text())
    assert results["ok"] is True
    (fleet,) = results["fleet"]
    (baseline,) = results["baseline"]
    assert fleet["clients"] == baseline["clients"] == 50
    assert fleet["errors"] == baseline["errors"] == 0
    assert fleet["requests"] > 0 and baseline["requests"] > 0


def test_the_audit_check_fails_on_a_missing_or_an_unacknowledged_record() -> None:
    lf = load_fleet()
    assert lf.audit_check(["a", "b", "b"], ["b", "a", "b"])[0]
    ok, text = lf.audit_check(["a"], ["a", "b"])  # an acknowledged answer not in any journal
    assert (
        not ok and "1 records != 2 acknowledged" in text and "missing from the journals: 1," in text
    )
    ok, text = lf.audit_check(["a", "b", "b"], ["a", "b"])  # a record twice
    assert not ok and "records never acknowledged: 1" in text
    assert not lf.audit_check([], [])[0]  # nothing acknowledged proves nothing


def test_a_request_not_answered_200_or_a_replica_killed_fails_the_run() -> None:
    lf = load_fleet()

    def phase(statuses: dict[int, int], exit_status: int | None) -> object:
        n = sum(statuses.values())
        level = lf.Level(
            target="3 replicas", clients=5, duration_s=1.0, connect_s=0.0, latency=[0.01] * n,
            sent=[0.0] * n, statuses=Counter(statuses), rows_ok=statuses.get(200, 0),
            ids=[f"id{i}" for i in range(statuses.get(200, 0))],
            cpu={"client": 0.1, "proxy": 0.1, "replicas": 0.5},
        )  # fmt: skip
        return lf.Phase(
            target="3 replicas", levels=[level], acknowledged=level.ids, connections=[5],
            proxy_failed=0, exits={"replica 1": exit_status}, pids={123: "replica 1"},
        )  # fmt: skip

    audited = {123: [f"id{i}" for i in range(5)]}
    ok, lines = lf.report(phase({200: 5}, -15), None, audited, audited[123])
    assert ok, lines
    ok, lines = lf.report(phase({200: 5, 0: 1}, -15), None, audited, audited[123])
    assert not ok and any(line.startswith("FAIL        5") for line in lines), lines
    ok, lines = lf.report(phase({200: 5}, None), None, audited, audited[123])  # SIGKILLed
    assert not ok and any("replica 1 killed" in line for line in lines), lines
