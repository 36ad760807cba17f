"""A loaded server's heap (:func:`pipeflow.core.gcpause.settle_for_serving`): what it loaded is
frozen, and a batch's answers, a few containers per row alive at once, are built without the
collector running (at Python's default threshold it ran several times per 1000-row batch)."""

from __future__ import annotations

import gc
from typing import Any

from pipeflow.core import gcpause


def _collections_while_building(rows: int) -> int:
    """Young collections while ``rows`` answers (a dict and its probabilities each) are built
    and kept, as the batcher keeps a batch's."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        answers = [{"id": i, "probabilities": {"a": 0.5, "b": 0.5}} for i in range(rows)]
    finally:
        gc.callbacks.remove(count)
    del answers
    return len(seen)


def test_a_settled_server_freezes_what_it_loaded_and_builds_a_batchs_answers_uncollected() -> None:
    before = gc.get_threshold()
    try:
        assert _collections_while_building(4000) > 0  # the default: several collections
        gcpause.settle_for_serving()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[1:] == before[1:]
        assert _collections_while_building(4000) == 0  # four 1000-row requests' answers
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
