"""The stage-type contract: one small ABC that built-ins and plugins implement alike.

A stage type declares

- ``Config``: a pydantic model for its ``with:`` block (extra keys forbidden, as
  :class:`StageConfig` declares them);
- its ports: ``inputs`` / ``outputs`` map port names to :class:`Port` (an artifact kind and
  whether it is required). Types whose ports depend on the config (the ``python`` stage)
  override :meth:`Stage.input_ports` / :meth:`Stage.output_ports`; ``extra_inputs`` lets a type
  accept input names it does not know in advance;
- ``version``: bump it when the type's behaviour changes, so cached results are not reused;
- :meth:`Stage.run`: takes the context and the loaded inputs, returns ``{port: object}``.

The compiler knows a stage type only through these declarations; the executor only calls
``run``. Nothing here imports Dask, YAML or the store, so a plugin depends on a tiny surface.
``pipeflow.testing.StageContract`` is the test mixin that proves an implementation honours it.
Field types that several built-in configs share (:data:`RowShare`, :data:`Keywords`,
:data:`ModelAlias`) are declared here too.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from pipeflow.core.entrypoints import before_models
from pipeflow.core.progress import StageMonitor
from pipeflow.core.tracking import Tracker

before_models()  # the entry points read once for pydantic's plugins and pipeflow's groups


@dataclass(frozen=True)
class Port:
    """A named input or output of a stage: its artifact kind and whether it must be wired."""

    kind: str = "any"
    required: bool = True
    description: str = ""


#: a ``with:`` field holding a share of a stage's rows, strictly between 0 and 1 (split's
#: ``test_size``, promote's ``bias.mitigate.validation``): declared once, so each refuses 0 and 1
#: alike; the field adds its default and description
RowShare = Annotated[float, Field(gt=0, lt=1)]
#: a ``with:`` field of keyword arguments a stage hands on as they are (python's ``kwargs``, train's
#: estimator ``params``, ingest's ``read_options`` and fsspec ``storage_options``): a mapping,
#: none by default; the field adds its description
Keywords = Annotated[dict[str, Any], Field(default_factory=dict)]
#: a ``with:`` field naming a registered model as ``NAME@ALIAS`` (the ``@ALIAS`` optional): the
#: ``model`` of the monitor and serve stages
ModelAlias = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_.-]+)?$", description="NAME@ALIAS")
]


class StageConfig(BaseModel):
    """A ``with:`` block, or a part of one: a key it does not declare is an error (a misspelt
    setting must not be dropped in silence). The built-in types' configs, and their parts, derive
    from it; a plugin's may."""

    model_config = ConfigDict(extra="forbid")


class EmptyConfig(StageConfig):
    """Config of a stage type that takes no ``with:`` settings."""


@functools.cache
def _stage_logger() -> logging.Logger:
    """``logging.getLogger("pipeflow.stage")``, asked once: a context is made per attempt of
    every stage, and each ``getLogger`` takes logging's module lock."""
    return logging.getLogger("pipeflow.stage")


