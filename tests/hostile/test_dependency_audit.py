"""The dependency audit gate (`tools/audit_dependencies.py`, run by `make test`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "audit_dependencies.py"
PAGES = Path(__file__).with_name("pypi_pages.json")


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def dep(name: str, version: str, *vulns: tuple[str, list[str]]) -> dict:
    # pip-audit's --format json entry for an audited package
    return {
        "name": name,
        "version": version,
        "vulns": [{"id": i, "fix_versions": fixed} for i, fixed in vulns],
    }


def skipped(name: str, reason: str) -> dict:
    return {"name": name, "skip_reason": reason}


NOT_FOUND = "Dependency not found on PyPI and could not be audited: {} (1.0)"


def test_a_known_vulnerability_fails_naming_package_advisory_and_fix(audit):
    verdict = audit.judge(
        {
            "dependencies": [
                dep("jinja2", "3.1.2", ("GHSA-h5c8-rqwp-cp95", ["3.1.3"]), ("PYSEC-0", [])),
                dep("pyyaml", "6.0.2"),
                skipped("pipeflow", audit.EDITABLE),
            ],
            "fixes": [],
        }
    )
    assert verdict.audited == 2 and verdict.ran
    assert not verdict.ok(strict=False)
    text = "\n".join(verdict.lines())
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in: 3.1.3)" in text
    assert "jinja2 3.1.2: PYSEC-0 (fixed in: no fixed release)" in text
    assert "2 packages audited, 2 known vulnerabilities, 0 not audited" in text


def test_clean_audit_passes_and_editable_installs_are_not_counted(audit):
    verdict = audit.judge(
        {"dependencies": [dep("numpy", "2.3.0"), skipped("pipeflow-sql", audit.EDITABLE)]}
    )
    assert verdict.ok(strict=True)
    assert verdict.lines() == [
        "dependency audit: 1 packages audited, 0 known vulnerabilities, 0 not audited"
    ]


def test_packages_that_could_not_be_looked_up_fail_only_a_strict_audit(audit):
    verdict = audit.judge(
        {"dependencies": [dep("numpy", "2.3.0"), skipped("inhouse", NOT_FOUND.format("inhouse"))]}
    )
    assert verdict.ok(strict=False) and not verdict.ok(strict=True)
    assert any(line.startswith("  not audited: inhouse:") for line in verdict.lines())


def test_an_audit_that_looked_nothing_up_never_reads_as_clean(audit):
    verdict = audit.judge(
        {"dependencies": [skipped(n, NOT_FOUND.format(n)) for n in ("altair", "dask", "numpy")]}
    )
    assert not verdict.ran
    [line] = verdict.lines()
    assert line.startswith("dependency audit NOT RUN: the advisory service answered for none")
    assert "of the 3 installed packages" in line and "vulnerabilit" not in line
    assert verdict.ok(strict=False) and not verdict.ok(strict=True)


def no_route_env(tmp_path: Path) -> dict[str, str]:
    """pip-audit's (and urllib's) requests to anything but 127.0.0.1 sent to a closed port on
    127.0.0.1: no network used."""
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env["XDG_CACHE_HOME"] = str(tmp_path)  # pip-audit's HTTP cache must not answer for it
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "http_proxy"):
        env.pop(name, None)
    return env


def test_real_pip_audit_with_no_route_to_anything_says_not_run(tmp_path):
    # a real pip-audit run, then the index fallback, both with no route to their service
    env = no_route_env(tmp_path)
    for strict, code in (([], 0), (["--strict"], 1)):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *strict],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
        assert proc.returncode == code, proc.stdout + proc.stderr
        first, last = proc.stdout.strip().splitlines()
        assert first.startswith(
            "pip-audit audited nothing (its advisory service is unreachable:"
        ), proc.stdout
        assert first.endswith("auditing from https://pypi.org/pypi instead")
        assert last.startswith("dependency audit NOT RUN: could not look up any of the "), (
            proc.stdout
        )
        assert "installed packages at https://pypi.org/pypi (first: " in last
        assert "vulnerabilit" not in proc.stdout and "Traceback" not in proc.stdout


# ------------------------------------------------------------ the fallback: the index's JSON


@pytest.fixture
def index() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering the recorded PyPI-shaped pages of
    pypi_pages.json (404 for anything else); PyYAML's latest release is the installed one.
    Yields its JSON API base URL (what ``--index-url`` takes)."""
    pages = json.loads(PAGES.read_text())
    pages["/pypi/pyyaml/json"]["info"]["version"] = importlib.metadata.version("PyYAML")
    pages["/pypi/broken/json"] = 500  # an index failing for one package

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            status = page if isinstance(page, int) else 404 if page is None else 200
            body = json.dumps(page).encode() if status == 200 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    server.shutdown()
    server.server_close()


