"""Blob evidence on the CT itself: the multi-scale Hessian at a point.

Used by :func:`napari_ctreport.model.inference.detect` to confirm a weak heatmap peak that the
mask head did not support: a small solid nodule is a compact bright blob on the CT (all three
Hessian eigenvalues strongly negative at the nodule's scale), while a vessel is a tube (one
eigenvalue near zero) and lung parenchyma has no strong curvature at all. No napari imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..report.measure import tight_box

#: Gaussian scales (mm) at which the Hessian is taken; the blob's own scale is the one with the
#: strongest response (about r / sqrt(3) for a ball of radius r: 1-6 mm covers 3-20 mm nodules).
BLOB_SIGMAS_MM: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: Half-width (mm) of the CT patch the Hessian is computed on.
BLOB_PATCH_MM = 14.0
#: The blob centre is searched within this distance (mm) of the given point.
BLOB_SEARCH_MM = 3.0
#: Tissue denser than this (HU) counts as solid for :attr:`BlobMeasure.extent_mm`.
BLOB_SOLID_HU = -400.0
#: HU window applied before differentiating, so bone and metal do not dominate.
BLOB_HU_CLIP = (-1000.0, 400.0)
#: A ball is isolated when no solid tissue connected to it lies farther than this many blob
#: radii (``sigma * sqrt(3)``) plus :data:`BLOB_EXTENT_MARGIN_MM` from its centre (used by the
#: detector's blob test and by :func:`nodule_candidates`).
BLOB_MAX_EXTENT_RADII = 2.5
BLOB_EXTENT_MARGIN_MM = 2.0
#: Radius of the shell for :attr:`BlobMeasure.shell_solid`, in blob radii (``sigma * sqrt(3)``)
#: plus :data:`BLOB_SHELL_MARGIN_MM`: half a radius beyond the ball's edge.
BLOB_SHELL_RADII = 1.5
BLOB_SHELL_MARGIN_MM = 1.0
#: Half-thickness (mm) of that shell.
BLOB_SHELL_HALF_MM = 0.75


@dataclass(frozen=True)
class BlobMeasure:
    """Hessian blob evidence at a point.

    ``strength`` is the scale-normalised curvature along the blob's flattest direction
    (``-sigma**2 * lambda_3`` in HU, 0 unless all three eigenvalues are negative). A uniform
    ball of contrast ``C`` gives about ``0.28 * C`` at its own scale: a solid nodule in aerated
    lung (about 880 HU of contrast) about 250, less once a small one is blurred by the scanner;
    a ground-glass ball (300 HU) about 85.
    ``ratio`` is ``lambda_3 / lambda_1`` (flattest over steepest curvature): 1 for a ball, near 0
    for a tube or a plate. ``sigma_mm`` is the scale of the strongest response. ``extent_mm``
    is how far (mm) from the blob's centre the solid tissue (> :data:`BLOB_SOLID_HU`) connected
    to it reaches within the patch: about the radius for an isolated nodule, the patch's
    half-width for a vessel, the chest wall or the mediastinum running on. ``shell_solid`` is
    the share of solid voxels on a thin spherical shell around the centre, half a blob radius
    beyond the ball's edge (:data:`BLOB_SHELL_RADII`): near 0 for a ball in aerated lung, even
    one a thin vessel touches (the vessel crosses the shell in a small spot, 1-3 %), more for a
    ball on the pleura or the mediastinum (the wall cuts a cap off the shell: 7-8 % for a ball
    just touching a flat wall, more the deeper it sits in it), near 1 inside solid tissue."""

    strength: float
    ratio: float
    sigma_mm: float
    extent_mm: float = 0.0
    shell_solid: float = 1.0


def blob_measure(
    ct: np.ndarray,
    *,
    spacing_zyx: Sequence[float],
    centre_index: Sequence[float],
    sigmas_mm: Sequence[float] = BLOB_SIGMAS_MM,
    patch_mm: float = BLOB_PATCH_MM,
    search_mm: float = BLOB_SEARCH_MM,
    min_hu: float | None = None,
    solid_hu: float = BLOB_SOLID_HU,
) -> BlobMeasure:
    """Measure how blob-like the CT is around a point.

    Parameters
    ----------
    ct
        The CT in HU, (z, y, x).
    spacing_zyx
        Voxel spacing in mm.
    centre_index
        The point, as a (z, y, x) index into ``ct`` (may be fractional).
    sigmas_mm
        Gaussian scales in mm.
    patch_mm
        Half-width in mm of the patch around the point that is filtered.
    search_mm
        The strongest response within this distance of the point is taken.
    min_hu
        If given and no voxel within ``search_mm`` of the point is denser than this, the
        Hessians are skipped and a zero measure returned (a cheap test first).
    solid_hu
        The attenuation above which tissue counts for ``extent_mm`` and ``shell_solid``
        (:data:`BLOB_SOLID_HU` for a solid nodule; lower to measure a ground-glass one).

    Returns
    -------
    BlobMeasure
        The strongest blob response near the point over all scales (zero strength when the point
        lies outside the CT or nothing there is blob-like).
    """
    from scipy import ndimage

    sp = np.asarray(spacing_zyx, dtype=float)
    shape = np.asarray(ct.shape)
    c = np.round(np.asarray(centre_index, dtype=float)).astype(int)
    if np.any(c < 0) or np.any(c >= shape):
        return BlobMeasure(0.0, 0.0, 0.0)
    r = np.ceil(patch_mm / sp).astype(int)
    lo = np.maximum(c - r, 0)
    hi = np.minimum(c + r + 1, shape)
    patch = np.clip(
        np.asarray(ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32),
        *BLOB_HU_CLIP,
    )
    cc = c - lo
    nb = np.ceil(search_mm / sp).astype(int)
    near = tuple(slice(max(int(cc[a] - nb[a]), 0), int(cc[a] + nb[a] + 1)) for a in range(3))
    best = BlobMeasure(0.0, 0.0, 0.0)
    if min_hu is not None and not (patch[near] > min_hu).any():
        return best
    at = cc
    for s in sigmas_mm:
        sv = s / sp
        hess = np.empty(patch[near].shape + (3, 3), dtype=np.float32)
        for i in range(3):
            for j in range(i, 3):
                order = [0, 0, 0]
                order[i] += 1
                order[j] += 1
                d = ndimage.gaussian_filter(patch, sv, order=order)[near]
                d = d * (s * s / (sp[i] * sp[j]))
                hess[..., i, j] = d
                hess[..., j, i] = d
        ev = np.linalg.eigvalsh(hess)  # ascending: l1 <= l2 <= l3
        strength = np.where(ev[..., 2] < 0, -ev[..., 2], 0.0)
        k = np.unravel_index(int(np.argmax(strength)), strength.shape)
        if strength[k] > best.strength:
            e = ev[k]
            best = BlobMeasure(float(strength[k]), float(e[2] / e[0]), float(s))
            at = np.array([near[a].start + k[a] for a in range(3)])
    if best.strength <= 0:
        return best
    shell = _shell_solid(patch, at, sp, best.sigma_mm, solid_hu)
    comp = _solid_component(patch, at, solid_hu)
    if comp is None:
        return BlobMeasure(best.strength, best.ratio, best.sigma_mm, 0.0, shell)
    extent = float(np.sqrt((((np.argwhere(comp) - at) * sp) ** 2).sum(1)).max())
    return BlobMeasure(best.strength, best.ratio, best.sigma_mm, extent, shell)


def _shell_solid(
    patch: np.ndarray, at: np.ndarray, sp: np.ndarray, sigma_mm: float, solid_hu: float
) -> float:
    """Share of voxels denser than ``solid_hu`` on the shell of :attr:`BlobMeasure.shell_solid`
    around ``at`` (the part of it inside ``patch``; 1.0 if none)."""
    radius = BLOB_SHELL_RADII * sigma_mm * np.sqrt(3.0) + BLOB_SHELL_MARGIN_MM
    on = np.abs(_distance_mm(patch.shape, at, sp) - radius) <= BLOB_SHELL_HALF_MM
    if not on.any():
        return 1.0
    return float((patch[on] > solid_hu).mean())


def _distance_mm(shape: Sequence[int], at: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel of an array of ``shape`` from the index ``at``."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.sqrt(sum(((g - at[a]) * sp[a]) ** 2 for a, g in enumerate(grid)))


def _solid_component(patch: np.ndarray, at: np.ndarray, solid_hu: float) -> np.ndarray | None:
    """The voxels denser than ``solid_hu`` connected to ``at`` or its 3x3x3 neighbourhood, or
    ``None`` if none of those is."""
    from scipy import ndimage

    solid = patch > solid_hu
    lo = np.maximum(at - 1, 0)
    near = (slice(lo[0], at[0] + 2), slice(lo[1], at[1] + 2), slice(lo[2], at[2] + 2))
    if not solid[near].any():
        return None
    lab, _ = ndimage.label(solid)
    ids = np.unique(lab[near])
    return np.isin(lab, ids[ids > 0])


#: Grid (mm) the lungs are searched on for :func:`nodule_candidates` (the CT is subsampled by
#: whole voxels to about this).
CANDIDATE_GRID_MM = 1.4
#: The search box is the lungs' box grown by this (mm).
CANDIDATE_MARGIN_MM = 12.0
#: Solid tissue in the lungs is eroded by a ball of this radius (mm): vessels thinner than about
#: twice this vanish, a nodule of 5 mm or more keeps a core of two voxels or more (a one-voxel
#: core is dropped: on the validation sets a quarter of all cores, vessels just thicker than
#: the erosion, and none of the nodules the CT confirmed).
CANDIDATE_ERODE_MM = 1.5
#: A core longer than this (mm) along any axis is a vessel trunk or a mass, not a nodule.
CANDIDATE_MAX_CORE_MM = 25.0
#: A core more elongated than this (longest / shortest principal axis) is a vessel segment.
CANDIDATE_MAX_ELONGATION = 3.0
#: A core whose solid tissue runs on (connected) beyond the ball's reach is kept only when the
#: shell half a radius beyond its edge is at most this solid on the coarse grid (a thin vessel
#: touching it); :func:`blob_measure` then decides on the full CT.
CANDIDATE_MAX_SHELL = 0.08


def _coarse_shell(solid: np.ndarray, at: np.ndarray, sp: np.ndarray, radius: float) -> float:
    """Share of ``solid`` voxels on a one-voxel shell of ``radius`` mm around ``at`` (1.0 if none
    of it lies inside the array)."""
    n = np.ceil(radius / sp).astype(int) + 1
    g = np.mgrid[-n[0] : n[0] + 1, -n[1] : n[1] + 1, -n[2] : n[2] + 1].reshape(3, -1).T
    d = np.sqrt(((g * sp) ** 2).sum(1))
    p = np.round(at).astype(int) + g[np.abs(d - radius) <= 0.6 * sp.max()]
    p = p[np.all((p >= 0) & (p < solid.shape), axis=1)]
    if not len(p):
        return 1.0
    return float(solid[p[:, 0], p[:, 1], p[:, 2]].mean())


def _grown_core(
    pts: np.ndarray, structure: np.ndarray, tissue: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The core at grid points ``pts`` grown by ``structure`` within ``tissue``: ``(window,
    grown)``, ``grown`` a mask of ``tissue[window]``. The window leaves a voxel's margin around
    the growth (for a ring of neighbours)."""
    from scipy import ndimage

    pad = np.array(structure.shape) // 2 + 1
    lo = np.maximum(pts.min(0) - pad, 0)
    hi = np.minimum(pts.max(0) + 1 + pad, tissue.shape)
    win = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    core = np.zeros(tuple(hi - lo), dtype=bool)
    core[tuple((pts - lo).T)] = True
    return win, ndimage.binary_dilation(core, structure=structure) & tissue[win]


