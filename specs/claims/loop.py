"""The closed loop of the claims example, in one command: ``python specs/claims/loop.py``.

1. Train on month 0 and promote the model to ``production`` (``pipeflow run``).
2. Serve ``claims-categoriser@production`` (``pipeflow serve``, following the alias).
3. Month after month, replay claims with more and more drift (new phrasing, more fires and
   floods, inflated amounts) through the server, and send the true categories back as feedback.
4. After each month, ``pipeflow watch --once``: the ``drift`` monitor stage compares the month's
   traffic with the training reference; drift or an accuracy alert starts a retraining run on that
   month's claims, whose model must pass the same gates before ``production`` moves to it. The
   server picks the new version up without a restart.
5. Print, per month, the live accuracy, what the monitor saw, and which version served.

Everything runs on 127.0.0.1 with generated data; the store is ``.pipeflow`` beside this file
unless ``--workdir`` points at a copy of this folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pipeflow(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pipeflow")
    out = subprocess.run(
        [str(exe), *args], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    if check and out.returncode != 0:
        raise SystemExit(f"pipeflow {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def replay(url: str, month: int, drift: float, n: int) -> tuple[int, float]:
    """Send a month of claims and their true categories; returns (rows, live accuracy)."""
    sys.path.insert(0, str(HERE))
    from steps import clean_claims, generate_claims

    clean = clean_claims(generate_claims(n, 7, month, drift), 250000)["clean"]
    rows = clean[["description", "amount", "policy_type", "region"]].to_dict(orient="records")
    truth = clean["category"].tolist()
    predicted, ids = [], []
    for i in range(0, len(rows), 100):
        answer = post(f"{url}/v1/models/claims-categoriser/predict", rows[i : i + 100])
        for p in answer["predictions"]:
            ids.append(p["id"])
            predicted.append(p["prediction"])
    feedback = [{"id": i, "outcome": t} for i, t in zip(ids, truth, strict=True)]
    post(f"{url}/v1/models/claims-categoriser/feedback", feedback)
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    return len(truth), accuracy


def post(url: str, payload: object) -> dict:
    """POST JSON with the standard library (the demo installs no HTTP client)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - 127.0.0.1
        return json.loads(answer.read())


def serving_version(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as answer:  # noqa: S310 - 127.0.0.1
        return int(json.loads(answer.read())["version"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=HERE, help="a copy of this folder")
    parser.add_argument("--months", type=int, default=4)
    parser.add_argument("--claims", type=int, default=1500, help="claims replayed per month")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    print("month 0: training and promoting ...", flush=True)
    pipeflow(workdir, "run", "pipeline.yaml", "--quiet")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / ".pipeflow" / "loop-server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("pipeflow")), "serve", "claims-categoriser@production",
         "--spec", "pipeline.yaml", "--port", str(port), "--reload-interval", "0.5", "--log-level", "warning"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    rows = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                serving_version(url)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the server did not start: {(workdir / '.pipeflow' / 'loop-server.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        quiet_since = None  # when the previous month's traffic ended
        for month in range(1, args.months + 1):
            drift = min(1.0, 0.3 * month)
            version = serving_version(url)
            started = time.time()
            n, accuracy = replay(url, month, drift, args.claims)
            # The monitor's window ends when the watch reaches the `drift` stage, seconds from now
            # on a busy machine: it reaches back to the end of the previous month's traffic (a
            # whole watch ago), so it holds all of this month's traffic and none of the last.
            since = quiet_since if quiet_since is not None else started - 60
            quiet_since = time.time()
            window = f"{math.ceil(quiet_since - since)}s"
            watched = pipeflow(
                workdir, "watch", "pipeline.yaml", "--once",
                "--set", f"params.month={month}", "--set", f"params.drift={drift}",
                "--set", f"params.monitor_window={window}", check=False,
            )  # fmt: skip
            fired = "triggered" in watched.stdout
            deadline = time.monotonic() + 10
            while fired and time.monotonic() < deadline and serving_version(url) == version:
                time.sleep(0.2)
            after = serving_version(url)
            rows.append(
                {"month": month, "drift": drift, "claims": n, "served_by": version,
                 "live_accuracy": round(accuracy, 4), "retrained": fired, "now_serving": after}
            )  # fmt: skip
            cause = next(
                (line for line in watched.stdout.splitlines() if "triggered" in line),
                "no trigger fired",
            )
            print(
                f"month {month}: drift {drift:.1f}, {n} claims, live accuracy {accuracy:.3f} on v{version}; "
                f"{cause.strip()}; serving v{after}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    summary = workdir / ".pipeflow" / "loop-summary.json"
    summary.write_text(json.dumps(rows, indent=2))
    print(f"summary: {summary}")
    return (
        0
        if os.environ.get("PIPEFLOW_LOOP_STRICT") is None
        or all(r["live_accuracy"] > 0 for r in rows)
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
