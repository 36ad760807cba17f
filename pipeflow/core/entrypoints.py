"""Plugins by name: the entry-point groups pipeflow reads (``pipeflow.stages``, ``pipeflow.sinks``).

pipeflow declares its own built-ins in the same groups third-party plugins use, so there is one
path by which a stage type or an alert sink becomes known. A group is read once per process;
nothing is imported until a name is asked for, and a plugin whose code fails to import is
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
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


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
