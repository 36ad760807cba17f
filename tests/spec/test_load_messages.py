"""Unit tests for spec loading: YAML errors, grammar errors, interpolation and overrides."""

from __future__ import annotations

import textwrap

import pytest

from pipeflow.errors import SpecError, UsageError
from pipeflow.spec import loads, parse_override


def _spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


GOOD = _spec(
    """
    pipeline: demo
    params:
      x: 3
      name: world
    stages:
      a:
        type: python
        with:
          function: "steps:f"
          kwargs: {n: "${params.x}", greeting: "hello ${params.name}"}
    """
)


def _error(text: str, **kwargs: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        loads(text, "spec.yaml", **kwargs)  # type: ignore[arg-type]
    return info.value


# ---------------------------------------------------------------------------- YAML level


def test_a_valid_spec_loads_with_its_stages() -> None:
    loaded = loads(GOOD, "spec.yaml")
    assert loaded.spec.pipeline == "demo"
    assert list(loaded.spec.stages) == ["a"]


def test_bad_yaml_is_reported_with_file_line_and_column() -> None:
    text = "pipeline: demo\nstages:\n  a: {type: python\n  b: [1, 2\n"
    err = _error(text)
    loc = err.problems[0].location
    assert loc is not None and loc.file == "spec.yaml"
    assert loc.line is not None and loc.column is not None
    assert str(err).startswith(f"spec.yaml:{loc.line}:{loc.column}")
    assert "invalid YAML" in str(err)


def test_duplicate_key_names_both_lines() -> None:
    text = _spec(
        """
        pipeline: demo
        stages:
          a:
            type: python
            with: {function: "steps:f"}
            type: sql
        """
    )
    err = _error(text)
    problem = err.problems[0]
    assert "duplicate key 'type'" in problem.message
    assert "first given at line 4" in problem.message
    assert problem.location is not None and problem.location.line == 6
    assert problem.stage == "a" and problem.field == "type"


def test_duplicate_top_level_key_is_an_error() -> None:
    err = _error("pipeline: a\npipeline: b\nstages: {}\n")
    assert "duplicate key 'pipeline'" in str(err)
    assert err.problems[0].location is not None and err.problems[0].location.line == 2


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object:os.system {}",
        "!!python/object/apply:os.system ['echo hi']",
        "!!python/name:os.system",
        "!custom thing",
    ],
)
def test_yaml_tags_outside_the_core_schema_are_refused(tagged: str) -> None:
    text = f"pipeline: demo\nevil: {tagged}\nstages:\n  a: {{type: python}}\n"
    err = _error(text)
    assert err.problems[0].location is not None
    assert err.problems[0].location.line == 2


def test_empty_file_is_a_spec_error() -> None:
    err = _error("")
    assert "empty" in str(err)


def test_top_level_list_is_a_spec_error() -> None:
    err = _error("- a\n- b\n")
    assert "expected a mapping" in str(err)
    assert str(err).startswith("spec.yaml:1:1")


# ---------------------------------------------------------------------------- grammar


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    err = _error("pipeline: demo\nstagse:\n  a: {type: python}\n")
    messages = [p.message for p in err.problems]
    assert any("unknown key 'stagse'" in m and "did you mean 'stages'" in m for m in messages)
    bad = next(p for p in err.problems if "stagse" in p.message)
    assert bad.location is not None and (bad.location.line, bad.location.column) == (2, 1)


def test_unknown_stage_key_names_the_stage_field_and_suggestion() -> None:
    text = _spec(
        """
        pipeline: demo
        stages:
          a:
            type: python
            inptus: {x: b}
            with: {function: "steps:f"}
        """
    )
    err = _error(text)
    (problem,) = err.problems
    assert problem.stage == "a"
    assert problem.field == "inptus"
    assert "did you mean 'inputs'" in problem.message
    assert problem.location is not None and (problem.location.line, problem.location.column) == (
        5,
        5,
    )


def test_wrong_value_type_names_field_and_line() -> None:
    text = _spec(
        """
        pipeline: demo
        stages:
          a:
            type: python
            retries: many
        """
    )
    err = _error(text)
    (problem,) = err.problems
    assert problem.stage == "a" and problem.field == "retries"
    assert "'many'" in problem.message
    assert problem.location is not None and problem.location.line == 5
    assert str(err).startswith("spec.yaml:5:")


def test_value_out_of_range_is_rejected() -> None:
    err = _error("pipeline: demo\nstages:\n  a: {type: python, retries: -1}\n")
    assert err.problems[0].field == "retries"


def test_several_grammar_problems_are_reported_together() -> None:
    text = _spec(
        """
        pipeline: demo
        stages:
          a: {type: python, retries: many}
          b: {type: python, cahce: false}
        """
    )
    err = _error(text)
    assert {p.stage for p in err.problems} == {"a", "b"}
    assert len(str(err).splitlines()) == len(err.problems) >= 2


def test_missing_stages_is_reported() -> None:
    err = _error("pipeline: demo\n")
    assert "missing required key 'stages'" in str(err)


def test_invalid_pipeline_name_is_rejected() -> None:
    err = _error("pipeline: Not A Name\nstages:\n  a: {type: python}\n")
    assert err.problems[0].field == "pipeline"
    assert err.problems[0].location is not None and err.problems[0].location.line == 1


# ---------------------------------------------------------------------------- interpolation


