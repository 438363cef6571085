"""The BOHB designer: it learns from pruned trials' curves at the largest well-populated budget,
is deterministic with the seed, and every suggestion is valid."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.designers import Problem
from autotune.designers.bohb import BOHBDesigner, budget_observations
from autotune.models import Direction, Measurement, Trial, TrialState
from autotune.space import Categorical, Float, Int, SearchSpace

SPACE = SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
GOOD = np.array([0.2, 0.7])  # where the cheap evaluations are best


def _curve(p: dict, steps: range, *, good: np.ndarray = GOOD) -> list[Measurement]:
    """A learning curve whose level says how far ``p`` is from ``good`` at every step."""
    dist = float(np.sum((np.array([p["x"], p["y"]]) - good) ** 2))
    return [Measurement(step=s, value=dist + 1.0 / (s + 1)) for s in steps]


def _history(n_pruned: int = 40, seed: int = 0) -> list[Trial]:
    """Only pruned trials (stopped at step 9) carry the signal; the two completed trials reached
    step 99 but are too few to model, and their final values point the other way."""
    rng = np.random.default_rng(seed)
    trials = []
    for i, p in enumerate(SPACE.sample(rng, n_pruned)):
        curve = _curve(p, range(10))
        trials.append(
            Trial(
                number=i,
                state=TrialState.PRUNED,
                params=p,
                values={"loss": curve[-1].value},
                intermediate=curve,
            )
        )
    for j, p in enumerate([{"x": 0.9, "y": 0.1}, {"x": 0.8, "y": 0.2}]):
        curve = _curve(p, range(100), good=np.array([0.9, 0.1]))
        trials.append(
            Trial(
                number=n_pruned + j,
                state=TrialState.COMPLETED,
                params=p,
                values={"loss": curve[-1].value},
                intermediate=curve,
            )
        )
    return trials


def _mean_distance(configs: list[dict]) -> float:
    return float(np.mean([np.linalg.norm(np.array([c["x"], c["y"]]) - GOOD) for c in configs]))


def test_budget_is_the_largest_step_enough_trials_reached() -> None:
    history = _history()
    budget, obs = budget_observations(history, min_points=4)
    assert budget == 9  # only 2 trials reached step 99
    assert len(obs) == 42  # every trial has a value at step 9, the completed ones too
    budget, obs = budget_observations(history, min_points=2)
    assert budget == 99 and len(obs) == 2
    budget, obs = budget_observations(history[:3], min_points=4)
    assert budget is None and obs == []


def test_pruned_curves_steer_suggestions_to_the_good_region() -> None:
    problem = Problem(space=SPACE, objectives={"loss": Direction.MINIMIZE})
    designer = BOHBDesigner(random_fraction=0.0)
    got = designer.suggest(problem, completed=_history(), pending=[], count=20, seed=1)
    assert designer.describe() == {"designer": "bohb", "budget": 9}
    random = SPACE.sample(np.random.default_rng(1), 20)
    assert _mean_distance(got) < 0.5 * _mean_distance(random)
    assert _mean_distance(got) < 0.25
    # Without the pruned trials there is too little to model: uniform random.
    only_completed = [t for t in _history() if t.state == TrialState.COMPLETED]
    fallback = designer.suggest(problem, completed=only_completed, pending=[], count=20, seed=1)
    assert designer.describe()["budget"] is None
    assert _mean_distance(fallback) > 0.3


def test_maximize_flips_good_and_bad() -> None:
    problem = Problem(space=SPACE, objectives={"score": Direction.MAXIMIZE})
    got = BOHBDesigner(random_fraction=0.0).suggest(
        problem, completed=_history(), pending=[], count=20, seed=1
    )
    assert _mean_distance(got) > 0.3  # far from GOOD: there the curves are lowest


def test_deterministic_with_the_seed_and_valid_on_a_mixed_space() -> None:
    space = SearchSpace(
        {
            "lr": Float(1e-4, 1.0, log=True),
            "depth": Int(1, 12),
            "kernel": Categorical(["linear", "rbf"]),
            "gamma": Float(1e-3, 10.0, log=True, condition={"kernel": ["rbf"]}),
        }
    )
    rng = np.random.default_rng(3)
    history = [
        Trial(
            number=i,
            state=TrialState.PRUNED if i % 3 else TrialState.COMPLETED,
            params=p,
            values={"loss": float(i)},
            intermediate=[Measurement(step=s, value=p["depth"] / (s + 1)) for s in range(5)],
        )
        for i, p in enumerate(space.sample(rng, 20))
    ]
    history.append(Trial(number=20, state=TrialState.FAILED, params=space.sample(rng, 1)[0]))
    problem = Problem(space=space)
    a = BOHBDesigner().suggest(problem, completed=history, pending=[], count=8, seed=5)
    b = BOHBDesigner().suggest(problem, completed=history, pending=[], count=8, seed=5)
    c = BOHBDesigner().suggest(problem, completed=history, pending=[], count=8, seed=6)
    assert a == b and a != c
    assert all(space.validate_params(p) == p for p in a)
    # Small depth is best at every step: the model pulls depth down.
    model = BOHBDesigner(random_fraction=0.0).suggest(
        problem, completed=history, pending=[], count=8, seed=5
    )
    assert np.mean([p["depth"] for p in model]) < 5


def test_registered_and_checks_its_options() -> None:
    from autotune.designers import make_designer

    assert isinstance(make_designer("bohb"), BOHBDesigner)
    with pytest.raises(ValueError, match="gamma"):
        BOHBDesigner(gamma=1.5)
