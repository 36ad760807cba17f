"""The fleet: N ``pipeflow serve`` replicas over one store behave as one service.

Two kinds of shared truth, both in the store, and one loop per replica that applies them
(:meth:`pipeflow.serving.state.Server.watch_alias`, every ``--reload-interval``):

- **Decisions** are registry records, claimed with an exclusive create so each history is one
  straight chain: alias moves (promote, rollback; ``registry/<model>/aliases/``) and *fleet
  events* (``registry/<model>/fleet/<seq>.json``, :meth:`pipeflow.registry.Registry.fleet_events`).
  The fleet events are ``canary_withdrawn`` and the canary's ramp (``ramp_step``,
  ``ramp_promoted``; :mod:`pipeflow.serving.rollout`): the replica whose probation of the canary
  failed records the withdrawal (:meth:`pipeflow.serving.rollout.Rollout.withdraw`), the replica
  that sees a ramp step hold first records the next one; every other replica reads them within
  its reload interval and routes accordingly (no traffic to a withdrawn version, the step's
  weight); a replica that starts later replays the chain at start (:attr:`Fleet.seq`), so a
  restarted pod never routes to a withdrawn canary and resumes a ramp at the fleet's step.
  A rollback by the guard (:mod:`pipeflow.serving.guard`) needs no fleet event: it *is* an alias
  event, which every replica follows the same way it follows a promotion.
- **Observations** are the audit journal every replica already writes (predictions with model,
  version, output and latency; feedback; ``model_error`` events). A shadow's records
  (:mod:`pipeflow.serving.shadow`) are a journal kind of their own, which this view does not read:
  they answered nothing. :class:`Fleet` reads the union
  of every replica's records incrementally (:class:`Follower`: whole lines past a remembered
  offset per segment; a shipped segment is read once) and folds them into

  - the fleet's memory of prediction ids (:class:`RecentPredictions`), so feedback posted to any
    replica for a prediction any replica answered counts once it is seen: feedback for an id not
    seen yet waits (:attr:`Fleet.pending`, bounded) until the prediction's record arrives;
  - per-version live accuracy over the whole fleet (``[correct, labelled]``, the same list object
    as each :class:`~pipeflow.serving.handle.Handle`'s ``feedback``; a second label for an id
    replaces the first), read by the canary's ``--min-accuracy`` and exported as the
    ``pipeflow_fleet_accuracy`` gauge;
  - one-second cells per version (rows answered, rows failed, a latency histogram, feedback),
    so the guard can ask for the fleet's error rate, p95 latency and accuracy over a window
    (:meth:`Fleet.window`) without keeping records.

  This replica's own feedback is applied the moment it is posted (:meth:`Fleet.label`) and its
  own predictions are remembered and counted into the cells by the batcher as it writes them
  (:meth:`Fleet.answered`), so its own prediction segments (the names its
  :class:`~pipeflow.store.journal.AuditLog` opened) are never read back: parsing a 1000-row
  request's record again only to count its rows cost an eighth of the server's CPU.

How fresh: on a local store every replica's records are files in ``<store>/audit`` (each writer
its own ``<host>-<pid>-<token>.jsonl``), seen at the next refresh. On an object store another
replica's records arrive when it ships them (``--ship-interval``), so fleet accuracy and the
guard's window lag by up to that interval plus the reload interval. A replica reads the whole
journal once when it starts, folding each record as its line is read and decoding of a
prediction only the fields the fold reads (:class:`_Prediction`, not a 1000-row request's
inputs): its memory does not grow with the journal (one line, a shipped segment's bytes, and
:class:`RecentPredictions`' last ids: 34 MiB above its start for a 500 MB journal of 1000-row
requests, against 1113 MiB when the journal was listed whole, then folded; 1.2 s of CPU per GB
against 4.1; ``benchmarks/bench_replay.py``). Known limit: the time still grows with the
journal, and a long history on S3 is many downloads.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from pipeflow.store.journal import Follower

log = logging.getLogger("pipeflow.serve")


class RecentPredictions:
    """The outputs of roughly the last ``keep`` to ``2 * keep`` predictions by id, for live accuracy
    from feedback. Two generations, one dict per model version in each; when the young
    generation is full it becomes the old one and the old one is dropped: O(1) per batch, no
    per-row eviction. A batch is only queued (its ids and outputs, as they came): the dicts are
    filled, one C-level ``dict.update`` per batch, when an id is next looked up, so a server
    that gets no feedback never pays for them (a thousand dict entries per 1000-row request,
    ~4% of its CPU)."""

    def __init__(self, keep: int = 100_000):
        self.keep = keep
        self._young = _Generation()
        self._old = _Generation()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, name: str, version: int, ids: list[str], outputs: list[Any]) -> None:
        if len(ids) != len(outputs):
            raise ValueError(f"{len(ids)} ids for {len(outputs)} outputs")
        with self._lock:
            if self._size >= self.keep:
                self._old, self._young, self._size = self._young, _Generation(), 0
            self._young.queued.append(((name, version), ids, outputs))
            self._size += len(ids)

    def get(self, pid: str) -> tuple[str, int, Any] | None:
        """(model, version, output) of a recent prediction id, or None."""
        with self._lock:
            for generation in (self._young, self._old):
                for (name, version), outputs in generation.outputs().items():
                    if pid in outputs:
                        return name, version, outputs[pid]
        return None


class _Generation:
    """One generation of :class:`RecentPredictions`: outputs by id per (model, version), and the
    batches queued since the last look-up, in order (a later output of an id replaces its
    earlier one, as ``dict.update`` does)."""

    def __init__(self) -> None:
        self.by_version: dict[tuple[str, int], dict[str, Any]] = {}
        self.queued: list[tuple[tuple[str, int], list[str], list[Any]]] = []

    def outputs(self) -> dict[tuple[str, int], dict[str, Any]]:
        for key, ids, outputs in self.queued:
            self.by_version.setdefault(key, {}).update(zip(ids, outputs, strict=True))
        self.queued.clear()
        return self.by_version


GAMMA = 1.02  # latency bins grow by 2 %: a quantile within 1 % of the true one
_LOG_GAMMA = math.log(GAMMA)


class Cell:
    """One version's second: rows answered and failed, their latencies (a histogram), and the
    labels received (feedback) with how many were right."""

    __slots__ = ("correct", "errors", "labelled", "latency", "rows")

    def __init__(self) -> None:
        self.rows = self.errors = self.correct = self.labelled = 0
        self.latency: dict[int, int] = {}

    def add_latency(self, ms: Any, rows: int = 1) -> None:
        """Count ``rows`` rows answered in ``ms`` (a request's rows share its latency)."""
        if isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms):
            key = math.ceil(math.log(max(float(ms), 1e-3)) / _LOG_GAMMA)
            self.latency[key] = self.latency.get(key, 0) + rows


