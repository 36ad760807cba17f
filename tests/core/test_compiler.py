"""The compiler: wiring, kinds, cycles and stage types are checked before anything runs, and
every problem names file:line:column, the stage and the field."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from pipeflow.core.compiler import compile_pipeline, describe_type
from pipeflow.core.stage import Port, Stage
from pipeflow.core.stage_types import StageRegistry
from pipeflow.errors import GraphError, Location, SpecError
from pipeflow.spec import load, loads
from pipeflow.testing import write_spec

FILE = "pipe.yaml"


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = 1


class MakeTable(Stage):
    """Produces a table."""

    Config = TableConfig
    outputs = {"out": Port("table")}

    def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": list(range(self.config.rows))}  # type: ignore[attr-defined]


class FitModel(Stage):
    """Takes a table, gives a classifier and metrics (two outputs, no default)."""

    inputs = {"train": Port("table"), "prior": Port("model", required=False)}
    outputs = {"model": Port("model[classifier]"), "metrics": Port("metrics")}

    def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"model": {}, "metrics": {}}


class NeedsClassifier(Stage):
    inputs = {"model": Port("model[classifier]")}
    outputs = {"out": Port("report")}

    def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": "ok"}


class NeedsModel(Stage):
    inputs = {"model": Port("model")}
    outputs = {"out": Port("report")}

    def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": "ok"}


REGISTRY = StageRegistry(
    extra={
        "table": MakeTable,
        "fit": FitModel,
        "needs_clf": NeedsClassifier,
        "needs_model": NeedsModel,
    }
)


def _compile(text: str, registry: StageRegistry | None = REGISTRY):
    return compile_pipeline(loads(textwrap.dedent(text), FILE), registry)


def _graph_error(text: str, registry: StageRegistry | None = REGISTRY) -> GraphError:
    with pytest.raises(GraphError) as info:
        _compile(text, registry)
    return info.value


# ----------------------------------------------------------------------------- good graphs


def test_good_pipeline_compiles_to_a_typed_dag() -> None:
    p = _compile(
        """\
        pipeline: typed
        stages:
          data: {type: table, with: {rows: 3}}
          fit: {type: fit, inputs: {train: data}}
          report: {type: needs_clf, inputs: {model: fit.model}}
          generic: {type: needs_model, inputs: {model: fit.model}}
        """
    )
    assert p.name == "typed"
    assert p.order == ["data", "fit", "generic", "report"]
    assert set(p.graph.edges) == {("data", "fit"), ("fit", "report"), ("fit", "generic")}
    assert p.graph.edges["fit", "report"]["ports"] == [("model", "model")]
    wire = p.stages["fit"].inputs["train"]
    assert (wire.source, wire.source_port, wire.kind) == ("data", "out", "table")
    assert p.stages["report"].inputs["model"].kind == "model[classifier]"
    assert p.stages["data"].config.rows == 3  # type: ignore[attr-defined]
    assert p.stages["fit"].upstream == ["data"]
    assert p.downstream("data") == {"fit", "report", "generic"}
    assert p.upstream("report") == {"data", "fit"}
    assert p.graph.nodes["fit"]["stage"] is p.stages["fit"]
    assert p.position["data"] == 0


def test_optional_input_may_be_left_unwired() -> None:
    p = _compile("pipeline: x\nstages:\n  d: {type: table}\n  f: {type: fit, inputs: {train: d}}\n")
    assert set(p.stages["f"].inputs) == {"train"}


def test_independent_stages_are_ordered_by_name() -> None:
    p = _compile(
        "pipeline: x\nstages:\n  zeta: {type: table}\n  alpha: {type: table}\n  mid: {type: table}\n"
    )
    assert p.order == ["alpha", "mid", "zeta"]


def test_python_stages_with_declared_kinds_compile(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """\
        pipeline: py
        stages:
          load: {type: python, with: {function: "steps:load", outputs: {good: table, bad: table}}}
          use:
            type: python
            inputs: {rows: load.good}
            with: {function: "steps:use", input_kinds: {rows: table}}
        """,
    )
    p = compile_pipeline(load(spec))
    assert p.stages["use"].inputs["rows"].kind == "table"
    assert set(p.stages["load"].output_ports) == {"good", "bad"}


def test_compiling_never_imports_user_code(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """\
        pipeline: lazy
        stages:
          a: {type: python, with: {function: "never_imported_mod:f"}}
        """,
        {"never_imported_mod.py": "raise SystemExit('imported at compile time')\n"},
    )
    p = compile_pipeline(load(spec))
    assert p.order == ["a"]
    assert "never_imported_mod" not in sys.modules


# ----------------------------------------------------------------------------- wiring errors


def test_missing_stage_reference_names_stage_field_position_and_suggestion() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          data: {type: table}
          fit:
            type: fit
            inputs: {train: dta}
        """
    )
    (p,) = err.problems
    assert p.stage == "fit" and p.field == "inputs.train"
    assert p.location == Location(FILE, 6, 21)
    assert "input refers to stage 'dta', which does not exist; did you mean 'data'?" in p.message
    assert isinstance(err, SpecError)


