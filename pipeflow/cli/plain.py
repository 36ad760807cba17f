"""Plain output for ``pipeflow run`` where rich would print plain text anyway.

rich costs ~45 us a line (markup, segments, styles) even with no colours, and importing it is a
twentieth of a fully cached 1000-stage ``pipeflow run``. Where stdout is not a terminal (a log
file, CI output, a pipe) and nothing makes rich colour it anyway, rich prints a line of markup
as its text with the markup removed: :func:`run_console` gives :class:`PlainOutput` there, and
:class:`~pipeflow.cli.display.RunDisplay` writes the lines :func:`as_rich_prints` vouches for
itself. Anything else (a line with a ``[`` in its data, escaped for rich, a tab, a failure's
traceback) goes to a rich console made on first need, so the output is rich's byte for byte
(tests/cli/test_run_display.py compares the two).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def as_rich_prints(text: str) -> str | None:
    """``text`` if rich, printing it with its markup removed (and emoji codes left alone, as
    :class:`~pipeflow.cli.display.RunDisplay` prints) on a console without colours or wrapping,
    would print it unchanged (no ``[``: no markup; nothing rich replaces or strips: tabs, control
    characters); else None."""
    if "[" in text or not text.isprintable():
        return None
    return text


class PlainOutput:
    """What :class:`~pipeflow.cli.display.RunDisplay` prints through where rich would print
    plain text for certain (:func:`run_console`): it says so (no terminal, no colours, no
    wrapping), and hands everything else (``print``, ``render_str``: a line with markup, a tab,
    a failure's traceback) to a rich console made on first need by ``make``. A fully cached run
    of a thousand stages then imports no rich at all (a twentieth of the command)."""

    is_terminal = False
    is_jupyter = False
    color_system = None
    soft_wrap = True
    record = False
    quiet = False

    def __init__(self, make: Any):
        self._make = make
        self._rich: Any = None

    @property
    def file(self) -> Any:
        return sys.stdout  # as rich's console: the stdout of the moment

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._rich is None:
            self._rich = self._make()
        return getattr(self._rich, name)


def run_console() -> Any:
    """The console ``pipeflow run`` prints through: a :class:`PlainOutput` where rich is certain
    to print plain text (stdout is not a terminal, and none of what makes rich colour or treat
    it as one anyway is set: ``FORCE_COLOR``, ``TTY_COMPATIBLE``, ``TTY_INTERACTIVE``, Jupyter,
    Windows' console), else rich's console (:func:`pipeflow.cli._common.make_console`)."""
    from pipeflow.cli import _common

    isatty = getattr(sys.stdout, "isatty", None)
    try:
        tty = isatty is None or bool(isatty())
    except ValueError:  # a closed stdout: let rich decide, as before
        tty = True
    forced = any(k in os.environ for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"))
    if tty or forced or sys.platform == "win32" or "IPython" in sys.modules:
        return _common.make_console()
    return PlainOutput(_common.make_console)
