"""Built-in stage types. Each is registered in pyproject.toml under ``pipeflow.stages``."""
