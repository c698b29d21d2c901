"""Patches: groups of blended sources, their cutouts in each exposure, and their neighbours.

- Sources whose blend footprints (``pho.field.footprints`` at the blend threshold) overlap are
  linked; the connected groups are the blends. A group larger than ``max_sources`` is cut in
  two at the median of its longer side, again and again until every piece fits; the passes over
  the field (``pho.field.driver``) then let the pieces of a cut blend settle against each other.
- A patch's cutout in an exposure is the pixel box that holds the blend footprints of its
  sources plus ``margin_pix``, clipped to the image; exposures the box misses are left out.
- A patch's neighbours in an exposure are the other sources whose light footprint (the low,
  neighbour threshold) reaches the cutout; the patch fit holds them fixed at their current
  values and adds their light to the model. The close neighbours are those whose blend
  footprint reaches the cutout: only their changes make a patch worth refitting (the others put
  less than the blend threshold, 0.5 sigma, into any of its pixels, so a change of a few per cent
  of their light is a few hundredths of a sigma).

Patches are disjoint in their active sources, so any set of them can be fitted at the same time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Patch", "group_sources", "plan_patches", "tangent_offsets_arcsec", "distance_to_box"]


@dataclass
class Patch:
    """One patch of the field.

    Attributes
    ----------
    index : int
        Patch number (0-based; order of the plan).
    sources : ndarray of int
        Rows (input order) of the active sources.
    boxes : dict
        ``exposure index -> (x0, y0, x1, y1)``, the 0-based pixel box (``x0 <= x < x1``) read
        from that exposure.
    neighbours : dict
        ``exposure index -> ndarray of int``, rows of the sources held fixed in that cutout.
    close : ndarray of int
        Rows of the neighbours whose blend footprint (not only their faint light) reaches a
        cutout: the ones whose changes make the patch worth refitting in a later pass.
    """

    index: int
    sources: np.ndarray
    boxes: dict = field(default_factory=dict)
    neighbours: dict = field(default_factory=dict)
    close: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def all_neighbours(self) -> np.ndarray:
        """Rows of every neighbour of the patch in any exposure (sorted, unique)."""
        if not self.neighbours:
            return np.zeros(0, dtype=int)
        return np.unique(np.concatenate(list(self.neighbours.values())))

    @property
    def n_pixels(self) -> int:
        return int(sum((b[2] - b[0]) * (b[3] - b[1]) for b in self.boxes.values()))


def tangent_offsets_arcsec(ra_deg, dec_deg, ra0_deg: float, dec0_deg: float):
    """Gnomonic offsets (east, north) in arcsec of positions from a tangent point."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    a0, d0 = math.radians(ra0_deg), math.radians(dec0_deg)
    cosc = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (math.cos(d0) * np.sin(dec) - math.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def distance_to_box(x, y, box) -> np.ndarray:
    """Distance (pixels) of points from the pixel box ``(x0, y0, x1, y1)`` (``x0 <= x < x1``), whose
    edges are at ``x0 - 1/2`` .. ``x1 - 1/2``; zero inside. A disk of radius r reaches the box when
    its centre's distance is below r."""
    x0, y0, x1, y1 = box
    cx, cy = 0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1)
    dx = np.maximum(np.abs(np.asarray(x, float) - cx) - (x1 - x0) / 2.0, 0.0)
    dy = np.maximum(np.abs(np.asarray(y, float) - cy) - (y1 - y0) / 2.0, 0.0)
    return np.hypot(dx, dy)


def _split(rows: np.ndarray, x: np.ndarray, y: np.ndarray, max_sources: int) -> list[np.ndarray]:
    if len(rows) <= max_sources:
        return [rows]
    xs, ys = x[rows], y[rows]
    coord = xs if np.ptp(xs) >= np.ptp(ys) else ys
    order = np.argsort(coord, kind="stable")
    half = len(rows) // 2
    return _split(rows[order[:half]], x, y, max_sources) + _split(rows[order[half:]], x, y, max_sources)


