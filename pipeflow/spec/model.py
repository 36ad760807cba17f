"""The spec grammar as pydantic models: what a user may write, and nothing else.

Every model forbids unknown keys, so a typo such as ``retires: 2`` is an error (with a
did-you-mean) rather than a silently ignored setting. Stage ``with:`` blocks are kept as plain
mappings here and validated by the compiler against each stage type's own ``Config`` model,
because which fields are valid depends on the installed stage types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

PipelineName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100)]
StageName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$", max_length=100)]
# "stage" (its default output) or "stage.port"
InputRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[A-Za-z0-9_]+)?$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


ExecutorKind = Literal["sync", "threads", "processes", "distributed"]
#: ``module:attribute`` of a cluster factory: a dotted module path, a colon, a dotted attribute
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class AdaptSpec(_Strict):
    """Bounds of a cluster that scales itself (Dask's ``cluster.adapt(minimum=, maximum=)``)."""

    minimum: int = Field(
        1, ge=1, description="workers kept for the run (the cluster lives for one run only)"
    )
    maximum: int = Field(ge=1, description="most workers the cluster may grow to")

    @model_validator(mode="after")
    def _ordered(self) -> AdaptSpec:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is above maximum ({self.maximum})")
        return self


class ExecutorSpec(_Strict):
    """Where stages run. ``threads`` on the local machine unless told otherwise.

    For ``distributed``, at most one of ``address`` (a running scheduler) and ``cluster`` (a
    factory pipeflow calls with ``options`` to start a cluster for the run); each field is
    checked as it is read, so an error points at the field that is wrong.
    """

    kind: ExecutorKind = "threads"
    address: str | None = Field(
        None,
        description="Scheduler address for kind=distributed (else env PIPEFLOW_DASK_ADDRESS; none = LocalCluster)",
    )
    workers: int | None = Field(
        None, ge=1, description="Worker count for threads/processes or a LocalCluster"
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="Threads per LocalCluster worker"
    )
    cluster: str | None = Field(
        None,
        description="Cluster factory 'module:attribute' started for a distributed run, e.g. dask_kubernetes.operator:KubeCluster",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the cluster factory"
    )
    adapt: AdaptSpec | None = Field(
        None, description="adaptive scaling {minimum, maximum} of the cluster pipeflow starts"
    )

    @field_validator("address", "cluster", "adapt")
    @classmethod
    def _distributed_only(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind != "distributed":
            raise ValueError(
                f"{info.field_name} is only used by kind 'distributed' (kind is '{kind}')"
            )
        return value

    @field_validator("cluster")
    @classmethod
    def _factory(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not _FACTORY.fullmatch(value):
            raise ValueError(
                "expected 'module:attribute' (a module path, a colon, a callable), "
                f"e.g. 'dask_kubernetes.operator:KubeCluster', got {value!r}"
            )
        if info.data.get("address"):
            raise ValueError(
                "address and cluster are exclusive: connect to a running scheduler, or start one"
            )
        sized = [f for f in ("workers", "threads_per_worker") if info.data.get(f)]
        if sized:
            raise ValueError(
                f"{' and '.join(sized)} size pipeflow's own LocalCluster: size a cluster from a "
                "factory with its options (e.g. n_workers) or adapt"
            )
        return value

    @field_validator("options")
    @classmethod
    def _options_need_cluster(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if value and not info.data.get("cluster"):
            raise ValueError("options are the keyword arguments of a cluster factory: set cluster")
        return value

    @field_validator("adapt")
    @classmethod
    def _adapt_needs_own_cluster(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("address"):
            raise ValueError(
                "adapt scales a cluster pipeflow starts (cluster, or its LocalCluster), "
                "not a running scheduler at address"
            )
        return value


class StoreSpec(_Strict):
    """Where artifacts (any fsspec URL) and run metadata (SQLite, or PostgreSQL for a team) live."""

    root: str | None = Field(
        None, description="fsspec URL or path; default .pipeflow/ beside the spec"
    )
    metadata: str | None = Field(
        None,
        description="sqlite:///path or postgresql://user@host/db (password from the "
        "environment); default <spec dir>/.pipeflow/pipeflow.db",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, description="passed to fsspec")

    @field_validator("metadata")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is None or "://" not in value or value.startswith("sqlite:///"):
            return value
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "expected sqlite:///path/to/file.db, a file path, or postgresql://user@host/db"
            )
        return value


class TriggersSpec(_Strict):
    """What re-runs this pipeline unattended under ``pipeflow watch`` (pipeflow.runner.watch)."""

    schedule: str | None = Field(None, description="cron expression")
    on_data_change: list[StageName] = Field(
        default_factory=list,
        description="stages whose source (ingest file, python module) is watched",
    )
    on_drift: StageName | None = Field(
        None, description="a monitor stage: drift or an alert starts a run"
    )


class StageSpec(_Strict):
    """One node of the pipeline: a stage type, its wiring and its configuration."""

    type: Annotated[str, StringConstraints(min_length=1)]
    description: str | None = Field(None, description="free text")
    inputs: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$")], InputRef] = Field(
        default_factory=dict, description="input port -> 'stage' or 'stage.port'"
    )
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="the stage type's config"
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Dask worker resources, e.g. {GPU: 1}"
    )
    retries: int = Field(0, ge=0, le=100, description="extra attempts after a failure")
    timeout_s: float | None = Field(
        None, gt=0, description="fail the attempt after this many seconds"
    )
    cache: bool = Field(True, description="false: always re-run this stage")


class PipelineSpec(_Strict):
    """A whole pipeline file."""

    pipeline: PipelineName = Field(description="the pipeline's name; runs are grouped by it")
    description: str | None = Field(None, description="free text")
    params: dict[str, Any] = Field(
        default_factory=dict, description="values referenced as ${params.name} anywhere below"
    )
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="where stages run")
    store: StoreSpec = Field(
        default_factory=StoreSpec, description="where artifacts and run metadata live"
    )
    triggers: TriggersSpec = Field(
        default_factory=TriggersSpec, description="what re-runs the pipeline under pipeflow watch"
    )
    stages: dict[StageName, StageSpec] = Field(min_length=1, description="stage name -> stage")
