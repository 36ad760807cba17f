"""glibc's malloc told to keep what a server frees, for the next request to reuse.

A server allocates the same large buffers for every request and frees them when it answers: the
body (~840 kB for 1000 rows of 31 features), the model's matrix and the preprocessing's copies of
it (~1 MB each for a batch of four such requests), the batch's audit lines. glibc's defaults
hand such memory back to the kernel: a block above the mmap threshold (128 kB, raised as such
blocks are freed, to a few MB here) is its own ``mmap`` and ``munmap``, and a heap whose free
top passes the trim threshold (twice the mmap threshold) is trimmed. The next request then
touches fresh pages, and each is a page fault the kernel zeroes. Measured on four concurrent
1000-row requests of the tumours pipeline: in process (the app driven through ASGI, its batcher
thread included) ~530 page faults per request and 0.9 ms of system CPU, with the settings below
~10 faults and 0.1 ms; ``pipeflow serve`` itself 400-460 faults per request before and a
handful after, 12-15% less CPU per request (benchmarks/peers/serving.py prints both). The
batcher's thread has its own malloc arena, whose heap is trimmed the same way; inline on the
event loop's thread the faults were fewer (~150-230) but not gone.

:func:`keep_freed_memory` sets the mmap threshold to its largest value (32 MiB: smaller blocks
come from the heap, and the threshold no longer moves) and the trim threshold to
:data:`TRIM_BYTES`: the heap keeps up to that much free at its top instead of giving it back.
The cost is memory: a server keeps its largest batch's working set (a few MB for 1000-row
requests at concurrency 4) and up to :data:`TRIM_BYTES` more after a burst of larger ones;
its resident size still levels off, since the same memory is reused (benchmarks/README.md).

It does nothing where the C library is not glibc (musl, macOS, Windows), where the user set
malloc's own environment variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_ARENA_MAX`` or a ``glibc.malloc`` tunable: theirs stand), or
where ``PIPEFLOW_MALLOC=default`` asks for glibc's defaults (the benchmark's baseline).
"""

from __future__ import annotations

import os
import platform

#: the most free memory a heap keeps at its top before it is trimmed (see the module docstring)
TRIM_BYTES = 64 * 1024 * 1024
#: glibc's largest mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``)
MMAP_BYTES = 32 * 1024 * 1024

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
#: the variables through which a user tunes glibc's malloc: when set, theirs stand
USER_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
)


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for serving (see the module docstring); True when
    they were set, False where it does nothing."""
    if os.environ.get("PIPEFLOW_MALLOC", "").strip().lower() == "default":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt answers 1 when it took the value; the mmap threshold first (it fixes both)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES))
