"""Hostile HTTP against a real `pipeflow serve` on 127.0.0.1: no request gets a 5xx, the server
stays up, and malformed payloads are refused before the model is called.

Two generators: Schemathesis reads the server's own /openapi.json and generates requests that
conform to it and requests that violate it (negative mode), for every route; plain Hypothesis adds
what an OpenAPI document cannot describe: NaN/Infinity literals, numbers beyond any float, nesting
deeper than the parsers allow, strings up to the body limit, lone surrogate escapes, random bytes,
wrong content types, chunked bodies, and raw paths with ``../``, ``%2e%2e`` and unicode.

The only 500 the server may answer is a model failure (a failing canary), which nothing here
triggers; 503 (audit log unwritable) is not expected either.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import MODEL, PREDICT, Served, counter, files_under, sample_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
ROUTES_WITH_BODY = [
    PREDICT,
    f"/v1/models/{MODEL}/feedback",
    "/invocations",
    f"/v2/models/{MODEL}/infer",
]
LIMIT = 5_000_000  # the default --max-body-mb 5


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def served(module_server: tuple[Served, Path]) -> Served:
    return module_server[0]


@pytest.fixture(scope="module")
def good_row(hostile_project: Path) -> dict[str, Any]:
    return sample_rows(hostile_project, 1)[0]


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


def snapshot(root: Path, *, audit: bool) -> dict[str, int]:
    """Files under ``root`` with their mtimes, less the server's own log (and the audit log
    unless ``audit``): what a request must never create or change."""
    return {
        path: mtime
        for path, mtime in files_under(root).items()
        if not path.endswith(".log") and (audit or "/audit/" not in path)
    }


def assert_not_5xx(response: httpx.Response, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        assert "error" in response.json(), response.text[:500]


# ----------------------------------------------------------------------------- schemathesis


@functools.cache
def _openapi_cases(url: str) -> st.SearchStrategy[Any]:
    """Cases for every operation of the live schema, conforming and (where an operation takes
    any input) violating; model names are sometimes the served one, sometimes hostile."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    strategies = []
    for result in schema.get_all_operations():
        op = result.ok()
        strategies.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE))
        if list(op.path_parameters) or list(op.body):
            strategies.append(op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    return st.one_of(strategies)


hostile_names = st.sampled_from(
    [
        MODEL,
        "../x",
        "..",
        "../../etc/passwd",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%2f..%2f",
        f"{MODEL}/../{MODEL}",
        f"{MODEL}%00",
        f"{MODEL}@production",
        "tümours",
        "ｔｕｍｏｕｒｓ",
        "\u202eevil",
        "日本語",
        "a" * 5000,
        "",
        " ",
    ]
) | st.text(max_size=30)


def _schemathesis_examples(url: str, n: int) -> Callable[[], None]:
    import requests

    session = requests.Session()

    @settings(max_examples=n, **SETTINGS)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(_openapi_cases(url))
        if "name" in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters["name"] = data.draw(hostile_names)
        response = case.call(base_url=url, session=session, timeout=60)
        assert response.status_code < 500, (
            case.method,
            case.formatted_path,
            case.body if not isinstance(case.body, bytes) else case.body[:200],
            response.status_code,
            response.text[:500],
        )

    return run


def test_requests_generated_from_the_openapi_document_never_get_a_5xx(served: Served) -> None:
    _schemathesis_examples(served.url, 400)()
    assert served.alive()


@pytest.mark.slow
@pytest.mark.timeout(900)  # 4000 generated requests: 300 s once the machine's cores are shared
def test_thousands_of_openapi_generated_requests_never_get_a_5xx(served: Served) -> None:
    _schemathesis_examples(served.url, 4000)()
    assert served.alive()


# ----------------------------------------------------------------------------- hostile bodies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and +-Infinity included: written as the literals NaN / Infinity
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 400, "-" + "9" * 30]
RAW_NUMBERS += ["1" + "0" * 4400, "1e-400", "0.1e999999999", "18446744073709551616", "-0"]


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _literal(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def raw_values(draw: st.DrawFn) -> str:
    """One JSON value as text, including what json.dumps would never write."""
    kind = draw(st.sampled_from(["json", "number", "nested", "string", "surrogate", "object"]))
    if kind == "json":
        return _literal(draw(json_values))
    if kind == "number":
        return draw(st.sampled_from(RAW_NUMBERS))
    if kind == "nested":
        return _nested(draw(st.sampled_from([2, 50, 253, 260, 600, 1_100, 100_000])))
    if kind == "string":
        size = draw(st.sampled_from([0, 1, 1_000, 100_000, 1_000_000, LIMIT - 10_000]))
        return '"' + draw(st.sampled_from(["x", "é", "\\u0000", " "])) * size + '"'
    if kind == "surrogate":
        return '"\\ud800 ' + draw(st.sampled_from(["", "\\udfff", "x"])) + '"'
    return (
        "{"
        + ", ".join(
            f"{_literal(k)}: {v}"
            for k, v in draw(st.dictionaries(st.text(max_size=6), st.just("1"), max_size=3)).items()
        )
        + "}"
    )


def _object(row: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_literal(k)}: {v}" for k, v in row.items()) + "}"


