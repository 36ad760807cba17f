"""Unit tests for the compiler: wiring checks with positions, rendering and the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pipeflow
from pipeflow.core.render import render
from pipeflow.core.schema import spec_schema
from pipeflow.errors import GraphError, SpecError
from pipeflow.testing import write_spec

STEPS = {"steps.py": "def f(**kw):\n    return 1\n"}


def _compile(tmp_path: Path, text: str):  # noqa: ANN202 - returns a Pipeline
    return pipeflow.compile(pipeflow.load(write_spec(tmp_path, text.lstrip("\n"), STEPS)))


def _graph_error(tmp_path: Path, text: str) -> GraphError:
    with pytest.raises(GraphError) as info:
        _compile(tmp_path, text)
    return info.value


DIAMOND = """
    pipeline: diamond
    stages:
      src: {type: python, with: {function: "steps:f"}}
      left: {type: python, inputs: {x: src}, with: {function: "steps:f"}}
      right: {type: python, inputs: {x: src}, with: {function: "steps:f"}}
      join:
        type: python
        inputs: {a: left, b: right.out}
        with: {function: "steps:f"}
"""


def test_a_valid_spec_compiles_to_a_dag_in_dependency_order(tmp_path: Path) -> None:
    pipeline = _compile(tmp_path, DIAMOND)
    assert set(pipeline.graph.nodes) == {"src", "left", "right", "join"}
    assert set(pipeline.graph.edges) == {
        ("src", "left"),
        ("src", "right"),
        ("left", "join"),
        ("right", "join"),
    }
    pos = pipeline.position
    for u, v in pipeline.graph.edges:
        assert pos[u] < pos[v]
    assert pipeline.stages["join"].upstream == ["left", "right"]
    assert pipeline.downstream("src") == {"left", "right", "join"}
    assert pipeline.upstream("join") == {"src", "left", "right"}


def test_graph_errors_are_spec_errors(tmp_path: Path) -> None:
    err = _graph_error(tmp_path, DIAMOND.replace("inputs: {x: src}", "inputs: {x: nope}", 1))
    assert isinstance(err, SpecError)
    assert err.exit_code == 2


def test_missing_stage_reference_suggests_the_close_name(tmp_path: Path) -> None:
    err = _graph_error(tmp_path, DIAMOND.replace("inputs: {x: src}", "inputs: {x: scr}", 1))
    (problem,) = err.problems
    assert "stage 'scr', which does not exist" in problem.message
    assert "did you mean 'src'" in problem.message
    assert problem.stage == "left" and problem.field == "inputs.x"
    assert problem.location is not None and problem.location.line == 4
    assert problem.location.file.endswith("pipeline.yaml")


def test_missing_output_port_lists_the_ports(tmp_path: Path) -> None:
    err = _graph_error(tmp_path, DIAMOND.replace("b: right.out", "b: right.otu"))
    (problem,) = err.problems
    assert "has no output port 'otu'" in problem.message
    assert "did you mean 'out'" in problem.message
    assert "its outputs: out" in problem.message
    assert problem.stage == "join" and problem.field == "inputs.b"


def test_missing_input_port_suggests_the_close_port(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:f", outputs: {out: table}}}
          b: {type: split, inputs: {dat: a}}
    """
    err = _graph_error(tmp_path, text)
    messages = [p.message for p in err.problems if p.stage == "b"]
    assert any("no input port 'dat'" in m and "did you mean 'data'" in m for m in messages)
    assert any("required input 'data'" in m and "not wired" in m for m in messages)


