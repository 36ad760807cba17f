"""An Open Inference Protocol request with binary tensor data, built by hand from the specification.

Used by docs/serving.md (section "Binary tensor data"). It sends two claims to
``/v2/models/MODEL/infer`` as the binary extension's body: the JSON request, then each input's
raw bytes (``BYTES``: a 4-byte little-endian length before each UTF-8 string; ``FP32``: 4 bytes
a value), with the JSON part's length in the ``Inference-Header-Content-Length`` header. It
asks for ``predict`` in binary and ``predict_proba`` in JSON, then prints the answer's content
type, the JSON part's length and the binary part's, the ``predict`` output's header, and the
labels read back from the binary part. Exits 1 if the server did not answer 200.

Arguments::

    python docs/examples/binary_infer.py [URL] [--model claims-categoriser]

``URL`` defaults to http://127.0.0.1:8000 (``pipeflow serve claims-categoriser@production`` in a
run copy of ``specs/claims``). No client library: httpx and the standard library.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

import httpx

ROWS = [
    ("burst pipe flooded the kitchen", 3200.5, "home", "north"),
    ("car stolen from the driveway overnight", 1800.0, "auto", "east"),
]
NAMES = ["description", "amount", "policy_type", "region"]
TYPES = ["BYTES", "FP32", "BYTES", "BYTES"]


def text(values: tuple[str, ...]) -> bytes:
    """``BYTES`` elements: a 4-byte little-endian length, then the UTF-8 bytes, per element."""
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def body() -> tuple[bytes, int]:
    """The request's bytes and the length of its JSON part."""
    columns = list(zip(*ROWS, strict=True))
    blobs = [text(columns[0]), struct.pack(f"<{len(ROWS)}f", *columns[1]), text(columns[2]),
             text(columns[3])]  # fmt: skip
    header = json.dumps({
        "inputs": [{"name": n, "shape": [len(ROWS)], "datatype": t,
                    "parameters": {"binary_data_size": len(b)}}
                   for n, t, b in zip(NAMES, TYPES, blobs, strict=True)],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}},
                    {"name": "predict_proba"}],
    }).encode()  # fmt: skip
    return header + b"".join(blobs), len(header)


def labels(binary: bytes) -> list[str]:
    """The ``BYTES`` elements of a binary output, read back."""
    out, pos = [], 0
    while pos < len(binary):
        (size,) = struct.unpack_from("<I", binary, pos)
        out.append(binary[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="the server's URL")
    parser.add_argument("--model", default="claims-categoriser", help="the served model's name")
    args = parser.parse_args(argv)
    content, length = body()
    url = f"{args.url.rstrip('/')}/v2/models/{args.model}/infer"
    r = httpx.post(url, content=content, timeout=30,
                   headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
    if r.status_code != 200:
        print(f"status {r.status_code}: {r.text}")
        return 1
    n = int(r.headers["Inference-Header-Content-Length"])
    answer, binary = json.loads(r.content[:n]), r.content[n:]
    print(r.headers["content-type"], n, len(binary))
    print(answer["outputs"][0])
    print(labels(binary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
