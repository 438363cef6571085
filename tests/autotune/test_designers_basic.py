"""The designer registry and the random and Sobol' designers (pure functions of their inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from autotune import Categorical, Float, Int, SearchSpace, ValidationError
from autotune.designers import Designer, Problem, designer_names, make_designer, register_designer
from autotune.models import Trial, TrialState

SPACE = SearchSpace(
    {
        "x": Float(-5.0, 5.0),
        "lr": Float(1e-4, 1.0, log=True),
        "n": Int(1, 16),
        "kind": Categorical(["a", "b", "c"]),
        "g": Float(0.0, 1.0, condition={"kind": ["c"]}),
    }
)
PROBLEM = Problem(space=SPACE)


def _done(params: list[dict]) -> list[Trial]:
    return [
        Trial(number=i, state=TrialState.COMPLETED, params=p, values={"value": 0.0})
        for i, p in enumerate(params)
    ]


def test_registry() -> None:
    assert {"random", "sobol"} <= set(designer_names())
    assert make_designer("random").name == "random"
    assert make_designer("sobol").describe() == {"designer": "sobol"}
    with pytest.raises(ValidationError) as e:
        make_designer("simulated-annealing")
    assert e.value.details["field"] == "algorithm" and "random" in e.value.message
    with pytest.raises(ValueError, match="already registered"):
        register_designer("random")(type(make_designer("random")))


@pytest.mark.parametrize("name", ["random", "sobol"])
def test_valid_deterministic_and_seed_dependent(name: str) -> None:
    d = make_designer(name)
    a = d.suggest(PROBLEM, completed=[], pending=[], count=8, seed=7)
    b = make_designer(name).suggest(PROBLEM, completed=[], pending=[], count=8, seed=7)
    c = d.suggest(PROBLEM, completed=[], pending=[], count=8, seed=8)
    assert a == b and a != c and len(a) == 8
    for p in a:
        assert SPACE.validate_params(p) == p
        assert ("g" in p) == (p["kind"] == "c")
    assert len({str(p) for p in a}) == 8


@pytest.mark.parametrize("name", ["random", "sobol"])
def test_history_moves_the_stream_on(name: str) -> None:
    d = make_designer(name)
    first = d.suggest(PROBLEM, completed=[], pending=[], count=4, seed=3)
    nxt = d.suggest(PROBLEM, completed=_done(first[:2]), pending=first[2:], count=4, seed=3)
    assert not {str(p) for p in nxt} & {str(p) for p in first}


def test_sobol_continues_one_sequence() -> None:
    d = make_designer("sobol")
    whole = d.suggest(PROBLEM, completed=[], pending=[], count=8, seed=11)
    part = d.suggest(PROBLEM, completed=_done(whole[:3]), pending=whole[3:5], count=3, seed=11)
    assert part == whole[5:8]


def test_sobol_covers_the_cube_evenly() -> None:
    problem = Problem(space=SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)}))
    pts = make_designer("sobol").suggest(problem, completed=[], pending=[], count=64, seed=0)
    xy = np.array([[p["x"], p["y"]] for p in pts])
    # Every cell of an 8 x 8 grid holds exactly one point of the first 64 (a (0, 6, 2)-net).
    cells = {(int(x * 8), int(y * 8)) for x, y in xy}
    assert len(cells) == 64


def test_designer_interface_is_small() -> None:
    class Fixed(Designer):
        name = "fixed-test"

        def suggest(self, problem, *, completed, pending, count, seed):  # type: ignore[override]
            return [problem.space.decode([0.5] * problem.space.dim)] * count

    out = Fixed().suggest(PROBLEM, completed=[], pending=[], count=2, seed=0)
    assert len(out) == 2 and Fixed().describe() == {"designer": "fixed-test"}
