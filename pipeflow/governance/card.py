"""The model card of one registered model version, as Markdown and as a self-contained HTML page.

A card answers, for a reviewer who never saw the run: what is this model, what is it for, what was
it trained and evaluated on, how good is it (overall, per slice, per group), what does it rely
on, which gates did it pass, and where did it come from. It is rendered from the version's record
alone (plus the lineage, when known), so it can be rebuilt at any time from the registry.

Each section is built once as a list of small blocks (heading, text, table, bars ...) and the
blocks are drawn twice, as Markdown and as HTML (:mod:`pipeflow.governance.blocks`). The record
is read through :class:`pipeflow.registry.records.VersionRecord`, so every section tolerates
missing keys and odd shapes ("not recorded"); a section that cannot be drawn at all says so in the
card instead of failing the promotion that asked for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeflow.governance.blocks import (
    Bars,
    Block,
    Heading,
    Kpis,
    Matrix,
    Status,
    Table,
    Text,
    fmt,
    html,
    is_number,
    markdown,
)

if TYPE_CHECKING:  # pragma: no cover
    from pipeflow.registry.records import (
        Bias,
        Gate,
        Importance,
        Lineage,
        Metrics,
        ModelRef,
        RunRef,
        SignatureRecord,
        VersionRecord,
    )

NOT_RECORDED = "not recorded"
BIAS_DIFFERENCES = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "accuracy_difference",
)
MAX_BARS = 20


def render_card(record: dict[str, Any], lineage: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """(Markdown, HTML bytes) of the card of ``record`` (a registered version, read through
    :class:`pipeflow.registry.records.VersionRecord`: every key is optional but ``name`` and
    ``version``)."""
    from pipeflow.registry.records import Lineage, VersionRecord

    v, lin = VersionRecord.read(record), Lineage.read(lineage)
    title = f"Model card: {v.name}@{v.version}"
    sections: list[Callable[[], list[Block]]] = [
        lambda: _header(v),
        lambda: [Heading("Intended use"), Text(str(v.intended_use or NOT_RECORDED))],
        lambda: _data(v),
        lambda: _metrics(v.metrics),
        lambda: _bias(v.bias, v.bias_limits),
        lambda: _mitigation(record.get("mitigation")),
        lambda: _importance(v.importance),
        lambda: _gates(v.gates),
        lambda: _lineage(v.run, lin),
        lambda: _signature(v.signature),
        lambda: _params(v.params),
    ]
    blocks: list[Block] = []
    for section in sections:
        try:
            blocks += section()
        except Exception as err:  # an unexpected shape: say so, keep the rest of the card
            blocks.append(Status(f"this section could not be drawn: {type(err).__name__}: {err}"))
    everything = record if lineage is None else {"record": record, "lineage": lineage}
    return markdown(title, blocks), html(title, blocks, everything)


# -- sections ----------------------------------------------------------------------------------


def _header(v: VersionRecord) -> list[Block]:
    who = v.user
    if who and v.host:
        who = f"{who} on {v.host}"
    rows = [
        ["model", f"{v.name}@{v.version}"],
        ["created", _when(v.created)],
        ["registered by", who or NOT_RECORDED],
        ["estimator", v.estimator or NOT_RECORDED],
        ["task", v.task or v.metrics.get("task") or NOT_RECORDED],
        ["target", v.target or NOT_RECORDED],
        ["model digest", v.model.digest or NOT_RECORDED],
        ["stored as", _stored_as(v.model)],
    ]
    blocks: list[Block] = [Table(["", ""], rows, left=2)]
    if v.description:
        blocks.append(Text(str(v.description)))
    return blocks


def _data(v: VersionRecord) -> list[Block]:
    data = v.data
    blocks: list[Block] = [
        Heading("Data"),
        Table(
            ["set", "digest", "rows"],
            [
                ["train", _short(data.train), _or(data.rows_train)],
                ["evaluation", _short(data.evaluation), _or(data.rows_evaluation)],
            ],
            left=2,
        ),
    ]
    summary = v.data_summary
    if summary is None:
        return [*blocks, Text(f"Column summary: {NOT_RECORDED}.")]
    columns = summary.columns
    blocks.append(Text(f"Summarised table: {_or(summary.rows)} rows, {len(columns)} columns."))
    if columns:
        blocks.append(
            Table(
                ["column", "dtype", "missing", "distinct", "min", "max", "mean"],
                [
                    [
                        c.name,
                        _or(c.dtype),
                        _or(c.missing),
                        _or(c.distinct),
                        _blank(c.min),
                        _blank(c.max),
                        _blank(c.mean),
                    ]
                    for c in columns
                ],
                left=2,
            )
        )
    target = summary.target
    if target.distribution:
        blocks.append(Heading(f"Target: {target.name}", level=3))
        blocks.append(Table(["value", "rows"], [[k, n] for k, n in target.distribution.items()]))
    return blocks


def _metrics(metrics: Metrics) -> list[Block]:
    blocks: list[Block] = [Heading("Metrics")]
    overall = {k: v for k, v in metrics.extra.items() if is_number(v)}
    if not overall:
        return [*blocks, Text(NOT_RECORDED)]
    blocks.append(Kpis(overall))
    per_class = {k: v for k, v in metrics.per_class.items() if isinstance(v, dict)}
    if per_class:
        blocks.append(Heading("By class", level=3))
        blocks.append(
            Table(
                ["class", "precision", "recall", "f1", "rows"],
                [
                    [
                        k,
                        _blank(v.get("precision")),
                        _blank(v.get("recall")),
                        _blank(v.get("f1")),
                        _blank(v.get("support")),
                    ]
                    for k, v in per_class.items()
                ],
            )
        )
    labels = metrics.confusion_matrix.labels
    matrix = [row if isinstance(row, list) else [] for row in metrics.confusion_matrix.matrix]
    square = len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
    if labels and square and all(is_number(n) for row in matrix for n in row):
        # counts as ints: reports.heatmap writes the cells as they are
        blocks.append(Heading("Confusion matrix", level=3))
        blocks.append(Matrix([str(x) for x in labels], [[int(n) for n in row] for row in matrix]))
    if is_number(metrics.calibration.get("ece")):
        blocks.append(Text(f"Expected calibration error: {fmt(metrics.calibration['ece'])}."))
    for column, values in metrics.slices.items():
        values = (
            {k: v for k, v in values.items() if isinstance(v, dict)}
            if isinstance(values, dict)
            else {}
        )
        names = list(dict.fromkeys(n for v in values.values() for n in v if n != "rows"))
        blocks.append(Heading(f"By {column}", level=3))
        blocks.append(
            Table(
                [str(column), "rows", *names],
                [
                    [k, _blank(v.get("rows")), *[_blank(v.get(n)) for n in names]]
                    for k, v in values.items()
                ],
            )
            if values
            else Text(NOT_RECORDED)
        )
    business = metrics.extra.get("business")  # the promote stage's business: (governance.business)
    if isinstance(business, dict):
        blocks.append(Heading("Business metrics", level=3))
        blocks.append(Kpis({k: v for k, v in business.items() if is_number(v)}))
    return blocks


def _bias(bias: Bias | None, limits: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Bias")]
    if bias is None:
        return [*blocks, Text(NOT_RECORDED)]
    groups = {k: v for k, v in bias.groups.items() if isinstance(v, dict)}
    classes = [str(c) for c in bias.classes]
    min_rows = bias.min_rows
    small = (
        f", groups under {min_rows} rows left out of the differences"
        if is_number(min_rows) and min_rows > 1
        else ""
    )
    attribute = bias.attribute if "attribute" in bias.model_fields_set else NOT_RECORDED
    blocks.append(Text(f"Attribute: {attribute}; {len(groups)} groups{small}."))
    verdicts: list[bool] = []
    rows = []
    for name in dict.fromkeys([*BIAS_DIFFERENCES, *limits]):
        value, limit = bias.get(name), limits.get(name)
        verdict = _at_most(value, limit)
        if verdict is not None:
            verdicts.append(verdict)
        rows.append(
            [name, _blank(value, NOT_RECORDED), _blank(limit, "no limit"), _verdict(verdict)]
        )
    blocks.append(Table(["difference", "value", "limit", "result"], rows))
    if not verdicts:
        blocks.append(Status("No bias limits recorded."))
    elif all(verdicts):
        blocks.append(Status("Bias check passed: every difference is within its limit.", ok=True))
    else:
        blocks.append(
            Status(
                f"Bias check FAILED: {verdicts.count(False)} difference(s) over the limit "
                "(or not recorded).",
                ok=False,
            )
        )
    if groups:
        blocks.append(
            Table(
                ["group", "rows", "accuracy", "compared"],
                [
                    [
                        g,
                        _blank(v.get("rows")),
                        _blank(v.get("accuracy")),
                        "no (too few rows)" if v.get("excluded") else "yes",
                    ]
                    for g, v in groups.items()
                ],
            )
        )
        rates = [
            [
                g,
                c,
                _blank(_rate(v, "selection_rate", c), "n/a"),
                _blank(_rate(v, "tpr", c), "n/a"),  # no rows of the class
                _blank(_rate(v, "fpr", c), "n/a"),  # every row of the class
            ]
            for g, v in groups.items()
            for c in classes
        ]
        if rates:
            blocks.append(Heading("Rates by group and class", level=3))
            blocks.append(Table(["group", "class", "selection rate", "TPR", "FPR"], rates, left=2))
    return blocks


def _mitigation(m: Any) -> list[Block]:
    """Per-group decision thresholds (:mod:`pipeflow.governance.thresholds`): none, no section."""
    if not isinstance(m, dict):
        return []
    rows = m.get("rows") or {}
    blocks: list[Block] = [
        Heading("Bias mitigation"),
        Text(
            f"Per-group decision thresholds ({m.get('method')}, objective {m.get('objective')}) "
            f"on {m.get('attribute')}, positive class {m.get('positive')!r}: chosen on "
            f"{_blank(rows.get('validation'), '?')} validation rows, measured on "
            f"{_blank(rows.get('held_out'), '?')} held-out rows. Every prediction of this "
            f"version applies them, and the bias above is of its mitigated predictions on the "
            f"held-out rows; other groups get {_blank(m.get('default'), '?')}."
        ),
        Table(
            ["group", "threshold"],
            [[g, _blank(t)] for g, t in (m.get("thresholds") or {}).items()],
        ),
    ]
    before, after = m.get("before") or {}, m.get("after") or {}
    table = []
    for name in ("accuracy", *BIAS_DIFFERENCES):
        b, a = before.get(name), after.get(name)
        change = a - b if is_number(a) and is_number(b) else None
        table.append([name, _blank(b, NOT_RECORDED), _blank(a, NOT_RECORDED), _blank(change)])
    blocks.append(Table(["metric (held-out rows)", "before", "after", "change"], table))
    if m.get("met") is False:
        blocks.append(
            Status(
                f"No thresholds met the tolerance {m.get('tolerance')} on the validation rows: "
                f"the smallest difference reached, {_blank(m.get('difference_on_validation'))}, "
                "was kept.",
                ok=False,
            )
        )
    return blocks


def _rate(group: dict[str, Any], measure: str, cls: str) -> Any:
    """A group's rate of one class (``None`` where it was not recorded)."""
    rates = group.get(measure)
    return rates.get(cls) if isinstance(rates, dict) else None


