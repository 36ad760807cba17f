"""How the micro-batcher gathers concurrent requests into one model call.

The waits here are long (seconds) and each test tells "did not wait" from "waited" by half of
one: the suite shares the machine's cores with another pytest worker, and a process can be off
the CPU for tens of milliseconds, longer than the server's default 50 ms wait."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from pipeflow.serving.batcher import Batcher, Pending
from pipeflow.serving.config import ServeConfig


def pending(rows: int) -> Pending:
    loop = asyncio.get_running_loop()
    return Pending(
        [{}] * rows, [], None, [[]] * rows, "t", "v1", time.perf_counter(), loop.create_future()
    )


def batcher(arriving: int, wait_ms: float = 50.0, max_rows: int = 10_000) -> Batcher:
    config = ServeConfig("memory://x", "m", batch_wait_ms=wait_ms, max_rows=max_rows)
    server = SimpleNamespace(config=config, arriving=arriving)
    handle = SimpleNamespace(label="m@1")
    return Batcher(handle, server)  # type: ignore[arg-type]


def test_a_lone_request_is_taken_at_once() -> None:
    async def main() -> tuple[int, float]:
        b = batcher(arriving=0, wait_ms=5000)
        await b.queue.put(pending(1))
        started = time.perf_counter()
        items = await b.collect()
        return len(items), time.perf_counter() - started

    n, took = asyncio.run(main())
    assert n == 1 and took < 2.5  # nothing arriving: no wait for the 5 s


def test_requests_still_arriving_join_the_batch_up_to_the_wait() -> None:
    async def main() -> list[int]:
        b = batcher(arriving=1, wait_ms=5000)
        await b.queue.put(pending(3))

        async def arrive() -> None:
            await asyncio.sleep(0.005)
            await b.queue.put(pending(2))
            b.server.arriving = 0  # type: ignore[attr-defined]

        task = asyncio.create_task(arrive())
        items = await b.collect()
        await task
        return [len(i.rows) for i in items]

    assert asyncio.run(main()) == [3, 2]


def test_the_wait_ends_at_the_deadline_and_at_max_rows() -> None:
    async def main() -> tuple[int, float, list[int]]:
        slow = batcher(arriving=1, wait_ms=200)  # a body that never comes
        await slow.queue.put(pending(1))
        started = time.perf_counter()
        items = await slow.collect()
        took = time.perf_counter() - started
        full = batcher(arriving=5, max_rows=4)
        for rows in (3, 1, 1):
            await full.queue.put(pending(rows))
        return len(items), took, [len(i.rows) for i in await full.collect()]

    n, took, sizes = asyncio.run(main())
    assert n == 1 and 0.19 <= took < 10  # the wait ends, not the body's arrival
    assert sizes == [3, 1]  # 4 rows reached: the third request waits for the next batch


def test_clients_taking_turns_are_waited_for_as_many_as_were_seen_at_once() -> None:
    """Four clients in two alternating pairs: a pair's batch waits (up to the limit) for the
    other pair's next requests, which have not started arriving yet, because four requests were
    in the system at once a moment ago. Once the peak is old, nobody is waited for."""

    async def main() -> tuple[list[int], float, int]:
        b = batcher(arriving=0, wait_ms=5000)
        loop = asyncio.get_running_loop()
        b.scoring = 2  # a pair being scored while the other pair queues: 4 in the system
        for _ in range(2):
            await b.queue.put(pending(1000))
            b.count_clients(loop.time())
        assert b.peak == 4
        b.scoring = 0

        async def later() -> None:  # the first pair's next requests, a few ms after
            await asyncio.sleep(0.005)
            for _ in range(2):
                await b.queue.put(pending(1000))

        task = asyncio.create_task(later())
        started = time.perf_counter()
        items = await b.collect()
        took = time.perf_counter() - started
        await task
        b.peak_at = loop.time() - 1  # long enough ago: a lone client now
        await b.queue.put(pending(1))
        alone = await b.collect()
        return [len(i.rows) for i in items], took, len(alone)

    sizes, took, alone = asyncio.run(main())
    assert sizes == [1000] * 4 and took < 2.5  # filled, well before the 5 s limit
    assert alone == 1


def test_each_rows_answer_holds_its_id_prediction_and_probabilities_by_class_for_any_class_count() -> (
    None
):
    import numpy as np
    import pytest

    from pipeflow.serving.batcher import _answers, _by_class

    ids, values = [f"p-{i:x}" for i in range(4)], ["x", "y", "x", "y"]
    for labels in (["benign", "malignant"], ["a", "b", "c"], ["only"]):
        probs = [[(i + j) / 10 for j in range(len(labels))] for i in range(4)]
        answers = _answers(ids, values, labels, _by_class(labels, np.array(probs)))
        assert answers == [
            {"id": pid, "prediction": value, "probabilities": dict(zip(labels, p, strict=True))}
            for pid, value, p in zip(ids, values, probs, strict=True)
        ]
        assert all(type(v) is float for a in answers for v in a["probabilities"].values())
    assert _answers(ids, values, ["a"], None) == [
        {"id": pid, "prediction": value} for pid, value in zip(ids, values, strict=True)
    ]
    for labels, short in ((["a", "b"], [[0.5]]), (["a", "b", "c"], [[0.5, 0.5]])):
        with pytest.raises(ValueError, match="3 classes|2 classes"):  # another number of classes
            _by_class(labels, np.array(short))


def test_a_batchs_answers_and_records_are_each_rows_prediction_and_probabilities_by_class() -> None:
    """The batcher takes the model's probabilities a class at a time: each request's answers
    and audit record hold what a row-by-row reading of the batch gives, for two classes and
    three, through requests of different sizes, flags and all."""
    import numpy as np

    from pipeflow.serving.state import hex_ids

    rng = np.random.default_rng(7)
    for labels in (["benign", "malignant"], ["a", "b", "c"]):
        sizes = [3, 1, 5]
        total = sum(sizes)
        proba = rng.random((total, len(labels)))
        predicted = [labels[i] for i in proba.argmax(axis=1)]
        written: list[dict[str, Any]] = []
        server = SimpleNamespace(
            new_ids=lambda n: hex_ids("p0", 250, n),  # across a run of 256 ids
            audit=SimpleNamespace(append=written.extend, folder="audit"),
            recent=SimpleNamespace(add=lambda *a: None),
            fleet=SimpleNamespace(answered=lambda *a: None),
        )
        handle = SimpleNamespace(
            name="m", version=3, role="primary", classes=labels, proba=True, label="m@3",
            frame=lambda items: sum((i.rows for i in items), []),
            predict=lambda frame, p=predicted, q=proba: (p[: len(frame)], q[: len(frame)]),
        )  # fmt: skip
        items = [
            Pending(
                [{"x": float(i)} for i in range(n)],
                ["x"],
                None,
                [["x: unusual"] if i == 1 else [] for i in range(n)],
                "caller",
                "v1",
                time.perf_counter(),
                None,  # type: ignore[arg-type]
            )  # fmt: skip
            for n in sizes
        ]
        results = Batcher(handle, server)._score(items)  # type: ignore[arg-type]
        ids, rows = hex_ids("p0", 250, total), proba.tolist()
        at = 0
        for item, n, answers, record in zip(items, sizes, results, written, strict=True):
            mine = ids[at : at + n]
            expected = []
            for k in range(n):
                one = {"id": mine[k], "prediction": predicted[at + k]}
                one["probabilities"] = dict(zip(labels, rows[at + k], strict=True))
                if item.flags[k]:
                    one["flags"] = item.flags[k]
                expected.append(one)
            assert answers == expected
            assert record["ids"] == mine and record["output"] == predicted[at : at + n]
            assert record["probabilities"] == {
                label: [rows[at + k][j] for k in range(n)] for j, label in enumerate(labels)
            }
            assert record["flags"] == (item.flags if n > 1 else None)
            assert record["inputs"] == {"x": [float(i) for i in range(n)]}
            at += n


def test_prediction_ids_are_the_prefix_and_each_number_in_hex_across_runs_of_256() -> None:
    from pipeflow.serving.state import hex_ids

    for first, n in (
        (1, 0),
        (1, 300),
        (250, 20),
        (255, 2),
        (256, 1),
        (65_530, 600),
        (2**40 - 3, 9),
    ):
        assert hex_ids("p1", first, n) == [f"p1-{k:x}" for k in range(first, first + n)]
