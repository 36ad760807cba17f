"""Bias mitigation by per-group decision thresholds: choosing them, recording them, applying them.

What fairlearn's ``ThresholdOptimizer`` does, deterministically and without fairlearn: a binary
classifier's score (its probability of the positive class) is compared with a threshold of the
row's group (a value of the sensitive attribute) instead of with one threshold for everyone.

**Choosing** (:func:`mitigate`, called by the ``promote`` stage's ``bias.mitigate``). The labelled
evaluation rows are split, per (group, label) cell and with a fixed seed, into *validation* rows
(the declared fraction), on which thresholds are chosen, and *held-out* rows, on which the
before/after metrics and the bias gate are measured: numbers from the rows that chose the
thresholds would flatter them. The candidates are a grid of 101 target rates ``r`` (0, 0.01, ...,
1): for each, every group gets the threshold that gives it the rate closest to ``r`` on its
validation rows (its selection rate for ``demographic_parity``; its true positive rate for
``true_positive_rate_parity`` and ``equalized_odds``), a midpoint between two scores so that it
does not sit on a validation row. The unmitigated rule (everyone at :data:`DEFAULT`) is a
candidate too. Among the candidates whose difference on the validation rows is within
``tolerance``, the most accurate wins (ties: the smaller difference, then the lower rate); when
none is within it, the smallest difference wins and the record says ``met: false``. Groups with
fewer validation rows than ``min_rows`` (for the TPR objectives: no positive validation row) keep
:data:`DEFAULT`. One threshold per group cannot equalise both TPR and FPR (fairlearn randomises
between two thresholds for that); ``equalized_odds`` matches TPRs and keeps the candidate with the
smallest max(TPR range, FPR range).

**Recording.** The thresholds are data in the version record (``mitigation``: JSON, never code),
with the attribute, the positive class, the objective, the row counts and the before/after
accuracy and bias differences. Registering the same model content again returns the existing
version and its thresholds (the registry's rule).

**Applying** (:class:`GroupThresholds`, the one place a mitigated version's labels are made from
its probabilities): serving (:class:`pipeflow.serving.handle.Handle`, so every route: native,
MLflow, Open Inference) and batch scoring and the ``predict`` stage
(:func:`pipeflow.scoring.model.score_frame`). The positive class is predicted where its
probability is at least the row's group threshold. Group values are compared as text, an integral
float as the integer (``1.0`` is ``"1"``), a missing value as ``"<missing>"``; a group not seen when
choosing gets :data:`DEFAULT` (0.5, the plain classifier's boundary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeflow.governance.fairness import MISSING, bias_metrics

METHOD = "group_thresholds"
OBJECTIVES = ("demographic_parity", "true_positive_rate_parity", "equalized_odds")
#: the threshold of a group not seen when choosing (the plain binary classifier's boundary)
DEFAULT = 0.5
#: the target rates tried, 0 to 1 in steps of 0.01
GRID = 101
DIFFERENCES = ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference")


@dataclass(frozen=True)
class GroupThresholds:
    """A version's thresholds, as recorded: applied to class probabilities."""

    attribute: str
    positive: str  # the positive class, as text
    thresholds: dict[str, float] = field(default_factory=dict)
    default: float = DEFAULT

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GroupThresholds | None:
        """The thresholds of a version record; ``None`` when it has none."""
        m = record.get("mitigation")
        if not isinstance(m, dict) or m.get("method") != METHOD:
            return None
        return cls(
            attribute=str(m["attribute"]),
            positive=str(m["positive"]),
            thresholds={str(k): float(v) for k, v in (m.get("thresholds") or {}).items()},
            default=float(m.get("default", DEFAULT)),
        )

    def apply(self, proba: Any, classes: Any, groups: Any) -> Any:
        """Labels (from ``classes``, the model's ``classes_``) for rows with these probabilities
        (rows x classes) and group values: the positive class where its probability is at least
        the group's threshold."""
        import numpy as np

        labels = np.asarray(classes)
        texts = [str(c.item() if hasattr(c, "item") else c) for c in labels]
        if len(texts) != 2 or self.positive not in texts:
            raise ValueError(
                f"group thresholds are for a binary classifier with class {self.positive!r}; "
                f"the model's classes are {', '.join(texts)}"
            )
        pos = texts.index(self.positive)
        proba = np.asarray(proba, dtype=float)
        cut = self.cuts(groups)
        return np.where(proba[:, pos] >= cut, labels[pos], labels[1 - pos])

    def cuts(self, groups: Any) -> Any:
        """The threshold of each row."""
        import numpy as np

        codes, names = group_codes(groups)
        per_name = np.asarray([self.thresholds.get(n, self.default) for n in names] + [0.0])
        return per_name[codes] if len(codes) else np.empty(0)


