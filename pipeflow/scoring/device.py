"""Batch scoring on a GPU: which worker scores, on which device, and what is recorded.

Policy, and why:

- **Resources route, the GPU resource also picks the device.** A batch job may ask for Dask worker
  resources (``pipeflow predict --resources GPU=1``, ``predict_file(resources=...)``): on a
  cluster every scoring task carries them, so the partitions go only to workers started with
  ``dask worker --resources GPU=1`` (refused at once, naming the resources and what each worker
  offers, when no worker offers them: Dask itself would wait forever). Asking for ``GPU`` also
  asks each scoring process to score on ``cuda``. A local scheduler (``threads``,
  ``processes``) has no workers to route to: as Dask's own local schedulers do, it ignores the
  resources for placement, and this process (or its pool) is taken to be the worker offering
  them, as the ``train`` stage does with ``resources: {GPU: 1}`` on a local executor; the
  summary says so (``notes``).
- **Only xgboost switches device, on a copy, once per process.** An XGBClassifier or
  XGBRegressor (bare, the last step of a scikit-learn Pipeline, or inside
  :class:`~pipeflow.models.LabelDecodedClassifier`) is deep-copied and the copy set to
  ``device="cuda"``, once per model digest in each worker process (:func:`scoring_model`); the
  loaded model, and the stored file, stay CPU-ready (the ``train`` stage stores GPU-trained
  models set to predict on the CPU). Any other model scores on the CPU, said once.
- **Usable CUDA is checked cheaply and without a CUDA library of Python's**
  (:func:`cuda_usable`): xgboost built with CUDA (``build_info()["USE_CUDA"]``), no
  ``CUDA_VISIBLE_DEVICES`` hiding every device, and the CUDA driver (``libcuda``, through
  ``ctypes``: ``cuInit`` and ``cuDeviceGetCount``) counting at least one device. Otherwise the
  process scores on the CPU and logs one warning saying why; the predictions are then those of
  the plain CPU path, byte for byte (tested).
- **Recorded per worker.** Each scored partition comes back with where it was scored
  (:func:`score_on_worker`); the job's summary and audit record get ``device`` (``cpu``,
  ``cuda``, or ``mixed``), ``workers`` (address, or ``pid N`` for a local process ->
  ``{"partitions": n, "device": ...}``), the ``resources`` asked for and ``notes`` (why a
  process scored on the CPU after all).
- **Host rows, GPU model.** Partitions are pandas frames in host memory; a cuda booster predicts
  them through a DMatrix copied to the device, and xgboost warns of that on every call. That
  copy is the price of scoring files on a GPU, so the warning is silenced once in a process that
  switched a model to cuda.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from pipeflow.errors import UsageError
from pipeflow.execute import cluster
from pipeflow.scoring.model import ModelHolder, score_partition

log = logging.getLogger(__name__)

CPU, CUDA = "cpu", "cuda"
#: ``NAME=NUMBER``, as ``dask worker --resources`` takes them
_RESOURCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)$")
#: (model digest, wanted device) -> (model to score with, device, note), in this process
_CHOSEN: dict[tuple[str, str], tuple[Any, str, str | None]] = {}
_LOCK = threading.Lock()


def parse_resources(text: str, where: str = "--resources") -> dict[str, float]:
    """``GPU=1`` or ``GPU=1,MEM=4e9`` (commas or spaces between) as ``{"GPU": 1.0, ...}``."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise UsageError(f"{where} {text!r}: expected NAME=NUMBER[,NAME=NUMBER...], e.g. GPU=1")
    out: dict[str, float] = {}
    for item in items:
        match = _RESOURCE.match(item)
        if match is None:
            raise UsageError(
                f"{where} {text!r}: {item!r} is not NAME=NUMBER "
                "(as `dask worker --resources` takes them, e.g. GPU=1)"
            )
        out[match.group(1)] = float(match.group(2))
    return check_resources(out, where)


def check_resources(
    resources: Mapping[str, Any] | None, where: str = "resources"
) -> dict[str, float]:
    """``resources`` as ``{name: amount}``, every amount a number above 0."""
    out: dict[str, float] = {}
    for name, amount in (resources or {}).items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
            raise UsageError(f"{where}: {name}={amount!r}: expected a number above 0")
        out[str(name)] = float(amount)
    return out


def resource_text(resources: Mapping[str, float]) -> str:
    """``{"GPU": 1.0}`` as ``GPU=1``, as ``dask worker --resources`` takes it."""
    return ",".join(f"{k}={v:g}" for k, v in resources.items())


def wanted_device(resources: Mapping[str, float]) -> str:
    """``cuda`` when the job asks for a GPU resource, ``cpu`` otherwise."""
    return CUDA if resources.get("GPU", 0) > 0 else CPU


def check_offered(client: Any, resources: Mapping[str, float]) -> None:
    """A :class:`UsageError` naming the resources and every worker's offer when no worker of
    the cluster offers ``resources`` (Dask would wait for one forever)."""
    if not resources or cluster.workers_offering(client, resources):
        return
    offers = cluster.worker_resources(client)
    have = "; ".join(f"{a} {resource_text(r) or 'nothing'}" for a, r in sorted(offers.items()))
    wanted = resource_text(resources)
    raise UsageError(
        f"no worker of the cluster offers resources {wanted} (workers offer: {have or 'none'}); "
        f"start one with `dask worker ADDRESS --resources {wanted}`"
    )


