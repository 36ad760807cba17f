"""One loaded model version, as the server holds it: :class:`Handle`.

A handle is what a request is routed to: the model object and its registry record, the signature
rows are checked against, the classes (when the model has ``predict_proba``, every answer carries
the class probabilities), the handle's :class:`~pipeflow.serving.batcher.Batcher`, and the live
statistics the canary's probation reads (requests, errors, latencies, feedback;
:mod:`pipeflow.serving.rollout`). A reload swaps in a new handle; requests already queued on the
old one finish there.

Scoring is here too: one DataFrame of a batch's rows (:meth:`Handle.frame`), and its predictions
(:meth:`Handle.score`), the one place every route's answers are made: a version with per-group
decision thresholds (:mod:`pipeflow.governance.thresholds`) answers its probabilities against the
threshold of each row's group, read from the row (its signature then requires the attribute). A scikit-learn Pipeline is split once at load (:func:`_split_pipeline`)
so that ``predict`` and ``predict_proba`` share one preprocessing pass instead of two.

Its explainer (:meth:`Handle.explainer`, :mod:`pipeflow.governance.explain`) is built on the first
request that asks for explanations, not at load: a server nobody asks for them pays nothing.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

from pipeflow.governance.thresholds import GroupThresholds
from pipeflow.registry.signature import Columns, Signature

if TYPE_CHECKING:
    from pipeflow.serving.batcher import Batcher, Pending


class Handle:
    """One loaded model version with its own batcher and live statistics."""

    def __init__(self, name: str, record: dict[str, Any], model: Any, role: str):
        self.name, self.record, self.model, self.role = name, record, model, role
        self.version = int(record["version"])
        self.signature = Signature.from_record(record)
        classes = getattr(model, "classes_", None)
        self.classes = (
            [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else []
        )
        self.proba = bool(self.classes) and hasattr(model, "predict_proba")
        self.numeric = [f.name for f in self.signature.features if f.expect == "number"]
        self.requests = 0
        self.errors = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self.feedback = [0, 0]  # correct, total
        self.batcher: Batcher | None = None
        self._split = _split_pipeline(model)
        self.thresholds = GroupThresholds.from_record(record)
        features = {f["name"] for f in (record.get("signature") or {}).get("features") or []}
        # the group column a request carries only to pick the threshold is not the model's
        self._drop = [
            t.attribute for t in [self.thresholds] if t is not None and t.attribute not in features
        ]
        self._explainer: Any = None  # an Explainer, or the ExplainUnavailable it could not be
        self._explainer_lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def explainer(self) -> Any:
        """The version's :class:`~pipeflow.governance.explain.Explainer`, built once; raises
        :class:`~pipeflow.errors.ExplainUnavailable` (every time) when there can be none."""
        from pipeflow.errors import ExplainUnavailable

        with self._explainer_lock:
            if self._explainer is None:
                from pipeflow.governance.explain import explainer_for

                # the model's own inputs: not a group column carried only to pick a threshold
                names = [n for n in self.signature.names if n not in self._drop]
                try:
                    self._explainer = explainer_for(self.model, self.record, names)
                except ExplainUnavailable as err:
                    self._explainer = err
        if isinstance(self._explainer, ExplainUnavailable):
            raise self._explainer
        return self._explainer

    def frame(self, items: list[Pending]) -> Any:
        """One DataFrame of the items' rows (all checked against one signature, in its column
        order): from the columns the signature's fast path took when every item has them, else
        from the rows."""
        import pandas as pd

        if all(i.data is not None for i in items):
            return Columns.frame([i.data for i in items])  # type: ignore[misc]
        names = items[0].columns
        frame = pd.DataFrame.from_records([r for i in items for r in i.rows], columns=names)
        for name in self.numeric:
            if name in frame.columns and frame[name].dtype == object:
                frame[name] = pd.to_numeric(frame[name], errors="coerce")
        return frame

    def score(self, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (and class probabilities) of a frame's rows, as Python values."""
        predicted, proba = self.predict(frame)
        return predicted, (proba.tolist() if proba is not None else None)

    def predict(self, frame: Any) -> tuple[list[Any], Any]:
        """Predictions of a frame's rows as Python values, and their class probabilities as
        the model's (rows, classes) array (None without ``predict_proba``): the batcher takes
        them a class at a time (:meth:`score` a row at a time)."""
        if self.thresholds is not None:
            if self.thresholds.attribute not in frame.columns:  # rows checked by another version
                raise ValueError(
                    f"{self.label} picks each row's decision threshold by "
                    f"'{self.thresholds.attribute}', which these rows do not carry"
                )
            groups = frame[self.thresholds.attribute]
            model_frame = frame.drop(columns=self._drop) if self._drop else frame
            proba = self.model.predict_proba(model_frame)
            predicted = self.thresholds.apply(proba, getattr(self.model, "classes_", []), groups)
        elif self._split is not None and self.proba:
            # one preprocessing pass for both predict and predict_proba
            prepare, final, labels = self._split
            features = prepare.transform(frame)
            proba = final.predict_proba(features)
            raw = final.predict(features)
            predicted = labels[raw.astype(int)] if labels is not None else raw
        else:
            predicted = self.model.predict(frame)
            proba = self.model.predict_proba(frame) if self.proba else None
        out = predicted.tolist() if hasattr(predicted, "tolist") else list(predicted)
        if proba is None:
            return out, None
        import numpy as np

        return out, np.asarray(proba)


def _split_pipeline(model: Any) -> tuple[Any, Any, Any] | None:
    """(preprocessing, final estimator, label array or None) of a scikit-learn Pipeline, or of
    pipeflow's LabelDecodedClassifier around one; None for anything else."""
    import numpy as np

    labels = None
    inner = model
    if (
        type(model).__name__ == "LabelDecodedClassifier"
        and getattr(model, "pipeline", None) is not None
    ):
        inner, labels = model.pipeline, np.asarray(model.classes)
    steps = getattr(inner, "steps", None)
    if not steps or len(steps) < 2 or type(inner).__name__ != "Pipeline":
        return None
    return inner[:-1], steps[-1][1], labels
