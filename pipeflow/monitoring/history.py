"""Where monitoring results and alerts are kept, and how they are read back (dashboard, triggers).

Layout under a local store root (``<store>/monitoring/``)::

    monitoring/<model>/reports/<end-time>-<token>.json   one drift report per monitored window
    monitoring/alerts/<host>-<pid>-<token>.jsonl         fired alerts (append-only, see audit.py)
    monitoring/alerts/state.json                          last firing time per alert key (cooldown)

A report (written by :func:`pipeflow.monitoring.monitor.monitor`) is a JSON object::

    {"model": "claims-categoriser", "version": 2, "alias": "production",
     "created": 1764090000.0, "window": {"start": t0, "end": t1, "seconds": 3600},
     "rows": 10000, "drift_share": 0.25, "drifted": true,
     "features": {"amount": {"role": "numeric", "psi": 0.31, "ks": 0.18, "drifted": true, "missing_rate": 0.0},
                  "region": {"role": "categorical", "psi": 0.02, "chi2": 3.1, "p_value": 0.54, "unseen_rate": 0.0, "drifted": false},
                  "description": {"role": "text", "length_psi": 0.05, "vocabulary_js": 0.12, "oov_rate": 0.08, "drifted": false}},
     "prediction": {"psi": 0.12, "distribution": {"fire": 0.3, ...}, "reference": {"fire": 0.27, ...}},
     "accuracy": {"labelled": 800, "accuracy": 0.91},
     "latency_ms": {"p50": 2.1, "p95": 4.0, "p99": 7.5}, "flagged_rate": 0.01,
     "errors": {"model_errors": 3, "error_rate": 0.0003},
     "alerts": [ ...alerts fired by this report... ]}

An alert record: ``{"id", "time", "key", "rule", "metric", "value", "op", "threshold",
"severity", "model", "version", "message", "sinks": ["log", "file", "webhook"]}``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pipeflow.store.journal import AuditLog, read
from pipeflow.store.layout import monitoring_dir


def save_report(store_root: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write a report atomically (temp file + rename); returns its path."""
    folder = monitoring_dir(store_root) / report["model"] / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    end = report.get("window", {}).get("end") or time.time()
    path = folder / f"{end:017.6f}-{secrets.token_hex(3)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, default=str, allow_nan=False))
    os.replace(tmp, path)
    return path


def load_reports(
    store_root: str | os.PathLike[str],
    model: str,
    *,
    since: float | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Reports of ``model``, oldest first (by window end)."""
    folder = monitoring_dir(store_root) / model / "reports"
    if not folder.is_dir():
        return []
    paths = sorted(folder.glob("*.json"))
    out = []
    for path in paths:
        try:
            end = float(path.name.split("-", 1)[0])
        except ValueError:
            continue
        if since is not None and end < since:
            continue
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a report being replaced; the next read sees it
    return out[-limit:] if limit else out


def monitored_models(store_root: str | os.PathLike[str]) -> list[str]:
    root = monitoring_dir(store_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "reports").is_dir())


def alert_log(store_root: str | os.PathLike[str]) -> AuditLog:
    return AuditLog(monitoring_dir(store_root), "alerts")


def load_alerts(
    store_root: str | os.PathLike[str], *, model: str | None = None
) -> list[dict[str, Any]]:
    """Fired alerts, oldest first."""
    alerts = [
        a
        for a in read(monitoring_dir(store_root), "alerts")
        if model is None or a.get("model") == model
    ]
    return sorted(alerts, key=lambda a: a.get("time", 0))
