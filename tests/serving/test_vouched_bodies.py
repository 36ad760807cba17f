"""A native JSON body whose text vouches for its rows' numbers (the signature's shortcut,
:func:`pipeflow.registry.signature._plain_numbers`) is answered, flagged and audited exactly as
the same rows looked at value by value, on a real ``pipeflow serve``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from helpers import PREDICT, sample_rows

from pipeflow.registry import Registry
from pipeflow.registry.signature import Signature, _plain_numbers
from pipeflow.store import journal
from pipeflow.store.artifacts import ArtifactStore


def test_a_vouched_body_is_answered_flagged_and_audited_as_one_looked_at_value_by_value(
    serve, tumours: Path, own_store: Path
) -> None:
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in sample_rows(tumours, 40)
    ]
    rows[3] = {**rows[3], "mean_radius": 1e4}  # far outside the training range: flagged
    rows[5] = {**rows[5], "mean_texture": None, "size_band": "enormous"}  # null, unseen category
    # a leading space: an array of rows the columnar decoder leaves to the general path
    # (pipeflow.serving.columnar, tested in test_columnar.py), whose check this shortcut is
    vouched = b" " + json.dumps(rows).encode()
    # the same rows in {"rows": [...], "explain": false}: not the body's own objects, so every
    # value's type is looked at
    looked = json.dumps({"rows": rows, "explain": False}).encode()
    record = Registry(ArtifactStore(str(own_store))).version("tumours", 1)
    signature = Signature.from_record(record)
    others = [(i, f, [r[f.name] for r in rows]) for i, f in enumerate(signature.features)]
    others = [o for o in others if o[1].expect != "number"]
    assert _plain_numbers(vouched, signature.names, len(rows), others)  # the shortcut is taken
    assert not _plain_numbers(looked, signature.names, len(rows), others)

    s = serve("tumours@production", store=own_store)
    headers = {"content-type": "application/json"}
    with s.client() as c:
        answers = [c.post(PREDICT, content=body, headers=headers) for body in (vouched, looked)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    fast, slow = ([{k: v for k, v in p.items() if k != "id"} for p in a.json()["predictions"]]
                  for a in answers)  # fmt: skip
    assert fast == slow and len(fast) == 40
    assert "flags" in fast[3] and len(fast[5]["flags"]) == 1

    records = [r for _, r in journal.Follower(own_store / "audit", "predictions").new()]
    assert len(records) == 2
    same = ("rows", "model", "version", "route", "inputs", "output", "probabilities", "flags")
    first, second = ({k: r[k] for k in same} for r in records)
    assert first == second and first["inputs"]["mean_texture"][5] is None
    assert [r["ids"] for r in records] == [[p["id"] for p in a.json()["predictions"]]
                                           for a in answers]  # fmt: skip
