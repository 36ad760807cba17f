"""YAML parsing with positions (pipeflow.spec.yamlsrc): what is refused, and where errors point."""

from __future__ import annotations

import pytest

from pipeflow.errors import Location, SpecError
from pipeflow.spec.yamlsrc import MAX_DEPTH, parse


def _error(text: str, file: str = "spec.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, file)
    return info.value


def test_values_and_keys_remember_their_line_and_column() -> None:
    src = parse("pipeline: demo\nstages:\n  clean:\n    type: python\n", "p.yaml")
    assert src.data == {"pipeline": "demo", "stages": {"clean": {"type": "python"}}}
    assert src.where(("stages", "clean", "type")) == Location("p.yaml", 4, 11)
    assert src.where(("stages", "clean", "type"), key=True) == Location("p.yaml", 4, 5)
    assert src.where(("stages", "clean")) == Location("p.yaml", 4, 5)


def test_where_falls_back_to_the_closest_known_parent() -> None:
    src = parse("stages:\n  a: {type: python}\n", "p.yaml")
    assert src.where(("stages", "a", "with", "function")) == Location("p.yaml", 2, 6)
    assert src.where(("nowhere",)) == src.where(())


def test_syntax_error_names_file_line_and_column() -> None:
    err = _error("pipeline: x\nstages:\n  a: {type: python\n")
    loc = err.location
    assert loc is not None and loc.file == "spec.yaml"
    assert (loc.line, loc.column) == (4, 1)
    assert str(err).startswith("spec.yaml:4:1: invalid YAML")


def test_bad_indentation_is_located() -> None:
    err = _error("pipeline: x\nstages:\n  a:\n    type: python\n   bad: 1\n")
    assert err.location is not None and err.location.line == 5
    assert "invalid YAML" in str(err)


def test_duplicate_key_names_both_lines_and_the_stage() -> None:
    text = "pipeline: x\nstages:\n  a:\n    type: python\n    retries: 1\n    retries: 2\n"
    err = _error(text)
    (problem,) = err.problems
    assert problem.location == Location("spec.yaml", 6, 5)
    assert "duplicate key 'retries' (first given at line 5)" in problem.message
    assert problem.stage == "a" and problem.field == "retries"


def test_duplicate_stage_name_is_an_error_not_last_one_wins() -> None:
    err = _error("pipeline: x\nstages:\n  a: {type: python}\n  a: {type: ingest}\n")
    assert "duplicate key 'a' (first given at line 3)" in str(err)
    assert err.location == Location("spec.yaml", 4, 3)


def test_duplicate_top_level_key() -> None:
    err = _error("pipeline: x\npipeline: y\n")
    assert err.problems[0].field == "pipeline"
    assert str(err).startswith("spec.yaml:2:1:")


@pytest.mark.parametrize(
    "text",
    [
        "pipeline: !!python/object/apply:os.system ['echo pwned']\n",
        "pipeline: !!python/name:os.system\n",
        "stages: !custom {a: 1}\n",
        "stages: !!python/tuple [1, 2]\n",
    ],
)
def test_yaml_tags_are_refused(text: str) -> None:
    err = _error(text)
    assert "is not allowed: specs use plain YAML values only" in str(err)
    assert err.location is not None and err.location.line == 1 and err.location.column


def test_core_schema_scalars_keep_their_types_and_keys_stay_strings() -> None:
    src = parse("a: 1\nb: 2.5\nc: true\nd: null\non: yes\n'7': x\n", "p.yaml")
    assert src.data == {"a": 1, "b": 2.5, "c": True, "d": None, "on": True, "7": "x"}
    assert all(isinstance(k, str) for k in src.data)


def test_integers_read_as_pyyaml_reads_them() -> None:
    import yaml

    values = ["0", "7", "12", "0123", "1_000", "0x1f", "0b101", "+5", "-3", "1:30", "!!int 42"]
    text = "".join(f"v{i}: {v}\n" for i, v in enumerate(values))
    assert parse(text, "p.yaml").data == yaml.safe_load(text)


def test_a_plain_string_one_level_too_deep_is_refused_where_it_is() -> None:
    def nested(levels: int) -> str:
        return "a: " + "{a: " * levels + "x" + "}" * levels + "\n"

    assert parse(nested(MAX_DEPTH - 1), "p.yaml").data  # the string at MAX_DEPTH: fine
    err = _error(nested(MAX_DEPTH))
    assert f"nesting deeper than {MAX_DEPTH}" in str(err)
    assert err.location == Location("spec.yaml", 1, 4 + 4 * MAX_DEPTH)  # at the string


def test_non_scalar_mapping_key_is_refused() -> None:
    err = _error("? [a, b]\n: 1\n")
    assert "mapping keys must be plain strings" in str(err)


def test_anchors_aliases_and_merge_keys_work() -> None:
    text = (
        "base: &b {retries: 2, cache: false}\n"
        "stages:\n"
        "  a:\n"
        "    <<: *b\n"
        "    type: python\n"
        "    retries: 3\n"
    )
    src = parse(text, "p.yaml")
    assert src.data["stages"]["a"] == {"retries": 3, "cache": False, "type": "python"}


def test_recursive_alias_is_refused() -> None:
    err = _error("a: &x [1, *x]\n")
    assert "recursive alias" in str(err) or "invalid YAML" in str(err)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    err = _error("\n".join(lines) + "\n")
    assert "alias bomb" in str(err)


def test_too_deep_nesting_is_refused() -> None:
    depth = MAX_DEPTH + 5
    text = "a: " + "[" * depth + "]" * depth + "\n"
    err = _error(text)
    assert f"nesting deeper than {MAX_DEPTH}" in str(err)


def test_empty_document_is_a_located_error() -> None:
    err = _error("# only a comment\n")
    assert err.location == Location("spec.yaml", 1, 1)
    assert "the file is empty" in str(err)


def test_several_documents_are_refused() -> None:
    err = _error("a: 1\n---\nb: 2\n")
    assert "invalid YAML" in str(err)
    assert err.location is not None and err.location.line == 2
