"""Property tests: random DAGs compile in order, random broken specs always fail *well*.

"Well" means a :class:`SpecError` (never another exception) whose message names a line.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow.core.hashing import digest_json
from pipeflow.errors import SpecError
from pipeflow.spec import loads
from pipeflow.store import codecs

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# One folder for the whole module: compiling never imports steps.py, but the python stage looks
# for it beside the spec to fingerprint it, so it exists.
_DIR = Path(tempfile.mkdtemp(prefix="pipeflow-unit-props-"))
(_DIR / "steps.py").write_text("def f(**kw):\n    return 1\n")
SPEC_FILE = str(_DIR / "pipeline.yaml")


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    n = draw(st.integers(min_value=1, max_value=12))
    pairs = [(i, j) for j in range(n) for i in range(j)]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=len(pairs)) if pairs else st.just(set()))
    return n, edges


def _dag_spec(n: int, edges: set[tuple[int, int]]) -> str:
    lines = ["pipeline: random-dag", "stages:"]
    for j in range(n):
        ins = sorted(i for i, k in edges if k == j)
        lines.append(f"  s{j}:")
        lines.append("    type: python")
        if ins:
            lines.append("    inputs:")
            lines.extend(f"      in{i}: s{i}" for i in ins)
        lines.append("    with:")
        lines.append('      function: "steps:f"')
    return "\n".join(lines) + "\n"


def _compile(text: str) -> Any:
    return pipeflow.compile(loads(text, SPEC_FILE))


@SETTINGS
@given(dags())
def test_random_dags_compile_and_order_respects_every_edge(
    dag: tuple[int, set[tuple[int, int]]],
) -> None:
    n, edges = dag
    pipeline = _compile(_dag_spec(n, edges))
    assert sorted(pipeline.order) == sorted(f"s{i}" for i in range(n))
    pos = {name: k for k, name in enumerate(pipeline.order)}
    assert {(f"s{i}", f"s{j}") for i, j in edges} == set(pipeline.graph.edges)
    for i, j in edges:
        assert pos[f"s{i}"] < pos[f"s{j}"]


# ---------------------------------------------------------------------------- broken specs


def _mutations(n: int, edges: set[tuple[int, int]]) -> list[str]:
    """Names of the breakages that apply to this DAG."""
    out = ["self_edge", "misspell_top", "misspell_stage_key", "wrong_type", "unknown_type"]
    if n >= 2:
        out.append("back_edge")
    if edges:
        out.append("drop_referenced")
    return out


def _break(n: int, edges: set[tuple[int, int]], how: str, pick: int) -> str:
    stage = pick % n
    if how == "self_edge":
        return _dag_spec(n, {*edges, (stage, stage)})
    if how == "back_edge":
        later = max(stage, 1)
        earlier = pick % later
        # earlier -> later (kept or added) plus later -> earlier: a cycle
        return _dag_spec(n, {*edges, (earlier, later), (later, earlier)})
    text = _dag_spec(n, edges)
    lines = text.splitlines()
    if how == "drop_referenced":
        src, _ = sorted(edges)[pick % len(edges)]
        # rename the stage: the references to it now point at a stage that is gone
        lines[lines.index(f"  s{src}:")] = f"  gone{src}:"
    elif how == "misspell_top":
        lines[lines.index("stages:")] = "stagse:"
    elif how == "misspell_stage_key":
        lines[lines.index(f"  s{stage}:") + 1] = "    tpye: python"
    elif how == "wrong_type":
        lines.insert(lines.index(f"  s{stage}:") + 2, "    retries: many")
    elif how == "unknown_type":
        lines[lines.index(f"  s{stage}:") + 1] = "    type: pyton"
    else:
        raise AssertionError(how)
    return "\n".join(lines) + "\n"


EXPECTED = {
    "self_edge": "cannot take its own output",
    "back_edge": "cycle between stages",
    "drop_referenced": "which does not exist",
    "misspell_top": "did you mean 'stages'",
    "misspell_stage_key": "did you mean 'type'",
    "wrong_type": "retries",
    "unknown_type": "pyton",
}


@SETTINGS
@given(dags(), st.data())
def test_broken_specs_raise_a_spec_error_that_names_a_line(
    dag: tuple[int, set[tuple[int, int]]], data: st.DataObject
) -> None:
    n, edges = dag
    how = data.draw(st.sampled_from(_mutations(n, edges)), label="mutation")
    pick = data.draw(st.integers(min_value=0, max_value=1000), label="pick")
    text = _break(n, edges, how, pick)
    try:
        _compile(text)
    except SpecError as err:
        assert err.problems
        assert any(p.location is not None and p.location.line for p in err.problems), str(err)
        assert re.search(r"pipeline\.yaml:\d+", str(err)), str(err)
        assert EXPECTED[how] in str(err), str(err)
    else:
        raise AssertionError(f"{how} did not raise:\n{text}")


@SETTINGS
@given(st.text(max_size=300))
def test_loads_on_arbitrary_text_raises_only_spec_error(text: str) -> None:
    try:
        loads(text, "spec.yaml")
    except SpecError as err:
        assert str(err)


_yaml_alphabet = st.sampled_from(list("abcs:{}[]-, \n\t'\"&*!|>#%@`?0123456789$"))


@SETTINGS
@given(st.text(alphabet=_yaml_alphabet, max_size=200))
def test_loads_on_yamlish_text_raises_only_spec_error(text: str) -> None:
    try:
        loads("pipeline: p\nstages:\n  a:\n    type: python\n" + text, "spec.yaml")
    except SpecError as err:
        assert str(err)


# ---------------------------------------------------------------------------- hashing, codecs

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


def _shuffled(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8), st.randoms())
def test_digest_json_ignores_dict_key_order(value: dict, rnd: Any) -> None:
    reordered = _shuffled(value, rnd)
    assert digest_json(reordered) == digest_json(value)
    assert len(digest_json(value)) == 64


@SETTINGS
@given(json_values)
def test_json_values_round_trip_through_codecs(value: Any) -> None:
    codec, data = codecs.encode(value)
    assert codec == "json"
    back = codecs.decode(codec, data)
    assert back == value
    assert json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)
    # deterministic bytes: the same value (however built) gives the same encoding
    assert codecs.encode(json.loads(json.dumps(value)))[1] == data


@SETTINGS
@given(st.binary(max_size=200))
def test_bytes_round_trip_through_codecs(value: bytes) -> None:
    codec, data = codecs.encode(value)
    assert (codec, codecs.decode(codec, data)) == ("bytes", value)
