"""Caching, re-runs, retries, timeouts and resume, observed through what actually ran.

Every example function appends its name to ``calls.log`` beside the spec when it really runs, so
the tests check the cache by its effect (a reused stage never calls user code) as well as by the
recorded state and the reason the run gives.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import calls, pipeflow, pipeflow_ok, show_run, stage_lines

from pipeflow.errors import UsageError
from pipeflow.runner.session import run
from pipeflow.spec.load import load
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

LOG_HELPER = """
    from pathlib import Path

    def _called(name):
        with open(Path(__file__).with_name("calls.log"), "a") as fh:
            fh.write(name + "\\n")
"""

FILES = {
    "load.py": LOG_HELPER
    + """
    def numbers(n):
        _called("numbers")
        return list(range(n))
    """,
    "steps.py": LOG_HELPER
    + """
    def total(xs):
        _called("total")
        return sum(xs)

    def scale(x, k):
        _called("scale")
        return x * k
    """,
    "report.py": LOG_HELPER
    + """
    def fmt(t):
        _called("fmt")
        return f"total={t}"

    def count(xs):
        _called("count")
        return len(xs)
    """,
}

SPEC = """
    pipeline: cache-demo
    params: {n: 4, k: 2}
    stages:
      raw: {type: python, with: {function: "load:numbers", kwargs: {n: "${params.n}"}}}
      total: {type: python, inputs: {xs: raw}, with: {function: "steps:total"}}
      scaled: {type: python, inputs: {x: total}, with: {function: "steps:scale", kwargs: {k: "${params.k}"}}}
      summary: {type: python, inputs: {t: scaled}, with: {function: "report:fmt"}}
      side: {type: python, inputs: {xs: raw}, with: {function: "report:count"}}
