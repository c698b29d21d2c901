"""Convergence diagnostics of MCMC chains: rank-normalized split R-hat and effective sample sizes.

The definitions are those of Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-
normalization, folding, and localization: an improved R-hat for assessing convergence of MCMC",
Bayesian Analysis 16, 667:

- every chain is split in halves (so a drifting chain disagrees with itself);
- the draws are replaced by the normal scores of their ranks over all chains (rank normalization),
  so heavy tails do not hide disagreement;
- ``rhat`` is the larger of the split R-hat of the rank-normalized draws and of the rank-normalized
  distance from the median (folding: catches chains with equal locations but different scales);
- ``ess_bulk`` is the effective sample size of the rank-normalized draws, ``ess_tail`` the smaller of
  the effective sample sizes of the indicators ``x <= q05`` and ``x >= q95``;
- an effective sample size uses the autocorrelations combined over chains and Geyer's initial
  monotone sequence to truncate their sum.

ArviZ (``arviz.rhat``, ``arviz.ess``) implements the same; pho does not need it.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PhoValueError

__all__ = ["split_rhat", "ess_bulk", "ess_tail", "summarize_chains"]


def _as_chains(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise PhoValueError(f"chains must have shape (chains, draws), got {x.shape}")
    if x.shape[1] < 4:
        raise PhoValueError(f"need at least 4 draws per chain for diagnostics, got {x.shape[1]}")
    return x


def _split(x: np.ndarray) -> np.ndarray:
    """(C, N) -> (2C, N // 2): first and second half of every chain (the middle draw of an odd N dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span (scipy.stats.rankdata's "average",
    without importing scipy.stats, which takes seconds)."""
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    new = np.concatenate([[True], ranked[1:] != ranked[:-1]])
    starts = np.flatnonzero(new)  # first 0-based position of each distinct value
    ends = np.concatenate([starts[1:], [len(values)]])
    group = np.cumsum(new) - 1
    out = np.empty(len(values))
    out[order] = 0.5 * (starts[group] + 1 + ends[group])
    return out


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Normal scores of the (average-tie) ranks over all chains: ndtri((r - 3/8) / (S + 1/4))."""
    from scipy.special import ndtri  # here, not at import: keeps ``import pho`` light

    flat = x.ravel()
    ranks = _average_ranks(flat)
    return ndtri((ranks - 0.375) / (flat.size + 0.25)).reshape(x.shape)


def _rhat_plain(x: np.ndarray) -> float:
    """Gelman-Rubin R-hat of chains ``x`` (C, N) (no splitting)."""
    n = x.shape[1]
    means = x.mean(axis=1)
    within = x.var(axis=1, ddof=1).mean()
    between = n * means.var(ddof=1) if x.shape[0] > 1 else 0.0
    if within <= 0:
        return math.nan if between > 0 else 1.0
    var_plus = (n - 1) / n * within + between / n
    return float(math.sqrt(var_plus / within))


def split_rhat(x) -> float:
    """Rank-normalized, folded split R-hat of chains ``x``.

    Parameters
    ----------
    x : array_like of shape (C, N) or (N,)
        C chains of N draws of one scalar.

    Returns
    -------
    float
        About 1 for converged chains; above 1.01 says the chains have not mixed (Vehtari et al. 2021).
        NaN when every draw is the same.
    """
    x = _split(_as_chains(x))
    if np.ptp(x) == 0:
        return math.nan
    bulk = _rhat_plain(_rank_normalize(x))
    folded = _rhat_plain(_rank_normalize(np.abs(x - np.median(x))))
    return float(max(bulk, folded))


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Autocovariance of each chain (C, N) at lags 0..N-1 (biased estimator, divided by N), via FFT."""
    n = x.shape[1]
    size = 1 << int(math.ceil(math.log2(2 * n)))
    centred = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n]
    return acov / n


def _ess(x: np.ndarray) -> float:
    """Effective sample size of chains ``x`` (C, N) (Stan's estimator, Geyer's monotone sequence)."""
    m, n = x.shape
    if np.ptp(x) == 0:
        return math.nan
    acov = _autocovariance(x)
    chain_var = acov[:, 0] * n / (n - 1.0)
    mean_var = chain_var.mean()
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus += x.mean(axis=1).var(ddof=1)
    rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sum autocorrelations in pairs while the pair sums stay positive, forced non-increasing.
    # The first even lag whose pair is not positive still adds its own autocorrelation once, if positive
    # (Stan's refinement of Geyer's truncation, which reduces its bias for slowly mixing chains).
    t = 0
    pairs = []
    while t + 1 < n - 2:
        p = rho[t] + rho[t + 1]
        if p < 0:
            break
        if pairs and p > pairs[-1]:
            p = pairs[-1]
        pairs.append(p)
        t += 2
    tau = -1.0 + 2.0 * float(np.sum(pairs))
    if t < n and rho[t] > 0 and t > 0 and rho[t] + rho[min(t + 1, n - 1)] < 0:
        tau += float(rho[t])
    tau = max(tau, 1.0 / math.log10(m * n))  # antithetic chains: cap the ESS at N log10(N)
    return float(m * n / tau)


def ess_bulk(x) -> float:
    """Bulk effective sample size: the ESS of the rank-normalized split chains.

    Parameters
    ----------
    x : array_like of shape (C, N) or (N,)

    Returns
    -------
    float
        Effective number of independent draws for estimates of the centre (mean, median).
    """
    x = _split(_as_chains(x))
    return _ess(_rank_normalize(x))


def ess_tail(x) -> float:
    """Tail effective sample size: the smaller ESS of the indicators ``x <= q05`` and ``x >= q95``.

    Parameters
    ----------
    x : array_like of shape (C, N) or (N,)

    Returns
    -------
    float
        Effective number of independent draws for the 5% and 95% quantiles.
    """
    x = _split(_as_chains(x))
    q05, q95 = np.quantile(x, [0.05, 0.95])
    lo = _ess((x <= q05).astype(float))
    hi = _ess((x >= q95).astype(float))
    both = [v for v in (lo, hi) if not math.isnan(v)]
    return float(min(both)) if both else math.nan


def summarize_chains(chains, names) -> dict:
    """Diagnostics of every parameter.

    Parameters
    ----------
    chains : ndarray of shape (C, N, P)
        C chains of N draws of P parameters.
    names : sequence of str, length P

    Returns
    -------
    dict
        ``name -> {"rhat", "ess_bulk", "ess_tail"}``.
    """
    chains = np.asarray(chains, dtype=float)
    if chains.ndim != 3 or chains.shape[2] != len(names):
        raise PhoValueError(f"chains must have shape (C, N, {len(names)}), got {chains.shape}")
    return {
        name: {
            "rhat": split_rhat(chains[:, :, i]),
            "ess_bulk": ess_bulk(chains[:, :, i]),
            "ess_tail": ess_tail(chains[:, :, i]),
        }
        for i, name in enumerate(names)
    }
