"""glibc's malloc keeps what a server frees (:mod:`pipeflow.core.malloc`): measured as page
faults in a fresh process that frees and allocates again the same working set, as a server does
every request; and the user's own malloc settings, or ``PIPEFLOW_MALLOC=default``, stand."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from pipeflow.core import malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a request's buffers, ten 1 MB blocks, allocated, touched and freed forty times; the page
# faults of the last 39 rounds (the first one faults its pages in whatever the settings)
REQUESTS = """
import json, resource, sys
from pipeflow.core import malloc
settled = malloc.keep_freed_memory()
def request():
    blocks = [bytearray(1_000_000) for _ in range(10)]
    del blocks
request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(39):
    request()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"settled": settled, "faults": faults}))
"""


def _faults(**env: str) -> dict[str, object]:
    clean = {
        k: v for k, v in os.environ.items() if k not in (*malloc.USER_SETTINGS, "PIPEFLOW_MALLOC")
    }
    done = subprocess.run(
        [sys.executable, "-c", REQUESTS], capture_output=True, text=True, timeout=60,
        env={**clean, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's; elsewhere it does nothing")
def test_memory_a_request_frees_is_reused_by_the_next_without_page_faults() -> None:
    kept, default = _faults(), _faults(PIPEFLOW_MALLOC="default")
    assert kept["settled"] is True and default["settled"] is False
    # glibc's defaults trim the freed 10 MB each time: ~2,400 faults a round; kept: none
    assert default["faults"] > 39 * 1000, default  # type: ignore[operator]
    assert kept["faults"] < 39 * 20, kept  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPEFLOW_MALLOC", "default"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_ARENA_MAX", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
    ],
)
def test_the_users_own_malloc_settings_stand(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert malloc.keep_freed_memory() is False
