"""pipeflow-sql: the ``sql`` stage type, an example of a pipeflow plugin."""

from pipeflow_sql.stage import SqlConfig, SqlStage

__all__ = ["SqlConfig", "SqlStage"]