"""

ALL = ["raw", "total", "scaled", "summary", "side"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "proj", SPEC, FILES)


def states(report) -> dict[str, str]:
    return {n: str(o.state) for n, o in report.stages.items()}


def test_second_run_reuses_every_stage_and_says_why(project: Path) -> None:
    first = pipeflow_ok(["run", project])
    assert " 5 done, 0 cached" in first.stdout
    first_id = show_run(project)["run"]["id"]

    second = pipeflow_ok(["run", project])
    assert "5 stages, 0 to run, 5 reused from the store" in second.stdout
    lines = stage_lines(second.stdout)
    assert set(lines) == set(ALL)
    for name, (state, detail) in lines.items():
        assert state == "cached", (name, state)
        assert detail == f"unchanged: same type, config, code and inputs as run {first_id}", detail
    assert " 0 done, 5 cached, 0 failed" in second.stdout

    recorded = show_run(project)
    assert recorded["run"]["id"] != first_id and recorded["run"]["state"] == "done"
    assert all(s["state"] == "cached" and s["cache_hit"] == 1 for s in recorded["stages"])
    assert sorted(calls(project.parent)) == sorted(["numbers", "total", "scale", "fmt", "count"])


def test_editing_a_module_reruns_only_the_stages_that_call_it(project: Path) -> None:
    base = project.parent
    assert run(project).ok
    steps = base / "steps.py"

    # a harmless edit: total and scaled re-run (code changed) and produce the same bytes, so
    # summary, planned to run, is reused at run time; stages of other modules stay cached
    steps.write_text(steps.read_text() + "\n# a comment\n")
    report = run(project)
    assert report.ok
    assert states(report) == {
        "raw": "cached",
        "total": "done",
        "scaled": "done",
        "summary": "cached",
        "side": "cached",
    }
    assert report.stages["total"].reason == "code changed"
    assert "found in the store" in report.stages["summary"].reason
    assert calls(base).count("total") == 2 and calls(base).count("scale") == 2
    assert calls(base).count("fmt") == 1 and calls(base).count("numbers") == 1

    # a real change of behaviour reaches the stages downstream of it
    steps.write_text(steps.read_text().replace("return x * k", "return x * k + 1"))
    report = run(project)
    assert states(report) == {
        "raw": "cached",
        "total": "done",
        "scaled": "done",
        "summary": "done",
        "side": "cached",
    }
    assert report.load("summary") == f"total={sum(range(4)) * 2 + 1}"
    assert calls(base).count("fmt") == 2 and calls(base).count("count") == 1


def test_set_override_reruns_the_changed_stage_and_its_dependants(project: Path) -> None:
    pipeflow_ok(["run", project])
    proc = pipeflow_ok(["run", project, "--set", "params.k=3"])
    lines = stage_lines(proc.stdout)
    assert {n: s for n, (s, _) in lines.items()} == {
        "raw": "cached",
        "total": "cached",
        "side": "cached",
        "scaled": "done",
        "summary": "done",
    }
    assert "scaled       will run: config changed: with.kwargs.k 2 -> 3" in proc.stdout, proc.stdout
    assert "summary      will run: upstream stage 'scaled' will run" in proc.stdout
    recorded = show_run(project)
    assert recorded["params"] == {"n": 4, "k": 3}
    assert recorded["by_stage"]["scaled"]["reason"] == "config changed: with.kwargs.k 2 -> 3"
    assert calls(project.parent).count("scale") == 2 and calls(project.parent).count("total") == 1

    # back to the original value: the first result is still in the store
    again = run(project)
    assert all(s == "cached" for s in states(again).values())
    assert again.load("summary") == "total=12"


def test_force_reruns_every_stage(project: Path) -> None:
    assert run(project).ok
    report = run(project, force=True)
    assert all(s == "done" for s in states(report).values())
    assert all(o.reason == "forced (--force)" for o in report.stages.values())
    assert sorted(calls(project.parent)) == sorted(
        2 * ["numbers", "total", "scale", "fmt", "count"]
    )


def test_force_on_the_cli_reruns_every_stage(project: Path) -> None:
    pipeflow_ok(["run", project])
    proc = pipeflow_ok(["run", project, "--force"])
    assert " 5 done, 0 cached" in proc.stdout
    assert all(s["reason"] == "forced (--force)" for s in show_run(project)["stages"])


def test_a_stage_with_cache_false_runs_every_time(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        SPEC.replace(
            'with: {function: "report:count"}}', 'cache: false, with: {function: "report:count"}}'
        ),
        FILES,
    )
    assert run(spec).ok
    report = run(spec)
    assert states(report) == {
        "raw": "cached",
        "total": "cached",
        "scaled": "cached",
        "summary": "cached",
        "side": "done",
    }
    assert report.stages["side"].reason == "cache disabled for this stage (cache: false)"
    assert calls(tmp_path).count("count") == 2 and calls(tmp_path).count("numbers") == 1


def test_only_runs_the_named_stage_on_stored_upstream_results(project: Path) -> None:
    assert run(project).ok
    report = run(project, only=["scaled"], force=True)
    assert states(report) == {"raw": "cached", "total": "cached", "scaled": "done"}, (
        "downstream is not part of --only"
    )
    assert calls(project.parent).count("scale") == 2
    assert calls(project.parent).count("total") == 1

    # without --force the stage itself is reused too; one stage may be named by a string
    assert states(run(project, only="scaled")) == {
        "raw": "cached",
        "total": "cached",
        "scaled": "cached",
    }


def test_from_runs_the_stage_and_everything_downstream(project: Path) -> None:
    assert run(project).ok
    report = run(project, from_=["total"], force=True)
    assert states(report) == {"raw": "cached", "total": "done", "scaled": "done", "summary": "done"}
    assert "side" not in report.stages
    assert calls(project.parent).count("numbers") == 1 and calls(project.parent).count("count") == 1


def test_only_without_stored_upstream_is_a_clear_usage_error(project: Path) -> None:
    proc = pipeflow(["run", project, "--only", "scaled"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: stage 'raw' (needed by scaled) has no stored result"), message
    assert "run it first (without --only/--from)" in message
    assert calls(project.parent) == [], "nothing ran"

    store, db = open_store(load(project))
    try:
        assert db.runs() == [], "a refused run is not recorded"
    finally:
        db.close()

    # the same after an upstream changed: its new result was never stored
    assert run(project).ok
    (project.parent / "load.py").write_text(
        (project.parent / "load.py").read_text().replace("range(n)", "range(1, n)")
    )
    with pytest.raises(
        UsageError, match=r"stage 'raw' \(needed by scaled, summary, total\) has no stored result"
    ):
        run(project, from_=["total"])


def test_only_an_unknown_stage_suggests_the_close_name(project: Path) -> None:
    proc = pipeflow(["run", project, "--only", "scaledd"])
    assert proc.returncode == 2
    assert (
        "no stage named 'scaledd' in pipeline 'cache-demo'; did you mean 'scaled'?" in proc.stderr
    )


RETRY_FILES = {
    "flaky.py": """
    from pathlib import Path

    def twice(ctx):
        counter = Path(__file__).with_name("attempts.log")
        with open(counter, "a") as fh:
            fh.write(f"{ctx.attempt}\\n")
        if len(counter.read_text().split()) < 2:
            raise ConnectionError("transient failure on the first attempt")
        return "ok"

    def never(ctx):
        raise ValueError(f"still broken on attempt {ctx.attempt}")
    """
}


def test_retries_rerun_a_failing_attempt_until_it_succeeds(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: retries
        stages:
          flaky: {type: python, retries: 2, with: {function: "flaky:twice"}}
        """,
        RETRY_FILES,
    )
    report = run(spec)
    assert report.ok, report.stages["flaky"].error
    assert report.stages["flaky"].attempts == 2
    assert report.load("flaky") == "ok"
    assert (tmp_path / "attempts.log").read_text().split() == ["1", "2"], (
        "ctx.attempt counts attempts"
    )
    assert show_run(spec)["by_stage"]["flaky"]["attempts"] == 2


