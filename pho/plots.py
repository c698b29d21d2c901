"""Figures: data/model/residual/chi panels, corner plot, trace plot, gradient images.

matplotlib is imported only here (never by ``import pho``). Figures are built with
``matplotlib.figure.Figure`` (no pyplot state, no GUI backend), and written atomically when a
path is given. Every function returns the Figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["plot_exposures", "plot_corner", "plot_trace", "plot_chains", "plot_gradients", "save_figure"]


def _figure(width_in: float, height_in: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout=layout)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` atomically (temporary file, then ``os.replace``); returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_exposures(likelihood, theta: np.ndarray, path: str | os.PathLike | None = None, max_exposures: int = 8):
    """Data, model, residual and chi = residual * sqrt(ivar) for each exposure (one row each).

    Parameters
    ----------
    likelihood : pho.Likelihood
    theta : ndarray of shape (P,)
        Parameters of the model shown.
    path : path, optional
        Where to save (PNG, PDF, ... by suffix).
    max_exposures : int
        Show at most this many exposures.
    """
    exposures = list(likelihood.exposures)[:max_exposures]
    models = likelihood.model_images(np.asarray(theta, dtype=float))
    n = len(exposures)
    fig = _figure(11.0, 2.8 * n, layout=None)  # a fixed layout: the constrained one cost ~1 s with 16 colour bars
    axes = fig.subplots(n, 4, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.97, bottom=0.1 / n, top=1 - 0.25 / n, wspace=0.15, hspace=0.25)
    for row, (exposure, model) in enumerate(zip(exposures, models)):
        data = np.asarray(exposure.pixels, dtype=float)
        background = np.broadcast_to(np.asarray(getattr(exposure, "background", 0.0), dtype=float), data.shape)
        model = np.asarray(model, dtype=float)
        good = np.asarray(exposure.ivar) > 0
        if getattr(exposure, "mask", None) is not None:
            good &= ~np.asarray(exposure.mask, dtype=bool)
        resid = np.where(good, data - model, np.nan)
        chi = np.where(good, resid * np.sqrt(np.where(good, exposure.ivar, 0.0)), np.nan)
        lo, hi = np.nanpercentile(np.where(good, data - background, np.nan), [1, 99.8])
        rmax = np.nanpercentile(np.abs(resid), 99.5) or 1.0
        panels = [
            (data - background, "data", "magma", lo, hi),
            (model - background, "model", "magma", lo, hi),
            (resid, "data - model", "RdBu_r", -rmax, rmax),
            (chi, "chi", "RdBu_r", -5, 5),
        ]
        name = getattr(exposure, "name", None) or f"exposure {row}"
        chi2 = float(np.nansum(chi**2))
        for col, (img, title, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(img, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            label = f"{name} ({exposure.band}): {title}" if col == 0 else title
            if col == 3:
                label += f"  chi2/N = {chi2 / max(int(good.sum()), 1):.2f}"
            ax.set_title(label, fontsize=8, y=1.0)
            fig.colorbar(im, ax=ax, shrink=0.8)
    return _finish(fig, path)


def _short(name: str) -> str:
    return name.replace("flux_", "f_")


def plot_corner(
    posterior,
    path: str | os.PathLike | None = None,
    names: list[str] | None = None,
    truths: dict | None = None,
    bins: int = 30,
):
    """Corner plot of the weighted posterior samples: 1-d histograms on the diagonal, 2-d
    histograms below, the 16/50/84 percentiles dashed, optional truth values in blue.

    Parameters
    ----------
    posterior : pho.sample.SampleResult
    path : path, optional
    names : list of str, optional
        Parameters to show (default all; more than ~12 makes an unreadable figure).
    truths : dict, optional
        ``name -> value`` to mark.
    bins : int
    """
    names = list(posterior.names if names is None else names)
    idx = [posterior.names.index(n) for n in names]
    x = posterior.samples[:, idx].copy()
    w = posterior.weights
    k = len(names)
    # Shown in readable units: ra/dec as arcsec offsets from the median (east, north), angles
    # wrapped to within pi/2 of the median.
    summary, truths_shown, labels = {}, {}, []
    for j, name in enumerate(names):
        s = dict(posterior.summary[name])
        kind = name.split(".", 1)[-1]
        med = s["median"]
        if kind in ("ra", "dec"):
            dec_name = name.rsplit(".", 1)[0] + ".dec"
            cosd = np.cos(np.radians(posterior.summary.get(dec_name, {"median": 0.0})["median"])) if kind == "ra" else 1.0
            f = lambda v, med=med, c=cosd: (np.asarray(v) - med) * 3600.0 * c  # noqa: E731
            labels.append(_short(name).replace(".ra", ".dra").replace(".dec", ".ddec") + ' ["]')
        elif kind == "pa":
            f = lambda v, med=med: med + (np.asarray(v) - med + np.pi / 2) % np.pi - np.pi / 2  # noqa: E731
            labels.append(_short(name))
        else:
            f = lambda v: np.asarray(v)  # noqa: E731
            labels.append(_short(name))
        x[:, j] = f(x[:, j])
        summary[name] = {key: float(f(s[key])) for key in ("median", "p16", "p84")}
        if truths and name in truths:
            truths_shown[name] = float(f(truths[name]))
    truths = truths_shown
    fig = _figure(1.7 * k + 1, 1.7 * k + 1, layout=None)
    grid = fig.add_gridspec(k, k, left=0.08, bottom=0.08, right=0.98, top=0.96, wspace=0.08, hspace=0.08)
    # only the panels on and below the diagonal are made (each Axes costs ~10-20 ms to set up)
    axes = {(r, c): fig.add_subplot(grid[r, c]) for r in range(k) for c in range(r + 1)}
    ranges = []
    for j, name in enumerate(names):
        s = summary[name]
        width = max(s["p84"] - s["p16"], 1e-300)
        ranges.append((s["median"] - 3 * width, s["median"] + 3 * width))
    for (r, c), ax in axes.items():  # row by row, the diagonal last in each
        if r == c:
            ax.hist(x[:, c], bins=bins, range=ranges[c], weights=w, histtype="step", color="k")
            s = summary[names[c]]
            for v in (s["p16"], s["median"], s["p84"]):
                ax.axvline(v, ls="--", color="0.4", lw=0.8)
            ax.set_yticks([])
            ax.set_title(labels[c], fontsize=7, y=1.0)
        else:
            h, xe, ye = np.histogram2d(x[:, c], x[:, r], bins=bins, range=[ranges[c], ranges[r]], weights=w)
            ax.pcolormesh(xe, ye, h.T, cmap="Greys", shading="flat")
            if truths and names[r] in truths:
                ax.axhline(truths[names[r]], color="tab:blue", lw=0.8)
        if truths and names[c] in truths:
            ax.axvline(truths[names[c]], color="tab:blue", lw=0.8)
        ax.tick_params(labelsize=5)
        ax.locator_params(nbins=4)  # small panels: a few ticks read better, and each costs ~1 ms to draw
        if r < k - 1:
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel(labels[c], fontsize=6)
        if c > 0 and r != c:
            ax.tick_params(labelleft=False)
        elif r != c:
            ax.set_ylabel(labels[r], fontsize=6)
    return _finish(fig, path)


def plot_trace(posterior, path: str | os.PathLike | None = None, names: list[str] | None = None):
    """Nested-sampling trace: each parameter (and ln L) against ln X, the log prior volume
    enclosed at that iteration, points shaded by posterior weight.

    Parameters
    ----------
    posterior : pho.sample.SampleResult
    path : path, optional
    names : list of str, optional
    """
    names = list(posterior.names if names is None else names)
    res = posterior.results
    if res is not None and hasattr(res, "logvol"):
        lnx = np.asarray(res.logvol, dtype=float)
    else:
        lnx = -np.arange(len(posterior.weights), dtype=float) / max(int(posterior.settings.get("nlive", 1)), 1)
    shade = posterior.weights / posterior.weights.max()
    rows = len(names) + 1
    fig = _figure(7.0, 1.3 * rows + 0.5)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].scatter(-lnx, posterior.logl, c=shade, cmap="viridis", s=2)
    top = posterior.logl.max()
    axes[0].set_ylim(top - 5 * max(len(names), 1) - 10, top + 2)
    axes[0].set_ylabel("ln L", fontsize=7)
    for ax, name in zip(axes[1:], names):
        j = posterior.names.index(name)
        ax.scatter(-lnx, posterior.samples[:, j], c=shade, cmap="viridis", s=2)
        ax.set_ylabel(_short(name), fontsize=7)
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("-ln X (prior volume)")
    return _finish(fig, path)


def plot_chains(posterior, path: str | os.PathLike | None = None, names: list[str] | None = None, bins: int = 20):
    """MCMC chains (:func:`pho.sample_nuts`): per parameter, the trace of every chain (left) and the
    histogram of each chain's ranks among all draws (right, Vehtari et al. 2021). Chains that sample
    the same distribution have flat, overlapping rank histograms; a chain stuck elsewhere shows as a
    histogram piled at one end. Divergent draws are marked with red ticks on the traces.

    Parameters
    ----------
    posterior : pho.sample.SampleResult
        From :func:`pho.sample_nuts` (``posterior.results["chains"]`` of shape (C, D, P)).
    path : path, optional
        Where to save the figure.
    names : list of str, optional
        Parameters to show (default all).
    bins : int
        Rank histogram bins.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    PhoValueError
        ``posterior`` has no chains (a nested-sampling result: use :func:`plot_trace`).
    """
    from .diagnostics import _average_ranks
    from .errors import PhoValueError

    res = posterior.results
    if not isinstance(res, dict) or "chains" not in res:
        raise PhoValueError("plot_chains needs an MCMC result (pho.sample_nuts); for nested sampling use plot_trace")
    chains = np.asarray(res["chains"], dtype=float)
    divergent = np.asarray(res.get("divergent", np.zeros(chains.shape[:2], bool)), dtype=bool)
    names = list(posterior.names if names is None else names)
    n_chains, n_draws = chains.shape[:2]
    height = 1.2 * len(names) + 0.6
    # A fixed layout: the constrained one took ~2.5 s of a 20-parameter figure's ~4 s.
    fig = _figure(8.0, height, layout=None)
    axes = fig.subplots(len(names), 2, squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    fig.subplots_adjust(left=0.14, right=0.98, bottom=0.45 / height, top=1 - 0.25 / height, hspace=0.45, wspace=0.05)
    colors = [f"C{c % 10}" for c in range(n_chains)]
    for row, name in enumerate(names):
        j = posterior.names.index(name)
        x = chains[:, :, j]
        ax = axes[row, 0]
        for c in range(n_chains):
            ax.plot(np.arange(n_draws), x[c], lw=0.5, color=colors[c], alpha=0.8)
            bad = np.flatnonzero(divergent[c])
            if bad.size:
                ax.plot(bad, x[c, bad], "|", color="red", ms=6)
        ax.set_ylabel(_short(name), fontsize=7)
        ax.tick_params(labelsize=6, labelbottom=row == len(names) - 1)  # x labels on the bottom row only
        ax.locator_params(axis="y", nbins=3)
        ax.ticklabel_format(axis="y", useOffset=False)  # ra, dec in full: an offset label would overlap the row above
        ranks = _average_ranks(x.ravel()).reshape(x.shape)
        edges = np.linspace(0.5, x.size + 0.5, bins + 1)
        axr = axes[row, 1]
        for c in range(n_chains):
            axr.stairs(np.histogram(ranks[c], bins=edges)[0], edges, color=colors[c])
        axr.axhline(n_draws / bins, color="k", lw=0.5, ls=":")
        axr.set_yticks([])
        axr.tick_params(labelsize=6, labelbottom=row == len(names) - 1)
        d = posterior.diagnostics.get(name) if posterior.diagnostics else None
        if d:
            axr.set_title(f"R-hat {d['rhat']:.3f}, ESS {d['ess_bulk']:.0f}", fontsize=6, y=1.0)
    axes[-1, 0].set_xlabel("draw (after warm-up)")
    axes[-1, 1].set_xlabel("rank")
    return _finish(fig, path)


def plot_gradients(
    likelihood,
    theta: np.ndarray,
    source_index: int = 0,
    exposure_index: int = 0,
    path: str | os.PathLike | None = None,
):
    """Images of d(model)/d(parameter) for every parameter of one source in one exposure (the
    seed's Figures 4 and 5), each scaled to its own symmetric colour range.

    Parameters
    ----------
    likelihood : pho.Likelihood
    theta : ndarray of shape (P,)
    source_index, exposure_index : int
    path : path, optional
    """
    theta = np.asarray(theta, dtype=float)
    names = list(likelihood.parameter_names)
    idx = [j for j, n in enumerate(names) if n.split(".", 1)[0] == f"s{source_index}"]
    if not idx:
        from .errors import PhoValueError

        raise PhoValueError(f"source_index={source_index}: the scene has no source s{source_index}")
    grads = np.asarray(likelihood.gradient_images(theta, exposure_index), dtype=float)
    model = np.asarray(likelihood.model_images(theta)[exposure_index], dtype=float)
    n = len(idx) + 1
    ncol = min(n, 4)
    nrow = (n + ncol - 1) // ncol
    fig = _figure(3.0 * ncol, 2.8 * nrow, layout=None)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    fig.subplots_adjust(left=0.02, right=0.96, bottom=0.1 / nrow, top=1 - 0.3 / nrow, wspace=0.15, hspace=0.25)
    im = axes[0].imshow(model, origin="lower", cmap="magma", interpolation="nearest")
    axes[0].set_title(f"model, exposure {exposure_index}", fontsize=8, y=1.0)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    for ax, j in zip(axes[1:], idx):
        g = grads[j]
        vmax = np.max(np.abs(g)) or 1.0
        im = ax.imshow(g, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"d model / d {names[j]}", fontsize=8, y=1.0)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    return _finish(fig, path)