def _importance(importance: Importance) -> list[Block]:
    blocks: list[Block] = [Heading("Feature importance")]
    features = importance.features
    if not features:
        blocks.append(Text(NOT_RECORDED))
    else:
        how = [
            f"{value} {label}"
            for value, label in ((importance.rows, "rows"), (importance.n_repeats, "repeats"))
            if is_number(value)
        ]
        blocks.append(
            Text(
                f"{importance.method or 'permutation'} importance on the raw input columns: "
                f"drop in {importance.scoring or 'score'} when a column is shuffled"
                + (f" ({', '.join(how)})." if how else ".")
            )
        )
        blocks.append(_bars({str(f.name): f.mean for f in features}))
        blocks.append(
            Table(
                ["feature", "mean", "std"],
                [[f.name, _blank(f.mean), _blank(f.std)] for f in features],
            )
        )
    contributions = importance.contributions
    if contributions is not None:
        blocks.append(Heading("Model feature contributions", level=3))
        if contributions.error:
            blocks.append(Text(f"Could not be computed: {contributions.error}"))
        else:
            items = contributions.features
            blocks.append(Text(f"{contributions.method or NOT_RECORDED}."))
            if items:
                blocks.append(_bars({str(f.name): f.mean_abs for f in items}))
                blocks.append(
                    Table(
                        ["model feature", "mean |contribution|"],
                        [[f.name, _blank(f.mean_abs)] for f in items],
                    )
                )
    return blocks


