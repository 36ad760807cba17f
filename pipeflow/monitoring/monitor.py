"""One monitoring pass: a window of audited predictions against the model version's reference.

Reads the window from the serving audit log (a local folder, or the union of every replica's
shipped segments and this machine's spool: :class:`pipeflow.store.shipping.Journal`) with
pyarrow's JSON reader (multi-threaded C++, so a
million audited predictions load in about a second rather than the many seconds of ``json.loads``
per line), keeps the rows of the model (and, unless ``all_versions``, of the version the alias
holds now), then measures feature drift (:mod:`pipeflow.monitoring.drift`, the drift engine's
rule: a :class:`~pipeflow.monitoring.engine.DriftPolicy`), the drift of the predictions and of the
outcomes reported as feedback against the training target (prior shift), live accuracy from
feedback, latency, the share of flagged inputs, and what the version declared at promotion: bias
across its sensitive attribute and its business metrics (:mod:`pipeflow.monitoring.kpis`). The
report is saved to the store's monitoring history, and alert rules are evaluated on it.
"""

from __future__ import annotations

import time
from typing import Any

from pipeflow.errors import UsageError


def audit_schema(record: dict[str, Any], *, requests: bool = False) -> Any:
    """The Arrow schema of audit records for a version's signature: parsing against it skips
    type inference and the columns monitoring does not read (about twice as fast). With
    ``requests``: of a served request's records (:mod:`pipeflow.store.journal`), each column a
    list of its rows' values."""
    import pyarrow as pa

    from pipeflow.registry.signature import Signature

    types = {"number": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}
    signature = Signature.from_record(record)
    output = pa.string() if signature.classes else pa.float64()
    if requests:
        inputs = pa.struct([(f.name, pa.list_(types[f.expect])) for f in signature.features])
        return pa.schema(
            [
                ("ids", pa.list_(pa.string())),
                ("time", pa.float64()),
                ("model", pa.string()),
                ("version", pa.int64()),
                ("inputs", inputs),
                ("output", pa.list_(output)),
                ("flags", pa.list_(pa.list_(pa.string()))),
                ("latency_ms", pa.float64()),
            ]
        )
    inputs = pa.struct([(f.name, types[f.expect]) for f in signature.features])
    return pa.schema(
        [
            ("id", pa.string()),
            ("time", pa.float64()),
            ("model", pa.string()),
            ("version", pa.int64()),
            ("inputs", inputs),
            ("output", output),
            ("flags", pa.list_(pa.string())),
            ("latency_ms", pa.float64()),
        ]
    )


