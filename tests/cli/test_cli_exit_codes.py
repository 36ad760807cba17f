"""Unit tests for the command line: exit codes, messages and what `--help` does not import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeflow.cli import main
from pipeflow.testing import write_spec

STEPS = """
def const(value):
    return value

def add(a, b):
    return a + b

def boom(a):
    raise ValueError("boom on purpose")

def odd(a):
    raise ValueError("bad rows [bold]x[/bold] at 12:30:45 :smile: \\\\")
"""

GOOD = """\
pipeline: cli-demo
stages:
  one: {type: python, with: {function: "steps:const", kwargs: {value: 1}}}
  two: {type: python, with: {function: "steps:const", kwargs: {value: 2}}}
  sum: {type: python, inputs: {a: one, b: two}, with: {function: "steps:add"}}
"""

BAD = """\
pipeline: cli-demo
stages:
  one:
    type: python
    retries: many
    with: {function: "steps:const"}
"""

FAILING = GOOD + '  bad: {type: python, inputs: {a: one}, with: {function: "steps:boom"}}\n'


def _spec(tmp_path: Path, text: str = GOOD) -> Path:
    return write_spec(tmp_path, text, {"steps.py": STEPS}, name="spec.yaml")


def test_check_good_spec_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "3 stages" in out and "2 edges" in out


def test_check_bad_spec_exits_2_with_position_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, BAD)
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"spec\.yaml:5:\d+", err), err
    assert "retries" in err
    assert "Traceback" not in err


def test_check_of_several_specs_checks_each_and_exits_2_if_any_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _spec(tmp_path)
    bad = write_spec(tmp_path, BAD, {}, name="bad.yaml")
    other = write_spec(tmp_path, GOOD.replace("cli-demo", "other"), {}, name="other.yaml")
    assert main(["check", str(good), str(bad), str(other)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"ok: {good}: pipeline 'cli-demo', 3 stages, 2 edges",
        f"ok: {other}: pipeline 'other', 3 stages, 2 edges",
    ]
    assert err.startswith(f"error: {bad}:5:") and "retries" in err and "Traceback" not in err
    assert main(["check", str(good), str(other)]) == 0


def test_check_graph_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, GOOD.replace("{a: one, b: two}", "{a: onee, b: two}"))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'one'" in err and "spec.yaml:5:35" in err


def test_several_problems_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, GOOD.replace("{a: one, b: two}", "{a: x, b: y}"))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "2 problems found" in err


def test_a_message_of_several_lines_is_one_error_not_several_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeflow.cli._common import error as _error

    _error("cannot do it:\nthe library's second line")
    assert capsys.readouterr().err == "error: cannot do it:\n  the library's second line\n"
    _error("a\nb", ["spec.yaml:1:1: a", "spec.yaml:2:1: b"])
    assert capsys.readouterr().err.splitlines() == [
        "error: 2 problems found:",
        "  spec.yaml:1:1: a",
        "  spec.yaml:2:1: b",
    ]


def test_monitor_rules_that_are_not_yaml_name_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("alerts:\n  - {metric: drift_share\n")
    assert main(["monitor", "m@production", "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {rules}:3:1: invalid YAML: ") and err.count("\n") == 1, err


def test_monitor_windows_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "m@production", "--windows", "0"]) == 2
    assert capsys.readouterr().err == "error: --windows must be at least 1, got 0\n"


def test_check_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err


def test_set_override_applies_on_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["check", str(spec), "--set", "stages.one.retries=many"]) == 2
    assert "--set stages.one.retries=many" in capsys.readouterr().err
    assert main(["check", str(spec), "--set", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_debug_shows_a_traceback_for_a_bad_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, BAD)
    assert main(["--debug", "check", str(spec)]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["check", str(spec), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_graph_mermaid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["graph", str(spec), "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR")
    for name in ("one", "two", "sum"):
        assert name in out
    assert "one -->" in out and "two -->" in out


def test_graph_dot_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["graph", str(spec), "--format", "dot"]) == 0
    assert '"one" -> "sum"' in capsys.readouterr().out
    assert main(["graph", str(spec)]) == 0
    assert "pipeline cli-demo: 3 stages" in capsys.readouterr().out


def test_stages_lists_python_and_sql(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    assert "python" in out and "sql" in out
    assert main(["stages", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert {"python", "sql"} <= set(described)
    assert "function" in described["python"]["config"]


def test_schema_is_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "pipeflow pipeline spec"
    target = tmp_path / "schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert json.loads(target.read_text()) == schema


def test_version_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pipeflow ")
    assert main([]) == 0
    assert "usage" in capsys.readouterr().out


def test_run_then_runs_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["run", str(spec), "--executor", "sync", "-q"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--spec", str(spec)]) == 0
    assert "cli-demo" in capsys.readouterr().out
    assert main(["runs", "show", "latest", "--json", "--spec", str(spec)]) == 0
    shown = json.loads(capsys.readouterr().out)
    states = {s["stage"]: s["state"] for s in shown["stages"]}
    assert states == {"one": "done", "two": "done", "sum": "done"}
    db = tmp_path / ".pipeflow" / "pipeflow.db"
    assert main(["runs", "show", "latest", "--json", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["stages"]
    assert main(["runs", "output", "latest", "sum", "--db", str(db)]) == 0
    assert "3" in capsys.readouterr().out


def test_second_run_is_all_cached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["run", str(spec), "--executor", "sync", "-q"]) == 0
    assert main(["run", str(spec), "--executor", "sync", "-q"]) == 0
    capsys.readouterr()
    assert main(["runs", "show", "latest", "--json", "--spec", str(spec)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {s["state"] for s in shown["stages"]} == {"cached"}


def test_run_with_a_failing_stage_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, FAILING)
    assert main(["run", str(spec), "--executor", "sync", "-q"]) == 1
    captured = capsys.readouterr()
    assert "boom on purpose" in captured.out + captured.err
    assert main(["runs", "show", "latest", "--json", "--spec", str(spec)]) == 0
    shown = json.loads(capsys.readouterr().out)
    states = {s["stage"]: s["state"] for s in shown["stages"]}
    assert states["bad"] == "failed" and states["sum"] == "done"


def test_a_stage_error_is_shown_as_raised_by_run_and_runs_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error's text is data: rich markup, emoji codes and a trailing backslash in it are
    printed as they are, by ``pipeflow run`` and by ``pipeflow runs show``."""
    raised = "ValueError: bad rows [bold]x[/bold] at 12:30:45 :smile: \\"
    spec = _spec(tmp_path, FAILING.replace("steps:boom", "steps:odd"))
    assert main(["run", str(spec), "--executor", "sync"]) == 1
    out = capsys.readouterr().out
    assert f"stage 'bad' failed: {raised}" in out.splitlines()
    assert any(line.endswith(f"failed  {raised}") for line in out.splitlines()), out
    assert main(["runs", "show", "latest", "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert raised in out, out


def test_run_unknown_only_stage_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    assert main(["run", str(spec), "--executor", "sync", "--only", "suum"]) == 2
    assert "did you mean 'sum'" in capsys.readouterr().err


def test_runs_without_a_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "list", "--db", str(tmp_path / "none.db")]) == 2
    assert "no pipeflow metadata" in capsys.readouterr().err


