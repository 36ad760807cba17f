"""The ``transform`` stage: declarative column operations, applied in order.

::

    tidy:
      type: transform
      inputs: {data: raw, policies: policies}    # `data` is transformed; other inputs can be joined
      with:
        steps:
          - rename: {Price: price, "Rating %": rating}
          - strings: {category: [strip, lower]}
          - parse_currency: [price]              # "$12,400.50" -> 12400.5
          - parse_percent: [rating]              # "87%" -> 0.87
          - parse_bool: [garage]                 # yes/no, t/f, true/false, 1/0
          - map: {category: {flood: water_damage}}
          - cast: {rooms: int, region: category}
          - fill: {region: unknown}
          - derive: {price_per_room: "price / rooms"}
          - filter: "price > 0"
          - dropna: [price]
          - dedupe: [listing_id]                 # keep the first of each
          - join: {input: policies, on: policy_id, how: left}
          - drop: [notes]
          - select: [listing_id, price, rating]

Each step is one small, named operation, so a spec reads as what happens to the data, and each
is checked when the spec is compiled (an unknown step or a misspelt option is a spec error with
its line). A value a parse step cannot read becomes missing, and the stage logs how many per
column: pair it with a ``validate`` stage to quarantine those rows rather than guess. For anything
these steps cannot say, use a ``python`` stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeflow.core.stage import Port, Stage, StageConfig, StageContext

CastType = Literal["int", "float", "string", "bool", "datetime", "category"]
StringOp = Literal["strip", "lower", "upper", "title", "collapse_spaces"]
_TRUE = {"true", "yes", "y", "t", "1", "on"}
_FALSE = {"false", "no", "n", "f", "0", "off"}


class Join(StageConfig):
    input: str = Field(description="the other input's port name")
    on: str | list[str] = Field(description="key column(s), present in both")
    how: Literal["left", "inner", "right", "outer"] = "left"
    suffix: str = Field(
        "_right", description="suffix for clashing column names from the other table"
    )


class Step(StageConfig):
    """Exactly one operation per step."""

    rename: dict[str, str] | None = None
    drop: list[str] | None = None
    select: list[str] | None = None
    strings: dict[str, list[StringOp]] | None = None
    parse_currency: list[str] | None = None
    parse_percent: list[str] | None = None
    parse_bool: list[str] | None = None
    map: dict[str, dict[str, Any]] | None = None
    cast: dict[str, CastType] | None = None
    fill: dict[str, Any] | None = None
    derive: dict[str, str] | None = None
    filter: str | None = None
    dropna: list[str] | None = None
    dedupe: list[str] | None = None
    join: Join | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(
                f"each step is exactly one operation ({names}); got {', '.join(given) or 'none'}"
            )
        return self

    @property
    def op(self) -> tuple[str, Any]:
        name = next(n for n in type(self).model_fields if getattr(self, n) is not None)
        return name, getattr(self, name)


class TransformConfig(StageConfig):
    steps: Annotated[list[Step], Field(min_length=1, description="operations, applied in order")]


class TransformStage(Stage[TransformConfig]):
    """Declarative column operations (rename, parse, cast, fill, derive, filter, dedupe, join, ...)."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "data": Port("table", description="the table to transform")
    }
    extra_inputs = Port("table", required=False, description="other tables, for join steps")
    outputs: ClassVar[Mapping[str, Port]] = {
        "out": Port("table", description="the transformed table")
    }
    description = "Declarative column operations: rename, parse currency/percent/bool, cast, fill, derive, filter, dedupe, join."

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        config = self.config
        frame = inputs["data"].copy()
        for number, step in enumerate(config.steps, start=1):
            name, arg = step.op
            try:
                frame = _OPS[name](frame, arg, inputs, ctx)
            except KeyError as err:
                raise ValueError(
                    f"step {number} ({name}): column {err} not found (columns: {', '.join(map(str, frame.columns))})"
                ) from None
            except (ValueError, TypeError) as err:
                raise ValueError(f"step {number} ({name}): {err}") from None
        return {"out": frame}


