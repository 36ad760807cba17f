"""Which versions may hold an alias: the two refusals a promotion meets besides its gates.

- a version the serving guard rolled back from an alias is **blocked** there until a person
  promotes it with ``force`` (:func:`blocking`, :func:`refuse_blocked`);
- an **archived** version may hold no alias until restored (:func:`replay_archive` replays the
  archive events; :func:`refuse_archived`).

Both refuse as a failed gate (:class:`~pipeflow.errors.GateFailed` with one gate record), so the
``promote`` stage's ``on_gate_failure`` applies to them as to any gate. The policy is drawn in
:mod:`pipeflow.registry`.
"""

from __future__ import annotations

import time
from typing import Any, NoReturn


def blocking(events: list[dict[str, Any]], version: int) -> dict[str, Any] | None:
    """The latest guarded rollback from ``version`` in an alias's events, unless a forced
    promotion of it came after."""
    found = None
    for event in events:
        if event.get("action") == "rollback" and event.get("guard"):
            if event.get("from_version") == version:
                found = event
        elif event.get("force") and event.get("to_version") == version:
            found = None
    return found


def replay_archive(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Replay archive events: version -> the ``archive`` event in force."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        try:
            version = int(event["version"])
        except (KeyError, TypeError, ValueError):
            continue
        if event.get("action") == "archive":
            out[version] = event
        elif event.get("action") == "restore":
            out.pop(version, None)
    return out


def archived_message(name: str, version: int, event: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("time") or 0)))
    why = f": {event['reason']}" if event.get("reason") else ""
    return (
        f"{name}@{version} is archived (by {event.get('user', 'unknown')} at {when}{why}); "
        f"it is kept but never served or promoted: restore it first with "
        f"'pipeflow models restore {name}@{version}'"
    )


def refuse_archived(
    name: str,
    alias: str,
    archived: dict[int, dict[str, Any]],
    version: int,
) -> None:
    """GateFailed (a failed ``archived`` gate) when ``version`` is archived: promotion refuses
    it like any gate, so the ``promote`` stage's ``on_gate_failure`` applies."""
    event = archived.get(int(version))
    if event is None:
        return
    told = archived_message(name, version, event).replace(f"{name}@{version} is", "it is", 1)
    _refuse("archived", "not archived", f"{name}@{version} not promoted to '{alias}': {told}")


def refuse_blocked(
    name: str, alias: str, events: list[dict[str, Any]], version: int, current: int | None
) -> None:
    """GateFailed (a failed ``rollback`` gate) when the serving guard rolled ``version`` back
    from ``alias`` and no person has promoted it again since; promoting the holder again is a
    no-op and passes."""
    if version == current:
        return
    event = blocking(events, version)
    if event is None:
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
    message = (
        f"{name}@{version} was rolled back from '{alias}' by the serving guard at {when} "
        f"(alias event {event['seq']}: {event.get('reason') or 'no reason recorded'}); "
        f"promote it again only with --force (a person's decision), or promote a new version"
    )
    _refuse("rollback", f"not rolled back from {alias} by the serving guard", message)


def _refuse(kind: str, gate: str, message: str) -> NoReturn:
    """GateFailed with one failed gate of ``kind`` (a state of the version, not a metric: no
    value or threshold), recorded like any gate's verdict."""
    from pipeflow.errors import GateFailed

    failed = {
        "kind": kind,
        "gate": gate,
        "metric": kind,
        "op": "==",
        "threshold": None,
        "value": None,
        "passed": False,
        "detail": message,
    }
    raise GateFailed(message, [failed])
