"""Lungs, body midline, and where a point lies (side and zone) in a chest CT.

Classical image processing on a downsampled copy of the volume (about 2.5 mm voxels), so that a
512 x 512 x 300 scan takes about a second:

1. *Air* is everything below -400 HU. Air components that touch the in-plane border of the field
   of view and are essentially pure air (median below -960 HU) are outside the body; lungs in a
   laterally cropped scan also touch the border, but lung parenchyma is denser than air.
2. The remaining air components of at least 30 ml are lung candidates. When the largest one has
   a good share of its voxels on both sides of the body midline, the lungs touch (usually
   through the airways): it is split by eroding until it falls apart in two, then growing the
   two parts back; if erosion does not separate them, by the midline.
3. The part with the lower LPS x is the patient's right lung (label 1), the other the left
   (label 2); each is closed and its holes (vessels, nodules) filled slice by slice.
4. A point's zone is the third of its lung's cranio-caudal extent it lies in. The trachea (and a
   stomach under a hemidiaphragm) can join a lung at this resolution; the slices at either end
   where the label is pure gas, and slivers at the top, are not counted in that extent.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..io.volume import CTVolume

#: Label values of :func:`segment_lungs`.
RIGHT_LUNG = 1
LEFT_LUNG = 2

#: HU threshold between air-like and tissue.
AIR_HU = -400.0
#: Median HU below which a border-touching air region is outside air, not lung.
OUTSIDE_AIR_HU = -960.0
#: When no lung lies apart from the air outside the body, look for lung parenchyma within that
#: air (:func:`_lung_density_air`): a field of view that cuts the lungs open joins them to it.
#: pyradiomics' lung1 reconstructed 8.5 mm inside its field of view lost both lungs (its lower
#: lungs reach the edge), and with them every lung-based rule. Set to False to switch it off.
LUNGS_CUT_BY_FOV = True
#: Radius (mm) of the in-plane disc that lung the field of view cut open must hold inside the
#: body's outline (:func:`_lung_density_air`). The largest such disc, on the small grid: 17-38
#: mm in `lung1`'s and `lung2`'s lungs with the reconstruction circle drawn 15-120 pixels inside
#: the image edge; 2-11 mm in the mattress, blanket and head-rest foam of the real abdominal and
#: head CTs and around lung1/lung2 (the convex outline spans wedges between the back, the arms
#: and the padding, up to 52 mm deep but thin).
FOV_LUNG_MIN_RADIUS_MM = 14.0
#: Smallest air region (ml) that can be a lung.
MIN_LUNG_ML = 30.0
#: Smallest share of an air region reaching the image's edge that must lie within the body's
#: convex outline for it to be a lung (:func:`_outside_the_body`).
BODY_SHARE_MIN = 0.5
#: Median HU below which an air region inside the body is gas (stomach, bowel, trachea), not
#: lung: lung parenchyma is air mixed with tissue and blood (median about -850 HU; -780 to -800
#: at the lung bases of a real abdominal CT), gas is pure air (-967 and -974 HU in its stomach and
#: colon, which are larger there than the lung bases).
GAS_HU = -950.0
#: Smallest cross-section (mm^2) of a lung's label on the slice that ends its cranio-caudal
#: extent at the top: the zones are thirds of that extent, and a smaller end there is a sliver
#: (an apex's tip, or the airway wall the coarse mask caught above the apex of a real CT, lung1's
#: right lung: 31-62 mm^2 at -517 to -705 HU). At the bases the slivers are the recesses.
END_SLICE_MIN_MM2 = 100.0
#: Distance (mm) from the midline within which the no-lung fallback says "midline".
MIDLINE_TOLERANCE_MM = 5.0

_TARGET_MM = 2.5


def _strides(volume: CTVolume) -> tuple[int, int, int]:
    return tuple(max(1, int(round(_TARGET_MM / s))) for s in volume.spacing_zyx)  # type: ignore[return-value]


def _small(volume: CTVolume, strides: tuple[int, int, int]) -> np.ndarray:
    sz, sy, sx = strides
    return np.asarray(volume.array[::sz, ::sy, ::sx], dtype=np.float32)


def _lung_candidates(
    small: np.ndarray, inner: np.ndarray, voxel_ml: float, outside: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """Labels of ``inner`` air and the ids of its (at most two) largest regions that can be
    lungs: at least :data:`MIN_LUNG_ML`, not pure gas (median at least :data:`GAS_HU`) and,
    given the ``outside`` air, not air outside the body that the image's edge cuts off
    (:func:`_outside_the_body`)."""
    lab, m = ndi.label(inner)
    sizes = np.bincount(lab.ravel())[1:] * voxel_ml if m else np.zeros(0)
    big_ids = [int(i) + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= MIN_LUNG_ML]
    medians = np.atleast_1d(ndi.median(small, lab, big_ids)) if big_ids else []
    ids = [i for i, med in zip(big_ids, medians, strict=True) if med >= GAS_HU]
    if outside is not None:
        ids = [i for i in ids if not _outside_the_body(small, lab == i, outside)]
    return lab, ids[:2]


def _reaches_edge(mask: np.ndarray) -> bool:
    """Whether a mask (one axial slice, or a stack of them) touches the image's edge in-plane."""
    return bool(mask[..., [0, -1], :].any() or mask[..., :, [0, -1]].any())


