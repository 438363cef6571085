"""Parameter importance from a fitted surrogate.

An ExtraTrees regressor (Geurts et al., 2006) is fitted on the trials' unit-cube encoding
(:meth:`autotune.space.SearchSpace.encode_many`) against the objective, and each parameter's
importance is its mean decrease in impurity, normalised to sum to one, as Optuna's
``MeanDecreaseImpurityImportanceEvaluator`` does. Inactive conditional parameters are encoded
as a value outside the cube (-1) so the trees can split on "inactive". No torch on this path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from autotune.models import Study, Trial
from autotune.plots._common import (
    best_indices,
    check_params,
    completed_values,
    downsample,
    empty_figure,
    finish_layout,
    objective_of,
)
from autotune.plots._registry import register

__all__ = ["plot_importance", "param_importances"]

# Trees in the forest, and trials fitted at most: the ranking of parameters settles well before
# either limit, and a 10,000-trial study then fits in about a tenth of a second.
_N_TREES = 32
_MAX_FIT_TRIALS = 1000
_INACTIVE = -1.0
_MIN_TRIALS = 2


def param_importances(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    params: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Each parameter's importance for ``objective`` (sums to 1), most important first.

    Empty when fewer than two completed trials, or when the objective never varies.

    Args:
        study: the study.
        trials: its trials (completed ones are fitted).
        objective: which objective (default: the first).
        params: which parameters (default: all).
        seed: the forest's and the sample's seed.
    """
    obj = objective_of(study, objective)
    names = check_params(study, params)
    kept, y, _ = completed_values(study, trials, obj.name)
    if len(kept) < _MIN_TRIALS or not names or np.ptp(y) == 0:
        return {}
    idx = downsample(len(kept), _MAX_FIT_TRIALS, keep=best_indices(obj, y), seed=seed)
    space = study.search_space()
    x = space.encode_many([kept[i].params for i in idx], inactive=_INACTIVE)  # (n, dim)
    cols = [space.index_of(n) for n in names]
    x = x[:, cols]
    from sklearn.ensemble import ExtraTreesRegressor

    forest = ExtraTreesRegressor(
        n_estimators=_N_TREES, min_samples_leaf=2, random_state=seed, n_jobs=1
    )
    forest.fit(x, y[idx])
    imp = np.asarray(forest.feature_importances_, dtype=float)
    total = imp.sum()
    if total <= 0:
        return {}
    imp = imp / total
    order = np.argsort(-imp, kind="stable")
    return {names[i]: float(imp[i]) for i in order}


@register("importance", title="Parameter importance")
def plot_importance(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    params: Sequence[str] | None = None,
) -> go.Figure:
    """Horizontal bars of each parameter's importance (see :func:`param_importances`).

    Args:
        study: the study.
        trials: its trials.
        objective: which objective (default: the first).
        params: which parameters (default: all).
    """
    obj = objective_of(study, objective)
    title = f"Parameter importance for {obj.name}"
    imp = param_importances(study, trials, objective=obj.name, params=params)
    if not imp:
        return empty_figure(title, "Needs at least two completed trials with different values")
    names = list(imp)[::-1]  # most important on top
    vals = [imp[n] for n in names]
    fig = go.Figure(
        go.Bar(
            x=vals,
            y=names,
            orientation="h",
            marker={"color": "#1f77b4"},
            text=[f"{v:.2f}" for v in vals],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": {"text": "importance (mean decrease in impurity)"}, "range": [0, 1.1]},
        height=max(300, 80 + 30 * len(names)),
    )
    return finish_layout(fig)
