"""What the peer benchmarks share: the house benchmarks they reuse, the result row and the table.

Every peer script (``orchestration.py``, ``serving.py``, ``ml.py``) measures pipeflow and a peer
(Kedro, MLflow, or the hand-written code a peer's user writes) **in the same run**, alternating
repeats, and prints rows of one table: the figure of each, the ratio pipeflow / baseline, and the
target "pipeflow ahead of the peer" (a time ratio <= 1.0x, a throughput ratio >= 1.0x) as PASS or
MISS. A peer that is not installed gives a ``skip`` row with the reason, never a failure; nothing
asserts a timing, and the scripts exit 0 unless the benchmark itself breaks.

Optional peers live in a separate environment when installing them into ``.venv`` would change
packages pipeflow's own tests use (MLflow pins ``pyarrow<26``, ``python-dateutil<3`` and
``importlib-metadata<10``): ``benchmarks/peers/.venv``, a venv that also sees ``.venv``'s packages
(see docs/benchmarks.md). ``peer_python()`` finds it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
REPO = BENCHMARKS.parent


def sibling(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` (``bench_core``, ``bench_ml``, ``bench_serving``), imported by path:
    ``benchmarks`` is no package, and these scripts run from ``benchmarks/peers``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def peer_python(
    module: str, variable: str = "PIPEFLOW_PEERS_PYTHON", venv: str = ".venv"
) -> tuple[str | None, str]:
    """A Python that can import ``module``: ``$<variable>``, then ``benchmarks/peers/<venv>``,
    then this interpreter. Returns ``(path, version)``, or ``(None, why not)``."""
    candidates = [os.environ.get(variable), str(HERE / venv / "bin" / "python")]
    candidates.append(sys.executable)
    tried = []
    for python in candidates:
        if not python or not Path(python).exists() or python in tried:
            continue
        tried.append(python)
        done = subprocess.run(
            [python, "-c", f"import {module}; print({module}.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0:
            return python, done.stdout.strip()
    return None, f"{module} is not importable from {', '.join(tried)}"


@dataclass
class Row:
    """One line of the table. ``ratio`` is pipeflow's figure over the baseline's; ``ok`` is None for
    a row shown for information, and for a skipped one (``skipped`` says why)."""

    group: str  # orchestration, serving, validation, training
    row: str
    baseline: str  # who the baseline is
    baseline_figure: str
    pipeflow_figure: str
    ratio: float | None
    target: str
    ok: bool | None
    skipped: str | None = None
    data: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skip"
        return {True: "PASS", False: "MISS", None: "info"}[self.ok]


def skipped(group: str, row: str, baseline: str, target: str, why: str) -> Row:
    return Row(group, row, baseline, "-", "-", None, target, None, skipped=why)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cpus, python {sys.version.split()[0]}, load average {load:.1f} at the end"


def _cells(r: Row) -> list[str]:
    ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
    figure = r.pipeflow_figure if not r.skipped else f"skipped: {r.skipped}"
    return [r.verdict, r.row, r.baseline, r.baseline_figure, figure, ratio, r.target]


HEAD = ["", "row", "baseline", "baseline figure", "pipeflow figure", "ratio", "target"]


def text_table(rows: list[Row]) -> str:
    cells = [HEAD, *[_cells(r) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def markdown_table(rows: list[Row]) -> str:
    head = ["row", "baseline", "baseline figure", "pipeflow figure", "ratio", "target", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        verdict, *rest = _cells(r)
        cells = [*rest, f"**{verdict}**" if verdict in ("PASS", "MISS") else verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--json", type=Path, help="write the rows here")
    return p


def finish(title: str, rows: list[Row], json_path: Path | None, elapsed: float) -> int:
    """Print the rows (and write them as JSON); always 0: a MISS is for a person to judge."""
    print(f"\n{title} ({machine()}, {elapsed:.0f} s)\n")
    print(text_table(rows))
    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "title": title,
                    "elapsed_s": elapsed,
                    # when, and how busy the machine was at the end: run_all --only reuses
                    # these rows later and must say where they came from
                    "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "load_end": os.getloadavg()[0],
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
                default=str,
            )
        )
    return 0
