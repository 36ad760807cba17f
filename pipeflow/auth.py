"""Bearer tokens with scopes, one scheme for the two HTTP servers: ``pipeflow serve`` (the model)
and ``pipeflow ui`` (the dashboard).

Where tokens come from (:func:`read_tokens`): a file, one per line, ``TOKEN [SCOPE,SCOPE]``
(blank lines and ``#`` comments skipped; no scope means ``predict``), and
``$PIPEFLOW_TOKENS='TOKEN=SCOPES;TOKEN=SCOPES'`` (a token in both gets the variable's scopes).
The same file serves both commands: each route asks for a scope, and ``*`` grants all of them.

- ``predict``, ``feedback``, ``metrics``: the model server's routes
  (:mod:`pipeflow.serving.routes`);
- ``ui``: every ``/api/`` route of the dashboard (:mod:`pipeflow.ui.app`), that is everything it
  knows about the store;
- ``*``: all of them.

A scope not in that list is refused at start with the file and line, so a typo does not lock a
client out (or in) silently. A token must be at least 16 characters.

What is kept (:class:`Tokens`): the SHA-256 digest of each token, never the token. A presented
token's digest is compared with every known digest, each comparison in constant time
(``hmac.compare_digest``) and none skipped, so the time taken says nothing about which bytes
matched. A caller is named (in the serving audit log) by ``token:`` and the first 12 hex digits of
that digest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

from pipeflow.errors import BadRequest, UsageError

#: every scope a token may hold; ``*`` holds them all
SCOPES = ("predict", "feedback", "metrics", "ui", "*")
DEFAULT_SCOPES = ("predict",)
MIN_LENGTH = 16
ENV = "PIPEFLOW_TOKENS"


def read_tokens(path: str | None, flag: str = "--tokens") -> dict[str, list[str]] | None:
    """The tokens of the file at ``path`` (if any) and of ``$PIPEFLOW_TOKENS``, token -> scopes;
    None when there is none. Bad input raises :class:`UsageError` naming the file and line (or
    the variable); the message never holds the token."""
    tokens: dict[str, list[str]] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or err
            raise UsageError(f"cannot read {flag} {path}: {why}") from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            token, *scopes = line.split(None, 1)
            tokens[token] = _scopes(token, "".join(scopes), f"{path}:{n}")
    for n, item in enumerate(filter(None, os.environ.get(ENV, "").split(";")), 1):
        token, _, scopes = item.partition("=")
        tokens[token.strip()] = _scopes(token.strip(), scopes, f"${ENV} (entry {n})")
    return tokens or None


def _scopes(token: str, text: str, where: str) -> list[str]:
    if len(token) < MIN_LENGTH:
        raise UsageError(f"{where}: a token must be at least {MIN_LENGTH} characters")
    scopes = [s.strip() for s in text.split(",") if s.strip()] or list(DEFAULT_SCOPES)
    for scope in scopes:
        if scope not in SCOPES:
            raise UsageError(
                f"{where}: unknown scope {scope!r}: expected some of {', '.join(SCOPES)}"
            )
    return scopes


class Tokens:
    """The digests of the known tokens and their scopes; false when there is none (all open)."""

    def __init__(self, tokens: Mapping[str, Iterable[str]] | None = None):
        self._known = {
            hashlib.sha256(t.encode()).digest(): frozenset(s) for t, s in (tokens or {}).items()
        }

    def __bool__(self) -> bool:
        return bool(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def granting(self, scope: str) -> int:
        """How many tokens hold ``scope`` (``*`` included)."""
        return sum(1 for s in self._known.values() if scope in s or "*" in s)

    def check(self, authorization: str | None, scope: str) -> str:
        """The caller's name (``token:`` and a digest fingerprint) for an ``Authorization``
        header value, or :class:`BadRequest` 401 (none, not a bearer token, not a known one) or
        403 (a known token without ``scope``). ``anonymous`` when there are no tokens."""
        if not self._known:
            return "anonymous"
        if not authorization or not authorization.lower().startswith("bearer "):
            raise BadRequest(
                401, "unauthorized", "a bearer token is required (Authorization: Bearer TOKEN)"
            )
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        scopes = None
        for known, granted in self._known.items():  # constant time per comparison, all compared
            if hmac.compare_digest(known, digest):
                scopes = granted
        if scopes is None:
            raise BadRequest(401, "unauthorized", "the bearer token is not valid")
        if scope not in scopes and "*" not in scopes:
            raise BadRequest(403, "forbidden", f"the token lacks the '{scope}' scope")
        return "token:" + digest.hex()[:12]