def _columns(frame: Any, names: list[str]) -> None:
    for name in names:
        if name not in frame.columns:
            raise KeyError(name)


def _rename(frame: Any, mapping: dict[str, str], *_: Any) -> Any:
    _columns(frame, list(mapping))
    return frame.rename(columns=mapping)


def _drop(frame: Any, names: list[str], *_: Any) -> Any:
    _columns(frame, names)
    return frame.drop(columns=names)


def _select(frame: Any, names: list[str], *_: Any) -> Any:
    _columns(frame, names)
    return frame[names]


def _strings(frame: Any, spec: dict[str, list[str]], *_: Any) -> Any:
    _columns(frame, list(spec))
    for column, ops in spec.items():
        text = frame[column].astype("string")
        for op in ops:
            text = (
                text.str.replace(r"\s+", " ", regex=True).str.strip()
                if op == "collapse_spaces"
                else getattr(text.str, op)()
            )
        frame[column] = text
    return frame


def _parsed(frame: Any, columns: list[str], parse: Any, what: str, ctx: StageContext) -> Any:
    import pandas as pd

    _columns(frame, columns)
    for column in columns:
        original = frame[column]
        parsed = parse(original.astype("string"))
        lost = int(
            (original.notna() & parsed.isna() & original.astype("string").str.strip().ne("")).sum()
        )
        if lost:
            ctx.logger.warning(
                "%s: %d value(s) of '%s' are not %s and became missing",
                ctx.stage,
                lost,
                column,
                what,
            )
        frame[column] = parsed if what == "a boolean" else pd.to_numeric(parsed, errors="coerce")
    return frame


def _parse_currency(frame: Any, columns: list[str], _inputs: Any, ctx: StageContext) -> Any:
    import pandas as pd

    def parse(text: Any) -> Any:
        cleaned = text.str.strip()
        negative = cleaned.str.startswith("(") & cleaned.str.endswith(")")  # accounting negatives
        cleaned = cleaned.str.replace(r"[()\s,$€£¥]|USD|EUR|GBP", "", regex=True)
        numbers = pd.to_numeric(cleaned, errors="coerce").astype("Float64")
        return numbers.where(~negative.fillna(False), -numbers)

    return _parsed(frame, columns, parse, "an amount", ctx)


def _parse_percent(frame: Any, columns: list[str], _inputs: Any, ctx: StageContext) -> Any:
    import pandas as pd

    def parse(text: Any) -> Any:
        stripped = text.str.strip()
        has_sign = stripped.str.endswith("%").fillna(False)
        numbers = pd.to_numeric(stripped.str.rstrip("%").str.strip(), errors="coerce").astype(
            "Float64"
        )
        return numbers.where(~has_sign, numbers / 100)

    return _parsed(frame, columns, parse, "a percentage", ctx)


def _parse_bool(frame: Any, columns: list[str], _inputs: Any, ctx: StageContext) -> Any:
    def parse(text: Any) -> Any:
        lowered = text.str.strip().str.lower()
        return lowered.map(
            lambda v: True if v in _TRUE else (False if v in _FALSE else None), na_action="ignore"
        ).astype("boolean")

    return _parsed(frame, columns, parse, "a boolean", ctx)


def _map(frame: Any, spec: dict[str, dict[str, Any]], *_: Any) -> Any:
    _columns(frame, list(spec))
    for column, mapping in spec.items():
        frame[column] = frame[column].map(
            lambda v, m=mapping: m.get(v, m.get(str(v), v)) if v is not None else v
        )
    return frame


