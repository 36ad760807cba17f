"""``import skops.io`` without importing all of scikit-learn: :func:`skops_io`.

Why. Importing ``skops.io`` runs ``skops/io/_trusted_types.py``, which builds the type names skops
trusts by default (``SKLEARN_ESTIMATOR_TYPE_NAMES``) from ``sklearn.utils.all_estimators()``; that
call walks scikit-learn and imports each of its ~500 modules (dask.array and pytest among them,
through its testing helpers) to find the estimator classes: 0.6-0.9 CPU-seconds, a third of
``pipeflow serve``'s start, in every process that saves or loads a model (a training run, each
serving replica, a batch scoring job, ``models promote``). Yet skops keeps only the names:
``f"{cls.__module__}.{cls.__name__}"`` of each class it is given.

So pipeflow ships what ``all_estimators()`` returns for one scikit-learn version
(``sklearn_estimators.json``: each class's name, module and ``__name__``). While
:func:`skops_io` imports ``skops.io``, and only when the installed scikit-learn and skops are the
versions the file was made with, ``sklearn.utils.all_estimators`` called from skops's module
returns stand-in classes that carry exactly those names; every other case (another version of
either, a call with arguments, a call from anywhere else, skops already imported) gets the real
function, and the real one is put back (in scikit-learn and in skops's module) before
:func:`skops_io` returns.

The security argument. The trust boundary is a list of strings, and it is the same list, in the
same order, either way: tests/store/test_skops_import.py recomputes ``all_estimators()`` with the
real call and compares it with the shipped file (``make test`` fails when they differ for the
versions the file names, and says it skipped, with the versions, where other versions are
installed: then the shortcut is off; regenerate with ``python tools/sklearn_estimators.py``), and
compares skops's ``SKLEARN_ESTIMATOR_TYPE_NAMES`` built through the stand-ins with the one built by
the real call in a process taking the fallback. A stand-in class never outlives the import: skops
reads two attributes of each and keeps the string. A version mismatch costs only time, never trust:
the real call runs. (pipeflow's own allow-list, ``codecs.TRUSTED``, and the types recorded at
registration are checked on top of skops's defaults, unchanged.)
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["ESTIMATORS", "estimators_now", "shipped", "skops_io"]

#: what ``sklearn.utils.all_estimators()`` returns for one scikit-learn version, as names
ESTIMATORS = Path(__file__).with_name("sklearn_estimators.json")
#: the module of skops that calls ``all_estimators()`` as it is imported
_CALLER = "skops.io._trusted_types"
_LOCK = threading.Lock()


def estimators_now() -> list[list[str]]:
    """``[name, module, __name__]`` of each class the real ``all_estimators()`` returns (imports
    all of scikit-learn)."""
    from sklearn.utils import all_estimators

    return [[name, cls.__module__, cls.__name__] for name, cls in all_estimators()]


def shipped(sklearn_version: str, skops_version: str) -> list[list[str]] | None:
    """The shipped ``all_estimators()`` for these versions, or None when it was made for others."""
    data = json.loads(ESTIMATORS.read_text())
    if (data["scikit-learn"], data["skops"]) != (sklearn_version, skops_version):
        return None
    return data["estimators"]


def skops_io() -> ModuleType:
    """``skops.io``, imported (once per process) without ``all_estimators()``'s walk of
    scikit-learn where the shipped names are for the installed versions (see the module's
    docstring); the same module, trusting the same names, either way."""
    with _LOCK:
        if _CALLER not in sys.modules:
            _import_skops_io()
    import skops.io

    return skops.io


def _import_skops_io() -> None:
    import sklearn
    import sklearn.utils
    import skops

    estimators = shipped(sklearn.__version__, skops.__version__)
    if estimators is None:
        import skops.io  # noqa: F401  (the real all_estimators())

        return
    real = sklearn.utils.all_estimators

    def all_estimators(*args: Any, **kwargs: Any) -> list[tuple[str, type]]:
        if args or kwargs or sys._getframe(1).f_globals.get("__name__") != _CALLER:
            return real(*args, **kwargs)
        return [
            (name, type(cls_name, (), {"__module__": module}))
            for name, module, cls_name in estimators
        ]

    sklearn.utils.all_estimators = all_estimators
    try:
        import skops.io  # noqa: F401
    finally:
        sklearn.utils.all_estimators = real
        trusted = sys.modules.get(_CALLER)
        if trusted is not None and getattr(trusted, "all_estimators", None) is all_estimators:
            trusted.all_estimators = real  # skops bound the name as it imported it
