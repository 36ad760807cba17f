"""compile: a validated spec -> a DAG of typed, configured stages.

Everything that can be known before running is checked here, and all problems of a spec are
reported together, each with its file position:

- the stage type exists (else: the installed types, and a did-you-mean);
- its ``with:`` block validates against the type's ``Config`` (positions inside ``with:``);
- each input names an existing stage and an existing output port of it, the bare form ``stage``
  is unambiguous, and the input port exists on the consuming type;
- the produced kind fits the accepted kind (both stages and both kinds named);
- every required input port is wired;
- there is no cycle (the message lists the cycle's stages in order).

The compiler never imports user code (``python`` stage functions are imported when they run).

The DAG is kept as plain adjacency (``Pipeline.edges``, successors and predecessors by name):
topological order, the cycle check and ``upstream``/``downstream`` are a few lines each, and
importing networkx costs more than compiling a 1000-stage spec (a fifth of a second; it is most
of what ``pipeflow run`` waits for before anything runs). ``Pipeline.graph``, the same DAG as a
``networkx.DiGraph`` (nodes with their ``stage``, edges with their ``ports``), is built on first
use, and a cyclic spec's error asks networkx for the cycle to name.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from pipeflow.core import kinds
from pipeflow.core.stage import Port, Stage
from pipeflow.core.stage_types import (
    StageRegistry,
    StageTypeLoadError,
    UnknownStageType,
    default_registry,
)
from pipeflow.errors import GraphError, Problem, SpecError
from pipeflow.spec.load import did_you_mean, validation_problems

if TYPE_CHECKING:
    import networkx as nx

    from pipeflow.spec.load import LoadedSpec
    from pipeflow.spec.model import StageSpec


@dataclass(frozen=True)
class Wire:
    """An edge: output ``source.source_port`` feeds input ``port`` of the consuming stage."""

    port: str
    source: str
    source_port: str
    kind: str


@dataclass(frozen=True)
class CompiledStage:
    name: str
    type: str
    cls: type[Stage]
    config: BaseModel
    spec: StageSpec
    inputs: Mapping[str, Wire]
    input_ports: Mapping[str, Port]
    output_ports: Mapping[str, Port]
    #: the output a bare ``stage`` reference means (``cls.default_output(config)``), or None
    default_output: str | None = None

    @property
    def upstream(self) -> list[str]:
        return sorted({w.source for w in self.inputs.values()})


@dataclass
class Pipeline:
    """The compiled DAG: ``stages`` by name, their topological ``order``, and ``edges``
    (source, destination, ``[(source_port, port), ...]``) in the order they were wired."""

    loaded: LoadedSpec
    stages: dict[str, CompiledStage]
    order: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.loaded.spec.pipeline

    @functools.cached_property
    def position(self) -> dict[str, int]:
        """Stage name -> its index in the topological ``order`` (for stable listings)."""
        return {name: i for i, name in enumerate(self.order)}

    @functools.cached_property
    def successors(self) -> dict[str, list[str]]:
        return _adjacency(self.stages, ((u, v) for u, v, _ in self.edges))

    @functools.cached_property
    def predecessors(self) -> dict[str, list[str]]:
        return _adjacency(self.stages, ((v, u) for u, v, _ in self.edges))

    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """The DAG as a ``networkx.DiGraph``: nodes (in spec order) carry their compiled
        ``stage``, edges the ``ports`` they wire. Built on first use."""
        import networkx as nx

        graph = nx.DiGraph()
        for name in self.loaded.spec.stages:
            graph.add_node(name, stage=self.stages[name])
        for u, v, ports in self.edges:
            graph.add_edge(u, v, ports=list(ports))
        return graph

    def downstream(self, name: str) -> set[str]:
        return _reachable(self.successors, name)

    def upstream(self, name: str) -> set[str]:
        return _reachable(self.predecessors, name)


def _adjacency(nodes: Mapping[str, Any], pairs: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in nodes}
    for u, v in pairs:
        out[u].append(v)
    return out


def _reachable(adjacency: Mapping[str, list[str]], start: str) -> set[str]:
    """The nodes reachable from ``start`` (networkx's ``descendants``); an unknown name is an
    error, not an empty set."""
    if start not in adjacency:
        raise KeyError(f"no stage named {start!r}")
    seen: set[str] = set()
    todo = list(adjacency[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(adjacency[node])
    return seen


def compile_pipeline(loaded: LoadedSpec, registry: StageRegistry | None = None) -> Pipeline:
    """Compile a loaded spec; raises :class:`GraphError` listing every problem found."""
    registry = registry or default_registry()
    spec = loaded.spec
    source = loaded.source
    problems: list[Problem] = []
    partial: dict[str, tuple[type[Stage], BaseModel, StageSpec]] = {}
    out_ports_of: dict[str, dict[str, Port]] = {}
    default_of: dict[str, str | None] = {}

    for name, st in spec.stages.items():
        path = ("stages", name)
        try:
            cls = registry.get(st.type)
        except UnknownStageType as err:
            problems.append(
                Problem(str(err), source.where((*path, "type")), stage=name, field="type")
            )
            continue
        except StageTypeLoadError as err:
            problems.append(
                Problem(str(err), source.where((*path, "type")), stage=name, field="type")
            )
            continue
        try:
            config = cls.Config.model_validate(st.with_)
        except ValidationError as err:
            problems.extend(
                validation_problems(err, source, (*path, "with"), cls.Config, stage=name)
            )
            continue
        partial[name] = (cls, config, st)
        out_ports_of[name] = dict(cls.output_ports(config))
        default_of[name] = cls.default_output(config)

    # edges in the order they are wired: (source, destination) -> [(source_port, port), ...]
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    compiled: dict[str, CompiledStage] = {}
    for name, (cls, config, st) in partial.items():
        in_ports = dict(cls.input_ports(config))
        wires: dict[str, Wire] = {}
        for port, ref in st.inputs.items():
            at = ("stages", name, "inputs", port)  # its position is looked up for a problem only
            field_name = f"inputs.{port}"
            accepted = in_ports.get(port) or cls.extra_inputs
            if accepted is None:
                hint = did_you_mean(port, list(in_ports))
                known = ", ".join(in_ports) or "none"
                problems.append(
                    Problem(
                        f"stage type '{st.type}' has no input port '{port}'{hint} (its inputs: {known})",
                        source.where(at, key=True),
                        name,
                        field_name,
                    )
                )
                continue
            src, _, src_port = ref.partition(".")
            if src not in spec.stages:
                hint = did_you_mean(src, list(spec.stages))
                problems.append(
                    Problem(
                        f"input refers to stage '{src}', which does not exist{hint}",
                        source.where(at),
                        name,
                        field_name,
                    )
                )
                continue
            if src == name:
                problems.append(
                    Problem(
                        f"stage '{name}' cannot take its own output as input (cycle: {name} -> {name})",
                        source.where(at),
                        name,
                        field_name,
                    )
                )
                continue
            if src not in partial:
                continue  # that stage already has its own error; don't pile on
            out_ports = out_ports_of[src]
            if not src_port:
                default = default_of[src]
                if default is None:
                    problems.append(
                        Problem(
                            f"stage '{src}' has several outputs ({', '.join(out_ports)}): write '{src}.<port>'",
                            source.where(at),
                            name,
                            field_name,
                        )
                    )
                    continue
                src_port = default
            if src_port not in out_ports:
                hint = did_you_mean(src_port, list(out_ports))
                problems.append(
                    Problem(
                        f"stage '{src}' has no output port '{src_port}'{hint} (its outputs: {', '.join(out_ports) or 'none'})",
                        source.where(at),
                        name,
                        field_name,
                    )
                )
                continue
            produced = out_ports[src_port].kind
            if not kinds.compatible(produced, accepted.kind):
                problems.append(
                    Problem(
                        f"kind mismatch: stage '{src}' output '{src_port}' produces '{produced}', "
                        f"but stage '{name}' input '{port}' expects '{accepted.kind}'",
                        source.where(at),
                        name,
                        field_name,
                    )
                )
                continue
            wires[port] = Wire(port, src, src_port, produced)
            edges.setdefault((src, name), []).append((src_port, port))
        for port, p in in_ports.items():
            if p.required and port not in st.inputs:
                problems.append(
                    Problem(
                        f"required input '{port}' (kind '{p.kind}') of stage type '{st.type}' is not wired",
                        source.where(("stages", name)),
                        name,
                        "inputs",
                    )
                )
        compiled[name] = CompiledStage(
            name, st.type, cls, config, st, wires, in_ports, out_ports_of[name], default_of[name]
        )

    order = _topological_order(spec.stages, edges)
    cycle = _cycle(spec.stages, edges) if order is None else []
    if cycle:
        chain = " -> ".join([*cycle, cycle[0]])
        first = cycle[0]
        problems.append(
            Problem(
                f"cycle between stages: {chain}",
                source.where(("stages", first, "inputs")),
                first,
                "inputs",
            )
        )

    problems += _trigger_problems(loaded, compiled, source)
    if problems:
        raise GraphError(_dedupe(problems))
    # order is None only for a cycle, which is a problem raised above
    return Pipeline(
        loaded, compiled, order or [], [(u, v, ports) for (u, v), ports in edges.items()]
    )


def _trigger_problems(loaded: LoadedSpec, compiled: dict[str, Any], source: Any) -> list[Problem]:
    """``triggers:`` name stages: ``on_data_change`` stages whose source can be fingerprinted,
    ``on_drift`` a stage that monitors (an output named ``report``). A named stage that is in the
    spec but did not compile is left to its own problem."""
    triggers = loaded.spec.triggers
    problems = []
    for i, name in enumerate(triggers.on_data_change):
        st = compiled.get(name)
        at = ("triggers", "on_data_change", i)
        if name not in loaded.spec.stages:
            problems.append(
                Problem(
                    f"triggers.on_data_change names no stage '{name}'",
                    source.where(at),
                    None,
                    "triggers",
                )
            )
        elif st is not None and st.cls.fingerprint.__func__ is Stage.fingerprint.__func__:  # type: ignore[attr-defined]
            problems.append(
                Problem(
                    f"triggers.on_data_change: stage '{name}' ({st.type}) has no source to watch; "
                    "expected a stage that reads data, such as ingest",
                    source.where(at),
                    name,
                    "triggers",
                )
            )
    if triggers.on_drift:
        st = compiled.get(triggers.on_drift)
        at = ("triggers", "on_drift")
        if triggers.on_drift not in loaded.spec.stages:
            problems.append(
                Problem(
                    f"triggers.on_drift names no stage '{triggers.on_drift}'",
                    source.where(at),
                    None,
                    "triggers",
                )
            )
        elif st is not None and "report" not in st.output_ports:
            problems.append(
                Problem(
                    f"triggers.on_drift: stage '{triggers.on_drift}' ({st.type}) does not monitor; "
                    "expected a monitor stage",
                    source.where(at),
                    triggers.on_drift,
                    "triggers",
                )
            )
    return problems


def _topological_order(
    nodes: Mapping[str, Any], edges: Mapping[tuple[str, str], Any]
) -> list[str] | None:
    """The nodes in topological order, the smallest name first among those ready (networkx's
    ``lexicographical_topological_sort``); None if there is a cycle."""
    successors: dict[str, list[str]] = {name: [] for name in nodes}
    waiting = dict.fromkeys(nodes, 0)
    for u, v in edges:
        successors[u].append(v)
        waiting[v] += 1
    ready = [name for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for v in successors[name]:
            waiting[v] -= 1
            if waiting[v] == 0:
                heapq.heappush(ready, v)
    return order if len(order) == len(waiting) else None


def _cycle(nodes: Mapping[str, Any], edges: Mapping[tuple[str, str], Any]) -> list[str]:
    """The stages of one cycle, in order (networkx's ``find_cycle``: only on the error path)."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    try:
        found = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return []
    return [u for u, _ in found]


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """Distinct problems in file order (as an editor's problem list shows them)."""
    seen: set[str] = set()
    out = []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)

    def position(p: Problem) -> tuple:
        loc = p.location
        return (
            loc is None,
            getattr(loc, "file", ""),
            getattr(loc, "line", None) or 0,
            getattr(loc, "column", None) or 0,
        )

    return sorted(out, key=position)


def check(loaded: LoadedSpec, registry: StageRegistry | None = None) -> Pipeline:
    """Alias of :func:`compile_pipeline` for readability at call sites."""
    return compile_pipeline(loaded, registry)


def describe_type(cls: type[Stage], config: BaseModel | None = None) -> dict[str, Any]:
    """Ports and config fields of a stage type (for ``pipeflow stages``)."""
    fields = {}
    for fname, f in cls.Config.model_fields.items():
        fields[f.alias or fname] = {
            "type": _type_name(f.annotation),
            "required": f.is_required(),
            "default": None if f.is_required() else repr(f.get_default(call_default_factory=True)),
            "description": f.description or "",
        }
    inputs, outputs = cls.inputs, cls.outputs
    try:  # ports derived from the config: show them for the config's defaults
        sample = config if config is not None else cls.Config.model_construct()
        inputs, outputs = cls.input_ports(sample), cls.output_ports(sample)
    except Exception:  # a type whose ports need required settings: its class defaults
        pass
    return {
        "version": cls.version,
        "description": (cls.description or (cls.__doc__ or "").strip().split("\n")[0]),
        "inputs": {k: {"kind": p.kind, "required": p.required} for k, p in inputs.items()},
        "extra_inputs": None if cls.extra_inputs is None else cls.extra_inputs.kind,
        "outputs": {k: {"kind": p.kind} for k, p in outputs.items()},
        "config": fields,
    }


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) or str(tp)
    return text.replace("typing.", "")


__all__ = [
    "CompiledStage",
    "Pipeline",
    "SpecError",
    "Wire",
    "check",
    "compile_pipeline",
    "describe_type",
]
