"""The unit-cube encoding of a search space, as arrays the GP and the optimizer work on.

Every parameter owns one coordinate of ``[0, 1]^dim`` (``SearchSpace.encode``). Here each
coordinate gets a kind and, for discrete ones, its grid of admissible unit values, so that the
optimizer can snap points to the grid and search discrete neighbours instead of rounding a
relaxed optimum. Conditional parameters: an inactive coordinate is pinned to ``INACTIVE`` (the
value ``SearchSpace.encode`` gives it), so all configurations in which it is inactive agree on
it and its value never carries information; whether it is active is told to the kernel by the
parent categorical's own (Hamming) coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autotune.space import Categorical, Float, Int, SearchSpace

INACTIVE = 0.5
# Ordinal parameters with at most this many levels are searched exhaustively by the optimizer;
# larger grids are treated as continuous during gradient steps, then snapped and searched locally.
MAX_EXHAUSTIVE_LEVELS = 16
# Grids larger than this are never materialized: snapping computes the bin directly.
MAX_GRID = 4096


@dataclass(frozen=True)
class EncodedSpace:
    """Array view of a search space.

    Attributes:
        dim: number of coordinates.
        is_categorical: (dim,) bool, Hamming distance in the kernel.
        is_discrete: (dim,) bool, integer, stepped or categorical.
        grids: per coordinate, the sorted admissible unit values (None when continuous).
        parents: per coordinate, (parent index, allowed parent unit values) or None.
        order: coordinates in topological order (parents first).
    """

    dim: int
    is_categorical: np.ndarray
    is_discrete: np.ndarray
    grids: tuple[np.ndarray | None, ...]
    parents: tuple[tuple[int, np.ndarray] | None, ...]
    order: tuple[int, ...]
    uniform: tuple[int, ...] = ()  # per coordinate: n when the grid is (k + 0.5) / n, else 0

    @property
    def continuous_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.is_discrete)

    @property
    def discrete_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_discrete)

    @property
    def is_conditional(self) -> bool:
        return any(p is not None for p in self.parents)

    def active_mask(self, X: np.ndarray) -> np.ndarray:
        """(n, dim) bool: which coordinates are active at each point of ``X`` (n, dim)."""
        active = np.ones(X.shape, dtype=bool)
        for j in self.order:
            p = self.parents[j]
            if p is None:
                continue
            i, allowed = p
            active[:, j] = active[:, i] & np.isin(self._snap(X[:, i], i), allowed)
        return active

    def canonicalize(self, X: np.ndarray) -> np.ndarray:
        """Snap discrete coordinates to their grid and pin inactive ones to ``INACTIVE``."""
        X = np.clip(np.array(X, dtype=float, copy=True), 0.0, 1.0)
        for j in self.discrete_indices:
            X[:, j] = self._snap(X[:, j], j)
        if self.is_conditional:
            X[~self.active_mask(X)] = INACTIVE
        return X

    def _snap(self, u: np.ndarray, j: int) -> np.ndarray:
        n = self.uniform[j] if self.uniform else 0
        if n:  # the bin centres of SearchSpace's encoding: no search needed
            return (np.clip(np.floor(u * n), 0, n - 1) + 0.5) / n
        return _snap(u, self.grids[j])


def _snap(u: np.ndarray, grid: np.ndarray | None) -> np.ndarray:
    if grid is None:
        return u
    idx = np.clip(np.searchsorted(grid, u), 1, len(grid) - 1)
    left, right = grid[idx - 1], grid[idx]
    return np.where(np.abs(u - left) <= np.abs(u - right), left, right)


def encode_space(space: SearchSpace) -> EncodedSpace:
    """Build the array view of ``space``."""
    names = space.names
    is_cat, is_disc, grids, parents, uniform = [], [], [], [], []
    for name in names:
        p = space[name]
        is_cat.append(isinstance(p, Categorical))
        levels = p.n_levels
        if levels is None:
            is_disc.append(False)
            grids.append(None)
        else:
            is_disc.append(True)
            grids.append(_grid(p, min(levels, MAX_GRID)))
        evenly = levels is not None and levels <= MAX_GRID and not getattr(p, "log", False)
        uniform.append(levels if evenly else 0)
        if p.parent is None:
            parents.append(None)
        else:
            parent = space[p.parent]
            allowed = np.array(sorted(parent.to_unit(v) for v in p.parent_values))
            parents.append((space.index_of(p.parent), allowed))
    order = tuple(space.index_of(n) for n in space._order)
    return EncodedSpace(
        dim=len(names),
        is_categorical=np.array(is_cat, dtype=bool),
        is_discrete=np.array(is_disc, dtype=bool),
        grids=tuple(grids),
        parents=tuple(parents),
        order=order,
        uniform=tuple(uniform),
    )


def _grid(p: Float | Int | Categorical, n: int) -> np.ndarray:
    """The unit values of a discrete parameter's levels (at most ``n`` of them, evenly spread)."""
    if isinstance(p, Categorical):
        return (np.arange(len(p.choices)) + 0.5) / len(p.choices)
    total = p.n_levels
    assert total is not None
    ks = np.unique(np.linspace(0, total - 1, n).round().astype(int))
    values = [p.low + k * p.step for k in ks]
    return np.unique(np.array([p.to_unit(v) for v in values]))
