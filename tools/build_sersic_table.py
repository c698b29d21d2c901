"""Build pho's Sersic mixture table: amplitudes of fixed-radius Gaussians on an (n, r_h) grid.

A Sersic profile of index n and half-light radius r_h is approximated by M zero-mean circular
Gaussians of fixed radii r_m (one of them zero: a point), with amplitudes a_m(n, r_h) that sum
to one. All lengths are in one dimensionless *table unit*; the run-time loader
(``pho.sersic``) multiplies them by ``scale_arcsec`` (default 0.03", one JWST/HST drizzled
pixel), so one table serves any pixel scale.

Method (docs/sersic_tables.md has the reasoning and the measured accuracy)
-------------------------------------------------------------------------
* Target: the exact Sersic profile (unit total flux, untruncated) convolved numerically with a
  circular Gaussian of sigma ``--smoothing`` (table units). The mixture is convolved with the
  same Gaussian before it is compared (component variance r_m^2 + sigma_s^2), so the fit
  matches the Sersic profile *as seen through* that small Gaussian; the shipped radii r_m are
  the unsmoothed ones and the smoothing adds no width to the model.
* Merit, per grid point: (1) fractional surface-brightness error sampled uniformly in ln r,
  with a floor of ``FLOOR_REL`` x I(r_h) in the denominator and a smooth taper beyond
  ~6 r_h; (2) enclosed-flux error (unsmoothed profiles) sampled in ln R out to the reach of the
  widest Gaussian, in units of ``FLUX_TOL``; (3) a third-difference penalty on a_m along ln r_m
  (smooth in radius) and a tiny ridge; subject to sum(a) = 1 exactly (KKT solve). Amplitudes may
  be negative. The solution of this fixed, well-conditioned linear problem is a smooth function
  of (n, r_h), so the table is smooth across the grid and splines well.
* Output: ``tables/sersic_mixture.npz`` with the grids, radii, amplitudes, the smoothing and
  the build parameters (JSON), written atomically with fixed zip timestamps, so the same
  command gives the same bytes.

Run ``python tools/build_sersic_table.py --help``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.special import gamma, gammainc, gammaincinv, i0e

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = REPO / "tables" / "sersic_mixture.npz"
DEFAULT_FIGURE = REPO / "docs" / "sersic_mixture.png"

#: Floor of the fractional merit's denominator, relative to the target at r = r_h.
FLOOR_REL = 1e-4
#: Enclosed-flux residuals are measured in units of this.
FLUX_TOL = 1e-3
#: Radii (table units) where the surface brightness is sampled for the fit: 0 plus these.
FIT_R_LO, FIT_R_HI, FIT_K = 0.4, 2.0e4, 320
#: Radii (table units) where the enclosed flux is sampled for the fit.
ENC_R_LO, ENC_R_HI, ENC_K = 0.5, 2.0e4, 60
#: Beyond TAPER_RH x r_h the surface-brightness weight falls off as a power TAPER_POW.
TAPER_RH, TAPER_POW = 6.0, 8
#: Inner edge of the radial range where accuracy is reported (table units: 0.015" at 0.03"/unit).
REPORT_R_LO = 0.5
#: Outer edge of that range, in units of r_h.
REPORT_RH_HI = 4.0

_GL_X, _GL_W = leggauss(96)
_LOG_T = np.linspace(np.log(1e-10), 0.0, 1200)


# ---------------------------------------------------------------------------------------------
# Sersic profiles
# ---------------------------------------------------------------------------------------------
def sersic_b(n: float) -> float:
    """b_n such that r_h encloses half the light (exact, via the inverse incomplete gamma)."""
    return float(gammaincinv(2.0 * n, 0.5))


def sersic_sb(r: np.ndarray, n: float, rh: float) -> np.ndarray:
    """Surface brightness of a unit-flux Sersic profile at radius ``r`` (same unit as ``rh``)."""
    b = sersic_b(n)
    i0 = b ** (2 * n) / (2 * np.pi * n * rh**2 * gamma(2 * n))
    return i0 * np.exp(-b * (np.asarray(r, float) / rh) ** (1.0 / n))


def sersic_enclosed(r: np.ndarray, n: float, rh: float) -> np.ndarray:
    """Fraction of a Sersic profile's total flux inside radius ``r``."""
    return gammainc(2 * n, sersic_b(n) * (np.asarray(r, float) / rh) ** (1.0 / n))


