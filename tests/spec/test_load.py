"""Spec loading (pipeflow.spec.load): grammar validation, interpolation, --set overrides, and
errors that name file:line:column, the stage and the field."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from pipeflow.errors import Location, SpecError, UsageError
from pipeflow.spec import load, loads, parse_override
from pipeflow.testing import write_spec

GOOD = """\
pipeline: claims-triage
description: a small pipeline
params: {seed: 42, target: category, depth: 6, nested: {a: 1}}
executor: {kind: sync}
stages:
  raw:
    type: python
    with: {function: "steps:load"}
  model:
    type: python
    inputs: {data: raw}
    retries: 2
    timeout_s: 30
    cache: false
    resources: {GPU: 1}
    with:
      function: "steps:fit"
      kwargs: {seed: "${params.seed}", target: "${params.target}", depth: "${params.depth}"}
"""


def _spec_error(text: str, overrides=(), file: str = "p.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        loads(textwrap.dedent(text), file, overrides)
    return info.value


def _one(err: SpecError):
    assert len(err.problems) == 1, str(err)
    return err.problems[0]


# ----------------------------------------------------------------------------- good specs


def test_good_spec_loads_with_defaults_and_every_field() -> None:
    spec = loads(GOOD, "p.yaml").spec
    assert spec.pipeline == "claims-triage"
    assert spec.executor.kind == "sync"
    assert spec.store.root is None and spec.triggers.schedule is None
    model = spec.stages["model"]
    assert model.inputs == {"data": "raw"}
    assert (model.retries, model.timeout_s, model.cache) == (2, 30, False)
    assert model.resources == {"GPU": 1.0}
    assert model.with_["kwargs"] == {"seed": 42, "target": "category", "depth": 6}
    raw = spec.stages["raw"]
    assert (raw.retries, raw.timeout_s, raw.cache, raw.inputs) == (0, None, True, {})


def test_load_reads_a_file_and_knows_its_folder(tmp_path: Path) -> None:
    path = write_spec(tmp_path, GOOD)
    loaded = load(path)
    assert loaded.path == path.resolve()
    assert loaded.base_dir == path.resolve().parent
    assert loaded.spec.stages["raw"].type == "python"


def test_loading_never_imports_user_code(tmp_path: Path) -> None:
    steps = "raise RuntimeError('user code ran at load time')\n"
    path = write_spec(tmp_path, GOOD, {"steps.py": steps})
    loaded = load(path)
    assert loaded.spec.stages["raw"].with_["function"] == "steps:load"
    assert "steps" not in sys.modules or getattr(sys.modules["steps"], "__file__", "") != str(
        tmp_path / "steps.py"
    )


def test_digest_depends_on_resolved_values_not_on_formatting() -> None:
    a = loads(GOOD, "a.yaml")
    b = loads(GOOD.replace("{seed: 42,", "{ seed:   42 ,"), "b.yaml")
    c = loads(GOOD, "a.yaml", ["params.seed=43"])
    assert a.digest == b.digest
    assert a.digest != c.digest


# ----------------------------------------------------------------------------- file problems


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load(tmp_path / "nope.yaml")


def test_directory_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="expected a YAML file, got a directory"):
        load(tmp_path)


def test_non_utf8_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pipeline: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load(path)


def test_syntax_error_in_a_file_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "pipeline: x\nstages:\n  a: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load(path)
    loc = info.value.location
    assert loc is not None and loc.file == str(path) and loc.line and loc.column
    assert str(info.value).startswith(f"{path}:{loc.line}:{loc.column}: invalid YAML")


def test_top_level_must_be_a_mapping() -> None:
    problem = _one(_spec_error("- just\n- a list\n"))
    assert "expected a mapping with 'pipeline' and 'stages' at the top, got a list" in str(problem)
    assert problem.location == Location("p.yaml", 1, 1)


# ----------------------------------------------------------------------------- grammar


def test_unknown_stage_key_suggests_the_close_one_with_its_position() -> None:
    err = _spec_error(
        """\
        pipeline: x
        stages:
          a:
            type: python
            retires: 2
        """
    )
    problem = _one(err)
    assert problem.location == Location("p.yaml", 5, 5)
    assert problem.stage == "a" and problem.field == "retires"
    assert "unknown key 'retires'; did you mean 'retries'?" in problem.message
    assert "expected one of: type, description, inputs, with" in problem.message
    assert str(err).startswith("p.yaml:5:5: stage 'a', field 'retires': unknown key")


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    err = _spec_error("pipeline: x\nstages: {a: {type: python}}\nparmas: {}\n")
    problem = _one(err)
    assert "did you mean 'params'?" in problem.message
    assert problem.location == Location("p.yaml", 3, 1)
    assert problem.stage is None and problem.field == "parmas"


def test_unknown_key_in_a_nested_block_lists_that_block_s_keys() -> None:
    err = _spec_error("pipeline: x\nexecutor: {knd: threads}\nstages: {a: {type: python}}\n")
    problem = _one(err)
    assert "unknown key 'knd'; did you mean 'kind'?" in problem.message
    assert "expected one of: kind, address, workers, threads_per_worker" in problem.message
    assert problem.field == "executor.knd"
    assert problem.location == Location("p.yaml", 2, 12)


def test_unknown_key_far_from_any_known_one_has_no_suggestion() -> None:
    problem = _one(_spec_error("pipeline: x\nstages: {a: {type: python, zzzzzz: 1}}\n"))
    assert "did you mean" not in problem.message
    assert "unknown key 'zzzzzz'" in problem.message


@pytest.mark.parametrize(
    "line, field, expected",
    [
        ("    retries: many", "retries", "valid integer"),
        ("    retries: -1", "retries", "greater than or equal to 0"),
        ("    timeout_s: 0", "timeout_s", "greater than 0"),
        ("    cache: maybe", "cache", "valid boolean"),
        ("    inputs: [raw]", "inputs", "valid dictionary"),
        ("    resources: {GPU: lots}", "resources.GPU", "valid number"),
        ("    inputs: {data: 'Not A Ref'}", "inputs.data", "should match pattern"),
    ],
)
def test_wrong_value_types_name_stage_field_and_position(
    line: str, field: str, expected: str
) -> None:
    text = f"pipeline: x\nstages:\n  raw: {{type: python}}\n  a:\n    type: python\n{line}\n"
    problem = _one(_spec_error(text))
    assert problem.stage == "a" and problem.field == field
    assert expected in problem.message
    assert ", got " in problem.message
    assert problem.location is not None
    assert (problem.location.file, problem.location.line) == ("p.yaml", 6)
    assert problem.location.column is not None and problem.location.column > 5


def test_bad_pipeline_name_and_stage_name() -> None:
    err = _spec_error("pipeline: Not Valid\nstages:\n  Bad-Name: {type: python}\n")
    fields = {(p.stage, p.field) for p in err.problems}
    assert (None, "pipeline") in fields
    assert any(p.location and p.location.line == 3 for p in err.problems)


def test_executor_kind_must_be_one_of_the_known_ones() -> None:
    problem = _one(_spec_error("pipeline: x\nexecutor: {kind: gpu}\nstages: {a: {type: python}}\n"))
    assert problem.field == "executor.kind"
    assert "'sync', 'threads', 'processes' or 'distributed'" in problem.message
    assert "got 'gpu'" in problem.message


def test_missing_required_keys() -> None:
    err = _spec_error("description: nothing else\n")
    messages = sorted(p.message for p in err.problems)
    assert messages == ["missing required key 'pipeline'", "missing required key 'stages'"]
    assert all(p.location and p.location.line for p in err.problems)


def test_stage_without_type_is_located_at_the_stage() -> None:
    problem = _one(_spec_error("pipeline: x\nstages:\n  a:\n    retries: 1\n"))
    assert problem.message == "missing required key 'type'"
    assert problem.stage == "a" and problem.field == "type"
    assert problem.location == Location("p.yaml", 4, 5)


def test_empty_stages_is_an_error() -> None:
    problem = _one(_spec_error("pipeline: x\nstages: {}\n"))
    assert problem.field == "stages"
    assert "at least 1 item" in problem.message


def test_several_problems_are_collected_in_one_error_in_file_order() -> None:
    err = _spec_error(
        """\
        pipeline: x
        stages:
          a:
            type: python
            retries: lots
          b:
            type: python
            cach: false
          c:
            type: python
            timeout_s: -5
        """
    )
    assert [(p.stage, p.field) for p in err.problems] == [
        ("a", "retries"),
        ("b", "cach"),
        ("c", "timeout_s"),
    ]
    assert [p.location.line for p in err.problems if p.location] == [5, 8, 11]
    assert str(err).count("\n") == 2


# ----------------------------------------------------------------------------- interpolation


def _with(text_kwargs: str, params: str = "{seed: 42, name: abc, nested: {a: 1}}", **kw) -> dict:
    spec = f"pipeline: x\nparams: {params}\nstages:\n  a:\n    type: python\n    with: {{kwargs: {text_kwargs}}}\n"
    return loads(spec, "p.yaml", **kw).spec.stages["a"].with_["kwargs"]


def test_a_whole_value_reference_keeps_the_param_type() -> None:
    got = _with("{i: '${params.seed}', d: '${params.nested}', s: '${params.name}'}")
    assert got == {"i": 42, "d": {"a": 1}, "s": "abc"}


def test_a_reference_inside_a_string_is_substituted_as_text() -> None:
    got = _with("{t: 'seed-${params.seed}/${params.name}', j: 'cfg=${params.nested}'}")
    assert got == {"t": "seed-42/abc", "j": 'cfg={"a": 1}'}


def test_nested_param_path() -> None:
    assert _with("{v: '${params.nested.a}'}") == {"v": 1}


def test_double_dollar_escapes_interpolation() -> None:
    got = _with("{a: '$${params.seed}', b: 'x-$${env:HOME}-${params.seed}', c: 'just $5'}")
    assert got == {"a": "${params.seed}", "b": "x-${env:HOME}-42", "c": "just $5"}


def test_references_in_lists_are_resolved() -> None:
    assert _with("{xs: ['${params.seed}', 'n-${params.name}']}") == {"xs": [42, "n-abc"]}


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEFLOW_TEST_TOKEN", "s3cret")
    got = _with("{t: '${env:PIPEFLOW_TEST_TOKEN}', u: 'Bearer ${env:PIPEFLOW_TEST_TOKEN}'}")
    assert got == {"t": "s3cret", "u": "Bearer s3cret"}


def test_env_default_used_only_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEFLOW_TEST_UNSET", raising=False)
    monkeypatch.setenv("PIPEFLOW_TEST_SET", "real")
    got = _with(
        "{a: '${env:PIPEFLOW_TEST_UNSET:-fallback}', b: '${env:PIPEFLOW_TEST_SET:-fallback}',"
        " c: '${env:PIPEFLOW_TEST_UNSET:-}'}"
    )
    assert got == {"a": "fallback", "b": "real", "c": ""}


def test_env_reference_in_params_flows_into_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEFLOW_TEST_BUCKET", "s3://b")
    got = _with("{p: '${params.root}/x'}", params="{root: '${env:PIPEFLOW_TEST_BUCKET}'}")
    assert got == {"p": "s3://b/x"}


def test_unset_env_variable_is_a_located_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEFLOW_TEST_UNSET", raising=False)
    with pytest.raises(SpecError) as info:
        _with("{t: '${env:PIPEFLOW_TEST_UNSET}'}")
    problem = _one(info.value)
    assert "environment variable 'PIPEFLOW_TEST_UNSET' is not set" in problem.message
    assert "${env:PIPEFLOW_TEST_UNSET:-default}" in problem.message
    assert problem.stage == "a" and problem.field == "with.kwargs.t"
    assert problem.location is not None and problem.location.line == 6


def test_unknown_param_suggests_and_lists_defined_params() -> None:
    with pytest.raises(SpecError) as info:
        _with("{t: '${params.sede}'}")
    problem = _one(info.value)
    assert "unknown param 'params.sede'; did you mean 'seed'?" in problem.message
    assert "params defined: name, nested, seed" in problem.message
    assert problem.stage == "a" and problem.field == "with.kwargs.t"
    assert problem.location is not None and problem.location.line == 6


def test_unknown_param_when_none_are_defined() -> None:
    with pytest.raises(SpecError, match="no params are defined"):
        _with("{t: '${params.seed}'}", params="{}")


def test_params_cannot_refer_to_other_params() -> None:
    with pytest.raises(SpecError, match="params cannot refer to other params") as info:
        _with("{}", params="{a: 1, b: '${params.a}'}")
    assert _one(info.value).field == "params.b"


def test_unknown_interpolation_form_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"cannot interpolate '\$\{secret:x\}'"):
        _with("{t: '${secret:x}'}")


# ----------------------------------------------------------------------------- overrides


def test_parse_override_parses_values_as_yaml() -> None:
    assert parse_override("params.seed=7") == (["params", "seed"], 7)
    assert parse_override("params.rate=0.5") == (["params", "rate"], 0.5)
    assert parse_override("params.on=true") == (["params", "on"], True)
    assert parse_override("params.xs=[1, 2]") == (["params", "xs"], [1, 2])
    assert parse_override("params.m={a: 1}") == (["params", "m"], {"a": 1})
    assert parse_override("params.s=hello world") == (["params", "s"], "hello world")
    assert parse_override("params.s=a=b") == (["params", "s"], "a=b")
    assert parse_override("params.s=") == (["params", "s"], "")
    assert parse_override("params.s='7'") == (["params", "s"], "7")


@pytest.mark.parametrize(
    "item, message",
    [
        ("params.seed", "expects KEY=VALUE"),
        ("=7", "expects KEY=VALUE"),
        ("params..seed=7", "has an empty part"),
        (".seed=7", "has an empty part"),
    ],
)
def test_malformed_override_is_a_usage_error(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_override(item)


def test_override_flows_into_every_reference_with_its_parsed_type() -> None:
    loaded = loads(GOOD, "p.yaml", ["params.seed=7", "params.target=label"])
    assert loaded.spec.params["seed"] == 7
    assert loaded.spec.stages["model"].with_["kwargs"] == {
        "seed": 7,
        "target": "label",
        "depth": 6,
    }
    assert loaded.overrides == ("params.seed=7", "params.target=label")


def test_override_from_a_mapping_keeps_python_types() -> None:
    loaded = loads(GOOD, "p.yaml", {"params.seed": 9, "params.target": "7"})
    assert loaded.spec.stages["model"].with_["kwargs"]["seed"] == 9
    assert loaded.spec.stages["model"].with_["kwargs"]["target"] == "7"


def test_override_from_a_mapping_keeps_floats_and_yaml_lookalike_strings() -> None:
    values = {"params.lr": 1e-5, "params.big": 1e16, "params.word": "yes", "params.n": None}
    params = loads(GOOD, "p.yaml", values).spec.params
    assert params["lr"] == 1e-5 and isinstance(params["lr"], float)
    assert params["big"] == 1e16
    assert params["word"] == "yes" and params["n"] is None


def test_override_can_set_stage_settings_and_add_params() -> None:
    loaded = loads(GOOD, "p.yaml", ["stages.raw.retries=4", "params.extra=x"])
    assert loaded.spec.stages["raw"].retries == 4
    assert loaded.spec.params["extra"] == "x"


def test_override_through_a_scalar_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"'pipeline' is a string, not a mapping"):
        loads(GOOD, "p.yaml", ["pipeline.name=x"])


def test_override_of_an_unknown_top_level_key_points_at_the_override() -> None:
    with pytest.raises(SpecError) as info:
        loads(GOOD, "p.yaml", ["parmas.seed=1"])
    problem = _one(info.value)
    assert problem.location == Location("--set parmas.seed=1")
    assert "unknown key 'parmas'; did you mean 'params'?" in problem.message


def test_an_override_replacing_a_list_owns_the_positions_of_its_items() -> None:
    from pipeflow.core.compiler import compile_pipeline

    text = GOOD.replace("stages:\n", "triggers: {on_data_change: [raw]}\nstages:\n", 1)
    assert compile_pipeline(loads(text, "p.yaml")).name == "claims-triage"
    override = "triggers.on_data_change=[nosuch]"
    with pytest.raises(SpecError) as info:
        compile_pipeline(loads(text, "p.yaml", [override]))
    problem = _one(info.value)
    assert problem.location == Location(f"--set {override}"), problem  # not the file's list
    assert "names no stage 'nosuch'" in problem.message


def test_override_with_a_bad_value_names_the_override_stage_and_field() -> None:
    with pytest.raises(SpecError) as info:
        loads(GOOD, "p.yaml", ["stages.raw.retries=many"])
    problem = _one(info.value)
    assert problem.location == Location("--set stages.raw.retries=many")
    assert problem.stage == "raw" and problem.field == "retries"
    assert str(problem).startswith("--set stages.raw.retries=many: stage 'raw', field 'retries'")


def test_override_with_a_misspelt_stage_key_suggests_the_right_one() -> None:
    with pytest.raises(SpecError, match="did you mean 'retries'"):
        loads(GOOD, "p.yaml", ["stages.raw.retires=1"])


def test_params_that_are_not_a_mapping_are_said_so_not_reported_as_unknown_params() -> None:
    with pytest.raises(SpecError) as info:
        loads(GOOD, "p.yaml", ["params=3"])
    problem = _one(info.value)
    assert problem.location == Location("--set params=3") and problem.field == "params"
    assert problem.message == "expected a mapping of names to values, got 3"


def test_a_metadata_url_pipeflow_cannot_use_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        loads(GOOD, "p.yaml", ["store.metadata=mysql://db/pipeflow"])
    problem = _one(info.value)
    assert problem.location == Location("--set store.metadata=mysql://db/pipeflow")
    assert problem.field == "store.metadata" and "sqlite:///" in problem.message
    assert "postgresql://" in problem.message
    assert loads(GOOD, "p.yaml", ["store.metadata=sqlite:///m.db"]).spec.store.metadata
    url = "postgresql://team@db.example/pipeflow"
    assert loads(GOOD, "p.yaml", [f"store.metadata={url}"]).spec.store.metadata == url


def test_the_environment_sets_where_the_store_is_and_set_wins_over_it(monkeypatch) -> None:
    monkeypatch.setenv("PIPEFLOW_STORE__METADATA", "postgresql://team@db.example/pipeflow")
    monkeypatch.setenv("PIPEFLOW_STORE__ROOT", "s3://bucket/team")
    loaded = loads(GOOD, "p.yaml")
    assert loaded.spec.store.metadata == "postgresql://team@db.example/pipeflow"
    assert loaded.spec.store.root == "s3://bucket/team"
    assert loaded.overrides == ()  # not recorded with the run as if the user had typed them
    loaded = loads(GOOD, "p.yaml", ["store.root=/elsewhere"])
    assert loaded.spec.store.root == "/elsewhere"
    monkeypatch.setenv("PIPEFLOW_STORE__METADATA", "mysql://db/x")
    with pytest.raises(SpecError) as info:
        loads(GOOD, "p.yaml")
    problem = _one(info.value)
    assert problem.location == Location("$PIPEFLOW_STORE__METADATA")
    assert problem.field == "store.metadata"
