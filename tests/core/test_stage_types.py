"""Stage types by name: entry points loaded lazily, in-process extras, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeflow.core.stage import Port, Stage
from pipeflow.core.stage_types import (
    ENTRY_POINT_GROUP,
    StageRegistry,
    StageTypeLoadError,
    UnknownStageType,
    default_registry,
)
from pipeflow.stages.python import PythonStage

BUILT_INS = {"python", "ingest", "split", "train", "evaluate"}


class Echo(Stage):
    outputs = {"out": Port("any")}

    def run(self, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": dict(inputs)}


def _fresh_python(code: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_built_ins_are_registered_through_the_entry_point_group() -> None:
    from importlib import metadata

    declared = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert declared >= BUILT_INS
    reg = default_registry()
    assert set(reg.names()) >= BUILT_INS
    assert reg.names() == sorted(reg.names())
    assert reg.get("python") is PythonStage
    assert reg.origin("python").startswith("pipeflow ")


def test_entry_points_are_loaded_lazily_by_name() -> None:
    found = _fresh_python(
        """
        import json, sys
        from pipeflow.core.stage_types import StageRegistry
        reg = StageRegistry()
        names = reg.names()
        before = sorted(m for m in sys.modules if m.startswith("pipeflow.stages."))
        reg.get("python")
        after_python = sorted(m for m in sys.modules if m.startswith("pipeflow.stages."))
        heavy = sorted(m for m in ("sklearn", "xgboost", "pandas", "skops") if m in sys.modules)
        reg.get("split")
        after_split = "pipeflow.stages.split" in sys.modules
        print(json.dumps([names, before, after_python, heavy, after_split]))
        """
    )
    names, before, after_python, heavy, after_split = found
    assert "train" in names
    assert before == []
    assert after_python == ["pipeflow.stages.python"]
    assert heavy == []
    assert after_split is True


def test_extra_types_by_class_or_by_import_path() -> None:
    reg = StageRegistry(extra={"echo": Echo, "py2": "pipeflow.stages.python:PythonStage"})
    assert reg.get("echo") is Echo
    assert reg.get("py2") is PythonStage
    assert {"echo", "py2", "python"} <= set(reg.names())
    assert "echo" in reg and "nope" not in reg and 3 not in reg
    assert reg.origin("echo") == "in-process"


def test_extra_types_shadow_entry_points_of_the_same_name() -> None:
    assert StageRegistry(extra={"python": Echo}).get("python") is Echo
    assert StageRegistry().get("python") is PythonStage


def test_registry_without_entry_points_knows_only_its_extras() -> None:
    reg = StageRegistry(extra={"echo": Echo}, entry_points=False)
    assert reg.names() == ["echo"]
    with pytest.raises(UnknownStageType) as info:
        reg.get("python")
    assert str(info.value) == "unknown stage type 'python'; installed types: echo"


def test_extra_import_path_is_imported_only_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "pipeflow_lazy_plugin_for_tests"
    (tmp_path / f"{module}.py").write_text(
        "from pipeflow.core.stage import Stage\n"
        "class Lazy(Stage):\n"
        "    def run(self, ctx, inputs):\n"
        "        return {'out': 1}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    reg = StageRegistry(extra={"lazy": f"{module}:Lazy", "echo": Echo})
    assert "lazy" in reg.names()
    reg.get("echo")
    assert module not in sys.modules
    cls = reg.get("lazy")
    assert module in sys.modules and cls.__name__ == "Lazy"
    assert reg.get("lazy") is cls


def test_unknown_type_suggests_and_lists_installed() -> None:
    with pytest.raises(UnknownStageType) as info:
        StageRegistry().get("trian")
    err = info.value
    assert "unknown stage type 'trian'; did you mean 'train'?" in str(err)
    assert set(err.installed) >= BUILT_INS
    assert err.exit_code == 2


def test_broken_import_path_is_a_load_error_not_a_crash() -> None:
    reg = StageRegistry(extra={"broken": "no_such_module_xyz_123:Thing"})
    with pytest.raises(StageTypeLoadError) as info:
        reg.get("broken")
    assert "stage type 'broken' could not be loaded from no_such_module_xyz_123:Thing" in str(
        info.value
    )
    assert "ModuleNotFoundError" in str(info.value)


def test_missing_attribute_is_a_load_error() -> None:
    with pytest.raises(StageTypeLoadError, match="AttributeError"):
        StageRegistry(extra={"x": "pipeflow.stages.python:NoSuchStage"}).get("x")


def test_a_class_that_is_not_a_stage_is_refused() -> None:
    reg = StageRegistry(extra={"notastage": "pathlib:Path", "obj": dict})  # type: ignore[dict-item]
    with pytest.raises(StageTypeLoadError, match="is not a subclass of pipeflow.Stage"):
        reg.get("notastage")
    with pytest.raises(StageTypeLoadError, match="is not a subclass of pipeflow.Stage"):
        reg.get("obj")


def test_origin_of_an_unknown_type_is_an_error() -> None:
    with pytest.raises(UnknownStageType):
        StageRegistry().origin("no_such_type")
