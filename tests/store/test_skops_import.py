"""``skops_io()`` (pipeflow/store/skops_import.py) imports skops without walking scikit-learn, and
skops trusts the same type names as it would have: the shipped list is what the real
``all_estimators()`` returns, the shortcut is taken only for the versions it was made with, and
skops's ``SKLEARN_ESTIMATOR_TYPE_NAMES`` is identical through the shortcut and through the real
call."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from pipeflow.store.skops_import import ESTIMATORS, estimators_now, shipped

#: a fresh process: spy on the real all_estimators, maybe pretend to be another scikit-learn, then
#: skops_io(); prints how many times the real one ran, what skops trusts and what is left bound,
#: and what it finds untrusted in a model pipeflow stored (a numpy function, not trusted by default)
PROBE = """
import json, sys
import sklearn, sklearn.utils
real, calls = sklearn.utils.all_estimators, []
def spy(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)
sklearn.utils.all_estimators = spy
if sys.argv[1]:
    sklearn.__version__ = sys.argv[1]
from pipeflow.store.skops_import import skops_io
skops = skops_io()
imported = len(sys.modules)
from skops.io import _trusted_types as trusted
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from pipeflow.store import codecs
x = np.arange(40.0).reshape(20, 2)
model = make_pipeline(FunctionTransformer(np.fliplr), StandardScaler(), LogisticRegression())
model.fit(x, x[:, 0] > 19)
codec, data = codecs.encode(model)
back = codecs.decode(codec, data)
print(json.dumps({
    "untrusted": skops.get_untrusted_types(data=data),
    "round_trip": bool((back.predict(x) == model.predict(x)).all()),
    "calls": len(calls),
    "names": trusted.SKLEARN_ESTIMATOR_TYPE_NAMES,
    "put_back": sklearn.utils.all_estimators is spy and trusted.all_estimators is spy,
    "imported": imported,
}))
"""


def probe(version: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, version], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _shipped_for_installed() -> None:
    """Skip, saying so, where the shipped list was made for other versions than the installed
    ones: pipeflow then takes the real call (correct, only slower), and a new scikit-learn or
    skops release must not fail every build until the list is regenerated."""
    import sklearn
    import skops

    data = json.loads(ESTIMATORS.read_text())
    if (data["scikit-learn"], data["skops"]) != (sklearn.__version__, skops.__version__):
        pytest.skip(
            f"sklearn_estimators.json is for scikit-learn {data['scikit-learn']} and skops "
            f"{data['skops']}; installed: {sklearn.__version__} and {skops.__version__}, so "
            "importing skops takes the real all_estimators(): python tools/sklearn_estimators.py"
        )


def test_the_shipped_estimators_are_what_the_real_all_estimators_returns_here() -> None:
    import sklearn
    import skops

    _shipped_for_installed()
    data = json.loads(ESTIMATORS.read_text())
    now = {"scikit-learn": sklearn.__version__, "skops": skops.__version__}
    now["estimators"] = estimators_now()
    assert data == now, "out of date: python tools/sklearn_estimators.py"
    assert shipped(sklearn.__version__, skops.__version__) == now["estimators"]


def test_the_shortcut_is_only_for_the_versions_it_was_made_with() -> None:
    data = json.loads(ESTIMATORS.read_text())
    assert shipped(data["scikit-learn"], data["skops"]) == data["estimators"]
    assert shipped(data["scikit-learn"] + ".post1", data["skops"]) is None
    assert shipped(data["scikit-learn"], data["skops"] + ".post1") is None


def test_the_fallback_trusts_what_skops_alone_trusts() -> None:
    """Another scikit-learn version than the list's: the real walk, once, nothing left bound."""
    slow = probe("0.0.1")
    assert slow["calls"] == 1 and slow["put_back"] and slow["round_trip"]
    assert slow["untrusted"] == ["numpy.fliplr"]
    assert len(slow["names"]) > 100 and all(n.startswith("sklearn.") for n in slow["names"])


def test_skops_trusts_the_same_names_through_the_shortcut_and_the_real_call() -> None:
    _shipped_for_installed()
    fast, slow = probe(""), probe("0.0.1")  # the installed version; another one: the fallback
    assert fast["calls"] == 0 and slow["calls"] == 1  # the real walk only in the fallback
    assert fast["names"] == slow["names"]  # the trust boundary, name for name, in order
    assert len(fast["names"]) > 100 and all(n.startswith("sklearn.") for n in fast["names"])
    assert fast["put_back"] and slow["put_back"]  # no stand-in left bound anywhere
    assert fast["imported"] < slow["imported"] - 300, (fast["imported"], slow["imported"])
    assert fast["untrusted"] == slow["untrusted"] == ["numpy.fliplr"]
    assert fast["round_trip"] and slow["round_trip"]
