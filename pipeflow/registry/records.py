"""The registry's records as types: a registered version and the lineage of one.

A version record is JSON in the store (``registry/<model>/versions/<n>.json``), written by the
``promote`` stage and ``pipeflow models``; records written by earlier releases, or by hand, may
lack keys or hold another shape. Readers that draw a record (the model card) read it through
these types instead of probing dicts: :meth:`VersionRecord.read` never fails. A key of the wrong
shape reads as "not recorded" (its default), a list keeps only its items that are records, and
keys these types do not name are kept (``extra``), so nothing written is lost on the way.

Leaves shown as they were written (a metric, a count, a digest) stay ``Any``: the card prints
what was recorded, and decides itself whether a value is a number.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from pipeflow.store.artifacts import ArtifactRef, ArtifactStore


def _only_records(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list | tuple) else []


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dict_or_none(value: Any) -> Any:
    return value if isinstance(value, dict) and value else None


def _bool_or_none(value: Any) -> Any:
    return value if isinstance(value, bool) else None


T = TypeVar("T")
#: a list of records of one part type; anything else in it is left out
RecordsOf = Annotated[list[T], BeforeValidator(_only_records)]
#: a part that may be absent: a mapping with keys, else None
PartOr = Annotated[T | None, BeforeValidator(_dict_or_none)]
#: a list, or nothing
Items = Annotated[list[Any], BeforeValidator(_as_list)]
#: a mapping, or nothing
Mapping = Annotated[dict[str, Any], BeforeValidator(_as_dict)]


class Loose(BaseModel):
    """A record part read leniently: a part that is not a mapping reads as empty, a field of the
    wrong shape as its default, and unnamed keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {}

    @field_validator("*", mode="wrap")
    @classmethod
    def _or_default(cls, value: Any, handler: Any, info: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)

    def get(self, key: str, default: Any = None) -> Any:
        """A key as written, named field or not."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key, default)

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelRef(Loose):
    digest: Any = None
    codec: Any = None
    kind: Any = None
    size: Any = None


class DataRefs(Loose):
    train: Any = None
    evaluation: Any = None
    rows_train: Any = None
    rows_evaluation: Any = None


class ColumnSummary(Loose):
    name: Any = "?"
    dtype: Any = None
    missing: Any = None
    distinct: Any = None
    min: Any = None
    max: Any = None
    mean: Any = None


class TargetSummary(Loose):
    name: Any = "?"
    distribution: Mapping = {}


class DataSummary(Loose):
    rows: Any = None
    columns: RecordsOf[ColumnSummary] = []
    target: TargetSummary = TargetSummary()


class ConfusionMatrix(Loose):
    labels: Items = []
    matrix: Items = []


class Metrics(Loose):
    """Overall metrics are the open keys (``accuracy``, ``r2``, ...); the named ones are parts."""

    per_class: Mapping = {}
    confusion_matrix: ConfusionMatrix = ConfusionMatrix()
    calibration: Mapping = {}
    slices: Mapping = {}


class Bias(Loose):
    """The differences (``demographic_parity_difference``, ...) are the open keys."""

    attribute: Any = None
    groups: Mapping = {}
    classes: Items = []
    min_rows: Any = None


class FeatureImportance(Loose):
    name: Any = "?"
    mean: Any = None
    std: Any = None
    mean_abs: Any = None


class Contributions(Loose):
    method: Any = None
    error: Any = None
    features: RecordsOf[FeatureImportance] = []


class Importance(Loose):
    method: Any = None
    scoring: Any = None
    rows: Any = None
    n_repeats: Any = None
    features: RecordsOf[FeatureImportance] = []
    contributions: PartOr[Contributions] = None


class Gate(Loose):
    kind: Any = None
    gate: Any = None
    metric: Any = None
    op: Any = None
    threshold: Any = None
    passed: Annotated[bool | None, BeforeValidator(_bool_or_none)] = None
    detail: Any = None
    value: Any = None


class RunRef(Loose):
    run_id: Any = None
    pipeline: Any = None
    stage: Any = None
    spec_path: Any = None


class SignatureFeature(Loose):
    name: Any = "?"
    dtype: Any = None


class SignatureRecord(Loose):
    features: RecordsOf[SignatureFeature] = []
    classes: Items = []


class VersionRecord(Loose):
    """One registered version, as the registry wrote it."""

    name: Any = "?"
    version: Any = "?"
    created: Any = None
    user: Any = None
    host: Any = None
    estimator: Any = None
    task: Any = None
    target: Any = None
    description: Any = None
    intended_use: Any = None
    model: ModelRef = ModelRef()
    data: DataRefs = DataRefs()
    data_summary: PartOr[DataSummary] = None
    metrics: Metrics = Metrics()
    bias: PartOr[Bias] = None
    bias_limits: Mapping = {}
    importance: Importance = Importance()
    gates: RecordsOf[Gate] = []
    run: RunRef = RunRef()
    signature: SignatureRecord = SignatureRecord()
    params: Mapping = {}

    @classmethod
    def read(cls, record: Any) -> VersionRecord:
        """The record, however it was written (never raises)."""
        return cls.model_validate(record)


class LineageSource(Loose):
    stage: Any = None
    type: Any = None
    source: Any = None
    fingerprint: Any = None
    digest: Any = None


class LineageStage(Loose):
    stage: Any = None
    type: Any = None
    state: Any = None
    inputs: Items = []
    outputs: Items = []


class Lineage(Loose):
    """What :func:`pipeflow.registry.lineage.model_lineage` returns."""

    run_id: Any = None
    pipeline: Any = None
    stage: Any = None
    note: Any = None
    sources: RecordsOf[LineageSource] = []
    stages: RecordsOf[LineageStage] = []
    #: whether the key was written at all: ``"shared_with" in lineage.model_fields_set``
    shared_with: Items = []

    @classmethod
    def read(cls, lineage: Any) -> Lineage:
        return cls.model_validate(lineage)


def model_ref(store: ArtifactStore, record: dict[str, Any], where: str) -> ArtifactRef:
    """The model reference of a version record to load, or a RegistryError naming the record's
    file when it was edited into something no codec reads (``"codec": "pickle"``) or lost it."""
    from pipeflow.errors import RegistryError
    from pipeflow.store import codecs, layout
    from pipeflow.store.artifacts import ArtifactRef

    try:
        ref = ArtifactRef.from_dict(record["model"])
        if ref.codec in codecs.CODECS:
            return ref
        problem = (
            f"its model has codec {ref.codec!r}, which pipeflow does not read "
            f"(known codecs: {', '.join(codecs.CODECS)})"
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        problem = "its 'model' entry is not a digest, codec, kind and size"
    name, version = str(record.get("name")), str(record.get("version"))
    if (
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name)
        and ".." not in name
        and version.isdigit()
    ):
        file = store.path(f"{layout.REGISTRY}/{name}/versions/{version}.json")
    else:
        file = f"the version record of {where} in {store.url}"
    raise RegistryError(f"refusing to load model {where}: {file}: {problem}")
