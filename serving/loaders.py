"""Artifact format -> loader, through a registry with a duplicate check.

A loader turns verified artifact bytes into a :class:`Predictor`, whose ``predict`` takes a
(n_rows, n_features) float32 matrix in signature order and returns (n_rows,) or
(n_rows, n_outputs). Heavy libraries are imported inside the loader that needs them, so a server
that only serves XGBoost models never imports torch or skops.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from serving.errors import ModelLoadError, UnsafeArtifactError
from serving.schemas import ModelVersion

__all__ = [
    "Predictor",
    "LoaderOptions",
    "Loader",
    "register_loader",
    "load_predictor",
    "loader_formats",
    "DEFAULT_SKOPS_TRUSTED_TYPES",
]

# skops trusts builtins, numpy and most scikit-learn estimators by itself; these are the extra
# types that common tree models need. The server sets the list; nothing read from an artifact
# can widen it.
DEFAULT_SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "numpy.dtype",
)


class Predictor(Protocol):
    """A loaded model. ``predict`` must be safe to call from one thread at a time."""

    framework: str

    def predict(self, x: np.ndarray) -> np.ndarray:  # (n_rows, n_features) -> (n_rows[, k])
        ...


@dataclass(frozen=True)
class LoaderOptions:
    """Server-side settings the loaders obey (never read from the artifact).

    Args:
        skops_trusted_types: fully qualified type names skops may build beyond its defaults.
        predict_threads: threads XGBoost uses per prediction; 1 suits small online batches.
    """

    skops_trusted_types: tuple[str, ...] = DEFAULT_SKOPS_TRUSTED_TYPES
    predict_threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[bytes, ModelVersion, LoaderOptions], Predictor]
_LOADERS: dict[str, Loader] = {}


def register_loader(fmt: str) -> Callable[[Loader], Loader]:
    """Register the loader of an artifact format; a format has one loader."""

    def deco(fn: Loader) -> Loader:
        if fmt in _LOADERS and _LOADERS[fmt] is not fn:
            raise ValueError(f"format {fmt!r} already has a loader: {_LOADERS[fmt].__name__}")
        _LOADERS[fmt] = fn
        return fn

    return deco


def loader_formats() -> list[str]:
    return sorted(_LOADERS)


def load_predictor(data: bytes, version: ModelVersion, options: LoaderOptions) -> Predictor:
    """Load a predictor for ``version`` from its verified artifact bytes.

    Raises:
        UnsafeArtifactError: the artifact needs types the server does not trust.
        ModelLoadError: the artifact does not load or does not match the signature.
    """
    fmt = version.artifact.format
    try:
        loader = _LOADERS[fmt]
    except KeyError:
        raise ModelLoadError(
            f"no loader for artifact format {fmt!r}; known: {loader_formats()}",
            details={"format": fmt},
        ) from None
    try:
        return loader(data, version, options)
    except (UnsafeArtifactError, ModelLoadError):
        raise
    except Exception as e:
        raise ModelLoadError(
            f"{version.name} v{version.version}: the {fmt} artifact failed to load: {e}",
            details={"format": fmt, "reason": type(e).__name__},
        ) from e


class _XGBoostPredictor:
    framework = "xgboost"

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Feature names were checked against the signature at load time.
        return self.booster.inplace_predict(x, validate_features=False)


@register_loader("xgboost-ubj")
@register_loader("xgboost-json")
def _load_xgboost(data: bytes, version: ModelVersion, options: LoaderOptions) -> Predictor:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    booster.set_param({"nthread": options.predict_threads})
    names = version.signature.names
    if booster.num_features() != len(names):
        raise ModelLoadError(
            f"{version.name} v{version.version}: the booster expects {booster.num_features()} "
            f"features but the signature lists {len(names)}",
            details={"booster_features": booster.num_features(), "signature": names},
        )
    if booster.feature_names is not None and list(booster.feature_names) != names:
        raise ModelLoadError(
            f"{version.name} v{version.version}: the signature's features {names} are not the "
            f"booster's {list(booster.feature_names)} (same names, same order)",
            details={"booster_features": list(booster.feature_names), "signature": names},
        )
    return _XGBoostPredictor(booster)


class _SklearnPredictor:
    framework = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self._proba = hasattr(estimator, "predict_proba")

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._proba:
            p = self.estimator.predict_proba(x)
            return p[:, 1] if p.shape[1] == 2 else p  # binary: P(class 1), as XGBoost does
        return np.asarray(self.estimator.predict(x))


@register_loader("sklearn-skops")
def _load_skops(data: bytes, version: ModelVersion, options: LoaderOptions) -> Predictor:
    try:
        import skops.io as sio
    except ImportError:
        raise ModelLoadError(
            "scikit-learn artifacts need skops: pip install skops", details={"missing": "skops"}
        ) from None
    untrusted = sio.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - set(options.skops_trusted_types))
    if refused:
        raise UnsafeArtifactError(
            f"{version.name} v{version.version}: the skops artifact contains types the server "
            f"does not trust: {refused}; add them to the server's trusted types only if you "
            "trust where the model came from",
            field="artifact",
            details={"untrusted_types": refused},
        )
    estimator = sio.loads(data, trusted=list(untrusted))
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and n_in != len(version.signature.inputs):
        raise ModelLoadError(
            f"{version.name} v{version.version}: the estimator expects {n_in} features, the "
            f"signature lists {len(version.signature.inputs)}"
        )
    return _SklearnPredictor(estimator)


class _TorchPredictor:
    framework = "torch"

    def __init__(
        self,
        module: Any,
        task: str | None,
        *,
        x_mean: Any = None,
        x_std: Any = None,
        y_mean: float = 0.0,
        y_std: float = 1.0,
    ) -> None:
        import torch

        self._torch = torch
        self.module = module.eval()
        self.task = task
        self.x_mean, self.x_std = x_mean, x_std
        self.y_mean, self.y_std = float(y_mean), float(y_std)

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.x_mean is not None:
                t = (t - self.x_mean) / self.x_std
            out = self.module(t)  # (n_rows, n_out)
            if self.task == "classification":
                out = torch.sigmoid(out) if out.shape[-1] == 1 else torch.softmax(out, dim=-1)
        y = out.numpy()
        if self.task == "classification":
            # One probability per row for binary models, as XGBoost gives: P(class 1).
            return y[:, -1] if y.shape[1] <= 2 else y
        return y[:, 0] * self.y_std + self.y_mean if y.shape[1] == 1 else y


@register_loader("torch-state-dict")
def _load_torch(data: bytes, version: ModelVersion, options: LoaderOptions) -> Predictor:
    """A multilayer perceptron rebuilt from its weights: ``Linear`` layers in key order with the
    activation between them (dropout is a no-op when predicting). Two layouts load:

    - a bare ``state_dict`` (activation from ``params["activation"]``, task from the output
      schema);
    - the torch trainer's payload ``{"state_dict", "config", "x_mean", "x_std", "y_mean",
      "y_std"}``, whose standardization is applied around the network.

    ``weights_only=True``: the unpickler builds tensors and plain containers only.
    """
    import torch

    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict):
        raise ModelLoadError("a torch artifact must be a state_dict or the trainer's payload")
    if isinstance(payload.get("state_dict"), dict):
        state = payload["state_dict"]
        cfg = payload.get("config") or {}
        activation = cfg.get("activation", version.params.get("activation", "relu"))
        task = cfg.get("task") or version.output_schema.task
        extra = {k: payload[k] for k in ("x_mean", "x_std", "y_mean", "y_std") if k in payload}
    else:
        state, extra = payload, {}
        activation = version.params.get("activation", "relu")
        task = version.output_schema.task
    weights = [k for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    if not weights:
        raise ModelLoadError("the state_dict has no Linear layer weights")
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}
    if activation not in acts:
        raise ModelLoadError(f"unknown activation {activation!r}; known: {sorted(acts)}")
    layers: list[Any] = []
    new_state: dict[str, Any] = {}
    for i, key in enumerate(weights):
        w = state[key]
        bias = state.get(key[: -len("weight")] + "bias")
        idx = len(layers)
        layers.append(torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None))
        new_state[f"{idx}.weight"] = w
        if bias is not None:
            new_state[f"{idx}.bias"] = bias
        if i < len(weights) - 1:
            layers.append(acts[activation]())
    module = torch.nn.Sequential(*layers)
    module.load_state_dict(new_state)
    if layers[0].in_features != len(version.signature.inputs):
        raise ModelLoadError(
            f"the first layer takes {layers[0].in_features} inputs, the signature lists "
            f"{len(version.signature.inputs)}"
        )
    return _TorchPredictor(module.float(), task, **extra)
