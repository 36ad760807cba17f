"""The ``python`` stage: call ``module:function`` with the stage's inputs as keyword arguments.

::

    clean:
      type: python
      inputs: {raw: load}                   # -> clean(raw=<load's output>, ...)
      with:
        function: steps:clean               # steps.py beside the spec is importable
        kwargs: {threshold: ${params.t}}
        outputs: {good: table, bad: table}  # several outputs: return a dict (or a tuple, in order)
        input_kinds: {raw: table}           # optional: lets `pipeflow check` verify the wiring

If the function has a parameter named ``ctx`` it receives the :class:`StageContext`.

The cache key includes a hash of the module's source file, so editing the function (or anything
else in its module) re-runs the stage; editing a different module it imports does not, which is
why heavy helpers are better called through their own stage. The module is located without being
imported, so ``pipeflow check`` and planning never execute user code. On a worker that does not
share the client's files the module comes from the code bundle the client put in the store
(``ctx.code_dir``; see :mod:`pipeflow.execute.bundle`), which holds the same source the key hashed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from pipeflow.core import kinds
from pipeflow.core.importpath import put_first
from pipeflow.core.stage import CheckContext, Keywords, Port, Stage, StageConfig, StageContext


class PythonConfig(StageConfig):
    function: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function to call (the spec's folder is importable)",
    )
    kwargs: Keywords = Field(description="extra keyword arguments")
    outputs: list[str] | dict[str, str] = Field(
        default_factory=lambda: ["out"], description="output port names, or name -> kind"
    )
    input_kinds: dict[str, str] = Field(
        default_factory=dict, description="input port -> kind, checked at compile time"
    )

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(value)
        if not names:
            raise ValueError("at least one output is needed")
        if len(set(names)) != len(names):
            raise ValueError("output names must be unique")
        for n in names:
            if not n.isidentifier():
                raise ValueError(f"output name {n!r} must be a Python identifier")
        if isinstance(value, dict):
            for n, k in value.items():
                if not kinds.is_valid(k):
                    raise ValueError(
                        f"output '{n}': {k!r} is not a kind (e.g. table, model, model[classifier], any)"
                    )
        return value

    @field_validator("input_kinds")
    @classmethod
    def _input_kinds(cls, value: dict[str, str]) -> dict[str, str]:
        for n, k in value.items():
            if not kinds.is_valid(k):
                raise ValueError(f"input '{n}': {k!r} is not a kind (e.g. table, model, any)")
        return value


class PythonStage(Stage[PythonConfig]):
    """Call a Python function with the stage's inputs; its return value is the output."""

    extra_inputs = Port("any", required=False)
    description = "Call module:function with the inputs as keyword arguments."

    @classmethod
    def input_ports(cls, config: PythonConfig) -> Mapping[str, Port]:  # type: ignore[override]
        return {name: Port(kind) for name, kind in config.input_kinds.items()}

    @classmethod
    def output_ports(cls, config: PythonConfig) -> Mapping[str, Port]:  # type: ignore[override]
        if isinstance(config.outputs, dict):
            return {name: Port(kind) for name, kind in config.outputs.items()}
        return {name: Port("any") for name in config.outputs}

    @classmethod
    def fingerprint(cls, config: PythonConfig, base_dir: Path) -> str:  # type: ignore[override]
        module_name = config.function.partition(":")[0]
        h = hashlib.sha256(config.function.encode())
        origin = _module_file(module_name, base_dir)
        if origin is not None:
            try:
                st = origin.stat()
                h.update(_file_digest(origin, st.st_mtime_ns, st.st_size).encode())
            except OSError:
                pass
        return h.hexdigest()

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        """The function's module is found (beside the spec, or installed) and, read without being
        run, defines the function."""
        from pipeflow.core.static import defined_names, hint

        assert isinstance(config, PythonConfig)
        module_name, _, attr = config.function.partition(":")
        local = _module_file(module_name, ctx.base_dir)
        if local is None or not _is_beside(local, ctx.base_dir):
            top = module_name.split(".")[0]
            try:
                found = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                found = None
            if found is None:
                return [
                    (
                        "function",
                        f"no module '{module_name}': not beside the spec (in {ctx.base_dir}) "
                        "nor installed",
                    )
                ]
            if "." in module_name or not found.origin or not found.origin.endswith(".py"):
                return []  # an installed package: its submodules are not looked into
            local = Path(found.origin)
        names = defined_names(local)
        if names is None or attr in names:
            return []
        public = sorted(n for n in names if not n.startswith("_"))
        return [
            (
                "function",
                f"module '{module_name}' ({local}) has no function '{attr}'{hint(attr, public)}",
            )
        ]

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        config = self.config
        fn = _load_function(config.function, ctx.code_dir or ctx.base_dir, ctx.run_id)
        kwargs = {**inputs, **config.kwargs}
        if _wants_ctx(fn):
            kwargs["ctx"] = ctx
        value = fn(**kwargs)
        names = list(config.outputs)
        if len(names) == 1:
            return {names[0]: value}
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, tuple) and len(value) == len(names):
            return dict(zip(names, value, strict=True))
        raise TypeError(
            f"{config.function} must return a dict with keys {names} or a tuple of {len(names)} values, "
            f"got {type(value).__name__}"
        )


