"""The dashboard's login: ``pipeflow ui --tokens`` (and ``$PIPEFLOW_TOKENS``), the bearer tokens of
``pipeflow serve`` read by :mod:`pipeflow.auth`, over a real uvicorn on 127.0.0.1; and the refusal
to serve a non-loopback address without them, decided before anything binds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import PIPEFLOW, cli_env, free_port, kill_group

from pipeflow.auth import Tokens, read_tokens
from pipeflow.cli.ui import is_loopback
from pipeflow.errors import BadRequest, UsageError
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore
from pipeflow.store.database import open_metadata
from pipeflow.ui.app import create_app

UI_TOKEN = "dashboard-reader-0123456789"
ADMIN_TOKEN = "ops-admin-token-93a5d0e2f7"
PREDICT_TOKEN = "predict-only-token-0123456789"
ENV_TOKEN = "from-the-environment-0123456789"
RUN_ID = "20240101-000000-aaaaaa"


def _store(root: Path) -> Path:
    """A store with one finished run and one registered model."""
    root.mkdir()
    db = open_metadata(root / "pipeflow.db")
    try:
        db.start_run(
            RUN_ID,
            "tumours",
            spec_path="pipeline.yaml",
            spec_digest="d" * 64,
            executor="threads",
            params={},
            overrides=[],
            stages=[("model", "train")],
        )
        db.finish_run(RUN_ID, "done")
    finally:
        db.close()
    store = ArtifactStore(str(root))
    ref = ArtifactRef(store.put(b"model"), "bytes", "model", 5)
    Registry(store).register("tumours", ref, metrics={"accuracy": 0.9})
    return root


def _api_paths(store: Path) -> list[str]:
    """Every /api route the dashboard has, its path parameters filled in."""
    app = create_app(str(store), store / "pipeflow.db")
    paths = [getattr(r, "path", "") for r in app.routes]
    filled = {"{run_id}": RUN_ID, "{name}": "tumours", "{version}": "1"}
    out = []
    for path in paths:
        if path.startswith("/api/"):
            for key, value in filled.items():
                path = path.replace(key, value)
            out.append(path)
    return out


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``pipeflow ui --tokens FILE`` with ``$PIPEFLOW_TOKENS`` too, on 127.0.0.1, logging at
    debug level (so the test of the log means something)."""
    where = tmp_path_factory.mktemp("login")
    store = _store(where / "store")
    tokens = where / "tokens"
    tokens.write_text(
        f"# TOKEN [SCOPES]\n{UI_TOKEN} ui\n{ADMIN_TOKEN} *\n{PREDICT_TOKEN}\n", encoding="utf-8"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = where / "ui.log"
    argv = ["ui", "--store", str(store), "--port", str(port), "--tokens", str(tokens)]
    proc = subprocess.Popen(
        [PIPEFLOW, *argv, "--log-level", "debug"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=cli_env(PIPEFLOW_TOKENS=f"{ENV_TOKEN}=ui"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield {"url": url, "log": log, "store": store, "tokens": tokens}
    finally:
        kill_group(proc)


def test_every_api_route_answers_401_without_a_token_and_never_the_data(dashboard) -> None:
    paths = _api_paths(dashboard["store"])
    assert "/api/runs" in paths and f"/api/runs/{RUN_ID}" in paths and len(paths) >= 10
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer not-a-real-token-000000"}):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.headers["content-type"] == "application/json"
                assert set(r.json()) == {"error"}, path
                assert RUN_ID not in r.text and "tumours" not in r.text, path
        assert "bearer token is required" in client.get("/api/runs").json()["error"]
        wrong = client.get("/api/runs", headers={"Authorization": "Bearer not-a-real-token-0000"})
        assert wrong.json() == {"error": "the bearer token is not valid"}
        basic = client.get("/api/runs", headers={"Authorization": f"Basic {UI_TOKEN}"})
        assert basic.status_code == 401
        # a token in the URL is not a token
        assert client.get(f"/api/runs?token={UI_TOKEN}").status_code == 401


def test_a_token_without_the_ui_scope_is_403(dashboard) -> None:
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        r = client.get("/api/summary", headers={"Authorization": f"Bearer {PREDICT_TOKEN}"})
    assert r.status_code == 403
    assert r.json() == {"error": "the token lacks the 'ui' scope"}


@pytest.mark.parametrize("token", [UI_TOKEN, ADMIN_TOKEN, ENV_TOKEN])
def test_a_token_with_the_ui_scope_or_star_reads_every_route(dashboard, token: str) -> None:
    with httpx.Client(
        base_url=dashboard["url"], timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for path in _api_paths(dashboard["store"]):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
        assert [r["id"] for r in client.get("/api/runs").json()["runs"]] == [RUN_ID]
        assert client.get("/api/models").json()["models"][0]["name"] == "tumours"


def test_the_page_and_its_files_load_without_a_token(dashboard) -> None:
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="logout"' in page.text
        assert RUN_ID not in page.text
        for name in ("app.js", "style.css"):
            assert client.get(f"/static/{name}").status_code == 200
        assert "sessionStorage" in client.get("/static/app.js").text


def test_no_token_appears_in_the_log(dashboard) -> None:
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        for token in (UI_TOKEN, PREDICT_TOKEN, "not-a-real-token-000000"):
            client.get("/api/summary", headers={"Authorization": f"Bearer {token}"})
    time.sleep(0.2)
    log = dashboard["log"].read_text()
    assert "pipeflow ui for" in log and "login: 3 token(s) with the 'ui' scope" in log
    for secret in (UI_TOKEN, ADMIN_TOKEN, PREDICT_TOKEN, ENV_TOKEN, "not-a-real-token"):
        assert secret not in log


def _ui(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PIPEFLOW, "ui", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(**env),
    )


def test_a_non_loopback_host_without_tokens_is_refused_before_binding(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    done = _ui("--store", str(store), "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stdout == ""  # not even the "pipeflow ui for ..." line
    assert done.stderr.startswith("error: --host 0.0.0.0 is not a loopback address")
    assert "--tokens FILE" in done.stderr and "--insecure-no-auth" in done.stderr
    # an address this machine does not have: binding would fail ("cannot listen"), so the
    # refusal is said before any bind is tried
    done = _ui("--store", str(store), "--host", "192.0.2.1")
    assert done.returncode == 2 and "is not a loopback address" in done.stderr
    done = _ui("--store", str(store), "--host", "::")
    assert done.returncode == 2 and "is not a loopback address" in done.stderr


def test_tokens_that_cannot_log_in_or_with_insecure_no_auth_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{PREDICT_TOKEN} predict,metrics\n")
    done = _ui("--store", str(store), "--tokens", str(tokens))
    assert done.returncode == 2
    assert f"no token of {tokens} has the 'ui' scope" in done.stderr
    tokens.write_text(f"{UI_TOKEN} ui\n")
    done = _ui("--store", str(store), "--tokens", str(tokens), "--insecure-no-auth")
    assert done.returncode == 2 and "--insecure-no-auth with tokens" in done.stderr
    tokens.write_text(f"\n{UI_TOKEN} uii\n")
    done = _ui("--store", str(store), "--tokens", str(tokens))
    assert done.returncode == 2
    assert f"{tokens}:2: unknown scope 'uii'" in done.stderr and UI_TOKEN not in done.stderr
    done = _ui("--store", str(store), PIPEFLOW_TOKENS="short=ui")
    assert done.returncode == 2
    assert "$PIPEFLOW_TOKENS (entry 1): a token must be at least 16 characters" in done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("fe80::1", False),
        ("dashboard.example", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tokens_file_and_environment_are_read_with_scopes(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n\n{UI_TOKEN}\tui, metrics\n{PREDICT_TOKEN}\n")
    monkeypatch.setenv("PIPEFLOW_TOKENS", f"{ENV_TOKEN}=*;{UI_TOKEN}=feedback")
    assert read_tokens(str(path)) == {
        UI_TOKEN: ["feedback"],  # the variable's scopes win
        PREDICT_TOKEN: ["predict"],  # none: predict, as serve always had it
        ENV_TOKEN: ["*"],
    }
    monkeypatch.delenv("PIPEFLOW_TOKENS")
    assert read_tokens(None) is None
    with pytest.raises(UsageError, match="cannot read --tokens"):
        read_tokens(str(tmp_path / "absent"))


def test_a_token_is_checked_by_its_digest_and_named_by_a_fingerprint() -> None:
    import hashlib

    tokens = Tokens({UI_TOKEN: ["ui"], ADMIN_TOKEN: ["*"]})
    assert len(tokens) == 2 and tokens.granting("ui") == 2 and tokens.granting("predict") == 1
    fingerprint = "token:" + hashlib.sha256(UI_TOKEN.encode()).hexdigest()[:12]
    assert tokens.check(f"Bearer {UI_TOKEN}", "ui") == fingerprint
    assert tokens.check(f"bearer  {UI_TOKEN} ", "ui") == fingerprint
    for header, status in ((None, 401), ("Bearer nope-nope-nope-nope", 401), (UI_TOKEN, 401)):
        with pytest.raises(BadRequest) as refused:
            tokens.check(header, "ui")
        assert refused.value.status == status
    with pytest.raises(BadRequest) as refused:
        tokens.check(f"Bearer {UI_TOKEN}", "predict")
    assert refused.value.status == 403
    assert UI_TOKEN.encode() not in repr(vars(tokens)).encode()  # only digests are kept
    assert Tokens(None).check(None, "ui") == "anonymous" and not Tokens(None)
