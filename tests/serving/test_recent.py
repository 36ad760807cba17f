"""The server's memory of recent predictions (live accuracy from feedback)."""

from __future__ import annotations

from pipeflow.serving.fleet import RecentPredictions


def test_recent_predictions_keep_between_keep_and_twice_keep_and_forget_the_oldest() -> None:
    recent = RecentPredictions(keep=10)
    for batch in range(5):  # 5 batches of 4 ids: 20 predictions
        ids = [f"p-{batch}-{i}" for i in range(4)]
        recent.add("claims", 1 + batch % 2, ids, [f"out{batch}{i}" for i in range(4)])
    assert recent.get("p-4-3") == ("claims", 1, "out43")
    assert recent.get("p-3-0") == ("claims", 2, "out30")
    # the first 12 filled the young generation; the rest started a new one: batch 0-2 are old
    assert recent.get("p-0-0") == ("claims", 1, "out00")
    for batch in range(5, 8):
        recent.add("claims", 3, [f"p-{batch}-{i}" for i in range(4)], ["x"] * 4)
    assert recent.get("p-0-0") is None  # two generations later: forgotten
    assert recent.get("p-7-0") == ("claims", 3, "x")
    assert recent.get("unknown") is None
