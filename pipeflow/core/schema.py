"""JSON Schema of pipeline specs, including each installed stage type's ``with:`` block.

The stage schema uses ``allOf`` with ``if type == X then with: <X's Config schema>``, the form
yaml-language-server and VS Code understand, so editors complete and check ``with:`` per type.
"""

from __future__ import annotations

from typing import Any

from pipeflow.core.registry import StageRegistry, StageTypeLoadError, default_registry
from pipeflow.spec.model import PipelineSpec


def spec_schema(registry: StageRegistry | None = None) -> dict[str, Any]:
    registry = registry or default_registry()
    schema = PipelineSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pipeflow pipeline spec"
    defs = schema.setdefault("$defs", {})
    stage = defs["StageSpec"]
    names = registry.names()
    stage["properties"]["type"] = {
        "type": "string",
        "enum": names,
        "description": "stage type (installed types)",
    }
    branches = []
    for name in names:
        try:
            cls = registry.get(name)
        except StageTypeLoadError:
            continue
        cfg = cls.Config.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        for key, sub in cfg.pop("$defs", {}).items():
            defs.setdefault(key, sub)
        branches.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"with": cfg}},
            }
        )
    if branches:
        stage["allOf"] = branches
    return schema
