"""What stages logged and what people noted about runs: the part of the metadata contract
(:class:`~pipeflow.store.metadata.MetadataDB`) that reads ``metrics`` and ``logged_params`` and
reads and writes ``tags`` and ``runs.note``, and the log lines stages kept (``stage_logs``).

Stages log through ``ctx.log_metric`` / ``ctx.log_param`` (:mod:`pipeflow.core.tracking`); the
client records the log with the stage (``MetadataDB.record_stages``, in the same transaction as
the stage's row). A metric's value in a run is the one at its highest step, per stage
(:data:`~pipeflow.store.search.LATEST`); finding runs by it is ``MetadataDB.runs(where=...)``.
Like the rest of the contract, every query here is written once, in SQL both SQLite and
PostgreSQL speak, with every value a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeflow.store.search import LATEST


class LoggedRecords:
    """Mixed into :class:`~pipeflow.store.metadata.MetadataDB`, whose backend provides
    ``write`` and ``query``."""

    def write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        raise NotImplementedError

    def query(self, sql: str, args: tuple = ()) -> list[Any]:
        raise NotImplementedError

    # -- tags and notes --------------------------------------------------------------------
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set (or change) tags of a run."""
        self.write(
            (
                "INSERT INTO tags VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value",
                (run_id, k, str(v)),
            )
            for k, v in tags.items()
        )

    def delete_tags(self, run_id: str, names: Iterable[str]) -> None:
        self.write([("DELETE FROM tags WHERE run_id = ? AND name = ?", (run_id, n)) for n in names])

    def set_note(self, run_id: str, note: str | None) -> None:
        """The run's note (free text; None removes it)."""
        self.write([("UPDATE runs SET note = ? WHERE id = ?", (note, run_id))])

    def tags(self, run_id: str) -> dict[str, str]:
        return self.tags_of([run_id]).get(run_id, {})

    def tags_of(self, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The tags of each of ``run_ids`` (runs without tags are left out)."""
        out: dict[str, dict[str, str]] = {}
        for rows in self._by_run("SELECT run_id, name, value FROM tags", run_ids, "name"):
            out.setdefault(rows["run_id"], {})[rows["name"]] = rows["value"]
        return out

    # -- what stages logged -----------------------------------------------------------------
    def metrics(self, run_id: str, name: str | None = None) -> list[Any]:
        """Every logged value of the run (of metric ``name`` only, if given): ``stage, name,
        step, value, logged, from_run``, by stage, name and step."""
        sql = "SELECT stage, name, step, value, logged, from_run FROM metrics WHERE run_id = ?"
        args: tuple = (run_id,)
        if name is not None:
            sql += " AND name = ?"
            args += (name,)
        return self.query(sql + " ORDER BY stage, name, step", args)

    def latest_metrics(self, run_ids: Sequence[str]) -> list[Any]:
        """The value of each metric of each run (at its highest step): ``run_id, stage, name,
        step, value, from_run``."""
        return self._by_run(
            "SELECT m.run_id, m.stage, m.name, m.step, m.value, m.from_run FROM metrics m"  # nosec B608 (fixed SQL fragments; every value is a parameter)
            f" WHERE {LATEST}",
            run_ids,
            "m.stage, m.name",
            column="m.run_id",
        )

    def logged_params(self, run_id: str) -> list[Any]:
        """Params stages logged: ``stage, name, value, from_run``."""
        return self.query(
            "SELECT stage, name, value, from_run FROM logged_params WHERE run_id = ?"
            " ORDER BY stage, name",
            (run_id,),
        )

    def stage_logs(self, run_id: str, stage: str | None = None) -> list[Any]:
        """The log lines stages of the run kept (of ``stage`` only, if given): ``stage, line,
        logged, level, logger, message``, stages in the pipeline's order, lines in order."""
        sql = (
            "SELECT l.stage, l.line, l.logged, l.level, l.logger, l.message FROM stage_logs l"
            " LEFT JOIN stage_runs s ON s.run_id = l.run_id AND s.stage = l.stage"
            " WHERE l.run_id = ?"
        )
        args: tuple = (run_id,)
        if stage is not None:
            sql += " AND l.stage = ?"
            args += (stage,)
        return self.query(sql + " ORDER BY s.seq, l.stage, l.line", args)

    def metric_names(self, pipeline: str | None = None) -> list[str]:
        """Every metric name logged (in runs of ``pipeline``), sorted."""
        if pipeline:
            rows = self.query(
                "SELECT DISTINCT m.name FROM metrics m JOIN runs r ON r.id = m.run_id"
                " WHERE r.pipeline = ? ORDER BY m.name",
                (pipeline,),
            )
        else:
            rows = self.query("SELECT DISTINCT name FROM metrics ORDER BY name")
        return [r[0] for r in rows]

    def metric_across_runs(
        self, name: str, *, pipeline: str | None = None, limit: int = 100
    ) -> list[Any]:
        """Metric ``name`` in each of the latest ``limit`` runs that logged it (of ``pipeline``):
        ``run_id, pipeline, started, state, stage, step, value, from_run``, oldest run first."""
        where = "m.name = ? AND " + LATEST
        args: tuple = (name,)
        if pipeline:
            where += " AND r.pipeline = ?"
            args += (pipeline,)
        return self.query(
            "SELECT * FROM (SELECT r.id AS run_id, r.pipeline AS pipeline, r.started AS started,"
            " r.state AS state, m.stage AS stage, m.step AS step, m.value AS value,"
            " m.from_run AS from_run FROM metrics m JOIN runs r ON r.id = m.run_id"
            f" WHERE {where} ORDER BY r.started DESC, r.id DESC, m.stage LIMIT ?) latest"  # nosec B608 (fixed SQL)
            " ORDER BY started, run_id, stage",
            (*args, limit),
        )

    def _by_run(
        self, select: str, run_ids: Sequence[str], order: str, *, column: str = "run_id"
    ) -> list[Any]:
        """``select`` (with or without a WHERE) for the rows of ``run_ids``, 500 ids a query."""
        out: list[Any] = []
        ids = list(dict.fromkeys(run_ids))
        joiner = " AND " if " WHERE " in select else " WHERE "
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            out += self.query(
                f"{select}{joiner}{column} IN ({marks}) ORDER BY {column}, {order}",  # nosec B608 (fixed SQL, ids as parameters)
                tuple(chunk),
            )
        return out
