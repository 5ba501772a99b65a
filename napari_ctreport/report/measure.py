"""Measurements of a lesion mask: diameters, volume, attenuation, position.

The longest axial diameter is measured the way a reader would on the axial slices: on every
slice the maximum Feret diameter of the lesion's cross-section, in millimetres with the
volume's (possibly anisotropic) in-plane spacing, and the longest over all slices. The outline
of a cross-section is taken through the mid-points of its boundary pixels' edges (where a 0.5
iso-contour of the mask runs), so a digital disc of radius r measures about 2r.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from ..io.volume import CTVolume
from .anatomy import locate
from .findings import Finding

_EDGE_OFFSETS = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])


def _outline_points_mm(sl: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Edge mid-points of the boundary pixels of a 2-D mask, as (y, x) mm, hull vertices only."""
    boundary = sl & ~ndi.binary_erosion(sl, border_value=0)
    pix = np.argwhere(boundary).astype(float)
    pts = (pix[:, None, :] + _EDGE_OFFSETS[None, :, :]).reshape(-1, 2) * np.asarray(spacing_yx)
    if len(pts) >= 4:
        try:
            hull = ConvexHull(pts)
            return pts[hull.vertices]
        except QhullError:  # collinear points (a one-pixel-wide line)
            pass
    return np.unique(pts, axis=0)


def _feret(pts: np.ndarray) -> tuple[float, float]:
    """(max Feret diameter, width perpendicular to it) of a 2-D point set in mm."""
    if len(pts) < 2:
        return 0.0, 0.0
    diff = pts[:, None, :] - pts[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    length = float(np.sqrt(d2[i, j]))
    if length == 0:
        return 0.0, 0.0
    axis = (pts[j] - pts[i]) / length
    normal = np.array([-axis[1], axis[0]])
    proj = pts @ normal
    return length, float(proj.max() - proj.min())


def axial_diameters(
    mask: np.ndarray, *, spacing_zyx: tuple[float, float, float]
) -> tuple[float, float, int]:
    """Longest axial diameter, the short axis in the same slice, and that slice's index.

    The short axis is the extent of the cross-section perpendicular to the long axis (its
    caliper width in that direction), which for an ellipse is the minor axis.
    """
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    best = (-1.0, 0.0, int(zs[0]) if zs.size else 0)
    spacing_yx = (float(spacing_zyx[1]), float(spacing_zyx[2]))
    for z in zs:
        sl = mask[z]
        ys, xs = np.nonzero(sl.any(axis=1))[0], np.nonzero(sl.any(axis=0))[0]
        crop = sl[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        # the bounding-box diagonal bounds the Feret diameter: skip slices that cannot win
        bound = np.hypot(crop.shape[0] * spacing_yx[0], crop.shape[1] * spacing_yx[1])
        if bound <= best[0]:
            continue
        d, s = _feret(_outline_points_mm(crop, spacing_yx))
        if d > best[0]:
            best = (d, s, int(z))
    return max(best[0], 0.0), best[1], best[2]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of ``mask`` (face connectivity; the first of equal ones; the
    mask itself when it has one part or none)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return np.asarray(mask, dtype=bool)
    return lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1


def tight_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest index box holding every voxel of ``mask`` (``None`` if it is empty).

    Found from the mask's projections on the axes, which on a full-size CT is many times faster
    than listing its voxels; the other axes' projections only over the first axis' range."""
    box: list[slice] = []
    for ax in range(mask.ndim):
        sub = mask[box[0]] if box else mask
        hit = np.flatnonzero(sub.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def touches_volume_edge(
    region: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...] | list[int]
) -> bool:
    """Whether ``region`` (on the index box ``box`` of a volume of ``shape``) reaches a face of
    the volume, beyond which nothing is seen: a lesion cut there would be measured short."""
    for axis, (b, n) in enumerate(zip(box, shape, strict=True)):
        if (b.start == 0 and region.take(0, axis=axis).any()) or (
            b.stop == n and region.take(-1, axis=axis).any()
        ):
            return True
    return False


def measure_mask(mask: np.ndarray, *, volume: CTVolume) -> dict[str, Any]:
    """Measure a lesion mask on a CT volume.

    Parameters
    ----------
    mask
        Boolean array of the volume's shape.
    volume
        The CT volume (spacing, origin and HU values).

    Returns
    -------
    dict
        ``diameter_mm`` (longest axial diameter), ``short_axis_mm`` (perpendicular extent in the
        same slice), ``axial_slice`` (index of that slice), ``volume_ml``, ``mean_hu``,
        ``center_lps_mm`` (centroid, LPS x, y, z), ``bbox_lps_mm`` (min and max corner of the
        voxels' extent, voxel centres +- half a voxel).

    Raises
    ------
    ValueError
        If the mask is empty or its shape differs from the volume's.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    box = tight_box(mask)
    if box is None:
        raise ValueError("cannot measure an empty mask")
    lo = np.array([b.start for b in box])
    sub = mask[box]
    idx = np.argwhere(sub) + lo
    spacing = np.asarray(volume.spacing_zyx)
    d, s, z = axial_diameters(sub, spacing_zyx=volume.spacing_zyx)
    lo_idx = idx.min(axis=0) - 0.5
    hi_idx = idx.max(axis=0) + 0.5
    return {
        "diameter_mm": float(d),
        "short_axis_mm": float(s),
        "axial_slice": int(z) + int(lo[0]),
        "volume_ml": float(len(idx) * np.prod(spacing) / 1000.0),
        "mean_hu": float(np.asarray(volume.array[box])[sub].mean()),
        "center_lps_mm": tuple(float(v) for v in volume.index_to_lps(idx.mean(axis=0))),
        "bbox_lps_mm": (
            tuple(float(v) for v in volume.index_to_lps(lo_idx)),
            tuple(float(v) for v in volume.index_to_lps(hi_idx)),
        ),
    }


def finding_from_mask(
    mask: np.ndarray,
    *,
    volume: CTVolume,
    id: str,
    kind: str,
    lungs: np.ndarray | None = None,
    score: float = 1.0,
    label: int = 0,
    attributes: dict[str, Any] | None = None,
    status: str = "proposed",
) -> Finding:
    """Make a :class:`Finding` from a lesion mask: measured, and located by :func:`.anatomy.locate`."""
    m = measure_mask(mask, volume=volume)
    side, zone = locate(m["center_lps_mm"], volume=volume, lungs=lungs)
    return Finding(
        id=id,
        kind=kind,
        side=side,
        zone=zone,
        center_lps_mm=m["center_lps_mm"],
        bbox_lps_mm=m["bbox_lps_mm"],
        diameter_mm=m["diameter_mm"],
        short_axis_mm=m["short_axis_mm"],
        volume_ml=m["volume_ml"],
        mean_hu=m["mean_hu"],
        score=score,
        label=label,
        status=status,
        attributes=dict(attributes or {}),
    )