@st.composite
def mutated_row(
    draw: st.DrawFn, good: dict[str, Any], *, always_bad: bool, flattens: bool = False
) -> dict[str, str]:
    """A good row (field -> JSON text) with one to three changes; with ``always_bad`` every
    change makes the row invalid (a wrong type, a missing or extra field, a non-finite number, a
    list). ``flattens``: the route flattens nested lists (v2 tensors), so nesting proves nothing."""
    row = {k: _literal(v) for k, v in good.items()}
    numeric = [k for k, v in good.items() if isinstance(v, int | float)]
    text = [k for k, v in good.items() if isinstance(v, str)]
    bad_ops = ["wrong_type", "missing", "extra", "not_finite"] + ([] if flattens else ["nested"])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(bad_ops))
        if not always_bad:
            op = draw(st.sampled_from([op, "any_value", "null", "huge_string"]))
        key = draw(st.sampled_from(list(good)))
        if op == "wrong_type":
            if key in numeric:
                row[key] = draw(st.sampled_from(['"12.5"', "true", '{"v": 1}', '""']))
            else:
                row[key] = draw(st.sampled_from(["1", "false", "{}", "1e400", "-0"]))
        elif op == "missing":
            row.pop(key, None)
        elif op == "extra":
            extra = draw(st.text(max_size=10).filter(lambda k: k not in good))
            row[extra] = draw(raw_values())
        elif op == "not_finite":
            row[draw(st.sampled_from(numeric))] = draw(
                st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "9" * 400])
            )
        elif op == "nested":
            row[key] = _nested(draw(st.sampled_from([1, 3, 300, 900])))
        elif op == "any_value":
            row[key] = draw(raw_values())
        elif op == "null":
            row[key] = "null"
        else:
            size = draw(st.sampled_from([100, 10_000, 1_000_000]))
            row[draw(st.sampled_from(text or list(good)))] = '"' + "z" * size + '"'
    if always_bad and row == {k: _literal(v) for k, v in good.items()}:
        row.pop(next(iter(good)))  # two changes undid each other
    return row


def _wrap(route: str, rows: list[dict[str, str]], style: str) -> str:
    """Rows (field -> JSON text) in the payload shape of ``route``."""
    objects = [_object(r) for r in rows]
    listed = "[" + ", ".join(objects) + "]"
    if route == PREDICT:
        return objects[0] if style == "one" and len(rows) == 1 else listed
    if route.endswith("/feedback"):
        return "[" + ", ".join(f'{{"id": "x-1", "outcome": {o}}}' for o in objects) + "]"
    if route == "/invocations":
        key = "dataframe_records" if style == "one" else "instances"
        return f'{{"{key}": {listed}}}'
    # v2: one tensor per field present in every row (a field some rows lack: no tensor at all)
    common = [k for k in rows[0] if all(k in r for r in rows)]
    tensors = [
        f'{{"name": {_literal(k)}, "shape": [{len(rows)}], "datatype": "FP64", '
        f'"data": [{", ".join(r[k] for r in rows)}]}}'
        for k in common
    ]
    return '{"inputs": [' + ", ".join(tensors) + "]}"


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.pipeflow+json",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "application/json; charset=utf-16",
    "",
    None,
]


