"""A model or alias name that is not allowed is bad input (exit 2), not a registry failure; and
lineage without a metadata database says how to give it one."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import pipeflow

from pipeflow.errors import InvalidName, RegistryError, StoreError
from pipeflow.registry import check_name, parse_ref
from pipeflow.registry.lineage import model_lineage


def test_invalid_name_is_a_registry_error_with_exit_code_2() -> None:
    assert issubclass(InvalidName, RegistryError) and issubclass(InvalidName, StoreError)
    assert InvalidName.exit_code == 2
    assert RegistryError.exit_code == 1


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-lead", "a b", "x" * 101])
def test_check_name_raises_invalid_name(name: str) -> None:
    with pytest.raises(InvalidName, match="invalid alias"):
        check_name("alias", name)


@pytest.mark.parametrize("ref", ["a/b@1", "m@", "@prod"])
def test_parse_ref_raises_invalid_name(ref: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(ref)


def test_parse_ref_accepts_good_refs() -> None:
    assert parse_ref("m") == ("m", None)
    assert parse_ref("m@3") == ("m", "3")
    assert parse_ref("m.v2@prod") == ("m.v2", "prod")


@pytest.mark.parametrize(
    "args",
    [
        ("models", "show", "a/b"),
        ("models", "card", "m@"),
        ("lineage", "../m@1"),
    ],
)
def test_cli_exits_2_on_an_invalid_name(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / ".pipeflow").mkdir()
    out = pipeflow(args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "NAME@" in out.stderr or "invalid model name" in out.stderr


class _Registry:
    def models(self) -> list[str]:
        return []

    def versions(self, name: str) -> list[dict]:
        return []


def test_lineage_without_a_metadata_database_says_how_to_give_one() -> None:
    record = {"name": "m", "version": 1, "run": {"run_id": "r1", "stage": "promote"}}
    lineage = model_lineage(None, _Registry(), record)
    assert lineage["note"].startswith("no metadata database was found (pass --spec or --db)")
    assert "is not in the metadata database" not in lineage["note"]
    assert lineage["stages"] == [] and lineage["sources"] == []


def test_lineage_with_a_database_missing_the_run_names_it() -> None:
    class Db:
        path = "meta.sqlite"

        def find_run(self, run_id: str) -> None:
            return None

    record = {"name": "m", "version": 1, "run": {"run_id": "r1", "stage": "promote"}}
    note = model_lineage(Db(), _Registry(), record)["note"]
    assert "run r1 is not in the metadata database meta.sqlite" in note
