"""A lesion mask from the model's coarse grid, sharpened on the CT grid by its attenuation.

The network's mask comes from a 1.5-2 mm grid, too coarse to measure a 6 mm nodule;
:func:`refine_mask` redraws it at the lesion's own boundary, as semi-automatic nodule
measurement tools do. Also the box and morphology helpers the analysis's plausibility rules
share with it. No napari or Qt here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..io.volume import CTVolume
from .measure import tight_box, touches_volume_edge

#: Attenuation thresholds of the refinement: half-way between aerated lung (about -850 HU) and
#: soft tissue (about 0 HU) for solid lesions, and between lung and ground glass (about -650 HU)
#: for subsolid ones.
REFINE_HU = {
    "solid nodule": -500.0,
    "calcified nodule": -500.0,
    "mass": -500.0,
    "part-solid nodule": -750.0,
    "ground-glass nodule": -750.0,
}
#: How far (mm) the refined mask may extend beyond the network's mask in one step.
REFINE_GROW_MM = 2.0
#: How far (mm) the refinement may reach beyond the network's mask at most, in steps of
#: :data:`REFINE_GROW_MM` taken while the lesion goes on beyond the step before (see
#: :func:`refine_mask`). On a real nodule moved into real lungs, whose edge is less dense than a
#: drawn one's, the network's mask can be half the nodule's width (a 15.4 mm nodule drawn 6.7 mm
#: wide, measured 10.2 mm).
REFINE_MAX_GROW_MM = 8.0
#: The kinds followed further: a solid nodule's edge against aerated lung is sharp. Ground glass
#: (-750 HU) runs on into the partial volume of vessels and dependent lung, and a mass into the
#: collapsed lung or fluid beside it.
REFINE_FURTHER_KINDS = frozenset({"solid nodule"})
#: The refinement steps on only when at least this share of the voxels just outside the one-step
#: mask (within the lungs) is still as dense as the lesion: the lesion goes on beyond it all
#: round, not only where a vessel leaves it ...
REFINE_CUT_START = 0.3
#: ... and takes the first further step where at most this share is: the lesion's own edge,
#: crossed only by vessels. A lesion that does not end within :data:`REFINE_MAX_GROW_MM` (one
#: merging with collapsed lung or a vessel tree) keeps its one-step mask.
REFINE_CUT_END = 0.1
#: What further steps add is opened in-plane by a disc of this share of the lesion's radius
#: (that of a disc of its largest section's area), at least :data:`REFINE_OPEN_MM`: a vessel or
#: a bronchial wall the lesion touches, narrower than the lesion's radius, is cut off ...
REFINE_OPEN_SHARE = 0.5
#: The opening's smallest radius (mm).
REFINE_OPEN_MM = 1.5
#: ... which needs pixels of at most this size (mm); on coarser grids a step of
#: :data:`REFINE_GROW_MM` is about a pixel and the lesion is refined one step only. 1.5 mm
#: pixels are followed (session 34: on the 1.5 mm contrast chest CT ``ct_cropped``, real nodules
#: of 13-17 mm the network drew small were measured 7.6-12.4 mm with one step, 12.1-13.8 mm
#: followed); they were not before (the limit was 1.0 mm).
REFINE_FURTHER_MAX_PIXEL_MM = 1.6
#: Kinds whose boundary is drawn at half maximum: half-way between the lesion's own peak
#: attenuation and the aerated lung around it, when that is denser than :data:`REFINE_HU`. A
#: small calcified nodule is blurred by the scanner into a wide halo denser than -500 HU; its
#: half-maximum contour is close to the nodule (full width at half maximum). For soft-tissue
#: lesions -500 HU is already about half-way, and a calcified speck inside one must not shrink it.
REFINE_HALF_MAX = frozenset({"calcified nodule"})
#: A refinement keeping less than this share of the network's mask is discarded (the mask was
#: over aerated lung or a vessel crossing it). The network's mask of a small nodule comes from
#: a 1.5-2 mm grid and is often several times the nodule's volume, so the share is low.
REFINE_MIN_KEEP = 0.05
#: Aerated lung attenuation (HU) assumed where no aerated voxel lies near the lesion.
LUNG_HU = -850.0
#: An effusion's mask is filled out to the fluid's own boundary (:func:`refine_effusion`) up to
#: this far (mm) beyond it. The network draws the fluid's middle: on the ten effusions of the
#: synthetic sets, after the growth along the pleura (``analysis._grow_effusion``), its masks
#: held 0.46-0.77 of the fluid's volume; the part against the chest wall and the partial volume
#: at the lung were missing.
EFFUSION_FILL_MM = 6.0
#: The fluid's range below its median attenuation: 2.5 robust standard deviations of the
#: lightly smoothed attenuation in the mask's interior, kept within these bounds (HU) ...
EFFUSION_FILL_BELOW_HU = (10.0, 25.0)
#: ... and above it at most this much (HU): about half-way to muscle (40-60 HU against water's
#: 0-20), so the fill stops at the chest wall and the diaphragm.
EFFUSION_FILL_ABOVE_HU = 15.0
#: The in-plane smoothing (Gaussian sigma, mm) of the attenuation the fill reads.
EFFUSION_FILL_SMOOTH_MM = 1.0
#: How many voxels out from the fluid its partial volume with the lung is followed: the
#: scanner's blur spreads the fluid's edge over two or three voxels.
EFFUSION_FILL_RIM = 2


def refine_mask(
    mask: np.ndarray, *, volume: CTVolume, kind: str, lungs: np.ndarray | None = None
) -> np.ndarray:
    """Sharpen a lesion mask from the model grid on the CT grid by its attenuation.

    The network's mask comes from a 1.5-2 mm grid, too coarse to measure a 6 mm nodule. Within
    :data:`REFINE_GROW_MM` of that mask, voxels denser than the kind's threshold
    (:data:`REFINE_HU`, or for :data:`REFINE_HALF_MAX` kinds the half maximum between the lesion
    and the lung around it where that is higher; after light in-plane smoothing against noise)
    that connect to the mask form the refined mask: the lesion's own boundary, as semi-automatic
    nodule measurement tools draw it. On pixels coarser than :data:`REFINE_GROW_MM` the step is
    a pixel (session 38: on the 3 mm grids of the lesion-free real CTs, nodules of 9-12 mm whose
    mask was a voxel or two, found on the CT alone or drawn small, were measured 3-9.5 mm; a
    pixel's step measured them 6.7-12.4 mm). Effusions, unknown kinds and refinements that keep
    under :data:`REFINE_MIN_KEEP` of the mask (a mask over aerated lung) keep the network's mask.

    With ``lungs`` (labelled by lung, as :func:`~napari_ctreport.report.anatomy.segment_lungs`
    gives them), a lesion of :data:`REFINE_FURTHER_KINDS` the network drew too small is followed
    further: when the lesion goes on all round beyond the one-step mask
    (:data:`REFINE_CUT_START`), the reach grows by :data:`REFINE_GROW_MM` at a time, up to
    :data:`REFINE_MAX_GROW_MM`, inside the lungs (whose holes, the nodules in them, are filled;
    not into the chest wall, the mediastinum or the liver), and the first reach at which the
    lesion ends (:data:`REFINE_CUT_END`) draws it, less the vessels and bronchial walls an
    in-plane opening (:data:`REFINE_OPEN_SHARE`) cuts off; a lesion that does not end there, or
    that reaches the edge of the scan, keeps the one-step mask, and so does every lesion on
    pixels over :data:`REFINE_FURTHER_MAX_PIXEL_MM`.
    """
    from scipy import ndimage as ndi

    thr = REFINE_HU.get(kind)
    if thr is None:
        return mask
    # (lungs with no voxel in the box change nothing: no dense voxel is then counted beyond the
    # first step, so the lesion does not go on)
    further = (
        kind in REFINE_FURTHER_KINDS
        and max(volume.spacing_zyx[1:]) <= REFINE_FURTHER_MAX_PIXEL_MM
        and lungs is not None
    )
    sp = np.asarray(volume.spacing_zyx, dtype=float)
    # on pixels coarser than a step the step reaches the next pixel in-plane (else a mask of a
    # voxel, a nodule found on the CT alone, stays one)
    step = max(REFINE_GROW_MM, float(sp[1:].max()))
    reach = REFINE_MAX_GROW_MM if further else step
    box = mask_box(mask, volume, reach + 1.0)
    if box is None:
        return mask
    m = mask[box]
    hu = ndi.gaussian_filter(np.asarray(volume.array[box], dtype=np.float32), (0.0, 0.7, 0.7))
    dist = ndi.distance_transform_edt(~m, sampling=sp)
    if kind in REFINE_HALF_MAX and m.any():
        thr = max(thr, _half_max(hu, m))
    dense = hu > thr
    refined = touching((dist <= step) & dense, m)
    if refined.sum() < REFINE_MIN_KEEP * m.sum():
        return mask
    if further:
        counted = (dist <= REFINE_GROW_MM) | (lungs[box] > 0)
        refined = _grow_further(
            refined, m, dense & counted, counted, dist, sp, box=box, shape=volume.shape
        )
    out = mask.copy()
    out[box] = refined
    return out


def _grow_further(
    refined: np.ndarray,
    seed: np.ndarray,
    inside: np.ndarray,
    counted: np.ndarray,
    dist: np.ndarray,
    spacing_zyx: np.ndarray,
    *,
    box: tuple[slice, ...],
    shape: Sequence[int],
) -> np.ndarray:
    """:func:`refine_mask`'s further steps: ``refined`` (reached within :data:`REFINE_GROW_MM`
    of ``seed``) replaced by the part of ``inside`` (dense voxels within the lungs) that
    connects to ``seed`` within the first further reach (``dist``: mm from ``seed``) at which the
    lesion ends (:data:`REFINE_CUT_END`) away from the volume's faces (``box`` in ``shape``),
    when it went on beyond the first step (:data:`REFINE_CUT_START`), less what an in-plane
    opening cuts off (:data:`REFINE_OPEN_SHARE`); else ``refined`` as it is."""
    if _cut(refined, inside, counted) < REFINE_CUT_START:
        return refined
    # in-plane only, on the slices the first step reached (the long axis is measured in-plane;
    # a vessel leaving the lesion head-to-foot is not followed)
    inside = inside & refined.any(axis=(1, 2))[:, None, None]
    grow = REFINE_GROW_MM
    while grow + REFINE_GROW_MM <= REFINE_MAX_GROW_MM + 1e-6:
        grow += REFINE_GROW_MM
        wider = touching(inside & (dist <= grow), seed)
        if _cut(wider, inside, counted) <= REFINE_CUT_END:
            if touches_volume_edge(wider, box, shape):
                return refined
            return refined | touching(_opened_in_plane(wider, spacing_zyx), refined)
    return refined


def _opened_in_plane(region: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """``region`` opened slice by slice by a disc of :data:`REFINE_OPEN_SHARE` of its radius."""
    from scipy import ndimage as ndi

    area = float(region.sum(axis=(1, 2)).max()) * float(spacing_zyx[1] * spacing_zyx[2])
    radius = max(REFINE_OPEN_MM, REFINE_OPEN_SHARE * float(np.sqrt(area / np.pi)))
    return ndi.binary_opening(region, structure=disk_in_plane(radius, spacing_zyx))


def disk_in_plane(radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """A disc of ``radius_mm`` in the axial plane on the grid of ``spacing_zyx``, as a
    ``(1, h, w)`` structuring element (for openings slice by slice)."""
    r = radius_mm / np.asarray(spacing_zyx[1:], dtype=float)
    ry, rx = np.ceil(r).astype(int)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return ((yy / r[0]) ** 2 + (xx / r[1]) ** 2 <= 1.0)[None]


def _cut(region: np.ndarray, dense: np.ndarray, counted: np.ndarray) -> float:
    """The share of the voxels just outside ``region`` in its slices (in-plane face neighbours,
    those in ``counted``) that are ``dense``: where a region grown to a limit was cut off by it."""
    from scipy import ndimage as ndi

    cross = ndi.generate_binary_structure(2, 1)[None]
    shell = ndi.binary_dilation(region, structure=cross) & ~region & counted
    return float(dense[shell].mean()) if shell.any() else 0.0


def touching(region: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected components of ``region`` that hold a voxel of ``seed``."""
    from scipy import ndimage as ndi

    lab, _ = ndi.label(region)
    keep = np.unique(lab[seed & region])
    return np.isin(lab, keep[keep > 0])