def load_window(
    audit_dir: Any,
    model: str,
    start: float,
    end: float,
    version: int | None = None,
    *,
    schema: Any = None,
    request_schema: Any = None,
) -> tuple[Any, Any]:
    """(inputs DataFrame, meta DataFrame with id, time, version, output, latency_ms, flagged).

    A segment of request records (one per served request, :mod:`pipeflow.store.journal`) is read
    against ``request_schema`` and unpacked into rows in Arrow (no Python object per row); one of
    row records (written before) against ``schema``; either falls back to inferring the types,
    and then to parsing line by line."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeflow.store import journal as audit

    tables = []
    for segment in audit.segments(audit_dir, "predictions"):
        try:
            source = _source(segment)
        except FileNotFoundError:
            continue  # a spool file removed unshipped (it held nothing whole)
        requests = _holds_requests(source)
        try:
            table = _read_any(source, request_schema if requests else schema)
            if requests and table.num_rows:
                table = _in_window(table, model, start, end, version)
                if table.num_rows:  # none in the window: no columns to unpack, skipped below
                    table = _unpack(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError):
            # a torn tail, types pyarrow cannot unify, records of several formats
            rows = list(audit.parse(segment.lines()))
            if not rows:
                continue
            table = pa.Table.from_pylist(rows)
        if table.num_rows == 0 or "time" not in table.column_names:
            continue
        table = _in_window(table, model, start, end, version)
        if table.num_rows:
            if "flagged" not in table.column_names:
                flagged = (
                    pc.greater(pc.list_value_length(table["flags"]).fill_null(0), 0)
                    if "flags" in table.column_names and pa.types.is_list(table["flags"].type)
                    else pa.array([False] * table.num_rows)
                )
                table = table.append_column("flagged", flagged)
            keep = [
                c
                for c in ("id", "time", "version", "inputs", "output", "flagged", "latency_ms")
                if c in table.column_names
            ]
            tables.append(table.select(keep))
    if not tables:
        return pd.DataFrame(), pd.DataFrame(
            columns=["id", "time", "version", "output", "latency_ms", "flagged"]
        )
    table = pa.concat_tables(tables, promote_options="permissive")
    inputs = table["inputs"].combine_chunks()
    # Arrow-backed columns: no copy into Python string objects; value counts and string lengths
    # run in Arrow's C++ kernels
    frame = pa.Table.from_arrays(inputs.flatten(), names=[f.name for f in inputs.type]).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    meta = pd.DataFrame(
        {
            "id": table["id"].to_pylist(),
            "time": table["time"].to_numpy(),
            "version": table["version"].to_numpy(),
            "output": table["output"].to_pylist(),
            "latency_ms": table["latency_ms"].to_numpy()
            if "latency_ms" in table.column_names
            else None,
            "flagged": table["flagged"].fill_null(False).to_numpy(),
        }
    )
    return frame, meta


def _in_window(table: Any, model: str, start: float, end: float, version: int | None) -> Any:
    import pyarrow.compute as pc

    mask = pc.and_(
        pc.and_(pc.greater_equal(table["time"], start), pc.less(table["time"], end)),
        pc.equal(table["model"], model),
    )
    if version is not None:
        mask = pc.and_(mask, pc.equal(table["version"], version))
    return table.filter(mask)


def _unpack(table: Any) -> Any:
    """Request records as one row per prediction: the list columns flattened, the request's
    fields repeated. A list whose length is not its request's rows raises KeyError (the caller
    then parses line by line)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.combine_chunks()
    ids = table["ids"].chunk(0) if table.num_rows else pa.array([], pa.list_(pa.string()))
    counts = pc.list_value_length(ids).fill_null(0).to_numpy(zero_copy_only=False)
    total = int(counts.sum())
    parents = pc.list_parent_indices(ids)

    def flat(column: Any) -> Any:
        values = pc.list_flatten(column)
        if len(values) != total:
            raise KeyError("a column of another length than the request's rows")
        return values

    inputs = table["inputs"].chunk(0)
    fields = [inputs.type.field(i).name for i in range(inputs.type.num_fields)]
    unpacked_inputs = pa.StructArray.from_arrays(
        [flat(pc.struct_field(inputs, i)) for i in range(len(fields))], names=fields
    )
    flagged = np.zeros(total, dtype=bool)
    if "flags" in table.column_names:
        flags = table["flags"].chunk(0)
        valid = flags.is_valid().to_numpy(zero_copy_only=False)
        if valid.any():
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            inner = pc.list_flatten(flags.filter(pa.array(valid)))
            at = np.concatenate(
                [np.arange(s, s + k) for s, k in zip(starts[valid], counts[valid], strict=True)]
            )
            if len(at) != len(inner):
                raise KeyError("flags of another length than the request's rows")
            flagged[at] = pc.list_value_length(inner).fill_null(0).to_numpy() > 0
    columns = {
        "id": pc.list_flatten(ids),
        "time": table["time"].take(parents),
        "model": table["model"].take(parents),
        "version": table["version"].take(parents),
        "inputs": unpacked_inputs,
        "output": flat(table["output"]),
        "flagged": pa.array(flagged),
    }
    if "latency_ms" in table.column_names:
        columns["latency_ms"] = table["latency_ms"].take(parents)
    return pa.table(columns)


def _source(segment: Any) -> Any:
    """What pyarrow reads a segment from: a local file's path, else its bytes (fetched once)."""
    import pyarrow as pa

    if segment.path is not None:
        try:
            segment.path.stat()
            return str(segment.path)
        except FileNotFoundError:
            if segment.fetch is None:
                raise
    return pa.BufferReader(segment.read_bytes())


def _holds_requests(source: Any) -> bool:
    """Whether a segment holds request records (its first line has ``ids``)."""
    if isinstance(source, str):
        with open(source, "rb") as fh:
            first = fh.readline()
    else:
        first = source.read_buffer(65536).to_pybytes().split(b"\n", 1)[0]
        source.seek(0)
    return b'"ids":[' in first


