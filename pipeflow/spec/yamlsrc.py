"""YAML to plain Python data, remembering where every key and value came from.

Why not ``yaml.safe_load``: it forgets positions, silently keeps the last of two duplicate keys,
and turns keys such as ``on`` or ``yes`` into booleans. Here the document is *composed* into nodes
(libyaml's C parser when available, so a 1000-stage spec loads in milliseconds) and walked once
(where each key and value is, is noted by walking the kept text again, on first use, or found
for the one path an error asks about by following it down the document composed again: a spec
without a problem never asks; see :class:`Source`):

- every mapping key stays the string the user typed;
- a key given twice in one mapping is an error naming both lines;
- only the YAML core schema is accepted (``!!python/object`` and any other custom tag is an error,
  never code execution);
- anchors, aliases and ``<<`` merge keys work, but an alias bomb (exponential expansion) or a
  recursive alias is refused, and so is nesting deeper than ``MAX_DEPTH``. Merges are resolved
  here, one entry per key (not by PyYAML's ``flatten_mapping``, which before 6.0.4 kept every
  duplicate and so let a merge chain grow exponentially in memory before anything was counted);
- values YAML cannot construct (``!!int abc``, a 5000-digit integer, ``2024-13-45``), ``!!binary``
  (bytes are not a plain value) and text that cannot be encoded (lone surrogates, control
  characters) are :class:`SpecError` with a line, like every other problem.

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

_resolved: dict[tuple[Any, str | None, Any], str] = {}


class _BaseLoader(_Parser):  # type: ignore[misc,valid-type]
    """The safe loader with tag resolution memoised: resolving runs a few regexes in Python for
    every scalar, and a big spec repeats the same keys and values thousands of times.

    No path resolvers are ever added to this class (``add_path_resolver``), so the composer's
    calls around every node to descend and ascend them do nothing: they return at once here
    instead of looking the empty table up (18k calls for a 1000-stage spec), and a tag depends
    only on the node's kind, value and implicitness (which the memo keys on)."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # implicit: (plain, quoted) for a scalar, a bool for a sequence or mapping (value None)
        memo_key = (kind, value, implicit)
        tag = _resolved.get(memo_key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_resolved) > 50_000:
                _resolved.clear()
            _resolved[memo_key] = tag
        return tag


MAX_DEPTH = 64
MAX_NODES = 1_000_000
#: paths :meth:`Source.where` follows down the document before it notes every position
FOLLOWS = 64

Path = tuple[Any, ...]


Positions = dict[Path, tuple[int, int] | Location]