def test_missing_output_port_lists_the_ports_that_exist() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  d: {type: table}\n  f: {type: fit, inputs: {train: d}}\n"
        "  r: {type: needs_clf, inputs: {model: f.modle}}\n"
    )
    (p,) = err.problems
    assert p.stage == "r" and p.field == "inputs.model"
    assert "stage 'f' has no output port 'modle'; did you mean 'model'?" in p.message
    assert "(its outputs: model, metrics)" in p.message
    assert p.location is not None and p.location.line == 5


def test_bare_reference_to_a_stage_with_several_outputs_asks_for_a_port() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  d: {type: table}\n  f: {type: fit, inputs: {train: d}}\n"
        "  r: {type: needs_clf, inputs: {model: f}}\n"
    )
    assert "stage 'f' has several outputs (model, metrics): write 'f.<port>'" in str(err)


def test_unknown_input_port_on_the_consuming_type() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  d: {type: table}\n  f: {type: fit, inputs: {trian: d}}\n"
    )
    unwired, p = err.problems  # file order: the stage itself comes first
    assert p.stage == "f" and p.field == "inputs.trian"
    assert "required input 'train'" in unwired.message
    assert "stage type 'fit' has no input port 'trian'; did you mean 'train'?" in p.message
    assert "(its inputs: train, prior)" in p.message


def test_required_input_not_wired() -> None:
    err = _graph_error("pipeline: x\nstages:\n  f: {type: fit}\n")
    (p,) = err.problems
    assert p.stage == "f" and p.field == "inputs"
    assert "required input 'train' (kind 'table') of stage type 'fit' is not wired" in p.message
    assert p.location is not None and p.location.line == 3


def test_kind_mismatch_names_both_stages_and_both_kinds() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          data: {type: table}
          judge:
            type: needs_model
            inputs: {model: data}
        """
    )
    (p,) = err.problems
    assert p.stage == "judge" and p.field == "inputs.model"
    assert p.message == (
        "kind mismatch: stage 'data' output 'out' produces 'table', "
        "but stage 'judge' input 'model' expects 'model'"
    )
    assert p.location == Location(FILE, 6, 21)


def test_plain_model_does_not_satisfy_a_classifier_input() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          m: {type: python, with: {function: "s:f", outputs: {out: model}}}
          r: {type: needs_clf, inputs: {model: m}}
        """
    )
    assert "produces 'model', but stage 'r' input 'model' expects 'model[classifier]'" in str(err)


def test_python_stage_kind_mismatch_is_checked_when_kinds_are_declared() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          a: {type: python, with: {function: "s:f", outputs: {t: table}}}
          b: {type: python, inputs: {m: a.t}, with: {function: "s:g", input_kinds: {m: model}}}
        """
    )
    assert "stage 'a' output 't' produces 'table', but stage 'b' input 'm' expects 'model'" in str(
        err
    )


def test_cycle_lists_its_stages_in_order() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          a: {type: python, inputs: {x: c}, with: {function: "s:f"}}
          b: {type: python, inputs: {x: a}, with: {function: "s:f"}}
          c: {type: python, inputs: {x: b}, with: {function: "s:f"}}
          free: {type: python, with: {function: "s:f"}}
        """
    )
    (p,) = err.problems
    assert "cycle between stages: " in p.message
    chain = p.message.split("cycle between stages: ")[1].split(" -> ")
    assert chain[0] == chain[-1]
    assert set(chain) == {"a", "b", "c"} and len(chain) == 4
    assert "free" not in p.message
    assert p.stage in {"a", "b", "c"} and p.field == "inputs"
    assert p.location is not None and p.location.line


