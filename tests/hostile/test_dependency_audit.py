"""The dependency audit gate (`tools/audit_dependencies.py`, run by `make test`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "audit_dependencies.py"


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


def test_real_pip_audit_with_no_route_to_the_service_says_not_run(tmp_path):
    # a real pip-audit run, its requests sent to a closed port on 127.0.0.1 (no network used)
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env["XDG_CACHE_HOME"] = str(tmp_path)  # pip-audit's HTTP cache must not answer for it
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    for strict, code in (([], 0), (["--strict"], 1)):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *strict],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert proc.stdout.startswith(
            "dependency audit NOT RUN: the advisory service is unreachable:"
        ), proc.stdout
        assert "Traceback" not in proc.stdout
