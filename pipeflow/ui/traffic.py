"""Live traffic for the dashboard, from the serving audit log.

The traffic page refreshes every 5 s and the audit log
only grows (one append-only file per writer process, see :mod:`pipeflow.store.journal`). A
:class:`TrafficIndex` remembers how far it has read each segment, by name
(:class:`pipeflow.store.journal.Follower`), and folds only the new whole lines. A shipped segment (a remote store, :mod:`pipeflow.store.shipping`) never changes:
it is downloaded once, from where a local spool copy of it was read up to, and then only its
name is listed again. Lines are folded into cells keyed by (model, version, time bucket). A cell
keeps counts and a log-bucketed latency histogram (quantiles within 1 %), not the latencies, so memory grows with the number of time
buckets, never with the number of predictions, and no record is held after it is counted. Like
:func:`pipeflow.store.journal.read`, a line without its newline (a torn or unfinished write) is
not counted; it is read again once whole.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from pipeflow.store import journal as audit


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


GAMMA = 1.02  # latency histogram bins grow by 2 %: a quantile is within 1 % of the true one
_LOG_GAMMA = math.log(GAMMA)


class Cell:
    """Predictions of one model version in one time bucket: counts and a latency histogram."""

    __slots__ = ("flagged", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.flagged = 0
        self.latency: dict[int, int] = {}

    def add(self, latency_ms: float | None, flagged: int, rows: int = 1) -> None:
        """Count ``rows`` predictions (a request's share its latency), ``flagged`` of them
        flagged."""
        self.requests += rows
        self.flagged += flagged
        if latency_ms is not None and latency_ms >= 0:
            key = math.ceil(math.log(max(latency_ms, 1e-3)) / _LOG_GAMMA)
            self.latency[key] = self.latency.get(key, 0) + rows

    def merge(self, other: Cell) -> None:
        self.requests += other.requests
        self.flagged += other.flagged
        for key, n in other.latency.items():
            self.latency[key] = self.latency.get(key, 0) + n

    def quantile(self, q: float) -> float | None:
        total = sum(self.latency.values())
        if not total:
            return None
        rank, seen = q * (total - 1), 0
        for key in sorted(self.latency):
            seen += self.latency[key]
            if seen > rank:
                return round(2 * GAMMA**key / (GAMMA + 1), 3)
        return None  # not reached


class TrafficIndex:
    """The prediction audit log folded into cells of ``bucket_s`` seconds, read incrementally
    (see the module docstring)."""

    def __init__(self, where: Any, bucket_s: int):
        """``where``: a local audit folder or a :class:`pipeflow.store.shipping.Journal`."""
        self.where, self.bucket_s = where, int(bucket_s)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.follower = audit.Follower(self.where, "predictions")
        self.cells: dict[tuple[str, int, int], Cell] = {}
        self.roles: dict[tuple[str, int], set[str]] = {}

    def refresh(self) -> None:
        """Fold in the whole lines appended (or shipped) since the last call."""
        segments = audit.segments(self.where, "predictions")
        for segment in segments:
            if segment.path is None:
                continue
            try:
                size = segment.path.stat().st_size
            except OSError:
                continue
            if size < self.follower.offsets.get(segment.name, 0):  # rewritten behind our back
                self._reset()
                break
        self.follower.follow(lambda _name, record: self._add(record), segments)

    def _add(self, r: dict[str, Any]) -> None:
        when, version, model = finite_number(r.get("time")), r.get("version"), r.get("model")
        if when is None or not isinstance(model, str) or not isinstance(version, int):
            return
        bucket = int(when // self.bucket_s) * self.bucket_s
        cell = self.cells.get((model, version, bucket))
        if cell is None:
            cell = self.cells[(model, version, bucket)] = Cell()
        if audit.is_request(r):  # a request's record: its rows, and how many were flagged
            flags = r.get("flags")
            flagged = sum(1 for f in flags if f) if isinstance(flags, list) else 0
            cell.add(finite_number(r.get("latency_ms")), flagged, audit.row_count(r))
        else:
            cell.add(finite_number(r.get("latency_ms")), int(bool(r.get("flags"))))
        role = r.get("role")
        if isinstance(role, str):
            self.roles.setdefault((model, version), set()).add(role)

    def totals(self) -> dict[str, Any]:
        with self._lock:
            self.refresh()
            return {
                "requests": sum(c.requests for c in self.cells.values()),
                "flagged": sum(c.flagged for c in self.cells.values()),
                "last": max((k[2] for k in self.cells), default=None),
            }

    def query(self, model: str | None, buckets: int) -> dict[str, Any]:
        """Per version: one point per bucket of the last ``buckets`` (ending at the newest bucket
        with traffic, starting no earlier than the first; empty buckets have 0 requests and no
        latency), and all-time totals."""
        with self._lock:
            self.refresh()
            return self._query(model, buckets)

    def _query(self, model: str | None, buckets: int) -> dict[str, Any]:
        models = sorted({k[0] for k in self.cells})
        mine = {k: c for k, c in self.cells.items() if model is None or k[0] == model}
        if not mine:
            return {"models": models, "series": [], "versions": [], "start": None, "end": None}
        step = self.bucket_s
        end = max(k[2] for k in mine)
        start = max(end - (buckets - 1) * step, min(k[2] for k in mine))
        grouped: dict[tuple[str, int], dict[int, Cell]] = {}
        for (m, v, t), cell in mine.items():
            grouped.setdefault((m, v), {})[t] = cell
        series, versions = [], []
        for (m, v), cells in sorted(grouped.items()):
            total = Cell()
            for cell in cells.values():
                total.merge(cell)
            roles = sorted(self.roles.get((m, v), ()))
            label = f"{m} v{v}" if model is None else f"v{v}"
            versions.append(
                {
                    "model": m,
                    "version": v,
                    "label": label,
                    "roles": roles,
                    "requests": total.requests,
                    "flagged": total.flagged,
                    "p50_ms": total.quantile(0.5),
                    "p95_ms": total.quantile(0.95),
                    "first": min(cells),
                    "last": max(cells),
                }
            )
            points = []
            for t in range(start, end + step, step):
                cell = cells.get(t)
                points.append(
                    {
                        "t": t,
                        "requests": cell.requests if cell else 0,
                        "flagged": cell.flagged if cell else 0,
                        "p50_ms": cell.quantile(0.5) if cell else None,
                        "p95_ms": cell.quantile(0.95) if cell else None,
                    }
                )
            if any(p["requests"] for p in points):
                series.append(
                    {"model": m, "version": v, "label": label, "roles": roles, "points": points}
                )
        return {
            "models": models,
            "series": series,
            "versions": versions,
            "start": start,
            "end": end + step,
        }
