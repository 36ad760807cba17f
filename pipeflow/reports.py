"""Readable, self-contained HTML reports (no scripts, no CDN: they open offline, anywhere).

Every value from data is escaped: a category named ``<script>`` is shown, never run.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.bad{color:#b00020;font-weight:600}.ok{color:#0a7d32;font-weight:600}
.kpi{display:inline-block;margin:.4em 1.2em .4em 0}.kpi b{display:block;font-size:1.6em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(value)


def page(title: str, sections: list[str]) -> bytes:
    body = "\n".join(sections)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>\n"
    ).encode()


def kpis(values: dict[str, Any]) -> str:
    return (
        "<div>"
        + "".join(f"<span class=kpi>{_e(k)}<b>{_num(v)}</b></span>" for k, v in values.items())
        + "</div>"
    )


def table(headers: list[str], rows: list[list[Any]], *, left: int = 1) -> str:
    head = "".join(
        f"<th class={'l' if i < left else ''}>{_e(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td class={'l' if i < left else ''}>{_num(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def heatmap(labels: list[str], matrix: list[list[int]]) -> str:
    """A confusion matrix: rows are true labels, columns predicted; darker = more rows."""
    top = max((v for row in matrix for v in row), default=1) or 1
    head = "<th class=l>true \\ predicted</th>" + "".join(f"<th>{_e(lab)}</th>" for lab in labels)
    rows = []
    for lab, row in zip(labels, matrix, strict=True):
        cells = "".join(
            f"<td style='background:rgba(30,90,200,{0.08 + 0.8 * v / top:.2f});color:{'#fff' if v / top > 0.55 else '#222'}'>{v}</td>"
            for v in row
        )
        rows.append(f"<tr><th class=l>{_e(lab)}</th>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def bars(values: dict[str, float], *, width: int = 420, limit: float = 1.0) -> str:
    """Horizontal bars in SVG (e.g. F1 per class)."""
    row_h, label_w = 22, 140
    height = row_h * len(values) + 6
    parts = []
    for i, (name, value) in enumerate(values.items()):
        w = max(0.0, min(1.0, value / limit)) * (width - label_w - 60)
        y = 3 + i * row_h
        parts.append(
            f"<text x=0 y={y + 15} font-size=12>{_e(name)}</text>"
            f"<rect x={label_w} y={y + 3} width={w:.1f} height={row_h - 8} fill='#3465a4'/>"
            f"<text x={label_w + w + 6:.1f} y={y + 15} font-size=12>{value:.3f}</text>"
        )
    return f"<svg width={width} height={height} role=img>{''.join(parts)}</svg>"


def reliability(bins: list[dict[str, Any]], *, size: int = 260) -> str:
    """Calibration: mean confidence (x) against accuracy (y) per bin; the diagonal is perfect."""
    pad = 30
    inner = size - 2 * pad
    points = " ".join(
        f"{pad + b['confidence'] * inner:.1f},{pad + (1 - b['accuracy']) * inner:.1f}"
        for b in bins
        if b["rows"]
    )
    dots = "".join(
        f"<circle cx={pad + b['confidence'] * inner:.1f} cy={pad + (1 - b['accuracy']) * inner:.1f} r=3 fill='#3465a4'/>"
        for b in bins
        if b["rows"]
    )
    return (
        f"<svg width={size} height={size} role=img>"
        f"<rect x={pad} y={pad} width={inner} height={inner} fill=none stroke='#999'/>"
        f"<line x1={pad} y1={pad + inner} x2={pad + inner} y2={pad} stroke='#bbb' stroke-dasharray='4 3'/>"
        f"<polyline points='{points}' fill=none stroke='#3465a4' stroke-width=2/>{dots}"
        f"<text x={pad} y={size - 8} font-size=11>confidence →</text>"
        f"<text x=4 y={pad - 10} font-size=11>accuracy ↑</text></svg>"
    )


def raw_json(value: Any) -> str:
    return (
        "<details><summary>all figures (JSON)</summary><pre>"
        + _e(json.dumps(value, indent=2, default=str))
        + "</pre></details>"
    )