def _quantile(histogram: dict[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = q * (total - 1), 0
    for key in sorted(histogram):
        seen += histogram[key]
        if seen > rank:
            return round(2 * GAMMA**key / (GAMMA + 1), 3)
    return None  # not reached


#: What :meth:`Fleet.refresh` reads of a prediction record (a request's or, in a journal written
#: before requests were, a row's): msgspec skips every other field of the line (a 1000-row
#: request's ``inputs`` and ``probabilities``, most of its bytes) without building an object for
#: it. Each field of any type, None when missing, as the dict read before had them: the fold
#: checks them.
_FIELDS = ("model", "version", "time", "id", "ids", "output", "latency_ms")
_Prediction = msgspec.defstruct("_Prediction", [(field, Any, None) for field in _FIELDS])
_PREDICTION = msgspec.json.Decoder(_Prediction).decode


class Fleet:
    """Every replica's records, folded (see the module docstring); thread-safe."""

    def __init__(self, where: Any, own: Callable[[], set[str]], horizon_s: float = 3600):
        """``where``: the audit journal (a local folder or a
        :class:`~pipeflow.store.shipping.Journal`); ``own()``: this replica's segment names;
        ``horizon_s``: how long the per-second cells are kept (the longest window asked for)."""
        self.own = own
        self.horizon_s = horizon_s
        self.recent = RecentPredictions()
        self.followers = {k: Follower(where, k) for k in ("predictions", "feedback", "events")}
        #: (model, version) -> [correct, labelled] over the fleet (a handle's ``feedback``)
        self.counts: dict[tuple[str, int], list[int]] = {}
        #: prediction id -> (model, version, second, correct) of its latest label
        self.labels: dict[str, tuple[str, int, int, bool]] = {}
        #: prediction id -> (time, outcome): feedback waiting for its prediction to be seen
        self.pending: dict[str, tuple[float, Any]] = {}
        self.cells: dict[tuple[str, int, int], Cell] = {}
        self.seq = 0  # the last fleet event applied (pipeflow.registry.Registry.fleet_events)
        self._lock = threading.RLock()

    def counts_of(self, name: str, version: int) -> list[int]:
        with self._lock:
            return self.counts.setdefault((name, version), [0, 0])

    def _cell(self, name: str, version: int, second: int) -> Cell:
        cell = self.cells.get((name, version, second))
        if cell is None:
            cell = self.cells[(name, version, second)] = Cell()
        return cell

    # -- feedback -------------------------------------------------------------------------------
    def label(self, pid: str, outcome: Any, when: float) -> bool:
        """Count a true outcome for prediction ``pid`` (its latest label replaces an earlier one);
        False when the prediction is not known yet: the label waits for it."""
        return self._label(pid, outcome, when, self.recent.get(pid))

    def _label(
        self, pid: str, outcome: Any, when: float, seen: tuple[str, int, Any] | None
    ) -> bool:
        """:meth:`label`, ``seen`` being the prediction's (model, version, output) or None."""
        with self._lock:
            if seen is None:
                self.pending.pop(pid, None)
                self.pending[pid] = (when, outcome)
                while len(self.pending) > self.recent.keep:
                    self.pending.pop(next(iter(self.pending)))
                return False
            name, version, predicted = seen
            correct = str(predicted) == str(outcome)
            before = self.labels.pop(pid, None)
            if before is not None:  # the earlier label no longer counts
                b_name, b_version, b_second, b_correct = before
                counts = self.counts_of(b_name, b_version)
                counts[0] -= b_correct
                counts[1] -= 1
                cell = self.cells.get((b_name, b_version, b_second))
                if cell is not None:
                    cell.correct -= b_correct
                    cell.labelled -= 1
            second = int(when)
            self.labels[pid] = (name, version, second, correct)
            while len(self.labels) > 2 * self.recent.keep:  # as long as predictions are kept
                self.labels.pop(next(iter(self.labels)))
            counts = self.counts_of(name, version)
            counts[0] += correct
            counts[1] += 1
            cell = self._cell(name, version, second)
            cell.correct += correct
            cell.labelled += 1
            return True

    # -- the journal ----------------------------------------------------------------------------
    def answered(self, name: str, version: int, when: float, requests: list[Any]) -> None:
        """Count this replica's answered requests, ``(rows, latency_ms)`` each, as their records
        (written at ``when``) would be when read back; :meth:`refresh` never reads them."""
        with self._lock:
            cell = self._cell(name, version, int(when))
            for rows, latency_ms in requests:
                cell.rows += rows
                cell.add_latency(latency_ms, rows)

    def refresh(self, now: float) -> None:
        """Fold in what every replica appended (or shipped) since the last call; this replica's
        own predictions are counted as they are written (:meth:`answered`), not read here.

        Record by record as the lines are read, so a replica replaying a long journal at start
        holds one record at a time, not the journal; of a prediction record only the fields
        the fold reads are decoded (:class:`_Prediction`). Feedback is read first (its records
        are small): the predictions it names are kept aside as they pass, so a label counts
        even when its prediction has since left :class:`RecentPredictions` (its last ``keep``
        to ``2 * keep`` ids)."""
        own = self.own()
        feedback: list[tuple[str, Any, float]] = []

        def label(name: str, r: dict[str, Any]) -> None:
            pid, when = r.get("id"), r.get("time")
            if name not in own and isinstance(pid, str) and isinstance(when, int | float):
                feedback.append((pid, r.get("outcome"), when))

        self.followers["feedback"].follow(label)
        with self._lock:
            wanted = {pid for pid, _, _ in feedback}.union(self.pending)
        seen: dict[str, tuple[str, int, Any]] = {}
        oldest = int(now - self.horizon_s)  # a cell older than this is dropped below: not made
        fresh = False

        def predicted(name: str, r: Any) -> None:
            nonlocal fresh
            model, version, when, ids = r.model, r.version, r.time, r.ids
            if not isinstance(model, str) or not isinstance(version, int):
                return
            # a request's record stands for its rows (pipeflow.store.journal), counted
            # without unpacking them
            n = len(ids) if isinstance(ids, list) else 1
            if isinstance(when, int | float) and int(when) >= oldest:
                with self._lock:
                    cell = self._cell(model, version, int(when))
                    cell.rows += n
                    cell.add_latency(r.latency_ms, n)
            if name in own:
                return
            if isinstance(ids, list):
                out = r.output
                outputs = out if isinstance(out, list) and len(out) == n else [None] * n
            elif isinstance(r.id, str):
                ids, outputs = [r.id], [r.output]
            else:
                return
            fresh = True
            self.recent.add(model, version, ids, outputs)
            if wanted and not wanted.isdisjoint(ids):
                for pid, output in zip(ids, outputs, strict=True):
                    if pid in wanted:
                        seen[pid] = (model, version, output)

        self.followers["predictions"].follow(predicted, skip=self.own, decode=_PREDICTION)

        def failed(_: str, r: dict[str, Any]) -> None:
            model, version, when = r.get("model"), r.get("version"), r.get("time")
            if r.get("event") != "model_error" or not isinstance(version, int):
                return
            if isinstance(model, str) and isinstance(when, int | float) and int(when) >= oldest:
                rows = r.get("rows")
                with self._lock:
                    self._cell(model, version, int(when)).errors += (
                        rows if isinstance(rows, int) and rows > 0 else 1
                    )

        self.followers["events"].follow(failed)
        with self._lock:
            waiting = list(self.pending.items()) if fresh else []
            for pid, outcome, when in feedback:
                self._label(pid, outcome, when, seen.get(pid) or self.recent.get(pid))
            for pid, (when, outcome) in waiting:
                found = seen.get(pid) or self.recent.get(pid)
                if found is not None:
                    self.pending.pop(pid, None)
                    self._label(pid, outcome, when, found)
            for key in [k for k in self.cells if k[2] < oldest]:
                del self.cells[key]

    def window(self, name: str, version: int, start: float, end: float) -> dict[str, Any]:
        """The fleet's measurements of one version from ``start`` to ``end``: rows answered
        (``requests``) and failed, ``error_rate``, ``p95_ms`` (of the answered rows' request
        latencies), ``labelled`` and ``accuracy`` (of the feedback received in the window)."""
        rows = errors = correct = labelled = 0
        latency: dict[int, int] = {}
        with self._lock:
            for (m, v, second), cell in self.cells.items():
                if m != name or v != version or not int(start) <= second < end:
                    continue
                rows += cell.rows
                errors += cell.errors
                correct += cell.correct
                labelled += cell.labelled
                for key, n in cell.latency.items():
                    latency[key] = latency.get(key, 0) + n
        failed_share = errors / (rows + errors) if rows + errors else 0.0
        return {
            "requests": rows + errors,
            "answered": rows,
            "errors": errors,
            "error_rate": round(failed_share, 4),
            "p95_ms": _quantile(latency, 0.95),
            "labelled": labelled,
            "accuracy": round(correct / labelled, 4) if labelled else None,
        }

    def accuracies(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(model, version) -> (correct, labelled) over the fleet, for the gauges."""
        with self._lock:
            return {k: (c[0], c[1]) for k, c in self.counts.items() if c[1]}
