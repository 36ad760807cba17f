"""Audit the installed dependencies for known vulnerabilities with pip-audit (`make audit`).

`make test` runs it after bandit. pip-audit looks each installed release up in PyPI's JSON API
(``https://pypi.org/pypi/NAME/VERSION/json``, which carries the release's advisories from the
Python Packaging Advisory Database). This script turns pip-audit's JSON report into a verdict:

- a known vulnerability in any installed package fails (exit 1), naming it, the advisory and its
  fixed versions;
- packages pip-audit could not look up (other than pipeflow's own editable installs) are listed;
  with ``--strict`` they fail too.

**When pip-audit audited nothing** (its service unreachable, or every per-release lookup answered
404: a network that serves the package index's project pages but not PyPI's per-release JSON), the
script audits from the index itself (``--index-url``, default ``https://pypi.org/pypi``), a few
lookups at a time:

- ``INDEX/NAME/VERSION/json`` where it answers: the installed release's advisories, audited for real;
- else ``INDEX/NAME/json``, the project JSON, whose ``vulnerabilities`` are those of the *latest*
  release (``info.version``): a package installed at that release is audited for real from it; one
  at another release is listed as not audited, with its installed and latest versions (its
  advisories are not in that page, so "no known vulnerabilities" would be a guess);
- a package the index does not know (404) is listed as not on the index; one whose lookups failed
  (refused, timed out, a 5xx) as not looked up.

The verdict line says how many of each. Advisories marked ``withdrawn`` are ignored, as pip-audit
does. When no package could be audited at all, nothing was: the script says so in one line (NOT
RUN, with why: the index could not be reached, or answered for none at its installed release)
and exits 0, or 1 with ``--strict``. It never reports "no known vulnerabilities" for an audit that
did not happen.

    python tools/audit_dependencies.py [--strict] [--index-url URL]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess  # nosec B404: runs pip-audit from this interpreter's environment
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

EDITABLE = "distribution marked as editable"
# what requests prints when pip-audit cannot reach the service at all
UNREACHABLE = ("Max retries exceeded", "NameResolutionError", "ProxyError", "ConnectionError")
#: the package index's JSON API: INDEX/NAME/json, INDEX/NAME/VERSION/json
INDEX_URL = "https://pypi.org/pypi"
#: lookups in flight at once, and how long one may take
LOOKUPS, TIMEOUT_S = 8, 20.0


@dataclass
class Verdict:
    audited: int = 0
    vulnerable: list[str] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.audited > 0

    def lines(self) -> list[str]:
        if not self.ran:
            reason = self.unaudited[0] if self.unaudited else "no packages found"
            return [
                f"dependency audit NOT RUN: the advisory service answered for none of the "
                f"{len(self.unaudited)} installed packages (first: {reason})"
            ]
        out = [f"  {line}" for line in self.vulnerable]
        out += [f"  not audited: {line}" for line in self.unaudited]
        out.append(
            f"dependency audit: {self.audited} packages audited, "
            f"{len(self.vulnerable)} known vulnerabilities, {len(self.unaudited)} not audited"
        )
        return out

    def ok(self, strict: bool) -> bool:
        if self.vulnerable:
            return False
        return not (strict and (self.unaudited or not self.ran))


def judge(report: dict) -> Verdict:
    """The verdict on pip-audit's ``--format json`` report."""
    verdict = Verdict()
    for dep in report.get("dependencies", []):
        reason = dep.get("skip_reason")
        if reason == EDITABLE:
            continue
        if reason is not None:
            verdict.unaudited.append(f"{dep['name']}: {reason}")
            continue
        verdict.audited += 1
        for vuln in dep.get("vulns", []):
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            verdict.vulnerable.append(
                f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixed})"
            )
    return verdict


