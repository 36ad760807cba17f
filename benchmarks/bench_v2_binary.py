"""Open Inference Protocol: a 1000-row request as binary tensor data against the same as JSON.

The model is the registry's ``tumours@production`` (30 numeric features and one text feature;
see ``bench_serving.py``). One request holds 1000 rows as one 1-D tensor per feature:

- **binary**: the numeric features as ``FP32`` binary tensors, the text feature as a ``BYTES``
  binary tensor (4-byte little-endian length, then the bytes), the lengths in
  ``parameters.binary_data_size`` and ``Inference-Header-Content-Length``; what Triton's and
  KServe's Python clients send by default for float32 arrays;
- **JSON**: the same values in ``data`` lists (``FP64``, as written by ``json.dumps`` of the
  float32-rounded values: the shortest text that reads back as the same double).

Both are built here by hand from the specification, once, outside the timing. Two measurements,
each the best of the repeats (noise only ever adds time), binary and JSON alternating:

1. **decode, in process**: the body to checked rows, as the server does it: for JSON
   ``parse_json`` and ``rows_from_v2``; for binary ``split_body``, ``parse_json`` of the JSON
   part, ``attach_binary`` and ``rows_from_v2``; then the signature check both go through
   (``check_columns``). CPU time of this process, so that other work on the machine does not
   count; and each part apart, to show where the time goes.
2. **end to end**: sequential requests (one at a time, one keep-alive connection) to a real
   ``pipeflow serve`` on 127.0.0.1: latency per request, and the server's CPU time per request
   (from ``/proc/PID/stat``; less sensitive to this machine's noise than latency).

Usage: ``python benchmarks/bench_v2_binary.py [--quick]``. It prints figures; nothing is a target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import build_project, request_rows, start_pipeflow  # noqa: E402

ROWS = 1000
INFER = "/v2/models/tumours/infer"
HEADER = "Inference-Header-Content-Length"


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bodies(rows: list[dict[str, Any]]) -> dict[str, tuple[bytes, dict[str, str]]]:
    """(body, headers) of the binary and the JSON request for the same (float32) values."""
    names = list(rows[0])
    inputs, blobs, tensors = [], [], []
    for name in names:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            datatype, data = "BYTES", values
        else:
            raw = struct.pack(f"<{len(values)}f", *values)
            datatype, data = "FP32", [f32(v) for v in values]
        inputs.append(
            {
                "name": name,
                "shape": [len(values)],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
        json_type = "BYTES" if datatype == "BYTES" else "FP64"
        tensors.append({"name": name, "shape": [len(values)], "datatype": json_type, "data": data})
    head = json.dumps({"inputs": inputs}).encode()
    return {
        "binary": (head + b"".join(blobs), {HEADER: str(len(head))}),
        "json": (json.dumps({"inputs": tensors}).encode(), {"content-type": "application/json"}),
    }


def decode(kind: str, body: bytes, headers: dict[str, str], signature: Any) -> int:
    from pipeflow.serving.protocols import v2
    from pipeflow.serving.routes import parse_json

    if kind == "binary":
        head, binary = v2.split_body(body, headers[HEADER])
        payload = v2.attach_binary(parse_json(head), binary)
    else:
        payload = parse_json(body)
    rows = v2.rows_from_v2(payload, signature.names)
    problems, _, _ = signature.check_columns(rows)
    assert not problems, problems[:1]
    return len(rows)


def measure_parts(
    made: dict[str, tuple[bytes, dict[str, str]]], signature: Any, repeats: int
) -> list[tuple[str, float]]:
    """Each step of the decoding apart: (step, least CPU ms)."""
    from pipeflow.serving.protocols import v2
    from pipeflow.serving.routes import parse_json

    body, _ = made["json"]
    payload = parse_json(body)
    rows = v2.rows_from_v2(payload, signature.names)
    binary_body, headers = made["binary"]
    head, binary = v2.split_body(binary_body, headers[HEADER])
    attached = v2.attach_binary(parse_json(head), binary)
    steps = [
        ("JSON: parse_json", lambda: parse_json(body)),
        ("JSON: rows_from_v2", lambda: v2.rows_from_v2(payload, signature.names)),
        (
            "binary: split + parse JSON part",
            lambda: parse_json(v2.split_body(binary_body, headers[HEADER])[0]),
        ),
        ("binary: attach_binary", lambda: v2.attach_binary(parse_json(head), binary)),
        ("binary: rows_from_v2", lambda: v2.rows_from_v2(attached, signature.names)),
        ("both: check_columns", lambda: signature.check_columns(rows)),
    ]
    return [(label, best_of(fn, repeats) * 1000) for label, fn in steps]


def best_of(fn: Any, repeats: int) -> float:
    """The least CPU time of ``repeats`` calls (CPU time: this process's, so time spent waiting
    for the machine's other work is not counted)."""
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests")
    args = parser.parse_args()
    repeats, requests = (5, 20) if args.quick else (21, 100)

    import httpx

    from pipeflow.registry import Registry
    from pipeflow.registry.signature import Signature
    from pipeflow.store.artifacts import ArtifactStore

    with tempfile.TemporaryDirectory(prefix="pipeflow-bench-v2-") as name:
        store = build_project(Path(name))
        project = store.parent
        table = request_rows(project)
        rows = [table[i % len(table)] for i in range(ROWS)]
        made = bodies(rows)
        record = Registry(ArtifactStore(str(store))).resolve("tumours", "production")
        signature = Signature.from_record(record)

        decoded: dict[str, list[float]] = {"binary": [], "json": []}
        for _ in range(3):  # alternate, so a burst of load elsewhere hits both
            for kind in ("json", "binary"):
                body, headers = made[kind]
                t = best_of(lambda: decode(kind, body, headers, signature), repeats)  # noqa: B023
                decoded[kind].append(t)

        parts = measure_parts(made, signature, repeats)

        server = start_pipeflow(project, store)
        latencies: dict[str, list[float]] = {"binary": [], "json": []}
        cpu: dict[str, list[float]] = {"binary": [], "json": []}
        answers = {}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as c:
                for kind in ("json", "binary"):  # warm-up, and the answers compared
                    body, headers = made[kind]
                    for _ in range(3):
                        r = c.post(INFER, content=body, headers=headers)
                        assert r.status_code == 200, r.text[:300]
                    answers[kind] = [o for o in r.json()["outputs"] if o["name"] == "predict"]
                for rep in range(4):
                    for kind in ("json", "binary") if rep % 2 == 0 else ("binary", "json"):
                        body, headers = made[kind]
                        cpu0 = server.cpu_s()
                        for _ in range(requests // 4):
                            t = time.perf_counter()
                            r = c.post(INFER, content=body, headers=headers)
                            latencies[kind].append(time.perf_counter() - t)
                            assert r.status_code == 200, r.text[:300]
                        cpu[kind].append((server.cpu_s() - cpu0) / (requests // 4))
        finally:
            server.stop()

    same = answers["binary"] == answers["json"]
    print(f"Open Inference Protocol, one request of {ROWS} rows x 31 features (30 FP32, 1 BYTES)")
    print(f"{'':28} {'JSON':>12} {'binary':>12} {'binary/JSON':>12}")
    sizes = {k: len(v[0]) for k, v in made.items()}
    print(
        f"{'body size':28} {sizes['json']:>10,} B {sizes['binary']:>10,} B "
        f"{sizes['binary'] / sizes['json']:>11.2f}x"
    )
    for label, values in (
        ("decode + check, CPU", {k: min(v) * 1000 for k, v in decoded.items()}),
        ("request latency, median", {k: statistics.median(v) * 1000 for k, v in latencies.items()}),
        ("request latency, best", {k: min(v) * 1000 for k, v in latencies.items()}),
        ("server CPU per request", {k: min(v) * 1000 for k, v in cpu.items()}),
    ):
        print(
            f"{label:28} {values['json']:>9.2f} ms {values['binary']:>9.2f} ms "
            f"{values['binary'] / values['json']:>11.2f}x"
        )
    print(f"same predictions from both: {'yes' if same else 'NO'}")
    print("where the decoding time goes (least CPU time):")
    for label, ms in parts:
        print(f"  {label:34} {ms:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
