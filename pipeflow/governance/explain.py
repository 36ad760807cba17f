"""Explanations per prediction: how much each input column moved one row's output.

For a row, an explanation is a ``base`` and one contribution per input column (the columns a
caller sends) such that ``base + sum(contributions)`` equals the model's output for that row,
exactly (to float rounding). Which output, and how, depends on the final estimator:

- **xgboost** (``method: xgboost``): the booster's own exact tree SHAP
  (``pred_contribs=True``); the output is the margin (``output_margin=True``: log-odds for a
  binary classifier, the raw score of a regressor); the bias column is the base. No background.
  xgboost computes in float32: the base takes the sum's rounding (it differs from the bias by
  about 1e-7 of the margin), so base and contributions add up to the margin it reports.
- **linear models** (``method: linear``; scikit-learn's ``linear_model`` estimators and linear
  SVMs): ``coef × (x − mean)`` per transformed column, where ``x`` is the row after the
  pipeline's preprocessing (scaled numbers, one-hot columns, TF-IDF terms) and ``mean`` the mean
  of the background rows after it; the base is ``intercept + coef · mean``. The output is the
  margin (``decision_function``: log-odds of a logistic regression; ``predict`` of a
  regressor). Without a profile ``mean`` is 0 and the base the intercept: still exact.
- **anything else** (``method: kernel``): KernelSHAP in numpy, on the *input* columns. The value
  of a coalition of columns is the mean output over ``BACKGROUND_ROWS`` background rows with the
  coalition's columns set to the row's values; the contributions are the weighted least-squares
  fit of those values with the Shapley kernel's weights, constrained to sum to
  ``f(x) − mean f(background)`` (so additivity is exact whatever the sample), the base being
  ``mean f(background)``. With at most ``MAX_COALITIONS`` coalitions every one is evaluated and
  the values are the exact Shapley values of that value function (up to 8 columns); beyond, that
  many are sampled (in complementary pairs, sizes by the kernel's weight, seed 0: the same row
  always gets the same answer). **Cost**: ``evaluations`` = coalitions × background rows model
  evaluations per row (at most 256 × 10 = 2,560), reported with each explanation. The output
  is the margin where the estimator has ``decision_function``, else the class probability
  (forests, k-NN), else the prediction (regressors).

The background rows come from the version's stored training profile (the registry keeps it with
the version, :mod:`pipeflow.governance.profile`; no training rows are stored): each numeric
column's values at ``BACKGROUND_ROWS`` evenly spaced quantiles of its histogram, each
categorical column's categories in proportion to their counts, text as empty, dates as the
earliest; each column shuffled on its own (seed 0), so the columns are independent, as
KernelSHAP assumes. A version without a profile is explained by xgboost or linear models only
(:class:`~pipeflow.errors.ExplainUnavailable` otherwise).

**Back to the input columns.** The exact methods work on the transformed columns; each one's
contribution is added to the input column it comes from, read from the preprocessing's
``get_feature_names_out``: a ColumnTransformer names each output ``<transformer>__<name>``, the
transformer's own input columns are known (``transformers_``), and a transformer of one column
gives it all its outputs; for several, the output name is matched to the column it starts with
(``region_north`` -> ``region``) or is. An output that matches none is given to a group named
``a+b`` of its transformer's columns (sums stay exact). Preprocessing without
``get_feature_names_out`` falls back to the kernel method.

**Classes.** Binary classifiers are explained for the second class (``classes_[1]``, the positive
one, whose log-odds ``decision_function`` gives): the base is then one number for every row.
Multiclass classifiers are explained for each row's predicted class (the largest margin), named
in ``class``. Regressors have no ``class``.

Pure computation, as the rest of :mod:`pipeflow.governance`: an :class:`Explainer` is built once
per model version (:func:`explainer_for`) and holds no model (it pickles small, to Dask workers
with each task); :meth:`Explainer.explain` takes the model and the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeflow.errors import ExplainUnavailable

BACKGROUND_ROWS = 10
MAX_COALITIONS = 256
#: model evaluations per predict call of the kernel method (rows × coalitions × background)
EVAL_CHUNK = 100_000
# estimators of linear_model whose predict is not X·coef + intercept (a link function)
_GLM = ("PoissonRegressor", "GammaRegressor", "TweedieRegressor")


@dataclass
class Explanation:
    """The explanations of n rows: ``base`` (n,), ``values`` (n, len(names)), ``classes`` (the
    class explained per row; None for a regressor), and the kernel's ``evaluations`` per row."""

    method: str
    output: str  # margin | probability | value
    names: list[str]
    base: Any
    values: Any
    classes: list[Any] | None = None
    evaluations: int | None = None

    def _head(self) -> dict[str, Any]:
        head: dict[str, Any] = {"method": self.method, "output": self.output}
        if self.evaluations is not None:
            head["evaluations"] = self.evaluations
        return head

    def rows(self) -> list[dict[str, Any]]:
        """One ``{"method", "output", "base", "contributions": {column: value}}`` per row (plus
        ``class`` for classifiers, ``evaluations`` for the kernel method)."""
        head = self._head()
        out = []
        for i, (base, values) in enumerate(
            zip(self.base.tolist(), self.values.tolist(), strict=True)
        ):
            row = {
                **head,
                "base": base,
                "contributions": dict(zip(self.names, values, strict=True)),
            }
            if self.classes is not None:
                row["class"] = self.classes[i]
            out.append(row)
        return out

    def record(self) -> dict[str, Any]:
        """The rows' explanations as columns, for an audit record (:mod:`pipeflow.store.journal`):
        ``base`` and ``class`` as lists, ``contributions`` as ``{column: [values]}``."""
        out = {
            **self._head(),
            "base": self.base.tolist(),
            "contributions": {n: self.values[:, j].tolist() for j, n in enumerate(self.names)},
        }
        if self.classes is not None:
            out["class"] = list(self.classes)
        return out


