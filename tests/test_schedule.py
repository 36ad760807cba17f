"""The order in which ``make test``'s two xdist workers get the modules (tests/conftest.py): the
longest first, as :data:`helpers.HEAVY` lists them, then the rest by number of tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import HEAVY

ROOT = Path(__file__).parents[1]


def test_every_module_named_heavy_exists() -> None:
    missing = [name for name in HEAVY if not (ROOT / name).is_file()]
    assert not missing, f"tests/conftest.py HEAVY names modules that are gone: {missing}"


def test_an_xdist_worker_collects_the_heavy_modules_first_each_in_its_own_order() -> None:
    some = ["tests/runner", "tests/test_specs.py"]
    collected = {}
    for worker in ("", "gw0"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker}
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "-p", "no:xdist", *some],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        collected[worker] = [line for line in out.stdout.splitlines() if "::" in line]
    plain, ordered = collected[""], collected["gw0"]
    assert sorted(plain) == sorted(ordered)  # the same tests, only moved
    modules = list(dict.fromkeys(test.split("::")[0] for test in ordered))
    heavy = [m for m in HEAVY if m in modules]
    assert heavy == ["tests/test_specs.py", "tests/runner/test_gc.py"]
    assert modules[: len(heavy)] == heavy
    rest = modules[len(heavy) :]
    sizes = [sum(t.startswith(f"{m}::") for t in ordered) for m in rest]
    assert sizes == sorted(sizes, reverse=True)  # then most tests first, as xdist would
    for module in modules:  # each module's tests together and in pytest's order
        mine = [t for t in ordered if t.startswith(f"{module}::")]
        assert mine == [t for t in plain if t.startswith(f"{module}::")]
        at = ordered.index(mine[0])
        assert ordered[at : at + len(mine)] == mine
