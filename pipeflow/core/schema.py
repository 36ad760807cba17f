"""JSON Schema of pipeline specs, including each installed stage type's ``with:`` block.

The stage schema uses ``allOf`` with ``if type == X then with: <X's Config schema>``, the form
yaml-language-server and VS Code understand, so editors complete and check ``with:`` per type.
"""

from __future__ import annotations

from typing import Any

from pipeflow.core.stage_types import StageRegistry, StageTypeLoadError, default_registry
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
    return _allow_interpolation(schema)


_INTERPOLATED = {
    "type": "string",
    "pattern": r"\$\{[^}]+\}",
    "description": "${params.x} or ${env:NAME}",
}


def _allow_interpolation(node: Any) -> Any:
    """Any typed value may be written as ``${params.x}`` / ``${env:NAME}`` (resolved before
    validation), so a non-string ``type`` also accepts such a string: the editor must not flag
    ``seed: ${params.seed}`` where an integer is expected."""
    if isinstance(node, list):
        return [_allow_interpolation(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_interpolation(v) for k, v in node.items()}
    kind = out.get("type")  # a property *named* "type" has a schema (a dict) here, not a type
    if isinstance(kind, str) and kind not in ("string", "object", "null") and "enum" not in out:
        return {"anyOf": [out, _INTERPOLATED]}
    return out
