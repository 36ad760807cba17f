"""Text, Mermaid and Graphviz DOT views of a compiled pipeline (``pipeflow graph``)."""

from __future__ import annotations

import json

from pipeflow.core.compiler import Pipeline


def render(pipeline: Pipeline, fmt: str = "text") -> str:
    if fmt == "mermaid":
        return _mermaid(pipeline)
    if fmt == "dot":
        return _dot(pipeline)
    return _text(pipeline)


def _label(p: Pipeline, name: str) -> str:
    st = p.stages[name]
    extra = f" {dict(st.spec.resources)}" if st.spec.resources else ""
    return f"{name} ({st.type}){extra}"


def _text(p: Pipeline) -> str:
    lines = [f"pipeline {p.name}: {len(p.stages)} stages"]
    for name in p.order:
        st = p.stages[name]
        ins = ", ".join(
            f"{port} <- {w.source}.{w.source_port} [{w.kind}]"
            for port, w in sorted(st.inputs.items())
        )
        outs = ", ".join(f"{port} [{o.kind}]" for port, o in st.output_ports.items())
        lines.append(f"  {_label(p, name)}")
        if ins:
            lines.append(f"      in:  {ins}")
        lines.append(f"      out: {outs or '-'}")
    return "\n".join(lines)


def _mermaid(p: Pipeline) -> str:
    lines = ["flowchart LR"]
    for name in p.order:
        lines.append(f'    {name}["{_label(p, name)}"]')
    for name in p.order:
        for port, w in sorted(p.stages[name].inputs.items()):
            lines.append(f"    {w.source} -->|{w.source_port} to {port}| {name}")
    return "\n".join(lines)


def _dot(p: Pipeline) -> str:
    lines = [f"digraph {json.dumps(p.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for name in p.order:
        lines.append(f"    {json.dumps(name)} [label={json.dumps(_label(p, name))}];")
    for name in p.order:
        for port, w in sorted(p.stages[name].inputs.items()):
            label = json.dumps(f"{w.source_port} -> {port} ({w.kind})")
            lines.append(f"    {json.dumps(w.source)} -> {json.dumps(name)} [label={label}];")
    lines.append("}")
    return "\n".join(lines)
