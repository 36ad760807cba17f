"""``import skops.io`` in a fresh process: pipeflow's :func:`skops_io` (the shipped names of
``all_estimators()``, pipeflow/store/skops_import.py) against skops's own import (the real call,
which imports all of scikit-learn), CPU seconds of the import alone (numpy, scipy, pandas and
scikit-learn imported before the clock starts, as in every process that saves or loads a model).
The two alternate, best of N each; the ratio is pipeflow's over the baseline's.

    .venv/bin/python benchmarks/bench_skops_import.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

TARGET = 0.5  # pipeflow's import at most half of skops's own

PROBE = """
import json, resource, sys
import numpy, pandas, scipy, sklearn, sklearn.utils
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
before, modules = cpu(), len(sys.modules)
if sys.argv[1] == "pipeflow":
    from pipeflow.store.skops_import import skops_io
    skops_io()
else:
    import skops.io
print(json.dumps({"cpu": cpu() - before, "modules": len(sys.modules) - modules}))
"""


def once(which: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, which], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    once("skops"), once("pipeflow")  # untimed: bytecode, the page cache
    runs: dict[str, list[dict[str, float]]] = {"skops": [], "pipeflow": []}
    for _ in range(args.repeats):
        for which in runs:
            runs[which].append(once(which))
    best = {which: min(runs[which], key=lambda r: r["cpu"]) for which in runs}
    ratio = best["pipeflow"]["cpu"] / best["skops"]["cpu"]
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(f"load average {os.getloadavg()[0]:.1f}, best of {args.repeats}, CPU seconds")
    print("| | figure | pipeflow | baseline | ratio | measured (target) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| **{verdict}** | import skops.io, fresh process | {best['pipeflow']['cpu']:.3f} s "
        f"({best['pipeflow']['modules']:.0f} modules) | {best['skops']['cpu']:.3f} s "
        f"({best['skops']['modules']:.0f} modules) | {ratio:.2f}x | {ratio:.2f}x (<= {TARGET}x); "
        f"{best['skops']['cpu'] - best['pipeflow']['cpu']:.3f} CPU-s saved a process |"
    )


if __name__ == "__main__":
    main()