@dataclass
class Explainer:
    """How one model version is explained (see the module docstring); no model inside."""

    method: str  # xgboost | linear | kernel
    features: list[str]  # the input columns, in signature order
    names: list[str]  # the contributions' keys: input columns (and groups of them)
    classes: list[Any] | None  # the model's classes_ (None: a regressor)
    output: str = "margin"
    sources: Any = None  # xgboost/linear: index into names of each transformed column
    mean: Any = None  # linear: the transformed background's mean per column
    background: Any = None  # kernel: the background rows (a DataFrame)
    base0: Any = None  # kernel: mean output over the background per output column
    coalitions: Any = None  # kernel: (m, M) bool
    projection: Any = None  # kernel: (M-1, m) the constrained least-squares solve

    @property
    def evaluations(self) -> int | None:
        if self.method != "kernel":
            return None
        return int(len(self.coalitions) * len(self.background))

    def explain(self, model: Any, X: Any) -> Explanation:  # noqa: N803 (sklearn naming)
        """The explanations of the rows of ``X`` (a DataFrame of the input columns) by
        ``model`` (the one this explainer was built for)."""
        X = X[self.features]
        if self.method == "kernel":
            base, values, cls = self._kernel(model, X)
        else:
            base, values, cls = self._exact(model, X)
        classes = None if self.classes is None else [self.classes[k] for k in cls]
        return Explanation(
            self.method, self.output, self.names, base, values, classes, self.evaluations
        )

    # ------------------------------------------------------------------------ exact methods

    def _exact(self, model: Any, X: Any) -> tuple[Any, Any, Any]:
        import numpy as np

        prepare, estimator = final_estimator(model)
        Xt = X if prepare is None else prepare.transform(X)
        if not _is_sparse(Xt):
            Xt = np.asarray(Xt, dtype=float)
        width = Xt.shape[1]
        if width != len(self.sources):
            raise ValueError(
                f"the preprocessing gave {width} columns; {len(self.sources)} were mapped"
            )
        onto = _onto(self.sources, len(self.names))  # (width, names) 0/1
        if self.method == "xgboost":
            import xgboost

            dm = xgboost.DMatrix(Xt)
            booster = estimator.get_booster()
            contribs = np.asarray(booster.predict(dm, pred_contribs=True, validate_features=False))
            margin = np.asarray(booster.predict(dm, output_margin=True, validate_features=False))
            if contribs.ndim == 3:  # multiclass: (rows, classes, features + 1)
                cls = margin.argmax(axis=1)
                contribs = contribs[np.arange(len(cls)), cls]
                margin = margin[np.arange(len(cls)), cls]
            else:
                cls = np.ones(len(contribs), dtype=int)
            values = _dense(contribs[:, :-1].astype(float) @ onto)
            # float32 sums: the base (the bias column) takes the rounding, so that the base and
            # the contributions add up to the margin xgboost reports, exactly
            return margin.astype(float) - values.sum(axis=1), values, cls
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=float))
        intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=float))
        mean = self.mean if self.mean is not None else np.zeros(coef.shape[1])
        if coef.shape[0] == 1:
            ks = np.ones(Xt.shape[0], dtype=int)
            rows_k = [(0, np.arange(Xt.shape[0]))]
        else:
            margins = _dot(Xt, coef.T) + intercept
            ks = margins.argmax(axis=1)
            rows_k = [(k, np.flatnonzero(ks == k)) for k in range(coef.shape[0])]
        base = np.empty(Xt.shape[0])
        values = np.empty((Xt.shape[0], len(self.names)))
        for k, rows in rows_k:
            if not len(rows):
                continue
            w = coef[k]
            part = Xt[rows]
            scaled = part.multiply(w) if _is_sparse(part) else part * w
            values[rows] = _dense(scaled @ onto) - _dense(onto.T @ (w * mean))
            base[rows] = intercept[k] + float(w @ mean)
        return base, values, ks

    # --------------------------------------------------------------------------- the kernel

    def _kernel(self, model: Any, X: Any) -> tuple[Any, Any, Any]:
        import numpy as np
        import pandas as pd

        Z, B = self.coalitions, self.background
        m, M, k = len(Z), len(self.features), len(B)
        fx = _output(model, X, self.output, self.classes)  # (n, C)
        cls = (
            fx.argmax(axis=1)
            if fx.shape[1] > 1
            else np.full(len(fx), 1 if self.classes is not None else 0)
        )
        column = np.where(fx.shape[1] > 1, cls, 0)
        n = len(X)
        delta = fx[np.arange(n), column] - self.base0[column]
        values = np.empty((n, M))
        if M == 1:
            values[:, 0] = delta
            return self.base0[column].astype(float), values, cls
        per = max(1, EVAL_CHUNK // (m * k))
        for start in range(0, n, per):
            rows = slice(start, min(n, start + per))
            part = X.iloc[rows]
            r = len(part)
            data = {}
            for j, name in enumerate(self.features):
                x = part[name].to_numpy(dtype=object if part[name].dtype == object else None)
                b = B[name].to_numpy(dtype=x.dtype if x.dtype == object else None)
                data[name] = np.where(
                    Z[None, :, j, None], x[:, None, None], b[None, None, :]
                ).reshape(-1)
            frame = pd.DataFrame(data)
            for name in self.features:
                if frame[name].dtype != part[name].dtype:
                    frame[name] = frame[name].astype(part[name].dtype)
            out = _output(model, frame, self.output, self.classes)  # (r*m*k, C)
            v = out.reshape(r, m, k, -1).mean(axis=2)  # (r, m, C)
            col = column[rows]
            v = v[np.arange(r), :, col] - self.base0[col][:, None]  # (r, m)
            d = delta[rows]
            target = v - Z[None, :, -1] * d[:, None]
            head = target @ self.projection.T  # (r, M-1)
            values[rows, :-1] = head
            values[rows, -1] = d - head.sum(axis=1)
        return self.base0[column].astype(float), values, cls


# ------------------------------------------------------------------------------- building


def explainer_for(model: Any, record: dict[str, Any], features: list[str]) -> Explainer:
    """The :class:`Explainer` of ``model`` (a version's loaded model; ``record`` its registry
    record, whose ``reference`` profile gives the background) over the input ``features``."""
    import numpy as np

    raw = getattr(model, "classes_", None)
    classes = [c.item() if hasattr(c, "item") else c for c in raw] if raw is not None else None
    classes = classes or None
    prepare, estimator = final_estimator(model)
    background = background_rows(record, features)
    method = _exact_method(estimator)
    if method is not None:
        try:
            names, sources = output_sources(prepare, features)
        except Exception:  # the preprocessing does not say where its columns come from
            method = None
    if method is not None:
        mean = None
        if method == "linear" and background is not None:
            Xt = background if prepare is None else prepare.transform(background)
            mean = np.asarray(Xt.mean(axis=0), dtype=float).reshape(-1)
        return Explainer(method, list(features), names, classes, "margin", sources, mean)
    if background is None:
        raise ExplainUnavailable(
            f"{record.get('name')}@{record.get('version')}: {type(estimator).__name__} has no "
            "exact explanation method (xgboost, linear models) and the version has no training "
            "profile to draw the kernel method's background rows from"
        )
    if classes is not None and hasattr(estimator, "decision_function"):
        output = "margin"
    elif classes is not None:
        output = "probability"
    else:
        output = "value"
    Z, weights = coalitions(len(features))
    base0 = _output(model, background, output, classes).mean(axis=0)
    return Explainer(
        "kernel",
        list(features),
        list(features),
        classes,
        output,
        background=background,
        base0=base0,
        coalitions=Z,
        projection=_projection(Z, weights),
    )


def final_estimator(model: Any) -> tuple[Any, Any]:
    """(preprocessing or None, final estimator): see
    :func:`pipeflow.governance.importance.final_estimator`."""
    from pipeflow.governance.importance import final_estimator as split

    return split(model)


def _exact_method(estimator: Any) -> str | None:
    module = type(estimator).__module__
    if module.startswith("xgboost") and hasattr(estimator, "get_booster"):
        return "xgboost"
    if (
        module.startswith(("sklearn.linear_model", "sklearn.svm"))
        and type(estimator).__name__ not in _GLM
        and hasattr(estimator, "coef_")
        and hasattr(estimator, "intercept_")
    ):
        import numpy as np

        rows = np.atleast_2d(estimator.coef_).shape[0]
        classes = getattr(estimator, "classes_", None)
        if rows == 1 or (classes is not None and rows == len(classes)):
            return "linear"
    return None


def output_sources(prepare: Any, features: list[str]) -> tuple[list[str], Any]:
    """(contribution keys, index of each transformed column's key): see the module docstring,
    "Back to the input columns". Raises when the preprocessing cannot name its outputs."""
    import numpy as np

    if prepare is None:
        return list(features), np.arange(len(features))
    out = [str(n) for n in prepare.get_feature_names_out()]
    owners = _transformer_columns(prepare, features)
    names = list(features)
    index = {n: i for i, n in enumerate(names)}
    sources = []
    for name in out:
        columns = features
        rest = name
        if owners is not None and "__" in name:
            head, _, tail = name.partition("__")
            if head in owners:
                columns, rest = owners[head], tail
        source = _match(rest, columns)
        if source is None:
            source = "+".join(columns)
            if source not in index:
                index[source] = len(names)
                names.append(source)
        sources.append(index[source])
    return names, np.asarray(sources, dtype=int)


def _transformer_columns(prepare: Any, features: list[str]) -> dict[str, list[str]] | None:
    """{transformer name: its input columns} of the ColumnTransformer that ``prepare`` is or
    starts with; None without one."""
    ct = prepare
    steps = getattr(prepare, "steps", None)
    if steps:
        ct = steps[0][1]
    if not hasattr(ct, "transformers_"):
        return None
    names_in = [str(c) for c in getattr(ct, "feature_names_in_", features)]
    owners = {}
    for name, _, columns in ct.transformers_:
        if isinstance(columns, str):
            columns = [columns]
        picked = []
        for c in list(columns):
            if isinstance(c, bool):
                continue
            picked.append(names_in[c] if isinstance(c, int) else str(c))
        if hasattr(columns, "dtype") and columns.dtype == bool:
            picked = [n for n, keep in zip(names_in, columns, strict=True) if keep]
        owners[str(name)] = picked
    return owners


def _match(name: str, columns: list[str]) -> str | None:
    """The column an output ``name`` comes from: one column owns all; else the column it is,
    or the longest it starts with (``<column>_<category>``), or ends with."""
    if len(columns) == 1:
        return columns[0]
    if name in columns:
        return name
    starts = [c for c in columns if name.startswith(c + "_")]
    if starts:
        return max(starts, key=len)
    ends = [c for c in columns if name.endswith("_" + c)]
    return max(ends, key=len) if ends else None


def _onto(sources: Any, width: int) -> Any:
    """The (transformed columns, keys) 0/1 matrix that sums columns into their keys."""
    import numpy as np
    from scipy import sparse

    n = len(sources)
    return sparse.csr_matrix((np.ones(n), (np.arange(n), sources)), shape=(n, width))


def _is_sparse(X: Any) -> bool:  # noqa: N803
    return hasattr(X, "tocsr")


def _dense(X: Any) -> Any:  # noqa: N803
    """A plain float ndarray of a dense or sparse product."""
    import numpy as np

    return np.asarray(X.toarray() if _is_sparse(X) else X, dtype=float)


def _dot(X: Any, W: Any) -> Any:  # noqa: N803
    import numpy as np

    return np.asarray(X @ W) if _is_sparse(X) else np.asarray(X, dtype=float) @ W


def _output(model: Any, X: Any, output: str, classes: list[Any] | None) -> Any:  # noqa: N803
    """The explained output of the rows of ``X``, as (rows, 1) or, multiclass, (rows, classes);
    a binary classifier's probability column is the second class's."""
    import numpy as np

    prepare, estimator = final_estimator(model)
    Xt = X if prepare is None else prepare.transform(X)
    if output == "margin":
        out = np.asarray(estimator.decision_function(Xt), dtype=float)
    elif output == "probability":
        out = np.asarray(estimator.predict_proba(Xt), dtype=float)
        if out.shape[1] == 2:
            out = out[:, 1]
    else:
        out = np.asarray(estimator.predict(Xt), dtype=float)
    return out.reshape(len(out), -1)


def coalitions(features: int, budget: int = MAX_COALITIONS, seed: int = 0) -> tuple[Any, Any]:
    """(coalitions (m, M) bool, their weights): every non-trivial coalition with the Shapley
    kernel's weight when there are at most ``budget``; else ``budget`` sampled in complementary
    pairs, sizes drawn in proportion to the kernel's weight per size, each weighted 1."""
    import itertools

    import numpy as np

    M = features
    if M < 2:  # one column: its contribution is the whole difference, nothing to evaluate
        return np.zeros((0, max(M, 1)), dtype=bool), np.zeros(0)
    if budget >= 2**M - 2:
        Z = np.array(
            [z for z in itertools.product((False, True), repeat=M) if 0 < sum(z) < M], dtype=bool
        )
        sizes = Z.sum(axis=1)
        weights = (M - 1) / (np.array([math.comb(M, int(s)) for s in sizes]) * sizes * (M - sizes))
        return Z, weights
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, M)
    p = (M - 1) / (sizes * (M - sizes))
    p = p / p.sum()
    half = budget // 2
    Z = np.zeros((2 * half, M), dtype=bool)
    for i, s in enumerate(rng.choice(sizes, size=half, p=p)):
        chosen = rng.choice(M, size=int(s), replace=False)
        Z[2 * i, chosen] = True
        Z[2 * i + 1] = ~Z[2 * i]
    return Z, np.ones(len(Z))


