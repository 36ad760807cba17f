"""Artifact kinds on ports: which names are valid and which outputs may feed which inputs."""

from __future__ import annotations

import pytest

from pipeflow.core import kinds


@pytest.mark.parametrize(
    "kind", ["any", "table", "model", "model[classifier]", "model[a,b]", "my_kind2", "x[y_1]"]
)
def test_valid_kinds(kind: str) -> None:
    assert kinds.is_valid(kind)


@pytest.mark.parametrize(
    "kind", ["", "Table", "2table", "model[]", "model[Classifier]", "model[a][b]", "a b", "model["]
)
def test_invalid_kinds(kind: str) -> None:
    assert not kinds.is_valid(kind)


def test_base_strips_the_subtype() -> None:
    assert kinds.base("model[classifier]") == "model"
    assert kinds.base("table") == "table"


@pytest.mark.parametrize(
    "produced, accepted, ok",
    [
        ("table", "table", True),
        ("table", "model", False),
        ("model[classifier]", "model", True),  # a classifier is a model
        ("model", "model[classifier]", False),  # a model might be a regressor
        ("model[regressor]", "model[classifier]", False),
        ("model[classifier]", "model[classifier]", True),
        ("any", "model[classifier]", True),
        ("table", "any", True),
        ("metrics", "report", False),
        ("tablex", "table", False),
    ],
)
def test_compatible(produced: str, accepted: str, ok: bool) -> None:
    assert kinds.compatible(produced, accepted) is ok


def test_every_known_kind_is_valid_and_compatible_with_itself() -> None:
    for kind in kinds.KNOWN:
        assert kinds.is_valid(kind)
        assert kinds.compatible(kind, kind)