def _radial_kernel(r: np.ndarray, rp: np.ndarray, sigma: float) -> np.ndarray:
    """Kernel K(r, r') with (f * G_sigma)(r) = int f(r') K(r, r') dr' for circular f."""
    arg = r * rp / sigma**2
    return rp / sigma**2 * np.exp(-((r - rp) ** 2) / (2 * sigma**2)) * i0e(arg)


def smoothed_sersic_sb(r: np.ndarray, n: float, rh: float, sigma: float) -> np.ndarray:
    """Unit-flux Sersic profile convolved with a circular Gaussian of ``sigma`` (exact quadrature).

    For r <= 8 sigma the radial integral runs over r' in [1e-10 R, R], R = r + 8 sigma, with the
    trapezoid rule in ln r' (1200 nodes; it resolves the cusp of large n); further out, over
    |r' - r| <= 8 sigma with 96-node Gauss-Legendre. Relative accuracy ~1e-6 (the flux of the
    result integrates to one within 2e-6 for n in [0.5, 6]).
    """
    r = np.atleast_1d(np.asarray(r, float))
    out = np.empty_like(r)
    inner = r <= 8 * sigma
    ri = r[inner]
    if ri.size:
        rmax = ri + 8 * sigma
        rp = rmax[:, None] * np.exp(_LOG_T)[None, :]
        f = sersic_sb(rp, n, rh) * _radial_kernel(ri[:, None], rp, sigma) * rp
        out[inner] = np.trapezoid(f, _LOG_T, axis=1)
    ro = r[~inner]
    if ro.size:
        rp = ro[:, None] + 8 * sigma * _GL_X[None, :]
        f = sersic_sb(rp, n, rh) * _radial_kernel(ro[:, None], rp, sigma)
        out[~inner] = (f * _GL_W[None, :]).sum(axis=1) * 8 * sigma
    return out


# ---------------------------------------------------------------------------------------------
# Gaussian mixtures
# ---------------------------------------------------------------------------------------------
def mixture_radii(n_gauss: int, r_min: float, r_max: float, r_knee: float | None = None, n_outer: int = 0) -> np.ndarray:
    """Radii (table units) of an M-Gaussian mixture.

    0 (a point), then M - 1 - n_outer radii log-spaced in [r_min, r_knee], then n_outer radii
    log-spaced in (r_knee, r_max]. With n_outer = 0: M - 1 radii log-spaced in [r_min, r_max].
    The inner radii are dense because every profile of the grid needs them (a Gaussian-like
    n < 1 profile most); the few outer ones only carry the far wings of large n at large r_h,
    which are smooth in ln r and need no dense sampling.
    """
    if n_outer == 0:
        return np.concatenate([[0.0], np.geomspace(r_min, r_max, n_gauss - 1)])
    inner = np.geomspace(r_min, r_knee, n_gauss - 1 - n_outer)
    outer = np.geomspace(r_knee, r_max, n_outer + 1)[1:]
    return np.concatenate([[0.0], inner, outer])


