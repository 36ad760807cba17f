"""`pipeflow schema`: the JSON Schema of specs, including each stage type's `with:` block."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipeflow.core.schema import spec_schema
from pipeflow.core.stage import Port, Stage
from pipeflow.core.stage_types import StageRegistry

jsonschema = pytest.importorskip("jsonschema")

GOOD = """\
pipeline: schema-demo
params: {seed: 1}
executor: {kind: threads, workers: 2}
store: {root: memory://x}
triggers: {schedule: "0 2 * * *", on_data_change: [raw]}
stages:
  raw: {type: python, with: {function: "steps:load", outputs: {out: table}}}
  fit:
    type: python
    inputs: {rows: raw}
    retries: 2
    resources: {GPU: 1}
    with: {function: "steps:fit", kwargs: {seed: 1}}
"""


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return spec_schema()


def _errors(schema: dict[str, Any], doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(doc)]


def test_schema_is_itself_a_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"pipeline", "stages"}


def test_good_spec_validates(schema: dict[str, Any]) -> None:
    assert _errors(schema, yaml.safe_load(GOOD)) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["stages"]["fit"].update(retires=1), "retires"),
        (lambda d: d.update(pipeline="Bad Name"), "does not match"),
        (lambda d: d["stages"]["fit"].update(type="pyhton"), "pyhton"),
        (lambda d: d["stages"]["fit"]["with"].update(kwarg={}), "kwarg"),
        (lambda d: d["stages"]["raw"]["with"].pop("function"), "function"),
        (lambda d: d["executor"].update(kind="gpu"), "gpu"),
        (lambda d: d.pop("stages"), "stages"),
    ],
)
def test_broken_specs_fail_validation(schema: dict[str, Any], mutate: Any, expected: str) -> None:
    doc = yaml.safe_load(GOOD)
    mutate(doc)
    errors = _errors(schema, doc)
    assert errors, "the schema accepted a broken spec"
    assert any(expected in e for e in errors), errors


def test_schema_contains_the_python_stage_config(schema: dict[str, Any]) -> None:
    stage = schema["$defs"]["StageSpec"]
    assert "python" in stage["properties"]["type"]["enum"]
    branch = next(b for b in stage["allOf"] if b["if"]["properties"]["type"]["const"] == "python")
    config = branch["then"]["properties"]["with"]
    assert set(config["properties"]) == {"function", "kwargs", "outputs", "input_kinds"}
    assert config["required"] == ["function"]
    assert config["additionalProperties"] is False


def test_schema_includes_in_process_types_of_a_registry() -> None:
    from pydantic import BaseModel, ConfigDict

    class WidgetConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int

    class Widget(Stage):
        Config = WidgetConfig
        outputs = {"out": Port("table")}

        def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
            return {"out": 1}

    schema = spec_schema(StageRegistry(extra={"widget": Widget}, entry_points=False))
    stage = schema["$defs"]["StageSpec"]
    assert stage["properties"]["type"]["enum"] == ["widget"]
    doc = {"pipeline": "w", "stages": {"a": {"type": "widget", "with": {"size": 3}}}}
    assert _errors(schema, doc) == []
    doc["stages"]["a"]["with"] = {"size": "big"}
    assert _errors(schema, doc)


def test_broken_plugin_is_left_out_of_the_schema_not_fatal() -> None:
    schema = spec_schema(
        StageRegistry(extra={"broken": "no_such_module_xyz:Thing"}, entry_points=False)
    )
    assert schema["$defs"]["StageSpec"]["properties"]["type"]["enum"] == ["broken"]
    assert "allOf" not in schema["$defs"]["StageSpec"]
