"""Blob evidence on the CT itself: the multi-scale Hessian at a point.

Used by :func:`napari_ctreport.model.inference.detect` to confirm a weak heatmap peak that the
mask head did not support: a small solid nodule is a compact bright blob on the CT (all three
Hessian eigenvalues strongly negative at the nodule's scale), while a vessel is a tube (one
eigenvalue near zero) and lung parenchyma has no strong curvature at all. No napari imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    shell = _shell_solid(patch, at, sp, best.sigma_mm)
    comp = _solid_component(patch, at)
    if comp is None:
        return BlobMeasure(best.strength, best.ratio, best.sigma_mm, 0.0, shell)
    extent = float(np.sqrt((((np.argwhere(comp) - at) * sp) ** 2).sum(1)).max())
    return BlobMeasure(best.strength, best.ratio, best.sigma_mm, extent, shell)


def _shell_solid(patch: np.ndarray, at: np.ndarray, sp: np.ndarray, sigma_mm: float) -> float:
    """Share of solid voxels (> :data:`BLOB_SOLID_HU`) on the shell of
    :attr:`BlobMeasure.shell_solid` around ``at`` (the part of it inside ``patch``; 1.0 if none)."""
    radius = BLOB_SHELL_RADII * sigma_mm * np.sqrt(3.0) + BLOB_SHELL_MARGIN_MM
    grid = np.ogrid[tuple(slice(0, n) for n in patch.shape)]
    dist = np.sqrt(sum(((g - at[a]) * sp[a]) ** 2 for a, g in enumerate(grid)))
    on = np.abs(dist - radius) <= BLOB_SHELL_HALF_MM
    if not on.any():
        return 1.0
    return float((patch[on] > BLOB_SOLID_HU).mean())


def _solid_component(patch: np.ndarray, at: np.ndarray) -> np.ndarray | None:
    """The solid voxels (> :data:`BLOB_SOLID_HU`) connected to ``at`` or its 3x3x3
    neighbourhood, or ``None`` if none of those is solid."""
    from scipy import ndimage

    solid = patch > BLOB_SOLID_HU
    lo = np.maximum(at - 1, 0)
    near = (slice(lo[0], at[0] + 2), slice(lo[1], at[1] + 2), slice(lo[2], at[2] + 2))
    if not solid[near].any():
        return None
    lab, _ = ndimage.label(solid)
    ids = np.unique(lab[near])
    return np.isin(lab, ids[ids > 0])