def _read_any(source: Any, schema: Any) -> Any:
    """A segment as an Arrow table, against ``schema`` (None: types inferred); a schema the
    records do not fit falls back to inferring them."""
    import pyarrow as pa
    import pyarrow.json as pj

    if schema is not None:
        options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        try:
            return pj.read_json(source, parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if not isinstance(source, str):
                source.seek(0)
    return pj.read_json(source)


def monitor(
    registry: Any,
    name: str,
    which: str | int | None,
    *,
    audit_dir: Any,  # a local folder or a pipeflow.store.shipping.Journal
    store_root: Any,  # a local store folder or an open ArtifactStore (monitoring.history)
    window_s: float,
    end: float | None = None,
    all_versions: bool = False,
    rules: list[Any] | None = None,
    sinks: list[Any] | None = None,
    save: bool = True,
    policy: Any = None,  # a pipeflow.monitoring.engine.DriftPolicy (default: its defaults)
) -> dict[str, Any]:
    import numpy as np

    from pipeflow.monitoring.drift import (
        feature_drift,
        outcome_drift,
        prediction_drift,
        summary_report,
    )
    from pipeflow.monitoring.engine import DriftPolicy
    from pipeflow.monitoring.kpis import check_rules, feedback_by_id, live_kpis

    policy = policy or DriftPolicy()

    record = registry.resolve(name, which)
    check_rules(record, rules or [])
    reference = record.get("reference")
    if not reference:
        raise UsageError(
            f"{name}@{record['version']} has no reference profile (it was registered before "
            "pipeflow recorded one at training): retrain and promote it to monitor drift"
        )
    end = time.time() if end is None else end
    start = end - window_s
    started = time.perf_counter()
    inputs, meta = load_window(
        audit_dir,
        name,
        start,
        end,
        None if all_versions else int(record["version"]),
        schema=None if all_versions else audit_schema(record),
        request_schema=None if all_versions else audit_schema(record, requests=True),
    )
    loaded = time.perf_counter() - started
    features = feature_drift(reference, inputs, policy) if len(inputs) else {}
    table = summary_report(features, policy)
    feedback = feedback_by_id(audit_dir) if len(meta) else {}
    accuracy, outcomes = _accuracy(feedback, meta)
    report: dict[str, Any] = {
        "model": name,
        "version": int(record["version"]),
        "alias": which if isinstance(which, str) and not which.isdigit() else None,
        "created": time.time(),
        "window": {"start": start, "end": end, "seconds": window_s},
        "rows": int(len(meta)),
        **table,
        "prediction": prediction_drift(record, meta["output"].tolist(), policy)
        if len(meta)
        else None,
        "target": outcome_drift(record, outcomes, policy) if outcomes else None,
        "accuracy": accuracy,
        "latency_ms": _percentiles(meta["latency_ms"]) if len(meta) else None,
        "errors": _errors(
            audit_dir, name, start, end, len(meta), None if all_versions else int(record["version"])
        ),
        "flagged_rate": float(np.mean(meta["flagged"])) if len(meta) else None,
        # what the version declared at promotion: bias across its sensitive attribute, business
        **live_kpis(record, inputs, meta, feedback),
        "timing_s": {"load": loaded, "total": None},
    }
    report["timing_s"]["total"] = time.perf_counter() - started
    from pipeflow.monitoring.alerts import declared_rules

    rules = [*(rules or []), *declared_rules(report, rules or [])]
    if rules:
        from pipeflow.monitoring.alerts import evaluate

        report["alerts"] = evaluate(report, rules, sinks or [], store_root)
    else:
        report["alerts"] = []
    if save:
        from pipeflow.monitoring.history import save_report

        save_report(store_root, report)
    return report


def _accuracy(feedback: dict[Any, dict[str, Any]], meta: Any) -> tuple[dict[str, Any], list[Any]]:
    """Live accuracy from feedback (prediction id -> its latest feedback record), and the
    window's reported outcomes (for target drift)."""
    if not len(meta):
        return {"labelled": 0, "accuracy": None}, []
    outcomes = {pid: record.get("outcome") for pid, record in feedback.items()}
    if not outcomes:
        return {"labelled": 0, "accuracy": None}, []
    pairs = [
        (o, outcomes[i]) for i, o in zip(meta["id"], meta["output"], strict=True) if i in outcomes
    ]
    if not pairs:
        return {"labelled": 0, "accuracy": None}, []
    right = sum(str(a) == str(b) for a, b in pairs)
    return {"labelled": len(pairs), "accuracy": right / len(pairs)}, [b for _, b in pairs]


def _errors(
    audit_dir: Any, model: str, start: float, end: float, answered: int, version: int | None
) -> dict[str, Any]:
    """Requests the model failed on (the server's ``model_error`` events) in the window."""
    from pipeflow.store import journal as audit

    failed = sum(
        1
        for e in audit.read(audit_dir, "events")
        if e.get("event") == "model_error"
        and e.get("model") == model
        and (version is None or e.get("version") == version)
        and start <= e.get("time", 0) < end
    )
    total = answered + failed
    return {"model_errors": failed, "error_rate": failed / total if total else None}


def _percentiles(values: Any) -> dict[str, float] | None:
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return None
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def render_html(report: dict[str, Any]) -> bytes:
    """The drift report as a self-contained HTML page."""
    from pipeflow.monitoring.kpis import kpi_sections
    from pipeflow.reports import kpis, page, raw_json

    accuracy = (report.get("accuracy") or {}).get("accuracy")
    latency = report.get("latency_ms") or {}
    head = kpis(
        {
            "rows": report["rows"],
            "drift share": report.get("drift_share")
            if report.get("drift_share") is not None
            else "-",
            "live accuracy": accuracy if accuracy is not None else "-",
            "p95 latency ms": latency.get("p95", "-"),
            "flagged": report.get("flagged_rate")
            if report.get("flagged_rate") is not None
            else "-",
        }
    )
    sections = [
        f"<p>{report['model']}@{report['version']}, window of {report['window']['seconds']:g} s ending "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(report['window']['end']))} UTC</p>",
        head,
        *feature_sections(report),
    ]
    for key, title in (("prediction", "Predictions"), ("target", "Outcomes (feedback)")):
        part = report.get(key)
        if part:
            sections += [
                f"<h2>{title} against the {part.get('against', 'reference')}</h2>",
                f"<p>{'drifted' if part.get('drifted') else 'ok'}: {part.get('rule', '')}</p>",
            ]
    sections += kpi_sections(report)
    sections += alert_section(report)
    sections += ["<h2>Raw</h2>", raw_json(report)]
    return page(f"Drift report: {report['model']}@{report['version']}", sections)


