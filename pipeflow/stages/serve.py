"""``serve``: make sure a server for a registered model answers at an address.

The stage acts rather than computes, so it is never cached (``Stage.cacheable = False``): each run
checks the address. If a pipeflow server for the same model already answers there, it is left
alone (it follows alias moves by itself: a promotion earlier in the run reaches it within its
reload interval). Otherwise ``pipeflow serve`` is started as a detached process (it outlives the
run; stop it with its pid) and the stage waits until it is ready. The output is the endpoint:
URL, model, version answering, pid and log file.

Wire it after ``promote`` (``inputs: {after: promote}``) so it starts once the alias is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from pipeflow.core.stage import Action, ModelAlias, Port, StageConfig, StageContext
from pipeflow.monitoring.alerts import GuardConfig


class ServeStageConfig(StageConfig):
    model: ModelAlias
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    canary: str | None = Field(None, description="NAME@VERSION taking `weight` of the traffic")
    weight: float = Field(0.1, ge=0, le=1)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_p95_ms: float | None = Field(None, gt=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    min_requests: int = Field(20, ge=1)
    reject_unusual: bool = False
    tokens_file: str | None = Field(
        None, description="bearer tokens file (see pipeflow serve --tokens)"
    )
    audit_dir: str | None = None
    reload_interval_s: float = Field(2.0, gt=0)
    guard: GuardConfig | None = Field(
        None,
        description="roll the alias back when its holder fails live (pipeflow serve --guard): "
        "error_rate, p95_ms, min_accuracy, window, min_requests, cooldown, sinks",
    )
    ready_timeout_s: float = Field(120.0, gt=0)


class ServeStage(Action[ServeStageConfig]):
    """Start (or find) a server for a registered model; output its endpoint."""

    version: ClassVar[str] = "1"
    outputs: ClassVar[Mapping[str, Port]] = {
        "endpoint": Port("endpoint", description="url, model, version, pid and log of the server")
    }
    description = "Start (or find) an HTTP server for a registered model alias."

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        config = self.config
        name = config.model.split("@", 1)[0]
        url = f"http://{config.host}:{config.port}"
        found = _describe(url, name)
        if found is not None:
            if found.get("name") != name:
                raise ValueError(f"{url} already serves model '{found.get('name')}', not '{name}'")
            return {
                "endpoint": {
                    "url": url,
                    "model": name,
                    "version": found.get("version"),
                    "pid": None,
                    "started": False,
                }
            }
        if (
            ctx.store is None
            or "://" in str(ctx.store.url)
            and not str(ctx.store.url).startswith("file://")
        ):
            raise ValueError(
                "the serve stage needs a local store (the server reads the registry from it)"
            )
        root = str(ctx.store.url).removeprefix("file://")
        log_path = os.path.join(root, "serving", f"{name}-{config.port}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        command = [
            sys.executable, "-m", "pipeflow", "serve", config.model,
            "--store", root, "--host", config.host, "--port", str(config.port),
            "--workers", str(config.workers), "--reload-interval", str(config.reload_interval_s),
            "--max-error-rate", str(config.max_error_rate), "--min-requests", str(config.min_requests),
            "--log-level", "warning",
        ]  # fmt: skip
        if config.canary:
            command += ["--canary", config.canary, "--weight", str(config.weight)]
        if config.max_p95_ms is not None:
            command += ["--max-p95-ms", str(config.max_p95_ms)]
        if config.min_accuracy is not None:
            command += ["--min-accuracy", str(config.min_accuracy)]
        if config.reject_unusual:
            command.append("--reject-unusual")
        if config.tokens_file:
            command += ["--tokens", str(ctx.base_dir / config.tokens_file)]
        if config.audit_dir:
            command += ["--audit-dir", str(ctx.base_dir / config.audit_dir)]
        if config.guard is not None:
            guard_file = os.path.join(root, "serving", f"{name}-{config.port}-guard.json")
            with open(guard_file, "w", encoding="utf-8") as fh:
                json.dump({"guard": config.guard.model_dump(mode="json", exclude_none=True)}, fh)
            command += ["--guard", guard_file]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own CLI, arguments from a validated config
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + config.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(log_path, "rb") as fh:
                    tail = fh.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
                raise RuntimeError(
                    f"pipeflow serve exited with code {proc.returncode}: {tail[-1] if tail else 'no output'} (log: {log_path})"
                )
            found = _describe(url, name)
            if found is not None:
                ctx.logger.info(
                    "serving %s@%s at %s (pid %d)", name, found.get("version"), url, proc.pid
                )
                return {
                    "endpoint": {
                        "url": url,
                        "model": name,
                        "version": found.get("version"),
                        "pid": proc.pid,
                        "started": True,
                        "log": log_path,
                    }
                }
            time.sleep(0.2)
        proc.terminate()
        raise TimeoutError(
            f"the server for {config.model} was not ready at {url} within {config.ready_timeout_s:g} s (log: {log_path})"
        )


def _describe(url: str, name: str) -> dict[str, Any] | None:
    """What a pipeflow server at ``url`` serves, or None if nothing answers."""
    try:
        # B310 (urlopen of a file: URL) cannot happen: run() passes the http://HOST:PORT it built
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:  # noqa: S310 # nosec B310
            body = json.loads(r.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return {"name": body.get("model"), "version": body.get("version")}
