"""The `pipeflow` command: exit codes, one-line errors with file:line:col, and every subcommand.

Most tests call ``pipeflow.cli.main`` in-process (fast, output captured by capsys); a few drive
the installed console script in a subprocess to prove what a user actually sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import PIPEFLOW, pipeflow

from pipeflow.cli import main
from pipeflow.testing import write_spec

GOOD = """\
pipeline: cli-demo
params: {n: 3}
stages:
  a: {type: python, with: {function: "steps:const", kwargs: {v: "${params.n}"}}}
  b: {type: python, inputs: {x: a}, with: {function: "steps:double"}}
"""
STEPS = """\
def const(v):
    return v

def double(x):
    return x * 2

def boom(x):
    raise ValueError("boom on purpose")
"""

# (name, spec text, (line, column) the first problem must point at, words it must say)
BAD_SPECS = [
    ("syntax", "pipeline: x\nstages:\n  a: {type: python\n", (4, 1), "invalid YAML"),
    (
        "duplicate-key",
        "pipeline: x\nstages:\n  a: {type: python}\n  a: {type: python}\n",
        (4, 3),
        "duplicate key 'a'",
    ),
    ("yaml-tag", "pipeline: !!python/name:os.system\nstages: {}\n", (1, 11), "is not allowed"),
    (
        "unknown-key",
        "pipeline: x\nstages:\n  a:\n    type: python\n    retires: 1\n    with: {function: 's:f'}\n",
        (5, 5),
        "did you mean 'retries'",
    ),
    (
        "wrong-type",
        "pipeline: x\nstages:\n  a:\n    type: python\n    retries: many\n    with: {function: 's:f'}\n",
        (5, 14),
        "valid integer",
    ),
    (
        "unknown-param",
        "pipeline: x\nparams: {seed: 1}\nstages:\n  a: {type: python, with: {function: 's:f', kwargs: {v: '${params.sed}'}}}\n",
        (4, 57),
        "unknown param 'params.sed'",
    ),
    (
        "missing-stage",
        "pipeline: x\nstages:\n  a: {type: python, inputs: {x: ghost}, with: {function: 's:f'}}\n",
        (3, 33),
        "stage 'ghost', which does not exist",
    ),
    (
        "kind-mismatch",
        "pipeline: x\nstages:\n  a: {type: python, with: {function: 's:f', outputs: {t: table}}}\n"
        "  b: {type: python, inputs: {m: a.t}, with: {function: 's:g', input_kinds: {m: model}}}\n",
        (4, 33),
        "produces 'table', but stage 'b' input 'm' expects 'model'",
    ),
    (
        "cycle",
        "pipeline: x\nstages:\n  a: {type: python, inputs: {x: b}, with: {function: 's:f'}}\n"
        "  b: {type: python, inputs: {x: a}, with: {function: 's:f'}}\n",
        (3, 29),
        "cycle between stages",
    ),
    ("unknown-type", "pipeline: x\nstages:\n  a: {type: pyhton}\n", (3, 13), "installed types:"),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_spec(tmp_path, GOOD, {"steps.py": STEPS})


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- check


def test_check_good_spec(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, err = _cli(capsys, "check", project)
    assert code == 0, err
    assert out.strip() == f"ok: {project}: pipeline 'cli-demo', 2 stages, 1 edges"


@pytest.mark.parametrize(
    "name, text, position, words", BAD_SPECS, ids=[case[0] for case in BAD_SPECS]
)
def test_check_bad_spec_exits_2_with_a_located_one_line_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    text: str,
    position: tuple[int, int],
    words: str,
) -> None:
    spec = write_spec(tmp_path, text)
    code, out, err = _cli(capsys, "check", spec)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {spec}:{position[0]}:{position[1]}: "), err
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", [BAD_SPECS[0], BAD_SPECS[7]], ids=["syntax", "kind-mismatch"])
def test_console_script_reports_bad_specs_without_a_traceback(tmp_path: Path, case: tuple) -> None:
    _, text, (line, col), words = case
    spec = write_spec(tmp_path, text)
    done = pipeflow(["check", spec])
    assert done.returncode == 2
    assert f"{spec}:{line}:{col}:" in done.stderr and words in done.stderr
    assert "Traceback" not in done.stderr


def test_several_problems_are_listed_one_per_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "pipeline: x\nstages:\n  a: {type: pyhton}\n  b: {type: python, inputs: {x: zz}, with: {function: 's:f'}}\n",
    )
    code, _, err = _cli(capsys, "check", spec)
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == "error: 2 problems found:"
    assert lines[1].startswith(f"  {spec}:3:") and "unknown stage type 'pyhton'" in lines[1]
    assert lines[2].startswith(f"  {spec}:4:") and "stage 'zz'" in lines[2]


def test_missing_spec_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "check", tmp_path / "nope.yaml")
    assert code == 2 and "spec file not found" in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, BAD_SPECS[0][1])
    code, _, err = _cli(capsys, "--debug", "check", spec)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "SpecError" in err
    assert f"error: {spec}:4:1:" in err
    code, _, err = _cli(capsys, "check", spec, "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err


def test_check_with_set_override(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = _cli(capsys, "check", project, "--set", "stages.a.retries=many")
    assert code == 2
    assert err.startswith("error: --set stages.a.retries=many: stage 'a', field 'retries'")
    code, _, err = _cli(capsys, "check", project, "--set", "pipeline.x=1")
    assert code == 2 and "'pipeline' is a string, not a mapping" in err
    code, _, err = _cli(capsys, "check", project, "--set", "noequals")
    assert code == 2 and "--set expects KEY=VALUE" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["graph", "x.yaml", "--format", "png"])
    assert info.value.code == 2
    assert "invalid choice: 'png'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- graph


def test_graph_formats(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, text, _ = _cli(capsys, "graph", project)
    assert code == 0
    assert text.splitlines()[0] == "pipeline cli-demo: 2 stages"
    assert "      in:  x <- a.out [any]" in text
    code, mermaid, _ = _cli(capsys, "graph", project, "--format", "mermaid")
    assert code == 0 and mermaid.startswith("flowchart LR") and "a -->|out to x| b" in mermaid
    code, dot, _ = _cli(capsys, "graph", project, "--format", "dot")
    assert code == 0 and dot.startswith('digraph "cli-demo" {') and '"a" -> "b"' in dot


def test_graph_of_a_bad_spec_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, BAD_SPECS[8][1])
    code, out, err = _cli(capsys, "graph", spec, "--format", "dot")
    assert code == 2 and out == "" and "cycle between stages" in err


# ----------------------------------------------------------------------------- run and runs


def test_run_then_runs_list_and_show(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, err = _cli(capsys, "run", project, "--executor", "sync")
    assert code == 0, out + err
    assert "first run of this stage" in out
    assert "2 done, 0 cached, 0 failed" in out

    code, out, _ = _cli(capsys, "run", project, "--executor", "sync", "--set", "params.n=5")
    assert code == 0
    assert "config changed: with.kwargs.v 3 -> 5" in out

    code, out, _ = _cli(capsys, "runs", "list", "--spec", project)
    assert code == 0
    assert out.count("cli-demo") == 2

    code, out, _ = _cli(capsys, "runs", "show", "latest", "--spec", project, "--json")
    assert code == 0
    shown = json.loads(out)
    # a narrow terminal squeezes the other columns, never the run id
    narrow = pipeflow(["runs", "list", "--spec", project], env={**os.environ, "COLUMNS": "60"})
    assert shown["run"]["id"] in narrow.stdout, narrow.stdout
    assert shown["run"]["state"] == "done" and shown["params"] == {"n": 5}
    assert json.loads(shown["run"]["overrides"]) == ["params.n=5"]
    assert [s["stage"] for s in shown["stages"]] == ["a", "b"]
    assert {(o["stage"], o["port"]) for o in shown["outputs"]} == {("a", "out"), ("b", "out")}
    assert [(e["src_stage"], e["dst_stage"], e["dst_port"]) for e in shown["lineage"]] == [
        ("a", "b", "x")
    ]

    code, out, _ = _cli(capsys, "runs", "show", shown["run"]["id"][:-1], "--spec", project)
    assert code == 0
    assert f"run {shown['run']['id']}" in out and "lineage" in out

    code, _, err = _cli(capsys, "runs", "show", "no-such-run", "--spec", project)
    assert code == 2 and "no run 'no-such-run'" in err

    db = project.parent / ".pipeflow" / "pipeflow.db"
    code, out, _ = _cli(capsys, "runs", "list", "--db", db, "--pipeline", "other")
    assert code == 0 and "no runs recorded yet" in out


def test_second_run_is_cached(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert _cli(capsys, "run", project, "-q", "--executor", "sync")[0] == 0
    code, out, _ = _cli(capsys, "run", project, "--executor", "sync")
    assert code == 0 and "0 done, 2 cached" in out


def test_run_with_a_failing_stage_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, GOOD.replace("steps:double", "steps:boom"), {"steps.py": STEPS})
    code, out, err = _cli(capsys, "run", spec, "--executor", "sync")
    assert code == 1
    assert "boom on purpose" in out + err
    assert "1 failed" in out
    code, out, _ = _cli(capsys, "runs", "show", "latest", "--spec", spec, "--json")
    shown = json.loads(out)
    assert shown["run"]["state"] == "failed"
    failed = {s["stage"]: s for s in shown["stages"]}["b"]
    assert failed["state"] == "failed" and "boom on purpose" in failed["error"]


def test_run_unknown_only_stage_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    code, _, err = _cli(capsys, "run", project, "--only", "bb")
    assert code == 2 and "no stage named 'bb'" in err and "did you mean 'b'" in err


def test_runs_without_a_database_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _cli(capsys, "runs", "list", "--db", tmp_path / "none.db")
    assert code == 2 and "no pipeflow metadata at" in err


def test_console_script_runs_a_pipeline(project: Path) -> None:
    done = pipeflow(["run", project, "--set", "params.n=4"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 done, 0 cached, 0 failed" in done.stdout
    shown = pipeflow(["runs", "show", "latest", "--json", "--spec", project])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["params"] == {"n": 4}


# ----------------------------------------------------------------------------- stages, schema


def test_stages_lists_installed_types_with_config_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _cli(capsys, "stages")
    assert code == 0
    for name in ("python", "ingest", "split", "train", "evaluate"):
        assert name in out
    assert "function" in out and "input_kinds" in out


def test_stages_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "stages", "--json")
    assert code == 0
    info = json.loads(out)
    python = info["python"]
    assert python["config"]["function"]["required"] is True
    assert python["extra_inputs"] == "any"
    assert python["origin"].startswith("pipeflow ")


def test_a_broken_plugin_is_reported_and_the_other_types_still_listed(tmp_path: Path) -> None:
    # an installed distribution whose entry point names a module that does not exist
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pipeflow.stages]\nbroken = no_such_pkg.stage:Broken\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}
    shown = pipeflow(["stages"], env=env)
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr == (
        "error: stage type 'broken' could not be loaded from no_such_pkg.stage:Broken: "
        "ModuleNotFoundError: No module named 'no_such_pkg'\n"
    )
    assert "train v" in shown.stdout and "python v" in shown.stdout and "broken" not in shown.stdout
    as_json = pipeflow(["stages", "--json"], env=env)
    assert as_json.returncode == 2
    info = json.loads(as_json.stdout)
    assert info["broken"] == {
        "origin": "broken-plugin 0.1",
        "error": shown.stderr.removeprefix("error: ").strip(),
    }
    assert info["train"]["origin"].startswith("pipeflow ")


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "pipeflow pipeline spec"
    assert "python" in schema["$defs"]["StageSpec"]["properties"]["type"]["enum"]
    target = tmp_path / "schema.json"
    code, out, _ = _cli(capsys, "schema", "-o", target)
    assert code == 0 and out == ""
    assert json.loads(target.read_text()) == schema


def test_version_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--version")
    assert code == 0 and out.startswith("pipeflow ")
    code, out, _ = _cli(capsys)
    assert code == 0 and "usage: pipeflow" in out


# ----------------------------------------------------------------------------- import weight

HEAVY = ("pandas", "sklearn", "dask", "distributed", "pyarrow", "xgboost", "numpy")


def _modules_after(code: str) -> set[str]:
    prog = (
        "import json, sys\n"
        "from pipeflow.cli import main\n"
        "try:\n"
        f"    {code}\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    return {m.split(".")[0] for m in json.loads(done.stderr.strip().splitlines()[-1])}


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after("main(['--help'])")
    assert "pipeflow" in loaded
    assert loaded.isdisjoint(HEAVY + ("pydantic", "networkx", "rich")), loaded & set(HEAVY)


def test_check_imports_no_ml_or_dask_library(project: Path) -> None:
    loaded = _modules_after(f"main(['check', {str(project)!r}])")
    assert "pydantic" in loaded  # it did validate and compile
    assert "networkx" not in loaded  # the compiler keeps its DAG without it
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def test_each_command_is_listed_under_the_group_that_declares_it() -> None:
    import argparse
    import importlib

    from pipeflow.cli import COMMANDS, GROUPS

    declared = {}
    for group in GROUPS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"pipeflow.cli.{group}").add_parsers(sub)
        declared |= dict.fromkeys(sub.choices, group)
    assert declared == COMMANDS


def test_a_command_line_builds_its_group_only_and_help_the_whole_tree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeflow.cli import COMMANDS, _parser

    def commands(argv: list[str] | None) -> set[str]:
        sub = next(a for a in _parser(argv)._actions if a.dest == "command")
        return set(sub.choices)  # type: ignore[arg-type]

    pipeline = {c for c, g in COMMANDS.items() if g == "pipeline"}
    assert commands(["run", "spec.yaml"]) == commands(["--debug", "check", "x"]) == pipeline
    for argv in (None, [], ["--help"], ["-h", "run"], ["--deb", "run"], ["runn", "x"]):
        assert commands(argv) == set(COMMANDS), argv
    with pytest.raises(SystemExit):
        main(["-h", "run"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS), out


def test_console_script_help_importtime() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", PIPEFLOW, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "usage: pipeflow" in done.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pipeflow" in imported
    assert imported.isdisjoint(HEAVY), imported & set(HEAVY)


def test_every_command_takes_debug_after_it_too() -> None:
    """``pipeflow X ... --debug`` as well as ``pipeflow --debug X ...``, for every command and
    subcommand (``runs list --debug`` was refused as an unrecognized argument)."""
    import argparse

    from pipeflow.cli import _parser

    def leaves(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, Any]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, parser)]
        return [
            leaf
            for name, child in subs[0].choices.items()
            for leaf in leaves(child, f"{path} {name}".strip())
        ]

    found = leaves(_parser(), "")
    assert len(found) > 30
    missing = [path for path, p in found if "--debug" not in p._option_string_actions]
    assert not missing, missing
