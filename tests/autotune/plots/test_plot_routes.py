"""The REST plot endpoint on a real service (SQLite): figure JSON per kind, 422 for an unknown
kind in the project's error shape, options, and the snapshot read again after a change."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from plot_helpers import seed_service_study

from autotune.api.app import create_app
from autotune.plots import plot_kinds
from autotune.service import StudyService


def array(v: Any) -> np.ndarray:
    """A data array of figure JSON: plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, StudyService]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'plots.db'}"
    svc = StudyService(url)
    seed_service_study(svc, "one", 40)
    seed_service_study(svc, "two", 30, multi=True)
    with TestClient(create_app(svc)) as client:
        yield client, svc
    svc.close()


def test_every_kind_as_figure_json(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    kinds = client.get("/v1/studies/one/plots").json()
    assert kinds["kinds"] == [k for k in plot_kinds() if k != "pareto_front"]
    assert kinds["all_kinds"] == plot_kinds()
    for kind in kinds["kinds"]:
        r = client.get(f"/v1/studies/one/plots/{kind}")
        assert r.status_code == 200, (kind, r.text)
        assert r.headers["content-type"] == "application/json"
        fig = r.json()
        assert fig["data"] and "layout" in fig, kind
    pareto = client.get("/v1/studies/two/plots/pareto_front").json()
    assert {t["name"] for t in pareto["data"]} >= {"Pareto front"}


def test_unknown_kind_is_422_listing_the_kinds(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    r = client.get("/v1/studies/one/plots/pie")
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert "unknown plot kind 'pie'" in err["message"]
    assert err["details"]["allowed"] == plot_kinds()
    assert err["details"]["field"] == "kind"


def test_bad_options_and_studies(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    r = client.get("/v1/studies/one/plots/pareto_front")
    assert r.status_code == 422 and "several objectives" in r.json()["error"]["message"]
    r = client.get("/v1/studies/one/plots/history", params={"objective": "nope"})
    assert r.status_code == 422 and r.json()["error"]["details"]["allowed"] == ["loss"]
    r = client.get("/v1/studies/one/plots/edf", params={"x": "lr"})
    assert r.status_code == 422 and "takes no option 'x'" in r.json()["error"]["message"]
    r = client.get("/v1/studies/one/plots/history", params={"max_points": 0})
    assert r.status_code == 422
    r = client.get("/v1/studies/missing/plots/history")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_options_reach_the_figure(api: tuple[TestClient, StudyService]) -> None:
    client, _ = api
    fig = client.get("/v1/studies/one/plots/contour", params={"x": "depth", "y": "kernel"}).json()
    assert "over depth and kernel" in fig["layout"]["title"]["text"]
    fig = client.get("/v1/studies/one/plots/slice", params={"params": "lr,depth"}).json()
    assert [t["name"] for t in fig["data"]] == ["lr", "depth"]
    fig = client.get(
        "/v1/studies/two/plots/history", params={"objective": "time", "max_points": 5}
    ).json()
    assert fig["layout"]["yaxis"]["title"]["text"] == "time"


def test_figures_follow_new_trials(api: tuple[TestClient, StudyService]) -> None:
    client, svc = api
    svc.create_study(
        {"name": "grow", "space": {"x": {"type": "float", "low": 0, "high": 1}}, "seed": 1}
    )

    def n_points() -> int:
        fig = client.get("/v1/studies/grow/plots/history").json()
        return sum(len(array(t["x"])) for t in fig["data"] if t["name"] == "trial")

    for t in svc.suggest("grow", count=3).trials:
        svc.observe("grow", t.number, {"value": t.params["x"]})
    assert n_points() == 3
    for t in svc.suggest("grow", count=2).trials:
        svc.observe("grow", t.number, {"value": t.params["x"]})
    time.sleep(0.6)  # past the snapshot's shared-check window
    assert n_points() == 5


def test_a_large_study_gets_density_figures_and_max_points_a_sample(
    tmp_path: Any,
) -> None:
    # Past 2,000 completed trials the route answers the history and slice as densities (a
    # heatmap of counts of every completed trial) with the best trials as markers.
    svc = StudyService(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        seed_service_study(svc, "big", 2400, curves_every=1000)
        pages = [svc.list_trials("big", offset=o, limit=1000).items for o in (0, 1000, 2000)]
        n_done = sum(t.state.value == "completed" for page in pages for t in page)
        assert n_done > 2000
        with TestClient(create_app(svc)) as client:
            fig = client.get("/v1/studies/big/plots/history").json()
            (heat,) = [t for t in fig["data"] if t["type"] == "heatmap"]
            assert np.nansum(array(heat["z"]).astype(float)) == n_done
            best = next(t for t in fig["data"] if t.get("name") == "best 100")
            assert len(array(best["x"])) == 100
            assert "density of" in fig["layout"]["title"]["text"]
            sl = client.get("/v1/studies/big/plots/slice").json()
            assert sum(t["type"] == "heatmap" for t in sl["data"]) == 4
            # Asking for a number of points gives the sample of markers, as before.
            sampled = client.get("/v1/studies/big/plots/history?max_points=500").json()
            assert {t["type"] for t in sampled["data"]} == {"scatter"}
            assert f"showing 500 of {n_done:,}" in sampled["layout"]["title"]["text"]
    finally:
        svc.close()