def gaussian_sb(r: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """(K, M) unit-flux circular Gaussians of the given variances at radii r (K,)."""
    v = np.asarray(variances, float)[None, :]
    return np.exp(-np.asarray(r, float)[:, None] ** 2 / (2 * v)) / (2 * np.pi * v)


def gaussian_enclosed(r: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(K, M) fraction of each unit-flux Gaussian inside radius r (a zero radius is a point)."""
    r = np.asarray(r, float)[:, None]
    s2 = np.asarray(radii, float)[None, :] ** 2
    with np.errstate(divide="ignore"):
        inside = -np.expm1(-(r**2) / (2 * np.where(s2 > 0, s2, 1.0)))
    return np.where(s2 > 0, inside, np.where(r > 0, 1.0, 0.0))


def fit_amplitudes(n: float, rh: float, radii: np.ndarray, sigma: float, lam: float, ridge: float) -> np.ndarray:
    """Amplitudes (M,) of the mixture for one (n, r_h); all lengths in table units.

    See the module docstring for the merit function. The equality constraint sum(a) = 1 is
    imposed exactly by solving the KKT system of the regularized least-squares problem.
    """
    m = radii.size
    r = np.concatenate([[0.0], np.geomspace(FIT_R_LO, FIT_R_HI, FIT_K)])
    target = smoothed_sersic_sb(r, n, rh, sigma)
    floor = FLOOR_REL * smoothed_sersic_sb(np.array([rh]), n, rh, sigma)[0]
    # uniform weight per unit ln r; the r = 0 sample stands for the core; taper beyond ~6 r_h
    dlnr = np.log(FIT_R_HI / FIT_R_LO) / (FIT_K - 1)
    r_taper = np.hypot(TAPER_RH * rh, 4.0 * sigma)
    w = np.sqrt(dlnr) / np.sqrt(1.0 + (r / r_taper) ** TAPER_POW)
    w[0] = np.sqrt(3 * dlnr)
    rows = [gaussian_sb(r, radii**2 + sigma**2) * (w / (target + floor))[:, None]]
    rhs = [w * target / (target + floor)]
    big_r = np.geomspace(ENC_R_LO, ENC_R_HI, ENC_K)
    wf = np.sqrt(np.log(ENC_R_HI / ENC_R_LO) / (ENC_K - 1)) / FLUX_TOL
    rows.append(gaussian_enclosed(big_r, radii) * wf)
    rhs.append(sersic_enclosed(big_r, n, rh) * wf)
    d3 = np.diff(np.eye(m - 1), 3, axis=0)
    rows.append(np.sqrt(lam) * np.hstack([np.zeros((d3.shape[0], 1)), d3]))
    rhs.append(np.zeros(d3.shape[0]))
    rows.append(np.sqrt(ridge) * np.eye(m))
    rhs.append(np.zeros(m))
    a_mat, b_vec = np.vstack(rows), np.concatenate(rhs)
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = a_mat.T @ a_mat
    kkt[:m, m] = kkt[m, :m] = 1.0
    sol = np.linalg.solve(kkt, np.concatenate([a_mat.T @ b_vec, [1.0]]))
    return sol[:m]


def build_amplitudes(n_grid, rh_grid, radii, sigma, lam, ridge, progress=True) -> np.ndarray:
    """Fit every grid point; returns amplitudes of shape (Nn, Nr, M). Prints progress to stderr."""
    amps = np.empty((n_grid.size, rh_grid.size, radii.size))
    t0 = time.time()
    for i, n in enumerate(n_grid):
        for j, rh in enumerate(rh_grid):
            amps[i, j] = fit_amplitudes(float(n), float(rh), radii, sigma, lam, ridge)
        if progress:
            done = (i + 1) / n_grid.size
            el = time.time() - t0
            print(f"  fitted n = {n:.3f} ({i + 1}/{n_grid.size}), {el:.0f} s elapsed, ~{el / done - el:.0f} s left",
                  file=sys.stderr, flush=True)
    return amps


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------
def surface_brightness_error(a, n, rh, radii, sigma, n_r=200):
    """Fractional error of the smoothed mixture against the smoothed Sersic profile.

    Compared over r in [REPORT_R_LO, REPORT_RH_HI * r_h] (table units), both convolved with the
    build's smoothing Gaussian. Returns (r, frac) or (None, None) when the range is empty.
    """
    hi = REPORT_RH_HI * rh
    if hi <= REPORT_R_LO:
        return None, None
    r = np.geomspace(REPORT_R_LO, hi, n_r)
    target = smoothed_sersic_sb(r, n, rh, sigma)
    model = gaussian_sb(r, radii**2 + sigma**2) @ a
    return r, model / target - 1.0


def accuracy_summary(amps, n_vals, rh_vals, radii, sigma):
    """Worst and median of max |fractional SB error| per (n, r_h); also worst for n >= 1."""
    worst = np.full((len(n_vals), len(rh_vals)), np.nan)
    for i, n in enumerate(n_vals):
        for j, rh in enumerate(rh_vals):
            _, frac = surface_brightness_error(amps[i, j], n, rh, radii, sigma)
            if frac is not None:
                worst[i, j] = np.abs(frac).max()
    return worst


def check_table(path: Path) -> dict:
    """Accuracy of a written table through pho's run-time spline, at every cell centre.

    Loads the table with ``pho.sersic.SersicTable`` (scale 1: arcsec = table units), evaluates
    the spline at the centre of every (n, ln r_h) cell, and prints the worst fractional
    surface-brightness error over r in [REPORT_R_LO, REPORT_RH_HI r_h] for bands of n.
    """
    from pho.sersic import SersicTable

    table = SersicTable.load(path, scale_arcsec=1.0)
    ng, lg = table._n_grid, table._ln_rh_grid
    n_c = 0.5 * (ng[1:] + ng[:-1])
    rh_c = np.exp(0.5 * (lg[1:] + lg[:-1]))
    radii, sigma = table.radii_arcsec, table.smoothing_sigma
    worst = np.full((n_c.size, rh_c.size), np.nan)
    where = {}
    t0 = time.time()
    for i, n in enumerate(n_c):
        a_all, _, _ = table.amplitudes(np.full(rh_c.size, n), rh_c)
        for j, rh in enumerate(rh_c):
            r, frac = surface_brightness_error(a_all[j], n, rh, radii, sigma)
            if frac is not None:
                k = np.argmax(np.abs(frac))
                worst[i, j] = abs(frac[k])
                where[i, j] = r[k] / rh
        print(f"  checked n = {n:.4f} ({i + 1}/{n_c.size}), {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    bands = [(0.5, 0.75), (0.75, 1.0), (1.0, 1.5), (1.5, 2.5), (2.5, 4.0), (4.0, 6.0)]
    print(f"cell centres of {path}: max |fractional SB error| over r in [{REPORT_R_LO}, {REPORT_RH_HI} r_h] "
          f"(table units), smoothed mixture vs smoothed Sersic (sigma = {sigma})")
    print("n band         cells  median    worst    worst at (n, r_h, r/r_h)")
    out = {}
    for lo, hi in bands + [(1.0, 6.0), (0.5, 6.0)]:
        sel = (n_c >= lo) & (n_c < hi)
        w = worst[sel]
        if not np.isfinite(w).any():
            continue
        k = np.unravel_index(np.nanargmax(w), w.shape)
        ii = np.flatnonzero(sel)[k[0]]
        out[(lo, hi)] = (float(np.nanmedian(w)), float(np.nanmax(w)))
        print(f"[{lo:4.2f}, {hi:4.2f})  {np.isfinite(w).sum():6d}  {np.nanmedian(w) * 100:6.3f}%  {np.nanmax(w) * 100:7.2f}%"
              f"   ({n_c[ii]:.3f}, {rh_c[k[1]]:.3g}, {where[ii, k[1]]:.2f})")
    negative_wings(table)
    return out


def negative_wings(table) -> None:
    """Print, per band of n, where the smoothed mixture first dips below zero at the grid nodes
    (r up to 3000 table units) and its most negative value relative to its central value."""
    radii, sigma = table.radii_arcsec, table.smoothing_sigma
    r = np.concatenate([[0.0], np.geomspace(0.01, 3000.0, 800)])
    g = gaussian_sb(r, radii**2 + sigma**2)
    ng, rg = table._n_grid, np.exp(table._ln_rh_grid)
    rows = []
    for i, n in enumerate(ng):
        prof = g @ table._amps[i].T  # (K, Nr)
        for j, rh in enumerate(rg):
            neg = prof[:, j] < 0
            if neg.any():
                rows.append((n, rh, prof[:, j].min() / prof[0, j], r[np.argmax(neg)] / rh))
    rows = np.array(rows).reshape(-1, 4)
    print("negative far wings at the grid nodes (smoothed mixture, r <= 3000 units)")
    print("n band         nodes  first negative r / r_h (min)  most negative / central value")
    for lo, hi in [(0.5, 0.75), (0.75, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.01)]:
        sel = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if sel.any():
            print(f"[{lo:4.2f}, {hi:4.2f})  {sel.sum():6d}  {rows[sel, 3].min():12.1f}"
                  f"                  {rows[sel, 2].min():.1e}")


def tradeoff(ms, r_min, r_max, r_knee, n_outer, sigma, lam, ridge):
    """Accuracy against M on a coarse grid of direct fits; prints a table and returns rows."""
    n_vals = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0])
    rh_vals = np.geomspace(0.15, 40.0, 9)
    rows = []
    print("M   median    worst(all n)  worst(n>=0.75)  worst(n>=1)  worst at (n, r_h)", flush=True)
    for m in ms:
        radii = mixture_radii(m, r_min, r_max, r_knee, min(n_outer, m - 4))
        amps = build_amplitudes(n_vals, rh_vals, radii, sigma, lam, ridge, progress=False)
        worst = accuracy_summary(amps, n_vals, rh_vals, radii, sigma)
        k = np.unravel_index(np.nanargmax(worst), worst.shape)
        row = dict(M=m, median=float(np.nanmedian(worst)), worst=float(np.nanmax(worst)),
                   worst_n075=float(np.nanmax(worst[n_vals >= 0.75])), worst_n1=float(np.nanmax(worst[n_vals >= 1])),
                   at=(float(n_vals[k[0]]), float(rh_vals[k[1]])))
        rows.append(row)
        print(f"{m:<3d} {row['median']*100:6.3f}%  {row['worst']*100:9.2f}%  {row['worst_n075']*100:12.2f}%"
              f"  {row['worst_n1']*100:9.2f}%   ({row['at'][0]:.2f}, {row['at'][1]:.2f})", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def write_npz_atomic(path: Path, arrays: dict) -> None:
    """Write an .npz with fixed zip timestamps (reproducible bytes), via a temp file + os.replace."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def make_figure(path: Path, radii, sigma, lam, ridge, cases=((1.0, 3.0), (4.0, 10.0), (6.0, 1.0), (0.5, 5.0))):
    """Seed-Figure-3-style figure: profile + mixture, fractional residual, cumulative flux."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(cases), figsize=(3.0 * len(cases), 7.0), sharex="col",
                             gridspec_kw=dict(height_ratios=[2, 1, 1]), squeeze=False)
    for col, (n, rh) in enumerate(cases):
        a = fit_amplitudes(n, rh, radii, sigma, lam, ridge)
        r = np.geomspace(0.1, 6 * rh, 300)
        target = smoothed_sersic_sb(r, n, rh, sigma)
        comps = gaussian_sb(r, radii**2 + sigma**2) * a[None, :]
        model = comps.sum(axis=1)
        ax = axes[0, col]
        ax.loglog(r, target, "k-", lw=2, label="Sersic (smoothed)")
        ax.loglog(r, model, "C1--", lw=1.5, label=f"mixture, M={radii.size}")
        for m in range(radii.size):
            if a[m] > 0:
                ax.loglog(r, comps[:, m], color="0.7", lw=0.6)
        ax.set_ylim(target.min() * 0.3, target.max() * 3)
        ax.set_title(f"n = {n:g}, r_h = {rh:g} ({rh * 0.03:.2g}\" at 0.03\")", fontsize=9)
        if col == 0:
            ax.set_ylabel("surface brightness")
            ax.legend(fontsize=7, loc="lower left")
        ax = axes[1, col]
        ax.semilogx(r, (model / target - 1) * 100, "C1-")
        ax.axhline(0, color="k", lw=0.5)
        for sgn in (-1, 1):
            ax.axhline(sgn, color="0.6", lw=0.5, ls=":")
        ax.axvspan(REPORT_R_LO, REPORT_RH_HI * rh, color="C0", alpha=0.08)  # the range the accuracy is quoted over
        ax.set_ylim(-2, 2)
        if col == 0:
            ax.set_ylabel("mixture / Sersic - 1 (%)")
        ax = axes[2, col]
        rr = np.geomspace(0.1, 100 * rh, 300)
        ax.semilogx(rr, sersic_enclosed(rr, n, rh), "k-", lw=2)
        ax.semilogx(rr, gaussian_enclosed(rr, radii) @ a, "C1--")
        ax.axvline(rh, color="0.6", lw=0.5)
        ax.set_xlabel("radius (table units)")
        if col == 0:
            ax.set_ylabel("enclosed flux")
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp, dpi=60)
    plt.close(fig)
    os.replace(tmp, path)


def canonical_command(args: argparse.Namespace) -> str:
    """The command that rebuilds this table: every table-determining option, spelled out."""
    parts = ["python tools/build_sersic_table.py",
             f"--n-gauss {args.n_gauss}", f"--r-min {args.r_min!r}", f"--r-max {args.r_max!r}",
             f"--r-knee {args.r_knee!r}", f"--n-outer {args.n_outer}",
             f"--smoothing {args.smoothing!r}", f"--n-range {args.n_range[0]!r} {args.n_range[1]!r}",
             f"--n-step {args.n_step!r}", f"--rh-range {args.rh_range[0]!r} {args.rh_range[1]!r}",
             f"--ln-rh-step {args.ln_rh_step!r}", f"--smooth-weight {args.smooth_weight!r}", f"--ridge {args.ridge!r}"]
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/build_sersic_table.py",
        description="Fit fixed-radius Gaussian mixtures to smoothed Sersic profiles on an (n, r_h) grid "
        "and write pho's Sersic table (lengths in table units; the loader's scale_arcsec converts).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="table file (.npz)")
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE, help="accuracy figure (.png); 'none' to skip")
    p.add_argument("--n-gauss", type=int, default=28, help="number of Gaussians M, including the point")
    p.add_argument("--r-min", type=float, default=0.15, help="smallest nonzero radius (table units)")
    p.add_argument("--r-max", type=float, default=1000.0, help="largest radius (table units)")
    p.add_argument("--r-knee", type=float, default=120.0,
                   help="radius (table units) where the dense inner log-spacing ends")
    p.add_argument("--n-outer", type=int, default=4,
                   help="number of sparser radii beyond --r-knee (0: one log-spacing from --r-min to --r-max)")
    p.add_argument("--smoothing", type=float, default=0.3, help="sigma of the smoothing Gaussian (table units)")
    p.add_argument("--n-range", type=float, nargs=2, default=(0.5, 6.0), metavar=("LO", "HI"), help="Sersic index range")
    p.add_argument("--n-step", type=float, default=0.125, help="grid step in n")
    p.add_argument("--rh-range", type=float, nargs=2, default=(0.05, 40.0), metavar=("LO", "HI"),
                   help="half-light radius range (table units)")
    p.add_argument("--ln-rh-step", type=float, default=0.125, help="grid step in ln r_h")
    p.add_argument("--smooth-weight", type=float, default=1e-4, help="weight of the third-difference penalty on a_m")
    p.add_argument("--ridge", type=float, default=1e-7, help="weight of the ridge penalty on a_m")
    p.add_argument("--tradeoff", type=int, nargs="*", metavar="M",
                   help="instead of building, print accuracy against M for these M on a coarse grid")
    p.add_argument("--check", action="store_true",
                   help="instead of building, report the accuracy of --output through pho's spline at every cell centre")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_gauss < 5:
        parser.error(f"--n-gauss {args.n_gauss} is too small; use at least 5")
    if not (0 < args.r_min < args.r_max):
        parser.error(f"--r-min {args.r_min} and --r-max {args.r_max} must satisfy 0 < r_min < r_max")
    if not (0 <= args.n_outer <= args.n_gauss - 4):
        parser.error(f"--n-outer {args.n_outer} must be between 0 and --n-gauss - 4 = {args.n_gauss - 4}")
    if args.n_outer and not (args.r_min < args.r_knee < args.r_max):
        parser.error(f"--r-knee {args.r_knee} must lie between --r-min {args.r_min} and --r-max {args.r_max}")
    if not (0.2 <= args.n_range[0] < args.n_range[1] <= 10):
        parser.error(f"--n-range {args.n_range} must satisfy 0.2 <= LO < HI <= 10")
    if not (0 < args.rh_range[0] < args.rh_range[1]):
        parser.error(f"--rh-range {args.rh_range} must satisfy 0 < LO < HI")
    if args.tradeoff:
        tradeoff(args.tradeoff, args.r_min, args.r_max, args.r_knee, args.n_outer, args.smoothing,
                 args.smooth_weight, args.ridge)
        return 0
    if args.check:
        if not args.output.exists():
            parser.error(f"--check: {args.output} does not exist; build it first")
        check_table(args.output)
        return 0
    if args.output.exists() and not args.overwrite:
        from pho.errors import NOT_OVERWRITING_MSG

        parser.error(NOT_OVERWRITING_MSG.format(path=args.output))

    n_count = int(round((args.n_range[1] - args.n_range[0]) / args.n_step)) + 1
    n_grid = np.linspace(args.n_range[0], args.n_range[1], n_count)
    ln_lo, ln_hi = np.log(args.rh_range)
    rh_count = int(np.ceil((ln_hi - ln_lo) / args.ln_rh_step - 1e-9)) + 1
    ln_rh_grid = ln_lo + args.ln_rh_step * np.arange(rh_count)  # uniform; last point >= HI
    rh_grid = np.exp(ln_rh_grid)
    radii = mixture_radii(args.n_gauss, args.r_min, args.r_max, args.r_knee, args.n_outer)
    print(f"building {n_grid.size} x {rh_grid.size} grid, M = {radii.size}", file=sys.stderr)
    t0 = time.time()
    amps = build_amplitudes(n_grid, rh_grid, radii, args.smoothing, args.smooth_weight, args.ridge,
                            progress=not args.quiet)
    meta = dict(
        builder="tools/build_sersic_table.py",
        command=canonical_command(args),
        numpy=np.__version__,
        length_unit="table unit; arcsec = table units x scale_arcsec (pho.sersic default 0.03)",
        smoothing_sigma=args.smoothing,
        n_gauss=args.n_gauss, r_min=args.r_min, r_max=args.r_max, r_knee=args.r_knee, n_outer=args.n_outer,
        smooth_weight=args.smooth_weight, ridge=args.ridge,
        floor_rel=FLOOR_REL, flux_tol=FLUX_TOL,
        fit_r=[FIT_R_LO, FIT_R_HI, FIT_K], enclosed_r=[ENC_R_LO, ENC_R_HI, ENC_K], taper=[TAPER_RH, TAPER_POW],
        merit="fractional SB error of smoothed mixture vs smoothed Sersic (uniform in ln r, floor, taper) "
        "+ enclosed-flux error + third-difference penalty on a_m along ln r_m; sum(a) = 1 exactly",
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(args.output, dict(
        n_grid=n_grid, ln_rh_grid=ln_rh_grid, radii=radii, amplitudes=amps,
        smoothing_sigma=np.float64(args.smoothing), meta_json=np.array(json.dumps(meta, sort_keys=True)),
    ))
    print(f"fitted in {time.time() - t0:.0f} s", file=sys.stderr)
    print(args.output)
    if str(args.figure).lower() != "none":
        make_figure(args.figure, radii, args.smoothing, args.smooth_weight, args.ridge)
        print(args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
