"""``runs list --where``: a small filter language over what runs logged, parsed here and turned
into SQL with parameters (never by pasting values into the statement, and never by ``eval``).

::

    metrics.accuracy > 0.9 and params.optimizer = 'adam' and tags.team = "fraud"
    metrics.`val loss` <= 0.25            # backquotes around a name with spaces

- ``metrics.NAME OP NUMBER``, OP one of ``< <= > >= = != ==``: the run has a stage whose latest
  value of NAME (the one at its highest step) satisfies it — any stage that logged NAME, a
  stage reused from the store included (it carries the values logged when it ran);
- ``params.NAME = 'TEXT'`` or ``!=``: a param of the spec (``params:``, after ``--set``) or one
  a stage logged with ``ctx.log_param``; ``params.seed = 7`` compares the text ``7``. ``!=``
  needs the run to have the param (as in MLflow);
- ``tags.NAME = 'TEXT'`` or ``!=``; ``tags.NAME`` alone: the run has the tag;
- conditions joined by ``and`` (any case). There is no ``or``: run the command twice.

A mistake is a :class:`~pipeflow.errors.UsageError` that names the column of the problem and
shows it under a caret. Names follow :data:`pipeflow.core.tracking.NAME`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeflow.errors import UsageError

__all__ = ["LATEST", "Condition", "parse_where", "where_sql"]

KINDS = ("metrics", "params", "tags")
NUMERIC_OPS = ("<=", ">=", "!=", "==", "<", ">", "=")
TEXT_OPS = ("=", "==", "!=")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z0-9_.])
  | (?P<name>[A-Za-z_][A-Za-z0-9_\-/]*)
  | (?P<quoted>`[^`]*`)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op><=|>=|!=|==|<>|<|>|=)
  | (?P<dot>\.)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    """One parsed condition: ``kind.name op value`` (``op`` None: the tag exists)."""

    kind: str  # metrics | params | tags
    name: str
    op: str | None = None
    value: float | str | None = None


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    col: int  # 1-based


def _fail(text: str, col: int, message: str) -> UsageError:
    return UsageError(f"--where: {message} (column {col})\n  {text}\n  {' ' * (col - 1)}^")


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = (
                "a string needs its closing quote"
                if ch in "'\"`"
                else f"unexpected character {ch!r}"
            )
            raise _fail(text, pos + 1, hint)
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(_Tok(kind, m.group(), pos + 1))
        pos = m.end()
    return out


def parse_where(text: str) -> list[Condition]:
    """The conditions of a ``--where`` expression (see the module docstring), or a UsageError
    pointing at the first problem."""
    toks = _tokens(text)
    if not toks:
        raise _fail(text, 1, "empty expression: expected e.g. metrics.accuracy > 0.9")
    conds: list[Condition] = []
    i = 0
    end = len(text) + 1

    def at(j: int) -> _Tok | None:
        return toks[j] if j < len(toks) else None

    def col(j: int) -> int:
        t = at(j)
        return t.col if t is not None else end

    while True:
        t = at(i)
        if t is None or t.kind != "name" or t.text.lower() not in KINDS:
            got = "the end" if t is None else repr(t.text)
            raise _fail(text, col(i), f"expected metrics.NAME, params.NAME or tags.NAME, got {got}")
        kind = t.text.lower()
        if at(i + 1) is None or at(i + 1).kind != "dot":  # type: ignore[union-attr]
            raise _fail(text, col(i + 1), f"expected '.' and a name after {t.text!r}")
        name_tok = at(i + 2)
        name = _name(name_tok, toks, i + 2)
        if name is None:
            raise _fail(text, col(i + 2), f"expected a name after '{t.text}.'")
        name_text, i = name
        op_tok = at(i)
        if kind == "tags" and (op_tok is None or _is_and(op_tok)):
            conds.append(Condition("tags", name_text))
        else:
            if op_tok is None or op_tok.kind != "op":
                got = "the end" if op_tok is None else repr(op_tok.text)
                ops = "< <= > >= = !=" if kind == "metrics" else "= or !="
                raise _fail(
                    text,
                    col(i),
                    f"expected a comparison ({ops}) after {kind}.{name_text}, got {got}",
                )
            op = {"==": "=", "<>": "!="}.get(op_tok.text, op_tok.text)
            if kind != "metrics" and op not in TEXT_OPS:
                raise _fail(
                    text,
                    op_tok.col,
                    f"{kind} are text: compare them with = or !=, not {op_tok.text}",
                )
            val_tok = at(i + 1)
            if val_tok is None:
                raise _fail(text, end, f"expected a value after {op_tok.text}")
            value: float | str
            if kind == "metrics":
                if val_tok.kind != "number":
                    raise _fail(
                        text,
                        val_tok.col,
                        f"metrics.{name_text} compares with a number, got {val_tok.text!r}",
                    )
                value = float(val_tok.text)
                if not math.isfinite(value):
                    raise _fail(text, val_tok.col, f"{val_tok.text} is not a finite number")
            elif val_tok.kind == "string":
                value = val_tok.text[1:-1]
            elif val_tok.kind == "number":
                value = val_tok.text
            else:
                raise _fail(
                    text, val_tok.col, f"expected a quoted value ('...'), got {val_tok.text!r}"
                )
            conds.append(Condition(kind, name_text, op, value))
            i += 2
        t = at(i)
        if t is None:
            return conds
        if not _is_and(t):
            hint = (
                "only 'and' joins conditions"
                if t.text.lower() == "or"
                else f"expected 'and' or the end, got {t.text!r}"
            )
            raise _fail(text, t.col, hint)
        i += 1
        if at(i) is None:
            raise _fail(text, end, "expected a condition after 'and'")


def _is_and(t: _Tok) -> bool:
    return t.kind == "name" and t.text.lower() == "and"


def _name(tok: _Tok | None, toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """The name starting at token ``i`` (dotted parts joined: ``metrics.val.loss``) and the
    index after it."""
    if tok is None:
        return None
    if tok.kind == "quoted":
        inner = tok.text[1:-1]
        return (inner, i + 1) if inner else None
    if tok.kind not in ("name", "number"):
        return None
    parts = [tok.text]
    j = i + 1
    # names with dots or digits after a dot: the tokens touch (no space between them)
    while j + 1 < len(toks) and toks[j].kind == "dot" and toks[j].col == _after(toks[j - 1]):
        nxt = toks[j + 1]
        if nxt.kind not in ("name", "number") or nxt.col != toks[j].col + 1:
            break
        parts += [".", nxt.text]
        j += 2
    return "".join(parts), j


def _after(tok: _Tok) -> int:
    return tok.col + len(tok.text)


# ------------------------------------------------------------------------------------- SQL

#: SQL true for the row ``m`` of ``metrics`` holding its metric's value in the run: the one at
#: its highest step (per stage)
LATEST = (
    "m.step = (SELECT MAX(m2.step) FROM metrics m2"
    " WHERE m2.run_id = m.run_id AND m2.stage = m.stage AND m2.name = m.name)"
)
_SQL_OP = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "=", "!=": "<>"}


def where_sql(conditions: Sequence[Condition], run: str = "r") -> tuple[str, tuple]:
    """SQL true for a run (``run``: the alias of ``runs`` in the query) that meets every
    condition, and its parameters. Operators come from a fixed table; names and values are
    parameters."""
    parts: list[str] = []
    args: list[object] = []
    for c in conditions:
        if c.kind == "metrics":
            parts.append(
                f"EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = {run}.id AND m.name = ?"  # nosec B608 (fixed SQL fragments; every value is a parameter)
                f" AND {LATEST} AND m.value {_SQL_OP[c.op or '=']} ?)"
            )
            args += [c.name, float(c.value)]  # type: ignore[arg-type]
        elif c.kind == "tags":
            has = f"EXISTS (SELECT 1 FROM tags t WHERE t.run_id = {run}.id AND t.name = ?"  # nosec B608 (fixed SQL fragments; every value is a parameter)
            if c.op is None:
                parts.append(has + ")")
                args.append(c.name)
            else:
                parts.append(has + f" AND t.value {_SQL_OP[c.op]} ?)")
                args += [c.name, str(c.value)]
        else:
            text = str(c.value)
            spelled = (text, json.dumps(text))  # a spec param is stored as JSON: 0.1, "adam"
            equal = (
                f"(EXISTS (SELECT 1 FROM params p WHERE p.run_id = {run}.id AND p.name = ?"  # nosec B608 (fixed SQL fragments; every value is a parameter)
                " AND p.value IN (?, ?))"
                f" OR EXISTS (SELECT 1 FROM logged_params lp WHERE lp.run_id = {run}.id"
                " AND lp.name = ? AND lp.value = ?))"
            )
            equal_args = [c.name, *spelled, c.name, text]
            if c.op == "=":
                parts.append(equal)
                args += equal_args
            else:
                parts.append(
                    f"((EXISTS (SELECT 1 FROM params p WHERE p.run_id = {run}.id AND p.name = ?)"  # nosec B608 (fixed SQL fragments; every value is a parameter)
                    f" OR EXISTS (SELECT 1 FROM logged_params lp WHERE lp.run_id = {run}.id"
                    f" AND lp.name = ?)) AND NOT {equal})"
                )
                args += [c.name, c.name, *equal_args]
    return " AND ".join(parts) or "1 = 1", tuple(args)
