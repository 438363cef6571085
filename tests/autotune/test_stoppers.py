"""Each stopper on constructed learning curves with known answers."""

from __future__ import annotations

import math

import pytest

from autotune.errors import ValidationError
from autotune.models import Direction, TrialState
from autotune.stoppers import Curve, make_stopper, validate_stopper_config

MIN = Direction.MINIMIZE
MAX = Direction.MAXIMIZE


def curve(number: int, values: list[float], state: TrialState = TrialState.COMPLETED) -> Curve:
    return Curve(number=number, state=state, values={i: v for i, v in enumerate(values)})


def finished(values_by_trial: list[list[float]]) -> list[Curve]:
    return [curve(i, v) for i, v in enumerate(values_by_trial)]


def test_none_never_stops() -> None:
    s = make_stopper(None)
    assert not s.should_stop(curve(9, [1e9] * 10, TrialState.RUNNING), [], direction=MIN)


def test_median_stops_only_trials_worse_than_median_of_running_averages() -> None:
    s = make_stopper({"type": "median", "min_trials": 3})
    others = finished([[1.0, 0.8, 0.6], [2.0, 1.8, 1.6], [3.0, 2.8, 2.6]])
    # averages up to step 2: 0.8, 1.8, 2.8 -> median 1.8
    bad = curve(10, [2.5, 2.2, 2.0], TrialState.RUNNING)
    good = curve(11, [2.5, 2.0, 1.5], TrialState.RUNNING)
    assert s.should_stop(bad, others, direction=MIN)
    assert not s.should_stop(good, others, direction=MIN)
    # maximizing flips the comparison: bad (best 2.5) beats the median 1.8
    assert not s.should_stop(bad, others, direction=MAX)


def test_median_waits_for_min_trials_and_warmup() -> None:
    others = finished([[1.0, 1.0], [1.0, 1.0]])
    terrible = curve(5, [100.0, 100.0], TrialState.RUNNING)
    assert not make_stopper({"type": "median", "min_trials": 3}).should_stop(
        terrible, others, direction=MIN
    )
    s = make_stopper({"type": "median", "min_trials": 1, "warmup_steps": 1})
    assert not s.should_stop(curve(5, [100.0, 100.0], TrialState.RUNNING), others, direction=MIN)
    assert s.should_stop(curve(5, [100.0, 100.0, 100.0], TrialState.RUNNING), others, direction=MIN)


def test_percentile_is_stricter_than_median_at_low_percentile() -> None:
    others = finished([[float(v)] * 3 for v in range(1, 11)])  # averages 1..10
    trial = curve(20, [4.0, 4.0, 4.0], TrialState.RUNNING)
    assert not make_stopper({"type": "median"}).should_stop(trial, others, direction=MIN)
    assert make_stopper({"type": "percentile", "percentile": 25}).should_stop(
        trial, others, direction=MIN
    )


def test_asha_promotes_top_third_at_each_rung() -> None:
    s = make_stopper({"type": "asha", "min_resource": 1, "reduction_factor": 3})
    # Rungs at steps 1, 3, 9. Eight trials already passed rung 1 with values 1..8.
    others = [curve(i, [0.0, float(i + 1)]) for i in range(8)]
    # 9 competing values at rung 1 -> the top 3 (values 1, 2, 3) continue.
    assert not s.should_stop(curve(8, [0.0, 2.5], TrialState.RUNNING), others, direction=MIN)
    assert s.should_stop(curve(8, [0.0, 3.5], TrialState.RUNNING), others, direction=MIN)
    # Before the first rung nothing is stopped.
    assert not s.should_stop(curve(8, [50.0], TrialState.RUNNING), others, direction=MIN)


def test_asha_first_trials_at_a_rung_continue_only_while_best() -> None:
    s = make_stopper({"type": "asha", "min_resource": 2, "reduction_factor": 2})
    first = curve(0, [1.0, 1.0, 5.0], TrialState.RUNNING)
    assert not s.should_stop(first, [], direction=MIN)
    second_worse = curve(1, [1.0, 1.0, 6.0], TrialState.RUNNING)
    assert s.should_stop(second_worse, [curve(0, [1.0, 1.0, 5.0])], direction=MIN)
    second_better = curve(1, [1.0, 1.0, 4.0], TrialState.RUNNING)
    assert not s.should_stop(second_better, [curve(0, [1.0, 1.0, 5.0])], direction=MIN)


def test_asha_stops_nan() -> None:
    s = make_stopper({"type": "asha"})
    assert s.should_stop(curve(0, [math.nan, math.nan], TrialState.RUNNING), [], direction=MIN)


def test_hyperband_brackets_compete_separately() -> None:
    s = make_stopper(
        {"type": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3}
    )
    assert s.n_brackets == 3
    # Trial 3 is in bracket 0 (rungs 1, 3, 9); trial 4 in bracket 1 (rungs 3, 9).
    good_b0 = [curve(n, [0.0, 1.0, 1.0, 1.0]) for n in (0, 6, 9, 12, 15)]
    t3 = curve(3, [0.0, 5.0], TrialState.RUNNING)
    assert s.should_stop(t3, good_b0, direction=MIN)
    # The same values do not touch bracket 1, whose first rung is at step 3.
    t4 = curve(4, [0.0, 5.0], TrialState.RUNNING)
    assert not s.should_stop(t4, good_b0, direction=MIN)


def test_patience_and_thresholds() -> None:
    s = make_stopper({"type": "patience", "patience": 3})
    assert not s.should_stop(curve(0, [5, 4, 3, 3, 3], TrialState.RUNNING), [], direction=MIN)
    assert s.should_stop(curve(0, [5, 4, 3, 3, 3, 3.5], TrialState.RUNNING), [], direction=MIN)
    t = make_stopper({"type": "patience", "upper": 10.0})
    assert t.should_stop(curve(0, [1.0, 11.0], TrialState.RUNNING), [], direction=MIN)
    assert not t.should_stop(curve(0, [1.0, 9.0], TrialState.RUNNING), [], direction=MIN)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"kind": "median"}, "stopper"),
        ({"type": "nope"}, "stopper.type"),
        ({"type": "asha", "reduction_factor": 1}, "stopper.reduction_factor"),
        ({"type": "median", "bogus": 1}, "stopper.bogus"),
        ({"type": "percentile", "percentile": 150}, "stopper.percentile"),
    ],
)
def test_bad_config_names_the_field(config: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate_stopper_config(config)
    assert e.value.details["field"] == field


def test_config_defaults_are_filled() -> None:
    assert validate_stopper_config({"type": "asha"}) == {
        "type": "asha",
        "min_resource": 1,
        "reduction_factor": 3,
        "min_early_stopping_rate": 0,
        "bootstrap_count": 0,
    }
