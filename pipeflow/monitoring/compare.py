"""Two versions compared on live traffic: ``pipeflow models compare NAME@A NAME@B --live``.

Everything comes from the serving journal (a local store's ``audit/``, or the union of every
replica's shipped segments and this machine's spool: :class:`pipeflow.store.shipping.Journal`),
so the comparison covers the whole fleet, whichever replica answered:

- a variant's **rows** are its audit records: answers (``predictions``: as the primary or the
  canary) and shadow scores (``shadow``, :mod:`pipeflow.serving.shadow`), plus the rows it failed
  on (``model_error`` events; a shadow's failed rows in its journal). A request of n rows counts n;
- its **error rate** is failed rows over rows; its **accuracy** is over the rows with feedback
  (the latest outcome posted for the prediction id: a shadow's rows share the answer's ids, so
  the same label scores both); its **latency** is the audit record's ``latency_ms`` (an answer's:
  the request's, queueing included; a shadow's: its own queueing and scoring);
- intervals and tests are :mod:`pipeflow.monitoring.stats`'s: Wilson intervals, Fisher's exact
  test or the two-proportion z-test for accuracy and error rate, McNemar's exact test on the rows
  both variants scored (a shadow against the answers), Welch's z-test for mean latency; each
  verdict names the test, the p-value and the level.

A variant with no rows, or no feedback, is said so in words; a journal that cannot be read is an
error (:class:`~pipeflow.errors.StoreError` from the journal), never "no traffic".
"""

from __future__ import annotations

from typing import Any

from pipeflow.monitoring import stats


def collect(
    journal: Any, variants: list[tuple[str, int]], start: float, end: float
) -> dict[tuple[str, int], dict[str, Any]]:
    """Per variant: ``answered`` rows, ``outputs`` (prediction id -> output), ``latencies``,
    ``failed`` rows and ``roles`` (answered rows by role: primary, canary, shadow), read from every replica's records between ``start`` and ``end``."""
    from pipeflow.store import journal as audit

    wanted = set(variants)
    found: dict[tuple[str, int], dict[str, Any]] = {
        v: {"answered": 0, "outputs": {}, "latencies": [], "failed": 0, "roles": {}}
        for v in variants
    }

    def within(record: dict[str, Any]) -> tuple[str, int] | None:
        when = record.get("time")
        key = (record.get("model"), record.get("version"))
        if key not in wanted or not isinstance(when, int | float) or not start <= when < end:
            return None
        return key  # type: ignore[return-value]

    for kind in ("predictions", "shadow"):
        for record in audit.read(journal, kind):
            key = within(record)
            if key is None:
                continue
            v = found[key]
            if "error" in record and "output" not in record:  # a shadow's failed row
                v["failed"] += 1
                continue
            role = str(record.get("role") or ("shadow" if kind == "shadow" else "primary"))
            v["roles"][role] = v["roles"].get(role, 0) + 1
            v["answered"] += 1
            if isinstance(record.get("id"), str):
                v["outputs"][record["id"]] = record.get("output")
            latency = record.get("latency_ms")
            if isinstance(latency, int | float) and not isinstance(latency, bool):
                v["latencies"].append(float(latency))
    for record in audit.read(journal, "events"):
        if record.get("event") != "model_error":
            continue
        key = within(record)
        if key is not None:
            rows = record.get("rows")
            found[key]["failed"] += rows if isinstance(rows, int) and rows > 0 else 1
    return found


def outcomes(journal: Any) -> dict[str, Any]:
    """Prediction id -> its latest true outcome (feedback from any replica)."""
    from pipeflow.store import journal as audit

    latest: dict[str, tuple[float, Any]] = {}
    for record in audit.read(journal, "feedback"):
        pid, when = record.get("id"), record.get("time")
        if not isinstance(pid, str) or not isinstance(when, int | float):
            continue
        if pid not in latest or when >= latest[pid][0]:
            latest[pid] = (when, record.get("outcome"))
    return {pid: outcome for pid, (_, outcome) in latest.items()}


def _proportion(k: int, n: int, alpha: float) -> dict[str, Any]:
    interval = stats.wilson(k, n, alpha)
    return {
        "count": k,
        "of": n,
        "value": k / n if n else None,
        "ci": list(interval) if interval else None,
    }


def _verdict(
    what: str, a: str, b: str, va: float, vb: float, test: dict[str, Any], alpha: float
) -> str:
    """The verdict in words: which is higher, the test, its p-value and the level."""
    p, name = test["p_value"], test["test"]
    if p < alpha:
        which = f"{b} is {'higher' if vb > va else 'lower'} than {a}"
        return (
            f"{what}: {which} ({vb:.4g} vs {va:.4g}): significant at α = {alpha:g} "
            f"({name}, p = {p:.3g})"
        )
    return (
        f"{what}: no significant difference at α = {alpha:g} ({a} {va:.4g}, {b} {vb:.4g}; "
        f"{name}, p = {p:.3g})"
    )


