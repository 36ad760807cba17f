"""`pipeflow graph` views: text, Mermaid and Graphviz DOT of a compiled pipeline."""

from __future__ import annotations

import json
import re

import pytest

from pipeflow.core.compiler import Pipeline, compile_pipeline
from pipeflow.core.render import render
from pipeflow.spec import loads

SPEC = """\
pipeline: render-me
stages:
  load: {type: python, with: {function: "s:load", outputs: {good: table, bad: table}}}
  fit:
    type: python
    inputs: {rows: load.good}
    resources: {GPU: 1}
    with: {function: "s:fit", input_kinds: {rows: table}, outputs: {out: model}}
  report: {type: python, inputs: {model: fit, rejects: load.bad}, with: {function: "s:report"}}
"""


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return compile_pipeline(loads(SPEC, "render.yaml"))


def test_text_lists_stages_in_order_with_ports_and_kinds(pipeline: Pipeline) -> None:
    text = render(pipeline, "text")
    lines = text.splitlines()
    assert lines[0] == "pipeline render-me: 3 stages"
    assert lines[1] == "  load (python)"
    assert "      out: good [table], bad [table]" in lines
    assert "  fit (python) {'GPU': 1.0}" in lines
    assert "      in:  rows <- load.good [table]" in lines
    assert "      in:  model <- fit.out [model], rejects <- load.bad [table]" in lines
    assert text.index("load (python)") < text.index("fit (python)") < text.index("report (python)")


def test_text_is_the_default(pipeline: Pipeline) -> None:
    assert render(pipeline) == render(pipeline, "text")


def test_mermaid_has_a_node_per_stage_and_a_labelled_edge_per_wire(pipeline: Pipeline) -> None:
    text = render(pipeline, "mermaid")
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = [ln for ln in lines if re.fullmatch(r'    \w+\[".*"\]', ln)]
    edges = [ln for ln in lines if "-->" in ln]
    assert len(nodes) == 3 and len(edges) == 3
    assert '    load["load (python)"]' in lines
    assert "    load -->|good to rows| fit" in lines
    assert "    fit -->|out to model| report" in lines
    assert "    load -->|bad to rejects| report" in lines


def test_dot_is_a_well_formed_digraph(pipeline: Pipeline) -> None:
    text = render(pipeline, "dot")
    lines = text.splitlines()
    assert lines[0] == 'digraph "render-me" {' and lines[-1] == "}"
    assert text.count("{") == text.count("}")
    node_lines = [ln for ln in lines if re.fullmatch(r'    "\w+" \[label=".*"\];', ln)]
    assert len(node_lines) == 3
    edge = re.compile(r'    "(\w+)" -> "(\w+)" \[label=(".*")\];')
    edges = {(m[1], m[2], json.loads(m[3])) for ln in lines if (m := edge.fullmatch(ln))}
    assert edges == {
        ("load", "fit", "good -> rows (table)"),
        ("fit", "report", "out -> model (model)"),
        ("load", "report", "bad -> rejects (table)"),
    }


def test_dot_quotes_labels_safely() -> None:
    p = compile_pipeline(
        loads(
            'pipeline: q\nstages:\n  a: {type: python, resources: {"x\\"y": 1}, with: {function: "s:f"}}\n',
            "q.yaml",
        )
    )
    text = render(p, "dot")
    label = re.search(r"\[label=(\".*\")\];", text)
    assert label is not None
    assert json.loads(label.group(1)) == "a (python) {'x\"y': 1.0}"
