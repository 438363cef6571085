"""Study specs: a YAML file that says what to tune, on which data, with which trainer.

::

    name: xgb_breast_cancer
    dataset: {name: breast_cancer, valid_fraction: 0.2, test_fraction: 0.2, split_seed: 0}
    trainer:
      type: xgboost
      options: {num_boost_round: 300, early_stopping_rounds: 20}
      params: {tree_method: hist}          # fixed for every trial
    objectives: {log_loss: minimize}
    space:
      eta: {type: float, low: 0.01, high: 0.3, log: true}
      max_depth: {type: int, low: 2, high: 10}
    max_trials: 30
    workers: 2                             # default: one per core
    algorithm: auto
    seed: 0
    stopper: {type: median}                # optional; validated by the service
    cv_folds: 5                            # optional k-fold cross-validation
    sync_reports: false                    # true: every value sent, trainer waits for the answer
    promotion:                             # optional; these are the defaults
      register: true                       # retrain the best trial, register it, maybe promote
      model_name: null                     # default: the study's name
      retrain_on: train+validation         # or: train
      alias: production
      metric: null                         # default: the primary objective (on the test split)
      direction: null                      # default: the metric's direction

``load_spec`` validates everything it can before anything runs, and every error names the file,
the key path and what is allowed there::

    studies/x.yaml: trainer.type: unknown trainer 'xgbost'; allowed: sklearn, sleep, torch_mlp, xgboost
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic import ValidationError as PydanticValidationError

from autotune.errors import ValidationError
from autotune.models import Direction
from autotune.space import SearchSpace
from trainers._base import Trainer, metrics_for_task, pydantic_error, trainer_class, trainer_names
from trainers.datasets import (
    Splits,
    dataset_names,
    dataset_options,
    dataset_task,
    load_dataset,
    split_dataset,
)

__all__ = ["RunSpec", "DatasetSpec", "TrainerSpec", "PromotionSpec", "load_spec", "parse_spec"]


class DatasetSpec(BaseModel):
    """``name`` picks the loader; keys other than the split's go to the loader (path, target)."""

    model_config = ConfigDict(extra="allow")

    name: str
    valid_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    options: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(
        default_factory=dict, description="Fixed parameters passed to every trial."
    )


class PromotionSpec(BaseModel):
    """What ``autotune run`` does after the study: retrain the best configuration, score it on
    the test split, register it, and move ``alias`` to it only if it beats the holder there."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # ``register`` in YAML; BaseModel has a ``register`` of its own.
    register_model: bool = Field(default=True, alias="register")
    model_name: str | None = Field(default=None, description="Default: the study's name.")
    retrain_on: Literal["train+validation", "train"] = "train+validation"
    alias: str = "production"
    metric: str | None = Field(default=None, description="Default: the primary objective.")
    direction: Direction | None = Field(default=None, description="Default: the metric's.")


class RunSpec(BaseModel):
    """A validated study spec. Build it with ``load_spec`` or ``parse_spec``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    dataset: DatasetSpec
    trainer: TrainerSpec
    space: dict[str, Any]
    objectives: dict[str, Direction] = Field(default_factory=dict)
    constraints: dict[str, tuple[str, float]] = Field(default_factory=dict)
    max_trials: int = Field(default=20, ge=1, le=1_000_000)
    workers: int | None = Field(default=None, ge=1, le=4096)
    algorithm: str = "auto"
    seed: int = Field(default=0, ge=0)
    stopper: dict[str, Any] | None = None
    cv_folds: int | None = Field(default=None, ge=2, le=100)
    sync_reports: bool = Field(
        default=False,
        description="Send every intermediate value and wait for the stop answer before the next "
        "step (exact curves and stops; slower when steps take milliseconds). Default: reports "
        "go from a thread, thinned when the service is slower than training.",
    )
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    metadata: dict[str, Any] = Field(default_factory=dict)
    _source: str = PrivateAttr(default="<spec>")

    @property
    def source(self) -> str:
        """The file this spec came from (error messages name it)."""
        return self._source

    @property
    def primary_metric(self) -> str:
        return next(iter(self.objectives))

    def make_trainer(self) -> Trainer:
        return trainer_class(self.trainer.type)(**self.trainer.options)

    def load_splits(self) -> Splits:
        """Load the dataset and cut its splits (errors name this spec's file)."""
        with _in_file(self.source):
            ds = load_dataset(self.dataset.name, **self.dataset.options)
            _check_metrics(self, ds.task)
            return split_dataset(
                ds,
                valid_fraction=self.dataset.valid_fraction,
                test_fraction=self.dataset.test_fraction,
                seed=self.dataset.split_seed,
            )

    def study_kwargs(self, *, max_trials: int | None = None) -> dict[str, Any]:
        """Keyword arguments of ``client.create_study`` for this spec."""
        kw: dict[str, Any] = {
            "name": self.name,
            "space": self.space,
            "objectives": {k: v.value for k, v in self.objectives.items()},
            "max_trials": max_trials or self.max_trials,
            "algorithm": self.algorithm,
            "seed": self.seed,
            "metadata": {
                **self.metadata,
                "spec": {
                    "source": self.source,
                    "dataset": self.dataset.model_dump(),
                    "trainer": self.trainer.model_dump(),
                    "cv_folds": self.cv_folds,
                    "sync_reports": self.sync_reports,
                },
            },
        }
        if self.constraints:
            kw["constraints"] = {k: list(v) for k, v in self.constraints.items()}
        if self.stopper is not None:
            kw["stopper"] = self.stopper
        return kw


