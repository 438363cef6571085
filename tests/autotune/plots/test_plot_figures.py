"""Every figure from constructed trials: one and several objectives, conditional parameters,
pruned, failed and running trials, constraints, empty studies and large (sampled) studies."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import numpy as np
import plotly.graph_objects as go
import pytest
from plot_helpers import T0, make_study, make_trials

from autotune import plots
from autotune.errors import ValidationError
from autotune.models import Study, Trial


def _json(fig: go.Figure) -> dict:
    out = json.loads(fig.to_json())
    assert out["data"] is not None
    return out


def _points(fig: go.Figure, name: str) -> go.Scatter:
    return next(t for t in fig.data if t.name == name)


def test_every_kind_is_registered_and_draws(study: Study, trials: list[Trial]) -> None:
    assert plots.plot_kinds() == [
        "history", "edf", "parallel_coordinates", "slice", "contour", "importance",
        "pareto_front", "intermediate_values", "timeline",
    ]  # fmt: skip
    # A single-objective study has no Pareto front.
    assert "pareto_front" not in plots.plot_kinds(study)
    for kind in plots.plot_kinds(study):
        fig = plots.make_figure(kind, study, trials)
        assert isinstance(fig, go.Figure)
        assert len(fig.data) >= 1, kind
        _json(fig)


def test_history_best_so_far(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_history(study, trials)
    done = [t for t in trials if t.state == "completed"]
    pts = _points(fig, "trial")
    assert list(pts.x) == [t.number for t in done]  # pruned/failed/running are not drawn
    best = _points(fig, "best so far")
    running = np.minimum.accumulate([t.values["loss"] for t in done])
    assert best.y[-1] == pytest.approx(running[-1])
    assert list(best.y) == sorted(best.y, reverse=True)  # minimised: never goes up
    assert best.line.shape == "hv"


def test_history_of_a_maximised_objective_and_the_objective_option() -> None:
    study = make_study({"loss": "minimize", "time": "maximize"})
    trials = make_trials(40, multi=True)
    fig = plots.plot_history(study, trials, objective="time")
    best = _points(fig, "best so far")
    assert list(best.y) == sorted(best.y)
    assert fig.layout.yaxis.title.text == "time"
    with pytest.raises(ValidationError, match="unknown objective 'nope'") as e:
        plots.plot_history(study, trials, objective="nope")
    assert e.value.details["allowed"] == ["loss", "time"]


def test_history_marks_infeasible_trials_and_never_calls_them_best() -> None:
    study = make_study(constraints={"time": ("<=", 4.0)})
    trials = make_trials(60, multi=True)
    fig = plots.plot_history(study, trials)
    infeasible = _points(fig, "infeasible")
    feasible_best = min(
        t.values["loss"] for t in trials if t.state == "completed" and t.values["time"] <= 4.0
    )
    assert len(infeasible.x) > 0
    assert _points(fig, "best so far").y[-1] == pytest.approx(feasible_best)


def test_empty_study_gives_a_figure_that_says_so(study: Study) -> None:
    for kind in plots.plot_kinds(study):
        fig = plots.make_figure(kind, study, [])
        text = " ".join(a.text for a in fig.layout.annotations)
        assert any(w in text for w in ("No ", "Needs", "Fewer")), kind


def _axis_ticks(fig: go.Figure) -> dict[str, list[str]]:
    """Each parallel-coordinates axis' tick labels, by axis label."""
    ticks: dict[str, list[str]] = {label: [] for label in fig.layout.xaxis.ticktext}
    for a in fig.layout.annotations:
        ticks[a.name.removeprefix("tick:")].append(a.text)
    return ticks


