"""The house rules that no single module can check: the public surface is what the docs promise,
every name of it resolves, no module imports itself in a circle, and Dask is spoken to in one
place (its private modules in one module of it). (The floors themselves are import-linter's ``layers`` contract in pyproject.toml, run by
``make test``.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pipeflow

PACKAGE = Path(pipeflow.__file__).parent

PUBLIC = {
    # run a pipeline
    "load",
    "loads",
    "compile",
    "plan",
    "run",
    "RunReport",
    "RunState",
    "StageState",
    # write a stage type
    "Stage",
    "Port",
    "StageContext",
    "StageRegistry",
    # stores and the workspace
    "open_store",
    "open_workspace",
    "Workspace",
    "ArtifactStore",
    "MetadataDB",
    "open_metadata",
    "DaskExecutor",
    # after training: the registry, serving, batch inference, monitoring
    "Registry",
    "create_app",
    "ServeConfig",
    "predict_file",
    "monitor",
    # errors
    "PipeflowError",
    "SpecError",
    "GraphError",
    "StageError",
    "StoreError",
    "UsageError",
    "__version__",
}


def test_the_public_surface_is_pinned_and_every_name_resolves() -> None:
    assert set(pipeflow.__all__) == PUBLIC
    for name in sorted(PUBLIC):
        assert getattr(pipeflow, name) is not None, name
    assert sorted(dir(pipeflow)) == sorted(PUBLIC)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The pipeflow modules a file imports, lazy imports included (``if TYPE_CHECKING:`` blocks
    left out: annotations are not dependencies). ``from pkg import mod`` imports ``pkg.mod``;
    ``from pkg import name`` imports ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeflow.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeflow."):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else str(node.module))
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_no_module_imports_itself_in_a_circle() -> None:
    import networkx as nx

    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for target in _imports(path, set(modules)):
            if target in modules and target != name:
                graph.add_edge(name, target)
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


def test_no_module_of_the_package_is_over_600_lines() -> None:
    """A module that grows past this is doing more than one job: split it by job, as serving/,
    scoring/ and runner/ were."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def _private_dask(path: Path) -> set[str]:
    """The private modules of Dask or distributed (a dotted part after the first that starts with
    an underscore) a file imports, lazy imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            private = [a.name for a in node.names if a.name.startswith("_")]  # a module, perhaps
            names = [node.module, *(f"{node.module}.{name}" for name in private)]
        else:
            continue
        for name in names:
            root, *rest = name.split(".")
            if root in ("dask", "distributed") and any(p.startswith("_") for p in rest):
                found.add(name)
    return found


def test_a_private_dask_module_is_reached_from_one_module_only() -> None:
    """``dask._task_spec`` may change in any Dask release: one module uses it, and says what
    breaks if it does, so a Dask upgrade has one place to look."""
    found = {name: got for name, path in _modules().items() if (got := _private_dask(path))}
    assert found == {"pipeflow.execute.cluster.task_spec": {"dask._task_spec"}}
