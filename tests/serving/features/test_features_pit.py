"""The point-in-time join on arrays, against a brute force and against pandas.merge_asof."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.features.pit import entity_codes, point_in_time_indices


def brute_force(lk, lt, hk, ht, ttl):  # type: ignore[no-untyped-def]
    out = []
    for k, t in zip(lk, lt, strict=True):
        cand = [j for j in range(len(hk)) if hk[j] == k and ht[j] <= t]
        if ttl is not None:
            cand = [j for j in cand if t - ht[j] <= ttl]
        out.append(max(cand, key=lambda j: ht[j]) if cand else -1)
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(0, 60)), int(rng.integers(1, 60))
    scale = [1, 7, 1_000_000][seed % 3]
    hist = pd.DataFrame({"k": rng.integers(0, 5, m), "t": rng.integers(0, 30, m) * scale})
    hist = hist.drop_duplicates().reset_index(drop=True)
    lk, lt = rng.integers(0, 6, n), rng.integers(-3, 35, n) * scale
    ttl = [None, 4 * scale, 10 * scale][seed % 3]
    lc, hc = entity_codes([lk], [hist.k.to_numpy()])
    got = point_in_time_indices(lc, lt, hc, hist.t.to_numpy(), ttl=ttl)
    np.testing.assert_array_equal(
        got, brute_force(lk, lt, hist.k.to_numpy(), hist.t.to_numpy(), ttl)
    )


def test_huge_time_span_falls_back_to_ranks() -> None:
    # Microsecond times over centuries with many entities do not fit one int64 key.
    rng = np.random.default_rng(1)
    m = n = 2000
    hk, ht = rng.integers(0, 2**40, m), rng.integers(-(2**61), 2**61, m)
    lk, lt = hk[rng.integers(0, m, n)], rng.integers(-(2**61), 2**61, n)
    lc, hc = entity_codes([lk], [hk])
    got = point_in_time_indices(lc, lt, hc, ht, ttl=None)
    np.testing.assert_array_equal(got, brute_force(lk, lt, hk, ht, None))


def test_composite_string_keys_and_merge_asof_agree() -> None:
    rng = np.random.default_rng(2)
    m, n = 5000, 4000
    hist = pd.DataFrame({
        "a": rng.choice(["x", "y", "z"], m), "b": rng.integers(0, 50, m),
        "t": rng.integers(0, 10**6, m), "v": rng.random(m),
    }).drop_duplicates(["a", "b", "t"])  # fmt: skip
    labels = pd.DataFrame(
        {"a": rng.choice(["x", "y", "z", "w"], n), "b": rng.integers(0, 60, n),
         "t": rng.integers(0, 10**6, n)}
    )  # fmt: skip
    ttl = 50_000
    lc, hc = entity_codes(
        [labels.a.to_numpy(), labels.b.to_numpy()], [hist.a.to_numpy(), hist.b.to_numpy()]
    )
    idx = point_in_time_indices(lc, labels.t.to_numpy(), hc, hist.t.to_numpy(), ttl=ttl)
    ours = np.where(idx >= 0, hist.v.to_numpy()[np.maximum(idx, 0)], np.nan)
    peer = pd.merge_asof(
        labels.reset_index().sort_values("t"), hist.sort_values("t"), on="t", by=["a", "b"],
        tolerance=ttl, direction="backward",
    ).set_index("index").sort_index()  # fmt: skip
    np.testing.assert_array_equal(ours, peer.v.to_numpy())
