"""Promotion: the study's best configuration becomes a registered, maybe served, model version.

After a study, ``autotune run`` calls::

    outcome = promote_best(spec, result.best, registry=open_registry(server_or_db))
    print(outcome.summary())
    # registered xgb_breast_cancer v2; test log_loss 0.081 vs production v1 0.095 -> promoted

1. retrain the best trial's configuration on train+validation (``promotion.retrain_on``) with the
   trial's seed; a trainer that decided something on the validation split pins it
   (``Trainer.refit_params``: XGBoost trains the rounds its trial kept, no early stopping);
2. score it on the held-out test split, which tuning never saw;
3. register it (a safe artifact, its parameters, test metrics, lineage, input signature and
   output schema) as the next version of ``promotion.model_name``;
4. ``promote_if_better``: the alias moves only when the new version beats its holder on the test
   metric; the registry stores the comparison either way (``autotune models show``).

The registry is reached through serving's public API: a :class:`serving.ModelRegistry` on the
studies' database (``--db``), or the server's REST routes (``--server``), so that the server
stores the artifact in its own store and picks up the alias move at once.
"""

from __future__ import annotations

import base64
import hashlib
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autotune.errors import ValidationError
from autotune.models import Trial
from trainers._base import METRICS, TrainData, TrainResult
from trainers.datasets import Splits
from trainers.spec import PromotionSpec, RunSpec

__all__ = [
    "Promotion",
    "RegistryLike",
    "HttpRegistry",
    "open_registry",
    "promotion_settings",
    "retrain",
    "promote_best",
]

# Rows of the training split stored with the version: the server checks a model on them before
# it serves it, and they show a caller what a request looks like.
INPUT_EXAMPLE_ROWS = 5
_GIT_TIMEOUT_S = 5.0


class RegistryLike(Protocol):
    """The registry calls promotion needs (``serving.ModelRegistry`` has them)."""

    def get_version(self, name: str, ref: int | str | None = None) -> Any: ...

    def register(self, name: str, **kwargs: Any) -> Any: ...

    def promote_if_better(
        self, name: str, version: int, alias: str, *, metric: str, direction: Any
    ) -> Any: ...


class HttpRegistry:
    """The registry behind a running ``autotune serve``, through its REST routes.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``).
        timeout: seconds per request (registration loads and checks the model).
    """

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        from autotune.client._auth import auth_headers  # AUTOTUNE_API_KEY, if the server wants one

        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=auth_headers())

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        from autotune.errors import error_from_payload

        r = self._http.post(path, json=body)
        if r.status_code >= 400:
            try:
                payload = r.json()
            except ValueError:
                payload = r.text
            raise error_from_payload(r.status_code, payload)
        return r.json()

    def get_version(self, name: str, ref: int | str | None = None) -> Any:
        from autotune.errors import error_from_payload
        from serving.schemas import ModelVersion

        path = f"/v1/models/{name}/versions/{ref}" if ref is not None else f"/v1/models/{name}"
        r = self._http.get(path)
        if r.status_code >= 400:
            raise error_from_payload(r.status_code, r.json())
        return ModelVersion.model_validate(r.json())

    def register(self, name: str, *, artifact: bytes, format: str, **kw: Any) -> Any:
        from serving.schemas import ModelVersion

        body = {
            "artifact_base64": base64.b64encode(artifact).decode("ascii"),
            "format": format,
            **{k: _plain(v) for k, v in kw.items() if v is not None},
        }
        return ModelVersion.model_validate(self._post(f"/v1/models/{name}/versions", body))

    def promote_if_better(
        self, name: str, version: int, alias: str, *, metric: str, direction: Any
    ) -> Any:
        from serving.schemas import PromotionResult

        body = {"alias": alias, "metric": metric, "direction": str(_value(direction))}
        path = f"/v1/models/{name}/versions/{version}/promote-if-better"
        return PromotionResult.model_validate(self._post(path, body))

    def close(self) -> None:
        self._http.close()


def open_registry(target: str | None = None, *, store: str | None = None) -> Any:
    """The registry of a server URL (``http://...``: :class:`HttpRegistry`) or of a database
    URL (``None``: ``AUTOTUNE_DB`` or the default SQLite file), with ``store`` its artifact
    directory (default ``AUTOTUNE_MODEL_STORE`` or ``./autotune-artifacts/.registry``)."""
    if target is not None and target.startswith(("http://", "https://")):
        return HttpRegistry(target)
    from serving import ModelRegistry

    return ModelRegistry(target, store=store)


