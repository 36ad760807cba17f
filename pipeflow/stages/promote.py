"""``promote``: register a trained model as a new version of a named model, and move an alias
(``staging``, ``production``, ...) to it only if its gates pass.

What is registered (see :mod:`pipeflow.registry`): the model artifact (by content hash, with the
types a skops file may hold), its signature, params, estimator and target (from the ``info`` output
of ``train``), its metrics (from ``evaluate``), the fingerprints of the training and evaluation
tables, a summary of the evaluation data, bias metrics across a sensitive attribute, permutation
feature importances, the gates and their numbers, and the run that made it; with ``business:``
(:mod:`pipeflow.governance.business`: a cost matrix, value per right answer, SLA latency) the
declaration, and its metrics on the evaluation rows under ``metrics.business`` (so
``business.cost_per_prediction`` gates here and in ``pipeflow models promote --gate`` read them).
The sensitive attribute (``bias.sensitive``, in the record's ``bias.attribute``) and ``business``
are what ``pipeflow monitor`` measures live (:mod:`pipeflow.monitoring.kpis`).

Gates, in order: metric thresholds (``gates: {accuracy: ">= 0.94"}``), bias limits
(``bias: {sensitive: region, max: {demographic_parity_difference: 0.1}}``), then the champion gate
(``champion: {metric: accuracy, margin: 0.01}``: no worse than the alias's current holder by more
than the margin), evaluated against the holder at the moment of the move. A failed gate leaves the
alias untouched; the version stays registered, the refusal is recorded in the registry with every
gate's verdict, the champion's included (:meth:`Registry.record_refusal`: the version record, written
once at registration, holds only the thresholds and bias), and the stage fails naming each failed
gate with both numbers, unless ``on_gate_failure: register``, which lets the run go on. The champion
gate is judged even when a threshold failed, so the record has every verdict.

Bias mitigation (``bias.mitigate: {method: group_thresholds, objective: demographic_parity}``,
binary classifiers): per-group decision thresholds are chosen on a validation share of the
evaluation rows and recorded with the version as data (``mitigation``, with the before/after
accuracy and bias differences on the held-out rest); ``bias`` and so the bias gates are then the
*mitigated* predictions' on the held-out rows. The metric gates stay the ``evaluate`` stage's
(unmitigated: it scores the model before any threshold exists). See
:mod:`pipeflow.governance.thresholds`.

Registering the same model content again returns the existing version, so a re-run never makes
duplicate versions, unless what the spec declares for it changed (``bias.mitigate``'s thresholds,
``business``, ``bias.max``): then the same model file becomes a new version carrying the new
declarations, rather than the old version silently keeping the old ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from pipeflow.core.stage import CheckContext, Port, RowShare, Stage, StageConfig, StageContext
from pipeflow.governance.business import BusinessConfig

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ChampionGate(StageConfig):
    metric: str = Field(min_length=1, description="the metric compared with the current holder")
    margin: float = Field(
        0.0, ge=0, description="how much worse than the holder the challenger may be"
    )


class Mitigation(StageConfig):
    """Per-group decision thresholds (:mod:`pipeflow.governance.thresholds`)."""

    # the fields but method are keywords of governance.thresholds.mitigate, which _mitigate passes
    # as they are (a comment: the docstring is the schema's description, read by users)

    method: Literal["group_thresholds"] = Field(
        description="group_thresholds: a decision threshold per group of a binary classifier"
    )
    objective: Literal["demographic_parity", "true_positive_rate_parity", "equalized_odds"] = Field(
        "demographic_parity", description="what the thresholds equalise across groups"
    )
    validation: RowShare = Field(
        0.5,
        description="share of the evaluation rows the thresholds are chosen on; the rest measure them",
    )
    tolerance: float = Field(
        0.02, ge=0, lt=1, description="largest difference accepted on the validation rows"
    )
    positive: str | None = Field(
        None, description="the positive class, as text (default: the model's second class)"
    )
    seed: int = Field(0, description="seed of the validation split")


class BiasGate(StageConfig):
    sensitive: str = Field(
        min_length=1, description="column of the evaluation data holding the sensitive attribute"
    )
    max: dict[str, float] = Field(
        default_factory=dict,
        description="limits, e.g. {demographic_parity_difference: 0.1, equalized_odds_difference: 0.15}",
    )
    min_rows: int = Field(30, ge=1, description="groups smaller than this are listed, not compared")
    mitigate: Mitigation | None = Field(
        None, description="choose per-group decision thresholds (binary classifiers)"
    )


class PromoteConfig(StageConfig):
    name: str = Field(pattern=_NAME, description="the registered model's name")
    alias: str | None = Field(
        None, pattern=_NAME, description="alias to move if the gates pass (none: register only)"
    )
    gates: dict[str, float | str] = Field(
        default_factory=dict, description="metric thresholds, e.g. {accuracy: '>= 0.94'}"
    )
    champion: ChampionGate | None = Field(
        None, description="no worse than the alias's current holder by more than a margin"
    )
    bias: BiasGate | None = Field(None, description="bias metrics across a sensitive attribute")
    business: BusinessConfig | None = Field(
        None,
        description="what decisions are worth: cost matrix, value per right answer, SLA latency "
        "(business.<metric> gates; monitored live)",
    )
    target: str | None = Field(
        None, description="target column of the evaluation data (default: from the train info)"
    )
    importance: bool = Field(True, description="compute permutation feature importances")
    importance_rows: int = Field(2000, ge=10, description="rows sampled for feature importances")
    intended_use: str | None = Field(None, description="for the model card")
    description: str | None = None
    reason: str | None = Field(None, description="recorded with the alias move")
    on_gate_failure: Literal["fail", "register"] = Field(
        "fail",
        description="fail: the stage fails; register: the version is kept without the alias and the run goes on",
    )

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, gates: dict[str, float | str]) -> dict[str, float | str]:
        from pipeflow.registry.gates import parse_gate

        for metric, expression in gates.items():
            parse_gate(metric, expression)
        return gates

    @model_validator(mode="after")
    def _business_gates(self) -> PromoteConfig:
        from pipeflow.governance.business import METRICS

        for metric in self.gates:
            head, _, leaf = metric.partition(".")
            if head != "business":
                continue
            if self.business is None:
                raise ValueError(
                    f"gates.{metric}: a business gate needs the `business:` declaration "
                    "(cost, value_per_correct, sla_latency_ms) in this stage's config"
                )
            if leaf not in METRICS:
                raise ValueError(
                    f"gates.{metric}: no business metric '{leaf}' (expected one of: "
                    f"{', '.join(METRICS)})"
                )
        return self


class PromoteStage(Stage[PromoteConfig]):
    """Register a model version and move an alias to it if its gates pass."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "model": Port("model", description="the fitted model (from train or tune)"),
        "metrics": Port("metrics", description="its evaluation metrics (from evaluate)"),
        "info": Port(
            "metrics", required=False, description="the training record (train's info output)"
        ),
        "data": Port(
            "table",
            required=False,
            description="evaluation rows, target included: bias metrics, importances, data summary",
        ),
    }
    outputs: ClassVar[Mapping[str, Port]] = {
        "version": Port(
            "metrics", description="the version record, gates and whether it was promoted"
        ),
        "card": Port("report", description="the model card as a self-contained HTML page"),
        "card_md": Port("report", description="the model card as Markdown"),
    }
    default_port = "version"
    description = "Register a model version; move an alias to it only if its gates pass."

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        """Gates (and the champion's metric) name metrics the feeding stage produces, where that
        stage says which it produces (``evaluate``: :attr:`EvaluateStage.METRICS`)."""
        from pipeflow.stages.evaluate import unknown_metrics

        assert isinstance(config, PromoteConfig)
        feeder = ctx.upstream.get("metrics")
        known = getattr(feeder.cls, "METRICS", None) if feeder else None
        if feeder is None or known is None:
            return []
        named = [
            (f"gates.{metric}", metric)
            for metric in config.gates
            if not metric.startswith("business.")  # computed here, from the business declaration
        ]
        if config.champion is not None:
            named.append(("champion.metric", config.champion.metric))
        return unknown_metrics(named, known, f"stage '{feeder.stage}'")

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        from pipeflow.errors import GateFailed
        from pipeflow.governance import render_card
        from pipeflow.registry import Registry
        from pipeflow.registry.gates import (
            bias_gates,
            champion_check,
            describe_failures,
            gates_check,
            threshold_gates,
        )

        config = self.config
        if ctx.store is None:
            raise ValueError("the promote stage needs the run's artifact store")
        model, metrics = inputs["model"], inputs["metrics"]
        info = inputs.get("info") or {}
        if not isinstance(metrics, dict):
            raise ValueError("input 'metrics' must be the JSON metrics of an evaluate stage")
        model_ref = ctx.input_refs.get("model") or ctx.store.save(model, "model")
        fields = _describe(config, ctx, model, metrics, info, inputs.get("data"))
        metrics = fields["metrics"]  # with the business metrics, where declared
        gates = threshold_gates(metrics, config.gates)
        if config.bias is not None:
            gates += bias_gates(fields.get("bias"), config.bias.max)
        registry = Registry(ctx.store)
        record = registry.register(
            config.name, model_ref, declared=_DECLARED, gates=gates, **fields
        )
        label = f"{config.name}@{record['version']}"
        promoted = False
        failure = describe_failures(gates)
        event = None
        if config.alias:  # a refusal is recorded in the registry, with every gate's verdict
            check = (
                gates_check(gates)
                if config.champion is None
                else champion_check(
                    registry,
                    config.name,
                    metrics,
                    gates,
                    metric=config.champion.metric,
                    margin=config.champion.margin,
                )
            )
            try:
                event = registry.move_alias(
                    config.name,
                    config.alias,
                    record["version"],
                    reason=config.reason or f"gates passed in run {ctx.run_id}",
                    run_id=ctx.run_id,
                    check=check,
                )
                gates, promoted = event["gates"], True
                ctx.logger.info(
                    "%s -> %s (was %s)", config.alias, label, event["from_version"] or "unset"
                )
            except GateFailed as err:
                gates, failure = err.gates, str(err)
        outcome = {
            **record,
            "gates": gates,
            "alias": config.alias,
            "promoted": promoted,
            "previous_holder": event["from_version"] if event else None,
            "failure": failure or None,
        }
        markdown, html = render_card(outcome)
        if failure and config.alias and config.on_gate_failure == "fail":
            raise GateFailed(
                f"{label} registered but not promoted to '{config.alias}' ({config.alias} unchanged): {failure}",
                gates,
            )
        if failure:
            ctx.logger.warning("%s not promoted: %s", label, failure)
        outcome.pop("existing", None)
        return {"version": outcome, "card": html, "card_md": markdown.encode("utf-8")}


