"""The command line every ``pipeflow init`` template's ``generate.py`` shares.

A template's ``generate.py`` (copied into the user's project) keeps what is its own: the columns
and how they are drawn (``generate(rows, seed)``) and where the table goes (``OUT``). How it is
called is the same for all of them, so it is written once here, in pipeflow, which the project
runs with anyway: ``--rows`` and ``--seed``, the folder made, the CSV written, one line said.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def write_sample(
    generate: Callable[[int, int], Any],
    out: Path,
    doc: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Parse ``--rows`` and ``--seed`` (``argv``; default: the command line), write
    ``generate(rows, seed)`` to ``out`` as CSV (its folder made) and say so. ``doc``: the
    generator's module docstring, whose first line describes the command in ``--help``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out.parent.mkdir(exist_ok=True)
    generate(args.rows, args.seed).to_csv(out, index=False)
    print(f"wrote {args.rows} rows to {out}")
