"""`pipeflow ui` in a real headless Chromium, over real data: a real run of the tumours project,
a real `pipeflow serve` answering real predictions, drift reports in the monitoring history's
format, and an alert whose message is markup (it must show as text).

Chromium is Debian's (``apt-get install chromium``; ``make install-test`` does it as root), driven
by Playwright's Python API; no browser is downloaded. Without chromium these tests fail, unless
``PIPEFLOW_SKIP_BROWSER=1`` says to skip them.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    PIPEFLOW,
    cli_env,
    free_port,
    kill_group,
    pipeflow_ok,
    sample_rows,
)

pytestmark = pytest.mark.slow

MARKUP = '<img src=x onerror="document.title=1"><b>bold</b>'
PREDICTIONS = 50


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("PIPEFLOW_SKIP_BROWSER") == "1":
            pytest.skip("no chromium and PIPEFLOW_SKIP_BROWSER=1")
        pytest.fail(
            "the browser tests need Debian's chromium on PATH: `apt-get install chromium` "
            "(make install-test does it as root), or set PIPEFLOW_SKIP_BROWSER=1 to skip them"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need playwright: pip install -e '.[test]'")
    return found


def _start(args: list[str], cwd: Path, log: Path, ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PIPEFLOW, *args],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1) as poll:  # one client: each httpx.get builds an SSL context
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited {proc.returncode}: {log.read_text()}")
            try:
                if poll.get(ready).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    kill_group(proc)
    raise AssertionError(f"{args[0]} did not become ready: {log.read_text()}")


def _report(end: float, drift_share: float, accuracy: float, psi: float) -> dict[str, Any]:
    """A drift report in the format documented in pipeflow.monitoring.history."""
    return {
        "model": "tumours",
        "version": 1,
        "alias": "production",
        "created": end,
        "window": {"start": end - 1800, "end": end, "seconds": 1800},
        "rows": PREDICTIONS,
        "drift_share": drift_share,
        "drifted": drift_share > 0.3,
        "features": {
            "mean_radius": {
                "role": "numeric",
                "psi": psi,
                "ks": 0.2,
                "drifted": psi > 0.2,
                "missing_rate": 0.0,
            },
            "mean_texture": {
                "role": "numeric",
                "psi": 0.05,
                "ks": 0.04,
                "drifted": False,
                "missing_rate": 0.0,
            },
            "size_band": {
                "role": "categorical",
                "psi": 0.01,
                "chi2": 0.4,
                "p_value": 0.8,
                "unseen_rate": 0.0,
                "drifted": False,
            },
        },
        "prediction": {
            "psi": 0.03,
            "distribution": {"benign": 0.6, "malignant": 0.4},
            "reference": {"benign": 0.63, "malignant": 0.37},
        },
        "accuracy": {"labelled": 40, "accuracy": accuracy},
        "latency_ms": {"p50": 2.1, "p95": 4.0, "p99": 7.5},
        "flagged_rate": 0.02,
        "alerts": [],
        **_kpis(accuracy),
    }


def _kpis(accuracy: float) -> dict[str, Any]:
    """The live bias and business metrics of a report (pipeflow.monitoring.kpis), made by the
    governance functions; one group is named with markup (it must show as text)."""
    from pipeflow.governance.business import business_metrics
    from pipeflow.governance.fairness import bias_metrics

    right = round(accuracy * 40)
    y_true = ["benign"] * 40
    y_pred = ["benign"] * right + ["malignant"] * (40 - right)
    groups = ["small"] * 20 + [MARKUP] * 20
    bias = bias_metrics(y_true, y_pred, groups, attribute="size_band", min_rows=5)
    declared = {"cost": {"benign": {"malignant": 20}}, "value_per_correct": 12.5}
    limits = {"accuracy_difference": 0.15}
    breaches = [
        {"metric": k, "value": bias[k], "limit": v} for k, v in limits.items() if bias[k] > v
    ]
    return {
        "bias": {**bias, "source": "feedback", "limits": limits, "breaches": breaches},
        "business": business_metrics(y_true, y_pred, declared, latency_ms=[1.0, 9.0]),
    }


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]
) -> Iterator[dict[str, Any]]:
    """The tumours project after one run, a server that answered real predictions, two drift
    reports and an alert, and `pipeflow ui` on the store."""
    from pipeflow.monitoring.history import alert_log, save_report

    project = tumours_v1(tmp_path_factory.mktemp("ui") / "tumours")
    store = project / ".pipeflow"
    run_id = pipeflow_ok(["runs", "list", "--spec", "pipeline.yaml"], cwd=project).stdout
    started: list[subprocess.Popen[str]] = []
    try:
        port = free_port()
        serve_url = f"http://127.0.0.1:{port}"
        started.append(
            _start(
                ["serve", "tumours@production", "--store", str(store), "--port", str(port)],
                project,
                project / "serve.log",
                serve_url + "/ready",
            )
        )
        rows = sample_rows(project, PREDICTIONS)
        rows[0] = {**rows[0], "mean_radius": 500.0}  # far outside training: flagged
        with httpx.Client(base_url=serve_url, timeout=30) as client:
            for row in rows:
                r = client.post("/v1/models/tumours/predict", json=row)
                assert r.status_code == 200, r.text
        now = time.time()
        save_report(store, _report(now - 1800, 0.1, 0.95, 0.08))
        save_report(store, _report(now, 1 / 3, 0.9, 0.35))
        alerts = alert_log(store)
        alerts.append(
            [
                {
                    "id": "alert-1",
                    "time": now,
                    "key": "tumours:drift_share",
                    "rule": "drift",
                    "metric": "drift_share",
                    "value": 1 / 3,
                    "op": ">",
                    "threshold": 0.3,
                    "severity": "warning",
                    "model": "tumours",
                    "version": 1,
                    "message": MARKUP,
                    "sinks": ["log"],
                }
            ]
        )
        alerts.close()
        ui_port = free_port()
        ui_url = f"http://127.0.0.1:{ui_port}"
        started.append(
            _start(
                ["ui", "--store", str(store), "--port", str(ui_port)],
                project,
                project / "ui.log",
                ui_url + "/api/summary",
            )
        )
        yield {
            "project": project,
            "url": ui_url,
            "serve_url": serve_url,
            "rows": rows,
            "runs_list": run_id,
        }
    finally:
        for proc in started:
            kill_group(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One page with its console errors collected; ``visit`` also saves a screenshot."""

    def __init__(self, browser: Any, base: str, shots: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(15_000)
        self.base, self.shots, self.errors = base, shots, []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def visit(self, route: str, ready: str) -> Any:
        self.page.goto(f"{self.base}/#/{route}")
        self.page.wait_for_selector(ready)
        name = route.replace("/", "_") or "overview"
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        assert self.errors == [], f"console errors on #/{route}: {self.errors}"
        return self.page

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())