def run_pip_audit(python: str) -> tuple[dict | None, str]:
    """pip-audit's JSON report on ``python``'s environment (or None) and what it printed."""
    with tempfile.TemporaryDirectory(prefix="pipeflow-audit-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off"]
        proc = subprocess.run(  # nosec B603: fixed argument list, no shell
            [*cmd, "--format", "json", "--output", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        report = json.loads(out.read_text()) if out.exists() else None
        return report, proc.stderr or f"exit status {proc.returncode}"


# --------------------------------------------------------------- audit from the index's JSON


class Unreachable(Exception):
    """A lookup that got no usable answer from the index: no connection (refused, timed out)
    or an HTTP error other than 404 (``status``)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class IndexVerdict:
    """The audit made from the package index's JSON (see the module docstring)."""

    index: str
    per_release: list[str] = field(default_factory=list)
    at_latest: list[str] = field(default_factory=list)
    vulnerable: list[str] = field(default_factory=list)
    not_latest: list[str] = field(default_factory=list)
    not_on_index: list[str] = field(default_factory=list)
    not_looked_up: list[str] = field(default_factory=list)

    @property
    def audited(self) -> int:
        return len(self.per_release) + len(self.at_latest)

    @property
    def unaudited(self) -> int:
        return len(self.not_latest) + len(self.not_on_index) + len(self.not_looked_up)

    @property
    def ran(self) -> bool:
        return self.audited > 0

    def lines(self) -> list[str]:
        total = self.audited + self.unaudited
        if not self.ran:
            if self.not_looked_up and not (self.not_latest or self.not_on_index):
                return [
                    f"dependency audit NOT RUN: could not look up any of the {total} installed "
                    f"packages at {self.index} (first: {self.not_looked_up[0]})"
                ]
            return [
                f"dependency audit NOT RUN: {self.index} answered for none of the {total} "
                f"installed packages at their installed release ({self._unaudited_counts()})"
            ]
        out = [f"  {line}" for line in self.vulnerable]
        out += [f"  not audited: {line} is not the latest release" for line in self.not_latest]
        out += [f"  not audited: {line} is not on the index" for line in self.not_on_index]
        out += [f"  not audited: {line}" for line in self.not_looked_up]
        out.append(
            f"dependency audit from {self.index}: {self.audited} packages audited "
            f"({len(self.per_release)} from their release's JSON, {len(self.at_latest)} at the "
            f"latest release from the project JSON), {len(self.vulnerable)} known "
            f"vulnerabilities, {self.unaudited} not audited ({self._unaudited_counts()})"
        )
        return out

    def _unaudited_counts(self) -> str:
        return (
            f"{len(self.not_latest)} not at the latest release, {len(self.not_on_index)} not on "
            f"the index, {len(self.not_looked_up)} could not be looked up"
        )

    def ok(self, strict: bool) -> bool:
        if self.vulnerable:
            return False
        return not (strict and (self.unaudited or not self.ran))


def canonical(name: str) -> str:
    """The name as the index spells it in URLs (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version  # pip-audit's own dependency

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def fetch_json(url: str, timeout: float = TIMEOUT_S) -> dict | None:
    """The JSON at ``url``; None for a 404; :class:`Unreachable` when there was no answer."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"--index-url must be an http(s) URL, got {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310: http(s) only
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise Unreachable(f"HTTP {err.code} from {url}", err.code) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unreachable(f"{url}: {reason}") from None
    except ValueError as err:  # a page that is not JSON (a proxy's error page)
        raise Unreachable(f"{url}: not JSON: {err}") from None


def advisories(name: str, version: str, page: dict) -> list[str]:
    """One line per advisory in an index page's ``vulnerabilities`` (withdrawn ones skipped)."""
    out = []
    for vuln in page.get("vulnerabilities") or []:
        if vuln.get("withdrawn") is not None:
            continue
        fixed = ", ".join(vuln.get("fixed_in") or []) or "no fixed release"
        aliases = [a for a in vuln.get("aliases") or [] if a != vuln["id"]]
        also = f" (also {', '.join(aliases)})" if aliases else ""
        out.append(f"{name} {version}: {vuln['id']}{also} (fixed in: {fixed})")
    return out


def look_up(index: str, name: str, version: str) -> tuple[str, list[str], str]:
    """How one package was audited: (``per-release`` | ``latest`` | ``not-latest`` |
    ``not-on-index`` | ``not-looked-up`` | ``no-connection``, its advisories, a note)."""
    base = f"{index.rstrip('/')}/{canonical(name)}"
    try:
        release = fetch_json(f"{base}/{version}/json")
    except Unreachable:
        release = None  # the project JSON may still answer
    if release is not None:
        return "per-release", advisories(name, version, release), ""
    try:
        project = fetch_json(f"{base}/json")
    except Unreachable as err:
        how = "not-looked-up" if err.status else "no-connection"
        return how, [], f"{name} {version}: could not look it up: {err}"
    if project is None:
        return "not-on-index", [], f"{name} {version}"
    latest = str((project.get("info") or {}).get("version") or "")
    if not same_version(version, latest):
        return "not-latest", [], f"{name} {version} (latest {latest or 'unknown'})"
    return "latest", advisories(name, version, project), ""


def audit_index(packages: Iterable[tuple[str, str]], index: str = INDEX_URL) -> IndexVerdict:
    """Audit ``(name, version)`` pairs from the index's JSON, a few lookups at a time."""
    packages = sorted(set(packages), key=lambda p: canonical(p[0]))
    verdict = IndexVerdict(index)
    # the first package alone first: an index that cannot be connected to is said once, instead
    # of waiting out every lookup's timeout
    answers = [look_up(index, *packages[0])] if packages else []
    if answers and answers[0][0] == "no-connection":
        reason = answers[0][2].split(": could not look it up: ", 1)[1]
        answers += [("not-looked-up", [], f"{n} {v}: not tried: {reason}") for n, v in packages[1:]]
    else:
        with ThreadPoolExecutor(LOOKUPS) as pool:
            answers += pool.map(lambda p: look_up(index, *p), packages[1:])
    for (name, _), (how, found, note) in zip(packages, answers, strict=True):
        verdict.vulnerable += found
        {
            "per-release": verdict.per_release,
            "latest": verdict.at_latest,
            "not-latest": verdict.not_latest,
            "not-on-index": verdict.not_on_index,
            "not-looked-up": verdict.not_looked_up,
            "no-connection": verdict.not_looked_up,
        }[how].append(note or name)
    return verdict


def installed() -> list[tuple[str, str]]:
    """(name, version) of every distribution in this interpreter's environment, but editable
    installs (pipeflow's own, as pip-audit's ``--skip-editable``)."""
    from importlib.metadata import distributions

    out = []
    for dist in distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        direct = dist.read_text("direct_url.json")
        if direct and (json.loads(direct).get("dir_info") or {}).get("editable"):
            continue
        out.append((name, dist.version))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strict", action="store_true", help="fail when any package could not be audited"
    )
    parser.add_argument(
        "--index-url",
        default=INDEX_URL,
        metavar="URL",
        help=f"the package index's JSON API, for when pip-audit audits nothing (default {INDEX_URL})",
    )
    args = parser.parse_args(argv)
    report, stderr = run_pip_audit(sys.executable)
    if report is None:
        last = stderr.strip().splitlines()[-1]
        # pip-audit stops at the first request that cannot connect (refused, no route, DNS);
        # any other failure (pip-audit missing, a bug) fails the gate
        if not any(marker in stderr for marker in UNREACHABLE):
            print(f"dependency audit failed: pip-audit: {last}")
            return 1
        why = f"its advisory service is unreachable: {last}"
    else:
        verdict = judge(report)
        if verdict.ran:
            print("\n".join(verdict.lines()))
            return 0 if verdict.ok(args.strict) else 1
        first = verdict.unaudited[0] if verdict.unaudited else "no packages found"
        why = f"its service answered for none of the {len(verdict.unaudited)} packages (first: {first})"
    print(f"pip-audit audited nothing ({why}); auditing from {args.index_url} instead")
    index_verdict = audit_index(installed(), args.index_url)
    print("\n".join(index_verdict.lines()))
    return 0 if index_verdict.ok(args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
