"""What a stage logs while it runs: metrics (with steps) and params, MLflow-style.

``ctx.log_metric("loss", 0.42, step=3)`` and ``ctx.log_param("optimizer", "adam")`` (see
:class:`~pipeflow.core.stage.StageContext`) file the value in the stage's :class:`Tracker`, in
memory. Nothing is written where the stage runs: a stage may run on a Dask worker on another
machine that shares only the artifact store, and only the client process writes run metadata.
What was logged travels back with the stage's result (``StageResult.metrics`` /
``logged_params``), goes into the stage's cache manifest, and is recorded by the client with the
stage (:mod:`pipeflow.runner.recorder`).

Policy:

- **steps**: ``step`` defaults to one more than the metric's last step in this stage (0 first),
  so ``log_metric("loss", v)`` in a loop records a history, and a single call records step 0.
  A value logged again at the same step replaces the earlier one. The metric's *value* in a run
  (what ``runs list --where`` compares and a chart across runs draws) is the one at its highest
  step.
- **names** are what ``--where`` can name: letters, digits, ``_ - . /`` and spaces (a name with a
  space is written in backquotes there), at most 250 characters.
- **values**: a metric is a finite number (NaN and infinities are refused, with the metric's name:
  the two databases store them differently, and a comparison with NaN means nothing); a param is
  kept as text (``str(value)``; a dict or list as JSON), at most 6000 characters. Logging a param
  twice with different values is an error, as in MLflow.
- **attempts**: each attempt of a retried stage starts with an empty tracker; what the last
  attempt logged is kept, whether it succeeded or failed (a diverging loss is worth seeing).
- **cached stages**: a stage reused from the store did not run, so it logs nothing; the run that
  reuses it records the metrics and params logged when it ran (kept in its manifest), marked as
  coming from that run (``from_run``), so a reused model's accuracy is still the run's accuracy.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["NAME", "Metric", "Tracker", "check_name"]

#: what a metric, param or tag name may be (``--where`` names them)
NAME = re.compile(r"[A-Za-z0-9_\-./ ]{1,250}")
MAX_PARAM = 6000


@dataclass(frozen=True)
class Metric:
    """One logged value: ``name`` at ``step``, logged at ``time`` (seconds since the epoch)."""

    name: str
    step: int
    value: float
    time: float

    def to_list(self) -> list[Any]:
        return [self.name, self.step, self.value, self.time]

    @classmethod
    def from_list(cls, item: Any) -> Metric:
        name, step, value, at = item
        return cls(str(name), int(step), float(value), float(at))


def check_name(name: Any, what: str) -> str:
    """``name`` if it may name a metric / param / tag, else a ValueError saying what is allowed."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name != name.strip():
        raise ValueError(
            f"{what} name {name!r} is not allowed: use 1 to 250 letters, digits, '_', '-', '.', '/' "
            "or inner spaces"
        )
    return name


class Tracker:
    """The metrics and params one attempt of one stage logged (thread-safe; see the module
    docstring). Picklable: a copy sent to another process logs into that copy only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[tuple[str, int], Metric] = {}
        self._next_step: dict[str, int] = {}
        self._params: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {
                "metrics": dict(self._metrics),
                "next": dict(self._next_step),
                "params": dict(self._params),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._metrics, self._next_step, self._params = (
            state["metrics"],
            state["next"],
            state["params"],
        )

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        check_name(name, "metric")
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise ValueError(f"metric {name!r}: value {value!r} is not a number")
        if not isinstance(value, int | float):
            try:  # numpy scalars and 0-d arrays
                value = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"metric {name!r}: value {value!r} is not a number") from None
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r}: value {value} is not a finite number")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            try:
                step = int(step) if float(step) == int(step) else None  # numpy integers
            except (TypeError, ValueError, OverflowError):
                step = None
            if step is None:
                raise ValueError(f"metric {name!r}: step must be a whole number")
        with self._lock:
            at = self._next_step.get(name, 0) if step is None else step
            if not -(2**63) <= at < 2**63:
                raise ValueError(f"metric {name!r}: step {at} is out of range")
            self._metrics[(name, at)] = Metric(name, at, value, time.time())
            self._next_step[name] = max(self._next_step.get(name, 0), at + 1)

    def log_param(self, name: str, value: Any) -> None:
        check_name(name, "param")
        text = value if isinstance(value, str) else _text(value)
        if len(text) > MAX_PARAM:
            raise ValueError(
                f"param {name!r}: value is {len(text)} characters, more than {MAX_PARAM}"
            )
        with self._lock:
            known = self._params.get(name)
            if known is not None and known != text:
                raise ValueError(
                    f"param {name!r} was already logged as {known!r}; params are logged once "
                    f"(log {text!r} under another name, or as a metric)"
                )
            self._params[name] = text

    def metrics(self) -> list[Metric]:
        """Every logged value, by name then step."""
        with self._lock:
            return sorted(self._metrics.values(), key=lambda m: (m.name, m.step))

    def params(self) -> dict[str, str]:
        with self._lock:
            return dict(self._params)


def _text(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def to_manifest(metrics: list[Metric], params: dict[str, str]) -> dict[str, Any]:
    """What a stage logged, as its cache manifest keeps it (nothing when it logged nothing, so
    the manifests of stages that log nothing are as before)."""
    out: dict[str, Any] = {}
    if metrics:
        out["metrics"] = [m.to_list() for m in metrics]
    if params:
        out["params"] = dict(params)
    return out


def from_manifest(manifest: dict[str, Any]) -> tuple[list[Metric], dict[str, str]]:
    """What a cached stage logged when it ran, from its manifest. Entries that do not parse are
    left out: the outputs are what the cache vouches for, the log is extra."""
    metrics = []
    for item in manifest.get("metrics") or ():
        try:
            metrics.append(Metric.from_list(item))
        except (TypeError, ValueError):
            continue
    raw = manifest.get("params")
    params = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return metrics, params
