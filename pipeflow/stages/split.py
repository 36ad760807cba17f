"""The ``split`` stage: divide a table into train and test, reproducibly.

::

    split:
      type: split
      inputs: {data: clean}
      with:
        method: stratified        # random | stratified | group | time
        test_size: 0.2            # a fraction of rows (groups for `group`)
        by: category              # stratified: the label column; group: the group column; time: the time column
        seed: ${params.seed}

- ``random``: rows shuffled with the seed.
- ``stratified``: each value of ``by`` keeps its share in both parts (every class with at least
  two rows appears in both).
- ``group``: all rows of one value of ``by`` land in the same part (no customer in both).
- ``time``: the latest ``test_size`` of rows by ``by`` are the test set (no future in training).

The same table, config and seed always give the same split; rows keep their order within each
part. The split is done with numpy alone: no learning library is imported for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeflow.core.stage import Port, RowShare, Stage, StageConfig, StageContext


class SplitConfig(StageConfig):
    method: Literal["random", "stratified", "group", "time"] = Field(
        "random", description="how rows are assigned"
    )
    test_size: RowShare = Field(
        0.2, description="fraction of rows (of groups, for method group) in the test part"
    )
    by: str | None = Field(
        None, description="label column (stratified), group column (group) or time column (time)"
    )
    seed: int = Field(0, description="random seed")

    @model_validator(mode="after")
    def _needs_by(self) -> SplitConfig:
        if self.method != "random" and not self.by:
            raise ValueError(f"method '{self.method}' needs `by:` (the column to split by)")
        return self


class SplitStage(Stage[SplitConfig]):
    """Split a table into train and test parts (random, stratified, group or time-based)."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {"data": Port("table", description="the table to split")}
    outputs: ClassVar[Mapping[str, Port]] = {
        "train": Port("table", description="the training part"),
        "test": Port("table", description="the held-out part"),
    }
    description = "Split a table into train and test (random, stratified, group or time), seeded."

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        import numpy as np

        config = self.config
        data = inputs["data"]
        n = len(data)
        if n < 2:
            raise ValueError(f"cannot split a table of {n} row(s) into train and test")
        if config.by is not None and config.by not in data.columns:
            raise ValueError(
                f"split column '{config.by}' not found (columns: {', '.join(map(str, data.columns))})"
            )
        rng = np.random.default_rng(config.seed)
        test = np.zeros(n, dtype=bool)
        if config.method == "random":
            test[rng.permutation(n)[: _count(n, config.test_size)]] = True
        elif config.method == "stratified":
            labels = data[config.by].astype("string").fillna("<missing>").to_numpy()
            for value in sorted(set(labels)):
                rows = np.flatnonzero(labels == value)
                k = _count(len(rows), config.test_size) if len(rows) > 1 else 0
                test[rng.permutation(rows)[:k]] = True
        elif config.method == "group":
            groups = data[config.by].astype("string").fillna("<missing>").to_numpy()
            unique = np.array(sorted(set(groups)), dtype=object)
            if len(unique) < 2:
                raise ValueError(
                    f"group split needs at least 2 distinct values of '{config.by}', found {len(unique)}"
                )
            chosen = set(rng.permutation(unique)[: _count(len(unique), config.test_size)])
            test = np.array([g in chosen for g in groups], dtype=bool)
        else:
            order = np.argsort(data[config.by].to_numpy(), kind="stable")
            test[order[n - _count(n, config.test_size) :]] = True
        train_part, test_part = data[~test], data[test]
        ctx.logger.info("split %d rows: %d train, %d test", n, len(train_part), len(test_part))
        return {"train": train_part, "test": test_part}


def _count(n: int, fraction: float) -> int:
    """Rows in the test part: at least one, and at least one left for training."""
    return min(max(1, round(n * fraction)), n - 1)
