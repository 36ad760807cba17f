"""Feedback is a true outcome the model could have answered, or it is refused (422) and changes
nothing; a second label for the same prediction replaces the first, in the server's live accuracy
and in ``pipeflow monitor``'s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import PREDICT, sample_rows

from pipeflow.serving.app import create_app
from pipeflow.serving.config import ServeConfig
from pipeflow.store import journal as audit

FEEDBACK = "/v1/models/tumours/feedback"


@pytest.fixture
def client(own_store: Path) -> Iterator[Any]:
    app = create_app(ServeConfig(store_url=str(own_store), model="tumours", which="production"))
    with TestClient(app) as c:
        yield c


def _answered(client: Any, tumours: Path, n: int = 4) -> list[dict[str, Any]]:
    r = client.post(PREDICT, json=sample_rows(tumours, n))
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_an_outcome_the_model_cannot_have_is_refused_and_replaces_nothing(
    client: Any, tumours: Path, own_store: Path
) -> None:
    first = _answered(client, tumours)[0]
    right = {"id": first["id"], "outcome": first["prediction"]}
    assert client.post(FEEDBACK, json=right).json() == {"recorded": 1}
    nested: Any = "x"
    for _ in range(40):  # a 100 KB nested object, as a careless client sent
        nested = {"k": nested, "pad": "y" * 2500}
    for outcome, expected in (
        (nested, "a class label or a number"),
        ([1, 2], "a class label or a number"),
        ("x" * 201, "a class label or a number"),
        ("maybe", "one of the model's classes: benign, malignant"),
        (3.5, "one of the model's classes: benign, malignant"),
    ):
        r = client.post(FEEDBACK, json={"id": first["id"], "outcome": outcome})
        assert r.status_code == 422, (outcome, r.text)
        problem = r.json()["error"]["fields"][0]
        assert problem["field"] == "outcome" and problem["expected"].startswith(expected)
    # nothing recorded after the refusals: the correct label stands
    fed = list(audit.read(own_store / "audit", "feedback"))
    assert [f["outcome"] for f in fed] == [first["prediction"]]
    assert client.app.state.server.primary.feedback == [1, 1]


def test_a_second_label_replaces_the_first_in_live_accuracy(client: Any, tumours: Path) -> None:
    answered = _answered(client, tumours, 2)
    other = {"benign": "malignant", "malignant": "benign"}
    wrong = [{"id": p["id"], "outcome": other[p["prediction"]]} for p in answered]
    assert client.post(FEEDBACK, json=wrong).json() == {"recorded": 2}
    assert client.app.state.server.primary.feedback == [0, 2]
    fixed = {"id": answered[0]["id"], "outcome": answered[0]["prediction"]}
    assert client.post(FEEDBACK, json=fixed).json() == {"recorded": 1}
    assert client.app.state.server.primary.feedback == [1, 2]  # two predictions, one right


def test_the_monitor_counts_the_latest_label_too(
    client: Any, tumours: Path, own_store: Path
) -> None:
    from pipeflow.monitoring.monitor import monitor
    from pipeflow.registry import Registry

    answered = _answered(client, tumours, 2)
    other = {"benign": "malignant", "malignant": "benign"}
    client.post(
        FEEDBACK, json=[{"id": p["id"], "outcome": other[p["prediction"]]} for p in answered]
    )
    client.post(FEEDBACK, json=[{"id": p["id"], "outcome": p["prediction"]} for p in answered])
    server = client.app.state.server
    report = monitor(
        Registry(server.store),
        "tumours",
        "production",
        audit_dir=own_store / "audit",
        store_root=own_store,
        window_s=3600,
        save=False,
    )
    assert report["accuracy"] == {"labelled": 2, "accuracy": 1.0}, json.dumps(report["accuracy"])


def test_feedback_attributes_are_recorded_and_bad_ones_refused_naming_the_field(
    client: Any, tumours: Path, own_store: Path
) -> None:
    first = _answered(client, tumours, 1)[0]
    item = {"id": first["id"], "outcome": first["prediction"], "attributes": {"region": "north"}}
    assert client.post(FEEDBACK, json=item).json() == {"recorded": 1}
    for attributes, field, expected in (
        (["north"], "attributes", "an object of at most 32"),
        ({f"a{i}": 1 for i in range(33)}, "attributes", "an object of at most 32"),
        ({"bad name": 1}, "attributes", "names of letters, digits"),
        ({"region": {"nested": 1}}, "attributes.region", "text of at most 200"),
        ({"region": "x" * 201}, "attributes.region", "text of at most 200"),
    ):
        r = client.post(FEEDBACK, json={**item, "attributes": attributes})
        assert r.status_code == 422, (attributes, r.text)
        problem = r.json()["error"]["fields"][0]
        assert problem["field"] == field and problem["expected"].startswith(expected)
    (fed,) = audit.read(own_store / "audit", "feedback")
    assert fed["attributes"] == {"region": "north"}


def test_live_bias_reads_a_sensitive_model_input_from_the_audited_inputs(
    client: Any, tumours: Path, own_store: Path
) -> None:
    """tumours v1 declared ``bias.sensitive: size_band``, a model input: without feedback
    attributes the monitor takes each labelled row's size_band from what the server audited."""
    import pandas as pd

    from pipeflow.governance.fairness import bias_metrics
    from pipeflow.monitoring.monitor import monitor
    from pipeflow.registry import Registry

    rows = pd.read_csv(tumours / "data.csv").sample(80, random_state=4)
    truth = rows.pop("diagnosis").tolist()
    r = client.post(PREDICT, json=rows.to_dict("records"))
    answered = r.json()["predictions"]
    labelled = list(range(0, 80, 2))  # feedback on half the rows only
    client.post(FEEDBACK, json=[{"id": answered[i]["id"], "outcome": truth[i]} for i in labelled])
    report = monitor(
        Registry(client.app.state.server.store),
        "tumours",
        "production",
        audit_dir=own_store / "audit",
        store_root=own_store,
        window_s=3600,
        save=False,
    )
    expected = bias_metrics(
        [truth[i] for i in labelled],
        [answered[i]["prediction"] for i in labelled],
        [rows["size_band"].iloc[i] for i in labelled],
        attribute="size_band",
        min_rows=5,
    )
    assert report["bias"]["source"] == "inputs" and report["bias"]["rows"] == 40
    assert {k: report["bias"][k] for k in expected} == expected
    assert report["bias"]["limits"] == {"accuracy_difference": 0.5}
    assert report["business"] is None  # tumours v1 declared none