def group_codes(values: Any) -> tuple[Any, list[str]]:
    """Integer codes of the group values and the text of each code (missing: ``<missing>``;
    vectorised with pd.factorize)."""
    import numpy as np
    import pandas as pd

    if isinstance(values, pd.Series):
        values = values.reset_index(drop=True)
    elif not isinstance(values, np.ndarray | pd.Index | pd.Categorical):
        values = np.asarray(values, dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    names = [_text(v) for v in uniques]
    codes = np.asarray(codes)
    if (codes < 0).any():
        names.append(MISSING)
        codes = np.where(codes < 0, len(names) - 1, codes)
    # values with the same text (1 and 1.0) share one code
    order = sorted(set(names))
    position = {n: i for i, n in enumerate(order)}
    remap = np.asarray([position[n] for n in names], dtype=np.int64)
    return (remap[codes] if len(codes) else codes), order


def _text(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_binary(model: Any, field_name: str, task: str | None) -> list[str]:
    """The model's classes as text; a ``ValueError`` naming ``field_name`` unless it is a binary
    classifier with class probabilities."""
    classes = getattr(model, "classes_", None)
    if classes is None or task == "regression":
        raise ValueError(
            f"{field_name}: group thresholds need a binary classifier; this model is a regressor"
        )
    texts = [_text(c) for c in classes]
    if len(texts) != 2:
        raise ValueError(
            f"{field_name}: group thresholds need a binary classifier; this model has "
            f"{len(texts)} classes ({', '.join(texts)})"
        )
    if not hasattr(model, "predict_proba"):
        raise ValueError(
            f"{field_name}: group thresholds need class probabilities; this model has no predict_proba"
        )
    return texts


def mitigate(
    model: Any,
    X: Any,
    y: Any,
    groups: Any,
    *,
    attribute: str,
    objective: str,
    validation: float,
    tolerance: float,
    min_rows: int,
    positive: str | None = None,
    seed: int = 0,
    task: str | None = None,
    field_name: str = "bias.mitigate",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bias metrics of the mitigated predictions on the held-out rows, the ``mitigation``
    record). ``X``, ``y`` and ``groups`` are the labelled evaluation rows, position for position.
    See the module docstring."""
    import numpy as np

    if objective not in OBJECTIVES:
        raise ValueError(f"{field_name}.objective: expected one of {', '.join(OBJECTIVES)}")
    texts = check_binary(model, field_name, task)
    if positive is None:
        positive = texts[1]
    elif positive not in texts:
        raise ValueError(
            f"{field_name}.positive: {positive!r} is not a class of the model "
            f"(classes: {', '.join(texts)})"
        )
    y_text = _labels(np.asarray(y, dtype=object))
    codes, names = group_codes(groups)
    choose = _split(codes, y_text, validation, seed)
    held = ~choose
    if choose.sum() == 0 or held.sum() == 0:
        raise ValueError(
            f"{field_name}.validation: {validation} of {len(y_text)} rows leaves "
            f"{int(choose.sum())} to choose thresholds on and {int(held.sum())} to measure them: "
            "both need rows"
        )
    proba = np.asarray(model.predict_proba(X), dtype=float)
    score = proba[:, texts.index(positive)]
    truth = y_text == positive
    thresholds, met, reached = _choose(
        score[choose], truth[choose], codes[choose], names, objective, tolerance, min_rows
    )
    chosen = GroupThresholds(attribute, positive, thresholds)
    classes = model.classes_
    before = np.asarray(model.predict(X), dtype=object)
    after = chosen.apply(proba, classes, groups)
    group_values = np.asarray(groups, dtype=object)
    measured = {}
    for when, predicted in (("before", before), ("after", after)):
        labels = _labels(predicted[held])
        metrics = bias_metrics(
            y_text[held], labels, group_values[held], attribute=attribute, min_rows=min_rows
        )
        accuracy = float(np.mean(y_text[held] == labels))
        measured[when] = (metrics, {"accuracy": accuracy, **{d: metrics[d] for d in DIFFERENCES}})
    record = {
        "method": METHOD,
        "objective": objective,
        "attribute": attribute,
        "dtype": _expect(groups),
        "positive": positive,
        "thresholds": thresholds,
        "default": DEFAULT,
        "tolerance": tolerance,
        "met": met,
        "difference_on_validation": reached,
        "validation": validation,
        "seed": seed,
        "rows": {"validation": int(choose.sum()), "held_out": int(held.sum())},
        "before": measured["before"][1],
        "after": measured["after"][1],
    }
    return measured["after"][0], record


def _labels(values: Any) -> Any:
    """Labels as text (as the bias metrics compare them)."""
    import numpy as np

    return np.asarray([_text(v) for v in values], dtype=object)


def _expect(groups: Any) -> str:
    """How a request gives the attribute (when it is not a model feature): number, boolean or
    string."""
    import pandas as pd

    series = pd.Series(groups)
    if pd.api.types.is_bool_dtype(series.dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "number"
    return "string"


def _split(codes: Any, y_text: Any, fraction: float, seed: int) -> Any:
    """Validation rows (True): ``fraction`` of every (group, label) cell, rounded, chosen with
    ``seed``; the rest are held out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    choose = np.zeros(len(codes), dtype=bool)
    cells: dict[tuple[int, str], list[int]] = {}
    for i, key in enumerate(zip(codes.tolist(), y_text.tolist(), strict=True)):
        cells.setdefault(key, []).append(i)
    for key in sorted(cells, key=lambda k: (k[0], str(k[1]))):
        rows = np.asarray(cells[key])
        picked = rng.permutation(len(rows))[: int(round(fraction * len(rows)))]
        choose[rows[picked]] = True
    return choose


def _choose(
    score: Any,
    truth: Any,
    codes: Any,
    names: list[str],
    objective: str,
    tolerance: float,
    min_rows: int,
) -> tuple[dict[str, float], bool, float]:
    """(thresholds by group name, whether the best is within ``tolerance``, its difference on
    these rows)."""
    import numpy as np

    by_tpr = objective != "demographic_parity"
    eligible = []
    for k in range(len(names)):
        rows = codes == k
        if rows.sum() >= min_rows and (not by_tpr or truth[rows].any()):
            eligible.append(k)
    candidates: list[dict[int, float]] = [{}]  # everyone at DEFAULT
    for rate in np.linspace(0.0, 1.0, GRID):
        cuts = {}
        for k in eligible:
            base = score[(codes == k) & truth] if by_tpr else score[codes == k]
            cuts[k] = _cut(np.sort(base)[::-1], rate)
        candidates.append(cuts)
    best: tuple[Any, ...] | None = None
    for index, cuts in enumerate(candidates):
        per_row = np.asarray([cuts.get(k, DEFAULT) for k in range(len(names))])[codes]
        predicted = score >= per_row
        difference = _difference(predicted, truth, codes, eligible, objective)
        accuracy = float(np.mean(predicted == truth))
        within = difference <= tolerance + 1e-12
        key = (within, accuracy if within else -difference, -difference, -index)
        if best is None or key > best[0]:
            best = (key, cuts, within, difference)
    assert best is not None
    _, cuts, within, difference = best
    return {names[k]: round(float(t), 6) for k, t in cuts.items()}, bool(within), difference


def _cut(descending: Any, rate: float) -> float:
    """The threshold selecting the share ``rate`` of these scores (sorted, highest first): a
    midpoint between the last selected and the first left out."""
    import numpy as np

    n = len(descending)
    k = int(round(rate * n))
    if k <= 0:
        return (
            float(np.nextafter(descending[0], np.inf))
            if descending[0] >= 1.0
            else float((descending[0] + 1.0) / 2)
        )
    if k >= n:
        return float(descending[-1]) / 2
    return float((descending[k - 1] + descending[k]) / 2)


def _difference(predicted: Any, truth: Any, codes: Any, groups: list[int], objective: str) -> float:
    """The objective's difference between ``groups`` (selection rates, TPRs, or the larger of
    the TPR and FPR ranges)."""

    if len(groups) < 2:
        return 0.0
    rates: dict[str, list[float]] = {"selection": [], "tpr": [], "fpr": []}
    for k in groups:
        rows = codes == k
        rates["selection"].append(float(predicted[rows].mean()))
        pos, neg = rows & truth, rows & ~truth
        if pos.any():
            rates["tpr"].append(float(predicted[pos].mean()))
        if neg.any():
            rates["fpr"].append(float(predicted[neg].mean()))

    def spread(values: list[float]) -> float:
        return max(values) - min(values) if len(values) > 1 else 0.0

    if objective == "demographic_parity":
        return spread(rates["selection"])
    if objective == "true_positive_rate_parity":
        return spread(rates["tpr"])
    return max(spread(rates["tpr"]), spread(rates["fpr"]))


__all__ = ["DEFAULT", "METHOD", "OBJECTIVES", "GroupThresholds", "check_binary", "mitigate"]
