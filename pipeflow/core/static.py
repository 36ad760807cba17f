"""Static checks of a compiled pipeline: what ``pipeflow check`` finds beyond the graph.

Compiling proves the stages fit together (types, config grammar, wiring, kinds, cycles). A spec
can still fail minutes into a run on things that are knowable before it starts: a misspelt
function of a ``python`` stage, an estimator class or parameter that does not exist, an input
file that is not there, a promotion gate on a metric the evaluation never produces. Each stage
type says what it can check through :meth:`Stage.check_config` — without running user code or
reading data: modules are parsed (not imported), library classes are imported (not user
modules), files are looked up on their filesystem — and each finding becomes a
:class:`~pipeflow.errors.Problem` at the file:line:column of the field it is about.

``pipeflow run`` does not run these checks: a cached re-run must not import scikit-learn to
re-check an estimator it will not fit; a stage that runs finds the same fault and says so.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from pipeflow.core.compiler import Pipeline
from pipeflow.core.stage import CheckContext, Upstream
from pipeflow.errors import Problem

__all__ = ["defined_names", "hint", "static_problems"]


def static_problems(pipeline: Pipeline) -> list[Problem]:
    """Every problem each stage's :meth:`~pipeflow.core.stage.Stage.check_config` reports."""
    source = pipeline.loaded.source
    base_dir = pipeline.loaded.base_dir
    problems: list[Problem] = []
    for name in pipeline.order:
        st = pipeline.stages[name]
        upstream = {
            port: Upstream(
                w.source, pipeline.stages[w.source].cls, pipeline.stages[w.source].config
            )
            for port, w in st.inputs.items()
            if w.source in pipeline.stages
        }
        found = st.cls.check_config(st.config, CheckContext(base_dir, upstream))
        for field, message in found:
            path = ("stages", name, "with", *field.split("."))
            problems.append(Problem(message, source.where(path), stage=name, field=field))
    return problems


# -- helpers for the stage types' checks ------------------------------------------------------


def defined_names(path: Path) -> set[str] | None:
    """The names a Python module binds at its top level, read from its source without running
    it (functions, classes, assignments, imports, also under top-level ``if``/``try``), or None
    where that cannot be known (unparsable, ``import *``, a module ``__getattr__``). Parsed once
    per version of the file (1000 stages calling one module parse it once)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return _defined_names(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _defined_names(path: Path, mtime_ns: int, size: int) -> set[str] | None:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
                blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
                blocks += [h.body for h in getattr(node, "handlers", [])]
                if not all(visit(block) for block in blocks):
                    return False
        return True

    if not visit(tree.body) or "__getattr__" in names:
        return None
    return names


def hint(word: str, options: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or nothing."""
    from pipeflow.spec.load import did_you_mean

    return did_you_mean(word, options)