# the record fields that make a re-registered model a new version when they change
_DECLARED = ("mitigation", "business", "bias_limits")


def _describe(
    config: PromoteConfig,
    ctx: StageContext,
    model: Any,
    metrics: dict[str, Any],
    info: dict[str, Any],
    data: Any,
) -> dict[str, Any]:
    """Everything the version record holds besides the model and gates."""
    from pipeflow.governance import bias_metrics, data_summary, feature_importance

    task = info.get("task") or metrics.get("task")
    target = config.target or info.get("target")
    refs = ctx.input_refs
    fields: dict[str, Any] = {
        "description": config.description,
        "intended_use": config.intended_use,
        "estimator": info.get("estimator") or _estimator_name(model),
        "task": task,
        "target": target,
        "signature": info.get("signature") or {},
        # what normal input looked like (serving flags inputs outside it; monitoring's reference)
        "reference": info.get("reference"),
        "params": info.get("params") or {},
        "metrics": metrics,
        "data": {
            "train": (info.get("data") or {}).get("train"),
            "evaluation": refs["data"].digest if "data" in refs else None,
            "rows_train": info.get("rows_train"),
            "rows_evaluation": metrics.get("rows"),
        },
        "bias_limits": dict(config.bias.max) if config.bias else None,
        # what decisions are worth (pipeflow.governance.business): monitored on live traffic
        "business": config.business.model_dump(exclude_none=True) if config.business else None,
        "run": {
            "run_id": ctx.run_id,
            "pipeline": ctx.pipeline,
            "stage": ctx.stage,
            "model_digest": refs["model"].digest if "model" in refs else None,
        },
    }
    if data is None:
        if config.bias is not None:
            raise ValueError("bias gates need the evaluation rows: wire the 'data' input")
        if config.business is not None:
            raise ValueError("business metrics need the evaluation rows: wire the 'data' input")
        return fields
    if not target or target not in data.columns:
        raise ValueError(
            f"target column {target!r} not found in the 'data' input "
            f"(columns: {', '.join(map(str, data.columns))}); set 'target' or wire train's info"
        )
    rows = data[data[target].notna()]
    fields["data_summary"] = data_summary(data, target)
    X, y = rows.drop(columns=[target]), rows[target]
    # the plain predictions, for business metrics and unmitigated bias (mitigation makes its own)
    plain_bias = config.bias is not None and config.bias.mitigate is None
    predicted = model.predict(X) if plain_bias or config.business is not None else None
    if config.business is not None:
        fields["metrics"] = {
            **metrics,
            "business": _business(config.business, model, y, predicted, fields["signature"], task),
        }
    if config.bias is not None:
        column = config.bias.sensitive
        if column not in rows.columns:
            raise ValueError(
                f"sensitive attribute '{column}' not found in the 'data' input "
                f"(columns: {', '.join(map(str, rows.columns))})"
            )
        if config.bias.mitigate is None:
            fields["bias"] = bias_metrics(
                y.to_numpy(),
                predicted,
                rows[column].to_numpy(),
                attribute=column,
                min_rows=config.bias.min_rows,
            )
        else:  # the bias of the mitigated predictions, on the rows that did not choose them
            fields["bias"], fields["mitigation"] = _mitigate(config.bias, model, X, y, rows, task)
    if config.importance:
        features = [f["name"] for f in fields["signature"].get("features", [])] or list(X.columns)
        features = [f for f in features if f in X.columns]
        fields["importance"] = feature_importance(
            model,
            X[features] if features else X,
            y,
            task=task or "classification",
            max_rows=config.importance_rows,
        )
    return fields


