"""Runner checks that need no cluster: which service workers reach, and resuming the right study."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import autotune
from autotune.errors import ValidationError
from trainers import parse_spec, run_study
from trainers.runner import service_address

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_service_address_for_workers(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with autotune.Client(db="sqlite:///rel.db") as c:
        assert service_address(c) == f"sqlite:///{tmp_path / 'rel.db'}"  # absolute for workers
    with autotune.Client(db="sqlite://") as c, pytest.raises(ValidationError, match="in-memory"):
        service_address(c)
    http = autotune.Client("http://127.0.0.1:9/")
    assert service_address(http) == "http://127.0.0.1:9"
    http.close()


def test_resume_refuses_a_same_named_study_with_another_space(tmp_path) -> None:
    data = copy.deepcopy(yaml.safe_load((STUDIES / "xgb_breast_cancer.yaml").read_text()))
    spec = parse_spec(data, source="x.yaml")
    db = f"sqlite:///{tmp_path / 'at.db'}"
    with autotune.Client(db=db) as c:
        c.create_study(
            name=spec.name,
            space={"eta": autotune.Float(0.1, 0.2)},
            objectives={"log_loss": "minimize"},
        )
        with pytest.raises(
            ValidationError, match="x.yaml: name: .*already exists with a different space"
        ):
            run_study(spec, client=c, progress=False, artifacts_dir=tmp_path)