def test_index_audit_reads_release_pages_and_the_latest_release_from_project_pages(audit, index):
    pyyaml = importlib.metadata.version("PyYAML")
    verdict = audit.audit_index(
        [
            ("Jinja2", "3.1.2"),  # its release page answers: audited for real, one advisory
            ("requests", "2.34.2"),  # the project page's latest release: audited, clean
            ("PyYAML", pyyaml),  # the latest release, with an advisory (and a withdrawn one)
            ("numpy", "2.3.0"),  # not the latest (2.5.0): the page says nothing about 2.3.0
            ("inhouse-tools", "1.0"),  # 404 everywhere: not on the index
            ("broken", "0.1"),  # the index fails with HTTP 500 for it
        ],
        index,
    )
    assert (len(verdict.per_release), len(verdict.at_latest)) == (1, 2)
    assert not verdict.ok(strict=False)
    lines = verdict.lines()
    assert lines[:2] == [
        "  Jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (also CVE-2024-22195) (fixed in: 3.1.3)",
        f"  PyYAML {pyyaml}: PYSEC-2026-9002 (also CVE-2026-99999) (fixed in: 6.0.5, 7.0.0)",
    ]
    assert "PYSEC-2026-9001" not in "\n".join(lines)  # withdrawn
    assert "  not audited: numpy 2.3.0 (latest 2.5.0) is not the latest release" in lines
    assert "  not audited: inhouse-tools 1.0 is not on the index" in lines
    [broken] = [line for line in lines if "broken" in line]
    assert broken.startswith("  not audited: broken 0.1: could not look it up: HTTP 500 from ")
    assert lines[-1] == (
        f"dependency audit from {index}: 3 packages audited (1 from their release's JSON, 2 at "
        "the latest release from the project JSON), 2 known vulnerabilities, 3 not audited "
        "(1 not at the latest release, 1 not on the index, 1 could not be looked up)"
    )


def test_index_audit_of_clean_packages_passes_and_unaudited_ones_fail_only_strict(audit, index):
    clean = audit.audit_index([("requests", "2.34.2")], index)
    assert clean.ok(strict=True) and clean.lines()[-1].endswith(
        "0 known vulnerabilities, 0 not audited (0 not at the latest release, 0 not on the "
        "index, 0 could not be looked up)"
    )
    partial = audit.audit_index([("requests", "2.34.2"), ("numpy", "2.3.0")], index)
    assert partial.ok(strict=False) and not partial.ok(strict=True)


def test_index_audit_that_audited_nothing_never_reads_as_clean(audit, index):
    behind = audit.audit_index([("numpy", "2.3.0"), ("inhouse-tools", "1.0")], index)
    assert not behind.ran
    assert behind.lines() == [
        f"dependency audit NOT RUN: {index} answered for none of the 2 installed packages at "
        "their installed release (1 not at the latest release, 1 not on the index, 0 could not "
        "be looked up)"
    ]
    assert behind.ok(strict=False) and not behind.ok(strict=True)


def test_an_unreachable_index_says_it_could_not_look(audit, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/pypi"
    verdict = audit.audit_index([("numpy", "2.3.0"), ("requests", "2.34.2")], closed)
    [line] = verdict.lines()
    assert line.startswith(
        f"dependency audit NOT RUN: could not look up any of the 2 installed packages at {closed} "
        f"(first: numpy 2.3.0: could not look it up: {closed}/numpy/json: "
    ), line
    assert "vulnerabilit" not in line
    assert verdict.ok(strict=False) and not verdict.ok(strict=True)


def test_the_script_falls_back_to_the_index_and_fails_naming_the_advisory(index, tmp_path):
    # pip-audit for real, with no route to its service; the index on 127.0.0.1 answers for
    # PyYAML only (at the installed release, with an advisory): everything else is not on it
    env = {**no_route_env(tmp_path), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--index-url", index],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("pip-audit audited nothing (its advisory service is unreachable")
    assert lines[0].endswith(f"auditing from {index} instead")
    pyyaml = importlib.metadata.version("PyYAML")
    assert lines[1] == (
        f"  PyYAML {pyyaml}: PYSEC-2026-9002 (also CVE-2026-99999) (fixed in: 6.0.5, 7.0.0)"
    )
    assert (
        f"  not audited: pandas {importlib.metadata.version('pandas')} is not on the index" in lines
    )
    assert not any("pipeflow " in line for line in lines)  # editable installs are not audited
    assert lines[-1].startswith(f"dependency audit from {index}: ")
    assert ", 1 known vulnerabilities, " in lines[-1]