def test_retries_exhausted_fail_with_the_last_error_and_the_attempt_count(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: retries
        stages:
          broken: {type: python, retries: 2, with: {function: "flaky:never"}}
        """,
        RETRY_FILES,
    )
    proc = pipeflow(["run", spec])
    assert proc.returncode == 1
    assert "ValueError: still broken on attempt 3 (after 3 attempts)" in proc.stdout, proc.stdout
    recorded = show_run(spec)["by_stage"]["broken"]
    assert recorded["state"] == "failed" and recorded["attempts"] == 3
    assert "still broken on attempt 3" in recorded["traceback"]


def test_without_retries_the_first_failure_is_final(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        'pipeline: once\nstages:\n  flaky: {type: python, with: {function: "flaky:twice"}}\n',
        RETRY_FILES,
    )
    report = run(spec)
    assert report.stages["flaky"].state == "failed"
    assert report.stages["flaky"].attempts == 1
    assert report.stages["flaky"].error == "ConnectionError: transient failure on the first attempt"


TIMEOUT_FILES = {
    "slow.py": """
    import time

    def quick():
        return 1

    def sleepy(x, seconds):
        time.sleep(seconds)
        return x
    """
}


def test_timeout_fails_a_stuck_stage_with_a_clear_message_and_the_run_ends(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: timeouts
        stages:
          quick: {type: python, with: {function: "slow:quick"}}
          stuck: {type: python, inputs: {x: quick}, timeout_s: 0.5, with: {function: "slow:sleepy", kwargs: {seconds: 60}}}
          after: {type: python, inputs: {x: stuck}, with: {function: "slow:sleepy", kwargs: {seconds: 0}}}
        """,
        TIMEOUT_FILES,
    )
    t0 = time.monotonic()
    proc = pipeflow(["run", spec], timeout=90)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stage 'stuck' failed: timed out after 0.5 s (timeout_s)" in proc.stdout, proc.stdout
    # the stuck stage sleeps 60 s: well under that, with room for a busy machine's slow start
    assert elapsed < 45, (
        f"pipeflow run took {elapsed:.1f}s: a timed-out stage must not keep the process alive"
    )
    stages = show_run(spec)["by_stage"]
    assert stages["stuck"]["state"] == "failed"
    assert stages["stuck"]["error"] == "timed out after 0.5 s (timeout_s)"
    assert stages["after"]["state"] == "skipped"
    assert stages["quick"]["state"] == "done"


