"""A/B and progressive delivery with real `pipeflow serve` processes over one store: sticky
routing by a request key (the same version for a key on every replica and after a restart), a
ramp whose steps are the fleet's and which promotes the canary through the registry's gates, a
withdrawal or a refused gate that ends the ramp, and `pipeflow models compare --live` counting
exactly what the replicas answered."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    PREDICT,
    counter,
    one_line_error,
    pipeflow,
    register_failing_model,
    sample_rows,
    true_labels,
    wait_until,
)

from pipeflow.registry import Registry
from pipeflow.serving.rollout import bucket
from pipeflow.store.artifacts import ArtifactStore

FEEDBACK = "/v1/models/tumours/feedback"


def _replicas(serve, n: int, *args: str, store: Path) -> list[Any]:  # noqa: ANN001
    """``n`` replicas started at once (each loads its models: in parallel, not one by one)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: serve(*args, store=store), range(n)))


def _canary(server) -> dict[str, Any]:  # noqa: ANN001
    return httpx.get(server.url + "/v1/models/tumours").json()["canary"]


def _fleet(store: Path) -> list[dict[str, Any]]:
    return Registry(ArtifactStore(str(store))).fleet_events("tumours")


@pytest.mark.slow
def test_a_key_goes_to_the_same_version_on_every_replica_and_after_a_restart(
    serve, tumours, own_store: Path
) -> None:
    args = ("tumours@production", "--canary", "tumours@2", "--weight", "0.5",
            "--route-by", "header:X-User", "--reload-interval", "0.2")  # fmt: skip
    a, b = _replicas(serve, 2, *args, store=own_store)
    row = sample_rows(tumours, 1)[0]
    users = [f"user-{i}" for i in range(40)]

    def versions(server) -> dict[str, int]:  # noqa: ANN001
        with server.client() as c:
            return {
                u: c.post(PREDICT, json=row, headers={"x-user": u}).json()["version"] for u in users
            }

    first = versions(a)
    assert versions(b) == first == versions(a)
    assert set(first.values()) == {1, 2}
    # the documented assignment: SHA-256 of model and key, under the weight -> the canary
    assert first == {u: 2 if bucket("tumours", u) < 0.5 else 1 for u in users}
    b.stop()
    (again,) = _replicas(serve, 1, *args, store=own_store)
    assert versions(again) == first
    # without the key: at random (40 coin tosses all alike: 2**-39), and counted
    with a.client() as c:
        unkeyed = {c.post(PREDICT, json=row).json()["version"] for _ in range(40)}
        metrics = c.get("/metrics").text
    assert unkeyed == {1, 2}
    assert counter(metrics, "pipeflow_route_unkeyed_total") == 40


@pytest.mark.slow
def test_routing_by_a_field_that_is_not_a_feature_takes_it_out_of_the_rows(
    serve, tumours, own_store: Path
) -> None:
    (server,) = _replicas(serve, 1, "tumours@production", "--canary", "tumours@2",
                          "--weight", "0.5", "--route-by", "field:user_id", store=own_store)  # fmt: skip
    rows = sample_rows(tumours, 3)
    with server.client() as c:
        for i in range(20):
            user = f"u{i}"
            keyed = [{**r, "user_id": user} for r in rows]
            keyed[1]["user_id"] = "someone-else"  # a request is routed by its first row
            r = c.post(PREDICT, json=keyed)
            assert r.status_code == 200, r.text
            assert r.json()["version"] == (2 if bucket("tumours", user) < 0.5 else 1)
    described = httpx.get(server.url + "/v1/models/tumours").json()
    assert described["route_by"] == "field:user_id"


