"""``pipeflow init``: a new project from a template (Kedro's ``kedro new`` starters).

A template is a folder of package data, ``pipeflow/templates/<name>/`` (``pipeline.yaml``,
``steps.py``, ``generate.py``), plus the ``README.md`` and ``gitignore`` every template shares;
``{{project}}`` in them becomes the project's name (the pipeline's and the registered model's).
After writing the files, ``init`` runs the template's ``generate.py`` with this Python to write
the sample data (numpy, pandas and :mod:`pipeflow.sample_data` only, no network), so
``pipeflow run pipeline.yaml`` works at once. A folder that is not empty is refused unless ``--force``, which writes the template's files
over those of the same name and leaves every other file alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pipeflow.cli import _common

TEMPLATES = {
    "classification": (
        "data/customers.csv",
        "which customers will cancel, from their account details (logistic regression).",
    ),
    "regression": (
        "data/houses.csv",
        "the price of a house from its size, age and region (a random forest).",
    ),
    "text": (
        "data/tickets.csv",
        "the team a support ticket goes to, from its text (TF-IDF and logistic regression).",
    ),
}
_SHARED = {"README.md": "README.md", "gitignore": ".gitignore"}
_OWN = ("pipeline.yaml", "steps.py", "generate.py")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "init",
        help="start a project from a template: spec, steps, sample data generator, README",
        description="Write a new project into DIR (default: the current folder): pipeline.yaml, "
        "steps.py, generate.py (run once to write the sample data), README.md and .gitignore. "
        "`pipeflow run pipeline.yaml` then works straight away.",
    )
    c.add_argument("directory", nargs="?", default=".", metavar="DIR")
    c.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        default="classification",
        help="default: classification",
    )
    c.add_argument(
        "--name",
        help="the pipeline's and the model's name (default: DIR's name, lower case, '-' for "
        "anything but letters and digits)",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="write into a folder that is not empty (files of the same name are replaced)",
    )
    _common.add_debug(c)
    c.set_defaults(handler=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from pipeflow.errors import UsageError

    target = Path(args.directory).absolute()
    name = args.name or re.sub(r"[^a-z0-9]+", "-", target.name.lower()).strip("-")
    if not _NAME.fullmatch(name or ""):
        raise UsageError(
            f"--name {name!r}: expected 1-100 lower-case letters, digits or '-', starting with a "
            "letter or digit (it names the pipeline and the registered model)"
        )
    if target.exists() and not target.is_dir():
        raise UsageError(f"{args.directory}: exists and is not a folder")
    present = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if present and not args.force:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if present[5:] else "")
        raise UsageError(
            f"{args.directory} is not empty ({shown}): give an empty or new folder, or pass "
            "--force to write the template over it (files of the same name are replaced)"
        )
    data, what = TEMPLATES[args.template]
    words = {"project": name, "template": args.template, "data": data, "what": what}
    written = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for source, dest in [*((f"{args.template}/{f}", f) for f in _OWN), *_SHARED.items()]:
            (target / dest).write_text(_fill(_template(source), words), encoding="utf-8")
            written.append(dest)
    except OSError as err:
        raise UsageError(f"cannot write into {args.directory}: {err.strerror or err}") from None
    import subprocess  # nosec B404 (runs the template's own generator with this Python)

    made = subprocess.run(  # nosec B603 (this Python, the generator just written, no shell)
        [sys.executable, "generate.py"], cwd=target, capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        raise UsageError(
            f"the project is written, but its sample data is not: python generate.py failed in "
            f"{args.directory}: {(made.stderr or made.stdout).strip().splitlines()[-1:]}"
        )
    where = args.directory if args.directory != "." else "the current folder"
    print(f"created {name} ({args.template}) in {where}: {', '.join(written)}, {data}")
    print("next:")
    if args.directory != ".":
        print(f"  cd {args.directory}")
    print("  pipeflow check pipeline.yaml")
    print("  pipeflow run pipeline.yaml")
    print(f"  pipeflow models show {name}")
    print(f"  pipeflow serve {name}@production")
    return _common.EXIT_OK


def _template(relpath: str) -> str:
    from importlib.resources import files

    return files("pipeflow").joinpath("templates", *relpath.split("/")).read_text(encoding="utf-8")


def _fill(text: str, words: dict[str, str]) -> str:
    for key, value in words.items():
        text = text.replace("{{" + key + "}}", value)
    return text
