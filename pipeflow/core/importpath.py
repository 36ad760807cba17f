"""The spec's folder on ``sys.path`` while a run needs it, and off it again afterwards.

Stage code (``function: steps:f``), a cluster factory beside the spec and a code bundle fetched
on a worker are imported with their folder first on ``sys.path``. In a worker process that is
for the worker's life (one cluster, one run). In the process that runs the pipeline (the CLI, a
notebook, a test, a server that retrains) it must not outlive the run: a later run of another
spec would import a same-named module from the old folder, and every process started afterwards
through ``multiprocessing`` (Dask's local workers among them) is given the parent's ``sys.path``,
so a ``helpers.py`` in the old folder would shadow the ``helpers`` it means.

:func:`put_first` is how pipeflow puts a folder on ``sys.path``; :func:`during_a_run` wraps a run
(:func:`pipeflow.runner.session.run`). What :func:`put_first` adds while a run is in flight is
written down, and taken off again when the last run in flight in this process ends: only that (an
entry that was there before, or that the user's own code added, stays; a worker outside any run
keeps its folders). Runs may overlap in one process (threads), so one run's end never
takes a folder from under another still going.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
#: folders :func:`put_first` inserted while runs were in flight, not yet taken off
_added: list[str] = []
_runs_in_flight = 0


def put_first(folder: str) -> None:
    """``folder`` first on ``sys.path`` unless it is there already."""
    if not folder or folder in sys.path:
        return
    with _lock:
        if folder not in sys.path:
            sys.path.insert(0, folder)
            if _runs_in_flight:  # else a worker's, for its life
                _added.append(folder)


@contextlib.contextmanager
def during_a_run() -> Iterator[None]:
    """The block is a run: what :func:`put_first` adds while runs are in flight comes off again
    once the last of them ends."""
    global _runs_in_flight
    with _lock:
        _runs_in_flight += 1
    try:
        yield
    finally:
        with _lock:
            _runs_in_flight -= 1
            if _runs_in_flight == 0:
                for folder in _added:
                    with contextlib.suppress(ValueError):
                        sys.path.remove(folder)
                _added.clear()


__all__ = ["during_a_run", "put_first"]