def _lines(fig: go.Figure) -> list[np.ndarray]:
    """Every polyline of a parallel-coordinates figure as its (n_axes,) vertex heights.

    A band's trace is one unbroken polyline: each trial's vertices out along the axes and back
    (its number in customdata), so a trial is a run of 2 * n_axes - 1 vertices.
    """
    n_axes = len(fig.layout.xaxis.ticktext)
    out = []
    for t in fig.data:
        if t.mode != "lines":
            continue
        x, y = np.asarray(t.x, dtype=float), np.asarray(t.y, dtype=float)
        runs = np.split(np.arange(len(y)), np.flatnonzero(np.diff(t.customdata)) + 1)
        for run in runs:
            assert len(run) == 2 * n_axes - 1
            out_x, back_x = x[run[:n_axes]], x[run[n_axes - 1 :]]
            assert list(out_x) == list(range(n_axes)) and list(back_x) == list(out_x[::-1])
            assert list(y[run[n_axes - 1 :]]) == list(y[run[:n_axes]][::-1])  # the same way back
            out.append(y[run[:n_axes]])
    return out


def test_parallel_coordinates_with_conditional_and_categorical(
    study: Study, trials: list[Trial]
) -> None:
    fig = plots.plot_parallel_coordinates(study, trials)
    # SVG scatter traces only: no WebGL parcoords.
    assert {t.type for t in fig.data} == {"scatter"}
    assert list(fig.layout.xaxis.ticktext) == ["loss", "lr", "depth", "kernel", "gamma"]
    assert len(fig.layout.shapes) == 5  # one vertical axis each
    ticks = _axis_ticks(fig)
    assert ticks["kernel"] == ["linear", "rbf"]
    assert ticks["gamma"][0] == "inactive"  # linear-kernel trials have no gamma
    assert ticks["lr"] == ["0.0001", "0.001", "0.01", "0.1", "1"]  # log axis in real values
    assert ticks["depth"] == [str(d) for d in range(1, 9)]
    done = [t for t in trials if t.state == "completed"]
    lines = _lines(fig)
    assert len(lines) == len(done)  # every completed trial, one whole line each
    assert all(len(line) == 5 for line in lines)
    # Inactive gamma sits below its axis, active values on it.
    n_linear = sum(t.params["kernel"] == "linear" for t in done)
    gamma = np.array([line[4] for line in lines])
    assert (gamma < 0).sum() == n_linear
    assert ((gamma >= 0) & (gamma <= 1)).sum() == len(done) - n_linear
    # Each line carries its trial's number (hover); the bands are the colour key.
    assert sorted(n for t in fig.data for n in set(t.customdata)) == [t.number for t in done]
    assert fig.layout.legend.title.text == "loss"
    assert "showing" not in fig.layout.title.text


def test_parallel_coordinates_lines_map_real_values() -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 10.0}, "c": {"type": "categorical",
             "choices": ["a", "b", "c"]}}  # fmt: skip
    study = make_study(space=space)
    trials = [
        Trial(number=i, state="completed", params=p,
              values={"loss": v}, created_at=T0, completed_at=T0)
        for i, (p, v) in enumerate([({"x": 2.5, "c": "b"}, 1.0), ({"x": 10.0, "c": "c"}, 3.0)])
    ]  # fmt: skip
    fig = plots.plot_parallel_coordinates(study, trials)
    lines = sorted(_lines(fig), key=lambda line: line[0])
    np.testing.assert_allclose(lines[0], [0.0, 0.25, 0.5])  # best loss, x=2.5 of 0-10, "b"
    np.testing.assert_allclose(lines[1], [1.0, 1.0, 1.0])
    assert _axis_ticks(fig)["c"] == ["a", "b", "c"]
    # The best line is drawn last (on top) and the darkest; a maximised objective flips it.
    assert [t.name for t in fig.data if t.mode == "lines"][-1].startswith("1–")


