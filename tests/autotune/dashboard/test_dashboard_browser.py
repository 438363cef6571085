"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright against
``autotune serve`` (the API, the dashboard and the model server) on a seeded SQLite study.

Every page loads without console errors, every figure draws, the trial table shows the right
count and pages, sorts and filters, a trial's details open, the models page links a version
back to its study and trial, the page follows a running study, and a screenshot of the study
page is written to ``test-output/``. ``scripts/install_browser.sh`` installs what it needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dashboard_helpers import REPO, DashboardServer, seed_service_study

from autotune.service import StudyService

CHROMIUM = "/usr/bin/chromium"
# The flags the project runs Chromium with: headless, no sandbox (root in containers), no GPU,
# and nothing that reaches the network by itself.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
N_TRIALS = 120
READY_TIMEOUT_MS = 30_000
# Live updates poll every 3 s; a change shows within two polls on a loaded machine.
LIVE_TIMEOUT_MS = 15_000
SCREENSHOT = REPO / "test-output" / "dashboard-study.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is missing: run scripts/install_browser.sh (apt-get install chromium)",
    ),
]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is missing: run scripts/install_browser.sh"
)


def _register_model(db_url: str, store: Path) -> None:
    """One model with two versions, the second promoted: lineage back to study demo."""
    import xgboost as xgb

    from serving.registry import ModelRegistry

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x[:, 0] + 0.1 * rng.normal(size=200)
    names = ["a", "b", "c"]
    d = xgb.DMatrix(x, label=y, feature_names=names)
    reg = ModelRegistry(db_url, store=store)
    try:
        for version, rounds in ((1, 3), (2, 8)):
            booster = xgb.train({"max_depth": 2, "nthread": 1, "seed": 0}, d, rounds)
            reg.register(
                "demo-model",
                artifact=bytes(booster.save_raw("ubj")),
                format="xgboost-ubj",
                signature=names,
                metrics={"test_rmse": 0.5 / version},
                lineage={"study": "demo", "trial": 3 + version, "dataset": "synthetic"},
                input_example=[{"a": 0.1, "b": 0.2, "c": 0.3}],
                actor="tests",
            )
            reg.promote("demo-model", version, "production", actor="tests", reason=f"v{version}")
    finally:
        reg.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    db_url = f"sqlite:///{tmp / 'dash.db'}"
    svc = StudyService(db_url)
    seed_service_study(svc, "demo", N_TRIALS)
    seed_service_study(svc, "multi", 30, multi=True)
    _register_model(db_url, tmp / "artifacts")
    server = DashboardServer(db_url, tmp / "artifacts", tmp)
    try:
        yield {"url": server.url, "service": svc}
    finally:
        server.stop()
        svc.close()


@pytest.fixture(scope="module")
def browser(seeded: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, hash_route: str) -> Any:
        self.page.goto(f"{self.base}/{hash_route}")
        self.wait_ready()
        return self.page

    def wait_ready(self) -> None:
        self.page.wait_for_function("window.__dashboardReady === true", timeout=READY_TIMEOUT_MS)

    def close(self) -> None:
        self.page.close()
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture
def page(browser: Any, seeded: dict[str, Any]) -> Iterator[Page]:
    p = Page(browser, seeded["url"])
    yield p
    p.close()


def _drawn(page: Any) -> dict[str, dict[str, Any]]:
    """Per figure: whether it drew, its size, and how many marks (SVG shapes, canvases) it has."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.figure')].map(el => {
            const svg = el.querySelector('svg.main-svg');
            const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
            const marks = el.querySelectorAll(
                '.plot path, .plot rect, .barlayer path, .contourlayer path, .scatterlayer path,'
                + ' .parcoords path, .scene, g.trace').length;
            const canvases = [...el.querySelectorAll('canvas')]
                .filter(c => c.width > 0 && c.height > 0).length;
            return [el.dataset.kind, {drawn: el.dataset.drawn === '1', width: box.width,
                                      height: box.height, marks, canvases}];
        }))"""
    )