def _gates(gates: list[Gate]) -> list[Block]:
    blocks: list[Block] = [Heading("Gates")]
    if not gates:
        return [*blocks, Text(NOT_RECORDED)]
    blocks.append(
        Table(
            ["kind", "gate", "result", "detail", "value", "threshold"],
            [
                [
                    _or(g.kind),
                    _or(
                        g.gate or " ".join(str(p) for p in _written(g, "metric", "op", "threshold"))
                    ),
                    _verdict(g.passed),
                    g.detail or "",
                    _blank(g.value),
                    _blank(g.threshold),
                ]
                for g in gates
            ],
            left=4,
        )
    )
    failed = sum(1 for g in gates if g.passed is False)
    unknown = sum(1 for g in gates if g.passed is None)
    if failed:
        blocks.append(Status(f"{failed} of {len(gates)} gate(s) FAILED.", ok=False))
    elif unknown:
        blocks.append(Status(f"{unknown} of {len(gates)} gate(s) have no recorded result."))
    else:
        blocks.append(Status(f"All {len(gates)} gate(s) passed.", ok=True))
    return blocks


def _written(part: Any, *keys: str) -> list[Any]:
    """The values of ``keys`` that the record wrote (a key written as null included)."""
    return [getattr(part, k) for k in keys if k in part.model_fields_set]


