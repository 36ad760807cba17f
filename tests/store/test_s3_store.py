"""A store on S3 (moto's server, reached through s3fs as a real endpoint is), used as a team uses
it: a model trained and promoted into it is served and batch-scored from it and monitored, four
processes promoting at once leave a straight alias history (S3's conditional write), and what
goes wrong with the object store (no bucket, no credentials, the endpoint down) is one line naming
the URL and the fix, and a watcher on it prints its own lines, not the AWS clients'. Run
metadata stays in local SQLite."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    MODEL,
    PREDICT,
    cli_env,
    free_port,
    one_line_error,
    pipeflow,
    pipeflow_ok,
    sample_rows,
    start_server,
    tumours_project,
)
from servers import s3_server

from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

pytestmark = pytest.mark.slow

HELLO = Path(__file__).resolve().parents[2] / "specs" / "hello"


@pytest.fixture(scope="module")
def trained(s3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tumours project with ``store.root`` on S3, trained once: tumours v1 in production."""
    project = tmp_path_factory.mktemp("s3") / "tumours"
    tumours_project(project)
    root = f"{s3.bucket()}/team"
    spec = project / "pipeline.yaml"
    spec.write_text(spec.read_text() + f'\nstore: {{root: "{root}"}}\n')
    pipeflow_ok(["run", spec, "--quiet"], env=cli_env(**s3.env), timeout=300)
    return project, root


@pytest.fixture
def s3_env(s3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The endpoint and credentials in this process too (the registry is read here)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return cli_env(**s3.env)


def test_a_model_in_an_s3_store_is_served_and_monitored(
    trained: tuple[Path, str], s3_env: dict[str, str], tmp_path: Path
) -> None:

    project, root = trained
    audit = tmp_path / "audit"
    served = start_server(
        project, f"{MODEL}@production", "--audit-dir", str(audit), store=root, env=s3_env
    )
    try:
        rows = sample_rows(project, 20)
        with served.client() as client:
            answer = client.post(PREDICT, json=rows)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == 1 and len(body["predictions"]) == 20
        assert {p["prediction"] for p in body["predictions"]} <= {"benign", "malignant"}
    finally:
        served.stop()
    # the server shipped its journal to the store when it stopped (its --audit-dir is its local
    # spool, emptied by shipping); monitoring reads the version, its training reference profile
    # and the shipped journal from S3, here from another working directory
    assert not list(audit.rglob("*.jsonl"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**s3_env, "PIPEFLOW_SPOOL": str(elsewhere / "spool")}
    out = pipeflow_ok(
        ["monitor", f"{MODEL}@production", "--store", root, "--json"], cwd=elsewhere, env=env
    )
    report = json.loads(out.stdout)
    assert report["version"] == 1 and report["rows"] == 20
    assert set(report["features"]) == set(rows[0]) and report["drift_share"] is not None


def test_batch_predict_scores_with_a_model_from_an_s3_store(
    trained: tuple[Path, str], s3_env: dict[str, str], tmp_path: Path
) -> None:
    project, root = trained
    table = pd.read_csv(project / "data.csv").drop(columns=["diagnosis"])
    table.insert(0, "row", range(len(table)))
    table.to_csv(tmp_path / "in.csv", index=False)
    argv = ["predict", f"{MODEL}@production", "--store", root, "--id-column", "row"]
    argv += ["-i", tmp_path / "in.csv", "-o", tmp_path / "out.parquet"]
    pipeflow_ok([*argv, "--audit-dir", tmp_path / "audit"], env=s3_env, timeout=300)
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert sorted(scored["row"].astype(int)) == list(range(len(table)))
    assert set(scored["prediction"]) <= {"benign", "malignant"}
    model = Registry(ArtifactStore(root)).load_model(MODEL, "production")[0]
    direct = model.predict(table.drop(columns=["row"]))
    ordered = scored.assign(row=scored["row"].astype(int)).sort_values("row")
    assert list(ordered["prediction"]) == list(direct)


def _promote(root: str, c: float, barrier) -> None:  # noqa: ANN001 (a multiprocessing barrier)
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 3))
    model = LogisticRegression(C=c).fit(X, (X[:, 0] > 0).astype(int))
    store = ArtifactStore(root)
    registry = Registry(store)
    record = registry.register("m", store.save(model, "model"), metrics={"accuracy": 0.9})
    barrier.wait()
    registry.move_alias("m", "production", record["version"], reason=f"C={c}")