def test_parallel_coordinates_options(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_parallel_coordinates(study, trials, params=["kernel", "lr"])
    assert list(fig.layout.xaxis.ticktext) == ["loss", "kernel", "lr"]
    with pytest.raises(ValidationError, match="unknown parameter 'nope'"):
        plots.plot_parallel_coordinates(study, trials, params=["nope"])
    with pytest.raises(ValidationError, match="max_points"):
        plots.plot_parallel_coordinates(study, trials, max_points=0)


def test_slice_one_panel_per_parameter(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_slice(study, trials, params=["lr", "kernel"])
    assert [t.name for t in fig.data] == ["lr", "kernel"]
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis2.ticktext) == ["linear", "rbf"]
    with pytest.raises(ValidationError, match="unknown parameter 'nope'"):
        plots.plot_slice(study, trials, params=["nope"])


def test_contour_of_a_pair(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_contour(study, trials, x="lr", y="kernel")
    contour = fig.data[0]
    assert isinstance(contour, go.Contour)
    assert np.asarray(contour.z).shape == (2, 30)  # 2 kernel levels x 30 lr cells
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValidationError, match="twice"):
        plots.plot_contour(study, trials, x="lr", y="lr")
    one = make_study(space={"x": {"type": "float", "low": 0, "high": 1}})
    assert "contour" not in plots.plot_kinds(one)
    with pytest.raises(ValidationError, match="two parameters"):
        plots.plot_contour(one, [])


def test_importance_finds_the_parameter_that_matters(study: Study) -> None:
    trials = make_trials(200)
    imp = plots.param_importances(study, trials)
    assert list(imp)[0] == "lr"
    assert sum(imp.values()) == pytest.approx(1.0)
    assert imp["lr"] > imp["kernel"]
    fig = plots.plot_importance(study, trials)
    assert fig.data[0].y[-1] == "lr"  # most important drawn on top


def test_pareto_front_matches_brute_force() -> None:
    study = make_study({"loss": "minimize", "time": "minimize"})
    trials = make_trials(80, multi=True)
    assert "pareto_front" in plots.plot_kinds(study)
    fig = plots.plot_pareto_front(study, trials)
    front = set(_points(fig, "Pareto front").customdata)
    done = [t for t in trials if t.state == "completed"]
    expected = {
        a.number
        for a in done
        if not any(
            b.values["loss"] <= a.values["loss"]
            and b.values["time"] <= a.values["time"]
            and (b.values["loss"] < a.values["loss"] or b.values["time"] < a.values["time"])
            for b in done
        )
    }
    assert front == expected
    with pytest.raises(ValidationError, match="several objectives"):
        plots.plot_pareto_front(make_study(), trials)


@pytest.mark.parametrize("k", [2, 3])
def test_pareto_mask_against_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, 6, size=(120, k)).astype(float)  # many ties and duplicates
    mask = plots.pareto_mask(y)
    for i, j in itertools.product(range(len(y)), repeat=2):
        if np.all(y[j] <= y[i]) and np.any(y[j] < y[i]):
            assert not mask[i]
    dominated = [
        any(np.all(y[j] <= y[i]) and np.any(y[j] < y[i]) for j in range(len(y)))
        for i in range(len(y))
    ]
    assert list(mask) == [not d for d in dominated]


def test_pareto_front_of_three_objectives_is_3d() -> None:
    study = make_study({"loss": "minimize", "time": "minimize", "size": "maximize"})
    trials = [
        t.model_copy(update={"values": {**t.values, "size": float(t.number % 7)}})
        if t.state == "completed"
        else t
        for t in make_trials(50, multi=True)
    ]
    fig = plots.plot_pareto_front(study, trials, objectives=["loss", "time", "size"])
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)


