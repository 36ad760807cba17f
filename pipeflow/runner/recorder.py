"""Stage records written to the metadata database as a run goes.

The client process is the single writer of run metadata: it records cached stages before
execution starts and every other stage as its result arrives (:func:`stage_row` makes the row),
through a :class:`Recorder` that batches them into few transactions.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from pipeflow.core.compiler import Pipeline
from pipeflow.core.states import StageState
from pipeflow.runner.plan import StagePlan
from pipeflow.runner.report import StageOutcome
from pipeflow.store.metadata import MetadataDB


class Recorder:
    """Batches stage records into few transactions (SQLite or PostgreSQL alike), written off the
    thread that adds them.

    A transaction per stage would cost more than running a small stage, and a write on the
    scheduler's thread would hold up every stage behind it (a batch of 200 records is a few
    milliseconds in SQLite, tens on a database server). So :meth:`add` only files the record;
    a timer thread writes what is waiting ``max_age_s`` after the first record arrived, at once
    when ``max_rows`` are waiting, and at the end of the run (:meth:`flush`). ``runs show`` of a
    run in progress lags by at most a fraction of a second. Writes are serialised, and a batch
    is taken under the write lock, so an older record of a stage never lands after a newer one;
    a failed write puts its records back for the next. A crash can lose only unwritten records.
    """

    def __init__(
        self, db: MetadataDB, run_id: str, *, max_rows: int = 200, max_age_s: float = 0.25
    ):
        self.db, self.run_id = db, run_id
        self.max_rows, self.max_age_s = max_rows, max_age_s
        #: latest row per stage: a stage that starts and ends within one batch is written once
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # guards rows and the timer; held only briefly
        self._write_lock = threading.Lock()  # one write at a time, in the order batches are taken
        self._timer: threading.Timer | None = None
        self._due = 0.0

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows[row["stage"]] = row
            delay = 0.0 if len(self.rows) >= self.max_rows else self.max_age_s
            if self._timer is not None and delay == 0.0 and self._due > 0.0:
                self._timer.cancel()  # full: write now rather than when the timer was due
                self._timer = None
            if self._timer is None:
                self._due = delay
                self._timer = threading.Timer(delay, self._flush_quietly)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write every waiting record now (on the calling thread)."""
        with self._write_lock:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                rows, self.rows = self.rows, {}
            if not rows:
                return
            try:
                self.db.record_stages(self.run_id, rows.values())
            except BaseException:
                with self._lock:  # back in line, under any newer record of the same stage
                    self.rows = {**rows, **self.rows}
                raise

    def _flush_quietly(self) -> None:
        with contextlib.suppress(Exception):  # the end-of-run flush reports failures
            self.flush()


def stage_row(pipeline: Pipeline, sp: StagePlan, o: StageOutcome) -> dict[str, Any]:
    """The metadata row of a stage: what was planned (``sp``) and what came of it (``o``)."""
    st = pipeline.stages[sp.name]
    inputs = o.inputs
    return {
        "stage": sp.name,
        "seq": pipeline.position[sp.name],
        "type": st.type,
        "state": str(o.state),
        "key": o.key,
        "reason": o.reason,
        "started": o.started,
        "ended": o.ended,
        "attempts": o.attempts,
        "error": o.error,
        "traceback": o.traceback,
        "worker": o.worker,
        "config_digest": sp.config_digest,
        "config": sp.config,
        "code_digest": sp.fingerprint,  # the column's historic name: stores keep reading
        "input_digests": {p: r.digest for p, r in inputs.items()},
        "outputs": o.outputs,
        "lineage": {
            port: (w.source, w.source_port, inputs[port].digest)
            for port, w in st.inputs.items()
            if port in inputs
        },
        # what the stage logged; a reused stage's log is that of the run that made it
        "metrics": o.metrics,
        "logged_params": o.logged_params,
        "from_run": o.cached_from if o.state is StageState.CACHED else None,
        # a stage that ran has its log lines (maybe none); a reused one none in this run
        **({"log": o.log} if o.state in (StageState.DONE, StageState.FAILED) else {}),
    }
