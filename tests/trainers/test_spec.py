"""Study specs: the shipped ones load, and every error names the file, the key and what fits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from autotune.errors import ValidationError
from trainers import load_spec, parse_spec

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SRC = "studies/x.yaml"


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    kw = spec.study_kwargs(max_trials=3)
    assert kw["max_trials"] == 3 and kw["objectives"][spec.primary_metric] in (
        "minimize",
        "maximize",
    )
    spec.make_trainer()


@pytest.fixture
def base() -> dict:
    return yaml.safe_load((STUDIES / "xgb_breast_cancer.yaml").read_text())


def _error(base: dict, mutate) -> ValidationError:
    data = copy.deepcopy(base)
    mutate(data)
    with pytest.raises(ValidationError) as info:
        parse_spec(data, source=SRC)
    assert str(info.value).startswith(f"{SRC}: ")
    assert info.value.details["file"] == SRC
    return info.value


@pytest.mark.parametrize(
    ("mutate", "key", "allowed"),
    [
        (lambda d: d["trainer"].update(type="xgbost"), "trainer.type", "xgboost"),
        (lambda d: d.update(max_trialz=3), "max_trialz", "max_trials"),
        (lambda d: d["objectives"].update(log_loss="minimise"), "objectives.log_loss", "maximize"),
        (lambda d: d.update(objectives={"rmse": "minimize"}), "objectives.rmse", "log_loss"),
        (lambda d: d["trainer"]["options"].update(nbr=5), "trainer.options.nbr", "num_boost_round"),
        (lambda d: d["dataset"].update(name="iris"), "dataset.name", "breast_cancer"),
        (lambda d: d["dataset"].update(path="x.csv"), "dataset.path", "split_seed"),
        (lambda d: d["space"].update(x={"type": "flaot"}), "space.x", "'float', 'int'"),
    ],
)
def test_errors_name_key_and_allowed(base, mutate, key, allowed) -> None:
    err = _error(base, mutate)
    assert err.field == key
    assert f"{SRC}: {key}: " in str(err)
    assert allowed in str(err)


@pytest.mark.parametrize(
    ("mutate", "key", "text"),
    [
        (lambda d: d.update(max_trials=0), "max_trials", "greater than or equal to 1, got 0"),
        (lambda d: d["space"]["eta"].update(low=-1), "space.eta", "needs low > 0"),
        (lambda d: d["trainer"]["params"].update(eta=0.1), "trainer.params.eta", "both fixed"),
        (lambda d: d.update(name="bad name"), "name", "not allowed"),
        (lambda d: d.pop("trainer"), "trainer", "required key is missing"),
        (
            lambda d: d["trainer"].update(
                type="sklearn", options={"estimator": "os.system"}, params={}
            ),
            "trainer.options.estimator",
            "must start with one of 'sklearn.'",
        ),
    ],
)
def test_errors_say_what_is_wrong(base, mutate, key, text) -> None:
    err = _error(base, mutate)
    assert err.field == key and text in str(err)


def test_yaml_syntax_and_missing_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: [unclosed\n")
    with pytest.raises(ValidationError, match=rf"{bad}: line \d+, column \d+: not valid YAML"):
        load_spec(bad)
    with pytest.raises(ValidationError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValidationError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_csv_spec_needs_options_and_checks_metrics_at_load(tmp_path, base) -> None:
    data = copy.deepcopy(base)
    data["dataset"] = {"name": "csv"}
    with pytest.raises(ValidationError, match="dataset.path: dataset 'csv' needs this key"):
        parse_spec(data, source=SRC)
    import pandas as pd

    pd.DataFrame({"x": range(40), "y": [0.5 * i for i in range(40)]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    data["dataset"] = {"name": "csv", "path": str(tmp_path / "r.csv"), "target": "y"}
    spec = parse_spec(data, source=SRC)  # log_loss is known; the task is not yet
    with pytest.raises(ValidationError, match=f"{SRC}: objectives.log_loss: .*allowed: rmse"):
        spec.load_splits()
