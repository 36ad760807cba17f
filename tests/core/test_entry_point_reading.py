"""The installed entry points are read once per process, for pipeflow's groups and pydantic's
plugins alike (pipeflow.core.entrypoints.before_models), and a pydantic plugin that is installed
is still found by pydantic. Real Python processes, with a real distribution put on their path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeflow.testing import write_spec

COUNT_AND_COMPILE = """
    import importlib.metadata as m
    calls = []
    real = m.distributions
    m.distributions = lambda **kw: calls.append(kw) or real(**kw)
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.spec.load import load
    import sys
    compile_pipeline(load(sys.argv[1]))
    from pydantic.plugin import _loader
    print(len(calls), _loader._plugins)
"""


def _python(code: str, *args: str, path: list[Path] = ()) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), *sys.path])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_loading_and_compiling_a_spec_reads_the_installed_distributions_once(
    tmp_path: Path,
) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:a"}}
        """,
        {"steps.py": "def a():\n    return 1\n"},
    )
    assert _python(COUNT_AND_COMPILE, str(spec)) == "1 {}"


def test_an_installed_pydantic_plugin_is_still_found_by_pydantic(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "spy_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nspy = spy_plugin:plugin\n")
    (site / "spy_plugin.py").write_text(
        textwrap.dedent(
            """
            seen = []

            class _Plugin:
                def new_schema_validator(self, schema, schema_type, *args, **kwargs):
                    seen.append(getattr(schema_type, "__name__", str(schema_type)))
                    return None, None, None

            plugin = _Plugin()
            """
        )
    )
    out = _python(
        """
        import pipeflow.core.stage
        import pipeflow.spec.model
        import spy_plugin
        print("EmptyConfig" in spy_plugin.seen, "PipelineSpec" in spy_plugin.seen)
        """,
        path=[site],
    )
    assert out == "True True"
