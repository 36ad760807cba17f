"""``monitor``: compare a recent window of a served model's audited inputs with its training
reference; record the drift report, fire alert rules, and fail (optionally) when drift is found.

Never cached: each run looks at a new window. The report goes to the store's monitoring history
(the dashboard and ``triggers.on_drift`` read it) and is the stage's ``report`` output, with a
readable HTML page as ``html``. ``fail_on_drift: true`` makes a drifted window fail the stage, so
a scheduled monitoring spec shows up red. ``drift:`` sets the drift rule (method, thresholds,
per column: :class:`~pipeflow.monitoring.engine.DriftPolicy`). The report also holds the live bias
and business metrics the version declared at promotion (:mod:`pipeflow.monitoring.kpis`), which
``alerts`` may name (``bias.accuracy_difference``, ``business.cost_per_prediction``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeflow.core.stage import Action, ModelAlias, Port, StageConfig, StageContext
from pipeflow.monitoring.alerts import Rule, Sink, parse_duration
from pipeflow.monitoring.engine import DriftPolicy
from pipeflow.stages.drift import DRIFT_REPORT


class MonitorConfig(StageConfig):
    model: ModelAlias
    window: str | float = Field("1h", description="how far back to look: 90s, 15m, 1h, 2d")
    all_versions: bool = Field(False, description="include traffic answered by earlier versions")
    audit_dir: str | None = Field(
        None, description="the server's audit log (default <store>/audit)"
    )
    alerts: list[Rule] = Field(
        default_factory=list, description="alert rules (see docs/monitoring.md)"
    )
    sinks: list[Sink] = Field(default_factory=lambda: [Sink(type="log")])
    drift: DriftPolicy = Field(
        default_factory=DriftPolicy,
        description="when a feature, and the window, counts as drifted (docs/monitoring.md)",
    )
    fail_on_drift: bool = False

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value


class MonitorStage(Action[MonitorConfig]):
    """Drift, accuracy and latency of a served model over a recent window."""

    version: ClassVar[str] = "1"
    outputs: ClassVar[Mapping[str, Port]] = DRIFT_REPORT
    default_port = "report"
    description = (
        "Drift of a served model's live inputs against its training reference, with alerts."
    )

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        from pipeflow.monitoring.monitor import monitor, render_html
        from pipeflow.registry import Registry, parse_ref
        from pipeflow.store.shipping import open_journal

        config = self.config
        if ctx.store is None:
            raise ValueError("the monitor stage needs the run's artifact store")
        # every replica's records: a local store's audit folder, or what was shipped to a
        # remote one and this machine's spool (pipeflow.store.shipping)
        given = ctx.base_dir / config.audit_dir if config.audit_dir else None
        audit_dir = open_journal(ctx.store, "audit", given)
        name, which = parse_ref(config.model)
        report = monitor(
            Registry(ctx.store),
            name,
            which or "production",
            audit_dir=audit_dir,
            store_root=ctx.store,
            window_s=parse_duration(config.window),
            all_versions=config.all_versions,
            policy=config.drift,
            rules=config.alerts,
            sinks=[
                s.model_copy(update={"path": str(ctx.base_dir / s.path)})
                if s.type == "file" and s.path and not Path(s.path).is_absolute()
                else s
                for s in config.sinks
            ],
        )
        if config.fail_on_drift and report["drifted"]:
            raise ValueError(
                f"drift in {name}@{report['version']}: {', '.join(report['drifted_features'])} "
                f"({report['drift_share']:.0%} of features)"
            )
        return {"report": report, "html": render_html(report)}
