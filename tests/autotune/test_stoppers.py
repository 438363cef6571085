"""Each stopper on constructed learning curves with known answers."""

from __future__ import annotations

import math

import pytest

from autotune.errors import ValidationError
from autotune.models import Direction, TrialState
from autotune.stoppers import Curve, Stopper, make_stopper, validate_stopper_config

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


# Rungs at steps 3 and 9 (min_resource 3, eta 3). Three fast learners finished 10 steps: at the
# rung they stand at 1.2, 1.3, 1.4; they end at 1.0, 1.1, 1.2 (the first after dipping to 0.5).
FAST = [
    curve(0, [4.0, 2.0, 1.5, 1.2, 0.9, 0.5, 0.6, 0.8, 0.9, 1.0]),
    curve(1, [4.0, 2.0, 1.5, 1.3, 1.2, 1.15, 1.1, 1.1, 1.1, 1.1]),
    curve(2, [4.0, 2.0, 1.6, 1.4, 1.3, 1.25, 1.2, 1.2, 1.2, 1.2]),
]


def asha(extrapolation: str) -> Stopper:
    return make_stopper(
        {"type": "asha", "min_resource": 3, "reduction_factor": 3, "extrapolation": extrapolation}
    )


def test_asha_guard_spares_a_slow_starter_that_can_still_beat_the_best_final_value() -> None:
    # At the rung (step 3) the slow starter is last (3.0 against 1.2..1.4): plain ASHA stops it.
    slow = curve(3, [5.0, 4.5, 4.0, 3.0], TrialState.RUNNING)
    assert asha("none").should_stop(slow, FAST, direction=MIN)
    # Secant over the last step (3 * 0.25 rounds to 1): -1.0 from 4 to 3 units of resource,
    # continued to the next rung (10 units): log 3.0 - 1.0 * ln(10/4) / ln(4/3) = -0.18,
    # linear 3.0 - 1.0 * 6 = -3.0; both beat the best final value 1.0 (trial 0's, not its 0.5).
    assert not asha("log").should_stop(slow, FAST, direction=MIN)
    assert not asha("linear").should_stop(slow, FAST, direction=MIN)
    # It still faces the next rung as usual: at step 9 it is last again, and no one went further.
    slow_later = curve(3, [5.0, 4.5, 4.0, 3.0, 2.8, 2.6, 2.4, 2.2, 2.0, 1.9], TrialState.RUNNING)
    assert asha("log").should_stop(slow_later, FAST, direction=MIN)


def test_asha_guard_bound_is_the_tangent_in_log_steps_or_in_steps() -> None:
    # Falls 0.15 over the last step: log bound 1.6 - 0.15 * 3.18 = 1.12 > 1.0 -> stopped;
    # linear bound 1.6 - 0.15 * 6 = 0.7 < 1.0 -> spared (the linear tangent is more lenient).
    trial = curve(3, [4.0, 2.0, 1.75, 1.6], TrialState.RUNNING)
    assert asha("log").should_stop(trial, FAST, direction=MIN)
    assert not asha("linear").should_stop(trial, FAST, direction=MIN)
    # A curve that got worse over the window is never extrapolated to improve.
    worse = curve(3, [4.0, 2.0, 1.5, 1.6], TrialState.RUNNING)
    assert asha("linear").should_stop(worse, FAST, direction=MIN)


def test_asha_guard_compares_with_final_values_and_mirrors_for_maximize() -> None:
    # Log bound 1.6 - 0.3 * 3.18 = 0.65: better than every final value (best 1.0) though not
    # than trial 0's dip to 0.5 on the way, which is not a result.
    trial = curve(3, [4.0, 2.0, 1.9, 1.6], TrialState.RUNNING)
    assert not asha("log").should_stop(trial, FAST, direction=MIN)
    mirrored = [Curve(c.number, c.state, {k: -v for k, v in c.values.items()}) for c in FAST]
    neg = Curve(3, TrialState.RUNNING, {k: -v for k, v in trial.values.items()})
    assert not asha("log").should_stop(neg, mirrored, direction=MAX)
    assert asha("none").should_stop(neg, mirrored, direction=MAX)


def test_asha_guard_needs_a_trial_past_the_rung_and_a_point_before_it() -> None:
    slow = curve(3, [5.0, 4.5, 4.0, 3.0], TrialState.RUNNING)
    # Nobody went past the rung yet: no final value to beat, plain ASHA decides.
    early = [Curve(c.number, TrialState.RUNNING, {k: v for k, v in c.values.items() if k <= 3})
             for c in FAST]  # fmt: skip
    assert asha("log").should_stop(slow, early, direction=MIN)
    # Reports only at the rung (no earlier point): no slope, plain ASHA decides.
    sparse = Curve(3, TrialState.RUNNING, {3: 3.0})
    assert asha("log").should_stop(sparse, FAST, direction=MIN)
    # Reports every 2 steps: the secant starts at the reported step nearest the window (step 1,
    # 2 units): 3.0 - 2.0 * ln(10/4) / ln(4/2) = 0.36 < 1.0, spared; 3.0 - 1.5 * 1.32 = 1.02 not.
    assert not asha("log").should_stop(Curve(3, TrialState.RUNNING, {1: 5.0, 3: 3.0}), FAST,
                                       direction=MIN)  # fmt: skip
    assert asha("log").should_stop(Curve(3, TrialState.RUNNING, {1: 4.5, 3: 3.0}), FAST,
                                   direction=MIN)  # fmt: skip


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
        ({"type": "asha", "extrapolation": "cubic"}, "stopper.extrapolation"),
        ({"type": "hyperband", "extrapolation": 1}, "stopper.extrapolation"),
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
        "extrapolation": "log",
    }
