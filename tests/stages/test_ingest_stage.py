"""The ingest stage: formats, declared types, fingerprints that follow the data, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeflow.core.stage import StageContext
from pipeflow.stages.ingest import IngestStage, source_fingerprint
from pipeflow.testing import StageContract, write_spec

CSV = "id,amount,paid,submitted,region\n1,12.5,yes,2026-10-01,north\n2,7,no,2026-10-02,south\n3,,t,2026-10-03,north\n"


class TestIngestContract(StageContract):
    stage_cls = IngestStage
    entry_point = "ingest"
    config = {"path": "claims.csv", "columns": {"amount": "float", "paid": "bool"}}

    @pytest.fixture(autouse=True)
    def _data(self, tmp_path: Path) -> None:
        (tmp_path / "claims.csv").write_text(CSV)


def _ingest(tmp_path: Path, **config) -> pd.DataFrame:
    stage = IngestStage(IngestStage.Config(**config))
    return stage.run(StageContext(run_id="t", stage="raw", params={}, base_dir=tmp_path), {})["out"]


def test_declared_types_are_applied(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(CSV)
    frame = _ingest(
        tmp_path,
        path="c.csv",
        columns={
            "amount": "float",
            "paid": "bool",
            "submitted": "datetime",
            "region": "category",
            "id": "int",
        },
    )
    assert frame["amount"].isna().tolist() == [False, False, True]
    assert frame["paid"].tolist() == [True, False, True]
    assert str(frame["submitted"].dtype).startswith("datetime64")
    assert str(frame["region"].dtype) == "category" and str(frame["id"].dtype) == "Int64"


@pytest.mark.parametrize(
    "fmt, write",
    [
        ("parquet", lambda f, p: f.to_parquet(p)),
        ("jsonl", lambda f, p: f.to_json(p, orient="records", lines=True)),
        ("json", lambda f, p: f.to_json(p, orient="records")),
        ("csv", lambda f, p: f.to_csv(p, index=False)),
        ("xlsx", lambda f, p: f.to_excel(p, index=False)),
    ],
)
def test_formats_round_trip(tmp_path: Path, fmt: str, write) -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    write(frame, tmp_path / f"data.{fmt}")
    got = _ingest(tmp_path, path=f"data.{fmt}")
    assert got.to_dict("records") == frame.to_dict("records")


def test_memory_url(tmp_path: Path) -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/ingest-test/x.csv", b"a,b\n1,2\n")
    assert _ingest(tmp_path, path="memory://ingest-test/x.csv").to_dict("records") == [
        {"a": 1, "b": 2}
    ]


def test_a_value_that_does_not_convert_names_column_row_and_value(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,amount\n1,12\n2,$40\n3,x\n")
    with pytest.raises(
        ValueError, match=r"column 'amount' row 1: '\$40' is not a number \(2 such value"
    ):
        _ingest(tmp_path, path="c.csv", columns={"amount": "float"})


def test_missing_declared_column_and_unknown_suffix_are_clear(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="declared column"):
        _ingest(tmp_path, path="c.csv", columns={"amount": "float"})
    (tmp_path / "c.dat").write_text("a\n1\n")
    with pytest.raises(ValueError, match="set `format:`"):
        _ingest(tmp_path, path="c.dat")
    assert _ingest(tmp_path, path="c.dat", format="csv")["a"].tolist() == [1]
    with pytest.raises(FileNotFoundError, match="no such file"):
        _ingest(tmp_path, path="nope.csv")


def test_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(CSV)
    first = source_fingerprint(str(path))
    assert source_fingerprint(str(path)) == first
    path.write_text(CSV.replace("12.5", "13.5"))
    assert source_fingerprint(str(path)) != first


def test_changed_data_reruns_the_pipeline_from_ingest(tmp_path: Path) -> None:
    import pipeflow

    spec = write_spec(
        tmp_path,
        """
        pipeline: ingest-demo
        stages:
          raw: {type: ingest, with: {path: data.csv, columns: {amount: float}}}
          total:
            type: python
            inputs: {t: raw}
            with: {function: "steps:total", input_kinds: {t: table}}
        """,
        {
            "steps.py": "def total(t):\n    return float(t['amount'].sum())\n",
            "data.csv": "amount\n1\n2\n",
        },
    )
    assert pipeflow.run(spec).load("total") == 3.0
    again = pipeflow.run(spec)
    assert str(again.stages["raw"].state) == "cached"
    (tmp_path / "data.csv").write_text("amount\n1\n2\n4\n")
    changed = pipeflow.run(spec)
    assert str(changed.stages["raw"].state) == "done" and changed.load("total") == 7.0
