"""Property tests: random valid and broken specs and DAGs.

The compiler must never crash: a valid spec compiles with an order that respects every edge; a
broken one raises SpecError whose every problem names a line of the file.
"""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.core.compiler import compile_pipeline
from pipeflow.core.hashing import digest_json
from pipeflow.errors import SpecError
from pipeflow.spec import loads
from pipeflow.store import codecs

FILE = "random.yaml"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw: st.DrawFn) -> dict:
    """A spec dict of n python stages; stage j may take inputs from any i < j (so: acyclic)."""
    n = draw(st.integers(1, 12))
    stages = {}
    for j in range(n):
        ups = draw(st.sets(st.integers(0, j - 1), max_size=3)) if j else set()
        stages[f"s{j}"] = {
            "type": "python",
            "inputs": {f"x{i}": f"s{i}" for i in sorted(ups)},
            "with": {"function": "steps:f", "kwargs": {"j": j}},
        }
    return {"pipeline": "prop", "params": {"k": draw(st.integers())}, "stages": stages}


def _compile(spec: dict):
    return compile_pipeline(loads(yaml.safe_dump(spec, sort_keys=False), FILE))


@SETTINGS
@given(dags())
def test_valid_dags_compile_in_an_order_that_respects_every_edge(spec: dict) -> None:
    pipeline = _compile(spec)
    position = {name: i for i, name in enumerate(pipeline.order)}
    assert set(position) == set(spec["stages"])
    for name, stage in spec["stages"].items():
        for src in stage["inputs"].values():
            assert position[src] < position[name]


MUTATIONS = [
    "missing_stage",
    "cycle",
    "unknown_key",
    "bad_type",
    "unknown_type",
    "bad_port",
    "bad_name",
    "bad_retries",
]


@SETTINGS
@given(dags(), st.sampled_from(MUTATIONS), st.data())
def test_broken_specs_raise_spec_error_naming_a_line(
    spec: dict, mutation: str, data: st.DataObject
) -> None:
    stages = spec["stages"]
    names = list(stages)
    victim = data.draw(st.sampled_from(names))
    if mutation == "missing_stage":
        stages[victim]["inputs"]["ghost"] = "no_such_stage"
    elif mutation == "cycle":
        stages[names[0]]["inputs"]["back"] = names[
            -1
        ]  # last depends (transitively or not) on first
        if len(names) == 1:
            stages[names[0]]["inputs"]["back"] = names[0]
        else:
            stages[names[-1]]["inputs"]["fwd"] = names[0]
    elif mutation == "unknown_key":
        stages[victim]["retires"] = 1
    elif mutation == "bad_type":
        stages[victim]["with"]["kwargs"] = "not a mapping"
    elif mutation == "unknown_type":
        stages[victim]["type"] = "no_such_type"
    elif mutation == "bad_port":
        if len(names) > 1 and victim != names[0]:
            stages[victim]["inputs"]["x"] = f"{names[0]}.nope"
        else:
            stages[victim]["inputs"]["x"] = (
                f"{victim}.nope"  # self-reference or missing port: both errors
            )
    elif mutation == "bad_name":
        stages["Bad Name!"] = stages.pop(victim)
    elif mutation == "bad_retries":
        stages[victim]["retries"] = -1
    try:
        _compile(spec)
    except SpecError as err:
        assert err.problems, "a SpecError must list its problems"
        for problem in err.problems:
            assert problem.location is not None and problem.location.file == FILE
            assert problem.location.line, f"problem without a line: {problem}"
    else:
        raise AssertionError(f"mutation {mutation} on {victim} compiled without error")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_spec_error(text: str) -> None:
    try:
        loads(text, FILE)
    except SpecError as err:
        assert str(err)


yaml_ish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(
        ["pipeline", "stages", "type", "inputs", "with", "${params.x}", "&a", "*a", "<<"]
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(yaml_ish)
def test_arbitrary_yaml_documents_load_or_raise_spec_error(doc: object) -> None:
    try:
        compile_pipeline(loads(yaml.safe_dump(doc), FILE))
    except SpecError as err:
        assert str(err)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.randoms(use_true_random=False)
)
def test_digest_json_ignores_key_order(value: dict, rnd) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    assert digest_json(dict(items)) == digest_json(value)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_json_values_round_trip_through_the_codecs(value: object) -> None:
    codec, data = codecs.encode(value)
    assert json.dumps(codecs.decode(codec, data), sort_keys=True) == json.dumps(
        value, sort_keys=True
    )