@dataclass
class Source:
    """Parsed YAML data with the position of each key and value.

    The positions are noted on first use (``keys``, ``values``), by walking the text again: a
    spec that loads and compiles without a problem never asks where anything is, and noting ~25k
    positions of a 1000-stage spec was a third of parsing it. The second walk sees the same text,
    so it finds the same nodes (and cannot fail where the first did not).

    :meth:`where` asked before then notes nothing: it follows its one path down the document,
    composed again from the text (once, and kept), and answers what the tables would. An error
    asks for a few paths; noting all of them walked every value an alias expands to, twice the
    cost of parsing a document of aliases (tests/spec/test_positions_on_demand.py compares the
    two answers). Following scans a mapping's keys, so after :data:`FOLLOWS` paths (a spec with
    many problems) the positions are noted and looked up instead."""

    file: str
    data: Any
    #: the YAML text, kept until the positions are noted
    text: str | None = field(default=None, repr=False)
    _keys: Positions | None = field(default=None, repr=False)
    _values: Positions | None = field(default=None, repr=False)
    #: the document composed again for :meth:`where`, dropped once the positions are noted
    _root: Any = field(default=None, repr=False)
    _follows: int = field(default=0, repr=False)

    @property
    def keys(self) -> Positions:
        """path -> (line, column) of the key; a Location where the position is not in this
        file (``--set`` overrides). Tuples, not Locations: a 1000-stage spec has ~25k."""
        if self._keys is None:
            self._note_positions()
        return self._keys  # type: ignore[return-value]

    @property
    def values(self) -> Positions:
        """path -> (line, column) of the value, as :attr:`keys`."""
        if self._values is None:
            self._note_positions()
        return self._values  # type: ignore[return-value]

    def _note_positions(self) -> None:
        if self.text is None:
            self._keys, self._values = {}, {}
            return
        noted = _parse(self.text, self.file, positions=True)
        self._keys, self._values, self.text = noted._keys, noted._values, None
        self._root = None

    def where(self, path: Path, *, key: bool = False) -> Location:
        """The closest known position for ``path`` (walking up to a parent if needed)."""
        path = tuple(path)
        if self._values is None and self._keys is None and self.text is not None:
            self._follows += 1
            if self._follows <= FOLLOWS:
                return self._follow(path, key)
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

    def _follow(self, path: Path, key: bool) -> Location:
        """:meth:`where` without the tables: down the composed document along ``path`` (merges
        resolved as the walk resolves them), as far as it goes. The position of the key of the
        last part if ``key`` and it is a mapping's, else of the value reached."""
        if self._root is None:
            loader = _BaseLoader(self.text)
            try:
                self._root = loader.get_single_node()
            finally:
                loader.dispose()
        merges = _Walker(self.file, None, positions=False)
        node, mark, key_mark = self._root, self._root.start_mark, None
        for depth, part in enumerate(path):
            found = None
            if type(node) is yaml.MappingNode:
                pairs = node.value
                if any(k.tag == _MERGE for k, _ in pairs):
                    pairs = merges._merged(node, depth)
                found = next((pair for pair in pairs if pair[0].value == part), None)
            elif type(node) is yaml.SequenceNode and isinstance(part, int) and part >= 0:
                found = (None, node.value[part]) if part < len(node.value) else None
            if found is None:  # a parent's position, as the tables' walk up gives
                key_mark = None
                break
            node, mark = found[1], found[1].start_mark
            key_mark = found[0].start_mark if found[0] is not None else None
        chosen = key_mark if key and key_mark is not None else mark
        return _loc(self.file, chosen)