def _projection(Z: Any, weights: Any) -> Any:  # noqa: N803
    """The (M-1, m) matrix giving the first M-1 contributions from a row's coalition values
    (less the base, less the last column's share): the least-squares solve with the sum of
    the contributions eliminated (the last one is what is left of the total)."""
    import numpy as np

    if Z.shape[1] < 2:
        return np.zeros((0, len(Z)))
    A = Z[:, :-1].astype(float) - Z[:, -1:].astype(float)
    AtW = A.T * weights
    return np.linalg.pinv(AtW @ A) @ AtW


# ----------------------------------------------------------------------------- background


def background_rows(
    record: dict[str, Any], features: list[str], rows: int = BACKGROUND_ROWS, seed: int = 0
) -> Any:
    """``rows`` background rows drawn from the version's training profile (see the module
    docstring), as a DataFrame of ``features``; None when the record holds no profile."""
    import numpy as np
    import pandas as pd

    profile = ((record.get("reference") or {}).get("features")) or {}
    if not profile:
        return None
    dtypes = {
        str(f.get("name")): str(f.get("dtype", ""))
        for f in (record.get("signature") or {}).get("features") or []
    }
    levels = (np.arange(rows) + 0.5) / rows
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for name in features:
        entry = profile.get(name) or {}
        role = entry.get("role")
        dtype = dtypes.get(name, "")
        if role == "numeric" or (role is None and _numeric(dtype)):
            values: Any = _numeric_levels(entry, levels)
        elif role == "text":
            values = np.array([""] * rows, dtype=object)
        elif role == "date":
            values = np.array([entry.get("min")] * rows, dtype=object)
        else:
            values = _category_levels(entry, levels)
            if dtype in ("bool", "boolean"):
                values = np.array(
                    [None if v is None else v == "True" for v in values], dtype=object
                )
        data[name] = values[rng.permutation(rows)]
    return pd.DataFrame(data, columns=list(features))


