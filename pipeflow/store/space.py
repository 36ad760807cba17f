"""A full disk, said as such: "no space left on the device holding PATH".

A full disk shows up in several disguises. A write of the store raises ``ENOSPC``; SQLite says
"database or disk is full" when a page cannot be added, but "disk I/O error" when it cannot grow
its WAL or the WAL's shared-memory index, which every command does on opening a database, reads
included; so on a full disk every command said only "disk I/O error". :func:`explain` turns
each of these into one sentence naming the device by a path the user knows (the store's root,
the database's folder) and how much is free, which is what they need to act. An I/O error on a
device with room to spare is left as it was said: it is something else.
"""

from __future__ import annotations

import errno
import os
import shutil

#: below this many free bytes, an I/O error of SQLite is taken for a full disk (SQLite needs a
#: page or a WAL frame, a few KiB, and the shared-memory index 32 KiB at a time)
NEARLY_FULL = 1 << 20


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes (for this user) on the device holding ``path`` (or its nearest existing
    parent); None if that cannot be told."""
    here = os.path.abspath(os.fspath(path))
    while True:
        try:
            return shutil.disk_usage(here).free
        except OSError:
            parent = os.path.dirname(here)
            if parent == here:
                return None
            here = parent


def full(path: str | os.PathLike[str]) -> str:
    """ "no space left on the device holding PATH (N bytes free)"."""
    free = free_bytes(path)
    room = "" if free is None else f" ({free:,} bytes free)"
    return f"no space left on the device holding {os.fspath(path)}{room}"


def explain(err: BaseException, path: str | os.PathLike[str]) -> str:
    """What went wrong with a write at ``path``: :func:`full` for ``ENOSPC`` or SQLite's full
    disk (and its I/O error on a device with less than :data:`NEARLY_FULL` free), else the
    error's own words."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return full(path)
    text = str(err)
    if "database or disk is full" in text:
        return full(path)
    if "disk I/O error" in text:
        free = free_bytes(path)
        if free is not None and free < NEARLY_FULL:
            return full(path)
    if isinstance(err, OSError):
        return err.strerror or text
    return text