@dataclass
class Promotion:
    """What promotion did: the version registered and the decision about the alias."""

    model: str
    version: int
    alias: str
    metric: str
    direction: str
    promoted: bool
    reason: str
    test_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    trial: int
    incumbent_version: int | None = None
    incumbent_value: float | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    registered: bool = True  # False: the retrained model is byte-identical to the alias's

    def summary(self) -> str:
        """``registered m v2; test log_loss 0.081 vs production v1 0.095 -> promoted``."""
        value = self.test_metrics[self.metric]
        if not self.registered:
            return (
                f"{self.model}: the retrained model (trial {self.trial}, test {self.metric} "
                f"{value:.4g}) is {self.alias} v{self.version} already; nothing registered"
            )
        if self.incumbent_version is None:
            versus = f"no {self.alias} version yet"
        elif self.incumbent_version == self.version:
            versus = f"{self.alias} is v{self.version} already"
        elif self.incumbent_value is None:
            versus = f"{self.alias} v{self.incumbent_version} has no {self.metric}"
        else:
            versus = f"{self.alias} v{self.incumbent_version} {self.incumbent_value:.4g}"
        verdict = "promoted" if self.promoted else f"not promoted ({self.alias} stays)"
        return (
            f"registered {self.model} v{self.version} (trial {self.trial}); test {self.metric} "
            f"{value:.4g} vs {versus} -> {verdict}"
        )


def promotion_settings(
    spec: RunSpec,
    *,
    register: bool | None = None,
    alias: str | None = None,
    model_name: str | None = None,
) -> PromotionSpec:
    """The spec's ``promotion`` block with command-line overrides, checked before anything runs.

    Raises:
        ValidationError: a model name or alias the registry would refuse (naming the file).
    """
    from serving.schemas import ALIAS_PATTERN, MODEL_NAME_PATTERN

    p = spec.promotion
    updates = {
        k: v
        for k, v in {"register": register, "alias": alias, "model_name": model_name}.items()
        if v is not None
    }
    p = PromotionSpec.model_validate({**p.model_dump(by_alias=True), **updates})
    name = p.model_name or spec.name
    for key, value, pattern, rule in (
        ("promotion.model_name", name, MODEL_NAME_PATTERN, "1-128 letters, digits, _ . -"),
        ("promotion.alias", p.alias, ALIAS_PATTERN, "1-64 letters, digits, _ . -, not all digits"),
    ):
        if not pattern.match(value):
            raise ValidationError(
                f"{spec.source}: {key}: {value!r} is not allowed; use {rule}",
                field=key,
                details={"file": spec.source, "key": key},
            )
    return p.model_copy(update={"model_name": name})


def retrain(
    spec: RunSpec, best: Trial, *, splits: Splits | None = None, on: str = "train+validation"
) -> tuple[TrainResult, dict[str, Any], TrainData]:
    """Fit ``best``'s configuration on ``on`` and score it on the test split.

    Returns:
        (the result, whose metrics are test metrics; the parameters fitted; the data used).
    """
    splits = splits if splits is not None else spec.load_splits()
    if len(splits.test) == 0:
        raise ValidationError(
            f"{spec.source}: dataset.test_fraction: promotion scores the model on the test "
            "split, and this spec holds none out; set test_fraction > 0 (e.g. 0.2)",
            field="dataset.test_fraction",
            details={"file": spec.source, "key": "dataset.test_fraction"},
        )
    if on == "train+validation":
        data = splits.final_data()
    else:
        tuning = splits.tuning_data()
        x_test, y_test = splits.holdout()
        data = TrainData(
            X_train=tuning.X_train,
            y_train=tuning.y_train,
            X_valid=x_test,
            y_valid=y_test,
            task=tuning.task,
            feature_names=tuning.feature_names,
            n_classes=tuning.n_classes,
            name=tuning.name,
        )
    trainer = spec.make_trainer()
    info = best.metadata.get("trainer_info") or {}
    params = trainer.refit_params({**spec.trainer.params, **best.params}, info)
    # The data's "validation" split is the test split here: a plain fit only evaluates on it.
    result = trainer.fit(params, data, metric=spec.primary_metric, seed=spec.seed + best.number)
    return result, params, data