def test_unknown_run_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert main(["run", str(spec), "--executor", "sync", "-q"]) == 0
    capsys.readouterr()
    code = main(["runs", "show", "zzzz", "--spec", str(spec)])
    assert code != 0
    assert "Traceback" not in capsys.readouterr().err


def test_bad_spec_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow", "check", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert re.search(r"spec\.yaml:5:\d+", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


HEAVY = ("pandas", "dask", "distributed", "pyarrow", "sklearn")


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, pipeflow.cli as c\n"
        "try:\n"
        "    c.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    for name in HEAVY:
        assert name not in imported, f"--help imported {name}"


def test_a_missing_store_names_where_its_path_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPEFLOW_STORE", str(tmp_path / "gone"))
    assert main(["models", "list"]) == 2
    assert (
        f"no pipeflow store at {tmp_path / 'gone'} (from $PIPEFLOW_STORE)"
        in capsys.readouterr().err
    )
    assert main(["models", "list", "--store", str(tmp_path / "typo")]) == 2
    assert f"no pipeflow store at {tmp_path / 'typo'} (from --store)" in capsys.readouterr().err


def test_monitor_rule_mistakes_read_like_spec_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("alerts:\n  - {metric: drift_share, threshold: '> 0.3', severty: warning}\n")
    assert main(["monitor", "m@production", "--rules", str(typo)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {typo}: alerts[0].severty: unknown key 'severty'; did you mean 'severity'?"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  - {metric: drift_share, threshold: '=> 0.3'}\n")
    assert main(["monitor", "m@production", "--rules", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"error: {bad}: alerts[0].threshold: expected a comparison such as '> 0.2', got '=> 0.3'\n"
    )


def test_a_stage_with_a_bad_setting_is_one_problem_even_when_a_trigger_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, GOOD)
    text = spec.read_text().replace("stages:\n", "triggers: {on_data_change: [one]}\nstages:\n", 1)
    spec.write_text(text)
    assert main(["check", str(spec), "--set", "stages.one.with.kwargs=many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Value error" not in err, err  # no cascade from the trigger
    assert err.count("got 'many'") == 1, err