# ------------------------------------------------------------------------------ the device


@functools.lru_cache(maxsize=1)
def cuda_usable() -> tuple[bool, str]:
    """(whether xgboost can score on a CUDA device in this process, why or why not)."""
    try:
        import xgboost
    except ImportError:
        return False, "xgboost is not installed"
    if not xgboost.build_info().get("USE_CUDA"):
        return False, f"xgboost {xgboost.__version__} is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False, f"CUDA_VISIBLE_DEVICES={visible!r} hides every device"
    count = _cuda_devices()
    if count is None:
        return False, "no CUDA driver (libcuda) on this host"
    if count < 1:
        return False, "the CUDA driver sees no device"
    return True, f"{count} CUDA device(s)"


def _cuda_devices() -> int | None:
    """How many devices the CUDA driver sees (0 when it fails to start); None without one."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return None


def xgboost_step(model: Any) -> Any:
    """The XGBClassifier or XGBRegressor that makes ``model``'s predictions (bare, the last step
    of a Pipeline, inside a LabelDecodedClassifier); None for any other model."""
    inner = getattr(model, "pipeline", model)  # LabelDecodedClassifier
    steps = getattr(inner, "steps", None)
    final = steps[-1][1] if steps else inner
    module = type(final).__module__ or ""
    return final if module.startswith("xgboost") and hasattr(final, "get_booster") else None


def on_cuda(model: Any) -> Any:
    """A deep copy of the xgboost ``model`` set to predict with ``device="cuda"``; ``model``
    itself is left as it is."""
    twin = copy.deepcopy(model)
    step = xgboost_step(twin)
    if step is None:
        raise ValueError(f"{type(model).__name__} has no xgboost estimator to move to cuda")
    step.set_params(device=CUDA)
    return twin


def scoring_model(model: Any, digest: str, want: str) -> tuple[Any, str, str | None]:
    """(the model to score with, ``cpu`` or ``cuda``, a note saying why not ``want``), decided
    once per model digest in this process (a worker): see the module docstring."""
    if want != CUDA:
        return model, CPU, None
    with _LOCK:
        chosen = _CHOSEN.get((digest, want))
        if chosen is None:
            chosen = _choose(model)
            if len(_CHOSEN) >= 4:  # a long-lived worker scoring many models keeps the last few
                _CHOSEN.pop(next(iter(_CHOSEN)))
            _CHOSEN[(digest, want)] = chosen
        return chosen


def _choose(model: Any) -> tuple[Any, str, str | None]:
    where = cluster.worker_address() or f"pid {os.getpid()}"
    if xgboost_step(model) is None:
        note = f"{type(model).__name__} is not an xgboost model: scored on the CPU"
        log.warning("%s: %s", where, note)
        return model, CPU, note
    usable, why = cuda_usable()
    if not usable:
        note = f"no usable CUDA ({why}): scored on the CPU"
        log.warning("%s: %s", where, note)
        return model, CPU, note
    warnings.filterwarnings("ignore", message=r"(?s).*mismatched devices")  # module docstring
    log.info("%s: scoring on cuda (%s)", where, why)
    return on_cuda(model), CUDA, None


def score_on_worker(
    part: Any, model: Any, spec: Any, number: int, digest: str, want: str
) -> tuple[Any, dict[str, Any]]:
    """Score one partition where it runs: (scored frame, ``{"worker", "device", "note"}``).
    ``model`` is the model or its :class:`~pipeflow.scoring.model.ModelHolder`; ``digest``
    names it (the device is chosen once per digest in a process)."""
    loaded = model.model if isinstance(model, ModelHolder) else model
    chosen, device, note = scoring_model(loaded, digest, want)
    scored = score_partition(part, chosen, spec, {"number": number})
    where = cluster.worker_address() or f"pid {os.getpid()}"
    return scored, {"worker": where, "device": device, "note": note}


class Placement:
    """Where a job's partitions were scored, tallied as they arrive, for its summary."""

    def __init__(self, resources: Mapping[str, float]):
        self.resources = dict(resources)
        self.workers: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def add(self, info: Mapping[str, Any], partitions: int = 1) -> None:
        entry = self.workers.setdefault(info["worker"], {"partitions": 0, "device": info["device"]})
        entry["partitions"] += partitions
        if info["device"] != entry["device"]:
            entry["device"] = "mixed"
        if info.get("note"):
            self.note(f"{info['worker']}: {info['note']}")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def summary(self) -> dict[str, Any]:
        devices = {w["device"] for w in self.workers.values()}
        device = devices.pop() if len(devices) == 1 else ("mixed" if devices else CPU)
        return {
            "device": device,
            "workers": self.workers,
            "resources": self.resources,
            "notes": self.notes,
        }


__all__ = [
    "CPU",
    "CUDA",
    "Placement",
    "check_offered",
    "check_resources",
    "cuda_usable",
    "on_cuda",
    "parse_resources",
    "resource_text",
    "score_on_worker",
    "scoring_model",
    "wanted_device",
    "xgboost_step",
]
