"""How fast a 10,000-trial study page loads and draws, in headless Chromium, with optuna-dashboard
on the same study in the same run as the peer.

The study (10,000 trials by default: four parameters, one conditional; 90% completed, 10%
failed, every 10th with a five-step learning curve) is created through AutoTune's service on a
SQLite file, then copied trial for trial (parameters, values, curves, times) into an Optuna
study on another SQLite file (RDB storage, as ``optuna-dashboard sqlite:///...`` is run).

Each dashboard is served by its own command in a subprocess (``autotune serve``,
``optuna-dashboard``) and loaded in a fresh browser context each time (empty HTTP cache: the
page, its scripts and data are fetched every time). A load is timed from navigation start until
the page has drawn everything it shows:

- AutoTune: every figure of the study page (history, EDF, parallel coordinates, slice, contour,
  importance, learning curves, timeline: all SVG, drawn with the dashboard's own plotly.js
  bundle of the traces it uses) and
  the first page of the trial table;
- optuna-dashboard: every plot of its study page (history, importance, timeline, learning
  curves), the history holding every completed trial.

Each AutoTune load also records where its time went (``breakdown``, ms since navigation start):
when the page's one data request was sent and answered (and how long the server took before its
first byte), when plotly.js was ready, and when each figure was drawn.

Loads: ``cold`` is the first after the server started; ``warm`` the next ones (median of
``--repeat``); ``changed`` the first after one more trial was added to the study (AutoTune reads
the study again and recomputes its figures). The two dashboards alternate so both see the same
machine load.

Usage: ``python benchmarks/dashboard.py [--trials 10000] [--repeat 5] [--workdir DIR]
[--no-peer] [--out FILE]`` (``--workdir`` keeps the seeded databases for the next run; ``--no-peer`` skips
optuna-dashboard for a quick check).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "dashboard.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
STUDY = "bench10k"
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "depth": {"type": "int", "low": 1, "high": 8},
    "kernel": {"type": "categorical", "choices": ["linear", "rbf"]},
    "gamma": {"type": "float", "low": 0.01, "high": 10.0, "condition": {"kernel": ["rbf"]}},
}
LOAD_TIMEOUT_MS = 120_000
VIEWPORT = {"width": 1400, "height": 1000}
TARGET_S = 2.0

# AutoTune's page records when the figures in its first viewport were drawn and painted, and
# when every figure was; its trial table is rendered before the figures.
AUTOTUNE_READY = "() => window.__dashboardReady === true && !!document.querySelector('#trials')"
AUTOTUNE_ALL = "() => window.__dashboardAllDrawnAt !== null && window.__dashboardAllDrawnAt > 0"
AUTOTUNE_TIMES = "[window.__dashboardFirstScreenAt, window.__dashboardAllDrawnAt]"
# Where a load's time went: the page's data request, plotly.js ready, each figure drawn.
AUTOTUNE_BREAKDOWN = """() => {
  const r = (x) => Math.round(x);
  const data = performance.getEntriesByType('resource').find(e => e.name.includes('/page'));
  const out = {plotly_ready: window.__plotlyReadyAt ? r(window.__plotlyReadyAt) : null};
  if (data) Object.assign(out, {data_sent: r(data.requestStart || data.startTime),
    data_server: r(data.responseStart - data.requestStart), data_done: r(data.responseEnd),
    data_bytes: data.encodedBodySize});
  for (const m of performance.getEntriesByType('mark'))
    if (m.name.startsWith('drawn:')) out[m.name] = r(m.startTime);
  return out;
}"""
# Drawn = its four plots have traces and the history holds every completed trial.
OPTUNA_READY = """(n) => {
  const ids = ['plot-history', 'graph-hyperparameter-importances', 'graph-timeline',
               'graph-intermediate-values'];
  const divs = ids.map(id => document.getElementById(id));
  if (divs.some(d => !d || !d.data || !d.data.length || !d.querySelector('.main-svg'))) return false;
  const pts = divs[0].data.reduce((s, t) => s + (t.x ? t.x.length : 0), 0);
  return pts >= n;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loss_of(p: dict[str, Any]) -> float:
    return abs(math.log10(p["lr"]) + 2.0) + 0.05 * p["depth"] + (0.1 if p["kernel"] == "rbf" else 0)


# --------------------------------------------------------------------------------- seeding
def seed_autotune(db_url: str, n: int) -> None:
    from autotune.service import StudyService

    with StudyService(db_url) as svc:
        try:
            have = svc.get_study(STUDY).n_trials
            # A kept study grows by one trial per run (the "changed" load); a few more are fine.
            if n <= have <= n + 10:
                print(f"reusing AutoTune study {STUDY} ({have} trials)", flush=True)
                return
            svc.delete_study(STUDY)
        except KeyError:
            pass
        t0 = time.perf_counter()
        svc.create_study({"name": STUDY, "space": SPACE, "algorithm": "random", "seed": 1})
        trials = []
        while len(trials) < n:
            trials += svc.suggest(STUDY, count=min(1000, n - len(trials))).trials
        for i, t in enumerate(trials):
            loss = loss_of(t.params)
            if i % 10 == 0:
                for step in range(5):
                    svc.report(STUDY, t.number, step=step, value=loss + 1.0 / (step + 1))
            if i % 10 == 7:
                svc.fail(STUDY, t.number, reason="ValueError: diverged")
            else:
                svc.observe(STUDY, t.number, {"value": loss})
            if i % 2000 == 1999:
                print(f"  seeded {i + 1} trials", flush=True)
        print(f"seeded AutoTune in {time.perf_counter() - t0:.0f} s", flush=True)


def seed_optuna(autotune_db: str, optuna_db: str, n: int) -> int:
    """Copy the study into Optuna; returns its study id."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState, create_trial

    from autotune.service import StudyService

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        s = optuna.load_study(study_name=STUDY, storage=optuna_db)
        have = len(s.get_trials(deepcopy=False))
        if n <= have <= n + 10:
            print(f"reusing Optuna study {STUDY} ({have} trials)", flush=True)
            return s._study_id
        optuna.delete_study(study_name=STUDY, storage=optuna_db)
    except KeyError:
        pass
    dists = {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "depth": IntDistribution(1, 8),
        "kernel": CategoricalDistribution(["linear", "rbf"]),
        "gamma": FloatDistribution(0.01, 10.0),
    }
    with StudyService(autotune_db) as svc:
        ours = []
        while len(ours) < n:
            ours += svc.list_trials(STUDY, offset=len(ours), limit=1000).items
    frozen = []
    for t in ours:
        done = t.state.value == "completed"
        frozen.append(
            create_trial(
                state=TrialState.COMPLETE if done else TrialState.FAIL,
                params=dict(t.params),
                distributions={k: dists[k] for k in t.params},
                value=t.values["value"] if done and t.values else None,
                intermediate_values={m.step: m.value for m in t.intermediate},
            )
        )
        # Optuna's timeline needs the times; create_trial leaves them unset.
        frozen[-1].datetime_start = t.created_at
        frozen[-1].datetime_complete = t.completed_at
    t0 = time.perf_counter()
    study = optuna.create_study(study_name=STUDY, storage=optuna_db)
    for i in range(0, len(frozen), 1000):
        study.add_trials(frozen[i : i + 1000])
    print(f"seeded Optuna in {time.perf_counter() - t0:.0f} s", flush=True)
    return study._study_id


# --------------------------------------------------------------------------------- servers
class Server:
    def __init__(self, name: str, cmd: list[str], health: str, log: Path, env: dict[str, str]):
        self.name = name
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not start; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_autotune(db_url: str, workdir: Path) -> tuple[Server, str]:
    port = free_port()
    env = _env()
    env["AUTOTUNE_MODEL_STORE"] = str(workdir / "artifacts")
    cmd = [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    srv = Server("autotune", cmd, base + "/v1/health", workdir / "autotune.log", env)
    return srv, f"{base}/#/studies/{STUDY}"


def start_optuna(db_url: str, study_id: int, workdir: Path) -> tuple[Server, str]:
    port = free_port()
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    cmd = [exe or "optuna-dashboard", db_url, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    srv = Server("optuna-dashboard", cmd, base + "/api/meta", workdir / "optuna.log", _env())
    return srv, f"{base}/dashboard/studies/{study_id}"


# ------------------------------------------------------------------------------ measuring
def load_once(ctx: Any, url: str, target: Target) -> dict[str, Any]:
    """One load in browser context ``ctx``: seconds from navigation start until the page's first
    screen is drawn (``s``) and until every figure is (``all_s``); bytes fetched."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    cdp = ctx.new_cdp_session(page)
    cdp.send("Performance.enable")
    # A renderer process may be reused (a revisit): count from here.
    start = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    try:
        page.goto(url, timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function(target.ready, arg=target.arg, timeout=LOAD_TIMEOUT_MS, polling=10)
        first = page.evaluate("performance.now()")
        page.wait_for_function(target.all_drawn, arg=target.arg, timeout=LOAD_TIMEOUT_MS,
                               polling=10)  # fmt: skip
        every = page.evaluate("performance.now()")
        if target.times is not None:  # the page's own record, not when polling noticed
            first, every = page.evaluate(target.times)
        fetched = page.evaluate(
            "performance.getEntriesByType('resource').concat(performance.getEntriesByType("
            "'navigation')).reduce((s, e) => s + (e.encodedBodySize || 0), 0)"
        )
        n_requests = page.evaluate("performance.getEntriesByType('resource').length")
        breakdown = page.evaluate(target.breakdown) if target.breakdown else None
        metrics = {
            m["name"]: m["value"] - start.get(m["name"], 0.0)
            for m in cdp.send("Performance.getMetrics")["metrics"]
        }
    finally:
        page.close()
    row = {"s": round(first / 1000, 3), "all_s": round(every / 1000, 3), "bytes": int(fetched),
           "requests": n_requests, "console_errors": errors[:5],
           # CPU seconds the page's renderer spent until then (main thread; whole process),
           # which a loaded machine inflates far less than wall-clock time.
           "main_thread_cpu_s": round(metrics.get("ThreadTime", math.nan), 3),
           "renderer_cpu_s": round(metrics.get("ProcessTime", math.nan), 3)}  # fmt: skip
    if breakdown is not None:
        row["breakdown_ms"] = breakdown
    return row


class Target:
    """A dashboard under test: how to start it, when its page is drawn, how to change it.

    ``times`` (optional) is a JavaScript expression for the page's own record of when its first
    screen and every figure were drawn, in ms since navigation start; without it, when polling
    noticed the ``ready`` and ``all_drawn`` conditions. ``breakdown`` (optional) is a JavaScript
    function returning where a load's time went.
    """

    def __init__(
        self,
        start: Callable[[], tuple[Server, str]],
        ready: str,
        all_drawn: str,
        arg: Any,
        add: Callable[[], None],
        times: str | None = None,
        breakdown: str | None = None,
    ) -> None:
        self.start = start
        self.ready = ready
        self.all_drawn = all_drawn
        self.arg = arg
        self.add = add
        self.times = times
        self.breakdown = breakdown
        self.server: Server | None = None
        self.url = ""


# The floor of any plotly.js page: a plotly.js bundle from AutoTune's server, one tiny plot. The
# dashboard loads its own (scatter, bar, heatmap, contour); the full one is measured for comparison.
PLOTLY_BUNDLES = {"dashboard": "plotly-dashboard.min.js", "full": "plotly.min.js"}
FLOOR_HTML = """<!doctype html><html><head>
<script src="/dashboard/static/{bundle}" defer></script>
<script>addEventListener('DOMContentLoaded', async () => {
  await Plotly.newPlot(document.getElementById('p'), [{y: [1, 3, 2]}], {height: 300});
  window.__floorAt = performance.now();
});</script></head><body><div id="p"></div></body></html>"""


def floor_once(ctx: Any, base: str, bundle: str) -> float:
    """Seconds until a page with nothing but plotly.js (file ``bundle``) and one plot has
    drawn it."""
    page = ctx.new_page()
    html = FLOOR_HTML.replace("{bundle}", bundle)
    page.route(base + "/floor.html", lambda r: r.fulfill(body=html, content_type="text/html"))
    try:
        page.goto(base + "/floor.html")
        page.wait_for_function("window.__floorAt > 0", timeout=LOAD_TIMEOUT_MS, polling=10)
        return round(page.evaluate("window.__floorAt") / 1000, 3)
    finally:
        page.close()


def _median_breakdown(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per breakdown key, the median over the loads that recorded it."""
    keys = dict.fromkeys(k for r in rows for k in r["breakdown_ms"])
    out = {}
    for k in keys:
        vals = [r["breakdown_ms"][k] for r in rows if r["breakdown_ms"].get(k) is not None]
        if vals:
            out[k] = round(statistics.median(vals))
    return out


def add_trial_autotune(db_url: str) -> None:
    from autotune.service import StudyService

    with StudyService(db_url) as svc:
        (t,) = svc.suggest(STUDY, count=1).trials
        svc.observe(STUDY, t.number, {"value": loss_of(t.params)})


def add_trial_optuna(db_url: str) -> None:
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=db_url)
    t = study.ask()
    lr = t.suggest_float("lr", 1e-4, 1.0, log=True)
    study.tell(t, abs(math.log10(lr) + 2.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5, help="warm loads per dashboard")
    p.add_argument("--workdir", type=Path, default=None, help="keep the seeded databases here")
    p.add_argument("--no-peer", action="store_true",
                   help="AutoTune alone (a quick check; results still written)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS,
                   help=f"where the results go (default {RESULTS.relative_to(REPO)})")  # fmt: skip
    args = p.parse_args()

    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-dashboard-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ours_db = f"sqlite:///{workdir / f'autotune-{args.trials}.db'}"
    optuna_db = f"sqlite:///{workdir / f'optuna-{args.trials}.db'}"
    seed_autotune(ours_db, args.trials)
    peers: dict[str, Any] = {}
    try:
        import optuna_dashboard

        if not args.no_peer:
            peers["optuna-dashboard"] = optuna_dashboard.__version__
    except ImportError as e:
        print(f"optuna-dashboard is not installed ({e}); measuring AutoTune alone", flush=True)
    study_id = seed_optuna(ours_db, optuna_db, args.trials) if peers else None
    n_completed = args.trials - args.trials // 10  # completed trials the history must show

    results: dict[str, Any] = {
        "benchmark": "dashboard",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials": args.trials,
        "target_s": TARGET_S,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "chromium": subprocess.run(
                [CHROMIUM, "--version"], capture_output=True, text=True
            ).stdout.strip(),  # fmt: skip
            "peers": peers,
        },
        "rows": [],
    }
    targets: dict[str, Target] = {
        "autotune": Target(
            lambda: start_autotune(ours_db, workdir),
            AUTOTUNE_READY,
            AUTOTUNE_ALL,
            None,
            lambda: add_trial_autotune(ours_db),
            AUTOTUNE_TIMES,
            AUTOTUNE_BREAKDOWN,
        ),
    }
    if study_id is not None:
        # Its page draws every plot at once: first screen and all are the same condition.
        targets["optuna-dashboard"] = Target(
            lambda: start_optuna(optuna_db, study_id, workdir),
            OPTUNA_READY,
            OPTUNA_READY,
            n_completed,
            lambda: add_trial_optuna(optuna_db),
        )
    kinds = ("first visit, cold server", "first visit", "revisit", "revisit, study changed")
    loads: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {k: [] for k in kinds} for name in targets
    }

    floor: dict[str, list[float]] = {name: [] for name in PLOTLY_BUNDLES}

    def run(name: str, kind: str, ctx: Any) -> None:
        try:
            row = load_once(ctx, targets[name].url, targets[name])
        except PlaywrightTimeout as e:  # recorded, not fatal: the other loads still count
            row = {"s": None, "all_s": None, "timed_out": True, "error": str(e).split("\n")[0]}
        loads[name][kind].append(row)
        print(f"{name} | {kind}: {row}", flush=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        revisit = {}
        try:
            for t in targets.values():
                t.server, t.url = t.start()
            # A first visit: a new browser context, nothing cached. The first one of each right
            # after its server started (its caches and imports cold).
            for name in targets:
                ctx = browser.new_context(viewport=VIEWPORT)
                run(name, kinds[0], ctx)
                ctx.close()
            base = targets["autotune"].url.split("/#")[0]
            for _ in range(args.repeat):
                for name in targets:
                    ctx = browser.new_context(viewport=VIEWPORT)
                    run(name, kinds[1], ctx)
                    ctx.close()
                for bundle, file in PLOTLY_BUNDLES.items():
                    ctx = browser.new_context(viewport=VIEWPORT)
                    floor[bundle].append(floor_once(ctx, base, file))
                    ctx.close()
                    print(f"plotly.js floor ({bundle}): {floor[bundle][-1]} s", flush=True)
            # A revisit: the same browser context again (scripts from the HTTP cache, compiled
            # code from V8's cache), as a user coming back to the page.
            for name in targets:
                revisit[name] = browser.new_context(viewport=VIEWPORT)
                try:  # fills the caches
                    load_once(revisit[name], targets[name].url, targets[name])
                except PlaywrightTimeout as e:
                    print(f"{name} | revisit warm-up timed out: {e}", flush=True)
            for _ in range(args.repeat):
                for name in targets:
                    run(name, kinds[2], revisit[name])
            for name, t in targets.items():
                t.add()
                if t.arg is not None:
                    t.arg += 1
                time.sleep(0.6)  # past AutoTune's shared-check window: the change is seen
                run(name, kinds[3], revisit[name])
        finally:
            for ctx in revisit.values():
                ctx.close()
            for t in targets.values():
                if t.server is not None:
                    t.server.stop()
            browser.close()

    for name, by_kind in loads.items():
        for kind, all_rows in by_kind.items():
            rows = [r for r in all_rows if not r.get("timed_out")]
            n_timeouts = len(all_rows) - len(rows)
            if not rows:
                results["rows"].append({"dashboard": name, "load": kind, "n": 0,
                                        "timeouts": n_timeouts,
                                        "timeout_s": LOAD_TIMEOUT_MS / 1000})  # fmt: skip
                continue
            secs = [r["s"] for r in rows]
            every = [r["all_s"] for r in rows]
            results["rows"].append({
                "dashboard": name,
                "load": kind,
                "n": len(secs),
                "timeouts": n_timeouts,
                "median_s": round(statistics.median(secs), 3),
                "min_s": min(secs),
                "max_s": max(secs),
                "runs_s": secs,
                "median_all_figures_s": round(statistics.median(every), 3),
                "runs_all_figures_s": every,
                "median_main_thread_cpu_s": round(
                    statistics.median(r["main_thread_cpu_s"] for r in rows), 3),
                "median_renderer_cpu_s": round(
                    statistics.median(r["renderer_cpu_s"] for r in rows), 3),
                "bytes": rows[0]["bytes"],
                "requests": rows[0]["requests"],
                "console_errors": sorted({e for r in rows for e in r["console_errors"]}),
            })  # fmt: skip
            if rows and "breakdown_ms" in rows[0]:
                results["rows"][-1]["breakdown_ms_median"] = _median_breakdown(rows)
    results["plotly_js_floor_s"] = {
        "what": "first visit to a page with only a plotly.js bundle (the dashboard's own "
        "one, and the full plotly.min.js; same server) and one 3-point plot, until drawn",
        **{
            bundle: {
                "file": PLOTLY_BUNDLES[bundle],
                "median_s": round(statistics.median(runs), 3) if runs else None,
                "runs_s": runs,
            }
            for bundle, runs in floor.items()
        },
    }
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| dashboard | load | n | first screen s (median, min-max) | every figure s "
        "| main-thread CPU s | MB fetched |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results["rows"]:
        if not r["n"]:
            print(f"| {r['dashboard']} | {r['load']} | 0 | timed out ({r['timeouts']}x, "
                  f"> {r['timeout_s']:.0f} s) | | | |")  # fmt: skip
            continue
        print(
            f"| {r['dashboard']} | {r['load']} | {r['n']} | {r['median_s']:.2f} "
            f"({r['min_s']:.2f}-{r['max_s']:.2f}) | {r['median_all_figures_s']:.2f} | "
            f"{r['median_main_thread_cpu_s']:.2f} | {r['bytes'] / 1e6:.1f} |"
            + (f" ({r['timeouts']} timed out)" if r["timeouts"] else "")
        )
    for bundle, runs in floor.items():
        if runs:
            print(f"plotly.js floor, {bundle} bundle (first visit, one tiny plot): "
                  f"{statistics.median(runs):.2f} s")  # fmt: skip
    for r in results["rows"]:
        if "breakdown_ms_median" in r:
            print(f"{r['dashboard']} | {r['load']}: {r['breakdown_ms_median']}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