@dataclass
class StageContext:
    """What a running stage may use besides its inputs."""

    run_id: str
    stage: str
    params: Mapping[str, Any]
    base_dir: Path
    attempt: int = 1
    #: where the spec folder's Python code is imported from: ``base_dir``, or on a worker that
    #: got the code through the store, the folder it was unpacked to (``pipeflow.execute.bundle``)
    code_dir: Path | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    #: the run's artifact store (``pipeflow.store.ArtifactStore``): ``save(obj)`` / ``load(ref)``
    store: Any = None
    #: the pipeline's name and, per input port, the stored artifact it was loaded from
    #: (``ArtifactRef``: its ``digest`` is the content fingerprint, for lineage)
    pipeline: str = ""
    input_refs: Mapping[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=_stage_logger)
    #: what this attempt logged (:mod:`pipeflow.core.tracking`): recorded with the stage
    tracker: Tracker = field(default_factory=Tracker)
    #: this stage's log and its channel to the live display (:mod:`pipeflow.core.progress`)
    monitor: StageMonitor | None = None

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the stage is: ``done`` of ``total`` (units of the stage's choosing:
        trials, epochs, rows; ``total`` None when unknown) and an optional short ``message``.
        Cheap enough to call in a loop: rate-limited, and a no-op where nobody watches (no
        terminal). Shown live by ``pipeflow run`` on a terminal; not stored.
        See :mod:`pipeflow.core.progress`."""
        if self.monitor is None:
            self.monitor = StageMonitor(self.stage)
        self.monitor.progress(done, total, message)

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record ``value`` of metric ``name`` at ``step`` (default: one after the metric's last
        step in this stage, 0 first), like ``mlflow.log_metric``. See :mod:`pipeflow.core.tracking`."""
        self.tracker.log_metric(name, value, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """:meth:`log_metric` for each entry of ``metrics``."""
        for name, value in metrics.items():
            self.tracker.log_metric(name, value, step)

    def log_param(self, name: str, value: Any) -> None:
        """Record a param of this stage (kept as text), like ``mlflow.log_param``; logging it
        again with another value is an error."""
        self.tracker.log_param(name, value)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """:meth:`log_param` for each entry of ``params``."""
        for name, value in params.items():
            self.tracker.log_param(name, value)


@dataclass
class CheckContext:
    """What ``pipeflow check`` knows about a stage besides its config, without running anything:
    the spec's folder, and per input port the type and config of the stage that feeds it."""

    base_dir: Path
    upstream: Mapping[str, Upstream] = field(default_factory=dict)


@dataclass(frozen=True)
class Upstream:
    """The stage feeding an input port, as ``pipeflow check`` sees it."""

    stage: str
    cls: type[Stage]
    config: BaseModel


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Stage(ABC, Generic[ConfigT]):
    """Base class of every stage type, generic over its config: ``class Train(Stage[TrainConfig])``
    makes ``self.config`` a ``TrainConfig`` for type checkers (``Config`` names the same class
    for the compiler, which validates the spec's ``with:`` block with it)."""

    #: Bump when results of the same config and inputs would differ: invalidates the cache.
    version: ClassVar[str] = "1"
    #: validates the spec's ``with:`` block; by default the type argument (``Stage[TrainConfig]``)
    Config: ClassVar[type[BaseModel]] = EmptyConfig
    inputs: ClassVar[Mapping[str, Port]] = {}
    outputs: ClassVar[Mapping[str, Port]] = {"out": Port("any")}
    #: If set, input names not in ``inputs`` are accepted with this port description.
    extra_inputs: ClassVar[Port | None] = None
    #: The output a bare ``stage`` reference means when there are several (e.g. ``valid``).
    default_port: ClassVar[str | None] = None
    #: False for types that act on the world rather than compute a value (``serve``): they run
    #: every time, as if the spec said ``cache: false``.
    cacheable: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``class Train(Stage[TrainConfig])`` is all a type says about its config: ``Config``
        is taken from the type argument unless the class sets it itself."""
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            return
        for base in cls.__dict__.get("__orig_bases__", ()):
            args = get_args(base)
            origin = get_origin(base)
            generic = isinstance(origin, type) and issubclass(origin, Stage)
            config = args[0] if generic and args else None
            if isinstance(config, type) and issubclass(config, BaseModel):
                cls.Config = config

    def __init__(self, config: ConfigT):
        self.config: ConfigT = config

    @classmethod
    def input_ports(cls, config: BaseModel) -> Mapping[str, Port]:
        return cls.inputs

    @classmethod
    def output_ports(cls, config: BaseModel) -> Mapping[str, Port]:
        return cls.outputs

    @classmethod
    def default_output(cls, config: BaseModel) -> str | None:
        """The port a bare ``stage`` reference means: ``default_port``, the only output, or the
        one named ``out``."""
        ports = cls.output_ports(config)
        if cls.default_port is not None and cls.default_port in ports:
            return cls.default_port
        if len(ports) == 1:
            return next(iter(ports))
        return "out" if "out" in ports else None

    @classmethod
    def fingerprint(cls, config: BaseModel, base_dir: Path) -> str:
        """Extra material for the cache key (e.g. the source of user code). Default: none."""
        return ""

    @classmethod
    def store_fingerprint(cls, config: BaseModel, store: Any) -> str:
        """Extra cache-key material read from the run's store (the model version an alias
        points at, for ``predict``), so a stage following something that moves re-runs when it
        moves. Default: none."""
        return ""

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        """What is wrong with ``config`` that shows without running user code or reading data
        (``pipeflow check``): ``(field, message)`` pairs, ``field`` a dotted path under
        ``with:``. Reading the spec's files, parsing a module, importing a library class: yes;
        importing the user's modules or loading the data: no. Default: nothing to check."""
        return []

    @abstractmethod
    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        """Compute the outputs: a mapping with one entry per declared output port."""


class Action(Stage[ConfigT]):
    """A stage type that acts on the world (starts a server, measures live traffic) rather than
    computing a value: it runs every time, as if the spec said ``cache: false``, and its optional
    ``after`` input orders it after any stage without passing it anything."""

    cacheable: ClassVar[bool] = False
    inputs: ClassVar[Mapping[str, Port]] = {
        "after": Port("any", required=False, description="a stage to wait for (e.g. promote)")
    }