def test_intermediate_values_mark_pruned_trials(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_intermediate_values(study, trials)
    names = [t.name for t in fig.data]
    assert any(n.startswith("completed") for n in names)
    assert any(n.startswith("pruned") for n in names)
    marks = _points(fig, "pruned here")
    pruned = [t for t in trials if t.state == "pruned"]
    assert list(marks.customdata) == [t.number for t in pruned]
    assert marks.marker.symbol == "x"


def test_timeline_one_row_per_worker(study: Study, trials: list[Trial]) -> None:
    # The running trial's bar ends at now: just after the last trial started.
    now = T0 + timedelta(seconds=10 * len(trials))
    fig = plots.plot_timeline(study, trials, now=now)
    assert list(fig.layout.yaxis.ticktext) == ["worker-0", "worker-1", "worker-2"]
    # Every bar a filled rectangle on its worker's row, between the trial's start and end.
    rows = {round(float(y)) for t in fig.data for y in t.y if y is not None and not np.isnan(y)}
    assert rows == {0, 1, 2}
    assert all(t.fill == "toself" and t.mode == "none" for t in fig.data)
    n_bars = sum(np.isnan(np.asarray(t.x, dtype=float)).sum() for t in fig.data)
    assert n_bars == len(trials)
    # Minutes since the first trial began (the trials span about 20 minutes).
    assert fig.layout.xaxis.title.text == "minutes since 2026-01-01T00:00:00+00:00"
    starts = [x for t in fig.data for x in t.x[::6]]
    assert min(starts) == 0.0
    assert max(x for t in fig.data for x in t.x if not np.isnan(x)) == pytest.approx(
        len(trials) * 10 / 60
    )
    states = {t.name.split()[0] for t in fig.data}
    assert states == {"completed", "pruned", "failed", "running"}
    # Without client ids the rows are trial numbers.
    anonymous = [t.model_copy(update={"client_id": None}) for t in trials]
    fig2 = plots.plot_timeline(study, anonymous)
    assert fig2.layout.yaxis.title.text == "trial"


def test_edf_is_a_distribution(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_edf(study, trials)
    (line,) = fig.data
    assert line.y[-1] == pytest.approx(1.0)
    assert list(line.x) == sorted(line.x)


def test_large_study_is_sampled_and_uses_webgl(study: Study) -> None:
    trials = make_trials(10_000)
    n_done = sum(t.state == "completed" for t in trials)
    sampled = _points(plots.plot_history(study, trials, max_points=2000), "trial")
    assert isinstance(sampled, go.Scatter)  # a 2,000-point sample stays SVG
    assert len(sampled.x) == 2000 < n_done
    big = _points(plots.plot_history(study, trials, max_points=6000), "trial")
    assert isinstance(big, go.Scattergl)  # WebGL only past 5,000 points
    assert len(big.x) == 6000
    fig = plots.plot_history(study, trials, max_points=500)
    pts = _points(fig, "trial")
    assert isinstance(pts, go.Scatter)
    assert len(pts.x) == 500
    assert "showing 500 of" in fig.layout.title.text
    # The best trial survives the sample.
    best = min(t.values["loss"] for t in trials if t.state == "completed")
    assert min(pts.y) == pytest.approx(best)
    assert _points(fig, "best so far").y[-1] == pytest.approx(best)
    pc = plots.plot_parallel_coordinates(study, trials)
    assert len(_lines(pc)) == 1000 < n_done
    assert f"showing 1,000 of {n_done:,}: the best 250" in pc.layout.title.text
    # The best trials are all drawn; the sample spans the whole range of values.
    drawn = {n for t in pc.data for n in t.customdata}
    done = sorted((t for t in trials if t.state == "completed"), key=lambda t: t.values["loss"])
    assert {t.number for t in done[:250]} <= drawn
    assert done[-1].number in drawn  # the worst too: the objective axis spans every value
    assert {t.type for t in pc.data} == {"scatter"}
    curves = plots.plot_intermediate_values(study, trials, max_curves=50)
    assert "showing 50 of" in curves.layout.title.text
    edf = plots.plot_edf(study, trials)
    assert len(edf.data[0].x) <= 1000


def test_make_figure_refuses_unknown_kinds_and_options(study: Study, trials: list[Trial]) -> None:
    with pytest.raises(ValidationError, match="unknown plot kind 'nope'") as e:
        plots.make_figure("nope", study, trials)
    assert "history" in e.value.details["allowed"]
    with pytest.raises(ValidationError, match="takes no option 'x'"):
        plots.make_figure("edf", study, trials, x="lr")


def test_importing_the_client_does_not_import_plotly() -> None:
    import subprocess
    import sys

    code = "import sys, autotune.client; print('plotly' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_history_of_trials_in_any_order(study: Study, trials: list[Trial]) -> None:
    fig = plots.plot_history(study, trials[::-1])
    assert list(_points(fig, "trial").x) == sorted(_points(fig, "trial").x)
    assert list(fig.data[-1].y) == list(plots.plot_history(study, trials).data[-1].y)