def _compare_shares(
    report: dict[str, Any], key: str, what: str, names: tuple[str, str], alpha: float
) -> None:
    """Compare a share of the two variants (``key``: accuracy or error_rate) where both have rows
    to measure it on: the test under ``tests[key]``, its verdict appended."""
    sa, sb = (variant[key] for variant in report["variants"])
    if sa["of"] and sb["of"]:
        test = stats.compare_proportions(sa["count"], sa["of"], sb["count"], sb["of"])
        report["tests"][key] = test
        report["verdicts"].append(_verdict(what, *names, sa["value"], sb["value"], test, alpha))


def compare_live(
    journal: Any,
    a: tuple[str, int],
    b: tuple[str, int],
    *,
    start: float,
    end: float,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The comparison of variants ``a`` and ``b`` (model, version) over ``[start, end)``."""
    found = collect(journal, [a, b], start, end)
    truth = outcomes(journal)
    labels = {v: f"{v[0]}@{v[1]}" for v in (a, b)}
    report: dict[str, Any] = {
        "alpha": alpha,
        "window": {"start": start, "end": end},
        "variants": [],
        "tests": {},
        "verdicts": [],
        "notes": [],
    }
    right: dict[tuple[str, int], dict[str, bool]] = {}
    for v in (a, b):
        f = found[v]
        answered = f["answered"]
        rows = answered + f["failed"]
        scored = {
            pid: str(out) == str(truth[pid]) for pid, out in f["outputs"].items() if pid in truth
        }
        right[v] = scored
        ordered = sorted(f["latencies"])
        report["variants"].append(
            {
                "variant": labels[v],
                "model": v[0],
                "version": v[1],
                "rows": rows,
                "answered": answered,
                "roles": f["roles"],
                "failed": f["failed"],
                "error_rate": _proportion(f["failed"], rows, alpha),
                "accuracy": _proportion(sum(scored.values()), len(scored), alpha),
                "latency_ms": {
                    "n": len(ordered),
                    "p50": stats.quantile(ordered, 0.5),
                    "p95": stats.quantile(ordered, 0.95),
                    **_mean(ordered, alpha),
                },
            }
        )
        if rows == 0:
            report["notes"].append(
                f"{labels[v]} has no traffic in the journal in this window "
                "(neither answered, shadowed nor failed rows)"
            )
        elif not scored:
            report["notes"].append(
                f"{labels[v]} has no feedback on its {answered} answered rows: "
                "its accuracy cannot be measured or compared"
            )
    va, vb = report["variants"]
    _compare_shares(report, "accuracy", "accuracy", (labels[a], labels[b]), alpha)
    both = right[a].keys() & right[b].keys()
    if both:  # the same rows scored by both: a shadow beside the answers
        only_a = sum(1 for pid in both if right[a][pid] and not right[b][pid])
        only_b = sum(1 for pid in both if right[b][pid] and not right[a][pid])
        p = stats.mcnemar_exact(only_a, only_b)
        report["tests"]["paired_accuracy"] = paired = {
            "test": "McNemar's exact test",
            "pairs": len(both),
            "only_first_right": only_a,
            "only_second_right": only_b,
            "p_value": p,
        }
        pa = sum(right[a][pid] for pid in both) / len(both)
        pb = sum(right[b][pid] for pid in both) / len(both)
        report["verdicts"].append(
            _verdict(
                f"accuracy on the {len(both)} rows both scored",
                labels[a],
                labels[b],
                pa,
                pb,
                paired,
                alpha,
            )
        )
    _compare_shares(report, "error_rate", "error rate", (labels[a], labels[b]), alpha)
    lat_a, lat_b = va["latency_ms"], vb["latency_ms"]
    if lat_a.get("mean") is not None and lat_b.get("mean") is not None:
        test = stats.welch_z(lat_a, lat_b)
        if test is not None:
            report["tests"]["latency_mean"] = test
            report["verdicts"].append(
                _verdict(
                    "mean latency (ms)",
                    labels[a],
                    labels[b],
                    lat_a["mean"],
                    lat_b["mean"],
                    test,
                    alpha,
                )
            )
    return report


def _mean(ordered: list[float], alpha: float) -> dict[str, Any]:
    m = stats.mean_interval(ordered, alpha)
    if m is None:
        return {"mean": None, "se": None, "ci": None}
    return {**m, "ci": list(m["ci"]) if m["ci"] else None}
