"""Where monitoring results and alerts are kept, and how they are read back (dashboard, triggers).

Every function takes the store as ``store_root``: a local store's folder (a path), or an open
:class:`~pipeflow.store.artifacts.ArtifactStore` (local or remote). Layout under the root
(``<store>/monitoring/``)::

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

On a remote store, reports and the alert state are whole files written to the store itself (a PUT
is atomic); the alert journal is appended in this machine's spool and shipped at once to
``<store>/journal/monitoring/alerts/`` (:mod:`pipeflow.store.shipping`), and read back as the
union of every machine's alerts. The alert state is read, changed and written back: two passes
racing on it may each send an alert once (the cooldown is advisory, not a lock).

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

from pipeflow.errors import StoreError
from pipeflow.store import layout
from pipeflow.store.journal import AuditLog, read
from pipeflow.store.layout import monitoring_dir
from pipeflow.store.shipping import append_and_ship, open_journal

Root = Any  # str | os.PathLike[str] | ArtifactStore


def _remote(store_root: Root) -> Any:
    """The store, when ``store_root`` is an open remote store; else None."""
    is_store = hasattr(store_root, "fs") and hasattr(store_root, "is_local")
    return store_root if is_store and not store_root.is_local else None


def _local(store_root: Root) -> Path:
    return Path(store_root.root) if hasattr(store_root, "fs") else Path(store_root)


def _remote_call(store: Any, what: str, path: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(path, *args)
    except FileNotFoundError:
        raise
    except Exception as err:  # fsspec backends raise their own types
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise StoreError(f"cannot {what} {path}: {reason}") from None


def _remote_names(store: Any, rel: str) -> list[str]:
    path = store.path(rel)
    try:
        store.fs.invalidate_cache(path)
        found = _remote_call(store, "list", path, store.fs.ls, False)
    except FileNotFoundError:
        return []
    return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)


def save_report(store_root: Root, report: dict[str, Any]) -> Path | str:
    """Write a report atomically (temp file + rename; one PUT remote); returns its path."""
    end = report.get("window", {}).get("end") or time.time()
    name = f"{end:017.6f}-{secrets.token_hex(3)}.json"
    data = json.dumps(report, default=str, allow_nan=False)
    store = _remote(store_root)
    if store is not None:
        path = store.path(f"{layout.MONITORING}/{report['model']}/reports/{name}")
        _remote_call(store, "write", path, store.fs.pipe_file, data.encode())
        return path
    folder = _local(store_root) / layout.MONITORING / report["model"] / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data)
    os.replace(tmp, path)
    return path


def load_reports(
    store_root: Root,
    model: str,
    *,
    since: float | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Reports of ``model``, oldest first (by window end)."""
    store = _remote(store_root)
    rel = f"{layout.MONITORING}/{model}/reports"
    if store is not None:
        names = [n for n in _remote_names(store, rel) if n.endswith(".json")]
    else:
        folder = _local(store_root) / rel
        names = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
    kept = []
    for name in names:
        try:
            end = float(name.split("-", 1)[0])
        except ValueError:
            continue
        if since is None or end >= since:
            kept.append(name)
    out = []
    for name in kept[-limit:] if limit else kept:  # only the reports returned are read
        try:
            if store is not None:
                path = store.path(f"{rel}/{name}")
                raw = _remote_call(store, "read", path, store.fs.cat_file)
            else:
                raw = (_local(store_root) / rel / name).read_bytes()
            out.append(json.loads(raw))
        except (FileNotFoundError, ValueError):
            continue  # a report being replaced; the next read sees it
    return out


def monitored_models(store_root: Root) -> list[str]:
    store = _remote(store_root)
    if store is not None:
        names = _remote_names(store, layout.MONITORING)
        return [n for n in names if _remote_names(store, f"{layout.MONITORING}/{n}/reports")]
    root = _local(store_root) / layout.MONITORING
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "reports").is_dir())


def alert_log(store_root: str | os.PathLike[str]) -> AuditLog:
    """The alert journal of a local store, for appending."""
    return AuditLog(monitoring_dir(store_root), "alerts")


def record_alerts(store_root: Root, alerts: list[dict[str, Any]]) -> None:
    """Append fired alerts to the journal (shipped at once from a remote store's spool)."""
    store = _remote(store_root)
    if store is None:
        audit_log = alert_log(_local(store_root))
        try:
            audit_log.append(alerts)
        finally:
            audit_log.close()
    else:
        append_and_ship(store, layout.MONITORING, "alerts", alerts)


def load_alerts(store_root: Root, *, model: str | None = None) -> list[dict[str, Any]]:
    """Fired alerts, oldest first (of every machine, on a remote store)."""
    store = _remote(store_root)
    where = (
        open_journal(store, layout.MONITORING)
        if store is not None
        else monitoring_dir(_local(store_root))
    )
    alerts = [a for a in read(where, "alerts") if model is None or a.get("model") == model]
    return sorted(alerts, key=lambda a: a.get("time", 0))


def read_state(store_root: Root) -> dict[str, float]:
    """The last firing time of each alert key (``monitoring/alerts/state.json``)."""
    store = _remote(store_root)
    try:
        if store is not None:
            path = store.path(f"{layout.MONITORING}/alerts/state.json")
            raw = _remote_call(store, "read", path, store.fs.cat_file)
        else:
            raw = (monitoring_dir(_local(store_root)) / "alerts" / "state.json").read_bytes()
        return {str(k): float(v) for k, v in json.loads(raw).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_state(store_root: Root, state: dict[str, float]) -> None:
    data = json.dumps(state)
    store = _remote(store_root)
    if store is not None:
        path = store.path(f"{layout.MONITORING}/alerts/state.json")
        _remote_call(store, "write", path, store.fs.pipe_file, data.encode())
        return
    path = monitoring_dir(_local(store_root)) / "alerts" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".state-{secrets.token_hex(3)}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)