class _in_file:
    """Context manager: prefix a ValidationError raised inside with the spec's file name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if isinstance(e, ValidationError) and not e.message.startswith(f"{self.source}: "):
            raise _with_file(e, self.source) from None
        return False


def _with_file(e: ValidationError, source: str) -> ValidationError:
    details = {**e.details, "file": source}
    key = e.field or details.get("field")
    message = e.message if not key or e.message.startswith(f"{key}:") else f"{key}: {e.message}"
    return ValidationError(f"{source}: {message}", field=key, details=details)


def _error(source: str, key: str, problem: str, allowed: Any = None) -> ValidationError:
    text = f"{source}: {key}: {problem}" + (f"; allowed: {allowed}" if allowed else "")
    return ValidationError(
        text, field=key, details={"file": source, "key": key, "allowed": allowed}
    )


def _check_metrics(spec: RunSpec, task: str) -> None:
    allowed = spec.make_trainer().metrics(task)
    promoted = [spec.promotion.metric] if spec.promotion.metric else []
    for name in [*spec.objectives, *spec.constraints, *promoted]:
        if name not in allowed:
            if name in spec.objectives:
                key = f"objectives.{name}"
            elif name in spec.constraints:
                key = f"constraints.{name}"
            else:
                key = "promotion.metric"
            raise _error(
                spec.source,
                key,
                f"trainer {spec.trainer.type!r} does not compute metric {name!r} for {task}",
                ", ".join(allowed),
            )


def parse_spec(data: Any, *, source: str = "<spec>") -> RunSpec:
    """Validate a spec given as a mapping (parsed YAML). Errors name ``source``."""
    if not isinstance(data, Mapping):
        raise _error(
            source,
            "(root)",
            "a spec must be a mapping of keys to values",
            "name, dataset, trainer, space, ...",
        )
    try:
        spec = RunSpec.model_validate(data)
    except PydanticValidationError as e:
        raise _with_file(pydantic_error(e, model=RunSpec), source) from None
    spec._source = source

    from autotune.models import StudySpec

    try:  # the service's rules for study names, checked here so the file is named
        StudySpec.model_validate({"name": spec.name, "space": spec.space})
    except PydanticValidationError as e:
        if any(err["loc"][:1] == ("name",) for err in e.errors()):
            raise _error(
                source, "name", str(e.errors()[0]["msg"]).removeprefix("Value error, ")
            ) from None

    if spec.dataset.name not in dataset_names():
        raise _error(
            source,
            "dataset.name",
            f"unknown dataset {spec.dataset.name!r}",
            ", ".join(dataset_names()),
        )
    required, optional = dataset_options(spec.dataset.name)
    for key in spec.dataset.options:
        if key not in required + optional:
            allowed = ", ".join(
                ["name", "valid_fraction", "test_fraction", "split_seed", *required, *optional]
            )
            raise _error(
                source, f"dataset.{key}", f"unknown key for dataset {spec.dataset.name!r}", allowed
            )
    for key in required:
        if key not in spec.dataset.options:
            raise _error(source, f"dataset.{key}", f"dataset {spec.dataset.name!r} needs this key")
    if spec.dataset.valid_fraction + spec.dataset.test_fraction >= 1:
        raise _error(
            source, "dataset.valid_fraction", "valid_fraction + test_fraction must be below 1"
        )

    if spec.trainer.type not in trainer_names():
        raise _error(
            source,
            "trainer.type",
            f"unknown trainer {spec.trainer.type!r}",
            ", ".join(trainer_names()),
        )
    with _in_file(source):
        trainer = spec.make_trainer()

    with _in_file(source):
        space = SearchSpace(spec.space)
    clash = sorted(set(space) & set(spec.trainer.params))
    if clash:
        raise _error(
            source,
            f"trainer.params.{clash[0]}",
            "a parameter cannot be both fixed (trainer.params) and tuned (space)",
        )

    task = dataset_task(spec.dataset.name)
    if not spec.objectives:
        metric = trainer.metrics(task or "classification")[0] if task else None
        if metric is None:
            raise _error(
                source,
                "objectives",
                "name the metric to optimize for a file dataset, e.g. {rmse: minimize}",
            )
        from trainers._base import METRICS

        direction = METRICS[metric][1] if metric in METRICS else "minimize"
        spec = spec.model_copy(update={"objectives": {metric: Direction(direction)}})
    if task is not None:
        _check_metrics(spec, task)
    else:
        known = set(metrics_for_task("classification")) | set(metrics_for_task("regression"))
        known |= set(trainer.metrics("classification")) | set(trainer.metrics("regression"))
        for name in spec.objectives:
            if name not in known:
                raise _error(
                    source,
                    f"objectives.{name}",
                    f"unknown metric {name!r}",
                    ", ".join(sorted(known)),
                )
    return spec


def load_spec(path: str | Path) -> RunSpec:
    """Read and validate a YAML study spec.

    Raises:
        ValidationError: the message names the file, the key path and what is allowed.
    """
    import yaml

    p = Path(path)
    source = str(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ValidationError(
            f"{source}: cannot read the spec ({e.strerror})",
            field="(file)",
            details={"file": source},
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValidationError(
            f"{source}: {where}not valid YAML ({getattr(e, 'problem', e)})",
            field="(file)",
            details={"file": source},
        ) from None
    return parse_spec(data, source=source)
