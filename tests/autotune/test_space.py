"""Search spaces: validation, JSON, conditions and the unit-cube encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotune import Categorical, Float, Int, SearchSpace, StudySpec, ValidationError
from autotune.models import Constraint, Direction

SVM = {
    "lr": Float(1e-3, 0.3, log=True),
    "depth": Int(2, 12),
    "kernel": Categorical(["linear", "rbf"]),
    "gamma": Float(1e-4, 1.0, log=True, condition={"kernel": ["rbf"]}),
}


def test_python_and_json_forms_agree() -> None:
    space = SearchSpace(SVM)
    as_json = space.to_json()
    assert as_json["lr"] == {"type": "float", "low": 1e-3, "high": 0.3, "log": True}
    assert as_json["gamma"]["condition"] == {"kernel": ["rbf"]}
    assert SearchSpace(as_json) == space
    assert SearchSpace.from_json(as_json).names == ["lr", "depth", "kernel", "gamma"]
    assert space.dim == 4 and space.is_conditional and len(space) == 4


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"x": {"type": "float", "low": 1, "high": 1}}, "space.x", "less than"),
        ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, "space.x", "low > 0"),
        ({"x": {"type": "float", "low": 0, "high": math.inf}}, "space.x", "finite"),
        ({"x": {"type": "float", "low": 0, "high": 1, "step": 0.3}}, "space.x", "multiple"),
        ({"x": {"type": "float", "low": 1, "high": 2, "step": 0.5, "log": True}}, "space.x", "log"),
        ({"n": {"type": "int", "low": 0, "high": 5, "log": True}}, "space.n", "low >= 1"),
        ({"n": {"type": "int", "low": 0, "high": 10, "step": 3}}, "space.n", "multiple"),
        ({"n": {"type": "int", "low": 5, "high": 2}}, "space.n", "less than"),
        ({"n": {"type": "int", "low": 0, "high": 2**60}}, "space.n", "2**53"),
        ({"c": {"type": "categorical", "choices": []}}, "space.c", "empty"),
        ({"c": {"type": "categorical", "choices": ["a", "a"]}}, "space.c", "duplicate"),
        ({"c": {"type": "categorical", "choices": [1, 1.0]}}, "space.c", "duplicate"),
        ({"c": {"type": "categorical", "choices": [math.nan]}}, "space.c", "finite"),
        ({"1bad": {"type": "int", "low": 0, "high": 1}}, "space.1bad", "not allowed"),
        ({"x": {"type": "double", "low": 0, "high": 1}}, "space.x", "x"),
        ({"x": {"type": "float", "low": 0, "high": 1, "lo": 2}}, "space.x", "lo"),
        (
            {"g": {"type": "float", "low": 0, "high": 1, "condition": {"kernel": ["rbf"]}}},
            "space.g.condition",
            "unknown parent",
        ),
        (
            {
                "n": {"type": "int", "low": 0, "high": 1},
                "g": {"type": "float", "low": 0, "high": 1, "condition": {"n": [1]}},
            },
            "space.g.condition",
            "categorical",
        ),
        (
            {
                "k": {"type": "categorical", "choices": ["a"]},
                "g": {"type": "float", "low": 0, "high": 1, "condition": {"k": ["b"]}},
            },
            "space.g.condition",
            "not a choice",
        ),
        (
            {
                "a": {"type": "categorical", "choices": [1, 2], "condition": {"b": [1]}},
                "b": {"type": "categorical", "choices": [1, 2], "condition": {"a": [1]}},
            },
            None,
            "cycle",
        ),
        ({}, "space", "at least one"),
    ],
)
def test_invalid_spaces_name_the_parameter(params: dict, field: str | None, words: str) -> None:
    with pytest.raises(ValidationError) as e:
        SearchSpace(params)
    if field is not None:
        assert e.value.details["field"] == field
    else:
        assert e.value.details["field"].endswith(".condition")
    assert words in e.value.message


def test_validate_params() -> None:
    space = SearchSpace(SVM)
    ok = space.validate_params({"lr": 0.01, "depth": 3.0, "kernel": "rbf", "gamma": 0.1})
    assert ok == {"lr": 0.01, "depth": 3, "kernel": "rbf", "gamma": 0.1}
    assert isinstance(ok["depth"], int)
    assert space.validate_params({"lr": 0.01, "depth": 3, "kernel": "linear"}) == {
        "lr": 0.01,
        "depth": 3,
        "kernel": "linear",
    }
    # An inactive parameter may be given as None.
    assert "gamma" not in space.validate_params(
        {"lr": 0.01, "depth": 3, "kernel": "linear", "gamma": None}
    )
    bad = [
        ({"lr": 1.0, "depth": 3, "kernel": "linear"}, "params.lr"),
        ({"lr": 0.01, "depth": 3.5, "kernel": "linear"}, "params.depth"),
        ({"lr": 0.01, "depth": True, "kernel": "linear"}, "params.depth"),
        ({"lr": "0.1", "depth": 3, "kernel": "linear"}, "params.lr"),
        ({"lr": math.nan, "depth": 3, "kernel": "linear"}, "params.lr"),
        ({"lr": 0.01, "depth": 3, "kernel": "poly"}, "params.kernel"),
        ({"lr": 0.01, "depth": 3, "kernel": "rbf"}, "params.gamma"),
        ({"lr": 0.01, "depth": 3, "kernel": "linear", "gamma": 0.1}, "params.gamma"),
        ({"lr": 0.01, "depth": 3, "kernel": "linear", "other": 1}, "params.other"),
        ([0.01, 3], "params"),
    ]
    for params, field in bad:
        with pytest.raises(ValidationError) as e:
            space.validate_params(params)
        assert e.value.details["field"] == field, params


def test_steps_and_choice_types() -> None:
    space = SearchSpace(
        {
            "f": Float(0.0, 1.0, step=0.1),
            "n": Int(0, 12, step=4),
            "c": Categorical([True, 1, "1", 2.5]),
        }
    )
    assert space["f"].n_levels == 11 and space["n"].n_levels == 4
    assert space.validate_params({"f": 0.3, "n": 8, "c": True}) == {"f": 0.3, "n": 8, "c": True}
    assert space.validate_params({"f": 0.3, "n": 8, "c": 1})["c"] == 1
    assert space.validate_params({"f": 0.3, "n": 8, "c": 1})["c"] is not True
    for params, field in (
        ({"f": 0.35, "n": 8, "c": True}, "params.f"),
        ({"f": 0.3, "n": 6, "c": True}, "params.n"),
        ({"f": 0.3, "n": 8, "c": False}, "params.c"),
    ):
        with pytest.raises(ValidationError) as e:
            space.validate_params(params)
        assert e.value.details["field"] == field


def test_encoding_round_trips_and_stays_in_bounds() -> None:
    space = SearchSpace(
        {
            **SVM,
            "f": Float(-1.0, 1.0, step=0.25),
            "n": Int(1, 1000, log=True),
            "m": Int(0, 20, step=5),
            "b": Categorical([False, True]),
        }
    )
    rng = np.random.default_rng(0)
    edges = np.array([[0.0] * space.dim, [1.0] * space.dim, [0.5] * space.dim])
    for u in np.vstack([rng.random((300, space.dim)), edges]):
        params = space.decode(u)
        assert space.validate_params(params) == params  # always valid, conditions applied
        x = space.encode(params)
        assert x.shape == (space.dim,) and np.all((x >= 0) & (x <= 1))
        assert space.decode(x) == params  # the encoding of a configuration decodes to it
    assert space.decode(np.zeros(space.dim))["n"] == 1
    assert space.decode(np.ones(space.dim))["n"] == 1000
    assert space.decode(np.ones(space.dim))["lr"] == pytest.approx(0.3)
    assert np.allclose(
        space.round_trip(space.encode_many([space.decode(edges[2])])),
        space.encode(space.decode(edges[2])),
    )
    with pytest.raises(ValueError):
        space.decode([0.5])


def test_discrete_levels_are_equally_likely() -> None:
    space = SearchSpace({"n": Int(1, 4), "c": Categorical(["a", "b", "c"])})
    samples = space.sample(np.random.default_rng(1), 6000)
    for name, levels in (("n", [1, 2, 3, 4]), ("c", ["a", "b", "c"])):
        counts = [sum(s[name] == v for s in samples) for v in levels]
        assert min(counts) > 0.85 * 6000 / len(levels)


def test_conditional_activity() -> None:
    space = SearchSpace(
        {
            "model": Categorical(["svm", "tree"]),
            "kernel": Categorical(["linear", "rbf"], condition={"model": ["svm"]}),
            "gamma": Float(1e-3, 1.0, log=True, condition={"kernel": ["rbf"]}),
        }
    )
    assert space.is_active("gamma", {"model": "svm", "kernel": "rbf"})
    assert not space.is_active("gamma", {"model": "tree", "kernel": "rbf"})
    assert space.decode([0.9, 0.9, 0.5]) == {"model": "tree"}
    assert set(space.decode([0.1, 0.9, 0.5])) == {"model", "kernel", "gamma"}
    assert list(space.active_mask({"model": "tree"})) == [True, False, False]


def test_study_spec_parse() -> None:
    spec = StudySpec.parse(
        {
            "name": "s-1.a",
            "space": SearchSpace(SVM),
            "objectives": {"loss": "minimize", "acc": "maximize"},
            "constraints": {"latency_ms": ["<=", 20]},
        }
    )
    assert spec.objectives["acc"] == Direction.MAXIMIZE
    assert spec.constraint_objects() == {"latency_ms": Constraint(op="<=", bound=20.0)}
    assert spec.search_space() == SearchSpace(SVM)
    bad = [
        ({"name": "-x", "space": {"x": Float(0, 1)}}, "name"),
        ({"name": "s", "space": {"x": Float(0, 1)}, "objectives": {}}, "objectives"),
        ({"name": "s", "space": {"x": Float(0, 1)}, "objectives": {"l": "lower"}}, "objectives.l"),
        ({"name": "s", "space": {"x": Float(0, 1)}, "max_trials": 0}, "max_trials"),
        (
            {"name": "s", "space": {"x": Float(0, 1)}, "constraints": {"c": ["<", 1]}},
            "constraints.c.0",
        ),
        ({"name": "s", "space": {"x": Float(1, 0)}}, "space.x"),
        ({"name": "s", "space": {"x": Float(0, 1)}, "colour": "red"}, "colour"),
        (
            {
                "name": "s",
                "space": {"x": Float(0, 1)},
                "objectives": {"a": "minimize"},
                "constraints": {"a": ["<=", 1]},
            },
            "body",
        ),
    ]
    for data, field in bad:
        with pytest.raises(ValidationError) as e:
            StudySpec.parse(data)
        assert e.value.details["field"] == field, data


def test_constraint_and_feasibility() -> None:
    from autotune.models import Trial, TrialState

    c = {"lat": Constraint(op="<=", bound=20), "mem": Constraint(op=">=", bound=1)}
    t = Trial(number=0, state=TrialState.COMPLETED, params={}, values={"lat": 20, "mem": 1})
    assert t.is_feasible(c)
    assert not t.model_copy(update={"values": {"lat": 21, "mem": 1}}).is_feasible(c)
    assert not t.model_copy(update={"values": {"lat": 1}}).is_feasible(c)
    assert not t.model_copy(update={"values": None}).is_feasible(c)
