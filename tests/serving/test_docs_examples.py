"""The client scripts docs/serving.md runs, shipped in docs/examples/, run as a reader runs them
(``python docs/examples/X.py ...``, a separate process) against real `pipeflow serve` processes
on 127.0.0.1: what they print (answers by status and version, feedback recorded) is what the
servers answered and what the store's journal holds; the guard's bad version is really wrong."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from helpers import docs_example, pipeflow, sample_rows, true_labels

from pipeflow.registry import Registry
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def _example(name: str, *args: str, cwd: Path = ROOT, timeout: float = 60) -> list[str]:
    """``python docs/examples/NAME args`` as a reader runs it; its output lines (exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def _answers_and_feedback(lines: list[str]) -> tuple[dict, int, int]:
    """The two lines the A/B and fleet clients print: ``{(status, version): n}`` and
    ``feedback: R of P recorded``."""
    answers = ast.literal_eval(lines[0])
    words = lines[1].split()
    assert words[0] == "feedback:" and words[-1] == "recorded", lines
    return answers, int(words[1]), int(words[3])


def _replicas(serve, n: int, *args: str, store: Path) -> list[Any]:  # noqa: ANN001
    """``n`` replicas started at once (each loads its models: in parallel, not one by one)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: serve(*args, store=store), range(n)))


def _feedback_in_journal(store: Path) -> int:
    return sum(1 for _ in audit.read(store / "audit", "feedback"))


@pytest.mark.slow
def test_the_ab_client_counts_a_keyed_canarys_answers_by_version_and_labels_each_at_the_other_replica(
    serve, own_store: Path
) -> None:
    args = ("tumours@production", "--canary", "tumours@2", "--weight", "0.5",
            "--route-by", "header:X-User")  # fmt: skip
    a, b = _replicas(serve, 2, *args, store=own_store)
    lines = _example("ab_client.py", f"{a.url},{b.url}", "3", "--users", "40")
    answers, recorded, posted = _answers_and_feedback(lines)
    assert {status for status, _ in answers} == {200}, answers
    assert {version for _, version in answers} == {1, 2}  # 40 users at 50 %: both versions
    assert posted == sum(answers.values()) > 0 and recorded == posted
    assert _feedback_in_journal(own_store) == recorded


@pytest.mark.slow
def test_the_fleet_client_labels_every_answer_of_three_replicas_at_the_next_one(
    serve, own_store: Path
) -> None:
    replicas = _replicas(serve, 3, "tumours@production", store=own_store)
    lines = _example("fleet_client.py", ",".join(s.url for s in replicas), "2")
    answers, recorded, posted = _answers_and_feedback(lines)
    assert set(answers) == {(200, 1)} and posted == answers[(200, 1)] == recorded
    assert _feedback_in_journal(own_store) == recorded


def test_the_guards_mislabelled_version_looks_fine_offline_and_is_wrong_on_live_rows(
    tumours: Path, own_store: Path
) -> None:
    registered = _example("mislabelled.py", "--store", str(own_store), cwd=tumours)
    bad = int(registered[0].split("@")[1].split()[0])
    assert bad == 3  # after the fixture's v1 (production) and v2
    model, record = Registry(ArtifactStore(str(own_store))).load_model("tumours", bad)
    predicted = model.predict(pd.DataFrame(sample_rows(tumours, 40)))
    wrong = sum(p != t for p, t in zip(predicted, true_labels(tumours, 40), strict=True))
    assert wrong >= 36 and record["metrics"]["accuracy"] == 0.97
    assert (
        record["signature"]
        == Registry(ArtifactStore(str(own_store))).version("tumours", 1)["signature"]
    )


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of specs/claims run once on 1,500 claims: claims-categoriser v1 registered."""
    where = tmp_path_factory.mktemp("examples") / "claims"
    shutil.copytree(ROOT / "specs" / "claims", where)
    pipeflow(["run", "pipeline.yaml", "--quiet", "--set", "params.n_claims=1500"], cwd=where,
             timeout=300)  # fmt: skip
    return where


@pytest.mark.slow
def test_the_canary_client_posts_the_specs_drifted_claims_and_labels_each_answer(
    claims: Path,
) -> None:
    from helpers import start_server

    served = start_server(claims, "claims-categoriser@1")
    try:
        # from the checkout, as docs/serving.md runs it: steps.py comes from specs/claims
        lines = _example("canary_client.py", served.url, "--claims", "40")
    finally:
        served.stop()
    per_version = ast.literal_eval(lines[0])
    assert list(per_version) == [1]
    requests, right = (int(w) for w in per_version[1].replace(",", "").split()[::2])
    assert requests == 40 and 0 < right <= 40
    assert lines[1] == "feedback: 40 of 40 recorded"
    assert _feedback_in_journal(claims / ".pipeflow") == 40


def test_a_client_given_no_steps_py_or_no_url_says_what_it_needs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "canary_client.py"), "http://127.0.0.1:9",
         "--steps", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"--steps: {tmp_path} has no steps.py" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "ab_client.py")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "the following arguments are required: urls" in proc.stderr


@pytest.mark.slow
def test_the_binary_request_built_by_hand_is_answered_in_binary_with_the_json_routes_labels(
    claims: Path,
) -> None:
    from helpers import start_server

    served = start_server(claims, "claims-categoriser@1")
    try:
        lines = _example("binary_infer.py", served.url)
        rows = [dict(zip(("description", "amount", "policy_type", "region"), r, strict=True))
                for r in docs_example("binary_infer").ROWS]  # fmt: skip
        with served.client() as c:
            plain = c.post("/v1/models/claims-categoriser/predict", json=rows).json()
    finally:
        served.stop()
    content_type, json_length, binary_length = lines[0].split()
    assert content_type == "application/octet-stream" and int(json_length) > 0
    header = ast.literal_eval(lines[1])
    assert header["name"] == "predict" and header["datatype"] == "BYTES"
    assert header["shape"] == [2] and header["parameters"]["binary_data_size"] == int(binary_length)
    assert ast.literal_eval(lines[2]) == [p["prediction"] for p in plain["predictions"]]


@pytest.mark.slow
def test_traffic_across_a_rollback_is_answered_by_both_versions_and_never_fails(
    serve, tumours: Path, own_store: Path
) -> None:
    moved = pipeflow(["models", "promote", "tumours", "2", "--to", "production",
                      "--store", str(own_store)], cwd=tumours)  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    served = serve("tumours@production", "--reload-interval", "0.2", store=own_store)
    row = json.dumps(sample_rows(tumours, 1)[0])
    traffic = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "rollback_traffic.py"), served.url, "6", "4",
         "--model", "tumours", "--row", row],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)
        back = pipeflow(["models", "rollback", "tumours", "production", "--reason", "under review",
                         "--store", str(own_store)], cwd=tumours)  # fmt: skip
        assert back.returncode == 0, back.stderr
        out, err = traffic.communicate(timeout=60)
    finally:
        traffic.kill()
    assert traffic.returncode == 0, out + err
    answers = ast.literal_eval(out.strip())
    assert {status for status, _ in answers} == {200}, answers
    assert {version for _, version in answers} == {1, 2}, answers
    assert httpx.get(served.url + "/ready").json()["version"] == 1
