"""Cyclic garbage collection paused while pipeflow's own code builds long-lived objects.

Importing the session (pydantic models, the compiler), loading and compiling a spec, planning,
and the records of reused stages allocate many objects and free few: the collections Python
runs meanwhile (one per 700 net allocations, a deeper one every tenth) find nothing, and in a
fully cached ``pipeflow run`` of 1000 stages they took about a tenth of the command's CPU time
(36-53 ms in ~100 collections; 3 ms in 11 with the pauses).
:func:`paused` turns collection off for such a block and back on after it (if it was on), so
stage code, which may make reference cycles, never runs with it off; reference counting frees
everything else as usual meanwhile. Only pipeflow's own code runs inside, and the caller's
``on_plan`` and its ``on_event`` of reused stages (what ``pipeflow run`` displays); a run
resumes collection, with what it built frozen, just before its first stage runs.

A run gives what it froze back to the collector when it ends (:func:`thaw`), so a long-lived
process does not keep it out of sight for good; a process that exits after its one run
(``pipeflow run``) runs it inside :func:`kept_frozen` instead, and the collections Python makes at
exit then scan what the run made since the freeze, not every module and the whole spec again
(3% of a fully cached 1000-stage command's instructions, measured with callgrind).

A server settles its heap once loaded (:func:`settle_for_serving`): what it loaded frozen, and
the youngest generation collected after :data:`SERVING_YOUNG` net allocations instead of 700.
A batch of large requests keeps a few containers per row alive while its answers are built
(each row's answer and probabilities, a thousand rows a request, a few requests a batch), so
at 700 the collector ran several times a batch, scanning them and finding nothing, and moved
them on to the older generations, which it then scanned too: 7-9% of ``pipeflow serve``'s CPU
on 1000-row requests (benchmarks/peers/serving.py, measured with ``gc.callbacks``). Reference
counting frees them as before; only cyclic garbage waits for the larger count. It also tells
glibc's malloc to keep the memory a request frees for the next one
(:func:`pipeflow.core.malloc.keep_freed_memory`: page faults on memory freed and allocated again
were 12-15% of the server's CPU per 1000-row request).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


class Pause:
    """Collection off from creation until :meth:`resume` (or the end of the ``with`` block of
    :func:`paused`); then on again if it was on before."""

    def __init__(self) -> None:
        self._was_enabled = gc.isenabled()
        self._paused = True
        gc.disable()

    def resume(self, *, freeze: bool = False) -> None:
        """Collection as it was before the pause (once; later calls do nothing). ``freeze``
        first moves every object alive now out of the collector's sight (``gc.freeze``): what
        was built under the pause is long-lived, and would otherwise all be scanned by the
        first collection after it."""
        if not self._paused:
            return
        self._paused = False
        if freeze:
            gc.freeze()
        if self._was_enabled:
            gc.enable()


@contextlib.contextmanager
def paused(*, freeze: bool = False) -> Iterator[Pause]:
    """No cyclic garbage collection inside the block (or until its :class:`Pause` is resumed);
    the collector as it was after it. ``freeze`` as :meth:`Pause.resume` says."""
    pause = Pause()
    try:
        yield pause
    finally:
        pause.resume(freeze=freeze)


#: how many blocks of :func:`kept_frozen` are open (``pipeflow run`` opens one for its run)
_kept = 0


@contextlib.contextmanager
def kept_frozen() -> Iterator[None]:
    """Runs inside the block leave what they froze frozen (:func:`thaw` does nothing): for a
    process that exits after them (see the module docstring). Stage code still runs with the
    collector on, and what it makes is collected as before, at exit too."""
    global _kept
    _kept += 1
    try:
        yield
    finally:
        _kept -= 1


def thaw() -> None:
    """What a run froze back in the collector's sight (``gc.unfreeze``), unless the run is
    inside :func:`kept_frozen`."""
    if not _kept:
        gc.unfreeze()


#: the youngest generation's threshold in a server (see the module docstring): a batch's
#: answers (a few containers per row, a few thousand rows) stay below it
SERVING_YOUNG = 20_000


def settle_for_serving() -> None:
    """Collect once, freeze what a loaded server holds (libraries, the model: full collections
    then scan only request garbage, instead of stalling in-flight requests for 50-200 ms while
    they walk the model's objects), and collect the youngest generation after
    :data:`SERVING_YOUNG` net allocations (see the module docstring); malloc keeps what the
    server frees (:func:`pipeflow.core.malloc.keep_freed_memory`)."""
    from pipeflow.core import malloc

    malloc.keep_freed_memory()
    gc.collect()
    gc.freeze()
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(SERVING_YOUNG, young), middle, oldest)