def promote_best(
    spec: RunSpec,
    best: Trial,
    *,
    registry: RegistryLike,
    settings: PromotionSpec | None = None,
    splits: Splits | None = None,
    actor: str | None = None,
) -> Promotion:
    """Retrain ``best``, register it with its lineage, and promote it if it beats the holder.

    Args:
        spec: the study's spec.
        best: the study's best completed trial.
        registry: a ``serving.ModelRegistry`` or an :class:`HttpRegistry`.
        settings: the promotion settings (default: ``promotion_settings(spec)``).
        splits: the dataset's splits, when loaded already.
        actor: who registers and promotes (default: the OS user).
    """
    settings = settings or promotion_settings(spec)
    name = settings.model_name or spec.name
    metric = settings.metric or spec.primary_metric
    if settings.direction is not None:
        direction = str(_value(settings.direction))
    elif metric in spec.objectives:
        direction = str(_value(spec.objectives[metric]))
    else:
        direction = METRICS[metric][1]
    splits = splits if splits is not None else spec.load_splits()
    result, params, data = retrain(spec, best, splits=splits, on=settings.retrain_on)
    if result.artifact is None:
        raise ValidationError(
            f"trainer {spec.trainer.type!r} produced no model artifact to register",
            field="trainer.type",
        )
    test_metrics = {k: float(v) for k, v in result.metrics.items() if math.isfinite(v)}
    if metric not in test_metrics:
        raise ValidationError(
            f"{spec.source}: promotion.metric: {metric!r} is not a finite test metric of the "
            f"retrained model (it has {sorted(test_metrics)})",
            field="promotion.metric",
        )
    validation = dict(best.metadata.get("metrics") or best.values or {})
    holder = _holder(registry, name, settings.alias)
    if holder is not None and holder.artifact.sha256 == result.artifact.sha256:
        # Running a finished study again retrains the same model: keep the versions meaningful.
        return Promotion(
            model=name,
            version=holder.version,
            alias=settings.alias,
            metric=metric,
            direction=direction,
            promoted=False,
            reason=f"byte-identical to {settings.alias} v{holder.version}",
            test_metrics=test_metrics,
            validation_metrics={k: float(v) for k, v in validation.items()},
            trial=best.number,
            incumbent_version=holder.version,
            incumbent_value=holder.metrics.get(metric),
            registered=False,
        )
    ds = splits.dataset
    lineage = {
        "study": spec.name,
        "trial": best.number,
        "dataset": ds.name,
        "dataset_version": _dataset_version(ds.X, ds.y),
        "code_version": _git_sha(),
        "split": {
            "seed": splits.seed,
            "valid_fraction": spec.dataset.valid_fraction,
            "test_fraction": spec.dataset.test_fraction,
            "rows": {
                "train": len(splits.train),
                "valid": len(splits.valid),
                "test": len(splits.test),
            },
        },
        "trainer": spec.trainer.type,
        "trained_on": settings.retrain_on,
        "evaluated_on": "test",
        "seed": spec.seed + best.number,
        "validation_metrics": {k: float(v) for k, v in validation.items()},
        "test_metrics": test_metrics,
    }
    signature = {"inputs": [{"name": n, "type": "float"} for n in data.feature_names]}
    version = registry.register(
        name,
        artifact=result.artifact.data,
        format=result.artifact.format,
        signature=signature,
        output_schema=_output_schema(data, ds.classes),
        params=params,
        metrics=test_metrics,
        lineage=lineage,
        input_example=[
            {n: float(v) for n, v in zip(data.feature_names, row, strict=True)}
            for row in data.X_train[:INPUT_EXAMPLE_ROWS]
        ],
        description=f"best trial {best.number} of study {spec.name!r}, retrained on "
        f"{settings.retrain_on}, scored on the test split",
        actor=actor,
    )
    decision = registry.promote_if_better(
        name, version.version, settings.alias, metric=metric, direction=direction
    )
    c = decision.comparison
    return Promotion(
        model=name,
        version=version.version,
        alias=settings.alias,
        metric=metric,
        direction=direction,
        promoted=decision.promoted,
        reason=c.reason,
        test_metrics=test_metrics,
        validation_metrics=lineage["validation_metrics"],
        trial=best.number,
        incumbent_version=c.incumbent_version,
        incumbent_value=c.incumbent_value,
        lineage=lineage,
    )


def _holder(registry: RegistryLike, name: str, alias: str) -> Any:
    """The version ``alias`` is on, or None (no such model or alias yet)."""
    from autotune.errors import NotFoundError

    try:
        return registry.get_version(name, alias)
    except NotFoundError:
        return None


def _output_schema(data: TrainData, classes: tuple[Any, ...]) -> dict[str, Any]:
    if data.task == "regression":
        return {"name": "prediction", "datatype": "FP32", "task": "regression"}
    labels = [c if isinstance(c, int | float | bool) else str(c) for c in classes]
    if data.n_classes == 2:
        what = f"probability of class {labels[1]!r} (the second of classes)"
    else:
        what = "one probability per class, in the order of classes"
    return {
        "name": "prediction",
        "datatype": "FP32",
        "task": "classification",
        "classes": labels,
        "description": what,
    }


def _dataset_version(X: np.ndarray, y: np.ndarray) -> str:
    """A content hash of the data (the bundled datasets have no version of their own)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return f"sha256:{h.hexdigest()[:16]}"


def _git_sha() -> str | None:
    """The commit of the code that trained the model: this package's checkout, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _plain(v: Any) -> Any:
    """JSON-able: pydantic models dumped, numpy scalars as Python numbers."""
    import json

    if hasattr(v, "model_dump"):
        v = v.model_dump(mode="json")
    return json.loads(json.dumps(v, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
