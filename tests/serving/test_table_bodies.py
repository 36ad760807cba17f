"""Arrow IPC and Parquet request bodies on a real `pipeflow serve`: the same answer as the same
rows in JSON, each row audited under its id, and a table that is not clean refused by row and
field (the tables are built by hand with pyarrow, as a caller would)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import PREDICT, sample_rows

from pipeflow.store import journal as audit

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
PARQUET = {"content-type": "application/vnd.apache.parquet"}


def arrow_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):  # several batches in one stream
            writer.write_batch(batch)
    return sink.getvalue()


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_arrow_and_parquet_bodies_answer_as_json_does_and_every_row_is_audited(
    serve, tumours: Path, own_store: Path
) -> None:
    rows = sample_rows(tumours, 20)
    rows[3]["mean_texture"] = None  # a null in a numeric column, as JSON's null
    table = pa.Table.from_pylist(rows)
    s = serve("tumours@production", store=own_store)
    with s.client() as c:
        as_json = c.post(PREDICT, json=rows)
        as_arrow = c.post(PREDICT, content=arrow_stream(table), headers=ARROW)
        as_parquet = c.post(PREDICT, content=parquet(table), headers=PARQUET)
    assert as_json.status_code == as_arrow.status_code == as_parquet.status_code == 200
    expected = [
        (p["prediction"], p["probabilities"], p.get("flags")) for p in as_json.json()["predictions"]
    ]
    for answer in (as_arrow, as_parquet):
        got = answer.json()["predictions"]
        assert [(p["prediction"], p["probabilities"], p.get("flags")) for p in got] == expected
    answered = [p for a in (as_json, as_arrow, as_parquet) for p in a.json()["predictions"]]
    records = {r["id"]: r for r in audit.read(own_store / "audit", "predictions")}
    assert set(records) == {p["id"] for p in answered}
    for at, p in enumerate(answered):
        record = records[p["id"]]
        assert record["output"] == p["prediction"]
        assert record["probabilities"] == p["probabilities"]
        assert record["flags"] == p.get("flags", [])
        assert record["inputs"] == rows[at % len(rows)]  # numbers compare as the floats they are


def test_a_table_that_is_not_clean_is_refused_naming_row_and_field(serve, tumours: Path) -> None:
    rows = sample_rows(tumours, 5)
    good = pa.Table.from_pylist(rows)
    missing = good.drop_columns(["mean_radius"])
    texts = [{**r, "mean_area": str(r["mean_area"])} for r in rows]  # a text column
    wrong_type = pa.Table.from_pylist(texts)
    nan = [dict(r) for r in rows]
    nan[4]["mean_area"] = float("nan")
    s = serve("tumours@production")
    with s.client() as c:
        r = c.post(PREDICT, content=arrow_stream(missing), headers=ARROW)
        assert r.status_code == 422
        assert {(f["row"], f["field"]) for f in r.json()["error"]["fields"]} >= {(0, "mean_radius")}
        r = c.post(PREDICT, content=parquet(wrong_type), headers=PARQUET)
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0] | {"got": None} == {
            "row": 0, "field": "mean_area", "expected": "a number", "got": None,
        }  # fmt: skip
        r = c.post(PREDICT, content=arrow_stream(pa.Table.from_pylist(nan)), headers=ARROW)
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0]["row"] == 4
        assert r.json()["error"]["fields"][0]["expected"] == "a finite number"
        # not the table the content type says: 400 naming the format, never a 500
        r = c.post(PREDICT, content=b"PAR1 not really", headers=PARQUET)
        assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_table"
        assert "Parquet" in r.json()["error"]["message"]
        r = c.post(PREDICT, content=parquet(good), headers=ARROW)
        assert r.status_code == 400 and "Arrow IPC stream" in r.json()["error"]["message"]
        # more rows than --max-rows allows: refused from the Parquet footer, before decoding
        many = pa.Table.from_pylist([rows[0]] * 10_001)
        r = c.post(PREDICT, content=parquet(many), headers=PARQUET)
        assert r.status_code == 413 and "10000" in r.json()["error"]["message"]
        assert c.post(PREDICT, json=rows).status_code == 200  # still serving