def _compact_cores(
    cores: np.ndarray,
    ssp: np.ndarray,
    tissue: np.ndarray | None = None,
    erode: np.ndarray | None = None,
):
    """Yield ``(points, centre, elongation, radius_mm)`` (grid indices) for each labelled core of
    ``cores`` that could be a nodule's: at most :data:`CANDIDATE_MAX_CORE_MM` long, of two voxels
    or more (a one-voxel core is a vessel just thicker than the erosion, or a 4 mm speck) and at
    most :data:`CANDIDATE_MAX_ELONGATION` (longest over shortest principal axis; a vessel segment
    is more). ``radius_mm`` is the ball the core suggests: its reach from its centre (at least
    half the coarsest grid step, for a core one thick slice deep) plus
    :data:`CANDIDATE_ERODE_MM`. With ``tissue`` and ``erode`` (the mask the cores were eroded from
    and the erosion's structure), the elongation is that of the core grown back by ``erode``
    within ``tissue`` (an opening, core by core): on slices thicker than the erosion, the
    erosion thins a core in-plane only, and the bare core of an 11.8 mm nodule two 5 mm slices
    deep measured 3.2."""
    from scipy import ndimage

    for i, o in enumerate(ndimage.find_objects(cores)):
        if o is None:
            continue
        span = np.array([s.stop - s.start for s in o]) * ssp
        if span.max() > CANDIDATE_MAX_CORE_MM:
            continue
        pts = np.argwhere(cores[o] == i + 1) + [s.start for s in o]
        if len(pts) < 2:
            continue
        shape_pts = pts
        if tissue is not None and erode is not None:
            win, grown = _grown_core(pts, erode, tissue)
            shape_pts = np.argwhere(grown) + [s.start for s in win]
        elong = 1.0
        if len(shape_pts) >= 4:
            # each grid voxel spans ssp: its own spread (ssp**2 / 12, at least 0.25 mm**2) keeps
            # a core one thick slice deep from looking flat (on 5 mm slices a nodule's core is
            # often one slice)
            spread = np.maximum(ssp**2 / 12.0, 0.25)
            ev = np.linalg.eigvalsh(np.cov((shape_pts * ssp).T) + np.diag(spread))
            elong = math.sqrt(ev[2] / ev[0])
            if elong > CANDIDATE_MAX_ELONGATION:
                continue
        centre = pts.mean(0)
        # a core one thick slice deep reaches half that slice along z, not 0
        reach = max(float(np.sqrt((((pts - centre) * ssp) ** 2).sum(1)).max()), 0.5 * ssp.max())
        radius = reach + CANDIDATE_ERODE_MM
        yield pts, centre, float(elong), radius


