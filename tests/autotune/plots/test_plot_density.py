"""Large studies drawn as densities (history, slice) and the contour's best markers: past
2,000 completed trials by default, and the figures of smaller studies unchanged."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from plot_helpers import make_study, make_trials

from autotune import plots
from autotune.models import Study, Trial
from autotune.plots._density import DENSITY_BEST, DENSITY_THRESHOLD


def _completed(n: int, seed: int = 0) -> list[Trial]:
    """Exactly ``n`` completed trials (and no others)."""
    done = [t for t in make_trials(2 * n, seed=seed) if t.state == "completed"]
    assert len(done) >= n
    return done[:n]


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def _total(h: go.Heatmap) -> int:
    return int(np.nansum(np.asarray(h.z, dtype=float)))


def _best_numbers(trials: list[Trial], n: int) -> set[int]:
    done = sorted((t for t in trials if t.state == "completed"), key=lambda t: t.values["loss"])
    return {t.number for t in done[:n]}


@pytest.fixture(scope="module")
def big() -> list[Trial]:
    return make_trials(5000)  # about 4,000 completed, in every state


def test_history_of_a_large_study_is_a_density_with_the_best_as_markers(
    study: Study, big: list[Trial]
) -> None:
    n_done = sum(t.state == "completed" for t in big)
    assert n_done > DENSITY_THRESHOLD
    fig = plots.plot_history(study, big)
    (density,) = _heatmaps(fig)
    assert _total(density) == n_done  # every completed trial counted once, nothing else
    z = np.asarray(density.z, dtype=float)
    assert np.all(np.isnan(z) | (z >= 1))  # empty cells are not drawn
    assert len(density.x) == z.shape[1] + 1 and len(density.y) == z.shape[0] + 1  # edges
    best = next(t for t in fig.data if t.name == f"best {DENSITY_BEST}")
    assert set(best.x) == _best_numbers(big, DENSITY_BEST)
    line = next(t for t in fig.data if t.name == "best so far")
    assert line.y[-1] == pytest.approx(min(best.y))
    assert f"density of {n_done:,} trials, the best {DENSITY_BEST}" in fig.layout.title.text
    assert {t.type for t in fig.data} == {"heatmap", "scatter"}  # no WebGL
    # A caller that asks for a number of points still gets a sample of markers.
    sampled = plots.plot_history(study, big, max_points=300)
    assert not _heatmaps(sampled)
    assert len(next(t for t in sampled.data if t.name == "trial").x) == 300


def test_history_density_counts_trials_where_they_are() -> None:
    # Two trials far apart in value land in the bottom and top rows of cells.
    study = make_study()
    trials = _completed(DENSITY_THRESHOLD + 1)
    trials[0].values["loss"] = -100.0
    trials[-1].values["loss"] = 100.0
    (density,) = _heatmaps(plots.plot_history(study, trials))
    z = np.nan_to_num(np.asarray(density.z, dtype=float))
    assert z[0].sum() == 1 and z[0, 0] == 1  # trial 0 alone: the first column, lowest row
    assert z[-1].sum() == 1 and z[-1, -1] == 1  # the last trial: the last column, top row
    assert z.sum() == len(trials)


def test_figures_up_to_the_threshold_are_drawn_trial_by_trial(study: Study) -> None:
    at = _completed(DENSITY_THRESHOLD)
    history = plots.plot_history(study, at)
    assert not _heatmaps(history)
    points = next(t for t in history.data if t.name == "trial")
    assert sorted(points.x) == [t.number for t in at]  # every trial, none sampled away
    assert "showing" not in history.layout.title.text
    sl = plots.plot_slice(study, at)
    assert [t.name for t in sl.data] == list(study.space)
    assert {t.type for t in sl.data} == {"scatter"}
    assert "showing 500 of 2,000" in sl.layout.title.text  # its sample, as before
    contour = plots.plot_contour(study, at)
    assert len(contour.data[1].x) == 1000 and contour.data[1].hoverinfo == "skip"
    # One more trial and each is aggregated.
    over = _completed(DENSITY_THRESHOLD + 1)
    assert _heatmaps(plots.plot_history(study, over))
    assert _heatmaps(plots.plot_slice(study, over))
    assert len(plots.plot_contour(study, over).data[1].x) == DENSITY_BEST


def test_slice_of_a_large_study_has_a_density_per_parameter(study: Study, big: list[Trial]) -> None:
    done = [t for t in big if t.state == "completed"]
    fig = plots.plot_slice(study, big)
    heat = {h.name: h for h in _heatmaps(fig)}
    assert list(heat) == list(study.space)
    for name, h in heat.items():
        active = sum(name in t.params for t in done)
        assert _total(h) == active  # gamma: the rbf trials only
        assert h.coloraxis == "coloraxis"  # one colour scale for every panel
    # A cell per choice and per integer level; the log parameter binned on a log scale.
    assert list(heat["kernel"].x) == [-0.5, 0.5, 1.5]
    assert list(heat["depth"].x) == [v - 0.5 for v in range(1, 10)]
    lr_edges = np.asarray(heat["lr"].x)
    assert np.allclose(np.diff(np.log10(lr_edges)), np.diff(np.log10(lr_edges))[0])
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis3.ticktext) == ["linear", "rbf"]
    markers = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(markers) == len(study.space)
    best = _best_numbers(big, DENSITY_BEST)
    assert set(markers[0].customdata) == best  # lr is always active
    assert set(markers[3].customdata) <= best  # gamma: those of the best with rbf
    assert sum(m.showlegend for m in markers) == 1
    assert f"density of {len(done):,} trials" in fig.layout.title.text


def test_contour_of_a_large_study_marks_the_best_trials(study: Study, big: list[Trial]) -> None:
    fig = plots.plot_contour(study, big, x="lr", y="depth")
    contour, markers = fig.data
    assert isinstance(contour, go.Contour)
    assert set(markers.customdata) == _best_numbers(big, DENSITY_BEST)
    by_number = {t.number: t for t in big}
    assert list(markers.text) == [by_number[n].values["loss"] for n in markers.customdata]
    assert "the best 100 as markers" in fig.layout.title.text
    sampled = plots.plot_contour(study, big, x="lr", y="depth", max_points=700)
    assert len(sampled.data[1].x) == 700


def test_infeasible_trials_are_counted_but_never_marked_best() -> None:
    study = make_study(constraints={"time": ("<=", 4.0)})
    trials = make_trials(4000, multi=True)
    done = [t for t in trials if t.state == "completed"]
    feasible = sorted((t for t in done if t.values["time"] <= 4.0), key=lambda t: t.values["loss"])
    best = {t.number for t in feasible[:DENSITY_BEST]}
    history = plots.plot_history(study, trials)
    (density,) = _heatmaps(history)
    assert _total(density) == len(done)
    assert set(next(t for t in history.data if t.name.startswith("best ")).x) == best
    assert next(t for t in history.data if t.name == "best so far").y[-1] == pytest.approx(
        feasible[0].values["loss"]
    )
    sl = plots.plot_slice(study, trials)
    assert set(next(t for t in sl.data if isinstance(t, go.Scatter)).customdata) == best
    # The JSON the route and the page get: heatmaps and SVG scatters only.
    for fig in (history, sl, plots.plot_contour(study, trials)):
        assert {t["type"] for t in fig.to_plotly_json()["data"]} <= {
            "heatmap",
            "scatter",
            "contour",
        }


def test_a_parameter_with_one_value_gets_one_cell(study: Study) -> None:
    trials = _completed(DENSITY_THRESHOLD + 1)
    for t in trials:
        t.params["lr"] = 0.01
        t.params["depth"] = 3
    heat = {h.name: h for h in _heatmaps(plots.plot_slice(study, trials))}
    lr = np.asarray(heat["lr"].x)
    assert len(lr) == 2 and 0 < lr[0] < 0.01 < lr[1]  # positive: the axis is a log one
    assert list(heat["depth"].x) == [2.5, 3.5]
    assert _total(heat["lr"]) == len(trials)