def group_sources(x_arcsec, y_arcsec, radius_arcsec, max_sources: int, candidates=None) -> list[np.ndarray]:
    """Blends: connected groups of sources whose disks overlap, cut to at most ``max_sources``.

    Parameters
    ----------
    x_arcsec, y_arcsec : ndarray of shape (S,)
        Positions on a common tangent plane, arcsec.
    radius_arcsec : ndarray of shape (S,)
        Blend footprint radii.
    max_sources : int
        Largest patch (>= 1).
    candidates : ndarray of int, optional
        Rows to group (default all); the others belong to no patch.

    Returns
    -------
    list of ndarray of int
        Rows of each group, sorted within a group; groups ordered by their first row.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if max_sources < 1:
        raise ValueError(f"max_sources must be at least 1, got {max_sources}")
    x, y, r = (np.asarray(a, dtype=float) for a in (x_arcsec, y_arcsec, radius_arcsec))
    rows = np.arange(len(x)) if candidates is None else np.asarray(candidates, dtype=int)
    if rows.size == 0:
        return []
    xy = np.column_stack([x[rows], y[rows]])
    pairs = cKDTree(xy).query_pairs(2.0 * float(r[rows].max()), output_type="ndarray")
    if len(pairs):
        i, j = rows[pairs[:, 0]], rows[pairs[:, 1]]
        linked = np.hypot(x[i] - x[j], y[i] - y[j]) < r[i] + r[j]
        pairs = pairs[linked]
    n = len(rows)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else ([], ([], [])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    groups = []
    for lab in np.unique(label):
        members = rows[label == lab]
        groups.extend(np.sort(g) for g in _split(members, x, y, max_sources))
    groups.sort(key=lambda g: int(g[0]))
    return groups


def plan_patches(groups, positions_pix, blend_radius_pix, light_radius_pix, shapes, margin_pix: float = 3.0) -> list[Patch]:
    """Cutouts and neighbours of each group in each exposure.

    Parameters
    ----------
    groups : list of ndarray of int
        From :func:`group_sources`.
    positions_pix : list of (x, y)
        Per exposure, 0-based pixel positions of every source, arrays of shape (S,).
    blend_radius_pix, light_radius_pix : list of ndarray of shape (S,)
        Per exposure, the blend and light footprint radii in that exposure's pixels.
    shapes : list of (ny, nx)
        Exposure shapes.
    margin_pix : float
        Pixels added around the blend footprints.

    Returns
    -------
    list of Patch
    """
    from scipy.spatial import cKDTree

    trees = [cKDTree(np.column_stack(p)) for p in positions_pix]
    max_light = [float(np.max(r)) for r in light_radius_pix]
    patches = []
    for k, rows in enumerate(groups):
        patch = Patch(index=k, sources=np.asarray(rows, dtype=int))
        active = set(int(r) for r in rows)
        close: set[int] = set()
        for e, ((x, y), rb, rl, (ny, nx)) in enumerate(zip(positions_pix, blend_radius_pix, light_radius_pix, shapes)):
            ext = rb[rows] + margin_pix
            x0 = max(0, int(math.floor(np.min(x[rows] - ext) + 0.5)))
            x1 = min(nx, int(math.ceil(np.max(x[rows] + ext) + 0.5)))
            y0 = max(0, int(math.floor(np.min(y[rows] - ext) + 0.5)))
            y1 = min(ny, int(math.ceil(np.max(y[rows] + ext) + 0.5)))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue  # the patch misses this exposure
            # neighbours: light disks that reach the box [x0 - 1/2, x1 - 1/2] x [y0 - 1/2, y1 - 1/2]
            cx, cy = 0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1)
            half = math.hypot(x1 - x0, y1 - y0) / 2.0
            near = np.array(trees[e].query_ball_point([cx, cy], half + max_light[e]), dtype=int)
            near = near[[int(i) not in active for i in near]] if near.size else near
            if near.size:
                dist = distance_to_box(x[near], y[near], (x0, y0, x1, y1))
                close.update(int(i) for i in near[dist < rb[near]])
                near = np.sort(near[dist < rl[near]])
            patch.boxes[e] = (x0, y0, x1, y1)
            patch.neighbours[e] = near
        patch.close = np.array(sorted(close), dtype=int)
        patches.append(patch)
    return patches