def _half_max(hu: np.ndarray, mask: np.ndarray) -> float:
    """Half-way between a lesion's peak attenuation (the maximum of the lightly smoothed ``hu``
    within ``mask``) and the aerated lung around it (median of the voxels under -500 HU in
    ``hu``'s box, or :data:`LUNG_HU`)."""
    peak = float(hu[mask].max())
    air = hu[(hu < -500.0) & ~mask]
    lung = float(np.median(air)) if air.size >= 20 else LUNG_HU
    return 0.5 * (peak + lung)


#: Kinds whose region a reader marks (:func:`edge_of_marked_lesion`) is cut back to half
#: maximum: the soft-tissue and calcified ones, whose edge against the lung is sharp.
MARKED_HALF_MAX_KINDS = frozenset({"solid nodule", "calcified nodule", "mass"})
#: How far (mm) around a marked region the lung is sampled for its half maximum.
MARKED_LUNG_MARGIN_MM = 3.0


def edge_of_marked_lesion(mask: np.ndarray, *, volume: CTVolume, kind: str) -> np.ndarray:
    """A region a reader marked (everything denser than -650 HU in a drawn box), cut back to
    the lesion's own edge when it is of :data:`MARKED_HALF_MAX_KINDS`: its voxels at or above
    the half maximum between its peak and the lung around it (:func:`_half_max`; at least the
    kind's :data:`REFINE_HU`), the largest connected part. On coarse grids the partial volume
    of a small nodule's edge lies above -650 HU: on the true lesions of six evaluation sets a
    box drawn around a nodule under 8 mm measured it 1.28 times its size (median of 32; 7 of
    them within 15 %), cut back at half maximum 1.01 (14 within 15 %), all 168 nodules and
    masses 111 -> 127 within 15 % (session 44). Other kinds, or nothing left: ``mask``."""
    if kind not in MARKED_HALF_MAX_KINDS or not mask.any():
        return mask
    from .measure import largest_component

    box = mask_box(mask, volume, MARKED_LUNG_MARGIN_MM)
    hu = np.asarray(volume.array[box], dtype=np.float32)
    m = mask[box]
    thr = max(REFINE_HU[kind], _half_max(hu, m))
    dense = m & (hu >= thr)
    if not dense.any():
        return mask
    out = np.zeros_like(mask)
    out[box] = largest_component(dense)
    return out