@st.composite
def hostile_requests(
    draw: st.DrawFn, good: dict[str, Any], *, always_bad: bool = False
) -> tuple[str, str, bytes | Iterator[bytes], dict[str, str]]:
    """(method, path, body, headers): a hostile request to one of the routes."""
    route = draw(st.sampled_from(ROUTES_WITH_BODY))
    kind = draw(
        st.sampled_from(["rows", "rows", "rows", "json", "raw", "bytes", "oversize", "chunked"])
    )
    if kind == "rows":
        flattens = route.startswith("/v2/")
        n = draw(st.integers(1, 3))
        rows = [draw(mutated_row(good, always_bad=always_bad, flattens=flattens)) for _ in range(n)]
        text = _wrap(route, rows, draw(st.sampled_from(["one", "many"])))
        body: bytes | Iterator[bytes] = text.encode("utf-8", "surrogatepass")
    elif kind == "json":
        body = _literal(draw(json_values)).encode()
    elif kind == "raw":
        body = draw(raw_values()).encode("utf-8", "surrogatepass")
    elif kind == "bytes":
        body = draw(st.binary(max_size=500))
    elif kind == "oversize":
        body = b'{"x": "' + b"y" * LIMIT + b'"}'
    else:
        size = draw(st.sampled_from([10, LIMIT + 10]))
        body = iter([b"[", b"1, " * (size // 3), b"1]"])
    headers = {}
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if ctype is not None:
        headers["content-type"] = ctype
    if always_bad and route.endswith("/feedback"):
        route = PREDICT  # feedback is not a prediction: keep the battery on scoring routes
    method = draw(st.sampled_from(["POST"] * 6 + ["PUT", "PATCH", "DELETE", "GET"]))
    return method, route, body, headers


def _send(client: httpx.Client, request: tuple[str, str, Any, dict[str, str]]) -> httpx.Response:
    method, path, body, headers = request
    return client.request(method, path, content=body, headers=headers)


def _describe(request: tuple[str, str, Any, dict[str, str]]) -> object:
    method, path, body, headers = request
    shown = body[:300] if isinstance(body, bytes) else "<chunked>"
    return method, path, headers, shown


@settings(max_examples=400, **SETTINGS)
@given(data=st.data())
def test_hostile_bodies_to_every_route_never_get_a_5xx(
    served: Served, client: httpx.Client, good_row: dict[str, Any], data: st.DataObject
) -> None:
    request = data.draw(hostile_requests(good_row))
    assert_not_5xx(_send(client, request), _describe(request))
    assert served.proc.poll() is None, served.log.read_text()[-3000:]


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(data=st.data())
def test_thousands_of_hostile_bodies_never_get_a_5xx(
    served: Served, client: httpx.Client, good_row: dict[str, Any], data: st.DataObject
) -> None:
    request = data.draw(hostile_requests(good_row))
    assert_not_5xx(_send(client, request), _describe(request))
    assert served.proc.poll() is None, served.log.read_text()[-3000:]


def test_known_hostile_bodies_are_refused_with_a_4xx(
    served: Served, client: httpx.Client, good_row: dict[str, Any]
) -> None:
    """The cases that answered 500 before the fixes, by name."""
    row = json.dumps(good_row)
    first = next(iter(good_row))
    cases = [
        (PREDICT, row.replace(_literal(good_row[first]), "9" * 400, 1), 422),  # OverflowError
        (PREDICT, row.replace(f'"{first}"', '"\\ud800"', 1), 400),  # surrogate in a key
        (PREDICT, json.dumps({**good_row, "size_band": "\ud800"}), 400),  # ...in a value
        (f"/v1/models/{MODEL}/feedback", '{"id": "a-1", "outcome": ' + _nested(300) + "}", 422),
        (  # finite, but a scaler dividing by a spread below 1 overflows: the model raised
            PREDICT,
            json.dumps({k: 1e308 if isinstance(v, float) else v for k, v in good_row.items()}),
            422,
        ),
        (
            f"/v2/models/{MODEL}/infer",
            '{"inputs": [{"name": "a", "shape": [1], "datatype": [], "data": [1]}]}',
            422,
        ),  # unhashable datatype
        (
            "/invocations",
            '{"dataframe_records": ['
            + row.replace(_literal(good_row[first]), "1" + "0" * 25, 1)
            + '], "extra": NaN}',
            200,  # a 26-digit integer read by the fallback parser: a float, as orjson reads it
        ),
    ]
    for path, body, status in cases:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, body[:200], r.text[:300])
    for depth in range(245, 260):  # around orjson's limit of 254 levels, once wrapped in a record
        body = '{"id": "a-1", "outcome": ' + _nested(depth) + "}"
        r = client.post(f"/v1/models/{MODEL}/feedback", content=body)
        assert r.status_code in (200, 422), (depth, r.text[:300])
    assert served.alive()


# ----------------------------------------------------------------------------- raw paths


def _raw_request(url: str, method: str, path: str, body: bytes | None) -> int:
    """Send ``path`` exactly as given (httpx would normalise ``../``)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


TEMPLATES = [
    "/v1/models/{}",
    "/v1/models/{}/predict",
    "/v1/models/{}/feedback",
    "/v2/models/{}",
    "/v2/models/{}/ready",
    "/v2/models/{}/infer",
    "/{}",
    "/v1/{}",
    "/v2/{}/predict",
]


@st.composite
def raw_paths(draw: st.DrawFn) -> str:
    name = draw(hostile_names | st.text(st.characters(codec="utf-8"), max_size=20))
    quoted = urllib.parse.quote(name, safe="/%@;.:=&!$'()*+,~-_")
    return draw(st.sampled_from(TEMPLATES)).format(quoted) + draw(
        st.sampled_from(["", "?x=1", "?name=../x", "#frag", "/", "//", "/..", "/%2e%2e"])
    )


@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_hostile_paths_never_get_a_5xx_and_touch_nothing(
    module_server: tuple[Served, Path], good_row: dict[str, Any], data: st.DataObject
) -> None:
    served, store = module_server
    before = snapshot(store.parent, audit=False)
    path = data.draw(raw_paths())
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    body = json.dumps(good_row).encode() if method == "POST" else None
    status = _raw_request(served.url, method, path, body)
    assert status < 500, (method, path, status)
    after = snapshot(store.parent, audit=False)
    assert after == before, "a request created or changed a file outside the audit log"
    assert served.proc.poll() is None


@pytest.mark.parametrize(
    "pid", ["../../etc/passwd", "..", "a/../../b", "%2e%2e%2fx", "x" * 65, "\u202ex", "", 7, None]
)
def test_feedback_with_a_path_for_a_prediction_id_is_refused_and_writes_nothing(
    module_server: tuple[Served, Path], client: httpx.Client, pid: object
) -> None:
    served, store = module_server
    before = snapshot(store.parent, audit=True)
    r = client.post(f"/v1/models/{MODEL}/feedback", json={"id": pid, "outcome": "benign"})
    assert r.status_code == 422 and "id" in r.text, r.text
    assert snapshot(store.parent, audit=True) == before  # not even the feedback audit log


# ----------------------------------------------------------------------------- before the model


def test_malformed_payloads_are_refused_before_the_model_is_called(
    server_factory: Callable[..., tuple[Served, Path]], good_row: dict[str, Any]
) -> None:
    """A battery of invalid requests on a fresh server: every one a 4xx, and afterwards
    pipeflow_predictions_total (rows the model scored) is still 0, no model error is counted and
    the audit log holds no prediction. Then one valid request moves the counter to 1."""
    served, store = server_factory()
    statuses: dict[int, int] = {}
    with served.client() as client:

        @settings(max_examples=300, **SETTINGS)
        @given(data=st.data())
        def battery(data: st.DataObject) -> None:
            request = data.draw(hostile_requests(good_row, always_bad=True))
            response = _send(client, request)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert 400 <= response.status_code < 500, (
                _describe(request),
                response.status_code,
                response.text[:300],
            )

        battery()
        metrics = client.get("/metrics").text
        assert counter(metrics, "pipeflow_predictions_total") == 0, statuses
        assert counter(metrics, 'pipeflow_errors_total{type="model_error"}') == 0
        audited = [p for p in files_under(store / "audit") if "/predictions/" in p]
        assert all(os.path.getsize(p) == 0 for p in audited), "a refused request was audited"
        ok = client.post(PREDICT, json=good_row)
        assert ok.status_code == 200, ok.text
        assert counter(client.get("/metrics").text, "pipeflow_predictions_total") == 1
    assert served.alive()
    assert sum(statuses.values()) >= 300, statuses
