"""The GP designer and ``auto``: encoding, validity, determinism, batches, constraints, failures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.designers import Problem, make_designer
from autotune.designers.gp import GPDesigner
from autotune.models import Constraint, Direction, Trial, TrialState
from autotune.space import Categorical, Float, Int, SearchSpace

pytest.importorskip("torch")

from autotune._gp.search_space import INACTIVE, encode_space  # noqa: E402

MIXED = SearchSpace(
    {
        "lr": Float(1e-4, 1.0, log=True),
        "depth": Int(1, 40),
        "width": Int(8, 512, log=True),
        "frac": Float(0.0, 1.0, step=0.05),
        "kernel": Categorical(["linear", "rbf", "poly"]),
        "gamma": Float(1e-3, 10.0, log=True, condition={"kernel": ["rbf"]}),
        "degree": Int(2, 5, condition={"kernel": ["poly"]}),
        "coef": Categorical(["a", "b"], condition={"kernel": ["poly"]}),
    }
)


def _value(p: dict) -> float:
    v = (math.log10(p["lr"]) + 2) ** 2 + (p["depth"] - 10) ** 2 / 100 + (p["frac"] - 0.3) ** 2
    v += {"linear": 1.0, "rbf": 0.0, "poly": 0.5}[p["kernel"]]
    if p["kernel"] == "rbf":
        v += (math.log10(p["gamma"])) ** 2
    return v


def _trial(i: int, params: dict, values: dict | None, state: TrialState = TrialState.COMPLETED):
    return Trial(number=i, state=state, params=params, values=values)


def _run(designer, problem, f, n, *, seed=0, start=()):
    trials = list(start)
    for _ in range(n):
        [p] = designer.suggest(problem, completed=trials, pending=[], count=1, seed=seed)
        trials.append(_trial(len(trials), p, f(p)))
    return trials


def test_canonical_points_round_trip() -> None:
    enc = encode_space(MIXED)
    u = np.random.default_rng(0).random((200, MIXED.dim))
    c = enc.canonicalize(u)
    again = MIXED.encode_many([MIXED.decode(row) for row in c])
    np.testing.assert_allclose(again, c, atol=1e-12)
    np.testing.assert_array_equal(enc.canonicalize(c), c)
    # Inactive coordinates are pinned; active ones are what decode sees.
    for row, params in zip(c, (MIXED.decode(r) for r in c), strict=True):
        mask = MIXED.active_mask(params)
        assert np.all(row[~mask] == INACTIVE)
        np.testing.assert_array_equal(enc.active_mask(row[None])[0], mask)


def test_every_suggestion_is_valid_on_a_mixed_conditional_space() -> None:
    problem = Problem(space=MIXED)
    d = GPDesigner(n_initial=4)
    trials = _run(d, problem, lambda p: {"value": _value(p)}, 10)
    batch = d.suggest(problem, completed=trials, pending=[trials[-1].params], count=3, seed=1)
    for p in [t.params for t in trials] + batch:
        assert MIXED.validate_params(p) == p
    assert d.describe()["phase"] == "bayesian optimization"


def test_deterministic_given_the_seed() -> None:
    problem = Problem(space=MIXED)
    history = _run(GPDesigner(n_initial=4), problem, lambda p: {"value": _value(p)}, 6)
    a = GPDesigner(n_initial=4).suggest(problem, completed=history, pending=[], count=2, seed=7)
    b = GPDesigner(n_initial=4).suggest(problem, completed=history, pending=[], count=2, seed=7)
    assert a == b


def test_batch_is_diverse_and_respects_pending() -> None:
    space = SearchSpace({"a": Int(0, 3), "b": Categorical(["x", "y"])})  # 8 configurations
    problem = Problem(space=space)
    f = lambda p: {"value": p["a"] + (p["b"] == "y")}  # noqa: E731
    trials = _run(GPDesigner(n_initial=3), problem, f, 3)
    pending = [{"a": 0, "b": "x"}]
    batch = GPDesigner(n_initial=3).suggest(
        problem, completed=trials, pending=pending, count=4, seed=0
    )
    keys = [tuple(sorted(p.items())) for p in batch]
    taken = {tuple(sorted(t.params.items())) for t in trials} | {tuple(sorted(pending[0].items()))}
    assert len(set(keys)) == 4 and not set(keys) & taken


def test_continuous_batch_has_distinct_points() -> None:
    space = SearchSpace({"x": Float(0, 1), "y": Float(0, 1)})
    problem = Problem(space=space)
    trials = _run(GPDesigner(), problem, lambda p: {"value": p["x"] ** 2 + p["y"] ** 2}, 6)
    batch = GPDesigner().suggest(problem, completed=trials, pending=[], count=4, seed=0)
    X = np.array([[p["x"], p["y"]] for p in batch])
    dists = np.linalg.norm(X[:, None] - X[None], axis=-1)[np.triu_indices(4, 1)]
    assert dists.min() > 1e-3


def test_finds_the_feasible_region() -> None:
    space = SearchSpace({"x": Float(0, 1), "y": Float(0, 1)})
    # Feasible only in a small corner: c = x + y <= 0.3; minimize (x - 1)^2 + (y - 1)^2.
    problem = Problem(space=space, constraints={"c": Constraint(op="<=", bound=0.3)})

    def f(p):
        return {"value": (p["x"] - 1) ** 2 + (p["y"] - 1) ** 2, "c": p["x"] + p["y"]}

    d = GPDesigner(n_initial=4)
    trials = _run(d, problem, f, 20)
    feasible = [t for t in trials[4:] if t.values["c"] <= 0.3]
    assert len(feasible) >= 5
    best = min(t.values["value"] for t in feasible)
    assert best < 1.46  # 1.445 at (0.15, 0.15)


def test_failures_never_break_the_fit_and_are_avoided() -> None:
    space = SearchSpace({"x": Float(0, 1), "y": Float(0, 1)})
    problem = Problem(space=space)
    d = GPDesigner(n_initial=4)
    # Only failures so far: still valid suggestions.
    fails = [
        _trial(i, p, None, TrialState.FAILED)
        for i, p in enumerate(space.sample(np.random.default_rng(0), 6))
    ]
    out = d.suggest(problem, completed=fails, pending=[], count=2, seed=0)
    assert len(out) == 2
    # Trials fail whenever x > 0.5; the objective prefers large x.
    trials: list[Trial] = []
    for _ in range(20):
        [p] = d.suggest(problem, completed=trials, pending=[], count=1, seed=3)
        if p["x"] > 0.5:
            trials.append(_trial(len(trials), p, None, TrialState.FAILED))
        else:
            trials.append(_trial(len(trials), p, {"value": -p["x"] + (p["y"] - 0.5) ** 2}))
    late = trials[10:]
    assert sum(t.state == TrialState.FAILED for t in late) <= 3
    assert d.describe()["phase"] == "bayesian optimization"


def test_degenerate_histories() -> None:
    space = SearchSpace({"x": Float(-1, 1)})  # 1-D
    problem = Problem(space=space)
    d = GPDesigner(n_initial=2)
    same = _run(d, problem, lambda p: {"value": 3.0}, 6)  # all values identical
    assert all(-1 <= t.params["x"] <= 1 for t in same)
    one = [_trial(0, {"x": 0.2}, {"value": 1.0})]  # a single point
    assert len(d.suggest(problem, completed=one, pending=[], count=3, seed=0)) == 3


def test_multi_objective_returns_points() -> None:
    space = SearchSpace({"x": Float(0, 1), "y": Float(0, 1)})
    problem = Problem(space=space, objectives={"f1": Direction.MINIMIZE, "f2": Direction.MINIMIZE})

    def f(p):
        return {"f1": p["x"] ** 2 + p["y"] ** 2, "f2": (p["x"] - 1) ** 2 + p["y"] ** 2}

    d = GPDesigner(n_initial=4)
    trials = _run(d, problem, f, 8)
    batch = d.suggest(problem, completed=trials, pending=[], count=2, seed=0)
    assert len(batch) == 2 and all(space.validate_params(p) == p for p in batch)
    assert d.describe()["acquisition"] == "LogEHVI"
    exact = GPDesigner(n_initial=4, mo_acquisition="qlognehvi")
    [p] = exact.suggest(problem, completed=trials, pending=[batch[0]], count=1, seed=0)
    assert space.validate_params(p) == p and p not in batch[:1]
    assert exact.describe()["acquisition"] == "qLogNEHVI"


def test_gp_beats_random_on_a_quadratic() -> None:
    space = SearchSpace({"x": Float(-5, 5), "y": Float(-5, 5)})
    problem = Problem(space=space)

    def f(p):
        return {"value": (p["x"] - 1.3) ** 2 + 2 * (p["y"] + 0.7) ** 2}

    gp_best = min(t.values["value"] for t in _run(make_designer("auto"), problem, f, 15))
    rnd_best = min(t.values["value"] for t in _run(make_designer("random"), problem, f, 15))
    assert gp_best < 1e-2 and gp_best < rnd_best / 20


def test_auto_describes_its_choice() -> None:
    d = make_designer("auto")
    problem = Problem(space=SearchSpace({"x": Float(0, 1)}))
    d.suggest(problem, completed=[], pending=[], count=1, seed=0)
    info = d.describe()
    assert info["designer"] == "auto" and info["phase"] == "initial design (sobol)"
    assert info["reason"]


def test_closed_form_gradients_match_autograd() -> None:
    import math

    import torch

    from autotune._gp.acqf import ConstraintModel, LogEHVI, LogEI
    from autotune._gp.gp import _neg_log_posterior, _neg_log_posterior_np, _sq_diff, fit_gp

    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    X[:, 2] = (rng.integers(0, 3, 25) + 0.5) / 3  # a categorical coordinate
    y = np.sin(4 * X[:, 0]) + X[:, 1]
    y = (y - y.mean()) / y.std()
    cat = np.array([False, False, True])
    # The marginal likelihood's gradient (used by the fit).
    sq = _sq_diff(torch.from_numpy(X), torch.from_numpy(X), torch.from_numpy(cat), True)
    raw = np.array([-0.5, 0.2, 0.1, 0.3, math.log(0.01)])
    rt = torch.tensor(raw, requires_grad=True)
    loss = _neg_log_posterior(rt, sq, torch.from_numpy(y), 1.9)
    (g,) = torch.autograd.grad(loss, rt)
    loss_np, g_np = _neg_log_posterior_np(raw, sq.numpy(), y, 1.9)
    assert abs(loss.item() - loss_np) < 1e-9
    np.testing.assert_allclose(g_np, g.numpy(), atol=1e-8)
    # The acquisitions' gradients (used by the optimizer), on continuous coordinates.
    gp, gc = fit_gp(X, y, cat), fit_gp(X, -y, cat)
    front = np.column_stack([y, -y])
    for acqf in (
        LogEI(gp, 1.0, [ConstraintModel(gc, 0.2)]),
        LogEHVI([gp, gc], front, np.array([-3.0, -3.0]), n_mc=16, seed=0),
    ):
        x = rng.random((4, 3))
        x[:, 2] = (rng.integers(0, 3, 4) + 0.5) / 3
        cont = np.array([0, 1])
        v, gr = acqf.value_and_grad(x, cont)
        xt = torch.tensor(x, requires_grad=True)
        vt = acqf(xt)
        (gt,) = torch.autograd.grad(vt.sum(), xt)
        np.testing.assert_allclose(v, vt.detach().numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gr, gt.numpy()[:, cont], rtol=1e-5, atol=1e-7)


def test_one_objective_model_expects_the_worst_value_away_from_the_data() -> None:
    """The pessimistic prior mean: far from every observation the objective model's mean is
    the worst value seen, not the average, so an unexplored corner has EI from its variance
    alone; near the observations the data decide."""
    import torch

    from autotune._gp.gp import fit_gp
    from autotune.designers.gp import _pessimistic, _warp

    rng = np.random.default_rng(1)
    X = 0.3 * rng.random((30, 4))  # every observation in one corner of the cube
    y = -np.sum((X - 0.15) ** 2, axis=1)  # maximized
    Z = _pessimistic(_warp(y)[:, None])
    assert Z.min() == 0.0 and np.argmin(Z[:, 0]) == np.argmin(y)
    assert np.all(np.diff(Z[np.argsort(y), 0]) >= 0)  # the order of the values is kept
    gp = fit_gp(X, Z[:, 0], np.zeros(4, dtype=bool))
    with torch.no_grad():
        far, _ = gp.posterior(torch.full((1, 4), 0.95, dtype=torch.float64))
        near, _ = gp.posterior(torch.from_numpy(X[:5]))
    assert abs(float(far[0])) < 0.05 * float(np.ptp(Z))  # the worst value seen
    assert float(far[0]) < float(Z.mean()) - 0.3 * float(Z.std())
    np.testing.assert_allclose(near.numpy(), Z[:5, 0], atol=0.05 * float(np.ptp(Z)))