@pytest.fixture
def tab(browser: Any, world: dict[str, Any], tmp_path: Path) -> Iterator[Tab]:
    t = Tab(browser, world["url"], tmp_path)
    yield t
    t.page.close()


def _distinct_colours(browser: Any, png: bytes) -> int:
    """Colours in a PNG, counted by the browser itself (a canvas on a blank page; no PIL)."""
    page = browser.new_page()
    try:
        return int(
            page.evaluate(
                """async (src) => {
                    const img = new Image();
                    img.src = src;
                    await img.decode();
                    const c = document.createElement("canvas");
                    c.width = img.width; c.height = img.height;
                    const ctx = c.getContext("2d");
                    ctx.drawImage(img, 0, 0);
                    const d = ctx.getImageData(0, 0, c.width, c.height).data;
                    const seen = new Set();
                    for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                    return seen.size;
                }""",
                "data:image/png;base64," + base64.b64encode(png).decode(),
            )
        )
    finally:
        page.close()


def _assert_screenshots(browser: Any, folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / f"{name}.png"
        data = path.read_bytes()
        assert len(data) > 10_000, f"{path} is {len(data)} bytes: a blank page?"
        assert _distinct_colours(browser, data) > 16, f"{path} is nearly one colour"


def test_runs_page_lists_the_run_and_its_stages(tab: Tab, world, browser, tmp_path) -> None:
    page = tab.visit("runs", "#runs-table")
    table = tab.text("#runs-table")
    assert "tumours" in table and "done" in table
    run_id = page.locator("#runs-table tbody a").first.inner_text()
    assert run_id in world["runs_list"]
    page.locator("#runs-table tbody a").first.click()
    page.wait_for_selector("#stages-table")
    stages = tab.text("#stages-table")
    for stage in ("raw", "split", "model", "scores", "promote"):
        assert stage in stages
    assert page.locator('[data-chart="stages"] rect').count() == 5
    tab.visit(f"runs/{run_id}", "#stages-table")
    _assert_screenshots(browser, tmp_path, ["runs", f"runs_{run_id}"])


def test_models_page_shows_tumours_in_production_with_history_and_lineage(
    tab: Tab, browser, tmp_path
) -> None:
    tab.visit("models", "#models-table")
    models = tab.text("#models-table")
    assert "tumours" in models and "production" in models
    page = tab.visit("models/tumours", "#versions-table")
    assert "v1" in tab.text("#versions-table")
    history = tab.text("#history-table")
    assert "production" in history and "promote" in history
    page.get_by_role("button", name="lineage").first.click()
    page.wait_for_selector("#lineage h2")
    assert "tumours@1" in tab.text("#lineage") and "promote" in tab.text("#lineage")
    assert tab.errors == []
    _assert_screenshots(browser, tmp_path, ["models", "models_tumours"])


def test_traffic_charts_plot_requests_and_latency_per_version_and_refresh(
    tab: Tab, world, browser, tmp_path
) -> None:
    page = tab.visit("traffic", '[data-chart="requests"] circle.point')
    assert page.locator('[data-chart="requests"] circle.point').count() > 0
    assert page.locator('[data-chart="latency"] circle.point').count() > 0
    assert page.locator('[data-chart="requests"] path').count() > 0
    legend = tab.text('[data-chart="requests"] .legend')
    assert "tumours v1" in legend
    versions = tab.text("#traffic-versions")
    assert str(PREDICTIONS) in versions and "primary" in versions
    flagged = page.locator("#traffic-versions tbody tr td").nth(3).inner_text()
    assert int(flagged) >= 1  # the row far outside the training data
    with httpx.Client(base_url=world["serve_url"], timeout=30) as client:
        for row in world["rows"][:5]:
            assert client.post("/v1/models/tumours/predict", json=row).status_code == 200
    page.wait_for_function(  # the page refreshes itself every 5 s
        "n => document.querySelector('#traffic-versions').innerText.includes(String(n))",
        arg=PREDICTIONS + 5,
        timeout=15_000,
    )
    assert tab.errors == []
    _assert_screenshots(browser, tmp_path, ["traffic"])


def test_drift_page_plots_drift_share_accuracy_and_feature_psi(tab: Tab, browser, tmp_path) -> None:
    page = tab.visit("drift", '[data-chart="drift-share"] circle.point')
    assert page.locator('[data-chart="drift-share"] circle.point').count() == 2
    assert page.locator('[data-chart="accuracy"] circle.point').count() == 2
    bars = page.locator('[data-chart="psi"] rect.bar')
    assert bars.count() == 3
    assert "mean_radius" in tab.text('[data-chart="psi"]')
    assert "33.3 %" in tab.text("#drift")
    _assert_screenshots(browser, tmp_path, ["drift"])


def test_drift_page_shows_the_latest_business_metrics_and_bias_with_charts(
    tab: Tab, browser, tmp_path
) -> None:
    page = tab.visit("drift", "#bias-groups")
    business = tab.text("#business")
    assert "cost per prediction" in business and "net value per prediction" in business
    assert "9.250" in business  # (36 right x 12.5 - 4 wrong x 20) / 40 (accuracy 0.9)
    assert page.locator('[data-chart="cost-per-prediction"] circle.point').count() == 2
    assert page.locator('[data-chart="bias"] circle.point').count() == 2
    bias = tab.text("#bias")
    assert "feedback" in bias and "limit 0.1500" in bias and "breached" in bias
    assert MARKUP in tab.text("#bias-groups")  # a group name with markup shows as text
    assert page.locator("#bias-groups img, #bias-groups b").count() == 0
    assert page.title() == "pipeflow"
    _assert_screenshots(browser, tmp_path, ["drift"])


def test_alerts_show_their_message_as_text_never_as_markup(tab: Tab, browser, tmp_path) -> None:
    page = tab.visit("alerts", "#alerts-table")
    table = tab.text("#alerts-table")
    assert MARKUP in table and "warning" in table and "drift_share" in table
    assert page.locator("#alerts-table img, #alerts-table b").count() == 0
    assert page.title() == "pipeflow"  # the onerror handler never ran
    _assert_screenshots(browser, tmp_path, ["alerts"])


def test_overview_counts_what_the_store_holds(tab: Tab, browser, tmp_path) -> None:
    page = tab.visit("", ".cards")
    cards = tab.text(".cards")
    assert "tumours@production v1" in cards
    assert page.locator("#nav a").count() == 5
    _assert_screenshots(browser, tmp_path, ["overview"])


def test_an_empty_store_shows_empty_states_on_every_page(browser, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(
        ["ui", "--store", str(empty), "--port", str(port)],
        tmp_path,
        tmp_path / "ui.log",
        url + "/api/summary",
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    t = Tab(browser, url, shots)
    try:
        expected: list[tuple[str, str]] = [
            ("runs", "No runs recorded yet — run `pipeflow run spec.yaml`"),
            ("models", "No models registered yet"),
            ("traffic", "No predictions recorded yet"),
            ("drift", "No drift reports yet"),
            ("alerts", "No alerts fired yet"),
        ]
        for route, text in expected:
            t.visit(route, ".empty")
            assert text in t.text(".empty"), route
        t.visit("", ".cards")
        assert "none yet" in t.text(".cards")
    finally:
        t.page.close()
        kill_group(proc)
    assert list(empty.iterdir()) == []  # the dashboard wrote nothing into the store
    _assert_screenshots(browser, shots, ["runs"])


LOGIN_TOKEN = "dashboard-reader-0123456789"
PREDICT_ONLY = "predict-only-token-0123456789"


def test_with_tokens_the_page_asks_for_one_keeps_it_in_the_tab_and_logs_out(
    browser, world, tmp_path: Path
) -> None:
    """`pipeflow ui --tokens`: the page asks for a token; a wrong one (or one without the `ui`
    scope) shows the server's reason and the form again; the right one shows the runs, survives
    a reload (sessionStorage) and never enters the URL; "Log out" asks again."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{LOGIN_TOKEN} ui\n{PREDICT_ONLY} predict\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = world["project"] / ".pipeflow"
    log = tmp_path / "ui.log"
    proc = _start(
        ["ui", "--store", str(store), "--port", str(port), "--tokens", str(tokens)],
        tmp_path,
        log,
        url + "/",
    )
    t = Tab(browser, url, tmp_path)
    page = t.page
    try:
        page.goto(f"{url}/#/runs")
        page.wait_for_selector("form#login")
        assert page.locator("#runs-table").count() == 0
        assert page.locator("#login-error").count() == 0  # no token yet: no error to show
        assert not page.locator("#logout").is_visible()
        assert "the ui scope" in t.text("main") and "null" not in t.text("main")
        page.screenshot(path=str(tmp_path / "login.png"), full_page=True)

        page.fill("#token", "not-the-token-0123456789")
        page.click("form#login button")
        page.wait_for_selector("#login-error")
        assert "the bearer token is not valid" in t.text("#login-error")
        assert page.locator("form#login").is_visible()
        assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept

        page.fill("#token", PREDICT_ONLY)
        page.click("form#login button")
        page.wait_for_function(
            "() => (document.querySelector('#login-error') || {}).textContent?.includes('scope')"
        )
        assert "the token lacks the 'ui' scope" in t.text("#login-error")

        page.fill("#token", LOGIN_TOKEN)
        page.click("form#login button")
        page.wait_for_selector("#runs-table")
        assert "tumours" in t.text("#runs-table") and "done" in t.text("#runs-table")
        assert page.locator("#logout").is_visible()
        page.screenshot(path=str(tmp_path / "logged_in.png"), full_page=True)

        page.reload()
        page.wait_for_selector("#runs-table")  # the token is still in the tab
        assert page.locator("form#login").count() == 0
        page.goto(f"{url}/#/models")
        page.wait_for_selector("#models-table")
        assert LOGIN_TOKEN not in page.url

        page.click("#logout")
        page.wait_for_selector("form#login")
        assert page.evaluate("sessionStorage.length") == 0
        assert not page.locator("#logout").is_visible()
        page.reload()
        page.wait_for_selector("form#login")
        assert page.locator("#models-table").count() == 0
        # the browser's own "failed to load resource: 401" lines are expected; nothing else
        assert [e for e in t.errors if "401" not in e and "403" not in e] == []
    finally:
        page.close()
        kill_group(proc)
    text = log.read_text()
    assert LOGIN_TOKEN not in text and PREDICT_ONLY not in text
    _assert_screenshots(browser, tmp_path, ["login", "logged_in"])


def test_the_ui_command_refuses_a_missing_store(tmp_path: Path) -> None:
    done = subprocess.run(
        [PIPEFLOW, "ui", "--store", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 2 and "no pipeflow store" in done.stderr


TRACKED_SPEC = """
    pipeline: trk
    params: {lr: 0.1}
    stages:
      fit:
        type: python
        with: {function: "steps:fit", kwargs: {lr: "${params.lr}"}}
"""
TRACKED_STEPS = """
    def fit(lr, ctx):
        for step in range(5):
            ctx.log_metric("loss", round(1.0 / (step + 1) + lr, 6), step=step)
        ctx.log_metric("accuracy", 0.5 + lr)
        ctx.log_param("optimizer", "adam")
        return {"lr": lr}
"""


def _values(page: Any, chart: str) -> list[float]:
    points = page.locator(f'[data-chart="{chart}"] circle.point')
    return sorted(float(points.nth(i).get_attribute("data-value")) for i in range(points.count()))


def test_logged_metrics_are_charted_across_runs_and_across_steps(browser, tmp_path: Path) -> None:
    from pipeflow.testing import write_spec

    spec = write_spec(tmp_path / "trk", TRACKED_SPEC, {"steps.py": TRACKED_STEPS})
    for lr in ("0.1", "0.3", "0.45"):
        pipeflow_ok(["run", spec, "--set", f"params.lr={lr}", "--tag", f"lr={lr}", "-q"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(
        ["ui", "--store", str(spec.parent / ".pipeflow"), "--port", str(port)],
        tmp_path,
        tmp_path / "ui.log",
        url + "/api/summary",
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    t = Tab(browser, url, shots)
    try:
        page = t.visit("runs", '[data-chart="metric-runs"] circle.point')
        assert _values(page, "metric-runs") == pytest.approx([0.6, 0.8, 0.95])  # accuracy
        assert "fit · accuracy" in t.text('[data-chart="metric-runs"] .legend')
        assert "lr=0.45" in t.text("#runs-table")
        page.get_by_label("metric").select_option("loss")
        page.wait_for_function(
            "() => document.querySelector('[data-chart=\"metric-runs\"] figcaption')"
            ".textContent.startsWith('loss')"
        )
        assert _values(page, "metric-runs") == pytest.approx([0.3, 0.5, 0.65])  # last steps
        run_id = page.locator("#runs-table tbody a").first.inner_text()  # newest: lr 0.45
        page = t.visit(f"runs/{run_id}", '[data-chart="steps-loss"] circle.point')
        assert _values(page, "steps-loss") == pytest.approx(
            sorted(1 / (s + 1) + 0.45 for s in range(5))
        )
        assert page.locator('[data-chart="steps-loss"] path').count() == 1
        metrics = t.text("#metrics-table")
        assert "accuracy" in metrics and "0.9500" in metrics
        assert "optimizer" in t.text("#logged-params-table")
        assert t.errors == []
    finally:
        t.page.close()
        kill_group(proc)
    _assert_screenshots(browser, shots, ["runs", f"runs_{run_id}"])
