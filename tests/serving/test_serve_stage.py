"""The `serve` stage starts a detached server for a registry alias, or finds the one running."""

from __future__ import annotations

import os
import signal

import httpx
from helpers import free_port, pipeflow, sample_rows


def test_serve_stage_starts_a_server_then_finds_it_on_the_next_run(tumours) -> None:
    port = free_port()
    spec = tumours / f"serve-{port}.yaml"
    spec.write_text(
        "pipeline: serving\n"
        "stages:\n"
        "  online:\n"
        "    type: serve\n"
        f"    with: {{model: tumours@production, port: {port}, reload_interval_s: 0.5}}\n"
    )
    first = pipeflow(["run", spec.name, "--quiet"], cwd=tumours, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    out = pipeflow(
        ["runs", "output", "latest", "online", "--spec", spec.name, "--format", "json"], cwd=tumours
    )
    assert out.returncode == 0, out.stderr
    import json

    endpoint = json.loads(out.stdout)
    try:
        assert endpoint["started"] is True and endpoint["version"] == 1
        url = endpoint["url"]
        r = httpx.post(f"{url}/v1/models/tumours/predict", json=sample_rows(tumours, 2), timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        again = pipeflow(["run", spec.name, "--quiet"], cwd=tumours, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 done" in again.stdout  # never cached: it checked the address again
        second = json.loads(
            pipeflow(
                ["runs", "output", "latest", "online", "--spec", spec.name, "--format", "json"],
                cwd=tumours,
            ).stdout
        )
        assert second["started"] is False and second["url"] == url
    finally:
        os.kill(endpoint["pid"], signal.SIGTERM)