@functools.lru_cache(maxsize=1024)
def _wants_ctx(fn: Any) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=4096)
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    """Hash of a source file, memoised by (path, mtime, size): 1000 stages calling one module
    read it once. mtime is only a memo key here; the cache key itself uses the content hash."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1024)
def _module_file(module_name: str, base_dir: Path) -> Path | None:
    top = module_name.split(".")[0]
    candidate = base_dir / Path(*module_name.split("."))
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    if (base_dir / top).exists() or (base_dir / f"{top}.py").exists():
        return None
    try:
        spec = (
            importlib.util.find_spec(module_name)
            if "." not in module_name
            else importlib.util.find_spec(top)
        )
    except (ImportError, ValueError):
        return None
    if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
        return Path(spec.origin)
    return None


_import_lock = threading.Lock()
_loaded_from: dict[str, tuple[str, int, int]] = {}
#: module name -> (run id, file, module) last found current in that run
_current_in: dict[str, tuple[str, str, Any]] = {}


def _load_function(path: str, base_dir: Path, run_id: str = "") -> Any:
    """Import ``module:function`` the way the spec means it.

    A module beside the spec wins over one of the same name already imported from elsewhere
    (two specs in one process may each have a ``steps.py``), and an edited module is re-executed,
    so a long-lived process (a notebook, a test, a worker) runs the code the cache key hashed.
    Whether the file changed is asked once per run (``run_id``), not once per stage: the run's
    keys hashed the code when it was planned, and a thousand stages calling one module asked
    the file system a thousand times.
    """
    module_name, _, attr = path.partition(":")
    base = str(base_dir)
    with _import_lock:
        put_first(base)
        local = _module_file(module_name, base_dir)
        try:
            if local is not None and _is_beside(local, base_dir):
                module = _import_local(module_name, local, run_id)
            else:
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ImportError(
                f"cannot import module '{module_name}' for function {path} "
                f"(looked beside the spec in {base} and on sys.path): {err}"
            ) from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"module '{module_name}' has no function '{attr}'")
    return fn


@functools.lru_cache(maxsize=1024)
def _is_beside(file: Path, base_dir: Path) -> bool:
    return file.is_relative_to(base_dir)


def _import_local(module_name: str, file: Path, run_id: str = "") -> Any:
    seen = _current_in.get(module_name)
    if (
        run_id
        and seen
        and seen[:2] == (run_id, str(file))
        and sys.modules.get(module_name) is seen[2]
    ):
        return seen[2]
    module = _import_current(module_name, file)
    _current_in[module_name] = (run_id, str(file), module)
    return module


def _import_current(module_name: str, file: Path) -> Any:
    st = os.stat(file)
    stamp = (str(file), st.st_mtime_ns, st.st_size)
    module = sys.modules.get(module_name)
    if module is not None:
        known = _loaded_from.get(module_name)
        if known == stamp or (known is None and _origin_stamp(module) == stamp):
            return module
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        _loaded_from.pop(module_name, None)
        raise
    _loaded_from[module_name] = stamp
    return module


def _origin_stamp(module: Any) -> tuple[str, int, int] | None:
    """(file, mtime, size) of a module imported by other means, to tell if it is still current."""
    origin = getattr(module, "__file__", None)
    if not origin:
        return None
    try:
        st = Path(origin).stat()
    except OSError:
        return None
    return (str(Path(origin)), st.st_mtime_ns, st.st_size)
