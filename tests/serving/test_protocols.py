"""The Open Inference Protocol and MLflow's scoring protocol as their own clients speak them, against
a real ``pipeflow serve`` on 127.0.0.1.

Every request here is built by hand from the specifications, never with pipeflow's encoder:

- the binary tensor data extension (KServe's ``binary_tensor_data``, Triton's
  ``extension_binary_data.md``): the JSON request, then each binary input's bytes in input order,
  little-endian, row-major; a ``BYTES`` element is a 4-byte little-endian length and its bytes;
  ``Inference-Header-Content-Length`` gives the length of the JSON part, ``parameters.
  binary_data_size`` each input's byte count; binary outputs are asked for with ``parameters.
  binary_data`` (per output) or ``parameters.binary_data_output`` (per request) and read back the
  same way;
- the Open Inference Protocol's REST document: versioned paths ``/v2/models/NAME/versions/V/...``,
  ``outputs`` selection, and every error as ``{"error": "<message string>"}``;
- MLflow's scoring server: ``text/csv`` with a header row, ``application/json`` with
  ``dataframe_split``, and ``params`` (MLflow's documented ``predict_method`` pattern).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import PREDICT, Served, sample_rows, start_server

INFER = "/v2/models/tumours/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def served(tumours: Path) -> Iterator[Served]:
    """One server (tumours@production, v1, no canary) for the tests that only send requests."""
    s = start_server(tumours, "tumours@production")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


@pytest.fixture(scope="module")
def rows(tumours: Path) -> list[dict[str, Any]]:
    return sample_rows(tumours, 5)


# ----------------------------------------------------------------- the specification, by hand


def f32(x: float) -> float:
    """``x`` as an FP32 tensor element holds it (what the server reads back)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bytes_elements(values: list[str]) -> bytes:
    """BYTES tensor data: each element a 4-byte little-endian unsigned length, then its bytes."""
    out = b""
    for v in values:
        raw = v.encode("utf-8")
        out += struct.pack("<I", len(raw)) + raw
    return out