def _traffic(urls: list[str], row: dict, stop: threading.Event, out: list) -> None:
    """Keyed requests round the replicas until ``stop``: (replica, user, status, version)."""
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    try:
        i = 0
        while not stop.is_set():
            user, at = f"user-{i % 50}", i % len(clients)
            r = clients[at].post(PREDICT, json=row, headers={"X-User": user})
            out.append((at, user, r.status_code, r.json().get("version")))
            i += 1
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_a_ramp_steps_up_over_the_fleet_resumes_after_a_restart_and_promotes_the_canary(
    serve, tumours, own_store: Path
) -> None:
    args = ("tumours@production", "--canary", "tumours@2", "--ramp", "25,50,100",
            "--ramp-every", "1s", "--ramp-min-requests", "10", "--route-by", "header:X-User",
            "--reload-interval", "0.2")  # fmt: skip
    a, b = _replicas(serve, 2, *args, store=own_store)
    # the first step is the fleet's: recorded once, applied by both
    steps = [e for e in _fleet(own_store) if e["event"] == "ramp_step"]
    assert [(e["step"], e["weight"]) for e in steps] == [(0, 0.25)]
    assert _canary(a)["weight"] == _canary(b)["weight"] == 0.25
    assert "ramp step 1 of 3: 25%, 50%, 100%, every 1s" in a.log.read_text()
    b.stop()  # a restarted replica resumes the fleet's step (no traffic: no step can end)
    (b,) = _replicas(serve, 1, *args, store=own_store)
    assert _canary(b)["weight"] == 0.25 and _canary(b)["ramp"]["step"] == 1
    row = sample_rows(tumours, 1)[0]
    stop, out = threading.Event(), []
    loop = threading.Thread(target=_traffic, args=([a.url, b.url], row, stop, out))
    loop.start()
    registry = Registry(ArtifactStore(str(own_store)))
    try:
        wait_until(lambda: registry.holder("tumours", "production") == 2, 40, "the promotion")
        wait_until(
            lambda: all(httpx.get(s.url + "/ready").json()["version"] == 2 for s in (a, b)),
            10,
            "both replicas to serve version 2",
        )
        time.sleep(0.3)
    finally:
        stop.set()
        loop.join(60)
    assert {status for _, _, status, _ in out} == {200}, "a request failed during the ramp"
    events = _fleet(own_store)
    steps = [(e["step"], e["weight"]) for e in events if e["event"] == "ramp_step"]
    assert steps == [(0, 0.25), (1, 0.5), (2, 1.0)]  # each step once, in order
    assert all(e["measurements"]["requests"] >= 10 for e in events[1:3])
    (promoted,) = [e for e in events if e["event"] == "ramp_promoted"]
    moved = registry.history("tumours", "production")[-1]
    assert (moved["action"], moved["from_version"], moved["to_version"]) == ("promote", 1, 2)
    assert moved["user"] == "pipeflow-ramp" and promoted["alias_event"] == moved["seq"]
    assert moved["reason"].startswith("ramp 25% -> 50% -> 100% held (")
    # sticky through the ramp: on each replica a user who reached the canary never went back
    for replica in (0, 1):
        for user in {u for at, u, _, _ in out if at == replica}:
            seen = [v for at, u, _, v in out if at == replica and u == user]
            assert seen == sorted(seen), f"{user} went back from the canary on replica {replica}"
    assert _canary(a) is None and _canary(b) is None  # the canary is the primary now


@pytest.mark.slow
def test_a_withdrawal_ends_the_ramp_and_a_refused_gate_withdraws_instead_of_promoting(
    serve, tumours, own_store: Path
) -> None:
    failing = register_failing_model(own_store)
    common = ("--ramp-every", "0.5s", "--ramp-min-requests", "5", "--min-requests", "5",
              "--max-error-rate", "0.2", "--reload-interval", "0.2")  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        ramped, gated = pool.map(
            lambda extra: serve("tumours@production", *common, *extra, store=own_store),
            [
                ("--canary", f"tumours@{failing}", "--ramp", "50,100"),
                ("--canary", "tumours@2", "--ramp", "100", "--ramp-gate", "accuracy>=0.9999"),
            ],
        )
    row = sample_rows(tumours, 1)[0]
    with ramped.client() as c:
        codes = [c.post(PREDICT, json=row).status_code for _ in range(40)]
    assert 500 in codes
    wait_until(lambda: _canary(ramped)["withdrawn"], 10, "the failing canary's withdrawal")
    with gated.client() as c:
        for _ in range(30):
            assert c.post(PREDICT, json=row).status_code == 200
    wait_until(lambda: _canary(gated)["withdrawn"], 10, "the refused promotion")

    def withdrawals() -> int:  # a server says withdrawn before its fleet event is written
        return sum(e["event"] == "canary_withdrawn" for e in _fleet(own_store))

    wait_until(lambda: withdrawals() == 2, 10, "both withdrawals in the fleet's events")
    events = _fleet(own_store)
    by_version = {v: [e["event"] for e in events if e["version"] == v] for v in (failing, 2)}
    assert by_version[failing] == ["ramp_step", "canary_withdrawn"]  # no second step
    assert by_version[2] == ["ramp_step", "canary_withdrawn"]  # held, but not promoted
    (refused,) = [e for e in events if e["version"] == 2 and e["event"] == "canary_withdrawn"]
    assert refused["reason"].startswith("ramp: promotion refused: tumours@2 not promoted: ")
    assert "accuracy" in refused["reason"] and "0.9999" in refused["reason"]
    assert Registry(ArtifactStore(str(own_store))).holder("tumours", "production") == 1