def feature_sections(report: dict[str, Any]) -> list[str]:
    """The per-feature table and effect-size bars (shared with ``pipeflow drift``'s page)."""
    from pipeflow.reports import bars, table

    rows = []
    for name, f in sorted(report.get("features", {}).items()):
        effect = f.get("js") if f.get("kind") == "categorical" else f.get("wasserstein")
        rows.append(
            [
                name,
                f.get("kind") or f.get("role"),
                "drifted" if f.get("drifted") else "ok",
                f.get("test") or "-",
                f.get("statistic") if f.get("statistic") is not None else "-",
                f.get("p_value") if f.get("p_value") is not None else "-",
                effect if effect is not None else "-",
                f.get("psi", f.get("length_psi"))
                if f.get("psi", f.get("length_psi")) is not None
                else "-",
                f.get("missing_rate", "-"),
                f.get("rule") or f.get("note") or "-",
            ]
        )
    effects = {
        n: float(
            (f.get("js") if f.get("kind") == "categorical" else f.get("wasserstein"))
            or f.get("length_psi")
            or 0.0
        )
        for n, f in report.get("features", {}).items()
    }
    return [
        "<h2>Features</h2>",
        table(
            [
                "feature",
                "kind",
                "state",
                "test",
                "statistic",
                "p-value",
                "effect (Wasserstein/sd, JS)",
                "PSI",
                "missing",
                "rule",
            ],
            rows,
            left=4,
        ),
        "<h2>Effect size by feature</h2>",
        bars(effects, limit=max([0.2, *effects.values()])),
    ]


def alert_section(report: dict[str, Any]) -> list[str]:
    from pipeflow.reports import table

    alerts = [a for a in report.get("alerts") or [] if not a.get("suppressed")]
    return [
        "<h2>Alerts</h2>",
        table(
            ["severity", "rule", "message"],
            [[a["severity"], a["rule"], a["message"]] for a in alerts],
            left=3,
        )
        if alerts
        else "<p>none</p>",
    ]


def render_tables_html(report: dict[str, Any]) -> bytes:
    """A two-table drift report (``pipeflow drift``, the ``drift`` stage) as an HTML page."""
    from pipeflow.reports import kpis, page, raw_json

    share = report.get("drift_share")
    sections = [
        f"<p>{report.get('current', 'current')} against {report.get('reference', 'reference')}</p>",
        kpis(
            {
                "rows": report["rows"],
                "reference rows": report["reference_rows"],
                "drift share": share if share is not None else "-",
                "drifted": "yes" if report.get("drifted") else "no",
            }
        ),
        *feature_sections(report),
        "<h2>Raw</h2>",
        raw_json(report),
    ]
    return page("Drift report", sections)
