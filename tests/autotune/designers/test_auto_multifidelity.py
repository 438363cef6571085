"""auto switches to BOHB-style sampling once a study's stopper leaves pruned learning curves."""

from __future__ import annotations

from autotune.designers import Problem, make_designer
from autotune.models import Direction, Measurement, Trial, TrialState
from autotune.service import StudyService
from autotune.space import Float, SearchSpace


def _curve(x: float, y: float, steps: int) -> list[Measurement]:
    final = (x - 0.3) ** 2 + (y - 0.7) ** 2
    return [Measurement(step=s, value=final + 1.0 / (s + 1)) for s in range(steps)]


def test_auto_uses_pruned_curves_when_there_are_enough() -> None:
    space = SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    problem = Problem(space=space, objectives={"loss": Direction.MINIMIZE})
    auto = make_designer("auto")
    trials = []
    for n, (x, y) in enumerate(
        [
            (0.1, 0.1),
            (0.9, 0.9),
            (0.3, 0.7),
            (0.5, 0.5),
            (0.2, 0.8),
            (0.8, 0.2),
            (0.35, 0.65),
            (0.6, 0.1),
        ]
    ):
        curve = _curve(x, y, 9 if n % 4 == 0 else 3)
        pruned = len(curve) < 9
        trials.append(
            Trial(
                number=n,
                state=TrialState.PRUNED if pruned else TrialState.COMPLETED,
                params={"x": x, "y": y},
                values={"loss": curve[-1].value},
                intermediate=curve,
            )
        )
    out = auto.suggest(problem, completed=trials, pending=[], count=2, seed=3)
    assert auto.describe()["engine"] == "bohb"
    assert "6 trials early" in auto.describe()["reason"]
    assert len(out) == 2 and all(space.validate_params(p) == p for p in out)
    # Without curves (a study with no stopper) the GP engine stays in charge.
    plain = [
        t.model_copy(update={"intermediate": [], "state": TrialState.COMPLETED}) for t in trials
    ]
    auto.suggest(problem, completed=plain, pending=[], count=1, seed=3)
    assert auto.describe()["engine"] == "gp"


def test_service_hands_curves_to_auto_in_an_asha_study(tmp_path) -> None:
    with StudyService(f"sqlite:///{tmp_path / 'mf.db'}", precompute=False) as svc:
        svc.create_study(
            {
                "name": "mf",
                "objectives": {"loss": "minimize"},
                "algorithm": "auto",
                "seed": 1,
                "space": {
                    "x": {"type": "float", "low": 0, "high": 1},
                    "y": {"type": "float", "low": 0, "high": 1},
                },
                "stopper": {"type": "asha", "min_resource": 1, "reduction_factor": 2},
            }
        )
        pruned = 0
        for _ in range(14):
            (trial,) = svc.suggest("mf", count=1).trials
            curve = _curve(trial.params["x"], trial.params["y"], 9)
            stopped = False
            for m in curve:
                if svc.report("mf", trial.number, step=m.step, value=m.value).should_stop:
                    stopped = True
                    pruned += 1
                    break
            if not stopped:
                svc.observe("mf", trial.number, {"loss": curve[-1].value})
        assert pruned >= 3
        svc.suggest("mf", count=1)
        info = svc.get_study("mf").designer_info
        assert info["engine"] == "bohb", info