def test_whole_value_param_reference_keeps_its_type() -> None:
    loaded = loads(GOOD, "spec.yaml")
    kwargs = loaded.spec.stages["a"].with_["kwargs"]
    assert kwargs["n"] == 3
    assert kwargs["greeting"] == "hello world"


def test_param_reference_inside_a_string_is_substituted_as_text() -> None:
    text = GOOD.replace('"hello ${params.name}"', '"n=${params.x}!"')
    kwargs = loads(text, "spec.yaml").spec.stages["a"].with_["kwargs"]
    assert kwargs["greeting"] == "n=3!"


def test_unknown_param_suggests_the_close_one_and_lists_params() -> None:
    err = _error(GOOD.replace("${params.x}", "${params.y}"))
    (problem,) = err.problems
    assert "unknown param 'params.y'" in problem.message
    assert "name, x" in problem.message
    assert problem.stage == "a" and problem.field == "with.kwargs.n"
    assert problem.location is not None and problem.location.line is not None


def test_env_reference_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEFLOW_UNIT_NAME", "from-env")
    text = GOOD.replace("${params.name}", "${env:PIPEFLOW_UNIT_NAME}")
    kwargs = loads(text, "spec.yaml").spec.stages["a"].with_["kwargs"]
    assert kwargs["greeting"] == "hello from-env"


def test_missing_env_without_default_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEFLOW_UNIT_MISSING", raising=False)
    err = _error(GOOD.replace("${params.name}", "${env:PIPEFLOW_UNIT_MISSING}"))
    assert "PIPEFLOW_UNIT_MISSING" in str(err)
    assert "is not set" in str(err)
    assert err.problems[0].stage == "a"


def test_env_default_is_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEFLOW_UNIT_MISSING", raising=False)
    text = GOOD.replace("${params.name}", "${env:PIPEFLOW_UNIT_MISSING:-fallback}")
    kwargs = loads(text, "spec.yaml").spec.stages["a"].with_["kwargs"]
    assert kwargs["greeting"] == "hello fallback"


def test_env_default_is_ignored_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEFLOW_UNIT_NAME", "set")
    text = GOOD.replace("${params.name}", "${env:PIPEFLOW_UNIT_NAME:-fallback}")
    kwargs = loads(text, "spec.yaml").spec.stages["a"].with_["kwargs"]
    assert kwargs["greeting"] == "hello set"


def test_double_dollar_escapes_interpolation() -> None:
    text = GOOD.replace('"hello ${params.name}"', '"cost $${params.x} and ${params.x}"')
    kwargs = loads(text, "spec.yaml").spec.stages["a"].with_["kwargs"]
    assert kwargs["greeting"] == "cost ${params.x} and 3"


def test_unknown_interpolation_form_is_an_error() -> None:
    err = _error(GOOD.replace("${params.name}", "${nonsense}"))
    assert "cannot interpolate" in str(err)


def test_params_cannot_refer_to_params() -> None:
    err = _error(GOOD.replace("name: world", "name: ${params.x}"))
    assert "params cannot refer to other params" in str(err)


# ---------------------------------------------------------------------------- overrides


def test_set_override_as_strings_is_parsed_as_yaml() -> None:
    loaded = loads(GOOD, "spec.yaml", ["params.x=7"])
    assert loaded.spec.params["x"] == 7
    assert loaded.spec.stages["a"].with_["kwargs"]["n"] == 7
    assert loaded.overrides == ("params.x=7",)


def test_set_override_as_mapping_keeps_the_python_value() -> None:
    loaded = loads(GOOD, "spec.yaml", {"params.x": 7, "params.name": "there"})
    kwargs = loaded.spec.stages["a"].with_["kwargs"]
    assert kwargs["n"] == 7
    assert kwargs["greeting"] == "hello there"


@pytest.mark.parametrize("value", [1e-05, 0.5, True, None, "1e-05", "yes", [1, 2], {"k": "v"}])
def test_mapping_override_values_round_trip(value: object) -> None:
    loaded = loads(GOOD, "spec.yaml", {"params.x": value})
    assert loaded.spec.params["x"] == value


def test_override_can_create_a_new_param() -> None:
    loaded = loads(GOOD, "spec.yaml", ["params.new.deep=hi"])
    assert loaded.spec.params["new"] == {"deep": "hi"}


def test_override_changes_the_spec_digest() -> None:
    assert loads(GOOD, "spec.yaml").digest != loads(GOOD, "spec.yaml", ["params.x=8"]).digest
    assert loads(GOOD, "spec.yaml").digest == loads(GOOD, "spec.yaml").digest


def test_an_override_that_makes_the_spec_invalid_points_at_the_override() -> None:
    err = _error(GOOD, overrides=["stages.a.retries=many"])
    (problem,) = err.problems
    assert problem.location is not None
    assert "--set stages.a.retries=many" in str(problem.location)


@pytest.mark.parametrize("bad", ["params.x", "=7", "params..x=1", " =1", ".x=1"])
def test_malformed_override_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        loads(GOOD, "spec.yaml", [bad])
    assert "--set" in str(info.value)


def test_override_through_a_scalar_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        loads(GOOD, "spec.yaml", ["pipeline.x=1"])
    assert "'pipeline' is a string, not a mapping" in str(info.value)


def test_parse_override_splits_key_and_parses_value() -> None:
    assert parse_override("params.seed=7") == (["params", "seed"], 7)
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=x=y") == (["a"], "x=y")
