"""``predict``: score a table with a registered model (batch inference inside a pipeline).

::

    scored:
      type: predict
      inputs: {data: raw}
      with:
        model: tumours@production     # NAME@ALIAS, NAME@VERSION, or NAME (the latest version)
        id_column: patient_id         # optional: passed through beside each prediction
        probabilities: true           # classifiers: a proba_<class> column per class

The model is resolved in the run's own store (its registry, see :mod:`pipeflow.registry`) and
loaded hash-checked, like every registry load. Every feature in the version's signature must be
a column of ``data``, and so must the group column of a version with per-group decision
thresholds (:mod:`pipeflow.governance.thresholds`: its labels are made with them). Outputs: ``predictions`` (``prediction_id``, the id column, ``prediction``,
``proba_<class>``; rows in input order) and ``info`` (the version actually used, its model
digest, the batch id, the row count and the ``device`` that scored).

**On a GPU worker.** With ``resources: {GPU: 1}`` the executor runs the stage on a Dask worker
offering a GPU (as any stage); there an xgboost model (bare or the last step of a pipeline) is
scored on a copy set to ``device: cuda``, the stored model staying CPU-ready, and a worker
without usable CUDA scores on the CPU with one warning (:mod:`pipeflow.scoring.device`). The
predictions are the same either way; ``info.device`` says which scored.

``prediction_id`` is ``<batch>-<row>`` with a batch id derived from the input table's content,
the model's digest and the config, so the same data scored by the same version gives
byte-identical outputs (the cache relies on it; a random id would make every run new data).

**Caching and aliases.** Besides its type, config and input contents, the stage's cache key holds
the digest of the model the alias points at when the run is planned
(:meth:`Stage.store_fingerprint`): after ``tumours@production`` moves to another version, the next
run scores again; while it stays, the stored predictions are reused. ``info`` records which
version produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeflow.core.stage import Port, Stage, StageConfig, StageContext


class PredictConfig(StageConfig):
    model: str = Field(
        min_length=1,
        description="the registered model: NAME@ALIAS, NAME@VERSION or NAME (latest version)",
    )
    id_column: str | None = Field(
        None, description="column of the input passed through beside each prediction"
    )
    probabilities: bool = Field(True, description="classifiers: a proba_<class> column per class")

    @field_validator("model")
    @classmethod
    def _model_ref(cls, text: str) -> str:
        from pipeflow.errors import RegistryError
        from pipeflow.registry import parse_ref

        try:
            parse_ref(text)
        except RegistryError as err:
            raise ValueError(str(err)) from None
        return text

    @field_validator("id_column")
    @classmethod
    def _not_an_output(cls, column: str | None) -> str | None:
        if column in ("prediction_id", "prediction"):
            raise ValueError(f"id column {column!r} clashes with an output column")
        return column


class PredictStage(Stage[PredictConfig]):
    """Score a table with a registered model version."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "data": Port("table", description="rows to score; must hold every feature of the model"),
    }
    outputs: ClassVar[Mapping[str, Port]] = {
        "predictions": Port(
            "table", description="prediction_id, the id column, prediction, proba_<class>"
        ),
        "info": Port("metrics", description="the model version used, its digest, batch id, rows"),
    }
    default_port = "predictions"
    description = "Score a table with a registered model (NAME@ALIAS or NAME@VERSION)."

    @classmethod
    def store_fingerprint(cls, config: PredictConfig, store: Any) -> str:  # type: ignore[override]
        """The digest of the model the alias points at now (an unknown model or alias gives a
        marker: the run itself then fails with the registry's message)."""
        from pipeflow.errors import PipeflowError
        from pipeflow.registry import Registry, parse_ref

        try:
            name, which = parse_ref(config.model)
            record = Registry(store).resolve(name, which)
        except PipeflowError as err:
            return f"unresolved: {err}"
        return str(record["model"]["digest"])

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        from pipeflow.governance.thresholds import GroupThresholds
        from pipeflow.registry import Registry, parse_ref
        from pipeflow.scoring.device import resource_text, scoring_model, wanted_device
        from pipeflow.scoring.model import (
            ScoreSpec,
            datetime_features,
            score_frame,
            signature_features,
        )

        config = self.config
        if ctx.store is None:
            raise ValueError("the predict stage needs the run's artifact store (its registry)")
        name, which = parse_ref(config.model)
        model, record = Registry(ctx.store).servable(name, which)
        label = f"{name}@{record['version']}"
        data = inputs["data"]
        features = signature_features(record, model)
        thresholds = GroupThresholds.from_record(record)  # per-group: needs the group column
        group = (
            [thresholds.attribute] if thresholds and thresholds.attribute not in features else []
        )
        needed = [*features, *group, *([config.id_column] if config.id_column else [])]
        missing = [c for c in needed if c not in data.columns]
        if missing:
            raise ValueError(
                f"input 'data' lacks column(s) {', '.join(missing)} needed by {label} "
                f"(columns: {', '.join(map(str, data.columns))})"
            )
        digest = str(record["model"]["digest"])
        batch_id = _batch_id(ctx, data, digest, config)
        want = wanted_device(ctx.resources)
        scorer, device, note = scoring_model(model, digest, want)
        if note:
            ctx.logger.warning("resources %s: %s", resource_text(ctx.resources), note)
        spec = ScoreSpec(
            tuple(features),
            config.id_column,
            config.probabilities,
            datetime_features(record),
            thresholds,
        )
        scored = score_frame(scorer, data, spec).reset_index(drop=True)
        scored.insert(0, "prediction_id", _ids(batch_id, len(scored)))
        ctx.logger.info(
            "scored %d rows with %s (%s) on %s", len(scored), label, config.model, device
        )
        info = {
            "model": name,
            "version": record["version"],
            "ref": config.model,
            "model_digest": digest,
            "batch_id": batch_id,
            "rows": int(len(scored)),
            "device": device,
            "classes": [str(c) for c in getattr(model, "classes_", [])],
        }
        return {"predictions": scored, "info": info}


def _batch_id(ctx: StageContext, data: Any, model_digest: str, config: PredictConfig) -> str:
    """``b`` and eight hex digits from the input's content, the model and the config (the
    letter first: an id such as ``1305603e-0`` would read back from CSV as a number)."""
    ref = ctx.input_refs.get("data")
    if ref is not None:
        content = ref.digest
    else:  # called outside a run: hash the rows themselves
        import pandas as pd

        content = hashlib.sha256(pd.util.hash_pandas_object(data).to_numpy().tobytes()).hexdigest()
    blob = json.dumps([content, model_digest, config.model_dump(mode="json")], sort_keys=True)
    return "b" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def _ids(batch_id: str, rows: int) -> Any:
    import numpy as np
    import pandas as pd

    return (f"{batch_id}-" + pd.Series(np.arange(rows)).astype("str")).to_numpy()
