"""Audit the installed dependencies for known vulnerabilities with pip-audit (`make audit`).

`make test` runs it after bandit. pip-audit looks each installed release up in PyPI's JSON API
(``https://pypi.org/pypi/NAME/VERSION/json``, which carries the release's advisories from the
Python Packaging Advisory Database). This script turns pip-audit's JSON report into a verdict:

- a known vulnerability in any installed package fails (exit 1), naming it and its fixed versions;
- packages pip-audit could not look up (other than pipeflow's own editable installs) are listed;
  with ``--strict`` they fail too;
- when the advisory service answered for *none* of the packages (a network that serves the
  package index but not PyPI's per-release JSON, or no network at all), nothing was audited: the
  script says so in one line and exits 0, or 1 with ``--strict``. It never reports "no known
  vulnerabilities" for an audit that did not happen.

    python tools/audit_dependencies.py [--strict]
"""

from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404: runs pip-audit from this interpreter's environment
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EDITABLE = "distribution marked as editable"
# what requests prints when pip-audit cannot reach the service at all
UNREACHABLE = ("Max retries exceeded", "NameResolutionError", "ProxyError", "ConnectionError")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strict", action="store_true", help="fail when any package could not be audited"
    )
    args = parser.parse_args(argv)
    report, stderr = run_pip_audit(sys.executable)
    if report is None:
        last = stderr.strip().splitlines()[-1]
        # pip-audit stops at the first request that cannot connect (refused, no route, DNS);
        # any other failure (pip-audit missing, a bug) fails the gate
        if any(marker in stderr for marker in UNREACHABLE):
            print(f"dependency audit NOT RUN: the advisory service is unreachable: {last}")
            return 1 if args.strict else 0
        print(f"dependency audit failed: pip-audit: {last}")
        return 1
    verdict = judge(report)
    print("\n".join(verdict.lines()))
    return 0 if verdict.ok(args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
