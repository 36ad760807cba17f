"""The model registry: named models, integer versions, aliases with a recorded history.

Policy, and why:

- **It lives in the artifact store, as immutable files**, not in a database beside one machine::

      registry/<model>/versions/<n>.json            one per version, written once
      registry/<model>/aliases/<alias>/<seq>.json   one per alias move, written once
      registry/<model>/fleet/<seq>.json             one per fleet event, written once
      registry/<model>/archive/<seq>.json           one per archive or restore, written once
      registry/<model>/refusals/<seq>.json          one per refused promotion, written once

  so every spec and every machine that points at the same store URL shares one registry (the
  environments of a team), and a stage running on a Dask worker can register a model with only
  the store in hand. Nothing is ever rewritten: the history *is* the files.
- **Numbers are claimed with an exclusive create** (:meth:`ArtifactStore.create_exclusive`): two
  promotions racing for version 4 or alias event 7 cannot both win; the loser re-reads and takes
  the next number, re-checking its gates against the holder it now sees. So the history of an
  alias is always a straight chain (each event's ``from_version`` is the previous event's result).
  On local and network file systems this is a hard link, on S3 a conditional write (a PUT with
  ``If-None-Match: *``): both atomic, so the chain stays straight whichever the store is. Object
  stores without a conditional write (``gs://``, ``az://``) fall back to check-then-write, which
  leaves a small race window (see :mod:`pipeflow.store.remote`).
- **A refused promotion leaves a record** (:meth:`Registry.refusals`): the version, the alias,
  the holder it was compared with and *every* gate's verdict (thresholds, bias, champion, a
  guarded rollback's block), numbered and claimed like alias moves (on S3 a conditional write
  too). The version record is written once at registration and holds only the gates known then
  (thresholds and bias): the champion gate is judged at the moment of the move, against whoever
  holds the alias then, so without this record a version the champion rejected would read as
  passed. :func:`verdicts` folds alias moves and refusals into what each version's gates said
  when last checked, and whether it ever held an alias (``pipeflow models show``, the dashboard).
- **An alias is a stack**: a promotion pushes a version, ``rollback`` pops back to the previous
  holder. Replaying the events gives the current holder, so there is no mutable pointer to corrupt.
- **Fleet events** (:meth:`Registry.fleet_events`, :meth:`Registry.record_fleet_event`) are what
  the replicas of ``pipeflow serve`` decided and every other replica must apply: a canary
  withdrawn (``canary_withdrawn``, model and version), a step of a canary's ramp (``ramp_step``)
  and its promotion (``ramp_promoted``). Numbered and claimed like alias moves, so
  the fleet's history is one straight chain too; a replica replays it when it starts, so a
  decision outlives the process that made it (:mod:`pipeflow.serving.fleet`).
- **A guarded rollback blocks the version it removed**: :meth:`Registry.rollback` with
  ``only_from`` (the serving guard, :mod:`pipeflow.serving.guard`) moves the alias back only if
  that version still holds it (so of N replicas that see the same breach, one rolls back and the
  others find the alias already moved and do nothing), and records ``guard`` (the reason, the
  limits and the measurements) in the alias event. That version may not be promoted to that
  alias again (:meth:`Registry.blocked`; promotion fails like a failed gate) until a person
  promotes it with ``force`` (``pipeflow models promote ... --force``), which is recorded in the
  event. A new version (a new run whose model differs) is not blocked.
- **An archived version is kept, never used** (MLflow's *Archived* stage): ``pipeflow models
  archive NAME@V`` appends an ``archive`` event, ``models restore`` a ``restore`` event, numbered
  and claimed like alias moves, so the record of who archived what and why is a straight chain
  and archiving is undone by a later event, not by rewriting one (:meth:`Registry.archived`
  replays it). Its record and model file stay (``models show``, ``models card``, ``lineage`` and
  :meth:`Registry.load_model` read it; ``store gc`` keeps it), but it may not hold an alias:
  a version holding one cannot be archived (move the alias first), a promotion to an archived
  version fails like a failed gate (``archived``), a rollback onto one is refused, and
  :meth:`Registry.servable` (``serve``, its alias watch and canary, ``predict``, the ``predict``
  stage) refuses it with :class:`~pipeflow.errors.ArchivedVersion`. Archiving and promoting are
  two files: a promotion racing an archive of the same version can win, and the server then
  still refuses to load it (it keeps serving what it has).
- **Loading never trusts the file**: the bytes must hash to the digest recorded in the version
  (tampered or truncated files are refused before parsing), and a skops file may only contain the
  types recorded when pipeflow registered it, intersected with pipeflow's own allow-list.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from pipeflow.errors import ArchivedVersion, GateFailed, RegistryError
from pipeflow.registry.gates import verdicts
from pipeflow.registry.holding import (
    archived_message,
    blocking,
    refuse_archived,
    refuse_blocked,
    replay_archive,
)
from pipeflow.registry.loading import load_version_model, trusted_types
from pipeflow.registry.names import NAME, alias_stack, check_name, current_user, parse_ref
from pipeflow.store import layout
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore

ROOT = layout.REGISTRY
FLEET = layout.FLEET
ARCHIVE = "archive"
REFUSALS = layout.REFUSALS


class Registry:
    """Read and write the registry held in one artifact store."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    # -- reading ---------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [n for n in self.store.list_names(ROOT) if NAME.fullmatch(n)]

    def _numbered(self, folder: str) -> list[int]:
        return sorted(
            int(n[:-5])
            for n in self.store.list_names(folder)
            if n.endswith(".json") and n[:-5].isdigit()
        )

    def _read_json(self, relpath: str) -> dict[str, Any]:
        text = self.store.read_text(relpath)
        if text is None:
            raise RegistryError(f"registry entry {relpath} is missing from {self.store.url}")
        try:
            return json.loads(text)
        except ValueError as err:
            raise RegistryError(
                f"registry entry {relpath} in {self.store.url} is damaged: {err}"
            ) from None

    def versions(self, name: str) -> list[dict[str, Any]]:
        check_name("model name", name)
        folder = f"{ROOT}/{name}/versions"
        return [self._read_json(f"{folder}/{n}.json") for n in self._numbered(folder)]

    def version(self, name: str, version: int) -> dict[str, Any]:
        check_name("model name", name)
        text = self.store.read_text(f"{ROOT}/{name}/versions/{int(version)}.json")
        if text is None:
            known = self._numbered(f"{ROOT}/{name}/versions")
            if not known:
                raise RegistryError(self._unknown_model(name))
            raise RegistryError(
                f"model '{name}' has no version {version} (versions: {_ranges(known)})"
            )
        return json.loads(text)

    def _unknown_model(self, name: str) -> str:
        import difflib

        models = self.models()
        close = difflib.get_close_matches(name, models, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(models) if models else "none yet"
        return (
            f"no model named '{name}' in the registry at {self.store.url} (models: {listed}){hint}"
        )

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> the version it points at now (aliases rolled back to nothing are left out)."""
        check_name("model name", name)
        out = {}
        for alias in self.store.list_names(f"{ROOT}/{name}/aliases"):
            stack = alias_stack(self.history(name, alias))
            if stack:
                out[alias] = stack[-1]
        return out

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias moves, oldest first (of one alias, or of every alias by time)."""
        check_name("model name", name)
        if alias is None:
            events = [
                e
                for a in self.store.list_names(f"{ROOT}/{name}/aliases")
                for e in self.history(name, a)
            ]
            return sorted(events, key=lambda e: (e["time"], e["alias"], e["seq"]))
        check_name("alias", alias)
        folder = f"{ROOT}/{name}/aliases/{alias}"
        return [self._read_json(f"{folder}/{n}.json") for n in self._numbered(folder)]

    def holder(self, name: str, alias: str) -> int | None:
        stack = alias_stack(self.history(name, alias))
        return stack[-1] if stack else None

    def blocked(self, name: str, alias: str, version: int) -> dict[str, Any] | None:
        """The guarded rollback that took ``version`` off ``alias``, if no forced promotion of it
        came after; None when the version may be promoted there."""
        return blocking(self.history(name, alias), int(version))

    def fleet_events(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        """The fleet events of ``name`` numbered above ``after``, oldest first."""
        check_name("model name", name)
        folder = f"{ROOT}/{name}/{FLEET}"
        return [self._read_json(f"{folder}/{n}.json") for n in self._numbered(folder) if n > after]

    def archive_events(self, name: str) -> list[dict[str, Any]]:
        """The archive and restore events of ``name``, oldest first."""
        check_name("model name", name)
        folder = f"{ROOT}/{name}/{ARCHIVE}"
        return [self._read_json(f"{folder}/{n}.json") for n in self._numbered(folder)]

    def archived(self, name: str) -> dict[int, dict[str, Any]]:
        """Version -> the event that archived it, for every version archived now (replayed:
        a later ``restore`` of a version undoes its ``archive``)."""
        return replay_archive(self.archive_events(name))

    def servable(self, name: str, which: str | int | None = None) -> tuple[Any, dict[str, Any]]:
        """:meth:`load_model`, refusing an archived version (:class:`ArchivedVersion`): what
        serving and batch scoring load through."""
        record = self.resolve(name, which)
        event = self.archived(name).get(int(record["version"]))
        if event is not None:
            raise ArchivedVersion(archived_message(name, int(record["version"]), event))
        return load_version_model(self.store, record), record

    def record_fleet_event(
        self,
        name: str,
        event: dict[str, Any],
        *,
        unless: Callable[[list[dict[str, Any]]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """Append ``event`` as the next fleet event of ``name`` (claimed with an exclusive create;
        a loser re-reads and takes the next number). None, and nothing written, when
        ``unless(events so far)`` holds: a concurrent replica already recorded the same decision."""
        check_name("model name", name)

        def build(events: list[dict[str, Any]], seq: int) -> dict[str, Any] | None:
            if unless is not None and unless(events):
                return None
            return {
                **event,
                "seq": seq,
                "model": name,
                "time": time.time(),
                "host": socket.gethostname(),
            }

        return self._claim(f"{ROOT}/{name}/{FLEET}", lambda: self.fleet_events(name), build)

    def refusals(self, name: str) -> list[dict[str, Any]]:
        """The promotions of ``name`` its gates refused, oldest first."""
        check_name("model name", name)
        folder = f"{ROOT}/{name}/{REFUSALS}"
        return [self._read_json(f"{folder}/{n}.json") for n in self._numbered(folder)]

    def record_refusal(
        self,
        name: str,
        alias: str,
        version: int,
        gates: list[dict[str, Any]],
        *,
        holder: int | None,
        message: str,
        reason: str = "",
        user: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Record that promoting ``version`` of ``name`` to ``alias`` was refused, with every
        gate's verdict (``gates``) and the holder it was judged against; the next number is
        claimed with an exclusive create, like an alias move."""
        check_name("model name", name)
        check_name("alias", alias)

        def build(events: list[dict[str, Any]], seq: int) -> dict[str, Any]:
            return {
                "seq": seq,
                "model": name,
                "alias": alias,
                "version": int(version),
                "holder": holder,
                "gates": gates,
                "message": message,
                "reason": reason,
                "run_id": run_id,
                "time": time.time(),
                "user": user or current_user(),
                "host": socket.gethostname(),
            }

        record = self._claim(f"{ROOT}/{name}/{REFUSALS}", lambda: self.refusals(name), build)
        assert record is not None
        return record

    def resolve(self, name: str, which: str | int | None = None) -> dict[str, Any]:
        """The version record that ``which`` means: a number, an alias, or None (the latest)."""
        check_name("model name", name)
        if which is None or which == "latest":
            known = self._numbered(f"{ROOT}/{name}/versions")
            if not known:
                raise RegistryError(self._unknown_model(name))
            return self.version(name, known[-1])
        if isinstance(which, int) or str(which).isdigit():
            return self.version(name, int(which))
        check_name("alias", str(which))
        held = self.holder(name, str(which))
        if held is None:
            if not self._numbered(f"{ROOT}/{name}/versions"):
                raise RegistryError(self._unknown_model(name))
            aliases = self.aliases(name)
            listed = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise RegistryError(f"model '{name}' has no alias '{which}' (aliases: {listed})")
        return self.version(name, held)

    # -- writing ---------------------------------------------------------------------------
    def register(
        self, name: str, model: ArtifactRef, *, declared: tuple[str, ...] = (), **fields: Any
    ) -> dict[str, Any]:
        """Record ``model`` (already in the store) as the next version of ``name``. The same
        model content registered again returns the existing version (``existing: True``), unless
        one of the ``declared`` fields differs from that version's: what a version declares
        about how it predicts or is held to account (per-group thresholds, business values, bias
        limits) is part of what it is, so a changed declaration makes a new version of the same
        model file rather than being dropped."""
        check_name("model name", name)
        if not self.store.has(model.digest):
            raise RegistryError(
                f"model artifact {model.digest[:12]} is not in the store {self.store.url}"
            )

        def as_recorded(value: Any) -> str:  # compared as the record's JSON holds it
            return json.dumps(value, sort_keys=True, default=str)

        for record in self.versions(name):
            if record.get("model", {}).get("digest") == model.digest and all(
                as_recorded(record.get(key)) == as_recorded(fields.get(key)) for key in declared
            ):
                return {**record, "existing": True}
        trusted = trusted_types(model.codec, self.store.get(model.digest))
        folder = f"{ROOT}/{name}/versions"
        while True:
            known = self._numbered(folder)
            number = (known[-1] if known else 0) + 1
            record = {
                **fields,
                "name": name,
                "version": number,
                "created": time.time(),
                "user": fields.get("user") or current_user(),
                "host": socket.gethostname(),
                "model": model.to_dict(),
                "trusted_types": trusted,
            }
            if self._create(f"{folder}/{number}.json", record):
                return record

    def move_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        reason: str = "",
        user: str | None = None,
        action: str = "promote",
        run_id: str | None = None,
        check: Callable[[int | None], list[dict[str, Any]]] | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version``. ``check(current_holder)`` runs before each attempt (and
        again if a concurrent move got in first): it returns the gate records or raises
        :class:`~pipeflow.errors.GateFailed`, which leaves the alias untouched. A version the
        serving guard rolled back from this alias is refused the same way (a failed ``rollback``
        gate) unless ``force`` (a person's decision, recorded in the event). A refusal is
        recorded (:meth:`record_refusal`) before the GateFailed goes on to the caller."""
        check_name("alias", alias)
        self.version(name, version)  # must exist
        return self._append(
            name,
            alias,
            lambda stack: int(version),
            action=action,
            reason=reason,
            user=user,
            run_id=run_id,
            check=check,
            extra={"force": True} if force else None,
        )

    def archive(
        self, name: str, version: int, *, reason: str = "", user: str | None = None
    ) -> dict[str, Any]:
        """Archive ``version`` of ``name``: kept, never served, refused by promotion. Refused
        while an alias holds it (say which) or when it is archived already."""
        version = int(self.version(name, version)["version"])
        holding = sorted(a for a, v in self.aliases(name).items() if v == version)
        if holding:
            listed = ", ".join(f"'{a}'" for a in holding)
            raise RegistryError(
                f"{name}@{version} holds alias {listed}: promote another version there or roll "
                f"{'them' if len(holding) > 1 else 'it'} back first, then archive it"
            )

        def refuse(archived: dict[int, dict[str, Any]]) -> None:
            if version in archived:
                raise RegistryError(archived_message(name, version, archived[version]))

        return self._archive_event(name, version, "archive", refuse, reason=reason, user=user)

    def restore(
        self, name: str, version: int, *, reason: str = "", user: str | None = None
    ) -> dict[str, Any]:
        """Undo :meth:`archive`: the version may be promoted and served again."""
        version = int(self.version(name, version)["version"])

        def refuse(archived: dict[int, dict[str, Any]]) -> None:
            if version not in archived:
                raise RegistryError(f"{name}@{version} is not archived: nothing to restore")

        return self._archive_event(name, version, "restore", refuse, reason=reason, user=user)

    def _archive_event(
        self,
        name: str,
        version: int,
        action: str,
        refuse: Callable[[dict[int, dict[str, Any]]], None],
        *,
        reason: str,
        user: str | None,
    ) -> dict[str, Any]:

        def build(events: list[dict[str, Any]], seq: int) -> dict[str, Any]:
            refuse(replay_archive(events))
            return {
                "seq": seq,
                "model": name,
                "action": action,
                "version": version,
                "time": time.time(),
                "user": user or current_user(),
                "host": socket.gethostname(),
                "reason": reason,
            }

        event = self._claim(f"{ROOT}/{name}/{ARCHIVE}", lambda: self.archive_events(name), build)
        assert event is not None
        return event

    def _claim(
        self,
        folder: str,
        events: Callable[[], list[dict[str, Any]]],
        build: Callable[[list[dict[str, Any]], int], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Write the next numbered event file of ``folder``: ``build(events so far, number)``
        makes it (None: nothing to write; it may raise to refuse). The number is claimed with an
        exclusive create (a conditional write on S3); a loser re-reads and tries the next one."""
        while True:
            known = events()
            seq = (known[-1]["seq"] if known else 0) + 1
            record = build(known, seq)
            if record is None:
                return None
            if self._create(f"{folder}/{seq}.json", record):
                return record

    def _create(self, rel: str, record: dict[str, Any]) -> bool:
        """Write ``record`` to ``rel`` unless the file exists (an exclusive create: of two writers
        numbering the same file, one wins); whether this one did."""
        data = json.dumps(record, indent=1, sort_keys=True, default=str).encode()
        return self.store.create_exclusive(rel, data)

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        reason: str = "",
        user: str | None = None,
        only_from: int | None = None,
        guard: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Point ``alias`` back at the version it held before the current one. With
        ``only_from``: only while that version holds the alias (re-checked if a concurrent move
        got in first), else None and nothing written. ``guard`` (the serving guard's limits and
        measurements) is recorded in the event and blocks the version rolled back from
        (:meth:`blocked`)."""
        check_name("alias", alias)

        def previous(stack: list[int]) -> int:
            if only_from is not None and (not stack or stack[-1] != only_from):
                raise _Moved
            if not stack:
                raise RegistryError(self._no_alias(name, alias))
            if len(stack) < 2:
                raise RegistryError(
                    f"'{name}@{alias}' has no earlier holder to roll back to (it holds v{stack[-1]} only)"
                )
            event = self.archived(name).get(stack[-2])
            if event is not None:
                raise ArchivedVersion(
                    f"cannot roll '{name}@{alias}' back to v{stack[-2]}: "
                    + archived_message(name, stack[-2], event)
                )
            return stack[-2]

        try:
            return self._append(
                name,
                alias,
                previous,
                action="rollback",
                reason=reason,
                user=user,
                extra=None if guard is None else {"guard": guard},
            )
        except _Moved:
            return None

    def _no_alias(self, name: str, alias: str) -> str:
        if not self._numbered(f"{ROOT}/{name}/versions"):
            return self._unknown_model(name)
        return f"model '{name}' has no alias '{alias}'"

    def _append(
        self,
        name: str,
        alias: str,
        target: Callable[[list[int]], int],
        *,
        action: str,
        reason: str,
        user: str | None,
        run_id: str | None = None,
        check: Callable[[int | None], list[dict[str, Any]]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        def build(events: list[dict[str, Any]], seq: int) -> dict[str, Any]:
            stack = alias_stack(events)
            current = stack[-1] if stack else None
            to_version = target(stack)
            gates: list[dict[str, Any]] = []
            try:
                gates = check(current) if check is not None else []
                if action != "rollback":
                    refuse_archived(name, alias, self.archived(name), to_version)
                if action != "rollback" and not (extra or {}).get("force"):
                    refuse_blocked(name, alias, events, to_version, current)
            except GateFailed as err:
                self.record_refusal(
                    name,
                    alias,
                    to_version,
                    [*gates, *err.gates],
                    holder=current,
                    message=str(err),
                    reason=reason,
                    user=user,
                    run_id=run_id,
                )
                raise
            return {
                "seq": seq,
                "model": name,
                "alias": alias,
                "action": action,
                "from_version": current,
                "to_version": to_version,
                "time": time.time(),
                "user": user or current_user(),
                "host": socket.gethostname(),
                "reason": reason,
                "run_id": run_id,
                "gates": gates,
                **(extra or {}),
            }

        event = self._claim(
            f"{ROOT}/{name}/aliases/{alias}", lambda: self.history(name, alias), build
        )
        assert event is not None
        return event

    # -- loading ---------------------------------------------------------------------------
    def load_model(self, name: str, which: str | int | None = None) -> tuple[Any, dict[str, Any]]:
        """The model object and its version record; refuses tampered or untrusted files."""
        record = self.resolve(name, which)
        return load_version_model(self.store, record), record


class _Moved(Exception):
    """A rollback ``only_from`` a version that no longer holds the alias: nothing to do."""


def _ranges(numbers: list[int]) -> str:
    if len(numbers) <= 6:
        return ", ".join(map(str, numbers))
    return f"{numbers[0]}..{numbers[-1]}"


__all__ = [
    "Registry",
    "alias_stack",
    "check_name",
    "current_user",
    "load_version_model",
    "parse_ref",
    "verdicts",
]