def _lung_grid(
    lungs: np.ndarray, sp: np.ndarray, grid_mm: float, margin_mm: float
) -> tuple[tuple[slice, ...], tuple[slice, ...], np.ndarray] | None:
    """The lungs' box grown by ``margin_mm``, and the same box subsampled by whole voxels to a
    grid of about ``grid_mm``: ``(box, subsampled slices, steps)``, or ``None`` without lungs."""
    from scipy import ndimage

    objs = ndimage.find_objects((lungs > 0).astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    st = np.maximum(1, np.floor(grid_mm / sp + 1e-6).astype(int))
    margin = np.ceil(margin_mm / sp).astype(int)
    box = tuple(
        slice(max(b.start - m, 0), min(b.stop + m, n))
        for b, m, n in zip(objs[0], margin, lungs.shape, strict=True)
    )
    sub = tuple(slice(b.start, b.stop, int(s)) for b, s in zip(box, st, strict=True))
    return box, sub, st


def nodule_candidates(
    ct: np.ndarray,
    *,
    spacing_zyx: Sequence[float],
    lungs: np.ndarray,
    max_candidates: int = 200,
) -> list[tuple[np.ndarray, float]]:
    """Places in the lungs where the CT alone suggests an isolated solid nodule.

    Solid tissue (> :data:`BLOB_SOLID_HU`) inside the lung mask is eroded by a ball of
    :data:`CANDIDATE_ERODE_MM`, which removes the thin vessels; each remaining core that is short
    (:data:`CANDIDATE_MAX_CORE_MM`) and compact (:data:`CANDIDATE_MAX_ELONGATION`), and whose
    solid tissue does not run on beyond a ball's reach (or, if it does, only through a spot of the
    surrounding shell, :data:`CANDIDATE_MAX_SHELL`), is a candidate. Vessel trunks and the
    mediastinum fail these tests; the candidates still have to pass :func:`blob_measure`'s
    tests on the full-resolution CT. Works on a grid of about :data:`CANDIDATE_GRID_MM`.

    Parameters
    ----------
    ct
        The CT in HU, (z, y, x).
    spacing_zyx
        Voxel spacing in mm.
    lungs
        Lung labels on the CT grid (non-zero inside a lung, nodules included, as
        :func:`napari_ctreport.report.anatomy.segment_lungs` gives them).
    max_candidates
        At most this many candidates are returned (the most compact first).

    Returns
    -------
    list of (numpy.ndarray, float)
        Candidate centres as (z, y, x) indices into ``ct`` (fractional), each with the radius
        (mm) of the ball its core suggests (the core's radius plus the erosion).
    """
    from scipy import ndimage

    sp = np.asarray(spacing_zyx, dtype=float)
    lungs = np.asarray(lungs)
    # the lungs' box and a margin, so that the wall and mediastinum a ball touches are seen
    grid = _lung_grid(lungs, sp, CANDIDATE_GRID_MM, CANDIDATE_MARGIN_MM)
    if grid is None:
        return []
    box, sub, st = grid
    solid = np.asarray(ct[sub]) > BLOB_SOLID_HU
    ssp = sp * st
    erode = _ball(CANDIDATE_ERODE_MM, ssp)
    in_lungs = solid & (lungs[sub] > 0)
    cores, _ = ndimage.label(ndimage.binary_erosion(in_lungs, structure=erode))
    tissue, _ = ndimage.label(solid)
    tissue_boxes = ndimage.find_objects(tissue)
    found: list[tuple[float, np.ndarray, float]] = []
    for _pts, centre, elong, radius in _compact_cores(cores, ssp, in_lungs, erode):
        tid = tissue[tuple(np.round(centre).astype(int))]
        if tid == 0:
            continue
        tb = tissue_boxes[tid - 1]
        half_span = 0.5 * float((np.array([s.stop - s.start for s in tb]) * ssp).max())
        reach = BLOB_MAX_EXTENT_RADII * radius + BLOB_EXTENT_MARGIN_MM
        if half_span > reach:
            shell_r = BLOB_SHELL_RADII * radius + BLOB_SHELL_MARGIN_MM
            shell = _coarse_shell(solid, centre, ssp, shell_r)
            if shell > CANDIDATE_MAX_SHELL:
                continue
        found.append((elong, centre * st + [b.start for b in box], radius))
    found.sort(key=lambda t: t[0])
    return [(c, r) for _, c, r in found[:max_candidates]]


#: Grid (mm) the lung surface is searched on for :func:`wall_candidates` (coarser than
#: :data:`CANDIDATE_GRID_MM`: the opening's two distance transforms dominate the cost).
WALL_GRID_MM = 2.5
#: Radius (mm) of the ball the solid tissue around the lungs is opened with: a bump narrower than
#: about twice this (a nodule of up to about 18 mm on the pleura) comes off the wall, while the
#: chest wall, the diaphragm's dome and the mediastinum stay.
WALL_OPEN_MM = 9.0
#: A bump is searched only where at least this share of its border is aerated lung (it
#: protrudes into the lung) ...
WALL_MIN_LUNG_SHARE = 0.4
#: ... and at least this share is the opened wall (it sits on the pleura; an isolated ball is
#: :func:`nodule_candidates`' business).
WALL_MIN_WALL_SHARE = 0.05


@dataclass(frozen=True)
class WallBump:
    """A compact bump of solid tissue on the lung surface (see :func:`wall_candidates`).

    ``centre`` is a (z, y, x) index into the CT (fractional); ``radius_mm`` the reach of its core
    plus the erosion; ``elongation`` the core's longest over shortest principal axis;
    ``lung_share`` and ``wall_share`` the shares of the bump's border on aerated lung and on the
    wall it sits on (the rest: other tissue, e.g. a vessel touching it)."""

    centre: np.ndarray
    radius_mm: float
    elongation: float
    lung_share: float
    wall_share: float


def _ball(radius_mm: float, sp: np.ndarray) -> np.ndarray:
    """A boolean ball of ``radius_mm`` on a grid of spacing ``sp``."""
    r = np.ceil(radius_mm / sp).astype(int)
    g = np.indices(tuple(2 * r + 1)).astype(float)
    return sum(((g[a] - r[a]) * sp[a]) ** 2 for a in range(3)) <= radius_mm**2 + 1e-6


def _opened(solid: np.ndarray, sp: np.ndarray, radius_mm: float) -> np.ndarray:
    """Morphological opening of ``solid`` by a ball of ``radius_mm`` (two distance transforms;
    the array's edge counts as more of the same, so tissue cut by the box is not eaten)."""
    from scipy import ndimage

    core = ndimage.distance_transform_edt(solid, sampling=sp) > radius_mm
    if not core.any():
        return core
    return ndimage.distance_transform_edt(~core, sampling=sp) <= radius_mm


def wall_candidates(
    ct: np.ndarray,
    *,
    spacing_zyx: Sequence[float],
    lungs: np.ndarray,
    max_candidates: int = 100,
) -> list[WallBump]:
    """Places where a nodule may sit on the pleura: compact bumps of solid tissue on the lungs'
    surface.

    Juxtapleural nodules fail :func:`nodule_candidates` (their tissue runs on into the chest
    wall). Here the solid tissue (> :data:`BLOB_SOLID_HU`) of the lungs' box is opened with a
    ball of :data:`WALL_OPEN_MM` (the rolling-ball separation of nodule-detection systems): what
    the opening removes are the structures narrower than the ball, vessels in the lung and
    bumps on its surface. Eroded by :data:`CANDIDATE_ERODE_MM` (thin vessels touching a bump
    come off), each core no longer than :data:`CANDIDATE_MAX_CORE_MM`, at most
    :data:`CANDIDATE_MAX_ELONGATION`, with at least :data:`WALL_MIN_LUNG_SHARE` of its border on
    aerated lung and :data:`WALL_MIN_WALL_SHARE` on the opened wall is a candidate. The caller
    decides with the CT's blob evidence and the network (see
    :func:`napari_ctreport.model.inference.detect`). Works on a grid of about
    :data:`WALL_GRID_MM`.

    Parameters
    ----------
    ct
        The CT in HU, (z, y, x).
    spacing_zyx
        Voxel spacing in mm.
    lungs
        Lung labels on the CT grid (non-zero inside a lung); a juxtapleural nodule lies outside
        them, as :func:`napari_ctreport.report.anatomy.segment_lungs` draws them.
    max_candidates
        At most this many candidates are returned (the most compact first).

    Returns
    -------
    list of WallBump
    """
    from scipy import ndimage

    sp = np.asarray(spacing_zyx, dtype=float)
    lungs = np.asarray(lungs)
    grid = _lung_grid(lungs, sp, WALL_GRID_MM, WALL_OPEN_MM + 4.0)
    if grid is None:
        return []
    box, sub, st = grid
    ssp = sp * st
    solid = np.asarray(ct[sub]) > BLOB_SOLID_HU
    air = (lungs[sub] > 0) & ~solid
    wall = _opened(solid, ssp, WALL_OPEN_MM)
    removed = solid & ~wall
    erode = _ball(CANDIDATE_ERODE_MM, ssp)
    cores, _ = ndimage.label(ndimage.binary_erosion(removed, structure=erode))
    grow = _ball(CANDIDATE_ERODE_MM + 0.5 * float(ssp.max()), ssp)
    found: list[WallBump] = []
    for pts, centre, elong, radius in _compact_cores(cores, ssp):
        # the bump around this core (the core grown back, within what the opening removed) and
        # the voxels bordering it
        win, bump = _grown_core(pts, grow, removed)
        ring = ndimage.binary_dilation(bump) & ~bump
        n_ring = int(ring.sum())
        if n_ring == 0:
            continue
        lung_share = float((ring & air[win]).sum()) / n_ring
        wall_share = float((ring & wall[win]).sum()) / n_ring
        if lung_share < WALL_MIN_LUNG_SHARE or wall_share < WALL_MIN_WALL_SHARE:
            continue
        found.append(
            WallBump(
                centre=centre * st + [b.start for b in box],
                radius_mm=radius,
                elongation=elong,
                lung_share=lung_share,
                wall_share=wall_share,
            )
        )
    found.sort(key=lambda b: b.elongation)
    return found[:max_candidates]


def wall_bump_mask(
    ct: np.ndarray,
    *,
    spacing_zyx: Sequence[float],
    centre_index: Sequence[float],
    radius_mm: float,
    threshold_hu: float = -500.0,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The bump at ``centre_index`` on the full CT grid: tissue denser than ``threshold_hu``
    that an opening by a ball of :data:`WALL_OPEN_MM` takes off the wall, the part connected to
    the centre (or nearest to it, within ``radius_mm``).

    Returns
    -------
    (slices, mask) or None
        CT index slices of a box and the boolean mask within it; ``None`` when nothing there
        comes off the wall.
    """
    from scipy import ndimage

    sp = np.asarray(spacing_zyx, dtype=float)
    c = np.round(np.asarray(centre_index, dtype=float)).astype(int)
    half = np.ceil((radius_mm + 2.0 * WALL_OPEN_MM + 2.0) / sp).astype(int)
    lo = np.maximum(c - half, 0)
    hi = np.minimum(c + half + 1, ct.shape)
    if np.any(hi <= lo) or np.any(c < lo) or np.any(c >= hi):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    solid = np.asarray(ct[box]) > threshold_hu
    removed = solid & ~_opened(solid, sp, WALL_OPEN_MM)
    lab, n = ndimage.label(removed)
    if n == 0:
        return None
    at = c - lo
    near = removed & (_distance_mm(removed.shape, at, sp) <= radius_mm)
    if not near.any():
        return None
    keep = lab[tuple(at)]
    if keep == 0:  # the centre itself is not in it: the piece with most voxels near it
        ids, counts = np.unique(lab[near], return_counts=True)
        keep = ids[np.argmax(counts)]
    mask = lab == keep
    sub = tight_box(mask)
    return (
        tuple(slice(b.start + t.start, b.start + t.stop) for b, t in zip(box, sub, strict=True)),
        mask[sub],
    )
