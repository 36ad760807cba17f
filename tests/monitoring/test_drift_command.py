"""``pipeflow drift REFERENCE CURRENT`` and the ``drift`` stage: two tables from files or URLs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeflow.cli import main


def tables(where: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame(
        {
            "amount": rng.normal(100, 10, 4000),
            "flag": (rng.random(4000) < 0.44).astype(int),
            "region": rng.choice(["north", "south"], 4000),
        }
    )
    cur = pd.DataFrame(
        {
            "amount": rng.normal(100, 10, 3000),
            "flag": np.ones(3000, dtype=int),
            "region": rng.choice(["north", "south"], 3000),
        }
    )
    ref.to_parquet(where / "reference.parquet")
    cur.to_csv(where / "current.csv", index=False)
    return where / "reference.parquet", where / "current.csv"


def test_drift_compares_two_files_and_names_the_rule(tmp_path: Path, capsys) -> None:
    ref, cur = tables(tmp_path)
    html = tmp_path / "drift.html"
    code = main(["drift", str(ref), f"file://{cur}", "--json", "--html", str(html)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["drifted_features"] == ["flag"]
    flag = report["features"]["flag"]
    assert flag["kind"] == "discrete" and flag["test"] == "chi2" and flag["p_value"] < 1e-12
    assert report["features"]["amount"]["test"] == "ks" and report["exact"]
    assert "Wasserstein" in html.read_text() and "chi2 p=" in html.read_text()
    assert main(["drift", str(ref), str(cur), "--columns", "flag", "--fail-on-drift"]) == 1
    assert main(["drift", str(ref), str(cur), "--columns", "amount", "--fail-on-drift"]) == 0


def test_the_policy_file_sets_the_rule_per_column(tmp_path: Path, capsys) -> None:
    ref, cur = tables(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text("alpha: 0.01\nper_column:\n  flag: {method: psi, psi: 50}\n")
    assert main(["drift", str(ref), str(cur), "--policy", str(policy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drifted_features"] == [] and report["policy"]["alpha"] == 0.01
    assert report["features"]["flag"]["rule"].startswith("psi ")


def test_bad_input_names_the_file_and_field(tmp_path: Path, capsys) -> None:
    ref, cur = tables(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text("per_column:\n  flag: {methd: psi}\n")
    assert main(["drift", str(ref), str(cur), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "policy.yaml: per_column.flag.methd: unknown key 'methd'" in err and "method" in err
    assert main(["drift", str(ref), str(cur), "--columns", "nope"]) == 2
    assert "the reference table has no column 'nope'" in capsys.readouterr().err
    assert main(["drift", str(ref), str(tmp_path / "gone.csv")]) == 2
    assert "CURRENT" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("a")
    assert main(["drift", str(ref), str(tmp_path / "x.txt")]) == 2
    assert "expected a .csv" in capsys.readouterr().err


SPEC = """
pipeline: drift-demo
stages:
  reference:
    type: ingest
    with: {path: reference.parquet}
  current:
    type: ingest
    with: {path: current.csv}
  drift:
    type: drift
    inputs: {reference: reference, current: current}
    with:
      columns: [amount, flag]
      alpha: 0.01
      fail_on_drift: FAIL
"""


@pytest.mark.parametrize("fail", [False, True])
def test_the_drift_stage_compares_two_tables(tmp_path: Path, fail: bool) -> None:
    import pipeflow

    tables(tmp_path)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC.replace("FAIL", "true" if fail else "false"))
    report = pipeflow.run(spec)
    if fail:
        assert not report.ok
        assert "drift: flag (50% of columns" in str(report.stages["drift"].error)
        return
    assert report.ok
    found = report.load("drift")
    assert found["drifted_features"] == ["flag"] and set(found["features"]) == {"amount", "flag"}
    assert found["policy"]["alpha"] == 0.01 and found["features"]["flag"]["rule"]


def test_a_monitor_stage_drift_policy_is_checked_with_file_line_and_field(
    tmp_path: Path, capsys
) -> None:
    spec = tmp_path / "mon.yaml"
    spec.write_text(
        "pipeline: mon\nstages:\n  watch:\n    type: monitor\n    with:\n"
        "      model: m@production\n"
        "      drift: {alpa: 0.1, per_column: {amount: {method: chi}}}\n"
    )
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "mon.yaml:7:15: stage 'watch', field 'with.drift.alpa': unknown key 'alpa'" in err
    assert "with.drift.per_column.amount.method" in err and "'auto', 'test'" in err


def test_drift_reads_both_tables_from_s3(tmp_path: Path, s3) -> None:
    from helpers import cli_env, pipeflow_ok

    ref, cur = tables(tmp_path)
    bucket = s3.bucket()
    fs = s3.filesystem()
    fs.put(str(ref), f"{bucket}/tables/reference.parquet")
    fs.put(str(cur), f"{bucket}/tables/current.csv")
    proc = pipeflow_ok(
        ["drift", f"{bucket}/tables/reference.parquet", f"{bucket}/tables/current.csv", "--json"],
        env=cli_env(**s3.env),
    )
    report = json.loads(proc.stdout)
    assert report["drifted_features"] == ["flag"] and report["rows"] == 3000
    assert report["reference_rows"] == 4000