def test_ramp_and_routing_options_are_checked_in_one_line(tumours) -> None:
    for argv, expected in (
        (["--ramp", "5,25"], "--ramp routes to a canary: add --canary tumours@VERSION"),
        (["--canary", "tumours@2", "--ramp", "50,25"], "expected rising percentages"),
        (["--canary", "tumours@2", "--ramp", "5,100", "--weight", "0.5"], "drop --weight"),
        (["--canary", "tumours@2", "--route-by", "cookie:x"], "expected header:NAME"),
        (["--canary", "tumours@2", "--ramp", "5,100", "--ramp-every", "soon"], "--ramp-every"),
        (["--canary", "tumours@2", "--ramp", "100", "--ramp-gate", "acc=>1"], "--ramp-gate"),
    ):
        done = pipeflow(["serve", "tumours@production", *argv], cwd=tumours)
        assert done.returncode == 2, done.stderr
        assert expected in one_line_error(done.stderr), done.stderr


@pytest.mark.slow
def test_compare_live_counts_what_two_replicas_answered_failed_and_were_told(
    serve, tumours, own_store: Path
) -> None:
    failing = register_failing_model(own_store)
    replicas = _replicas(serve, 2, "tumours@production", "--canary", f"tumours@{failing}",
                         "--weight", "0.4", "--route-by", "header:X-User",
                         "--max-error-rate", "1", "--reload-interval", "0.2",
                         store=own_store)  # fmt: skip
    rows, truth = sample_rows(tumours, 60), true_labels(tumours, 60)
    answered = failed = right = 0
    for i, (row, label) in enumerate(zip(rows, truth, strict=True)):
        server = replicas[i % 2]
        with server.client() as c:
            r = c.post(PREDICT, json=row, headers={"X-User": f"u{i}"})
            if r.status_code == 500:
                failed += 1
                continue
            assert r.status_code == 200
            answered += 1
            p = r.json()["predictions"][0]
            right += p["prediction"] == label
        with replicas[(i + 1) % 2].client() as c:  # labelled at the other replica
            c.post(FEEDBACK, json={"id": p["id"], "outcome": label})
    assert answered and failed
    done = pipeflow(["models", "compare", "tumours@production", f"tumours@{failing}", "--live",
                     "--json", "--store", str(own_store)], cwd=tumours)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    one, bad = report["variants"]
    assert (one["variant"], one["rows"], one["answered"], one["failed"]) == (
        "tumours@1", answered, answered, 0)  # fmt: skip
    assert (one["accuracy"]["count"], one["accuracy"]["of"]) == (right, answered)
    low, high = one["accuracy"]["ci"]
    assert low <= right / answered <= high
    assert (bad["rows"], bad["answered"], bad["failed"]) == (failed, 0, failed)
    assert bad["error_rate"]["value"] == 1.0 and bad["accuracy"]["of"] == 0
    assert report["tests"]["error_rate"]["p_value"] < 0.05
    assert any(v.startswith(f"error rate: tumours@{failing} is higher than tumours@1")
               for v in report["verdicts"])  # fmt: skip
    assert f"tumours@{failing} has no feedback on its 0 answered rows" in report["notes"][0]
    shown = pipeflow(["models", "compare", "tumours@1", f"tumours@{failing}", "--live",
                      "--since", "1h", "--store", str(own_store)], cwd=tumours)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "significant at α = 0.05" in shown.stdout and "accuracy [95% CI]" in shown.stdout
    # a version with no traffic is said so, not compared as zeros
    quiet = pipeflow(["models", "compare", "tumours@1", "tumours@2", "--live", "--json",
                      "--store", str(own_store)], cwd=tumours)  # fmt: skip
    assert "tumours@2 has no traffic in the journal" in json.loads(quiet.stdout)["notes"][0]
