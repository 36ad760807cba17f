"""A model's stored bytes must not depend on the process that trained it: skops writes ``id()``
values (object ids, and scikit-learn's ``TfidfVectorizer._stop_words_id``), which pipeflow makes
canonical, so the cache's early cutoff and the registry's dedup work across runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from pipeflow.store import codecs

TEXTS = ["good movie", "bad movie", "great film", "awful film", "the best one", "the worst one"]
LABELS = [1, 0, 1, 0, 1, 0]

FIT = textwrap.dedent(
    f"""
    import hashlib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from pipeflow.store import codecs

    model = Pipeline([("tfidf", TfidfVectorizer(stop_words=["the"])), ("clf", LogisticRegression())])
    model.fit({TEXTS!r}, {LABELS!r})
    print(hashlib.sha256(codecs.encode(model)[1]).hexdigest())
    """
)


def _digest_in_fresh_process() -> str:
    done = subprocess.run(
        [sys.executable, "-c", FIT], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def test_same_text_model_gives_same_bytes_in_two_processes() -> None:
    first, second = _digest_in_fresh_process(), _digest_in_fresh_process()
    assert len(first) == 64
    assert first == second


def test_stable_text_model_still_predicts_identically() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    model = Pipeline(
        [("tfidf", TfidfVectorizer(stop_words=["the"])), ("clf", LogisticRegression())]
    )
    model.fit(TEXTS, LABELS)
    codec, data = codecs.encode(model)
    back = codecs.decode(codec, data)
    assert back.named_steps["tfidf"]._stop_words_id is None  # blanked, not a foreign id()
    probe = [*TEXTS, "a good film", "unseen words only"]
    assert (back.predict(probe) == model.predict(probe)).all()
    np.testing.assert_array_equal(back.predict_proba(probe), model.predict_proba(probe))
    assert codecs.encode(back)[1] == data  # re-encoding the loaded model: same bytes
