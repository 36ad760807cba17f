"""Write docs/spec-keys.md, every key a spec may hold, from the JSON Schema of specs.

The schema is the one `pipeflow schema` prints (:func:`pipeflow.core.schema.spec_schema`):
built from the same pydantic models that validate a spec, with a branch per installed stage type.
So this page cannot drift from the code: `make docs` regenerates it, and
tests/test_docs.py fails when the committed page differs from what this script writes (and when
a table of the hand-written docs/spec-reference.md lists other keys than the schema has).

    python tools/spec_reference.py           # write docs/spec-keys.md
    python tools/spec_reference.py --check   # exit 1 if docs/spec-keys.md is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[1] / "docs" / "spec-keys.md"
PARAM = "${params.x} or ${env:NAME}"  # the description of the interpolation alternative


def schema() -> dict[str, Any]:
    from pipeflow.core.schema import spec_schema

    return spec_schema()


def sections(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(title, object schema) of each table: the top level, its sections, a stage, each type."""
    defs = doc["$defs"]
    out = [("Top level", doc)]
    for key in ("executor", "store", "triggers"):
        out.append((f"`{key}`", _deref(doc["properties"][key], defs)))
    stage = defs["StageSpec"]
    out.append(("A stage", stage))
    for branch in stage.get("allOf", []):
        name = branch["if"]["properties"]["type"]["const"]
        out.append((f"Stage type `{name}`: `with:`", branch["then"]["properties"]["with"]))
    return out


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _alternatives(node: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The schema's alternatives for a value, without `${...}` and null; and whether a
    `${params.x}` string is accepted."""
    options = node.get("anyOf", [node])
    flat: list[dict[str, Any]] = []
    for option in options:
        flat.extend(option.get("anyOf", [option]))
    interpolated = any(o.get("description") == PARAM for o in flat)
    kept = [o for o in flat if o.get("description") != PARAM and o.get("type") != "null"]
    return kept, interpolated


def type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short, readable rendering of a value's schema."""
    options, _ = _alternatives(node)
    return " \\| ".join(_one(o, defs) for o in options) or "any"


def _one(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = defs[name]
        if "enum" in target:
            return " \\| ".join(f"`{v}`" for v in target["enum"])
        keys = ", ".join(target.get("properties", {}))
        return f"mapping ({keys})" if keys else "mapping"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    kind = node.get("type")
    if kind == "array":
        items = node.get("items")
        return f"list of {_one(items, defs)}" if items else "list"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"mapping → {type_of(values, defs)}"
        pattern = node.get("patternProperties")
        if pattern:
            (value,) = pattern.values()
            return f"mapping → {type_of(value, defs)}"
        return "mapping"
    text = {"string": "string", "integer": "int", "number": "number", "boolean": "bool"}.get(
        str(kind), str(kind or "any")
    )
    limits = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if key in node:
            limits.append(f"{sign} {node[key]:g}")
    if "exclusiveMaximum" in node:
        limits.append(f"< {node['exclusiveMaximum']:g}")
    if "minLength" in node and node["minLength"] > 1:
        limits.append(f"≥ {node['minLength']} chars")
    if "maxLength" in node:
        limits.append(f"≤ {node['maxLength']} chars")
    if "pattern" in node:
        limits.append(f"`{node['pattern']}`")
    return f"{text} ({', '.join(limits)})" if limits else text


def _default(node: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    for option in [node, *node.get("anyOf", [])]:
        if "default" in option:
            value = option["default"]
            return "none" if value is None else f"`{json.dumps(value)}`"
    kinds = {o.get("type") for o in [node, *node.get("anyOf", [])]}
    return "`{}`" if "object" in kinds or "$ref" in node else "`[]`" if "array" in kinds else "none"


def _description(node: dict[str, Any]) -> str:
    for option in [node, *node.get("anyOf", [])]:
        if option.get("description") and option["description"] != PARAM:
            return " ".join(str(option["description"]).split()).replace("|", "\\|")
    return ""


def render(doc: dict[str, Any]) -> str:
    defs = doc["$defs"]
    lines = [
        "# Spec keys (generated)",
        "",
        "Every key a spec may hold, with its type, default and meaning, written by",
        "`tools/spec_reference.py` from the JSON Schema that `pipeflow schema` prints (the schema",
        "comes from the same models that validate a spec, with the stage types installed when the",
        "page was made: the built-ins and the `sql` plugin). Do not edit it by hand: `make docs`",
        "rewrites it. What the keys are for, with examples, is in [spec-reference.md](spec-reference.md).",
        "",
        "A key marked ✓ in the `${}` column also takes a `${params.x}` or `${env:NAME}` string,",
        "checked once it is interpolated.",
    ]
    for title, node in sections(doc):
        props = node.get("properties", {})
        required = set(node.get("required", []))
        lines += ["", f"## {title}", ""]
        if node.get("description") and title.startswith("Stage type"):
            lines += [" ".join(node["description"].split()), ""]
        lines += ["| key | type | default | `${}` | meaning |", "|---|---|---|---|---|"]
        for key, value in props.items():
            _, interpolated = _alternatives(value)
            lines.append(
                f"| `{key}` | {type_of(value, defs)} | {_default(value, key in required)} "
                f"| {'✓' if interpolated else ''} | {_description(value)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render(schema())
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python tools/spec_reference.py", file=sys.stderr)
            return 1
        print(f"ok: {PAGE} is up to date")
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
