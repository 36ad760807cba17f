"""The blocks a model card is made of (heading, text, verdict, KPIs, table, bars, matrix) and
their two drawings: Markdown, and a self-contained HTML page (with :mod:`pipeflow.reports`: no
scripts, no CDN, every value escaped). :mod:`pipeflow.governance.card` decides what the blocks
say; this module only draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Status:
    """A verdict line: ``ok`` True (passed), False (failed) or None (nothing to judge)."""

    text: str
    ok: bool | None = None


@dataclass(frozen=True)
class Kpis:
    values: dict[str, Any]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Any]]
    left: int = 1


@dataclass(frozen=True)
class Bars:
    values: dict[str, float]
    limit: float = 1.0


@dataclass(frozen=True)
class Matrix:
    labels: list[str]
    matrix: list[list[int]]


Block = Heading | Text | Status | Kpis | Table | Bars | Matrix


# -- drawing -----------------------------------------------------------------------------------


def markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {_md_line(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + _md_line(block.text), ""]
        elif isinstance(block, Text):
            out += [_md_text(block.text), ""]
        elif isinstance(block, Status):
            out += [f"**{_md_text(block.text)}**", ""]
        elif isinstance(block, Kpis):
            out += _md_table(["metric", "value"], [[k, v] for k, v in block.values.items()], 1)
        elif isinstance(block, Table):
            out += _md_table(block.headers, block.rows, block.left)
        # Bars: Markdown has no charts, and every chart here sits above a table of its values
        elif isinstance(block, Matrix):
            out += _md_table(
                ["true \\ predicted", *block.labels],
                [[label, *row] for label, row in zip(block.labels, block.matrix, strict=False)],
                1,
            )
    return "\n".join(out).rstrip() + "\n"


def _md_table(headers: list[str], rows: list[list[Any]], left: int) -> list[str]:
    """A GFM table; columns of numbers only are right-aligned (``left`` is HTML's rule)."""
    align = [
        "---:" if rows and all(is_number(r[i]) for r in rows if i < len(r)) else "---"
        for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _md_text(value: Any) -> str:
    """Text as Markdown shows it, with no raw HTML getting through: ``<`` gets a backslash escape,
    which CommonMark shows as ``<`` but never reads as the start of a tag (``&lt;`` would be
    shown as is wherever the Markdown is read as text), and backslashes are escaped first, so a
    ``\\`` in the value cannot cancel that escape."""
    return str(value).replace("\\", "\\\\").replace("<", "\\<")


def _md_line(value: Any) -> str:
    return " ".join(_md_text(value).splitlines())


def _md_cell(value: Any) -> str:
    """One table cell: one line, pipes escaped (after backslashes, so ``a\\|`` stays a cell)."""
    return _md_line(fmt(value)).replace("|", "\\|")


def html(title: str, blocks: list[Block], everything: dict[str, Any]) -> bytes:
    from pipeflow import reports as r

    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{r._e(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f"<p>{r._e(block.text)}</p>")
        elif isinstance(block, Status):
            css = "" if block.ok is None else " class=ok" if block.ok else " class=bad"
            parts.append(f"<p{css}>{r._e(block.text)}</p>")
        elif isinstance(block, Kpis):
            parts.append(r.kpis(block.values))
        elif isinstance(block, Table):
            parts.append(
                r.table(
                    block.headers, [[_cell(v) for v in row] for row in block.rows], left=block.left
                )
            )
        elif isinstance(block, Bars):
            parts.append(r.bars(block.values, limit=block.limit))
        elif isinstance(block, Matrix):
            parts.append(r.heatmap(block.labels, block.matrix))
    parts.append(r.raw_json(everything))
    return r.page(title, parts)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _cell(value: Any) -> Any:
    """A table cell for reports.table: floats kept (it formats them), the rest as text."""
    return value if isinstance(value, float | int) and not isinstance(value, bool) else str(value)
