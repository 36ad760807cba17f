"""Plugins by name: the entry-point groups pipeflow reads (``pipeflow.stages``, ``pipeflow.sinks``).

pipeflow declares its own built-ins in the same groups third-party plugins use, so there is one
path by which a stage type or an alert sink becomes known. A group is read once per process;
nothing is imported until a name is asked for (the reading is shared with pydantic's search
for its plugins: :func:`before_models`), and a plugin whose code fails to import is
reported as that plugin's problem (the caller's :class:`~pipeflow.errors.PluginLoadError`), never
as a broken spec.
"""

from __future__ import annotations

import functools
from importlib import import_module, metadata
from typing import Any

from pipeflow.errors import PluginLoadError


@functools.cache
def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """Name -> entry point of one group; the first installed wins, like importlib's own lookup."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in _installed().select(group=group):
        found.setdefault(ep.name, ep)
    return found


_forget_groups = entry_points.cache_clear


def _forget() -> None:
    """Forget what was read, every group (a test that installs a plugin while running)."""
    _forget_groups()
    _installed.cache_clear()


entry_points.cache_clear = _forget  # type: ignore[method-assign]


@functools.cache
def _installed() -> Any:
    """Every installed entry point, every group: reading them means reading every installed
    distribution's metadata (~25 ms in a large environment), so it is done once per process."""
    return metadata.entry_points()  # EntryPoints (SelectableGroups before Python 3.12)


def before_models() -> None:
    """Called by a module about to define pydantic models. Pydantic reads every installed
    distribution's metadata for its plugins when it builds its first model, and pipeflow read
    them all again for its own groups; when pydantic has not looked yet, the entry points are
    read here once for both, and pydantic is told what it would have found when there is no
    ``pydantic`` plugin: none. Where there is one, or pydantic keeps its plugins elsewhere
    than this version does, pydantic looks for itself, as before."""
    try:
        from pydantic.plugin import _loader
    except ImportError:  # pragma: no cover - another pydantic layout
        return
    if getattr(_loader, "_plugins", ()) is not None:
        return  # looked already, or another layout
    group = getattr(_loader, "PYDANTIC_ENTRY_POINT_GROUP", "pydantic")
    if not _installed().select(group=group):
        _loader._plugins = {}


def load_object(what: str, path: str, error: type[PluginLoadError]) -> Any:
    """The object ``module:attr.attr`` names; ``error`` (naming ``what``) if it cannot be had."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as err:  # a broken plugin must not look like a broken spec
        raise error(f"{what} could not be loaded from {path}: {type(err).__name__}: {err}") from err
    return obj