def _numeric(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))


def _numeric_levels(entry: dict[str, Any], levels: Any) -> Any:
    """The values at ``levels`` (0..1) of a numeric column's profile: its exact values when it
    has few, else its histogram read as piecewise uniform; its mean, or NaN, without either."""
    import numpy as np

    discrete = entry.get("discrete")
    if discrete and discrete.get("counts"):
        cdf = np.cumsum(discrete["counts"]) / np.sum(discrete["counts"])
        picks = np.minimum(np.searchsorted(cdf, levels, side="left"), len(cdf) - 1)
        return np.asarray(discrete["values"], dtype=float)[picks]
    hist = entry.get("sketch") or entry
    edges, counts = hist.get("edges"), hist.get("counts")
    if edges and counts and len(edges) == len(counts) + 1:
        cdf = np.r_[0.0, np.cumsum(counts) / np.sum(counts)]
        return np.interp(levels, cdf, np.asarray(edges, dtype=float))
    mean = entry.get("mean")
    return np.full(len(levels), float(mean) if mean is not None else np.nan)


def _category_levels(entry: dict[str, Any], levels: Any) -> Any:
    """The categories at ``levels`` (0..1) of a categorical column's counts, the most frequent
    first; None (missing) without any."""
    import numpy as np

    counts = entry.get("categories") or {}
    if not counts:
        return np.array([None] * len(levels), dtype=object)
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    cdf = np.cumsum([c for _, c in ordered]) / sum(c for _, c in ordered)
    picks = np.minimum(np.searchsorted(cdf, levels, side="left"), len(ordered) - 1)
    return np.array([ordered[i][0] for i in picks], dtype=object)