def test_studies_page(page: Page) -> None:
    p = page.open("")
    rows = p.locator("#studies-table tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).inner_text()
    assert "demo" in first and str(N_TRIALS) in first and "active" in first


def _scripts(p: Any) -> list[str]:
    """The plotly.js files the page fetched."""
    return p.evaluate(
        """() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)
            .filter(n => n.includes('plotly'))"""
    )


def test_study_page_draws_every_figure_and_the_table(page: Page) -> None:
    p = page.open("#/studies/demo")
    p.wait_for_function("window.__dashboardAllDrawn === true", timeout=READY_TIMEOUT_MS)
    figures = _drawn(p)
    assert set(figures) == {
        "history", "edf", "parallel_coordinates", "slice", "contour", "importance",
        "intermediate_values", "timeline",
    }  # fmt: skip
    for kind, f in figures.items():
        assert f["drawn"], kind
        assert f["width"] > 100 and f["height"] > 100, (kind, f)
        assert f["marks"] > 0, (kind, f)
        assert f["canvases"] == 0, (kind, f)  # SVG only: no WebGL context to start
    # Only the dashboard's plotly.js bundle was needed, not the full one.
    assert _scripts(p) == ["/dashboard/static/plotly-dashboard.min.js"]
    _check_parallel_coordinates(p)
    count = p.locator("#trial-count")
    assert count.get_attribute("data-total") == str(N_TRIALS)
    assert count.get_attribute("data-n-trials") == str(N_TRIALS)
    assert p.locator("#trials tbody tr").count() == 50
    assert p.locator("#stat-trials b").inner_text() == str(N_TRIALS)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    p.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 50_000


def _check_parallel_coordinates(p: Any) -> None:
    """An SVG figure with one labelled axis per parameter and the objective, and its lines."""
    fig = p.locator("#fig-parallel_coordinates")
    assert fig.locator("svg.main-svg").count() > 0
    labels = fig.locator(".xtick text").all_text_contents()
    assert labels == ["loss", "lr", "depth", "kernel", "gamma"]
    # One vertical line per axis (layout shapes), categorical and inactive ticks labelled.
    assert fig.locator(".shapelayer path").count() == 5
    ticks = fig.locator(".annotation-text").all_text_contents()
    assert {"linear", "rbf", "inactive", "0.0001", "1"} <= set(ticks)
    # The trials' polylines: non-empty SVG paths with a vertex on every axis.
    lines = fig.locator(".scatterlayer path.js-line").evaluate_all(
        "ps => ps.map(p => (p.getAttribute('d') || '').split(/[ML]/).filter(Boolean).length)"
    )
    assert lines and sum(lines) >= 5 * 50, lines
    assert "Parallel coordinates of loss" in fig.locator(".gtitle").text_content()


def test_a_trace_outside_the_bundle_loads_the_full_plotly(page: Page) -> None:
    # A study of two objectives: its Pareto front draws with the dashboard's bundle too.
    p = page.open("#/studies/multi")
    p.wait_for_function("window.__dashboardAllDrawn === true", timeout=READY_TIMEOUT_MS)
    figures = _drawn(p)
    assert figures["pareto_front"]["drawn"] and figures["pareto_front"]["marks"] > 0
    assert _scripts(p) == ["/dashboard/static/plotly-dashboard.min.js"]
    assert p.evaluate("Plotly.PlotSchema.get().traces.scatter3d === undefined")
    # A figure with a 3-D trace (plot_pareto_front(objectives=[three names]) makes one) gets the
    # full plotly.js first, through the page's own loader.
    drawn = p.evaluate(
        """async () => {
            await plotlyFor(traceTypes([{data: [{type: 'scatter3d'}]}]));
            const el = document.createElement('div');
            document.body.append(el);
            await Plotly.newPlot(el, [{type: 'scatter3d', mode: 'markers', x: [1, 2, 3],
                                       y: [3, 1, 2], z: [2, 3, 1]}]);
            return !!el.querySelector('.gl-container canvas');
        }"""
    )
    assert drawn
    assert _scripts(p) == [
        "/dashboard/static/plotly-dashboard.min.js", "/dashboard/static/plotly.min.js",
    ]  # fmt: skip


def _numbers(p: Any) -> list[int]:
    return [int(n) for n in p.locator("#trials tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.number)")]  # fmt: skip


def test_trial_table_pages_sorts_and_filters(page: Page) -> None:
    p = page.open("#/studies/demo")
    assert _numbers(p) == list(range(50))
    p.click("#trial-next")
    p.wait_for_function("document.querySelector('#trials tbody tr').dataset.number === '50'")
    assert _numbers(p) == list(range(50, 100))
    # Sort by loss, ascending then descending; the server sorts all 120 trials.
    p.click("th[data-key='values.loss']")
    p.wait_for_selector("th.sorted-asc[data-key='values.loss']")
    ascending = _numbers(p)
    p.click("th[data-key='values.loss']")
    p.wait_for_selector("th.sorted-desc[data-key='values.loss']")
    assert _numbers(p) != ascending
    p.select_option("#trial-state", "failed")
    p.wait_for_function("document.querySelector('#trial-count').dataset.total === '12'")
    p.select_option("#trial-state", "")
    p.fill("#trial-filter", "kernel=rbf depth<=4")
    p.press("#trial-filter", "Enter")
    p.wait_for_function(
        "document.querySelector('#trial-count').dataset.total !== '120'", timeout=READY_TIMEOUT_MS
    )
    shown = p.locator("#trials tbody tr").count()
    assert 0 < shown < 50


def test_a_late_table_load_neither_wipes_a_typed_filter_nor_replaces_a_newer_page(
    page: Page,
) -> None:
    """The table's loads can answer out of order, and each answer redraws the controls: what
    is typed in the filter box survives a redraw, and an older load that answers after a newer
    one is dropped. Unfiltered loads are held back here and released at chosen moments."""
    p = page.open("#/studies/demo")
    held: list[Any] = []

    def hold_unfiltered(route: Any) -> None:
        if "q=kernel" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    def release() -> None:
        with p.expect_response(lambda r: "/trials?" in r.url and "q=kernel" not in r.url):
            held.pop(0).continue_()

    p.route("**/dashboard/api/studies/demo/trials?*", hold_unfiltered)
    p.select_option("#trial-state", "completed")  # a load, held
    p.fill("#trial-filter", "kernel=rbf depth<=4")  # typed while it is in flight
    release()
    p.wait_for_function("document.querySelector('#trial-count').dataset.total !== '120'")
    completed = p.get_attribute("#trial-count", "data-total")
    assert p.input_value("#trial-filter") == "kernel=rbf depth<=4"
    p.click("th[data-key='number']")  # another unfiltered load, held
    p.press("#trial-filter", "Enter")  # the filtered load, answered at once
    p.wait_for_function(f"document.querySelector('#trial-count').dataset.total !== '{completed}'")
    filtered = p.get_attribute("#trial-count", "data-total")
    release()  # the older load answers last
    p.wait_for_timeout(300)
    assert p.get_attribute("#trial-count", "data-total") == filtered
    assert p.input_value("#trial-filter") == "kernel=rbf depth<=4"
    assert 0 < p.locator("#trials tbody tr").count() < int(completed)
    p.unroute("**/dashboard/api/studies/demo/trials?*")


def test_trial_details_with_error_and_curve(page: Page, seeded: dict[str, Any]) -> None:
    p = page.open("#/studies/demo")
    p.click("#trials tbody tr[data-number='0']")  # reported a learning curve
    p.wait_for_selector("#trial-curve svg.main-svg")
    assert "Trial 0" in p.inner_text("#trial-detail")
    assert "lr" in p.inner_text("#trial-detail")
    p.click("#trials tbody tr[data-number='7']")  # failed
    p.wait_for_selector("#trial-error")
    assert "diverged" in p.inner_text("#trial-error")
    assert "trial=7" in p.url


def test_models_page_links_back_to_the_study(page: Page) -> None:
    p = page.open("#/models")
    row = p.locator("#models-table tbody tr")
    assert row.count() == 1
    assert "demo-model" in row.inner_text() and "production → v2" in row.inner_text()
    row.click()
    page.wait_ready()
    p.wait_for_selector("#versions-table")
    assert p.locator("#versions-table tbody tr").count() == 2
    assert "test_rmse=0.25" in p.inner_text("#versions-table")
    assert p.locator("#alias-history tbody tr").count() == 2
    p.click("#versions-table a.lineage >> nth=0")  # v2: study demo, trial 5
    p.wait_for_selector("#trial-detail h2")
    assert "Trial 5" in p.inner_text("#trial-detail")


def test_serving_and_features_pages(page: Page, seeded: dict[str, Any]) -> None:
    r = httpx.post(
        f"{seeded['url']}/v1/models/demo-model/predict",
        json={"rows": [{"a": 0.1, "b": 0.2, "c": 0.3}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    p = page.open("#/serving")
    assert "ready" in p.inner_text("main")
    metrics = p.locator("#serving-metrics tbody tr")
    assert metrics.count() >= 1 and "demo-model" in metrics.nth(0).inner_text()
    p = page.open("#/features")
    assert "No feature groups are registered" in p.inner_text("#no-features")
    group = {
        "name": "customers",
        "entities": [{"name": "customer_id", "dtype": "int"}],
        "features": [{"name": "spend", "dtype": "float"}, {"name": "visits", "dtype": "int"}],
        "description": "per-customer activity",
        "owner": "tests",
    }
    r = httpx.post(f"{seeded['url']}/v1/feature-groups", json=group, timeout=30)
    assert r.status_code in (200, 201), r.text
    p.reload()
    page.wait_ready()
    text = p.inner_text("#features-table")
    assert "customers" in text and "customer_id" in text and "spend, visits" in text


def test_study_page_follows_a_running_study(page: Page, seeded: dict[str, Any]) -> None:
    p = page.open("#/studies/demo")
    assert p.is_visible("#live")
    svc: StudyService = seeded["service"]
    (t,) = svc.suggest("demo", count=1).trials
    svc.observe("demo", t.number, {"loss": 0.0})  # a new best
    p.wait_for_function(
        f"document.querySelector('#stat-trials b').textContent === '{N_TRIALS + 1}'",
        timeout=LIVE_TIMEOUT_MS,
    )
    p.wait_for_function(
        f"document.querySelector('#trial-count').dataset.total === '{N_TRIALS + 1}'",
        timeout=LIVE_TIMEOUT_MS,
    )
    assert "(trial " + str(t.number) + ")" in p.inner_text("#study-header")
