"""What one server process is told: :class:`ServeConfig`.

A plain dataclass, JSON-serialisable on purpose: ``pipeflow serve --workers N`` cannot hand a
Python object to the worker processes uvicorn starts, so it writes the config to
``$PIPEFLOW_SERVE_CONFIG`` and each worker rebuilds it (``pipeflow.serving.app:app_from_env``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ServeConfig:
    """Everything a server process needs; JSON-serialisable (``--workers`` passes it by env)."""

    store_url: str
    model: str
    which: str | None = "production"
    storage_options: dict[str, Any] = field(default_factory=dict)
    canary: str | None = None  # NAME@VERSION
    canary_weight: float = 0.1
    max_error_rate: float = 0.05
    max_p95_ms: float | None = None
    min_accuracy: float | None = None
    min_requests: int = 20
    audit_dir: str | None = None
    audit_sync: bool = False
    ship_interval_s: float = 10.0  # a remote store: seconds between shipping audit segments
    tokens: dict[str, list[str]] | None = None  # token -> scopes
    reload_interval_s: float = 2.0
    reject_unusual: bool = False
    max_body_bytes: int = 5_000_000
    max_rows: int = 10_000
    batch_wait_ms: float = 5.0  # the longest a batch waits for requests still arriving
    drain_s: float = 0.0  # after SIGTERM: not ready, still answering, for this long (drain.py)
    guard: dict[str, Any] | None = None  # the alias's guard (pipeflow.serving.guard.GuardConfig)
    # A/B and progressive delivery (pipeflow.serving.rollout, pipeflow.serving.shadow)
    route_by: str | None = None  # "header:x-user" or "field:NAME": sticky canary assignment
    ramp: list[float] | None = None  # the canary's weights, step by step (shares, rising)
    ramp_every_s: float = 300.0  # the least time a step lasts
    ramp_min_requests: int | None = None  # canary rows over the fleet per step (None: min_requests)
    ramp_gates: list[str] = field(default_factory=list)  # "accuracy>=0.9": the promotion's gates
    shadow: str | None = None  # NAME@VERSION scored off the answer path
    shadow_queue: int = 1000  # requests waiting for the shadow; beyond it they are dropped

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