def _cast(frame: Any, spec: dict[str, str], *_: Any) -> Any:
    import pandas as pd

    _columns(frame, list(spec))
    for column, kind in spec.items():
        series = frame[column]
        if kind in ("int", "float"):
            numbers = pd.to_numeric(series, errors="coerce")
            bad = series.notna() & numbers.isna()
            if bad.any():
                raise ValueError(
                    f"column '{column}': {series[bad].iloc[0]!r} is not a number ({int(bad.sum())} such value(s)); parse or clean it first"
                )
            if kind == "int":
                if (numbers.dropna() != numbers.dropna().round()).any():
                    raise ValueError(
                        f"column '{column}' has fractional values; it cannot be cast to int"
                    )
                frame[column] = numbers.astype("Int64")
            else:
                frame[column] = numbers.astype("float64")
        elif kind == "datetime":
            frame[column] = pd.to_datetime(series, errors="coerce", format="mixed")
        elif kind == "bool":
            frame[column] = series.astype("boolean")
        else:
            frame[column] = series.astype("string" if kind == "string" else "category")
    return frame


def _fill(frame: Any, spec: dict[str, Any], *_: Any) -> Any:
    _columns(frame, list(spec))
    for column, value in spec.items():
        if value in ("mean", "median") and frame[column].dtype.kind in "iuf":
            value = getattr(frame[column], value)()
        frame[column] = frame[column].fillna(value)
    return frame


_SAFE_EXPR = re.compile(r"^[\w\s.+\-*/%()<>=!&|~,'\"]*$")


def _check_expression(expression: str) -> None:
    if not _SAFE_EXPR.match(expression) or "__" in expression or "@" in expression:
        raise ValueError(
            f"expression {expression!r} may use column names, numbers, strings and + - * / % ( ) comparisons & | ~ only"
        )


def _derive(frame: Any, spec: dict[str, str], *_: Any) -> Any:
    for column, expression in spec.items():
        _check_expression(expression)
        try:
            frame[column] = frame.eval(expression, engine="python")
        except Exception as err:  # pandas raises many types for a bad expression
            raise ValueError(f"cannot compute '{column}' = {expression!r}: {err}") from None
    return frame


def _filter(frame: Any, expression: str, *_: Any) -> Any:
    _check_expression(expression)
    try:
        return frame.query(expression, engine="python")
    except Exception as err:
        raise ValueError(f"cannot filter by {expression!r}: {err}") from None


def _dropna(frame: Any, columns: list[str], *_: Any) -> Any:
    _columns(frame, columns)
    return frame.dropna(subset=columns)


def _dedupe(frame: Any, columns: list[str], *_: Any) -> Any:
    _columns(frame, columns)
    return frame.drop_duplicates(subset=columns or None, keep="first")


def _join(frame: Any, join: Join, inputs: dict[str, Any], _ctx: Any) -> Any:
    other = inputs.get(join.input)
    if other is None:
        raise ValueError(
            f"no input named '{join.input}' to join (inputs: {', '.join(sorted(inputs))})"
        )
    keys = [join.on] if isinstance(join.on, str) else join.on
    _columns(frame, keys)
    missing = [k for k in keys if k not in other.columns]
    if missing:
        raise ValueError(
            f"join key(s) {', '.join(missing)} not in input '{join.input}' (columns: {', '.join(map(str, other.columns))})"
        )
    if other.duplicated(subset=keys).any() and join.how in ("left", "inner"):
        raise ValueError(
            f"input '{join.input}' has several rows per {keys}: the join would multiply rows; dedupe it first"
        )
    return frame.merge(other, on=keys, how=join.how, suffixes=("", join.suffix), validate=None)


_OPS: dict[str, Any] = {
    "rename": _rename,
    "drop": _drop,
    "select": _select,
    "strings": _strings,
    "parse_currency": _parse_currency,
    "parse_percent": _parse_percent,
    "parse_bool": _parse_bool,
    "map": _map,
    "cast": _cast,
    "fill": _fill,
    "derive": _derive,
    "filter": _filter,
    "dropna": _dropna,
    "dedupe": _dedupe,
    "join": _join,
}
