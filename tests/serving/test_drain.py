"""What an autoscaler and a load balancer see of a replica: in-flight requests and queue depth in
/metrics, readiness 503 while it drains after SIGTERM, and no acknowledged prediction lost when one
replica of a fleet is stopped under load."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
from helpers import PREDICT, counter, sample_rows, start_server, wait_until

from pipeflow.serving.app import create_app
from pipeflow.serving.config import ServeConfig
from pipeflow.store import journal as audit


def test_in_flight_and_queue_depth_count_requests_held_by_a_busy_model(
    tumours: Path, tmp_path: Path
) -> None:
    """The scoring thread is held busy (the model is real; its one thread is occupied), so the
    first request waits on the model and the next three wait in the queue."""
    app = create_app(
        ServeConfig(str(tumours / ".pipeflow"), "tumours", audit_dir=str(tmp_path / "audit"))
    )
    server = app.state.server
    batcher = server.primary.batcher
    busy = threading.Event()
    batcher.pool.submit(busy.wait, 30)
    rows = sample_rows(tumours, 2)

    async def main() -> tuple[list[float], list[float], list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:

            async def gauges() -> list[float]:
                text = (await c.get("/metrics")).text
                return [
                    counter(text, "pipeflow_requests_in_flight"),
                    counter(text, "pipeflow_queue_depth"),
                ]

            idle = await gauges()
            first = asyncio.create_task(c.post(PREDICT, json=rows))
            while batcher.scoring != 1:  # taken into a batch, waiting for the model's thread
                await asyncio.sleep(0.01)
            rest = [asyncio.create_task(c.post(PREDICT, json=rows)) for _ in range(3)]
            while batcher.queue.qsize() < 3:
                await asyncio.sleep(0.01)
            loaded = await gauges()
            busy.set()
            answers = await asyncio.gather(first, *rest)
            return idle + loaded, await gauges(), [r.status_code for r in answers]

    seen, after, codes = asyncio.run(main())
    assert seen == [0, 0, 4, 3]  # idle, then 4 in flight of which 3 queued
    assert after == [0, 0] and codes == [200] * 4


def test_sigterm_on_one_replica_of_two_drains_it_and_loses_no_acknowledged_prediction(
    tumours: Path, tmp_path: Path
) -> None:
    """Two replicas over one store, each with its own audit folder (as pods are), clients
    spread over both (a Service). SIGTERM one: for --drain-seconds it is not ready (503) but
    still answers, with Connection: close so keep-alive clients move; then it stops. Every
    prediction either replica acknowledged is in one of the audit logs, none answered 5xx."""
    drain = 3.0
    store = tumours / ".pipeflow"
    replicas = [
        start_server(
            tumours,
            "tumours@production",
            "--audit-dir",
            str(tmp_path / "audit" / name),
            "--drain-seconds",
            str(drain),
            store=store,
            log_dir=tmp_path,
        )
        for name in ("pod-a", "pod-b")
    ]
    a, b = replicas
    payload = sample_rows(tumours, 3)
    stop = threading.Event()
    answered: list[tuple[str, float, int, dict]] = []  # (replica, time, status, body)
    lock = threading.Lock()

    def client(offset: int) -> None:
        clients = [httpx.Client(base_url=r.url, timeout=10) for r in replicas]
        turn = offset
        try:
            while not stop.is_set():
                turn += 1
                which = replicas[turn % 2]
                try:
                    r = clients[turn % 2].post(PREDICT, json=payload)
                except httpx.HTTPError:
                    continue  # refused or reset: not acknowledged, the next try goes elsewhere
                with lock:
                    answered.append((which.url, time.monotonic(), r.status_code, r.json()))
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(answered) > 100, 30, "traffic on both replicas")
        with httpx.Client(base_url=a.url, timeout=5) as probe:
            assert probe.get("/ready").status_code == 200
            signalled = time.monotonic()
            os.kill(a.proc.pid, signal.SIGTERM)
            ready = wait_until(
                lambda: (r := probe.get("/ready")).status_code == 503 and r, 2, "/ready 503"
            )
            assert ready.json()["status"] == "draining"
            assert probe.get("/v2/health/ready").status_code == 503
            assert probe.get("/v2/models/tumours/ready").status_code == 503
            assert probe.get("/health").status_code == 200  # draining is not dead
            metrics = probe.get("/metrics")
            assert counter(metrics.text, "pipeflow_draining") == 1
            assert metrics.headers["connection"] == "close"
        a.proc.wait(drain + 20)
        stopped = time.monotonic()
        time.sleep(0.5)  # the other replica takes all of the traffic
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for r in replicas:
            r.stop()
    assert stopped - signalled >= drain
    assert a.proc.returncode in (0, -signal.SIGTERM), a.log.read_text()[-2000:]
    assert "draining for 3s" in a.log.read_text()
    codes = {status for _, _, status, _ in answered}
    assert codes == {200}, codes
    during = [t for url, t, _, _ in answered if url == a.url and signalled < t]
    assert len(during) > 10, "the draining replica kept answering"
    assert any(url == b.url and t > stopped for url, t, _, _ in answered)
    acknowledged = [p["id"] for *_, body in answered for p in body["predictions"]]
    audited = [r["id"] for pod in ("pod-a", "pod-b") for r in audit.read(tmp_path / "audit" / pod)]
    assert len(set(acknowledged)) == len(acknowledged) > 300
    assert set(acknowledged) <= set(audited)
    assert len(audited) == len(set(audited))