def test_kind_mismatch_names_both_stages_and_both_kinds(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          train:
            type: python
            with: {function: "steps:f", outputs: {out: model}}
          report:
            type: python
            inputs: {x: train}
            with: {function: "steps:f", input_kinds: {x: table}}
    """
    err = _graph_error(tmp_path, text)
    (problem,) = err.problems
    msg = problem.message
    assert "kind mismatch" in msg
    assert "'train'" in msg and "'report'" in msg
    assert "'model'" in msg and "'table'" in msg
    assert problem.location is not None and problem.location.line == 8


def test_subkind_fits_its_base_kind_but_not_the_reverse(tmp_path: Path) -> None:
    ok = """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:f", outputs: {out: "model[classifier]"}}}
          b: {type: python, inputs: {x: a}, with: {function: "steps:f", input_kinds: {x: model}}}
    """
    _compile(tmp_path / "ok", ok)
    bad = ok.replace('"model[classifier]"', "model").replace(
        "{x: model}", '{x: "model[classifier]"}'
    )
    err = _graph_error(tmp_path / "bad", bad)
    assert "kind mismatch" in str(err)


def test_cycle_names_its_stages(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: python, inputs: {x: c}, with: {function: "steps:f"}}
          b: {type: python, inputs: {x: a}, with: {function: "steps:f"}}
          c: {type: python, inputs: {x: b}, with: {function: "steps:f"}}
    """
    err = _graph_error(tmp_path, text)
    (problem,) = err.problems
    assert "cycle between stages" in problem.message
    for name in "abc":
        assert name in problem.message
    chain = problem.message.split(": ", 1)[1].split(" -> ")
    assert chain[0] == chain[-1] and set(chain) == {"a", "b", "c"}
    assert problem.location is not None and problem.location.line is not None


def test_self_reference_is_a_cycle(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: python, inputs: {x: a}, with: {function: "steps:f"}}
    """
    err = _graph_error(tmp_path, text)
    assert "cycle: a -> a" in str(err)


def test_unknown_stage_type_lists_installed_types(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: pyhton, with: {function: "steps:f"}}
    """
    err = _graph_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.stage == "a" and problem.field == "type"
    assert "python" in problem.message and "sql" in problem.message
    assert "pyhton" in problem.message
    assert problem.location is not None and problem.location.line == 3


def test_bad_with_block_is_positioned_inside_with(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a:
            type: python
            with:
              function: "steps:f"
              kwrags: {}
    """
    err = _graph_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.stage == "a"
    assert problem.field == "with.kwrags"
    assert "did you mean 'kwargs'" in problem.message
    assert problem.location is not None and problem.location.line == 7


def test_ambiguous_bare_reference_to_a_multi_output_stage(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:f", outputs: [x, y]}}
          b: {type: python, inputs: {i: a}, with: {function: "steps:f"}}
    """
    err = _graph_error(tmp_path, text)
    assert "several outputs" in str(err) and "a.<port>" in str(err)


def test_several_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    text = """
        pipeline: p
        stages:
          a: {type: nosuch, with: {}}
          b: {type: python, inputs: {x: missing}, with: {function: "steps:f"}}
          c:
            type: python
            with: {function: "steps:f", outputs: {out: model}}
          d: {type: python, inputs: {x: c}, with: {function: "steps:f", input_kinds: {x: table}}}
    """
    err = _graph_error(tmp_path, text)
    stages = [p.stage for p in err.problems]
    assert stages == ["a", "b", "d"]
    lines = [p.location.line for p in err.problems if p.location]
    assert lines == sorted(lines)
    assert len(str(err).splitlines()) == 3


# ---------------------------------------------------------------------------- render


@pytest.mark.parametrize("fmt", ["text", "mermaid", "dot"])
def test_render_mentions_every_stage_and_edge(tmp_path: Path, fmt: str) -> None:
    pipeline = _compile(tmp_path, DIAMOND)
    out = render(pipeline, fmt)
    for name in pipeline.stages:
        assert name in out
    for src, dst in pipeline.graph.edges:
        if fmt == "mermaid":
            assert any(
                line.strip().startswith(f"{src} -->") and line.strip().endswith(f"| {dst}")
                for line in out.splitlines()
            ), (src, dst)
        elif fmt == "dot":
            assert f'"{src}" -> "{dst}"' in out
        else:
            assert f"<- {src}.out" in out


def test_mermaid_starts_with_flowchart_and_dot_is_a_digraph(tmp_path: Path) -> None:
    pipeline = _compile(tmp_path, DIAMOND)
    assert render(pipeline, "mermaid").startswith("flowchart LR")
    dot = render(pipeline, "dot")
    assert dot.startswith('digraph "diamond" {') and dot.rstrip().endswith("}")
    assert render(pipeline, "text").startswith("pipeline diamond: 4 stages")


# ---------------------------------------------------------------------------- schema


def test_schema_is_json_and_describes_python_function() -> None:
    schema = spec_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    assert schema["$schema"].startswith("https://json-schema.org/")
    stage = schema["$defs"]["StageSpec"]
    assert {"python", "sql"} <= set(stage["properties"]["type"]["enum"])
    python_branch = next(
        b for b in stage["allOf"] if b["if"]["properties"]["type"]["const"] == "python"
    )
    with_schema = python_branch["then"]["properties"]["with"]
    assert "function" in with_schema["properties"]
    assert "function" in with_schema.get("required", [])


def test_schema_validates_a_good_spec_and_rejects_a_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = spec_schema()
    good = {
        "pipeline": "p",
        "stages": {"a": {"type": "python", "with": {"function": "steps:f"}}},
    }
    jsonschema.validate(good, schema)
    bad = {"pipeline": "p", "stages": {"a": {"type": "python", "inptus": {}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