def test_four_concurrent_promotions_on_s3_leave_a_straight_history(s3, s3_env) -> None:
    """As tests/registry's local-disk test, four processes (each its own S3 client) at once."""
    root = f"{s3.bucket()}/registry"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_promote, args=(root, c, barrier)) for c in (1, 2, 3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(ArtifactStore(root))
    assert [v["version"] for v in reg.versions("m")] == [1, 2, 3, 4]
    history = reg.history("m", "production")
    assert [e["seq"] for e in history] == [1, 2, 3, 4]
    assert history[0]["from_version"] is None
    for before, after in zip(history, history[1:], strict=False):
        assert after["from_version"] == before["to_version"]  # a straight chain
    assert sorted(e["to_version"] for e in history) == [1, 2, 3, 4]
    assert reg.holder("m", "production") == history[-1]["to_version"]


# -- what goes wrong with the object store, through the real command line ---------------------


def test_a_missing_bucket_is_one_line_naming_it_and_how_to_create_it(
    trained: tuple[Path, str], s3_env: dict[str, str], tmp_path: Path
) -> None:
    project, _ = trained
    argv = ["run", project / "pipeline.yaml", "--set", "store.root=s3://no-such-bucket/team"]
    failed = pipeflow(argv, env=s3_env)
    assert failed.returncode == 1
    line = one_line_error(failed.stderr)
    assert (
        "store s3://no-such-bucket/team" in line
        and "bucket 'no-such-bucket' does not exist" in line
    )
    assert "aws s3 mb s3://no-such-bucket" in line
    assert "$PIPEFLOW_STORE__ROOT" in line  # the variable a team machine sets (howto-team.md)
    assert "no-such-bucket" not in _buckets(s3_env)  # nor was it created on the way


def _buckets(env: dict[str, str]) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        skip_instance_cache=True,
    )
    return [b.rstrip("/") for b in fs.ls("", refresh=True)]


def test_an_endpoint_that_is_down_fails_in_seconds_naming_it(s3_env: dict[str, str]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    env = {**s3_env, "AWS_ENDPOINT_URL_S3": down}
    started = time.monotonic()
    failed = pipeflow(["models", "list", "--store", "s3://team/pf"], env=env, timeout=60)
    took = time.monotonic() - started
    assert failed.returncode == 1
    line = one_line_error(failed.stderr)
    assert f"store s3://team/pf: cannot reach the S3 endpoint {down}" in line
    assert "$AWS_ENDPOINT_URL_S3" in line
    assert took < 20, f"took {took:.1f}s"


def test_no_credentials_is_one_line_saying_where_they_go(
    trained: tuple[Path, str], s3_env: dict[str, str], tmp_path: Path
) -> None:
    project, root = trained
    env = {
        k: v for k, v in s3_env.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL_S3"
    }
    env.update(
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    (tmp_path / "in.csv").write_text("a\n1\n")
    argv = ["predict", f"{MODEL}@production", "--store", root]
    failed = pipeflow([*argv, "-i", tmp_path / "in.csv", "-o", tmp_path / "out.csv"], env=env)
    assert failed.returncode == 1
    line = one_line_error(failed.stderr)
    assert f"store {root}: no credentials found for S3" in line
    assert "AWS_ACCESS_KEY_ID" in line and "never holds them" in line
    assert not (tmp_path / "out.csv").exists()


def test_refused_credentials_are_one_line_saying_which_to_check(tmp_path: Path) -> None:
    """A server that checks keys (moto with IAM auth on) refuses the dummy ones: 403."""
    with s3_server(check_credentials=True) as strict:
        env = cli_env(**strict.env)
        failed = pipeflow(["models", "list", "--store", "s3://team/pf"], env=env)
    assert failed.returncode == 1
    line = one_line_error(failed.stderr)
    assert "store s3://team/pf: access denied (403): check the credentials" in line
    assert "AWS_ACCESS_KEY_ID" in line and "bucket 'team'" in line


def test_watch_on_an_s3_store_prints_its_own_lines_not_the_aws_clients(
    s3, s3_env: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "hello"
    shutil.copytree(HELLO, project, ignore=shutil.ignore_patterns(".pipeflow"))
    spec = project / "pipeline.yaml"
    root = f"{s3.bucket()}/watch"
    spec.write_text(
        spec.read_text() + f'triggers: {{on_data_change: [nums]}}\nstore: {{root: "{root}"}}\n'
    )
    watched = pipeflow_ok(["watch", spec, "--once"], env=s3_env, timeout=120)
    out = watched.stdout + watched.stderr
    assert "watching" in out and "holding the watch lease" in out
    # botocore's INFO lines ("Found credentials in environment variables.") are left out
    assert "botocore" not in out and "Found credentials" not in out