def _loc(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


class _Walker:
    def __init__(self, file: str, loader: Any, positions: bool):
        self.file = file
        self.loader = loader
        self.source = Source(file, None)
        #: note where each key and value is (else the positions stay to be noted on first use)
        self.positions = positions
        if positions:
            self.source._keys, self.source._values = {}, {}
        self.count = 0
        self._merge_memo: dict[int, list[tuple[Any, Any]]] = {}
        self._merging: set[int] = set()

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
        if self.positions and path not in self.source.values:
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
        if node.tag == _BINARY:  # bytes: not a plain value (the spec digest is JSON)
            raise SpecError(
                f"YAML tag '{node.tag}' is not allowed: specs use plain YAML values only",
                _loc(self.file, node.start_mark),
            )
        if node.tag == _INT and len(node.value) > _MAX_INT_TEXT:
            # `0x` + 100k digits or a long `1:2:3...` (sexagesimal) would be built first, at a
            # cost quadratic in its length, and then be a number no one can print
            raise SpecError(
                f"invalid YAML value {_short(node.value)}: an integer of {len(node.value):,} "
                f"characters (the limit is {_MAX_INT_TEXT:,})",
                _loc(self.file, node.start_mark),
            )
        if node.tag == _INT and _plain_decimal(node.value):
            return int(node.value)  # what PyYAML's constructor makes of it, without its detour
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as err:
            tag = getattr(node, "tag", "?")
            raise SpecError(
                f"YAML tag '{tag}' is not allowed: specs use plain YAML values only"
                if "could not determine a constructor" in str(err)
                else f"invalid YAML value: {err.problem}",
                _loc(self.file, node.start_mark),
            ) from None
        except (ValueError, OverflowError, LookupError, AttributeError, TypeError) as err:
            # what PyYAML's safe constructors raise for a value that does not fit its tag:
            # `!!int abc` and `2024-13-45` (ValueError), `!!bool maybe` (KeyError),
            # `!!timestamp abc` (AttributeError)
            why = f": {err}" if isinstance(err, ValueError | OverflowError) else ""
            raise SpecError(
                f"invalid YAML value {_short(node.value)} for tag '{node.tag}'{why}",
                _loc(self.file, node.start_mark),
            ) from None
        if type(value) is int and value.bit_length() > _MAX_INT_BITS:
            raise SpecError(
                f"invalid YAML value {_short(node.value)}: an integer too large to print "
                f"(more than {_MAX_INT_BITS:,} bits)",
                _loc(self.file, node.start_mark),
            )
        return value

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
        pairs = self._merged(node, depth) if merges else node.value
        result: dict[str, Any] = {}
        depth += 1
        if not self.positions:
            for key_node, value_node in pairs:
                key = key_node.value
                if not isinstance(key, str):
                    raise SpecError(
                        "mapping keys must be plain strings", _loc(self.file, key_node.start_mark)
                    )
                if (
                    type(value_node) is yaml.ScalarNode
                    and value_node.tag == _STR
                    and depth <= MAX_DEPTH
                    and self.count < MAX_NODES
                ):
                    # most values of a spec: what walk() would count and return, without the
                    # call (its limits hold, checked above; past them walk() says so)
                    self.count += 1
                    result[key] = value_node.value
                else:
                    result[key] = self.walk(value_node, (*path, key), depth, active)
            return result
        keys, values = self.source.keys, self.source.values
        for key_node, value_node in pairs:
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

    def _merged(self, node: yaml.MappingNode, depth: int) -> list[tuple[Any, Any]]:
        """The key/value pairs of ``node`` with its ``<<`` merges resolved, one pair per key.

        YAML merge semantics: the mapping's own keys win over merged ones, and of several merged
        mappings the first listed wins (as PyYAML did until 6.0.4, whose deduplication lets a
        later mapping win when equal keys are distinct strings). Key order as a dict built from
        PyYAML's flattened list: merged keys first, in the order their mappings are listed. Each mapping is resolved once (aliases
        share the result), so the work and the result are bounded by the keys the document
        spells out, however the merges are chained.
        """
        done = self._merge_memo.get(id(node))
        if done is not None:
            return done
        if id(node) in self._merging:
            raise SpecError(
                "recursive merge: a mapping merges itself", _loc(self.file, node.start_mark)
            )
        if depth > MAX_DEPTH:
            raise SpecError(
                f"merges nested deeper than {MAX_DEPTH} levels are not supported",
                _loc(self.file, node.start_mark),
            )
        self._merging.add(id(node))
        try:
            merged: dict[str, tuple[Any, Any]] = {}
            own: list[tuple[Any, Any]] = []
            for key_node, value_node in node.value:
                if type(key_node) is not yaml.ScalarNode:
                    raise SpecError(
                        "mapping keys must be plain strings", _loc(self.file, key_node.start_mark)
                    )
                if key_node.tag != _MERGE:
                    own.append((key_node, value_node))
                    continue
                if type(value_node) is yaml.MappingNode:
                    sources = [value_node]
                elif type(value_node) is yaml.SequenceNode:
                    sources = value_node.value
                else:
                    sources = [value_node]
                for sub in sources:
                    if type(sub) is not yaml.MappingNode:
                        raise SpecError(
                            "invalid merge key: expected a mapping or a list of mappings to "
                            f"merge, got a {sub.id}",
                            _loc(self.file, sub.start_mark),
                        )
                    self._check_tag(sub, "tag:yaml.org,2002:map")
                    for pair in self._merged(sub, depth + 1):
                        merged.setdefault(pair[0].value, pair)
            for pair in own:
                merged[pair[0].value] = pair  # keeps the merged key's place, as a dict would
            result = list(merged.values())
        finally:
            self._merging.discard(id(node))
        self._merge_memo[id(node)] = result
        return result


def _plain_decimal(text: str) -> bool:
    """``text`` is an integer PyYAML would read as decimal: ASCII digits, no sign, no ``_``, no
    leading zero (``0123`` is octal in YAML 1.1), no ``:`` (base 60)."""
    return text.isascii() and text.isdigit() and (text[0] != "0" or text == "0")


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def _encoding_error(file: str, text: str, err: UnicodeError) -> SpecError:
    """A located error for text that cannot be UTF-8 encoded (a lone surrogate)."""
    start = getattr(err, "start", 0)
    return SpecError(
        f"invalid text: character {text[start]!r} cannot be encoded as UTF-8 (a lone surrogate)"
        if start < len(text)
        else f"invalid text: {err}",
        _text_location(file, text[:start]),
    )


def _reader_location(file: str, text: str, position: int) -> Location:
    """Where a libyaml reader error is: its position counts UTF-8 bytes (the pure-Python
    reader counts characters; either way the prefix is what lies before it)."""
    if _Parser is not yaml.SafeLoader:
        prefix = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "ignore")
    else:  # pragma: no cover - pyyaml built without libyaml
        prefix = text[:position]
    return _text_location(file, prefix)


