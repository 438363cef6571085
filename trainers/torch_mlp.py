"""PyTorch MLP trainer: a feed-forward network, one report per epoch.

torch is imported inside ``fit`` only, so importing ``trainers`` (and the serving path) stays
light. Runs on CUDA when it is available, else CPU. Inputs are standardized with the training
split's mean and standard deviation (regression targets too); those statistics travel in the
artifact, a ``torch.save``'d dict of tensors and plain values that loads with
``torch.load(..., weights_only=True)`` (``load_mlp`` rebuilds the network).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from trainers._base import (
    Artifact,
    Reporter,
    TrainData,
    Trainer,
    TrainerOptions,
    TrainResult,
    evaluate,
    register_trainer,
    report_all,
    resolve_metric,
)

__all__ = ["TorchMLPTrainer", "TorchMLPOptions", "load_mlp"]

# Features with (almost) no spread are left unscaled instead of divided by ~0.
_MIN_STD = 1e-8
_HYPERPARAMS = {
    "hidden_units",
    "n_layers",
    "dropout",
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "activation",
}


class TorchMLPOptions(TrainerOptions):
    epochs: int = Field(default=30, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


def _build(torch: Any, n_in: int, n_out: int, cfg: Mapping[str, Any]) -> Any:
    nn = torch.nn
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[cfg["activation"]]
    layers: list[Any] = []
    width = n_in
    for _ in range(int(cfg["n_layers"])):
        layers += [nn.Linear(width, int(cfg["hidden_units"])), act()]
        if cfg["dropout"] > 0:
            layers.append(nn.Dropout(float(cfg["dropout"])))
        width = int(cfg["hidden_units"])
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@register_trainer
class TorchMLPTrainer(Trainer):
    """An MLP trained with AdamW.

    Tunable params: ``hidden_units`` (64), ``n_layers`` (2), ``dropout`` (0.0), ``lr`` (1e-3),
    ``weight_decay`` (0.0), ``batch_size`` and ``epochs`` (the options' values), ``activation``
    ("relu" | "tanh" | "gelu").
    """

    name: ClassVar[str] = "torch_mlp"
    Options: ClassVar[type[TrainerOptions]] = TorchMLPOptions

    def prepare(self) -> None:
        import torch  # noqa: F401

    def fit(
        self,
        params: Mapping[str, Any],
        data: TrainData,
        *,
        reporter: Reporter | None = None,
        metric: str | None = None,
        seed: int = 0,
    ) -> TrainResult:
        import torch

        from autotune.errors import ValidationError

        opts: TorchMLPOptions = self.options  # type: ignore[assignment]
        metric = resolve_metric(self, data.task, metric)
        reporter = report_all(reporter)
        unknown = sorted(set(params) - _HYPERPARAMS)
        if unknown:
            raise ValidationError(
                f"torch_mlp has no parameter(s) {unknown}; allowed: {sorted(_HYPERPARAMS)}",
                field=f"params.{unknown[0]}",
            )
        cfg = {
            "hidden_units": 64,
            "n_layers": 2,
            "dropout": 0.0,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "batch_size": opts.batch_size,
            "epochs": opts.epochs,
            "activation": "relu",
            **params,
        }
        if opts.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = opts.device
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)

        x_mean = data.X_train.mean(axis=0)
        x_std = data.X_train.std(axis=0)
        x_std = np.where(x_std < _MIN_STD, 1.0, x_std)
        classify = data.task == "classification"
        if classify:
            y_mean, y_std = 0.0, 1.0
            n_out = data.n_classes
        else:
            y_mean, y_std = float(data.y_train.mean()), float(data.y_train.std() or 1.0)
            n_out = 1

        def tensors(X: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
            xt = torch.as_tensor((X - x_mean) / x_std, dtype=torch.float32, device=device)
            if classify:
                yt = torch.as_tensor(y, dtype=torch.long, device=device)
            else:
                yt = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32, device=device)
            return xt, yt

        xtr, ytr = tensors(data.X_train, data.y_train)  # (n_train, n_features), (n_train,)
        xva, _ = tensors(data.X_valid, data.y_valid)
        net = _build(torch, data.n_features, n_out, cfg).to(device)
        optim = torch.optim.AdamW(
            net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
        batch = int(cfg["batch_size"])
        n = xtr.shape[0]

        def predict() -> np.ndarray:
            net.eval()
            with torch.no_grad():
                out = net(xva)
            net.train()
            if classify:
                return torch.softmax(out, dim=1).cpu().numpy()  # (n_valid, n_classes)
            return out.squeeze(1).cpu().numpy() * y_std + y_mean  # (n_valid,)

        stopped = False
        epochs_run = 0
        for epoch in range(int(cfg["epochs"])):
            perm = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, batch):
                idx = perm[i : i + batch]
                optim.zero_grad()
                out = net(xtr[idx])
                loss = loss_fn(out, ytr[idx]) if classify else loss_fn(out.squeeze(1), ytr[idx])
                loss.backward()
                optim.step()
            epochs_run = epoch + 1
            value = evaluate(data.task, data.y_valid, predict())[metric]
            if reporter.report(epoch, value) and epochs_run < int(cfg["epochs"]):
                stopped = True
                break

        metrics = evaluate(data.task, data.y_valid, predict())
        buf = io.BytesIO()
        torch.save(
            {
                "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "config": {
                    "n_in": data.n_features,
                    "n_out": n_out,
                    "task": data.task,
                    **{k: cfg[k] for k in ("hidden_units", "n_layers", "dropout", "activation")},
                },
                "x_mean": torch.as_tensor(x_mean, dtype=torch.float32),
                "x_std": torch.as_tensor(x_std, dtype=torch.float32),
                "y_mean": y_mean,
                "y_std": y_std,
            },
            buf,
        )
        return TrainResult(
            metrics=metrics,
            artifact=Artifact(data=buf.getvalue(), filename="model.pt", format="torch-state-dict"),
            steps=epochs_run,
            stopped=stopped,
            info={"device": device},
        )


def load_mlp(data: bytes) -> tuple[Any, dict[str, Any]]:
    """Rebuild ``(network, payload)`` from an artifact; loads with ``weights_only=True``."""
    import torch

    payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    net = _build(torch, payload["config"]["n_in"], payload["config"]["n_out"], payload["config"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return net, payload