def _lineage(run: RunRef, lineage: Lineage) -> list[Block]:
    """The run that made the model and, when the lineage is known (the dict
    :func:`pipeflow.registry.lineage.model_lineage` returns), the stages that made it, the sources
    they read and the other versions sharing data with it."""
    blocks: list[Block] = [Heading("Lineage")]
    rows = [
        ["run", _or(run.run_id or lineage.run_id)],
        ["pipeline", _or(run.pipeline or lineage.pipeline)],
        ["registered by stage", _or(run.stage or lineage.stage)],
    ]
    if run.spec_path:
        rows.append(["spec", run.spec_path])
    blocks.append(Table(["", ""], rows, left=2))
    if lineage.note:
        blocks.append(Text(str(lineage.note)))
    sources = lineage.sources
    blocks.append(Heading("Sources", level=3))
    blocks.append(
        Table(
            ["stage", "type", "source", "fingerprint", "digest"],
            [
                [_or(s.stage), _or(s.type), _or(s.source), _short(s.fingerprint), _short(s.digest)]
                for s in sources
            ],
            left=5,
        )
        if sources
        else Text(NOT_RECORDED)
    )
    stages = lineage.stages
    blocks.append(Heading("Stages", level=3))
    blocks.append(
        Table(
            ["stage", "type", "state", "inputs", "outputs"],
            [
                [
                    _or(s.stage),
                    _or(s.type),
                    _or(s.state),
                    ", ".join(str(i) for i in s.inputs) or "—",
                    ", ".join(_short(d) for d in s.outputs) or "—",
                ]
                for s in stages
            ],
            left=5,
        )
        if stages
        else Text(NOT_RECORDED)
    )
    if "shared_with" in lineage.model_fields_set:
        shared = [_shared(s) for s in lineage.shared_with]
        blocks.append(
            Text("Shares data with: " + ("; ".join(shared) if shared else "no other version") + ".")
        )
    return blocks


def _shared(entry: Any) -> str:
    """One version sharing data: ``name@v (digest, ...)``, digests cut short."""
    if not isinstance(entry, dict):
        return str(entry)
    digests = entry.get("digests")
    shown = ", ".join(_short(d) for d in digests) if isinstance(digests, list | tuple) else ""
    return f"{_or(entry.get('model'))}" + (f" ({shown})" if shown else "")


def _signature(signature: SignatureRecord) -> list[Block]:
    blocks: list[Block] = [Heading("Signature")]
    features = signature.features
    blocks.append(
        Table(
            ["feature", "dtype"],
            [[f.name, _or(f.dtype)] for f in features],
            left=2,
        )
        if features
        else Text(f"Features: {NOT_RECORDED}.")
    )
    classes = signature.classes
    if classes:
        blocks.append(Table(["#", "class"], [[i, c] for i, c in enumerate(classes)], left=2))
    elif not features:
        blocks.append(Text(f"Classes: {NOT_RECORDED}."))
    return blocks


def _params(params: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Params")]
    if not params:
        return [*blocks, Text(NOT_RECORDED)]
    return [*blocks, Table(["param", "value"], [[k, _plain(v)] for k, v in params.items()], left=2)]


# -- values ------------------------------------------------------------------------------------


def _bars(values: dict[str, Any]) -> Bars:
    """The largest ``MAX_BARS`` numeric values, labels cut to fit the chart's label column."""
    numeric = [(k, float(v)) for k, v in values.items() if is_number(v)][:MAX_BARS]
    shown: dict[str, float] = {}
    for name, value in numeric:
        label = name if len(name) <= 22 else name[:21] + "…"
        while label in shown:  # two long names with one prefix
            label += "'"
        shown[label] = value
    top = max([v for v in shown.values()] + [0.0])
    return Bars(shown, limit=top if top > 0 else 1.0)


def _or(value: Any) -> Any:
    return NOT_RECORDED if value is None or value == "" else value


def _blank(value: Any, missing: str = "") -> Any:
    return missing if value is None else value


def _short(digest: Any) -> str:
    return str(digest)[:12] if digest else NOT_RECORDED


def _when(created: Any) -> str:
    if not is_number(created):
        return NOT_RECORDED if created is None else str(created)
    try:
        return datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(created)


def _stored_as(model: ModelRef) -> str:
    parts = [str(p) for p in (model.codec, model.kind) if p]
    if is_number(model.size):
        parts.append(f"{model.size:,} bytes")
    return ", ".join(parts) or NOT_RECORDED


def _at_most(value: Any, limit: Any) -> bool | None:
    if not is_number(limit):
        return None
    if not is_number(value):
        return False  # a limit on a figure that was not computed cannot be shown to hold
    return bool(value <= limit)


def _verdict(passed: bool | None) -> str:
    return "—" if passed is None else "passed" if passed else "FAILED"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)