def binary_request(header: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """The body (the JSON request, then the binary tensor data in input order) and headers."""
    head = json.dumps(header).encode("utf-8")
    return head + b"".join(blobs), {HEADER: str(len(head))}


def binary_inputs(
    rows: list[dict[str, Any]], numbers: str = "FP32"
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """One 1-D binary input per feature: numbers as ``numbers`` (FP32, FP64, INT64, FP16), text
    as BYTES."""
    code = {"FP32": "f", "FP64": "d", "INT64": "q", "FP16": "e"}[numbers]
    inputs, blobs = [], []
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            datatype, raw = "BYTES", bytes_elements(values)
        else:
            datatype, raw = numbers, struct.pack(f"<{len(values)}{code}", *values)
        inputs.append(
            {
                "name": name,
                "shape": [len(values)],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    return inputs, blobs


def json_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "shape": [len(rows)],
            "datatype": "BYTES" if isinstance(rows[0][name], str) else "FP64",
            "data": [r[name] for r in rows],
        }
        for name in rows[0]
    ]


def read_answer(response: httpx.Response) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the JSON part, every output's values) of an inference answer, binary outputs read by
    hand from the bytes after the JSON part."""
    assert response.status_code == 200, response.text[:500]
    length = response.headers.get(HEADER)
    content = response.content
    head = json.loads(content if length is None else content[: int(length)])
    rest = b"" if length is None else content[int(length) :]
    values: dict[str, list[Any]] = {}
    for out in head["outputs"]:
        if "data" in out:
            values[out["name"]] = out["data"]
            continue
        size = out["parameters"]["binary_data_size"]
        raw, rest = rest[:size], rest[size:]
        if out["datatype"] == "FP64":
            values[out["name"]] = list(struct.unpack(f"<{size // 8}d", raw))
        elif out["datatype"] == "BYTES":
            items, pos = [], 0
            while pos < len(raw):
                (n,) = struct.unpack_from("<I", raw, pos)
                items.append(raw[pos + 4 : pos + 4 + n].decode("utf-8"))
                pos += 4 + n
            values[out["name"]] = items
        else:
            raise AssertionError(f"unexpected binary datatype {out['datatype']}")
    assert rest == b"", "bytes after the last binary output"
    return head, values


def native(client: httpx.Client, rows: list[dict[str, Any]]) -> tuple[list[Any], list[float]]:
    """(predictions, probabilities row-major) of the native route for the same rows."""
    r = client.post(PREDICT, json=rows)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    return [p["prediction"] for p in got], [v for p in got for v in p["probabilities"].values()]


def assert_v2_error(response: httpx.Response, status: int, *words: str) -> str:
    """The answer is the protocol's error object, exactly ``{"error": <string>}``, naming
    ``words``; returns the message."""
    assert response.status_code == status, (status, response.status_code, response.text[:500])
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], (word, body["error"])
    # what the Triton client does with it: "[status] " + message (a dict made this a TypeError)
    assert f"[{response.status_code}] " + body["error"]
    return body["error"]


# ------------------------------------------------------------------- binary tensor data extension


def test_binary_fp32_and_bytes_inputs_predict_as_the_same_rows_sent_as_json(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    as_sent = [{k: f32(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    labels, proba = native(client, as_sent)
    inputs, blobs = binary_inputs(rows, "FP32")
    body, headers = binary_request({"id": "bin-1", "inputs": inputs}, blobs)
    # no Content-Type (Triton's Python client), the extension's example's, and JSON's
    for content_type in (None, "application/octet-stream", "application/json"):
        sent = headers | ({} if content_type is None else {"content-type": content_type})
        head, values = read_answer(client.post(INFER, content=body, headers=sent))
        assert head["id"] == "bin-1" and head["model_version"] == "1"
        assert values["predict"] == labels and values["predict_proba"] == proba
    json_answer = client.post(INFER, json={"inputs": json_inputs(as_sent)})
    assert read_answer(json_answer)[1]["predict"] == labels


def test_binary_fp64_int64_and_fp16_inputs_and_json_inputs_in_one_request(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    labels, proba = native(client, rows)
    inputs, blobs = binary_inputs(rows, "FP64")
    body, headers = binary_request({"inputs": inputs}, blobs)
    _, values = read_answer(client.post(INFER, content=body, headers=headers))
    assert values["predict"] == labels and values["predict_proba"] == proba

    whole = [{k: round(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    inputs, blobs = binary_inputs(whole, "INT64")
    body, headers = binary_request({"inputs": inputs}, blobs)
    assert (
        read_answer(client.post(INFER, content=body, headers=headers))[1]["predict"]
        == (native(client, whole)[0])
    )

    half = [
        {k: struct.unpack("<e", struct.pack("<e", v))[0] if isinstance(v, float) else v
         for k, v in r.items()}
        for r in rows
    ]  # fmt: skip
    inputs, blobs = binary_inputs(rows, "FP16")
    body, headers = binary_request({"inputs": inputs}, blobs)
    assert (
        read_answer(client.post(INFER, content=body, headers=headers))[1]["predict_proba"]
        == (native(client, half)[1])
    )

    # the spec allows binary and JSON inputs side by side: the binary ones' bytes, in order
    mixed, blobs = binary_inputs(rows, "FP64")
    for i in range(0, len(mixed), 2):
        tensor = json_inputs(rows)[i]
        mixed[i], blobs[i] = tensor, b""
    body, headers = binary_request({"inputs": mixed}, blobs)
    assert read_answer(client.post(INFER, content=body, headers=headers))[1]["predict"] == labels


def test_binary_outputs_asked_for_come_after_the_json_and_read_back_by_hand(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    labels, proba = native(client, rows)
    inputs = json_inputs(rows)
    # every output binary (what Triton's client asks for when it names no outputs)
    r = client.post(INFER, json={"inputs": inputs, "parameters": {"binary_data_output": True}})
    assert r.headers["content-type"] == "application/octet-stream"
    head, values = read_answer(r)
    assert all("data" not in o for o in head["outputs"])
    assert [o["name"] for o in head["outputs"]] == ["predict", "prediction_id", "predict_proba"]
    by_name = {o["name"]: o for o in head["outputs"]}
    assert by_name["predict_proba"]["parameters"] == {"binary_data_size": 8 * 2 * len(rows)}
    assert by_name["predict_proba"]["shape"] == [len(rows), 2]
    assert values["predict"] == labels and values["predict_proba"] == proba
    assert len(set(values["prediction_id"])) == len(rows)
    # an output's own binary_data overrides the request's default; JSON where none is binary
    asked = {
        "inputs": inputs,
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "predict_proba"},
            {"name": "prediction_id", "parameters": {"binary_data": False}},
        ],
    }
    head, values = read_answer(client.post(INFER, json=asked))
    assert [("data" in o) for o in head["outputs"]] == [False, True]
    assert values["predict_proba"] == proba
    r = client.post(INFER, json={"inputs": inputs, "outputs": [{"name": "predict"}]})
    assert HEADER not in r.headers and r.headers["content-type"] == "application/json"
    assert r.json()["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [len(rows)], "data": labels}
    ]


def test_malformed_binary_bodies_get_a_400_naming_the_problem(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    one = rows[:1]
    inputs, blobs = binary_inputs(one, "FP32")
    body, headers = binary_request({"inputs": inputs}, blobs)
    # the case: binary data without the header used to answer a bare utf-8 codec error
    message = assert_v2_error(client.post(INFER, content=body), 400, "malformed JSON", HEADER)
    assert "binary tensor data" in message
    assert_v2_error(client.post(INFER, content=body, headers={HEADER: "ten"}), 400, HEADER, "'ten'")
    short_header = {HEADER: str(int(headers[HEADER]) - 10)}
    assert_v2_error(client.post(INFER, content=body, headers=short_header), 400, "JSON part")
    assert_v2_error(
        client.post(INFER, content=body, headers={HEADER: str(len(body) + 1)}), 400, HEADER
    )
    assert_v2_error(
        client.post(INFER, content=body + b"\x00\x00", headers=headers), 400, "2 bytes", "no input"
    )
    assert_v2_error(
        client.post(INFER, content=body[:-1], headers=headers), 400, "size_band", "remain"
    )
    first = inputs[0]["name"]
    short = json.loads(json.dumps(inputs))
    short[0]["parameters"]["binary_data_size"] = 3
    body3, headers3 = binary_request({"inputs": short}, [blobs[0][:3], *blobs[1:]])
    assert_v2_error(client.post(INFER, content=body3, headers=headers3), 400, first, "FP32 needs 4")
    bad_text = json.loads(json.dumps(inputs))
    bad_text[-1]["parameters"]["binary_data_size"] = 6
    body4, headers4 = binary_request(
        {"inputs": bad_text}, [*blobs[:-1], b"\x02\x00\x00\x00\xff\xfe"]
    )
    assert_v2_error(client.post(INFER, content=body4, headers=headers4), 400, "size_band", "UTF-8")
    truncated = json.loads(json.dumps(inputs))
    truncated[-1]["parameters"]["binary_data_size"] = 6
    body5, headers5 = binary_request({"inputs": truncated}, [*blobs[:-1], b"\x09\x00\x00\x00ab"])
    assert_v2_error(client.post(INFER, content=body5, headers=headers5), 400, "claims 9 bytes")
    flag = json.loads(json.dumps(inputs))
    flag[0] = {**flag[0], "datatype": "BOOL", "parameters": {"binary_data_size": 1}}
    body6, headers6 = binary_request({"inputs": flag}, [b"\x02", *blobs[1:]])
    assert_v2_error(client.post(INFER, content=body6, headers=headers6), 400, "BOOL", "0 or 1")
    # BOOL read as booleans: the signature then refuses a boolean for a number, naming the field
    body7, headers7 = binary_request({"inputs": flag}, [b"\x01", *blobs[1:]])
    assert_v2_error(client.post(INFER, content=body7, headers=headers7), 422, first, "boolean")
    both = json.loads(json.dumps(inputs))
    both[0]["data"] = [1.0]
    body8, headers8 = binary_request({"inputs": both}, blobs)
    assert_v2_error(client.post(INFER, content=body8, headers=headers8), 400, first, "both")
    # binary_data_size in a body sent without the header
    assert_v2_error(client.post(INFER, json={"inputs": inputs}), 400, "binary_data_size", HEADER)
    # a single 2-D binary tensor is read as rows x features: the text feature then gets a number
    names = list(one[0])
    matrix = struct.pack(f"<{len(names)}d", *[1.0] * len(names))
    tensor = {"name": "x", "shape": [1, len(names)], "datatype": "FP64",
              "parameters": {"binary_data_size": len(matrix)}}  # fmt: skip
    body9, headers9 = binary_request({"inputs": [tensor]}, [matrix])
    assert_v2_error(client.post(INFER, content=body9, headers=headers9), 422, "size_band")
    assert client.get("/health").status_code == 200


# ------------------------------------------------------------------ paths, outputs and errors


def test_versioned_paths_answer_for_the_versions_served_and_404_names_them(
    serve: Any, rows: list[dict[str, Any]]
) -> None:
    s = serve("tumours@production", "--canary", "tumours@2", "--weight", "0.5")
    inputs = json_inputs(rows)
    with s.client() as c:
        meta = c.get("/v2/models/tumours").json()
        assert meta["versions"] == ["1", "2"]
        for version in ("1", "2"):
            assert c.get(f"/v2/models/tumours/versions/{version}").json()["versions"] == ["1", "2"]
            assert c.get(f"/v2/models/tumours/versions/{version}/ready").json() == {
                "name": "tumours",
                "ready": True,
            }
        answers = {}
        for version in ("1", "2"):
            for _ in range(3):  # never the rollout's pick: always the version asked for
                r = c.post(f"/v2/models/tumours/versions/{version}/infer", json={"inputs": inputs})
                head, values = read_answer(r)
                assert head["model_version"] == version
                answers.setdefault(version, values["predict_proba"])
                assert values["predict_proba"] == answers[version]
        assert answers["1"] != answers["2"]  # two models (C=1.0 and C=0.2)
        for path in ("/versions/7/infer", "/versions/7", "/versions/7/ready", "/versions/v1/infer"):
            method = c.post if path.endswith("infer") else c.get
            kw = {"json": {"inputs": inputs}} if path.endswith("infer") else {}
            assert_v2_error(method(f"/v2/models/tumours{path}", **kw), 404, "versions served: 1, 2")
        assert_v2_error(c.get("/v2/models/other/versions/1"), 404, "tumours")


def test_outputs_selection_answers_the_outputs_asked_for_and_400_names_an_unknown_one(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    inputs = json_inputs(rows)
    meta = client.get("/v2/models/tumours").json()
    assert [o["name"] for o in meta["outputs"]] == ["predict", "prediction_id", "predict_proba"]
    asked = [{"name": "predict_proba"}, {"name": "predict"}]
    r = client.post(INFER, json={"inputs": inputs, "outputs": asked})
    assert [o["name"] for o in r.json()["outputs"]] == ["predict_proba", "predict"]
    message = assert_v2_error(
        client.post(INFER, json={"inputs": inputs, "outputs": [{"name": "probabilities"}]}),
        400,
        "'probabilities'",
    )
    assert "predict, prediction_id, predict_proba" in message
    twice = [{"name": "predict"}, {"name": "predict"}]
    assert_v2_error(client.post(INFER, json={"inputs": inputs, "outputs": twice}), 400, "twice")
    classify = [{"name": "predict_proba", "parameters": {"classification": 2}}]
    assert_v2_error(
        client.post(INFER, json={"inputs": inputs, "outputs": classify}),
        400,
        "classification",
        "binary_data",
    )
    for params, word in (({"sequence_id": 7}, "sequence_id"), ({"binary_data_output": 1}, "true")):
        r = client.post(INFER, json={"inputs": inputs, "parameters": params})
        assert_v2_error(r, 400, word)
    # MLServer's codec hints: those naming what is done anyway pass, base64 (not decoded) not
    hinted = [{**t, "parameters": {"content_type": "str" if t["datatype"] == "BYTES" else "np"}}
              for t in inputs]  # fmt: skip
    r = client.post(INFER, json={"inputs": hinted, "parameters": {"content_type": "pd"}})
    assert r.status_code == 200, r.text
    odd = [{**inputs[0], "parameters": {"content_type": "base64"}}, *inputs[1:]]
    assert_v2_error(client.post(INFER, json={"inputs": odd}), 400, "content_type", "'base64'")
    bogus = [{**inputs[0], "parameters": {"shape_hint": 1}}, *inputs[1:]]
    assert_v2_error(client.post(INFER, json={"inputs": bogus}), 400, "shape_hint")


def test_every_error_on_the_v2_routes_is_the_protocols_error_string(
    client: httpx.Client, rows: list[dict[str, Any]], serve: Any, tmp_path: Path
) -> None:
    inputs = json_inputs(rows[:1])
    json_type = {"content-type": "application/json"}
    cases = [
        (client.post("/v2/models/other/infer", json={"inputs": inputs}), 404, "tumours"),
        (client.get("/v2/models/other"), 404, "tumours"),
        (client.get("/v2/models/other/ready"), 404, "tumours"),
        (client.get("/v2/models/tumours/explain"), 404, "Not Found"),
        (client.get(INFER), 405, "Method Not Allowed"),
        (client.post(INFER, content=b"{", headers=json_type), 400, "malformed JSON"),
        (client.post(INFER, content=b"[]", headers={"content-type": "text/plain"}), 415, "'text/plain'"),
        (client.post(INFER, content=b"x" * 6_000_000, headers=json_type), 413, "limit"),
        (client.post(INFER, json={"inputs": []}), 422, "inputs"),
        (client.post(INFER, json={"inputs": [{**inputs[0], "shape": [2]}]}), 422, "shape"),
        (client.post(INFER, json={"inputs": inputs[:1]}), 422, "field is required"),
    ]  # fmt: skip
    for response, status, word in cases:
        assert_v2_error(response, status, word)
    tokens = tmp_path / "tokens"
    tokens.write_text("watcher-token-0123456789 metrics\n")
    guarded = serve("tumours@production", "--tokens", str(tokens))
    with guarded.client() as c:
        r = c.post(INFER, json={"inputs": inputs})
        assert_v2_error(r, 401, "token")
        assert r.headers["www-authenticate"] == "Bearer"
        watcher = {"Authorization": "Bearer watcher-token-0123456789"}
        assert_v2_error(c.get("/v2/models/tumours", headers=watcher), 403, "predict")
    # the other routes keep pipeflow's own error object
    r = client.post(PREDICT, content=b"{", headers=json_type)
    assert r.json()["error"]["type"] == "malformed_json"
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


# ------------------------------------------------------------------------------------- MLflow


def csv_text(rows: list[dict[str, Any]], newline: str = "\n") -> str:
    """A CSV body as ``DataFrame.to_csv(index=False)`` writes it: a header row, then the rows."""
    names = list(rows[0])
    lines = [",".join(names)]
    for r in rows:
        lines.append(",".join("" if r[n] is None else str(r[n]) for n in names))
    return newline.join(lines) + newline


def test_mlflow_csv_with_a_header_row_predicts_as_the_same_rows_in_json(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    labels, _ = native(client, rows)
    split = {"columns": list(rows[0]), "data": [list(r.values()) for r in rows]}
    as_json = client.post("/invocations", json={"dataframe_split": split})
    assert as_json.json()["predictions"] == labels
    for text, ctype in (
        (csv_text(rows), "text/csv"),
        (csv_text(rows, "\r\n"), "text/csv; charset=utf-8"),
        (csv_text(rows).replace(",large", ',"large"'), "text/csv"),  # quoted cells
        ("\n" + csv_text(rows) + "\n\n", "text/csv"),  # blank lines, as pandas skips them
    ):
        r = client.post("/invocations", content=text.encode(), headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)
        assert r.json()["predictions"] == labels and len(r.json()["ids"]) == len(rows)
    # columns in any order; an empty cell and pandas' "NA" are missing values, as null is in JSON
    gaps = [{**r, "mean_texture": None} for r in rows]
    shuffled = [dict(reversed(list(r.items()))) for r in gaps]
    text = csv_text(shuffled).replace("\n,", "\nNA,", 1)
    r = client.post("/invocations", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.json()["predictions"] == native(client, gaps)[0]


def test_mlflow_csv_that_cannot_be_rows_gets_a_4xx_naming_the_line_or_field(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    csv_type = {"content-type": "text/csv"}
    good = csv_text(rows[:2])
    header, first, second = good.splitlines()
    cases = [
        (f"{header}\n{first}\n{second},1\n", 422, "CSV line 3 has 32 values for 31 columns"),
        (f"{first}\n{second}\n", 422, "header row"),
        (f"{header}\n{first.replace(first.split(',')[0], 'big', 1)}\n", 422, "mean_radius"),
        (f"{header},mean_radius\n{first},1\n", 422, "more than once"),
        ("", 422, "empty"),
    ]
    for text, status, words in cases:
        r = client.post("/invocations", content=text.encode(), headers=csv_type)
        assert r.status_code == status, (text[:80], r.text)
        assert words in r.json()["error"]["message"], r.text
    r = client.post("/invocations", content=b"mean_radius\n\xff\n", headers=csv_type)
    assert r.status_code == 400 and "UTF-8" in r.text


def test_mlflow_predict_method_params_answer_probabilities_in_the_order_of_classes(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    _, proba = native(client, rows)
    body = {"dataframe_records": rows, "params": {"predict_method": "predict_proba"}}
    r = client.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["classes"] == ["benign", "malignant"]
    assert [p for row in answer["predictions"] for p in row] == proba
    plain = client.post("/invocations", json={**body, "params": {"predict_method": "predict"}})
    assert plain.json()["predictions"] == native(client, rows)[0]
    for params, word in (
        ({"predict_method": "decision_function"}, "predict, predict_proba"),
        ({"temperature": 0.1}, "params.temperature"),
        ("predict_proba", "an object"),
    ):
        r = client.post("/invocations", json={**body, "params": params})
        assert r.status_code == 422 and word in r.json()["error"]["message"], r.text


def test_unsupported_content_types_get_a_415_naming_the_supported_ones(
    client: httpx.Client, rows: list[dict[str, Any]]
) -> None:
    text = csv_text(rows[:1]).encode()
    for ctype, words in (
        ("text/plain", ["application/json", "text/csv", "'text/plain'"]),
        ("application/x-www-form-urlencoded", ["application/json", "text/csv"]),
        ("text/csv; charset=utf-16", ["UTF-8", "utf-16"]),
        ("application/json; format=pandas-split", ["format", "dataframe_split"]),
    ):
        r = client.post("/invocations", content=text, headers={"content-type": ctype})
        assert r.status_code == 415, (ctype, r.text)
        for word in words:
            assert word in r.json()["error"]["message"], (ctype, r.text)
    r = client.post(INFER, content=b"{}", headers={"content-type": "text/csv"})
    assert_v2_error(r, 415, "application/json", "application/octet-stream", HEADER)
    r = client.post(PREDICT, content=text, headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "application/json" in r.text


def test_csv_cells_read_as_pandas_read_csv_reads_them() -> None:
    """MLflow's server reads CSV with ``pandas.read_csv``: the same cells give the same values
    (pandas' missing markers as None, numbers, booleans, quoted text)."""
    import io
    import math

    import pandas as pd

    from pipeflow.serving.protocols.mlflow import payload_from_csv

    text = (
        "amount,note,flag\n"
        "1,plain,True\n"
        '2.5,"a, quoted, cell",false\n'
        '-3e2,"",TRUE\n'
        ",NA,False\n"
        "NaN,None,true\n"
        ".5,  spaced,FALSE\n"
        "1e400,null,True\n"
        "-nan,n/a,False\n"
    )
    ours = payload_from_csv(
        text.encode(), {"amount": "number", "note": "string", "flag": "boolean"}
    )
    frame = pd.read_csv(io.StringIO(text))
    assert ours["dataframe_split"]["columns"] == list(frame.columns)
    rows = ours["dataframe_split"]["data"]
    assert len(rows) == len(frame)
    for got, expected in zip(rows, frame.itertuples(index=False), strict=True):
        for value, reference in zip(got, expected, strict=True):
            if isinstance(reference, float) and math.isnan(reference):
                assert value is None, (got, tuple(expected))
            else:
                assert value == reference, (got, tuple(expected))
    # not numbers to pandas, so left as text for the signature check to name
    odd = payload_from_csv(b"amount\n1_000\n\xd9\xa1\xd9\xa2\n", {"amount": "number"})
    assert odd["dataframe_split"]["data"] == [["1_000"], ["١٢"]]
