"""The dashboard's JSON and assets, without a browser: studies, summaries, the trial table
(sorted, filtered and paged on the server), capabilities, plotly.js from the package."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_helpers import seed_service_study
from fastapi.testclient import TestClient

from autotune.api.app import create_app
from autotune.client import Client
from autotune.dashboard import PLOTLY_BUNDLE, STATIC_DIR, plotly_js_path
from autotune.service import StudyService

N = 45


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, StudyService]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'dash.db'}"
    svc = StudyService(url)
    seed_service_study(svc, "one", N)
    seed_service_study(svc, "two", 12, multi=True)
    with TestClient(create_app(svc)) as client:
        yield client, svc
    svc.close()


def test_index_assets_and_plotly_from_the_package(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    # The page loads the vendored bundle; the full plotly.js stays served (app.js loads it for
    # 3-D figures) from the installed plotly package.
    assert "cdn" not in index.text.lower()
    bundle = (STATIC_DIR / PLOTLY_BUNDLE).read_bytes()
    digest = hashlib.sha256(bundle).hexdigest()[:16]
    assert f'"/dashboard/static/{PLOTLY_BUNDLE}?v={digest}"' in index.text
    # Named by its content, it is kept for a year without revalidation; by name alone, a day.
    hashed = client.get(f"/dashboard/static/{PLOTLY_BUNDLE}?v={digest}")
    assert hashed.status_code == 200 and hashed.content == bundle
    assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
    plain = client.get(f"/dashboard/static/{PLOTLY_BUNDLE}")
    assert plain.content == bundle and plain.headers["cache-control"] == "public, max-age=86400"
    stale = client.get(f"/dashboard/static/{PLOTLY_BUNDLE}?v=0123456789abcdef")
    assert "immutable" not in stale.headers["cache-control"]
    for name in ("app.js", "style.css"):
        own = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]
        assert f'"/dashboard/static/{name}?v={own}"' in index.text
        assert (
            "immutable" in client.get(f"/dashboard/static/{name}?v={own}").headers["cache-control"]
        )
    assert index.headers["cache-control"] == "no-cache"
    js = client.get("/dashboard/static/plotly.min.js")
    assert js.status_code == 200
    assert js.content == plotly_js_path().read_bytes()
    assert client.get("/dashboard/static/README.md").status_code == 404
    assert client.get("/dashboard/static/app.js").status_code == 200
    assert client.get("/dashboard/static/style.css").status_code == 200
    assert client.get("/dashboard/static/..%2Fapi%2F__init__.py").status_code == 404
    assert client.get("/dashboard/static/index.html").status_code == 404


def _plotly_js_version(path: Path) -> str:
    head = path.read_text(encoding="utf-8", errors="replace")[:300]
    found = re.search(r"plotly\.js.*? v(\d+\.\d+\.\d+)", head)
    assert found, head
    return found.group(1)


def test_vendored_bundle_matches_the_installed_plotly() -> None:
    # The figures' JSON is written by the installed plotly package; the page draws it with the
    # vendored bundle, which must be the same major plotly.js (static/README.md says how to
    # update it).
    vendored = _plotly_js_version(STATIC_DIR / PLOTLY_BUNDLE)
    installed = _plotly_js_version(plotly_js_path())
    assert vendored.split(".")[0] == installed.split(".")[0], (vendored, installed)


def test_studies_list(api: tuple[TestClient, StudyService]) -> None:
    client, svc = api
    data = client.get("/dashboard/api/studies").json()
    assert data["total"] == 2
    one, two = data["items"]
    assert (one["name"], one["state"], one["n_trials"]) == ("one", "active", N)
    best = svc.best_trials("one")[0]
    assert one["best"] == {"values": best.values, "number": best.number, "n_pareto": 1}
    assert two["best"]["n_pareto"] == len(svc.best_trials("two"))
    assert one["last_update"] >= one["created_at"]


def test_study_summary(api: tuple[TestClient, StudyService]) -> None:
    client, svc = api
    s = client.get("/dashboard/api/studies/one").json()
    assert s["study"]["name"] == "one"
    assert sum(s["counts"].values()) == N
    assert s["counts"]["running"] == 1 and s["counts"]["failed"] == 4
    assert s["best"]["number"] == svc.best_trials("one")[0].number
    assert [p["kind"] for p in s["plots"]][:2] == ["history", "edf"]
    assert "pareto_front" in [
        p["kind"] for p in client.get("/dashboard/api/studies/two").json()["plots"]
    ]
    assert client.get("/dashboard/api/studies/nope").status_code == 404


def _table(client: TestClient, **params: object) -> dict:
    r = client.get("/dashboard/api/studies/one/trials", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_table_pages(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    first = _table(client, limit=20)
    assert (first["total"], first["n_trials"]) == (N, N)
    assert [r["number"] for r in first["items"]] == list(range(20))
    last = _table(client, limit=20, offset=40)
    assert [r["number"] for r in last["items"]] == list(range(40, N))
    row = first["items"][7]
    assert row["state"] == "failed" and "diverged" in row["error"]
    assert first["items"][0]["n_steps"] == 5


def test_table_sorts_with_missing_values_last(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    for order in ("asc", "desc"):
        items = _table(client, sort="values.loss", order=order, limit=1000)["items"]
        losses = [r["values"].get("loss") for r in items]
        present = [v for v in losses if v is not None]
        assert present == sorted(present, reverse=order == "desc")
        assert all(v is None for v in losses[len(present) :])  # failed/running at the end
    by_param = _table(client, sort="gamma", limit=1000)["items"]
    gammas = [r["params"].get("gamma") for r in by_param]
    n = sum(g is not None for g in gammas)
    assert gammas[:n] == sorted(gammas[:n]) and all(g is None for g in gammas[n:])


def test_table_filters(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    failed = _table(client, state="failed")
    assert failed["total"] == 4 and {r["state"] for r in failed["items"]} == {"failed"}
    small = _table(client, q="loss<1 kernel=rbf", limit=1000)
    assert small["total"] > 0
    assert all(r["values"]["loss"] < 1 and r["params"]["kernel"] == "rbf" for r in small["items"])
    text = _table(client, q="diverged")
    assert text["total"] == 4
    r = client.get("/dashboard/api/studies/one/trials", params={"q": "nope>1"})
    assert r.status_code == 422
    assert "unknown field 'nope'" in r.json()["error"]["message"]
    assert "lr" in r.json()["error"]["details"]["allowed"]
    r = client.get("/dashboard/api/studies/one/trials", params={"q": "loss<abc"})
    assert r.status_code == 422
    r = client.get("/dashboard/api/studies/one/trials", params={"sort": "nope"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "sort"


def test_capabilities_without_serving(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    caps = client.get("/dashboard/api/capabilities").json()
    assert caps == {
        "models": False,
        "serving_status": False,
        "serving_metrics": False,
        "feature_groups": False,
    }


def test_client_study_handle_draws_figures(api: tuple[TestClient, StudyService]) -> None:
    _, svc = api
    client = Client(service=svc)
    study = client.get_study("one")
    fig = study.plot_history()
    assert fig.layout.title.text.startswith("Optimization history of loss")
    assert study.plot_importance().data
    assert study.plot("timeline").data
    assert client.get_study("two").plot_pareto_front().data


def test_study_page_in_one_answer(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    page = client.get("/dashboard/api/studies/two/page", params={"limit": 5}).json()
    kinds = [p["kind"] for p in page["summary"]["plots"]]
    assert list(page["figures"]) == kinds and "pareto_front" in kinds
    for kind, fig in page["figures"].items():
        assert fig["data"] and "layout" in fig, kind
        # The same figure as the REST route serves. The study has a running trial, so on a slow
        # machine its snapshot may be read again between the two requests (after 5 s), and
        # the timeline's running bar then ends at a later "now": compare all but its values.
        served = client.get(f"/v1/studies/two/plots/{kind}").json()
        if kind == "timeline":
            assert [t["name"] for t in fig["data"]] == [t["name"] for t in served["data"]]
        else:
            assert fig == served, kind
    assert len(page["table"]["items"]) == 5 and page["table"]["total"] == 12
    assert client.get("/dashboard/api/studies/nope/page").status_code == 404
