"""load: spec file -> validated :class:`PipelineSpec`, with every error pointing into the file.

Order of work, and why:

1. parse YAML with positions (:mod:`pipeflow.spec.yamlsrc`);
2. apply the deployment's settings from the environment (:data:`ENV_SETTINGS`:
   ``$PIPEFLOW_STORE__ROOT``, ``$PIPEFLOW_STORE__METADATA``, taken as plain strings), then
   ``--set a.b=value`` overrides to the raw data (values parsed as YAML scalars, so
   ``--set params.seed=7`` gives an int), before interpolation so overridden params flow into
   every ``${params.x}`` that uses them;
3. interpolate ``${params.x}`` / ``${env:NAME}`` / ``${env:NAME:-default}`` (``$${`` escapes).
   A value that is exactly one reference keeps the referenced type (``max_depth: ${params.d}``
   stays an int); a reference inside a longer string is substituted as text;
4. validate with pydantic; each validation error becomes a :class:`Problem` naming
   file:line:column, the stage and the field, with a did-you-mean for unknown keys.

Nothing here imports user code, ML libraries or the executor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeflow.errors import Location, Problem, SpecError, UsageError
from pipeflow.spec.model import PipelineSpec
from pipeflow.spec.yamlsrc import Source, parse

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus where it came from (for error positions and relative paths)."""

    spec: PipelineSpec
    source: Source
    path: Path
    overrides: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @functools.cached_property
    def digest(self) -> str:
        """Hash of the resolved spec (after overrides and interpolation); computed once (a run
        asks twice: the run lock and the run record), as the spec is not changed after loading."""
        blob = json.dumps(self.spec.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


Overrides = Sequence[str] | Mapping[str, Any]


def load(path: str | os.PathLike[str], overrides: Overrides = ()) -> LoadedSpec:
    """Load and validate a spec file. Raises :class:`SpecError` with file positions."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {p}", Location(str(p))) from None
    except IsADirectoryError:
        raise SpecError(f"expected a YAML file, got a directory: {p}", Location(str(p))) from None
    except UnicodeDecodeError as err:  # name the line, as for every other spec problem
        raw = err.object
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecError(
            f"spec is not UTF-8 text ({err.reason} at byte {err.start})",
            Location(str(p), line, column),
        ) from None
    except OSError as err:
        raise SpecError(f"cannot read spec: {err.strerror}", Location(str(p))) from None
    return loads(text, str(p), overrides)


def loads(text: str, file: str = "<spec>", overrides: Overrides = ()) -> LoadedSpec:
    """Like :func:`load` for YAML text already in memory; ``file`` names it in errors.

    ``overrides`` are ``"a.b=value"`` strings as on the command line, or a mapping
    ``{"params.seed": 7}`` from Python.
    """
    overrides = override_strings(overrides)
    source = parse(text, file)
    if not isinstance(source.data, dict):
        raise SpecError(
            f"expected a mapping with 'pipeline' and 'stages' at the top, got {_kind(source.data)}",
            Location(file, 1, 1),
        )
    data = source.data
    for name, parts in ENV_SETTINGS.items():
        if os.environ.get(name):
            _set_path(data, source, list(parts), os.environ[name], Location(f"${name}"), name)
    for item in overrides:
        _apply_override(data, source, item)
    # a document without a "$" (file, --set and environment values alike) has nothing to
    # interpolate: it is not copied through _interpolate (a tenth of loading a big spec). A
    # backslash may be an escape that makes one ("\x24" in a double-quoted string)
    refs = "$" in text or "\\" in text or any("$" in item for item in overrides)
    refs = refs or any("$" in os.environ.get(name, "") for name in ENV_SETTINGS)
    data = _interpolate_document(data, source, refs=refs)
    source.data = data
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_problems(err, source, (), PipelineSpec)) from None
    return LoadedSpec(
        spec,
        source,
        Path(file).resolve() if file != "<spec>" else Path.cwd() / file,
        tuple(overrides),
    )


# ----------------------------------------------------------------------------- overrides


def override_strings(overrides: Overrides) -> tuple[str, ...]:
    """Normalise overrides to ``KEY=VALUE`` strings (a mapping's values are written as flow-style
    YAML, which reads back as the same value; JSON would not: YAML reads ``1e-05`` as a string)."""
    if isinstance(overrides, str):
        return (overrides,)
    if isinstance(overrides, Mapping):
        return tuple(f"{k}={_yaml_text(v)}" for k, v in overrides.items())
    return tuple(overrides)


def _yaml_text(value: Any) -> str:
    text = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=False, width=2**31 - 1, sort_keys=False
    )
    if text.endswith("\n...\n"):  # the end-of-document marker after a plain scalar
        text = text[: -len("...\n")]
    return text[:-1] if text.endswith("\n") else text


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as a YAML scalar)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects KEY=VALUE (e.g. params.seed=7), got {item!r}")
    parts = key.strip().split(".")
    if any(not part for part in parts):
        raise UsageError(f"--set key {key!r} has an empty part; write e.g. params.seed=7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


#: environment variables that set a spec field (over the file, under ``--set``): where the
#: team's store is belongs to the machine, not to the spec in git (docs/howto-team.md)
ENV_SETTINGS: dict[str, tuple[str, ...]] = {
    "PIPEFLOW_STORE__ROOT": ("store", "root"),
    "PIPEFLOW_STORE__METADATA": ("store", "metadata"),
}


def _apply_override(data: dict, source: Source, item: str) -> None:
    parts, value = parse_override(item)
    _set_path(data, source, parts, value, Location(f"--set {item}"), f"--set {item}")


def _set_path(
    data: dict, source: Source, parts: list[str], value: Any, loc: Location, label: str
) -> None:
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        nxt = target.get(part) if isinstance(target, dict) else None
        if nxt is None:
            nxt = {}
            target[part] = nxt
            # a key the override creates is located at the override, not in the file
            source.values[tuple(parts[: depth + 1])] = loc
            source.keys[tuple(parts[: depth + 1])] = loc
        if not isinstance(nxt, dict):
            where = ".".join(parts[: depth + 1])
            raise UsageError(f"{label}: '{where}' is {_kind(nxt)}, not a mapping")
        target = nxt
    target[parts[-1]] = value
    # what the file held below the key is gone: its positions must not be reported for the new
    # value's items (``--set triggers.on_data_change=[x]`` over a list in the file)
    replaced = tuple(parts)
    for table in (source.values, source.keys):
        for path in [p for p in table if len(p) > len(replaced) and p[: len(replaced)] == replaced]:
            del table[path]
    source.values[replaced] = loc
    source.keys[replaced] = loc


# ----------------------------------------------------------------------------- interpolation


def _interpolate_document(data: dict, source: Source, *, refs: bool = True) -> dict:
    params_raw = data.get("params", {})
    if params_raw is not None and not isinstance(params_raw, dict):
        # said here, before a ${params.x} elsewhere reports the param as unknown
        message = f"expected a mapping of names to values, got {_show(params_raw)}"
        raise SpecError([Problem(message, source.where(("params",)), field="params")])
    if not refs:
        return data
    params = (
        _interpolate(params_raw, ("params",), source, None)
        if isinstance(params_raw, dict)
        else params_raw
    )
    out = {}
    for key, value in data.items():
        out[key] = params if key == "params" else _interpolate(value, (key,), source, params)
    return out


def _interpolate(value: Any, path: tuple, source: Source, params: dict | None) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), source, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), source, params) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole and whole.group(1) is not None:
        return _resolve(whole.group(1), path, source, params)

    def sub(m: re.Match) -> str:
        if m.group(1) is None:
            return "${"
        resolved = _resolve(m.group(1), path, source, params)
        return resolved if isinstance(resolved, str) else json.dumps(resolved)

    return _REF.sub(sub, value)


def _resolve(expr: str, path: tuple, source: Source, params: dict | None) -> Any:
    expr = expr.strip()
    stage, field = stage_and_field(path)
    if expr.startswith("env:"):
        name, _, default = expr[4:].partition(":-")
        name = name.strip()
        if name in os.environ:
            return os.environ[name]
        if ":-" in expr:
            return default
        raise SpecError(
            Problem(
                f"environment variable '{name}' is not set (write ${{env:{name}:-default}} for a default)",
                source.where(path),
                stage=stage,
                field=field,
            )
        )
    if expr.startswith("params."):
        if params is None:
            raise SpecError(
                Problem(
                    "params cannot refer to other params; use literal values or ${env:...}",
                    source.where(path),
                    stage=stage,
                    field=field,
                )
            )
        current: Any = params
        walked = []
        for part in expr[len("params.") :].split("."):
            walked.append(part)
            if not isinstance(current, dict) or part not in current:
                options = sorted(current) if isinstance(current, dict) else []
                hint = did_you_mean(part, options)
                known = (
                    f"; params defined: {', '.join(options)}"
                    if options
                    else "; no params are defined"
                )
                raise SpecError(
                    Problem(
                        f"unknown param 'params.{'.'.join(walked)}'{hint}{known}",
                        source.where(path),
                        stage=stage,
                        field=field,
                    )
                )
            current = current[part]
        return current
    raise SpecError(
        Problem(
            f"cannot interpolate '${{{expr}}}': expected ${{params.NAME}} or ${{env:NAME}}",
            source.where(path),
            stage=stage,
            field=field,
        )
    )


# ----------------------------------------------------------------------------- errors


def stage_and_field(path: Sequence[Any]) -> tuple[str | None, str | None]:
    """``("stages", "a", "with", "k")`` -> ``("a", "with.k")``; other paths have no stage."""
    path = tuple(path)
    if len(path) >= 2 and path[0] == "stages":
        return str(path[1]), ".".join(str(p) for p in path[2:]) or None
    return None, ".".join(str(p) for p in path) or None


def validation_problems(
    err: ValidationError,
    source: Source,
    prefix: tuple,
    model: type[BaseModel],
    *,
    stage: str | None = None,
) -> list[Problem]:
    """Turn a pydantic ValidationError into positioned, human problems."""
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        full = (*prefix, *loc)
        kind = e["type"]
        stage_name = stage
        if stage_name is None and len(full) >= 2 and full[0] == "stages":
            stage_name = str(full[1])
        field_path = full[2:] if stage_name is not None and full[:1] == ("stages",) else full
        field = ".".join(str(p) for p in field_path) or None
        if kind == "extra_forbidden":
            allowed = _keys_at(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            expected = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            msg = f"unknown key '{loc[-1]}'{hint}{expected}"
            where = source.where(full, key=True)
        elif kind == "missing":
            msg = f"missing required key '{loc[-1]}'"
            where = source.where(full[:-1])
        else:
            msg = pydantic_message(e)
            where = source.where(full)
        problems.append(Problem(msg, where, stage=stage_name, field=field))
    return problems


def did_you_mean(word: str, options: list[str]) -> str:
    import difflib  # only for a problem: not imported by a spec that loads cleanly

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _strip(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    tp: Any = model
    for part in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return []
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def pydantic_message(error: Any) -> str:
    """One of pydantic's errors as pipeflow says it: without pydantic's "Value error, " prefix,
    and with the value it got, unless the message says it already."""
    msg = str(error["msg"]).removeprefix("Value error, ")
    return msg if "got " in msg else f"{msg}, got {_show(error.get('input'))}"


def _show(value: Any) -> str:
    text = (
        repr(value)
        if not isinstance(value, dict | list)
        else f"{_kind(value)} {json.dumps(value, default=str)}"
    )
    return text if len(text) <= 80 else text[:77] + "..."
