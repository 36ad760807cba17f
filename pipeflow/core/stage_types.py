"""Stage types by name, loaded lazily from the ``pipeflow.stages`` entry-point group.

Built-in types are declared in pipeflow's own ``pyproject.toml`` under the same group as
third-party plugins, so there is exactly one path by which a type becomes known. Nothing is
imported until a type is asked for by name: ``pipeflow check`` of a spec that uses only
``python`` stages never imports a plugin's ML dependencies.

There is no mutable module-level registry. :func:`default_registry` caches the (read-only) view of
installed entry points per process; code that wants extra in-process types (tests, notebooks)
makes its own ``StageRegistry(extra={...})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

from pipeflow.core.entrypoints import entry_points, load_object
from pipeflow.core.stage import Stage
from pipeflow.errors import StageTypeLoadError, UnknownStageType

__all__ = [
    "ENTRY_POINT_GROUP",
    "StageRegistry",
    "StageTypeLoadError",
    "UnknownStageType",
    "default_registry",
]

ENTRY_POINT_GROUP = "pipeflow.stages"


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return entry_points(ENTRY_POINT_GROUP)


class StageRegistry:
    """Maps stage-type names to classes; loads each entry point on first use only."""

    def __init__(
        self, extra: Mapping[str, type[Stage] | str] | None = None, *, entry_points: bool = True
    ):
        self._extra = dict(extra or {})
        self._use_entry_points = entry_points
        self._loaded: dict[str, type[Stage]] = {}

    def names(self) -> list[str]:
        names = set(self._extra)
        if self._use_entry_points:
            names |= set(_entry_points())
        return sorted(names)

    def origin(self, name: str) -> str:
        """Where a type comes from: ``package-name x.y`` for entry points, ``in-process`` else."""
        if name in self._extra:
            return "in-process"
        ep = _entry_points().get(name)
        if ep is None:
            raise UnknownStageType(name, self.names())
        dist = getattr(ep, "dist", None)
        return f"{dist.name} {dist.version}" if dist is not None else ep.value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> type[Stage]:
        if name in self._loaded:
            return self._loaded[name]
        target: type[Stage] | str | None = self._extra.get(name)
        if target is None and self._use_entry_points:
            ep = _entry_points().get(name)
            target = ep.value if ep is not None else None
        if target is None:
            raise UnknownStageType(name, self.names())
        cls = _import(name, target) if isinstance(target, str) else target
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise StageTypeLoadError(
                f"stage type '{name}' ({target}) is not a subclass of pipeflow.Stage"
            )
        self._loaded[name] = cls
        return cls


def _import(name: str, path: str) -> type:
    return load_object(f"stage type '{name}'", path, StageTypeLoadError)


def default_registry() -> StageRegistry:
    """A registry of every installed stage type (entry points only)."""
    return StageRegistry()
