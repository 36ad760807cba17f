"""Hypothesis properties of the core: typed random DAGs, random (maybe cyclic) graphs, digests,
the loader on YAML-ish text, overrides and interpolation, and store round trips.

(Named test_graph_properties.py: test basenames must be unique in this repository's import mode,
and the spec properties have their own files beside this one.)
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.core import kinds
from pipeflow.core.compiler import compile_pipeline
from pipeflow.core.hashing import digest_json
from pipeflow.errors import GraphError, SpecError
from pipeflow.spec import loads, parse_override
from pipeflow.store.artifacts import ArtifactStore

FILE = "prop.yaml"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = ["any", "table", "model", "model[classifier]", "model[regressor]", "metrics"]
names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


def _compile(spec: dict):
    return compile_pipeline(loads(yaml.safe_dump(spec, sort_keys=False), FILE))


# ----------------------------------------------------------------------------- typed DAGs


@st.composite
def typed_dags(draw: st.DrawFn) -> tuple[dict, list[tuple[str, str, str, str]]]:
    """Python stages with declared output and input kinds; stage j reads only from i < j.
    Returns the spec and its wires (src, dst, produced kind, accepted kind)."""
    stage_names = draw(st.lists(names, min_size=1, max_size=10, unique=True))
    stages: dict = {}
    wires = []
    out_kind = {}
    for j, name in enumerate(stage_names):
        produced = draw(st.sampled_from(KINDS))
        out_kind[name] = produced
        ups = draw(st.lists(st.sampled_from(stage_names[:j]), unique=True, max_size=3)) if j else []
        inputs, input_kinds = {}, {}
        for k, src in enumerate(ups):
            accepted = draw(st.sampled_from(KINDS))
            inputs[f"in{k}"] = src
            input_kinds[f"in{k}"] = accepted
            wires.append((src, name, out_kind[src], accepted))
        stages[name] = {
            "type": "python",
            "inputs": inputs,
            "with": {
                "function": "steps:f",
                "outputs": {"out": produced},
                "input_kinds": input_kinds,
            },
        }
    return {"pipeline": "typed", "stages": stages}, wires


@FAST
@given(typed_dags())
def test_typed_dag_compiles_iff_every_wire_has_compatible_kinds(case) -> None:
    spec, wires = case
    bad = [w for w in wires if not kinds.compatible(w[2], w[3])]
    try:
        pipeline = _compile(spec)
    except GraphError as err:
        assert bad, f"compile failed without a kind mismatch: {err}"
        mismatches = [p for p in err.problems if p.message.startswith("kind mismatch")]
        assert len(mismatches) == len(bad)
        for src, dst, produced, accepted in bad:
            assert any(
                f"stage '{src}' output 'out' produces '{produced}'" in p.message
                and f"stage '{dst}'" in p.message
                and f"expects '{accepted}'" in p.message
                and p.stage == dst
                for p in mismatches
            )
        for p in err.problems:
            assert p.location is not None and p.location.file == FILE and p.location.line
        return
    assert not bad
    position = {n: i for i, n in enumerate(pipeline.order)}
    assert set(position) == set(spec["stages"])
    assert set(pipeline.graph.edges) == {(s, d) for s, d, _, _ in wires}
    for src, dst, _, _ in wires:
        assert position[src] < position[dst]


# ----------------------------------------------------------------------------- arbitrary graphs


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    """Stage -> upstream stages, any direction (so cycles happen), no self loops."""
    stage_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    return {
        n: draw(
            st.lists(
                st.sampled_from([m for m in stage_names if m != n] or [n]), unique=True, max_size=3
            )
        )
        if len(stage_names) > 1
        else []
        for n in stage_names
    }


@FAST
@given(graphs())
def test_compile_succeeds_iff_acyclic_and_a_cycle_error_names_a_real_cycle_and_walks_agree(
    ups: dict[str, list[str]],
) -> None:
    spec = {
        "pipeline": "g",
        "stages": {
            n: {
                "type": "python",
                "inputs": {f"x{i}": u for i, u in enumerate(us)},
                "with": {"function": "steps:f"},
            }
            for n, us in ups.items()
        },
    }
    truth = nx.DiGraph()
    truth.add_nodes_from(ups)
    truth.add_edges_from((u, n) for n, us in ups.items() for u in us)
    try:
        pipeline = _compile(spec)
    except GraphError as err:
        assert not nx.is_directed_acyclic_graph(truth)
        (problem,) = err.problems
        chain = problem.message.split("cycle between stages: ")[1].split(" -> ")
        assert chain[0] == chain[-1] and len(chain) >= 3
        for a, b in zip(chain, chain[1:], strict=False):
            assert truth.has_edge(a, b), f"{a} -> {b} is not an edge"
        assert problem.stage == chain[0] and problem.location is not None
        return
    assert nx.is_directed_acyclic_graph(truth)
    assert list(nx.lexicographical_topological_sort(truth)) == pipeline.order
    # the compiler's own graph walks (no networkx on the run path) agree with networkx's
    for n in ups:
        assert pipeline.upstream(n) == nx.ancestors(truth, n)
        assert pipeline.downstream(n) == nx.descendants(truth, n)
    assert set(pipeline.graph.edges) == set(truth.edges)


# ----------------------------------------------------------------------------- digests

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


def _shuffled(value: object, rnd: random.Random) -> object:
    if isinstance(value, dict):
        items = [(k, _shuffled(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=80, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_digest_json_ignores_key_order_at_every_depth(value: object, rnd: random.Random) -> None:
    assert digest_json(_shuffled(value, rnd)) == digest_json(value)


@settings(max_examples=80, deadline=None)
@given(json_values, json_values)
def test_digest_json_tells_different_values_apart(a: object, b: object) -> None:
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (digest_json(a) == digest_json(b)) is same


# ----------------------------------------------------------------------------- loader

TOKENS = [
    "pipeline: p\n",
    "stages:\n",
    "  a:\n",
    "    type: python\n",
    "    with: {function: 's:f'}\n",
    "    inputs: {x: a}\n",
    "  b: {type: python, inputs: {x: a}}\n",
    "&x ",
    "*x",
    "<<: ",
    "!!str ",
    "!tag ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "'",
    '"',
    "${params.",
    "${env:",
    "$${",
    "}",
    "\t",
    "  ",
    "\n",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">\n",
    "#",
    "\\",
    "\x00",
    "é",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_yamlish_text_loads_and_compiles_or_raises_only_spec_error(text: str) -> None:
    try:
        compile_pipeline(loads(text, FILE))
    except SpecError as err:
        assert err.problems and str(err)
        for p in err.problems:
            assert p.location is not None


# ----------------------------------------------------------------------------- overrides and interpolation

BASE = "pipeline: p\nparams: {v: 0}\nstages:\n  a: {type: python, with: {function: 's:f', kwargs: {v: '${params.v}', t: 'v=${params.v}'}}}\n"


@settings(max_examples=80, deadline=None)
@given(json_values.filter(lambda v: "$" not in json.dumps(v)))  # "${" would be interpolated
def test_mapping_overrides_and_whole_value_references_keep_the_value(value: object) -> None:
    loaded = loads(BASE, FILE, {"params.v": value})
    assert loaded.spec.params["v"] == value
    assert loaded.spec.stages["a"].with_["kwargs"]["v"] == value


@settings(max_examples=80, deadline=None)
@given(st.integers() | st.booleans() | st.lists(st.integers(), max_size=3))
def test_command_line_overrides_are_yaml_parsed(value: object) -> None:
    assert parse_override(f"params.v={json.dumps(value)}") == (["params", "v"], value)


safe_text = st.text(
    st.characters(
        max_codepoint=0x2000,
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
        blacklist_characters="$'",
    ),
    max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(safe_text, safe_text)
def test_escaped_references_are_left_as_text(before: str, after: str) -> None:
    raw = f"{before}$${{params.v}}{after}"
    spec = (
        "pipeline: p\nparams: {v: 1}\nstages:\n  a:\n    type: python\n"
        f"    with: {{function: 's:f', kwargs: {{t: {json.dumps(raw, ensure_ascii=False)}}}}}\n"
    )
    got = loads(spec, FILE).spec.stages["a"].with_["kwargs"]["t"]
    assert got == f"{before}${{params.v}}{after}"


# ----------------------------------------------------------------------------- store


@pytest.fixture(scope="module")
def memory_store() -> ArtifactStore:
    return ArtifactStore(f"memory://pipeflow-prop/{uuid.uuid4().hex}")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_json_values_round_trip_through_the_store_content_addressed(
    memory_store: ArtifactStore, value: object
) -> None:
    ref = memory_store.save(value)
    data = memory_store.get(ref.digest)
    assert ref.digest == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert memory_store.load(ref) == value
    assert memory_store.save(_shuffled(value, random.Random(0))) == ref


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=512))
def test_bytes_round_trip_through_the_store(memory_store: ArtifactStore, data: bytes) -> None:
    ref = memory_store.save(data)
    assert ref.codec == "bytes" and memory_store.load(ref) == data
