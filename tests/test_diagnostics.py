"""pho.diagnostics: R-hat and effective sample sizes on chains whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pho.diagnostics import ess_bulk, ess_tail, split_rhat, summarize_chains
from pho.errors import PhoValueError


def _ar1(rng, phi, chains, n):
    """AR(1) chains x_t = phi x_{t-1} + e_t, stationary start; ESS = N (1 - phi) / (1 + phi)."""
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains) / math.sqrt(1 - phi**2)
    e = rng.normal(size=(chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_independent_draws_have_rhat_one_and_full_ess(rng):
    x = rng.normal(size=(4, 2000))
    assert abs(split_rhat(x) - 1) < 0.005
    # the ESS estimate of 8000 iid draws scatters by a few percent
    assert ess_bulk(x) == pytest.approx(8000, rel=0.1)
    assert ess_tail(x) == pytest.approx(8000, rel=0.15)


def test_autocorrelated_chains_have_the_ar1_ess(rng):
    phi = 0.8
    x = _ar1(rng, phi, 4, 5000)
    expected = 4 * 5000 * (1 - phi) / (1 + phi)  # 2222
    assert ess_bulk(x) == pytest.approx(expected, rel=0.15)
    assert abs(split_rhat(x) - 1) < 0.01


def test_disagreeing_chains_have_large_rhat(rng):
    shifted = rng.normal(size=(2, 1000)) + np.array([[0.0], [1.0]])
    assert split_rhat(shifted) > 1.1
    # same centre, different scale: only the folded R-hat sees it
    scaled = rng.normal(size=(2, 1000)) * np.array([[1.0], [4.0]])
    assert split_rhat(scaled) > 1.1
    # a trend inside each chain: split R-hat catches it
    trend = rng.normal(size=(2, 1000)) + np.linspace(0, 3, 1000)
    assert split_rhat(trend) > 1.1


def test_summary_and_bad_shapes(rng):
    chains = rng.normal(size=(2, 100, 3))
    out = summarize_chains(chains, ["a", "b", "c"])
    assert set(out) == {"a", "b", "c"} and set(out["a"]) == {"rhat", "ess_bulk", "ess_tail"}
    with pytest.raises(PhoValueError, match=r"shape \(C, N, 2\)"):
        summarize_chains(chains, ["a", "b"])
    with pytest.raises(PhoValueError, match="at least 4 draws"):
        split_rhat(np.zeros((2, 3)))
    assert math.isnan(split_rhat(np.ones((2, 10))))


def test_agrees_with_arviz_where_installed(rng):
    """ArviZ is optional; where it is installed its rank R-hat must equal ours and its ESS be within 3%
    (the two truncate the autocorrelation sum at the same lag up to Stan's small refinements)."""
    az = pytest.importorskip("arviz")
    walk = np.cumsum(rng.normal(size=(4, 300)), axis=1) * 0.1 + rng.normal(size=(4, 300))
    for x in (rng.normal(size=(2, 500)), walk, rng.standard_t(3, size=(3, 400))):
        assert split_rhat(x) == pytest.approx(float(az.rhat(x, method="rank")), rel=1e-10)
        assert ess_bulk(x) == pytest.approx(float(az.ess(x, method="bulk")), rel=0.03)
        assert ess_tail(x) == pytest.approx(float(az.ess(x, method="tail")), rel=0.03)


def test_average_ranks_equal_scipys_with_ties(rng):
    """The ranks of the rank plots and rank-normalized R-hat, without importing scipy.stats (seconds)."""
    from scipy.stats import rankdata

    from pho.diagnostics import _average_ranks

    x = np.round(rng.normal(size=500), 1)  # many ties, as repeated MCMC draws give
    assert np.array_equal(_average_ranks(x), rankdata(x))
    y = rng.normal(size=300)
    assert np.array_equal(_average_ranks(y), rankdata(y))