def test_a_stage_within_its_timeout_succeeds(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: timeouts
        stages:
          quick: {type: python, with: {function: "slow:quick"}}
          fine: {type: python, inputs: {x: quick}, timeout_s: 30, with: {function: "slow:sleepy", kwargs: {seconds: 0.05}}}
        """,
        TIMEOUT_FILES,
    )
    report = run(spec)
    assert report.ok and report.load("fine") == 1


RESUME_SPEC = """
    pipeline: resume
    stages:
      raw: {type: python, with: {function: "load:numbers", kwargs: {n: 5}}}
      side: {type: python, inputs: {xs: raw}, with: {function: "report:count"}}
      model: {type: python, inputs: {xs: raw}, with: {function: "fit:fit"}}
      scored: {type: python, inputs: {m: model, xs: raw}, with: {function: "fit:score"}}
"""


def test_resume_after_fixing_a_failed_stage_reuses_finished_stages(tmp_path: Path) -> None:
    fit_broken = (
        LOG_HELPER
        + """
    def fit(xs):
        _called("fit")
        raise RuntimeError("bug in fit")

    def score(m, xs):
        _called("score")
        return [m * x for x in xs]
    """
    )
    spec = write_spec(tmp_path, RESUME_SPEC, {**FILES, "fit.py": fit_broken})
    first = run(spec)
    assert states(first) == {"raw": "done", "side": "done", "model": "failed", "scored": "skipped"}
    assert first.stages["scored"].reason == "upstream stage 'model' failed"
    recorded = show_run(spec)
    assert recorded["run"]["state"] == "failed"
    assert recorded["run"]["error"] == "failed stages: model"

    (tmp_path / "fit.py").write_text(
        (tmp_path / "fit.py").read_text().replace('raise RuntimeError("bug in fit")', "return 2")
    )
    second = run(spec)
    assert second.ok
    assert states(second) == {"raw": "cached", "side": "cached", "model": "done", "scored": "done"}
    assert second.stages["model"].reason == "code changed"
    assert second.stages["raw"].reason.endswith(f"as run {first.run_id}")
    assert second.load("scored") == [0, 2, 4, 6, 8]
    log = calls(tmp_path)
    assert log.count("numbers") == 1 and log.count("count") == 1, log
    assert log.count("fit") == 2 and log.count("score") == 1


def test_resume_after_an_external_fix_says_the_previous_attempt_failed(tmp_path: Path) -> None:
    reader = """
    from pathlib import Path

    def fit(xs):
        return int(Path(__file__).with_name("factor.txt").read_text()) * len(xs)

    def score(m, xs):
        return m
    """
    spec = write_spec(tmp_path, RESUME_SPEC, {**FILES, "fit.py": reader})
    first = run(spec)
    assert first.stages["model"].state == "failed"
    assert "FileNotFoundError" in (first.stages["model"].error or "")

    (tmp_path / "factor.txt").write_text("3")
    second = run(spec)
    assert states(second) == {"raw": "cached", "side": "cached", "model": "done", "scored": "done"}
    assert second.stages["model"].reason == "previous attempt failed"
    assert second.load("scored") == 15
    assert calls(tmp_path).count("numbers") == 1
