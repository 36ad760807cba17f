"""Governance of registered model versions: what a reviewer needs to trust (or refuse) a model.

- :func:`bias_metrics`: per-group selection rates, TPR/FPR and accuracy of a classifier, and the
  demographic-parity, equalized-odds and accuracy differences between groups;
- :func:`feature_importance`: permutation importance on the raw input columns (plus xgboost's
  SHAP contributions per model feature, for xgboost models);
- :func:`data_summary`: a short, JSON-ready description of a table and its target;
- :class:`GroupThresholds` and :func:`mitigate`: bias mitigation by per-group decision thresholds
  of a binary classifier, chosen on validation rows and applied to its probabilities;
- :mod:`pipeflow.governance.business`: what a model's decisions are worth (cost matrix, value per
  right answer, SLA breaches), declared at promotion;
- :mod:`pipeflow.governance.explain`: explanations per prediction (contributions per input
  column that add up to the model's margin), for serving and batch scoring;
- :func:`render_card`: the model card of one registered version, as Markdown and HTML.

Pure functions: no I/O, no store, nothing registered on import. Heavy libraries (numpy, pandas,
scikit-learn, xgboost) are imported inside the functions, so importing this package is cheap;
stages call it and write the results wherever they belong.
"""

from __future__ import annotations

from pipeflow.governance.card import render_card
from pipeflow.governance.fairness import bias_metrics
from pipeflow.governance.importance import feature_importance
from pipeflow.governance.summary import data_summary
from pipeflow.governance.thresholds import GroupThresholds, mitigate

__all__ = [
    "GroupThresholds",
    "bias_metrics",
    "data_summary",
    "feature_importance",
    "mitigate",
    "render_card",
]
