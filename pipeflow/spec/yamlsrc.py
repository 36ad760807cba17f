"""YAML to plain Python data, remembering where every key and value came from.

Why not ``yaml.safe_load``: it forgets positions, silently keeps the last of two duplicate keys,
and turns keys such as ``on`` or ``yes`` into booleans. Here the document is *composed* into nodes
(libyaml's C parser when available, so a 1000-stage spec loads in milliseconds) and walked once:

- every mapping key stays the string the user typed;
- a key given twice in one mapping is an error naming both lines;
- only the YAML core schema is accepted (``!!python/object`` and any other custom tag is an error,
  never code execution);
- anchors, aliases and ``<<`` merge keys work, but an alias bomb (exponential expansion) or a
  recursive alias is refused, and so is nesting deeper than ``MAX_DEPTH``.

The result is :class:`Source`: the data plus ``where(path)``, which maps a path such as
``("stages", "model", "with", "max_depth")`` to a :class:`~pipeflow.errors.Location`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeflow.errors import Location, Problem, SpecError

try:  # libyaml: ~10x faster composing; marks and tags behave the same.
    _Parser: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pyyaml built without libyaml
    _Parser = yaml.SafeLoader

_resolved: dict[tuple[str, tuple[bool, bool]], str] = {}


class _BaseLoader(_Parser):  # type: ignore[misc,valid-type]
    """The safe loader with scalar tag resolution memoised: resolving runs a few regexes in
    Python for every scalar, and a big spec repeats the same keys and values thousands of times."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        memo_key = (value, tuple(implicit))
        tag = _resolved.get(memo_key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_resolved) > 50_000:
                _resolved.clear()
            _resolved[memo_key] = tag
        return tag


MAX_DEPTH = 64
MAX_NODES = 1_000_000

Path = tuple[Any, ...]


@dataclass
class Source:
    """Parsed YAML data with the position of each key and value."""

    file: str
    data: Any
    #: path -> (line, column) of the key / of the value; a Location where positions are not
    #: in this file (``--set`` overrides). Tuples, not Locations: a 1000-stage spec has ~25k.
    keys: dict[Path, tuple[int, int] | Location] = field(default_factory=dict)
    values: dict[Path, tuple[int, int] | Location] = field(default_factory=dict)

    def where(self, path: Path, *, key: bool = False) -> Location:
        """The closest known position for ``path`` (walking up to a parent if needed)."""
        path = tuple(path)
        while True:
            table = self.keys if key else self.values
            found = table.get(path)
            if found is None:
                found = self.values.get(path)
            if found is not None:
                return found if isinstance(found, Location) else Location(self.file, *found)
            if not path:
                return Location(self.file)
            path = path[:-1]
            key = False


def _loc(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


class _Walker:
    def __init__(self, file: str, loader: Any):
        self.file = file
        self.loader = loader
        self.source = Source(file, None)
        self.count = 0

    def walk(self, node: yaml.Node, path: Path, depth: int, active: frozenset[int]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(
                f"document expands to more than {MAX_NODES:,} values (alias bomb?)",
                _loc(self.file, node.start_mark),
            )
        if depth > MAX_DEPTH:
            raise SpecError(
                f"nesting deeper than {MAX_DEPTH} levels is not supported",
                _loc(self.file, node.start_mark),
            )
        if path not in self.source.values:
            mark = node.start_mark
            self.source.values[path] = (mark.line + 1, mark.column + 1)
        cls = type(node)
        if cls is yaml.ScalarNode:
            return self._scalar(node)
        if id(node) in active:
            raise SpecError(
                "recursive alias: a value contains itself", _loc(self.file, node.start_mark)
            )
        if cls is yaml.MappingNode:
            return self._mapping(node, path, depth, active | {id(node)})
        self._check_tag(node, "tag:yaml.org,2002:seq")
        inner = active | {id(node)}
        return [self.walk(item, (*path, i), depth + 1, inner) for i, item in enumerate(node.value)]

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            raise SpecError(
                f"YAML tag '{node.tag}' is not allowed: specs use plain YAML values only",
                _loc(self.file, node.start_mark),
            )

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR:  # most values: no constructor needed
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as err:
            tag = getattr(node, "tag", "?")
            raise SpecError(
                f"YAML tag '{tag}' is not allowed: specs use plain YAML values only"
                if "could not determine a constructor" in str(err)
                else f"invalid YAML value: {err.problem}",
                _loc(self.file, node.start_mark),
            ) from None

    def _mapping(
        self, node: yaml.MappingNode, path: Path, depth: int, active: frozenset[int]
    ) -> dict:
        self._check_tag(node, "tag:yaml.org,2002:map")
        seen: dict[str, Any] = {}
        merges = False
        for key_node, _ in node.value:
            if type(key_node) is not yaml.ScalarNode:
                raise SpecError(
                    "mapping keys must be plain strings", _loc(self.file, key_node.start_mark)
                )
            if key_node.tag == _MERGE:
                merges = True
                continue
            key = key_node.value
            if key in seen:
                first = _loc(self.file, seen[key].start_mark)
                full = (*path, key)
                in_stage = len(full) >= 2 and full[0] == "stages"
                raise SpecError(
                    Problem(
                        f"duplicate key '{key}' (first given at line {first.line})",
                        _loc(self.file, key_node.start_mark),
                        stage=str(full[1]) if in_stage else None,
                        field=".".join(str(p) for p in full[2 if in_stage else 0 :]) or None,
                    )
                )
            seen[key] = key_node
        if merges:
            try:
                self.loader.flatten_mapping(node)  # resolves `<<` merges; merged keys come first
            except yaml.constructor.ConstructorError as err:
                raise SpecError(
                    f"invalid merge key: {err.problem}", _loc(self.file, node.start_mark)
                ) from None
        result: dict[str, Any] = {}
        keys, values = self.source.keys, self.source.values
        depth += 1
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str):
                raise SpecError(
                    "mapping keys must be plain strings", _loc(self.file, key_node.start_mark)
                )
            child = (*path, key)
            km, vm = key_node.start_mark, value_node.start_mark
            keys[child] = (km.line + 1, km.column + 1)
            values[child] = (vm.line + 1, vm.column + 1)
            result[key] = self.walk(value_node, child, depth, active)
        return result


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def parse(text: str, file: str) -> Source:
    """Parse one YAML document into a :class:`Source`; any problem is a :class:`SpecError`."""
    loader = _BaseLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            what = err.problem or "invalid YAML"
            if err.context:
                what = f"{what} ({err.context})"
            raise SpecError(
                f"invalid YAML: {what}", _loc(file, mark) if mark else Location(file)
            ) from None
        except yaml.YAMLError as err:
            raise SpecError(f"invalid YAML: {err}", Location(file)) from None
        except RecursionError:
            raise SpecError(
                f"nesting deeper than {MAX_DEPTH} levels is not supported", Location(file)
            ) from None
        if node is None:
            raise SpecError(
                "the file is empty: expected a mapping with 'pipeline' and 'stages'",
                Location(file, 1, 1),
            )
        walker = _Walker(file, loader)
        try:
            data = walker.walk(node, (), 0, frozenset())
        except RecursionError:
            raise SpecError(
                f"nesting deeper than {MAX_DEPTH} levels is not supported", Location(file)
            ) from None
        walker.source.data = data
        return walker.source
    finally:
        loader.dispose()