def grow_slices(slices: tuple[slice, ...], volume: CTVolume, margin_mm: float) -> tuple[slice, ...]:
    """The index box ``slices`` grown by ``margin_mm`` on every side, clipped to the volume."""
    return tuple(
        slice(
            max(0, s.start - int(np.ceil(margin_mm / sp))),
            min(n, s.stop + int(np.ceil(margin_mm / sp))),
        )
        for s, sp, n in zip(slices, volume.spacing_zyx, volume.shape, strict=True)
    )


def mask_box(mask: np.ndarray, volume: CTVolume, margin_mm: float) -> tuple[slice, ...] | None:
    """The index box of ``mask``'s voxels grown by ``margin_mm`` (``None`` for an empty mask)."""
    tight = tight_box(mask)
    if tight is None:
        return None
    return grow_slices(tight, volume, margin_mm)


def refine_effusion(
    mask: np.ndarray, *, volume: CTVolume, taken: np.ndarray | None = None
) -> np.ndarray:
    """An effusion's mask filled out to the fluid's own boundary on the CT, as a new array.

    The fluid's attenuation is read from the mask's interior (in-plane eroded, voxels over
    -150 HU after light in-plane smoothing): its median, and a range below it of 2.5 robust
    standard deviations within :data:`EFFUSION_FILL_BELOW_HU`, above it of
    :data:`EFFUSION_FILL_ABOVE_HU`. Voxels within :data:`EFFUSION_FILL_MM` of the mask in that
    range, connected to it, join it; then its partial volume at the lung, up to
    :data:`EFFUSION_FILL_RIM` voxels out: voxels near aerated lung (under -600 HU) in their
    slice, denser than half-way between the fluid and :data:`LUNG_HU` (the boundary nodule
    tools draw at half maximum). Voxels of ``taken`` (other findings) are never added. A mask
    with too little interior to read (under 50 voxels) is returned as it is.
    """
    from scipy import ndimage as ndi

    out = mask.copy()
    box = mask_box(mask, volume, EFFUSION_FILL_MM + 1.0)
    if box is None:
        return out
    sp = np.asarray(volume.spacing_zyx, dtype=float)
    hu = np.asarray(volume.array[box], dtype=np.float32)
    smooth = ndi.gaussian_filter(
        hu, sigma=(0.0, EFFUSION_FILL_SMOOTH_MM / sp[1], EFFUSION_FILL_SMOOTH_MM / sp[2])
    )
    m = mask[box]
    inside = ndi.binary_erosion(m, structure=np.ones((1, 3, 3), dtype=bool))
    values = smooth[inside & (smooth > -150.0)]
    if values.size < 50:
        values = smooth[m & (smooth > -150.0)]
        if values.size < 50:
            return out
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    lo = median - float(np.clip(2.5 * spread, *EFFUSION_FILL_BELOW_HU))
    hi = median + EFFUSION_FILL_ABOVE_HU
    free = ~taken[box] if taken is not None else np.ones_like(m)
    near = ndi.distance_transform_edt(~m, sampling=sp) <= EFFUSION_FILL_MM
    fluid = touching(((smooth >= lo) & (smooth <= hi) & near & free) | m, m)
    # partial volume at the lung: up to EFFUSION_FILL_RIM voxels out from the fluid, on the lung's
    # side (aerated lung within twice that and one more in-plane), more fluid than lung
    at_lung = ndi.binary_dilation(
        hu < -600.0, structure=np.ones((1, 3, 3), dtype=bool), iterations=2 * EFFUSION_FILL_RIM + 1
    )
    blurred = at_lung & free & (hu >= 0.5 * (median + LUNG_HU)) & (hu <= hi)
    fluid |= ndi.binary_dilation(
        fluid,
        structure=ndi.generate_binary_structure(3, 1),
        iterations=EFFUSION_FILL_RIM,
        mask=blurred | fluid,
    )
    out[box] |= fluid
    return out
