"""Our GPs as a BoTorch ``Model``, so BoTorch's Monte Carlo acquisitions can use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal

from autotune._gp.gp import GP


class IndependentGPs(Model):
    """Independent outputs, one fitted ``GP`` each; joint over the q points of a batch."""

    def __init__(self, gps: Sequence[GP]) -> None:
        super().__init__()
        self._gps = list(gps)

    @property
    def num_outputs(self) -> int:
        return len(self._gps)

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size()

    def posterior(
        self,
        X: torch.Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | torch.Tensor = False,
        posterior_transform: Any = None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        gps = self._gps if output_indices is None else [self._gps[i] for i in output_indices]
        mvns = []
        for gp in gps:
            mean, cov = gp.joint_posterior(X)
            mvns.append(MultivariateNormal(mean, cov))
        if len(mvns) == 1:
            post = GPyTorchPosterior(mvns[0])
        else:
            post = GPyTorchPosterior(MultitaskMultivariateNormal.from_independent_mvns(mvns))
        if posterior_transform is not None:
            return posterior_transform(post)
        return post