def _text_location(file: str, prefix: str) -> Location:
    line = prefix.count("\n") + 1
    return Location(file, line, len(prefix) - (prefix.rfind("\n") + 1) + 1)


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_BINARY = "tag:yaml.org,2002:binary"
_INT = "tag:yaml.org,2002:int"
#: Python refuses to print integers of more than 4300 digits (``sys.get_int_max_str_digits``)
_MAX_INT_TEXT = 4300
_MAX_INT_BITS = 14_000  # 4214 decimal digits


def yaml_problem(file: str, err: yaml.YAMLError) -> tuple[str, Location]:
    """What a YAML parse error says, in one line, and where (1-based line and column)."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        what = err.problem or "invalid YAML"
        if err.context:
            what = f"{what} ({err.context})"
        return f"invalid YAML: {what}", _loc(file, mark) if mark else Location(file)
    return f"invalid YAML: {err}", Location(file)


def parse(text: str, file: str) -> Source:
    """Parse one YAML document into a :class:`Source`; any problem is a :class:`SpecError`.
    Positions are noted when first asked for (see :class:`Source`)."""
    source = _parse(text, file, positions=False)
    source.text = text
    return source


def _parse(text: str, file: str, *, positions: bool) -> Source:
    try:
        loader = _BaseLoader(text)
    except UnicodeEncodeError as err:  # libyaml reads UTF-8: a lone surrogate cannot be encoded
        raise _encoding_error(file, text, err) from None
    try:
        try:
            node = loader.get_single_node()
        except UnicodeEncodeError as err:
            raise _encoding_error(file, text, err) from None
        except yaml.reader.ReaderError as err:  # a control character: no mark, a position
            what = (
                f"character #x{err.character:04x} is not allowed in YAML"
                if isinstance(err.character, int)
                else str(err.reason)
            )
            raise SpecError(
                f"invalid YAML: {what}", _reader_location(file, text, err.position)
            ) from None
        except yaml.YAMLError as err:
            raise SpecError(*yaml_problem(file, err)) from None
        except RecursionError:
            raise SpecError(
                f"nesting deeper than {MAX_DEPTH} levels is not supported", Location(file)
            ) from None
        if node is None:
            raise SpecError(
                "the file is empty: expected a mapping with 'pipeline' and 'stages'",
                Location(file, 1, 1),
            )
        walker = _Walker(file, loader, positions)
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