def _mitigate(
    bias: BiasGate, model: Any, X: Any, y: Any, rows: Any, task: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    from pipeflow.governance import mitigate

    assert bias.mitigate is not None
    return mitigate(
        model,
        X,
        y.to_numpy(),
        rows[bias.sensitive].to_numpy(),
        attribute=bias.sensitive,
        min_rows=bias.min_rows,
        task=task,
        **bias.mitigate.model_dump(exclude={"method"}),  # the rest of its keywords (Mitigation)
    )


def _business(
    config: BusinessConfig,
    model: Any,
    y: Any,
    predicted: Any,
    signature: dict[str, Any],
    task: str | None,
) -> dict[str, Any]:
    """The business metrics on the evaluation rows; a declaration that does not fit the model (a
    cost matrix naming a class it cannot predict, a classifier's keys on a regressor or the other
    way round) is an error naming the field."""
    from pipeflow.governance.business import business_metrics, unknown_classes

    declared = config.model_dump(exclude_none=True)
    regressor = task == "regression"
    for key in ("cost", "value_per_correct") if regressor else ("cost_per_unit_error",):
        if key in declared:
            raise ValueError(
                f"business.{key}: not for a {task or 'classification'} model (a regressor takes "
                "cost_per_unit_error; a classifier cost and value_per_correct)"
            )
    if config.cost is not None:
        found = getattr(model, "classes_", None)
        classes = [str(c) for c in found] if found is not None else signature.get("classes")
        classes = classes or sorted({str(v) for v in y} | {str(v) for v in predicted})
        unknown = unknown_classes(declared, classes)
        if unknown:
            raise ValueError(
                f"business.{unknown[0]}: no such class (the model's classes: "
                f"{', '.join(map(str, classes))})"
                + (
                    f"; also {', '.join('business.' + u for u in unknown[1:])}"
                    if unknown[1:]
                    else ""
                )
            )
    return business_metrics(y.to_numpy(), predicted, declared)


def _estimator_name(model: Any) -> str:
    inner = getattr(model, "steps", None)
    final = inner[-1][1] if inner else model
    return f"{type(final).__module__}.{type(final).__qualname__}"
