"""Executors: run a list of :class:`StageTask` on some Dask scheduler and report results."""