def _tissue(small: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """What is denser than :data:`AIR_HU` and not outside air: the body (and the table)."""
    return ~outside & (small > AIR_HU)


def _outside_the_body(small: np.ndarray, region: np.ndarray, outside: np.ndarray) -> bool:
    """Whether an air region that is not outside air by its median (:func:`_outside_air`) is
    outside the body all the same: it reaches the image's edge in-plane and under
    :data:`BODY_SHARE_MIN` of it lies within the body's convex outline, on the slices where the
    body's cross-section (:func:`_cross_section`) is whole (does not reach the image's edge).
    Air under a curved table, in the image's corner, has a median of -918 HU on a real
    abdominal CT on 3 mm voxels (68 ml), and passed for its left lung. Lungs reach the image's
    edge on a scan cropped through them; so does the body there, and those slices are not
    judged (the hull of a chest crop's largest piece of tissue held 38 % of its lungs)."""
    if not _reaches_edge(region):
        return False
    from skimage.morphology import convex_hull_image

    tissue = _tissue(small, outside)
    inside = outside_n = 0
    for z in np.flatnonzero(region.any(axis=(1, 2))):
        n = int(region[z].sum())
        body = _cross_section(tissue[z])
        if body is None or _reaches_edge(body):
            inside += n  # no whole body in the slice (a crop through the chest): not judged
            continue
        hull = convex_hull_image(body)
        k = int((region[z] & hull).sum())
        inside += k
        outside_n += n - k
    return outside_n > 0 and inside / (inside + outside_n) < BODY_SHARE_MIN


def _lung_density_air(
    small: np.ndarray, outside: np.ndarray, spacing_yx: tuple[float, float]
) -> np.ndarray:
    """The part of the outside air denser than air (lightly smoothed, at least
    :data:`OUTSIDE_AIR_HU`), opened in-plane so that the rim where the skin meets the air does
    not join it: lung parenchyma the field of view has cut open. Only the regions that hold an
    in-plane disc of radius :data:`FOV_LUNG_MIN_RADIUS_MM` lying inside the body's outline
    (:func:`_body_depth`) are kept; without that the foam of the table's mattress, of a blanket
    and of a head rest (about -900 to -945 HU) passed for lung: 498 ml of "lung" under and over a
    real abdominal CT, 99 ml behind a real head CT."""
    smooth = ndi.uniform_filter(small, size=(1, 3, 3))
    part = outside & (smooth >= OUTSIDE_AIR_HU) & (small < AIR_HU)
    part = ndi.binary_opening(part, structure=np.ones((1, 3, 3), dtype=bool))
    lab, _ = ndi.label(part)
    # per voxel, the radius of the largest disc around it inside both the region and the outline
    disc = _body_depth(small, outside, spacing_yx)
    for z in range(small.shape[0]):
        own = ndi.distance_transform_edt(np.pad(part[z], 1), sampling=spacing_yx)[1:-1, 1:-1]
        np.minimum(disc[z], own, out=disc[z])
    keep = np.unique(lab[disc >= FOV_LUNG_MIN_RADIUS_MM])
    return np.isin(lab, keep[keep > 0])


def _body_depth(
    small: np.ndarray, outside: np.ndarray, spacing_yx: tuple[float, float]
) -> np.ndarray:
    """Per axial slice, how far (mm) each voxel lies inside the body's convex outline (0
    outside it). The outline is the convex hull of the largest region of tissue (denser than
    :data:`AIR_HU`, not outside air; :func:`_cross_section`). Lungs the field of view cuts open
    lie within it (the chest wall in front of and behind them reaches the cut). Pads under or
    around the body lie outside it, except in the shallow wedges the hull spans between the
    back, the arms and a curved mattress."""
    from skimage.morphology import convex_hull_image

    tissue = _tissue(small, outside)
    out = np.zeros(small.shape, dtype=np.float32)
    for z in range(small.shape[0]):
        region = _cross_section(tissue[z])
        if region is not None:
            hull = np.pad(convex_hull_image(region), 1)
            out[z] = ndi.distance_transform_edt(hull, sampling=spacing_yx)[1:-1, 1:-1]
    return out


def _cross_section(mask: np.ndarray) -> np.ndarray | None:
    """The body's cross-section in one axial slice of ``mask``: its largest connected region
    after an opening (two steps of the 4-neighbour cross) that detaches the table, or ``None``
    when that covers under 5 % of the slice."""
    lab, n = ndi.label(
        ndi.binary_opening(mask, structure=ndi.generate_binary_structure(2, 1), iterations=2)
    )
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    return lab == k if sizes[k - 1] >= 0.05 * mask.size else None


def _outside_air(small: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(air mask, outside-air mask, number of air labels) on the small grid; also the labels."""
    air = small < AIR_HU
    labels, n = ndi.label(air)
    border = np.zeros(small.shape, dtype=bool)
    border[:, 0, :] = border[:, -1, :] = True
    border[:, :, 0] = border[:, :, -1] = True
    touching = np.unique(labels[border & air])
    touching = touching[touching > 0]
    outside = np.zeros(n + 1, dtype=bool)
    if touching.size:
        medians = ndi.median(small, labels, touching)
        outside[touching[np.asarray(medians) < OUTSIDE_AIR_HU]] = True
    return labels, outside[labels], n


def _body_midline_small(small: np.ndarray, outside: np.ndarray) -> tuple[float | None, bool]:
    """Midline as a (fractional) small-grid x index, and whether the body looked truncated.

    Per axial slice: the largest connected region of non-outside-air tissue/air (after an
    opening that detaches the table: :func:`_cross_section`); its x-extent midpoint. The median over
    slices with a real body cross-section.
    """
    body = (~outside) & (small > -2000)
    mids: list[float] = []
    truncated = 0
    nx = small.shape[2]
    for z in range(small.shape[0]):
        region = _cross_section(body[z])
        if region is None:
            continue
        cols = np.flatnonzero(region.any(axis=0))
        lo, hi = int(cols[0]), int(cols[-1])
        if lo == 0 and hi == nx - 1:
            truncated += 1
        mids.append((lo + hi) / 2.0)
    if not mids:
        return None, True
    return float(np.median(mids)), truncated > len(mids) / 2


def _x_lps(volume: CTVolume, x_index_small: float, sx: int) -> float:
    return float(volume.origin_lps[0] + x_index_small * sx * volume.spacing_zyx[2])


def body_midline_x(volume: CTVolume, *, lungs: np.ndarray | None = None) -> float:
    """LPS x (mm) of the body's midline.

    The median over axial slices of the mid-point of the body's x-extent. When the body fills
    the field of view from side to side (a cropped scan) that says nothing, so the mid-point
    between the centroids of the two lungs is used instead (from ``lungs`` if given, else
    segmented here), and failing that the centre of the field of view.
    """
    strides = _strides(volume)
    small = _small(volume, strides)
    _, outside, _ = _outside_air(small)
    mid, truncated = _body_midline_small(small, outside)
    if mid is not None and not truncated:
        return _x_lps(volume, mid, strides[2])
    if lungs is None:
        lungs = segment_lungs(volume)
    xs = []
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        idx = np.flatnonzero((lungs == lab).any(axis=(0, 1)))
        if idx.size:
            w = (lungs == lab).sum(axis=(0, 1))[idx]
            xs.append(float(np.average(idx, weights=w)))
    if len(xs) == 2:
        return float(volume.origin_lps[0] + np.mean(xs) * volume.spacing_zyx[2])
    centre = (volume.shape[2] - 1) / 2.0
    return float(volume.origin_lps[0] + centre * volume.spacing_zyx[2])


def _split_component(comp: np.ndarray, mid_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Split one connected lung region in two (lower-x part first)."""
    from skimage.segmentation import expand_labels

    st = ndi.generate_binary_structure(3, 1)
    total = int(comp.sum())
    eroded = comp
    for it in range(1, 7):
        eroded = ndi.binary_erosion(eroded, structure=st)
        lab, n = ndi.label(eroded)
        if n < 2:
            if n == 0:
                break
            continue
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        a, b = order[0] + 1, order[1] + 1
        if sizes[b - 1] < 0.1 * sizes[a - 1]:
            continue
        seeds = np.where(lab == a, 1, 0) + np.where(lab == b, 2, 0)
        grown = expand_labels(seeds.astype(np.int32), distance=it + 2)
        grown[~comp] = 0
        missing = comp & (grown == 0)
        if missing.any():
            _, (iz, iy, ix) = ndi.distance_transform_edt(grown == 0, return_indices=True)
            grown[missing] = grown[iz[missing], iy[missing], ix[missing]]
        p1, p2 = grown == 1, grown == 2
        if min(p1.sum(), p2.sum()) < 0.1 * total:
            break
        x1 = np.nonzero(p1)[2].mean()
        x2 = np.nonzero(p2)[2].mean()
        return (p1, p2) if x1 <= x2 else (p2, p1)
    xs = np.arange(comp.shape[2])[None, None, :]
    return comp & (xs < mid_x), comp & (xs >= mid_x)


def _tidy(mask: np.ndarray) -> np.ndarray:
    st = ndi.generate_binary_structure(3, 1)
    closed = ndi.binary_closing(np.pad(mask, 2), structure=st, iterations=2)[2:-2, 2:-2, 2:-2]
    out = np.empty_like(closed)
    for z in range(closed.shape[0]):
        out[z] = ndi.binary_fill_holes(closed[z])
    return out | mask


def segment_lungs(volume: CTVolume) -> np.ndarray:
    """Segment the lungs of a chest CT.

    Parameters
    ----------
    volume
        A CT volume in HU (any size; works on cropped scans and on volumes with no lungs).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the volume's shape: 0 background, 1 the patient's right lung (lower
        LPS x), 2 the left lung. All zeros when no air region of lung size is found. Air regions
        of pure air (median below :data:`GAS_HU`: stomach, bowel, trachea) are not lungs.
    """
    strides = _strides(volume)
    small = _small(volume, strides)
    labels, outside, n = _outside_air(small)
    out_small = np.zeros(small.shape, dtype=np.uint8)
    if n:
        voxel_ml = float(np.prod(np.asarray(volume.spacing_zyx) * np.asarray(strides))) / 1000.0
        lab, cands = _lung_candidates(small, (labels > 0) & ~outside, voxel_ml, outside)
        if not cands and LUNGS_CUT_BY_FOV and outside.any():
            # no lung apart from the air outside the body: where the field of view cuts the
            # lungs open they join that air; their parenchyma is denser than it
            sp_yx = (volume.spacing_zyx[1] * strides[1], volume.spacing_zyx[2] * strides[2])
            dense = _lung_density_air(small, outside, sp_yx)
            lab, cands = _lung_candidates(small, dense, voxel_ml)
        if cands:
            mid, truncated = _body_midline_small(small, outside)
            big = lab == cands[0]
            xs = np.nonzero(big)[2]
            if mid is None or truncated:
                mid = (small.shape[2] - 1) / 2.0 if len(cands) < 2 else None
                if mid is None:
                    x2 = np.nonzero(lab == cands[1])[2].mean()
                    mid = (xs.mean() + x2) / 2.0
            share_low = float(np.mean(xs < mid))
            spans = 0.2 < share_low < 0.8
            if spans:
                right, left = _split_component(big, mid)
            elif len(cands) == 2:
                other = lab == cands[1]
                if xs.mean() <= np.nonzero(other)[2].mean():
                    right, left = big, other
                else:
                    right, left = other, big
            else:
                empty = np.zeros_like(big)
                right, left = (big, empty) if xs.mean() < mid else (empty, big)
            if right.any():
                out_small[_tidy(right)] = RIGHT_LUNG
            if left.any():
                tl = _tidy(left)
                out_small[tl & (out_small == 0)] = LEFT_LUNG
    idx = [
        np.minimum((np.arange(n_full) + s // 2) // s, n_small - 1)
        for n_full, n_small, s in zip(volume.shape, small.shape, strides, strict=True)
    ]
    return out_small[np.ix_(*idx)]


def _zone(z: float, lo: float, hi: float) -> str:
    if hi - lo <= 0:
        return "middle"
    t = (z - lo) / (hi - lo)
    if t < 1.0 / 3.0:
        return "lower"
    if t > 2.0 / 3.0:
        return "upper"
    return "middle"


def _z_range(volume: CTVolume, mask_z: np.ndarray) -> tuple[float, float]:
    zi = np.flatnonzero(mask_z)
    z0 = volume.origin_lps[2] + (zi[0] - 0.5) * volume.spacing_zyx[0]
    z1 = volume.origin_lps[2] + (zi[-1] + 0.5) * volume.spacing_zyx[0]
    return float(z0), float(z1)


def _slices_holding(labels: np.ndarray, value: int, *, chunk: int = 16) -> np.ndarray:
    """Per slice (axis 0), whether it holds ``value``, exact at the first and the last slice
    that does (all :func:`_z_range` reads) and True between them, all False when none does: the
    slices are looked at in chunks from either end inwards, so a lung's presence and extent
    cost the slices outside it, not whole-volume comparisons per finding."""
    n = labels.shape[0]
    out = np.zeros(n, dtype=bool)
    first = last = None
    for lo in range(0, n, chunk):
        hit = np.flatnonzero((labels[lo : lo + chunk] == value).any(axis=(1, 2)))
        if hit.size:
            first = lo + int(hit[0])
            break
    if first is None:
        return out
    for hi in range(n, first, -chunk):
        lo = max(first, hi - chunk)
        hit = np.flatnonzero((labels[lo:hi] == value).any(axis=(1, 2)))
        if hit.size:
            last = lo + int(hit[-1])
            break
    out[first : (last if last is not None else first) + 1] = True
    return out


def _trim_gas_ends(
    volume: CTVolume, lungs: np.ndarray, value: int, holding: np.ndarray
) -> np.ndarray:
    """``holding`` (slices of a lung, from :func:`_slices_holding`) less the slices at either
    end where that lung's label is pure gas (median below :data:`GAS_HU`) or absent, and at the
    top those where it is a sliver (under :data:`END_SLICE_MIN_MM2`): the trachea above the
    apices and a stomach under the hemidiaphragm join a lung at the 2.5 mm the segmentation
    works at, and are not lung; they must not stretch its extent, whose thirds are the zones
    (the slivers at the bases are the recesses, lung). At most a third of the slices is trimmed
    from each end; the trimmed extent never empties. ``volume``'s slices run foot to head."""
    idx = np.flatnonzero(holding)
    out = holding.copy()
    limit = idx.size // 3
    min_voxels = END_SLICE_MIN_MM2 / float(volume.spacing_zyx[1] * volume.spacing_zyx[2])
    for order, least in ((idx[:limit], 1), (idx[::-1][:limit], min_voxels)):
        for z in order:
            vals = volume.array[z][lungs[z] == value]
            if vals.size >= least and float(np.median(vals)) >= GAS_HU:
                break
            out[z] = False
    return out


def locate(
    center_lps_mm: tuple[float, float, float] | np.ndarray,
    *,
    volume: CTVolume,
    lungs: np.ndarray | None = None,
    midline_x: float | None = None,
) -> tuple[str, str]:
    """Side and zone of a point.

    Parameters
    ----------
    center_lps_mm
        The point, LPS ``(x, y, z)`` mm.
    volume
        The CT volume the point belongs to.
    lungs
        :func:`segment_lungs` output for ``volume``; ``None`` or all zeros for the fallback.
    midline_x
        Body midline for the fallback (computed with :func:`body_midline_x` when needed).

    Returns
    -------
    (side, zone)
        With lungs: the side of the lung the point lies in, or else of the nearest lung, and
        the zone by thirds of that lung's cranio-caudal extent (lower, middle, upper third;
        end slices of pure gas, and slivers at the top, the trachea's, are not counted:
        :func:`_trim_gas_ends`).
        Without lungs: ``"right"`` below the midline, ``"left"`` above it, ``"midline"`` within
        :data:`MIDLINE_TOLERANCE_MM`; the zone by thirds of the volume's z-extent.
    """
    p = np.asarray(center_lps_mm, dtype=float)
    if lungs is not None and lungs.shape != volume.shape:
        raise ValueError(f"lung mask shape {lungs.shape} differs from volume shape {volume.shape}")
    # each lung's cranio-caudal extent (empty for a lung not there)
    extent = (
        {}
        if lungs is None
        else {
            lab: _trim_gas_ends(volume, lungs, lab, _slices_holding(lungs, lab))
            for lab in (RIGHT_LUNG, LEFT_LUNG)
        }
    )
    present = [lab for lab, z in extent.items() if z.any()]
    if present:
        assert lungs is not None
        idx = np.round(volume.lps_to_index(p)).astype(int)
        inside = all(0 <= i < n for i, n in zip(idx, volume.shape, strict=True))
        label = int(lungs[tuple(idx)]) if inside else 0
        if label not in present:
            s = max(1, int(round(_TARGET_MM / min(volume.spacing_zyx))))
            sub = lungs[::s, ::s, ::s]
            best = (np.inf, present[0])
            for lab in present:
                pts = np.argwhere(sub == lab)
                if pts.size == 0:
                    continue
                lps = volume.index_to_lps(pts * s)
                d = float(np.min(np.sum((lps - p) ** 2, axis=1)))
                if d < best[0]:
                    best = (d, lab)
            label = best[1]
        side = "right" if label == RIGHT_LUNG else "left"
        lo, hi = _z_range(volume, extent[label])
        return side, _zone(float(p[2]), lo, hi)
    mid = body_midline_x(volume, lungs=lungs) if midline_x is None else float(midline_x)
    dx = float(p[0]) - mid
    side = "midline" if abs(dx) <= MIDLINE_TOLERANCE_MM else ("right" if dx < 0 else "left")
    lo, hi = _z_range(volume, np.ones(volume.shape[0], dtype=bool))
    return side, _zone(float(p[2]), lo, hi)
