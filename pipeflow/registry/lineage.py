"""Lineage of a model version: version -> run -> stages -> input datasets -> sources.

The version record names the run and the stage that registered it; the run's metadata (SQLite or PostgreSQL)
holds the lineage edges (which output of which stage fed which input, by content digest) and each
stage's config. Walking the edges upstream from the registering stage gives the stages that made
the model; the stages with no inputs are its sources (an ``ingest`` stage's dataset version is its
source content fingerprint, see ``pipeflow data list``). Two versions *share data* when any of
their source outputs or their training tables have the same content digest.
"""

from __future__ import annotations

import json
from typing import Any

from pipeflow.registry import Registry


def model_lineage(db: Any, registry: Registry, record: dict[str, Any]) -> dict[str, Any]:
    """The lineage of one version record (see the module docstring)."""
    run = record.get("run") or {}
    out: dict[str, Any] = {
        "model": f"{record['name']}@{record['version']}",
        "model_digest": (record.get("model") or {}).get("digest"),
        "run_id": run.get("run_id"),
        "pipeline": run.get("pipeline"),
        "stage": run.get("stage"),
        "training_table": (record.get("data") or {}).get("train"),
        "evaluation_table": (record.get("data") or {}).get("evaluation"),
        "stages": [],
        "sources": [],
        "shared_with": [],
    }
    imported = record.get("imported")
    if isinstance(imported, dict):  # pipeflow models import: no run of pipeflow's made it
        out["imported"] = imported
        run_id = f" (MLflow run {imported['run_id']})" if imported.get("run_id") else ""
        out["note"] = f"imported from {imported.get('from')}{run_id}, not made by a pipeflow run"
        return out
    walked = _walk(db, run.get("run_id"), run.get("stage"))
    if walked is None:
        if db is None:
            out["note"] = (
                "no metadata database was found (pass --spec or --db): "
                "only what the version record holds is shown"
            )
        else:
            out["note"] = (
                f"run {run.get('run_id')} is not in the metadata database {getattr(db, 'path', '')}: "
                "only what the version record holds is shown"
            )
        return out
    out["stages"], out["sources"] = walked
    mine = _data_digests(out)
    for name in registry.models():
        for other in registry.versions(name):
            if other["name"] == record["name"] and other["version"] == record["version"]:
                continue
            other_run = other.get("run") or {}
            theirs = {(other.get("data") or {}).get("train")}
            other_walk = _walk(db, other_run.get("run_id"), other_run.get("stage"))
            if other_walk is not None:
                theirs |= {s["digest"] for s in other_walk[1]}
            common = (mine & theirs) - {None}
            if common:
                out["shared_with"].append(
                    {"model": f"{other['name']}@{other['version']}", "digests": sorted(common)}
                )
    return out


def _data_digests(lineage: dict[str, Any]) -> set[str | None]:
    return {lineage.get("training_table")} | {s["digest"] for s in lineage["sources"]}


def _walk(
    db: Any, run_id: str | None, stage: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    if not run_id or not stage or db is None or db.find_run(run_id) is None:
        return None
    edges = db.lineage(run_id)
    rows = {r["stage"]: r for r in db.stage_runs(run_id)}
    feeds: dict[str, list[Any]] = {}
    for e in edges:
        feeds.setdefault(e["dst_stage"], []).append(e)
    seen, frontier = {stage}, [stage]
    produced: dict[str, set[str]] = {}
    while frontier:
        current = frontier.pop()
        for e in feeds.get(current, []):
            produced.setdefault(e["src_stage"], set()).add(e["digest"])
            if e["src_stage"] not in seen:
                seen.add(e["src_stage"])
                frontier.append(e["src_stage"])
    order = {name: i for i, name in enumerate(rows)}  # stage_runs come in DAG order
    stages, sources = [], []
    for name in sorted(seen, key=lambda n: order.get(n, 1 << 30)):
        row = rows.get(name)
        entry = {
            "stage": name,
            "type": row["type"] if row else None,
            "state": row["state"] if row else None,
            "inputs": sorted({e["src_stage"] for e in feeds.get(name, [])}),
            "outputs": sorted(produced.get(name, set())),
        }
        stages.append(entry)
        if not feeds.get(name) and name != stage:
            config = json.loads(row["config"]) if row and row["config"] else {}
            for digest in entry["outputs"] or [None]:
                sources.append(
                    {
                        "stage": name,
                        "type": entry["type"],
                        "source": _source(entry["type"], config),
                        "fingerprint": row["code_digest"] if row else None,
                        "digest": digest,
                    }
                )
    return stages, sources


def _source(type_: str | None, config: dict[str, Any]) -> str:
    """Where a source stage's data came from, in words."""
    if "path" in config:
        return str(config["path"])
    if "function" in config:
        kwargs = config.get("kwargs") or {}
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))
        return f"{config['function']}({args})"
    if "query" in config:
        return "query: " + " ".join(str(config["query"]).split())[:120]
    return type_ or "unknown"
