"""The shared test helpers that decide whether a test fails: :func:`helpers.cpu_limit` fails a
block that spends its CPU seconds, and not one that only waits (as a loaded machine makes tests
do)."""

from __future__ import annotations

import signal
import time

import pytest
from helpers import cpu_limit


def test_cpu_limit_fails_a_block_that_spins_past_it() -> None:
    started = time.thread_time()
    with pytest.raises(AssertionError, match="more than 0.2 CPU seconds"), cpu_limit(0.2):
        while time.thread_time() - started < 10:
            pass
    assert time.thread_time() - started < 5  # stopped at the limit, not at the loop's end
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)  # and disarmed


def test_cpu_limit_lets_a_block_wait_longer_than_it() -> None:
    handler = signal.getsignal(signal.SIGPROF)
    with cpu_limit(0.2):
        time.sleep(0.5)  # wall time, no CPU: what load adds
    assert signal.getsignal(signal.SIGPROF) == handler