def test_stage_taking_its_own_output_is_a_cycle() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  a: {type: python, inputs: {x: a}, with: {function: 's:f'}}\n"
    )
    assert "stage 'a' cannot take its own output as input (cycle: a -> a)" in str(err)


# ----------------------------------------------------------------------------- types and configs


def test_unknown_stage_type_lists_installed_ones_with_a_suggestion() -> None:
    err = _graph_error("pipeline: x\nstages:\n  a: {type: pyhton}\n", registry=None)
    (p,) = err.problems
    assert p.stage == "a" and p.field == "type"
    assert p.location == Location(FILE, 3, 13)
    assert "unknown stage type 'pyhton'; did you mean 'python'?" in p.message
    installed = p.message.split("installed types: ")[1].split(", ")
    assert {"python", "ingest", "split", "train", "evaluate"} <= set(installed)
    assert installed == sorted(installed)


def test_unknown_stage_type_with_an_in_process_registry_lists_its_types() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  a: {type: nope}\n",
        StageRegistry({"table": MakeTable}, entry_points=False),
    )
    assert "unknown stage type 'nope'; installed types: table" in str(err)


def test_with_block_is_validated_against_the_type_s_config_with_positions() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          a:
            type: python
            with:
              function: "steps:f"
              kwarg: {}
          b:
            type: table
            with: {rows: many}
        """
    )
    assert [(p.stage, p.field) for p in err.problems] == [("a", "with.kwarg"), ("b", "with.rows")]
    first, second = err.problems
    assert first.location == Location(FILE, 7, 7)
    assert "unknown key 'kwarg'; did you mean 'kwargs'?" in first.message
    assert "expected one of: function, kwargs, outputs, input_kinds" in first.message
    assert second.location == Location(FILE, 10, 18)
    assert "valid integer" in second.message and "got 'many'" in second.message


def test_missing_required_config_field() -> None:
    err = _graph_error("pipeline: x\nstages:\n  a: {type: python, with: {}}\n")
    (p,) = err.problems
    assert p.stage == "a" and p.field == "with.function"
    assert p.message == "missing required key 'function'"


def test_python_function_must_look_like_module_colon_function() -> None:
    err = _graph_error("pipeline: x\nstages:\n  a: {type: python, with: {function: steps.f}}\n")
    assert err.problems[0].field == "with.function"
    assert "should match pattern" in err.problems[0].message


def test_several_problems_are_reported_together_in_file_order() -> None:
    err = _graph_error(
        """\
        pipeline: x
        stages:
          data: {type: table}
          a: {type: pythn}
          b: {type: fit, inputs: {train: ghost}}
          c: {type: needs_model, inputs: {model: data}}
          d: {type: table, with: {rowz: 1}}
        """
    )
    lines = [p.location.line for p in err.problems if p.location]
    assert lines == sorted(lines) == [4, 5, 6, 7]
    assert [p.stage for p in err.problems] == ["a", "b", "c", "d"]
    text = str(err)
    assert "unknown stage type 'pythn'" in text
    assert "stage 'ghost', which does not exist" in text
    assert "kind mismatch" in text
    assert "unknown key 'rowz'" in text
    assert len(text.splitlines()) == 4


def test_a_stage_with_a_broken_type_does_not_pile_errors_on_its_consumers() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  a: {type: nope}\n  b: {type: fit, inputs: {train: a}}\n"
    )
    assert len(err.problems) == 1 and err.problems[0].stage == "a"


def test_every_problem_renders_with_file_line_column_stage_and_field() -> None:
    err = _graph_error(
        "pipeline: x\nstages:\n  d: {type: table}\n  j: {type: needs_model, inputs: {model: d}}\n"
    )
    assert str(err).startswith(f"{FILE}:4:42: stage 'j', field 'inputs.model': kind mismatch")


def test_describe_type_lists_ports_and_config_fields() -> None:
    info = describe_type(MakeTable)
    assert info["outputs"] == {"out": {"kind": "table"}}
    assert info["config"]["rows"]["required"] is False
    assert info["config"]["rows"]["default"] == "1"
    assert info["description"] == "Produces a table."
    fit = describe_type(FitModel)
    assert fit["inputs"]["prior"] == {"kind": "model", "required": False}
