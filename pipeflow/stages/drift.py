"""``drift``: compare two tables column by column with the drift engine ``monitor`` uses
(:mod:`pipeflow.monitoring.engine`): per column a test with its p-value (KS for continuous numbers,
chi-squared for discrete numbers and categories), effect sizes (Wasserstein / reference sd,
Jensen-Shannon, PSI) and the rule that decided.

    drift:
      type: drift
      inputs: {reference: train, current: this_month}
      with:
        columns: [amount, region]        # default: every column the two tables share
        alpha: 0.01
        per_column:
          amount: {method: psi, psi: 0.25}
        fail_on_drift: true

The ``with:`` keys are the drift policy's (:class:`~pipeflow.monitoring.engine.DriftPolicy`) plus
``columns`` and ``fail_on_drift``. Cached like any computation: the same two tables and settings
give the same report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from pipeflow.core.stage import Port, Stage, StageContext
from pipeflow.monitoring.engine import DriftPolicy

#: the outputs of a stage that reports drift: this one's, and ``monitor``'s
DRIFT_REPORT: Mapping[str, Port] = {
    "report": Port("metrics", description="the drift report (JSON)"),
    "html": Port("report", description="the drift report as a readable HTML page"),
}


class DriftConfig(DriftPolicy):
    columns: list[str] | None = Field(
        None, description="the columns to compare (default: every column both tables have)"
    )
    fail_on_drift: bool = Field(False, description="fail the stage when the table drifted")


class DriftStage(Stage[DriftConfig]):
    """Drift of one table against another, column by column."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "reference": Port("table", description="the reference table (e.g. the training data)"),
        "current": Port("table", description="the table to compare with it"),
    }
    outputs: ClassVar[Mapping[str, Port]] = DRIFT_REPORT
    default_port = "report"
    description = "Drift of one table against another (KS / chi-squared, Wasserstein, JS, PSI)."

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        import pandas as pd

        from pipeflow.monitoring.drift import compare_tables
        from pipeflow.monitoring.monitor import render_tables_html

        for port in ("reference", "current"):
            if not isinstance(inputs[port], pd.DataFrame):
                raise TypeError(
                    f"input '{port}' must be a table, got {type(inputs[port]).__name__}"
                )
        config = self.config
        policy = DriftPolicy.model_validate(config.model_dump(exclude={"columns", "fail_on_drift"}))
        report = compare_tables(
            inputs["reference"], inputs["current"], columns=config.columns, policy=policy
        )
        report = {"reference": "reference", "current": "current", **report}
        drifted = ", ".join(report["drifted_features"])
        ctx.logger.info(
            "drift: %d of %d column(s) drifted%s",
            len(report["drifted_features"]),
            len(report["features"]),
            f" ({drifted})" if drifted else "",
        )
        if config.fail_on_drift and report["drifted"]:
            raise ValueError(
                f"drift: {drifted} ({report['drift_share']:.0%} of columns, "
                f"share limit {policy.share:g})"
            )
        return {"report": report, "html": render_tables_html(report)}
