"""What runs trials: trainers, datasets, study specs and the Dask runner.

``trainers`` talks to the tuning service only through ``autotune.Client``. Importing it is light:
xgboost, scikit-learn estimators, torch and dask are imported where they are used.
"""

from trainers import sklearn as _sklearn  # noqa: F401  (registers the "sklearn" trainer)
from trainers import synthetic as _synthetic  # noqa: F401
from trainers import torch_mlp as _torch_mlp  # noqa: F401
from trainers import xgboost as _xgboost  # noqa: F401
from trainers._base import (
    METRICS,
    Artifact,
    NullReporter,
    RecordingReporter,
    Reporter,
    TrainData,
    Trainer,
    TrainerOptions,
    TrainResult,
    evaluate,
    make_trainer,
    metrics_for_task,
    register_trainer,
    trainer_names,
)
from trainers.cv import cross_validate
from trainers.datasets import (
    Dataset,
    Splits,
    dataset_names,
    load_dataset,
    register_dataset,
    split_dataset,
)
from trainers.sklearn import SklearnTrainer
from trainers.spec import RunSpec, load_spec, parse_spec
from trainers.synthetic import SleepTrainer
from trainers.torch_mlp import TorchMLPTrainer
from trainers.xgboost import XGBoostTrainer

__all__ = [
    "METRICS",
    "Artifact",
    "Dataset",
    "NullReporter",
    "RecordingReporter",
    "Reporter",
    "RunResult",
    "RunSpec",
    "SklearnTrainer",
    "SleepTrainer",
    "Splits",
    "TorchMLPTrainer",
    "TrainData",
    "TrainResult",
    "Trainer",
    "TrainerOptions",
    "XGBoostTrainer",
    "cross_validate",
    "dataset_names",
    "evaluate",
    "load_dataset",
    "load_spec",
    "make_trainer",
    "metrics_for_task",
    "parse_spec",
    "register_dataset",
    "register_trainer",
    "run_study",
    "split_dataset",
    "trainer_names",
]


def __getattr__(name: str) -> object:
    # The runner imports dask.distributed (slow): load it on first use.
    if name in ("run_study", "RunResult"):
        from trainers import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")
