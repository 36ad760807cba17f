"""Positions noted on first use (pipeflow.spec.yamlsrc.Source) and interpolation skipped for a
document without a ``$``: the happy path of loading does less, and every error still names the
file and line it did."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.core.compiler import compile_pipeline
from pipeflow.errors import GraphError, Location, SpecError
from pipeflow.spec import yamlsrc
from pipeflow.spec.load import load, loads
from pipeflow.spec.yamlsrc import FOLLOWS, _parse, parse
from pipeflow.testing import write_spec

SPEC = """\
pipeline: p
params: {seed: 3}
stages:
  a:
    type: python
    with: {function: "steps:a", kwargs: {k: [1, {x: 2}]}}
  b:
    type: python
    inputs: {x: a}
    with:
      function: "steps:b"
"""


def test_a_spec_that_loads_and_compiles_cleanly_never_notes_where_anything_is(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": "def a():\n    return 1\n"})
    loaded = load(spec)
    compile_pipeline(loaded)
    assert loaded.source._values is None and loaded.source._keys is None


def test_positions_noted_on_first_use_are_those_noted_while_parsing() -> None:
    lazy, eager = parse(SPEC, "p.yaml"), _parse(SPEC, "p.yaml", positions=True)
    assert lazy.data == eager.data
    assert lazy.values == eager.values and lazy.keys == eager.keys
    assert lazy.where(("stages", "b", "with", "function")) == Location("p.yaml", 11, 17)
    assert lazy.where(("stages", "a", "with", "kwargs", "k", 1, "x"), key=True) == Location(
        "p.yaml", 6, 50
    )
    assert lazy.text is None  # the text is let go once the positions are noted


def test_a_compile_problem_still_names_the_line_of_the_input() -> None:
    text = SPEC.replace("inputs: {x: a}", "inputs: {x: nope}")
    with pytest.raises(GraphError) as err:
        compile_pipeline(loads(text, "p.yaml"))
    (problem,) = err.value.problems
    assert (problem.location.file, problem.location.line) == ("p.yaml", 9)
    assert "stage 'nope'" in problem.message


def test_a_validation_problem_still_names_its_line() -> None:
    text = SPEC.replace("pipeline: p\n", "pipeline: p\nexecutor: {kind: nowhere}\n")
    with pytest.raises(SpecError) as err:
        loads(text, "p.yaml")
    assert "p.yaml:2" in str(err.value)


def test_a_document_without_a_dollar_is_taken_as_written() -> None:
    loaded = loads(SPEC, "p.yaml")
    assert loaded.spec.stages["a"].with_["kwargs"] == {"k": [1, {"x": 2}]}


def test_a_reference_given_by_an_override_is_still_interpolated() -> None:
    loaded = loads(SPEC, "p.yaml", overrides=["stages.b.with.kwargs.s=${params.seed}"])
    assert loaded.spec.stages["b"].with_["kwargs"] == {"s": 3}


def test_a_reference_given_by_the_environment_is_still_interpolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCH2_STORE", str(tmp_path / "st"))
    monkeypatch.setenv("PIPEFLOW_STORE__ROOT", "${env:ORCH2_STORE}")
    assert loads(SPEC, "p.yaml").spec.store.root == str(tmp_path / "st")


def test_an_unknown_param_in_an_override_names_the_override() -> None:
    with pytest.raises(SpecError) as err:
        loads(SPEC, "p.yaml", overrides=["stages.b.with.kwargs.s=${params.nope}"])
    assert "--set stages.b.with.kwargs.s=${params.nope}" in str(err.value)
    assert "unknown param 'params.nope'" in str(err.value)


def test_a_reference_spelled_with_an_escape_is_still_interpolated() -> None:
    text = SPEC.replace("kwargs: {k: [1, {x: 2}]}", 'kwargs: {k: "\\x24{params.seed}"}')
    assert "$" not in text
    assert loads(text, "p.yaml").spec.stages["a"].with_["kwargs"] == {"k": 3}


# ------------------------------------------------------- where() before the positions are noted

words = st.sampled_from(["a", "b", "k", "x", "stages", "with", "<<", "0", "1"])
plain_data = st.recursive(
    st.integers(0, 9) | st.sampled_from(["s", "t", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=12,
)


@st.composite
def aliased_documents(draw: st.DrawFn) -> str:
    """Anchored mappings and lists, later ones aliasing and merging earlier ones."""
    lines = []
    for i in range(draw(st.integers(1, 5))):
        own = draw(st.dictionaries(st.sampled_from(["x", "y", "k"]), st.integers(0, 9), max_size=3))
        parts = [f"{k}: {v}" for k, v in own.items()]
        if i and draw(st.booleans()):
            refs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3))
            parts.insert(0, f"<<: [{', '.join(f'*m{r}' for r in refs)}]")
        if i and draw(st.booleans()):
            parts.append(f"l: [*m{draw(st.integers(0, i - 1))}, [1, *m0]]")
        lines.append(f"m{i}: &m{i} {{{', '.join(parts)}}}")
    return "\n".join(lines) + "\n"


documents = aliased_documents() | plain_data.map(
    lambda data: yaml.safe_dump({"top": data}, default_flow_style=None, sort_keys=False)
)


@settings(max_examples=300, deadline=None)
@given(text=documents, extra=st.sampled_from(["nope", 0, 1, 99, -1, True, "0", "x"]))
def test_where_asked_before_the_positions_are_noted_answers_as_the_noted_tables_do(
    text: str, extra: object
) -> None:
    """Every path of the document (and each one longer by a part that may not be there) is
    located by following it down the document exactly where the noted tables locate it."""
    noted, lazy = _parse(text, "d.yaml", positions=True), parse(text, "d.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yamlsrc, "FOLLOWS", 10**9)  # every path followed, however many
        for path in [*noted.values, *noted.keys]:
            for asked in (path, (*path, extra), (*path, extra, "x")):
                for key in (False, True):
                    assert lazy.where(asked, key=key) == noted.where(asked, key=key), (asked, key)
    assert lazy._values is None and lazy._keys is None  # followed, not noted


def test_after_many_paths_followed_the_positions_are_noted_and_answer_the_same() -> None:
    lazy, noted = parse(SPEC, "p.yaml"), _parse(SPEC, "p.yaml", positions=True)
    paths = [(*path, extra) for path in noted.values for extra in ("", "x", 0, "y")]
    assert len(paths) > FOLLOWS
    for path in paths:
        assert lazy.where(path) == noted.where(path), path
    assert lazy._values == noted._values and lazy.text is None


def test_a_bomb_that_fails_validation_is_located_without_walking_its_expansion_again() -> None:
    """A document of aliases expanding to ~17k values that validation refuses: the error names
    the line of 'stages' and the positions of the ~17k values are never noted."""
    lines = ["a0: &a0 [lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 7)}]" for i in range(1, 6)]
    text = "\n".join(lines) + "\npipeline: p\nstages: {}\n"
    with pytest.raises(SpecError) as err:
        loads(text, "b.yaml")
    assert str(err.value).startswith("b.yaml:8:9: field 'stages'")
