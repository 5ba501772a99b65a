"""A procedural chest CT phantom in Hounsfield units.

The phantom is built analytically on the output grid, in patient LPS millimetres relative to the
body centre (``x`` towards the patient's left, ``y`` posterior, ``z`` superior, ``z = 0`` at the
top of the right diaphragm dome). Everything is vectorised numpy; the thin pulmonary vessels are
deposited as line densities and take their profile from the scanner blur applied at the end.

Modelled: body outline with subcutaneous fat and muscle, ribs (oblique bands), sternum, spine
(vertebral bodies with cortex, discs, canal, posterior elements), both lungs with a dependent
density gradient and soft texture, diaphragm domes with liver below on the right and stomach /
spleen on the left, heart (blood pool, myocardium, pericardial fat), aorta (ascending, arch,
descending), pulmonary trunk and arteries, SVC, trachea and main bronchi, oesophagus, branching
pulmonary arteries and veins (tapering tubes) and airways (air tubes with walls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: Styles the phantom knows. ``"alt"`` is held out of training for generalisation checks.
STYLES: tuple[str, ...] = ("default", "alt")

#: Slice spacings (mm) drawn from, with their weights.
SLICE_SPACINGS_MM = np.array([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0])
_Z_WEIGHTS = np.array([0.08, 0.1, 0.12, 0.2, 0.25, 0.15, 0.1])

#: Range of the in-plane pixel spacing (mm) of the default grid, as in clinical chest CT.
INPLANE_SPACING_MM: tuple[float, float] = (0.6, 1.0)

#: In-plane matrix of the default grid (a scanner's 512 x 512).
MATRIX = 512

#: Most slices of a default grid; thin-slice cases cover a random part of the chest.
MAX_SLICES = 160

#: Pixel size (mm) in which :attr:`Anatomy.noise_corr` is drawn (the noise grain is in mm).
NOISE_PIXEL_MM = 1.3


@dataclass
class Anatomy:
    """Random anatomical parameters of one phantom (mm, HU)."""

    a: float  # body half-width (lateral)
    b_ant: float  # body half-depth anterior of the centre
    b_post: float  # body half-depth posterior of the centre
    fat: float  # subcutaneous fat thickness
    muscle: float  # chest wall muscle thickness
    rib_t: float  # rib radial thickness
    apex: float  # z of the lung apices
    bottom: float  # lowest z of the posterior costophrenic recesses
    dome_left_drop: float  # left dome is this much below the right one
    dome_depth: float  # lateral drop of the domes
    heart: tuple[float, float, float, float, float, float]  # centre xyz, semi-axes
    heart_angle: float
    contrast: bool
    blood_hu: float
    lung_hu: float
    vessel_density: float
    noise_sd: float
    psf_mm: float
    noise_corr: float  # noise correlation (Gaussian sigma) in pixels of NOISE_PIXEL_MM
    breath: float  # inspiration factor scaling lung height
    extras: dict[str, Any] = field(default_factory=dict)


def draw_anatomy(rng: np.random.Generator, style: str) -> Anatomy:
    """Draw the random parameters of a phantom for ``style``."""
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; expected one of {', '.join(STYLES)}")
    alt = style == "alt"
    a = rng.uniform(135, 175)
    ratio = rng.uniform(0.62, 0.76) if not alt else rng.uniform(0.74, 0.9)
    b = a * ratio
    breath = rng.uniform(0.88, 1.08)
    contrast = bool(rng.random() < 0.35)
    return Anatomy(
        a=a,
        b_ant=b * rng.uniform(1.0, 1.08),
        b_post=b * rng.uniform(0.9, 0.98),
        fat=rng.uniform(5, 22) if not alt else rng.uniform(15, 32),
        muscle=rng.uniform(5, 10),
        rib_t=rng.uniform(6, 8),
        apex=rng.uniform(175, 215) * breath,
        bottom=-rng.uniform(45, 70) * breath,
        dome_left_drop=rng.uniform(8, 25),
        dome_depth=rng.uniform(55, 85) * breath,
        heart=(
            rng.uniform(12, 30),
            -rng.uniform(20, 35),
            rng.uniform(30, 50),
            rng.uniform(55, 70),
            rng.uniform(42, 52),
            rng.uniform(48, 60),
        ),
        heart_angle=np.deg2rad(rng.uniform(20, 40)),
        contrast=contrast,
        blood_hu=rng.uniform(180, 350) if contrast else rng.uniform(35, 50),
        lung_hu=rng.uniform(-880, -820),
        vessel_density=rng.uniform(0.8, 1.1) if not alt else rng.uniform(1.3, 1.7),
        noise_sd=rng.uniform(10, 25),
        psf_mm=rng.uniform(0.55, 0.9) if not alt else rng.uniform(0.3, 0.45),
        noise_corr=rng.uniform(0.6, 0.9) if not alt else rng.uniform(1.1, 1.5),
        breath=breath,
    )


@dataclass
class Grid:
    """The voxel grid of a phantom: shape, spacing ``(sz, sy, sx)`` mm, FOV centre, first slice."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    offset: tuple[float, float]  # body centre minus FOV centre (x, y), mm
    z0: float  # z of slice 0 (mm, relative to the right diaphragm dome)
    fitted: bool  # the whole chest squeezed into an explicit ``shape`` (coarse spacing)
    body_fov: float  # in-plane FOV (mm) that holds the body with a margin


def _as_spacing(spacing: float | tuple[float, ...]) -> tuple[float | None, float, float]:
    """``(sz or None, sy, sx)`` from an in-plane spacing or a ``(sz, sy, sx)`` / ``(sz, sxy)``."""
    if np.isscalar(spacing):
        s = float(spacing)  # type: ignore[arg-type]
        out: tuple[float | None, float, float] = (None, s, s)
    else:
        sp = [float(v) for v in spacing]  # type: ignore[union-attr]
        if len(sp) == 2:
            out = (sp[0], sp[1], sp[1])
        elif len(sp) == 3:
            out = (sp[0], sp[1], sp[2])
        else:
            raise ValueError(
                f"spacing must be a number, (sz, sxy) or (sz, sy, sx); got {spacing!r}"
            )
    if any(v is not None and not v > 0 for v in out):
        raise ValueError(f"spacing must be positive; got {spacing!r}")
    return out


def choose_grid(
    rng: np.random.Generator,
    anat: Anatomy,
    shape: tuple[int, int, int] | None,
    *,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
) -> Grid:
    """Pick the grid: shape, spacing ``(sz, sy, sx)``, the in-plane FOV centre offset, slice 0.

    * Default (clinical): in-plane spacing drawn in :data:`INPLANE_SPACING_MM` and a
      :data:`MATRIX` x :data:`MATRIX` matrix, as a scanner reconstructs a chest: the drawn
      spacing is at least the body's width / 512, so the field of view holds the body (a large
      patient gets the coarser pixels). Slice spacing from :data:`SLICE_SPACINGS_MM`; as many
      slices as cover the chest from below the diaphragm to above the apices, at most
      :data:`MAX_SLICES` (thin slices then cover a random part of it).
    * ``spacing``: that spacing instead of a drawn one; the matrix grows past 512 (in steps of
      32) when 512 pixels cannot hold the body.
    * ``matrix``: an ``n x n`` matrix at the (drawn or given) spacing, whatever the body width:
      a targeted reconstruction whose field of view (``n`` x spacing) may crop the body.
    * ``shape`` alone: the whole chest resampled onto ``(nz, ny, nx)``; the spacing follows
      (in-plane FOV 1.08-1.22 x the body width, slices cover the chest), so small shapes give
      coarse, non-clinical spacing. Fast; for tests and quick experiments.
    * ``shape`` with ``spacing``: exactly that grid, centred on the body (may crop it).

    Anatomy is always at its real size in millimetres.
    """
    z_lo_full = anat.bottom - rng.uniform(15, 35)
    z_hi_full = anat.apex + rng.uniform(5, 25)
    extent = z_hi_full - z_lo_full
    fov = 2 * anat.a * rng.uniform(1.08, 1.22)
    fitted = shape is not None and spacing is None and matrix is None
    if shape is not None and matrix is not None:
        raise ValueError("give shape or matrix, not both")
    if matrix is not None and int(matrix) < 16:
        raise ValueError(f"matrix must be at least 16 pixels; got {matrix!r}")
    if fitted:
        assert shape is not None
        nz, ny, nx = (int(s) for s in shape)
        sz = extent / nz
        sxy = round(fov / max(nx, ny), 4)
        sy = sx = sxy
    else:
        sz_given, sy, sx = _as_spacing(spacing) if spacing is not None else (None, 0.0, 0.0)
        if sz_given is None:
            sz = float(rng.choice(SLICE_SPACINGS_MM, p=_Z_WEIGHTS / _Z_WEIGHTS.sum()))
        else:
            sz = sz_given
        if spacing is None:
            lo, hi = INPLANE_SPACING_MM
            if shape is None and matrix is None:
                lo = min(max(lo, fov / MATRIX), hi)  # 512 pixels hold the body
            sy = sx = round(float(rng.uniform(lo, hi)), 4)
        if shape is not None:
            nz, ny, nx = (int(s) for s in shape)
        else:
            nz = min(int(round(extent / sz)), MAX_SLICES)
            if matrix is not None:
                ny = nx = int(matrix)
            else:
                ny = max(MATRIX, int(np.ceil(fov / sy / 32)) * 32)
                nx = max(MATRIX, int(np.ceil(fov / sx / 32)) * 32)
    if min(nz, ny, nx) < 1:
        raise ValueError(f"grid shape must be positive; got {(nz, ny, nx)}")
    cover = nz * sz
    z0 = z_lo_full + rng.uniform(0, max(extent - cover, 0.0))
    offset = (rng.uniform(-8, 8), rng.uniform(-12, 4))
    return Grid(
        shape=(nz, ny, nx),
        spacing=(float(sz), float(sy), float(sx)),
        offset=(float(offset[0]), float(offset[1])),
        z0=float(z0),
        fitted=fitted,
        body_fov=float(fov),
    )


def _capsules_occupancy(
    out: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    p0: np.ndarray,
    p1: np.ndarray,
    radius: float,
    soft: float,
) -> None:
    """Max-composite the partial-volume occupancy of a tube p0-p1 (mm) into ``out`` in place.

    The occupancy ramps from 1 to 0 over ``soft`` mm across the tube's surface. Evaluated in
    float32 on the segment's bounding box, with the distance to the segment as
    ``|q|^2 - along^2 + (along - clamp(along))^2`` (few full-box operations).
    """
    lo = np.minimum(p0, p1) - radius - soft
    hi = np.maximum(p0, p1) + radius + soft
    sl = []
    for c, a, b in zip(coords, lo, hi, strict=True):
        i0 = int(np.searchsorted(c, a))
        i1 = int(np.searchsorted(c, b, side="right"))
        if i1 <= i0:
            return
        sl.append(slice(i0, i1))
    f = np.float32
    z = (coords[0][sl[0]] - p0[0]).astype(f)[:, None, None]
    y = (coords[1][sl[1]] - p0[1]).astype(f)[None, :, None]
    x = (coords[2][sl[2]] - p0[2]).astype(f)[None, None, :]
    d = np.asarray(p1, dtype=float) - p0
    length = float(np.sqrt(d @ d))
    u = d / length if length > 1e-9 else np.zeros(3)
    along = (z * f(u[0]) + y * f(u[1])) + x * f(u[2])
    d2 = (z * z + y * y) + x * x
    d2 -= along * along
    along -= np.clip(along, 0.0, length)
    along *= along
    d2 += along
    np.maximum(d2, 0.0, out=d2)
    np.sqrt(d2, out=d2)
    # occupancy: (radius - dist) / soft + 0.5, clipped to [0, 1]
    d2 *= f(-1.0 / soft)
    d2 += f(radius / soft + 0.5)
    np.clip(d2, 0.0, 1.0, out=d2)
    view = out[sl[0], sl[1], sl[2]]
    np.maximum(view, d2, out=view)


def _polyline(points: list[tuple[float, float, float]], n: int = 6) -> np.ndarray:
    """Densify a polyline of (z, y, x) points with Catmull-Rom-like smoothing."""
    p = np.asarray(points, dtype=float)
    if len(p) < 3:
        return p
    out = [p[0]]
    for i in range(len(p) - 1):
        p0 = p[max(i - 1, 0)]
        p1, p2 = p[i], p[i + 1]
        p3 = p[min(i + 2, len(p) - 1)]
        for t in np.linspace(0, 1, n + 1)[1:]:
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * (
                    2 * p1
                    + (-p0 + p2) * t
                    + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                    + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                )
            )
    return np.asarray(out)


def _tube(
    out: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    points: list[tuple[float, float, float]],
    radius: float | tuple[float, float],
    soft: float,
) -> None:
    pts = _polyline(points)
    r0, r1 = (radius, radius) if np.isscalar(radius) else radius  # type: ignore[misc]
    n = len(pts) - 1
    for i in range(n):
        r = r0 + (r1 - r0) * (i + 0.5) / n
        _capsules_occupancy(out, coords, pts[i], pts[i + 1], r, soft)


@dataclass
class Tree:
    """Segments of a branching tube tree: ends ``(n, 2, 3)`` in (z, y, x) mm, radii and depth."""

    ends: np.ndarray
    radii: np.ndarray
    depth: np.ndarray


def grow_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    targets: np.ndarray,
    *,
    root_radius: float,
    min_radius: float = 0.35,
    trunk: np.ndarray | None = None,
) -> Tree:
    """Grow a space-filling tree from ``root`` to the attractor points ``targets`` ((n, 3) mm).

    Each node splits its attractors in two along their principal axis and sends a branch part way
    towards each half's centroid, so the tree fans out through the lung; radii follow Murray's law
    from the number of attractors a branch feeds.
    """
    # (written for speed with the same arithmetic as the plain version: sum / n is np.mean,
    # sqrt(v @ v) is np.linalg.norm)
    starts: list[np.ndarray] = []
    stops: list[np.ndarray] = []
    radii: list[float] = []
    depths: list[int] = []
    n_total = len(targets)
    stack: list[tuple[np.ndarray, np.ndarray, int]] = []
    if trunk is not None:
        starts.append(np.asarray(trunk, dtype=float))
        stops.append(np.asarray(root, dtype=float))
        radii.append(root_radius)
        depths.append(0)
    stack.append((root, np.arange(n_total), 1))
    leaf_r = max(root_radius * (1 / n_total) ** (1 / 2.6), min_radius)
    sqrt = math.sqrt
    while stack:
        start, idx, depth = stack.pop()
        pts = targets[idx]
        n = len(idx)
        if n <= 1 or depth > 14:
            starts.extend([start] * n)
            stops.extend(pts)
            radii.extend([leaf_r] * n)
            depths.extend([depth] * n)
            continue
        centred = pts - pts.sum(axis=0) / n
        # principal axis by power iteration (cheap, deterministic given rng)
        v = rng.normal(size=3)
        cov = centred.T @ centred
        for _ in range(8):
            v = cov @ v
            v /= sqrt(v @ v) + 1e-12
        proj = centred @ v
        order = np.argsort(proj, kind="stable")
        cut = n // 2 + int(rng.integers(-n // 6, n // 6 + 1))
        cut = min(max(cut, 1), n - 1)
        for part in (idx[order[:cut]], idx[order[cut:]]):
            c = targets[part].sum(axis=0) / len(part)
            frac = rng.uniform(0.35, 0.55) if len(part) > 1 else 1.0
            end = start + (c - start) * frac
            r = max(root_radius * (len(part) / n_total) ** (1 / 2.6), min_radius)
            starts.append(start)
            stops.append(end)
            radii.append(r)
            depths.append(depth)
            stack.append((end, part, depth + 1))
    if not starts:
        return Tree(np.zeros((0, 2, 3)), np.zeros(0), np.zeros(0, dtype=int))
    ends = np.stack([np.asarray(starts, dtype=float), np.asarray(stops, dtype=float)], axis=1)
    return Tree(ends, np.asarray(radii), np.asarray(depths))


def _splat_tree(
    occ: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: tuple[float, float, float],
    tree: Tree,
    thick: float,
) -> None:
    """Add a tree to the occupancy ``occ``: thick segments as tubes, thin ones as line densities."""
    zc, yc, xc = coords
    sz, sy, sx = spacing
    vox_vol = sz * sy * sx
    big = tree.radii >= thick
    for (p0, p1), r in zip(tree.ends[big], tree.radii[big], strict=True):
        _capsules_occupancy(occ, coords, p0, p1, float(r), min(sx, sy))
    small = ~big
    if not small.any():
        return
    ends = tree.ends[small]
    rad = tree.radii[small]
    seg = ends[:, 1] - ends[:, 0]
    length = np.linalg.norm(seg, axis=1)
    step = 0.5 * min(sx, sy)
    n = np.maximum(np.ceil(length / step).astype(int), 1)
    rep = np.repeat(np.arange(len(n)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 0.5) / np.repeat(n, n)
    pts = ends[rep, 0] + seg[rep] * t[:, None]
    w = np.pi * rad[rep] ** 2 * (length[rep] / n[rep]) / vox_vol
    iz = np.rint((pts[:, 0] - zc[0]) / sz).astype(int)
    iy = np.rint((pts[:, 1] - yc[0]) / sy).astype(int)
    ix = np.rint((pts[:, 2] - xc[0]) / sx).astype(int)
    ok = (
        (iz >= 0)
        & (iz < occ.shape[0])
        & (iy >= 0)
        & (iy < occ.shape[1])
        & (ix >= 0)
        & (ix < occ.shape[2])
    )
    flat = np.ravel_multi_index((iz[ok], iy[ok], ix[ok]), occ.shape)
    # sum the weights per voxel over the touched voxels only (not a volume-sized bincount)
    touched, inverse = np.unique(flat, return_inverse=True)
    add = np.bincount(inverse, weights=w[ok], minlength=len(touched)).astype(np.float32)
    flat_occ = occ.reshape(-1)
    flat_occ[touched] += add


def _span(c: np.ndarray, centre: float, half: float) -> slice:
    """Index range of the sorted coordinates ``c`` within ``centre +- half``, one index wider."""
    i0 = int(np.searchsorted(c, centre - half, side="left")) - 1
    i1 = int(np.searchsorted(c, centre + half, side="right")) + 1
    return slice(max(i0, 0), max(min(i1, len(c)), max(i0, 0)))


def _mask_span(m: np.ndarray) -> tuple[slice, slice]:
    """Row and column range of the True pixels of a 2-D mask (broadcast to 2-D first)."""
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _sheet_density(
    dist_mm: np.ndarray, width_mm: float | np.ndarray, thickness_mm: float | np.ndarray
) -> np.ndarray:
    """Occupancy of a thin sheet sampled on a grid: a tent of half-width ``width_mm`` (the
    sheet's extent within one voxel along the axis measured) holding ``thickness_mm`` of tissue,
    clipped to 1 (a sheet thinner than a voxel is partial volume, as on a scanner)."""
    w = np.maximum(width_mm, 1e-3)
    return np.clip(thickness_mm / w * np.clip(1.0 - np.abs(dist_mm) / w, 0.0, None), 0.0, 1.0)


def _add_fissures(
    rng: np.random.Generator,
    hu: np.ndarray,
    lungs: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: tuple[float, float, float],
    *,
    z_car: float,
    y_post: float,
    y_ant: float,
    x_m: float,
    cav_a: float,
) -> None:
    """Interlobar fissures in ``hu`` (in place, lung voxels only): both oblique (major) fissures
    and the right horizontal (minor) fissure, as 0.3-0.6 mm sheets of pleura.

    An oblique fissure runs from high on the back of the lung (about 2-4 cm above the carina)
    down and forwards to the anterior part of the diaphragm, its lateral part further back, so
    an axial slice shows it as a thin line from the hilum to the posterolateral chest wall that
    moves forwards in lower slices. The minor fissure is a nearly horizontal sheet at the level
    of the right hilum, in front of the oblique one. On thick slices a sheet at a slant spreads
    over several pixels and fades (partial volume), as fissures do on 5 mm CT.
    """
    zc, yc, xc = coords
    sz, sy, sx = spacing
    iz, iy, ix = np.nonzero(lungs)
    if len(iz) == 0:
        return
    z, y, x = zc[iz], yc[iy], xc[ix]
    side = lungs[iz, iy, ix]
    depth = y_post - y_ant
    add = np.zeros(len(iz), dtype=np.float32)
    oblique_y = np.full(len(iz), np.inf)
    for lab, sign in ((1, -1.0), (2, 1.0)):
        z_top = z_car + rng.uniform(18, 40) + (8 if lab == 2 else 0)
        y_top = y_post - rng.uniform(0.08, 0.18) * depth
        z_bot = -rng.uniform(10, 35)
        y_bot = y_ant + rng.uniform(0.2, 0.4) * depth
        k_z = (y_top - y_bot) / (z_top - z_bot)  # dy/dz (> 0: higher is further back)
        k_x = -rng.uniform(0.2, 0.45)  # from the hilum forwards to the lateral chest wall
        lat = sign * (x - x_m) - 0.35 * cav_a
        on = (side == lab) & (z <= z_top)
        y_f = y_top + (z - z_top) * k_z + k_x * lat
        oblique_y = np.where(side == lab, y_f, oblique_y)
        # the sheet's extent along y within one voxel: the pixel, or the slice's smear
        w_y = np.maximum(sy, k_z * sz)
        t_y = rng.uniform(0.3, 0.6) * np.sqrt(1 + k_z**2 + k_x**2)
        occ = _sheet_density(y - y_f, w_y, t_y)
        add = np.where(on, np.maximum(add, occ), add)
    # the right minor fissure: a gently domed, nearly horizontal sheet in front of the oblique one
    z_mf = z_car - rng.uniform(20, 40)
    dome = rng.uniform(0.0, 0.004)
    x_c = x_m - 0.5 * cav_a
    z_f = z_mf - dome * ((x - x_c) ** 2 + (y - y_ant - 0.3 * depth) ** 2)
    on = (side == 1) & (y < oblique_y - 2.0)
    w_z = max(sz, 0.5 * sy)
    occ = _sheet_density(z - z_f, w_z, rng.uniform(0.3, 0.6))
    add = np.where(on, np.maximum(add, occ), add)
    hit = add > 0.01
    if not hit.any():
        return
    fissure_hu = rng.uniform(-20, 40)
    i = (iz[hit], iy[hit], ix[hit])
    h = hu[i]
    hu[i] = np.maximum(h, h + (fissure_hu - h) * add[hit])


def _node_stations(
    *,
    z_car: float,
    z_arch: float,
    x_m: float,
    y_tr: float,
    tr_r: float,
    y_front: float,
    spine_front: float,
    hil_r: np.ndarray,
    hil_l: np.ndarray,
) -> dict[str, tuple[float, float, float]]:
    """Centres (z, y, x mm) of the usual mediastinal and hilar lymph node stations (IASLC)."""
    return {
        "2R": (z_arch + 30, y_tr - 4, x_m - tr_r - 10),
        "4R": (z_car + 14, y_tr - 2, x_m - tr_r - 9),
        "4L": (z_car + 8, y_tr - 6, x_m + tr_r + 7),
        "5": (z_arch - 12, y_front + 0.45 * (spine_front - y_front), x_m + 24),
        "6": (z_arch + 8, y_front + 14, x_m + 6),
        "7": (z_car - 20, y_tr + 14, x_m + 2),
        "10R": (float(hil_r[0]) + 4, float(hil_r[1]) - 2, float(hil_r[2]) + 10),
        "10L": (float(hil_l[0]) + 4, float(hil_l[1]) - 2, float(hil_l[2]) - 10),
    }


def _add_lymph_nodes(
    rng: np.random.Generator,
    hu: np.ndarray,
    lungs: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    stations: dict[str, tuple[float, float, float]],
    contrast: bool,
) -> None:
    """A few small, normal-sized lymph nodes (short axis 3-8 mm, ovoid, soft tissue) at some of
    ``stations``, drawn into mediastinal fat only (never over vessels, airways or lung)."""
    zc, yc, xc = coords
    names = list(stations)
    n = int(rng.integers(2, 6))
    pick = rng.choice(len(names), size=min(n, len(names)), replace=False)
    node_hu = rng.uniform(55, 80) if contrast else rng.uniform(30, 45)
    for k in sorted(int(i) for i in pick):
        cz, cy, cx = np.asarray(stations[names[k]], dtype=float) + rng.normal(0, 3, 3)
        short = rng.uniform(3.0, 8.0) / 2
        long_ = short * rng.uniform(1.2, 2.0)  # ovoid, long axis cranio-caudal
        # move the centre to the nearest mediastinal fat within 15 mm of the station
        near = (_span(zc, cz, 15.0), _span(yc, cy, 15.0), _span(xc, cx, 15.0))
        v = hu[near]
        fz, fy, fx = np.nonzero((v > -150) & (v < -30) & (lungs[near] == 0))
        if len(fz) == 0:
            continue
        d2 = (zc[near[0]][fz] - cz) ** 2 + (yc[near[1]][fy] - cy) ** 2 + (xc[near[2]][fx] - cx) ** 2
        j = int(np.argmin(d2))
        cz, cy, cx = zc[near[0]][fz[j]], yc[near[1]][fy[j]], xc[near[2]][fx[j]]
        box = (_span(zc, cz, long_), _span(yc, cy, short), _span(xc, cx, short))
        r = (
            ((zc[box[0]] - cz) / long_)[:, None, None] ** 2
            + ((yc[box[1]] - cy) / short)[None, :, None] ** 2
            + ((xc[box[2]] - cx) / short)[None, None, :] ** 2
        )
        view = hu[box]
        fat = (view > -150) & (view < -30) & (lungs[box] == 0)
        node = (r <= 1.0) & fat
        view[node] = node_hu + rng.normal(0, 4)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    w = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), np.minimum(lo + 1, n_in - 1)] += w
    return m


def _upsample(
    small: np.ndarray,
    shape: tuple[int, int, int],
    box: tuple[slice, slice, slice] = (slice(None), slice(None), slice(None)),
) -> np.ndarray:
    """Separable linear upsampling of a coarse 3-D field to ``shape``; only its part ``box``."""
    mz, my, mx = (_interp_matrix(n, m)[b] for n, m, b in zip(shape, small.shape, box, strict=True))
    out = np.tensordot(small, mx, axes=([2], [1]))
    out = np.einsum("abx,yb->ayx", out, my)
    out = np.tensordot(mz, out, axes=([1], [0]))
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class Phantom:
    """Output of :func:`build_phantom`."""

    hu: np.ndarray  # float32 HU before blur and noise
    lungs: np.ndarray  # uint8: 1 right lung, 2 left lung (parenchyma incl. vessels)
    origin_lps: tuple[float, float, float]
    spacing_zyx: tuple[float, float, float]
    anatomy: Anatomy
    body: np.ndarray  # bool body mask
    pleura: np.ndarray  # uint8 per side: the hemithorax space (today the same as ``lungs``)
    grid: Grid | None = None
    box: tuple[slice, slice, slice] | None = None  # the part of the grid holding the body


def build_phantom(
    rng: np.random.Generator,
    *,
    style: str = "default",
    shape: tuple[int, int, int] | None = None,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
) -> Phantom:
    """Build the noiseless, unblurred phantom (see the module docstring for what is modelled).

    ``shape``, ``spacing`` and ``matrix`` choose the grid (see :func:`choose_grid`); the anatomy
    is drawn in millimetres first and does not depend on them.
    """
    an = draw_anatomy(rng, style)
    grid = choose_grid(rng, an, shape, spacing=spacing, matrix=matrix)
    full_shape, spacing, offset, z0 = grid.shape, grid.spacing, grid.offset, grid.z0
    nz, ny_full, nx_full = full_shape
    sz, sy, sx = spacing
    # Coordinates relative to the body centre (mm).
    xc_full = (np.arange(nx_full) - (nx_full - 1) / 2) * sx + offset[0]
    yc_full = (np.arange(ny_full) - (ny_full - 1) / 2) * sy + offset[1]
    zc = z0 + np.arange(nz) * sz

    # Origin in LPS: a scanner-like table position, body centre not at 0.
    table_z = rng.uniform(-500, -100)
    origin_lps = (
        float(xc_full[0] + rng.uniform(-20, 20)),
        float(yc_full[0] + rng.uniform(-30, 30)),
        0.0,
    )
    shift = (origin_lps[0] - xc_full[0], origin_lps[1] - yc_full[0], table_z)
    origin_lps = (origin_lps[0], origin_lps[1], float(zc[0] + table_z))

    # Everything but air lies in the box of the body and the table: build the phantom there
    # (a 512 x 512 field of view is mostly air) and embed it at the end.
    rows = np.flatnonzero(
        (yc_full >= -1.06 * an.b_ant - 2 * sy) & (yc_full <= 0.93 * an.b_post + 22 + 2 * sy)
    )
    cols = np.flatnonzero(np.abs(xc_full) <= 1.12 * an.a + 2 * sx)
    if len(rows) == 0 or len(cols) == 0:  # a field of view beside the body
        rows, cols = np.arange(min(2, ny_full)), np.arange(min(2, nx_full))
    box = (
        slice(0, nz),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )
    xc, yc = xc_full[box[2]], yc_full[box[1]]
    shape = (nz, len(yc), len(xc))
    coords = (zc, yc, xc)
    X = xc[None, None, :].astype(np.float32)
    Y = yc[None, :, None].astype(np.float32)
    Z = zc[:, None, None].astype(np.float32)
    X2, Y2 = X[0], Y[0]  # 2-D broadcastables (1, nx) and (ny, 1)
    soft = min(sx, sy)

    hu = np.full(shape, -1000.0, dtype=np.float32)

    wob_a, wob_b, wob_p = rng.uniform(0, 0.04), rng.uniform(-0.03, 0.05), rng.uniform(0, 2 * np.pi)

    # --- body wall -------------------------------------------------------------------------
    def ellipse(dx: float, dy_ant: float, dy_post: float) -> np.ndarray:
        b = np.where(Y2 < 0, dy_ant, dy_post)
        r = (X2 / dx) ** 2 + (Y2 / b) ** 2
        ang = np.arctan2(Y2, X2)
        return r * (1 + wob_a * np.cos(3 * ang + wob_p) + wob_b * np.cos(4 * ang))

    body2 = ellipse(an.a, an.b_ant, an.b_post)
    # posterior flattening (patient lies on the table)
    flat_y = an.b_post * 0.93
    body2d = (body2 <= 1.0) & (Y2 <= flat_y)
    t_f = an.fat
    inner_fat = ellipse(an.a - t_f, an.b_ant - t_f * 0.8, an.b_post - t_f * 0.6) <= 1.0
    inner_fat &= Y2 <= flat_y - t_f * 0.6
    t_m = an.fat + an.muscle
    wall_in = ellipse(an.a - t_m, an.b_ant - t_m * 0.9, an.b_post - t_m)
    cav_a = an.a - t_m - an.rib_t
    cav_ba = an.b_ant - t_m * 0.9 - an.rib_t
    cav_bp = an.b_post - t_m - an.rib_t * 0.6
    body_z = np.ones((nz, 1, 1), dtype=bool)
    body = body2d[None] & body_z
    hu[body] = -95.0
    muscle2d = inner_fat
    # breast / pectoral soft tissue
    hu[:, muscle2d] = 45.0

    # table under the patient
    table = (Y2 > flat_y + 12) & (Y2 < flat_y + 22) & (np.abs(X2) < an.a * 1.1)
    hu[:, table] = 150.0
    table_core = (Y2 > flat_y + 14) & (Y2 < flat_y + 20) & (np.abs(X2) < an.a * 1.05)
    hu[:, table_core] = -300.0

    # --- thoracic cavity ---------------------------------------------------------------------
    # apex taper: the hemithoraces narrow to domes above apex - R
    r_ap = 85.0
    zz = np.clip((Z - (an.apex - r_ap)) / r_ap, 0, None)
    s = np.sqrt(np.clip(1 - zz**2, 0, 1))  # (nz,1,1)
    # below the lungs the cavity is the abdomen, which keeps full width
    cyc = (cav_bp - cav_ba) / 2  # cavity centre y
    cbx = cav_a
    cby = (cav_ba + cav_bp) / 2
    # the hemithoraces widen towards the bases (a truncated cone), more laterally than in depth
    cone = 1.0 - 0.1 * np.clip(Z / max(an.apex, 1.0), 0, 1)
    sx_z = np.maximum(s * cone, 1e-3)
    sy_z = np.maximum(s * (0.5 + 0.5 * cone), 1e-3)
    rc = ((X / (cbx * sx_z)) ** 2) + (((Y - cyc) / (cby * sy_z)) ** 2)
    cavity = rc <= 1.0

    # spine geometry
    y_vb = an.b_post - t_f - 72.0 + rng.uniform(-5, 5)  # vertebral body centre
    vb_rx, vb_ry = rng.uniform(17, 22), rng.uniform(14, 17)
    y_canal = y_vb + vb_ry + 10
    spine_front = y_vb - vb_ry

    # mediastinum: a band, narrow anteriorly and wide posteriorly, plus the heart
    x_m = rng.uniform(-4, 6)
    y_front = -cav_ba + cyc
    frac = np.clip((Y2 - y_front) / (spine_front - y_front), 0, 1)
    w_half = 8 + (26 + rng.uniform(0, 8) - 8) * frac
    w_half = w_half + 10 * np.clip((Z - (an.apex - 60)) / 60, 0, 1)  # wider at the thoracic inlet
    med = np.abs(X2 - x_m) < w_half
    # the vertebral body and, behind it, the posterior elements and paraspinal muscles; the lungs
    # wrap round the body into the paravertebral gutters
    spine_block = ((X2 / (vb_rx + 7)) ** 2 + ((Y2 - y_vb) / (vb_ry + 7)) ** 2 <= 1) | (
        (np.abs(X2) < vb_rx + 7) & (Y2 > y_vb) & (Y2 < y_vb + 30)
    )
    spine_block |= (X2 / (vb_rx + 42)) ** 2 + ((Y2 - y_vb - 52) / 36) ** 2 <= 1

    # diaphragm domes
    hx, hy, hz, ha, hb, hc = an.heart
    dome_x = 0.45 * cav_a
    top = np.where(X2 < x_m, 0.0, -an.dome_left_drop)
    r2 = ((np.abs(X2) - dome_x) / (0.75 * cav_a)) ** 2 + ((Y2 - cyc + 10) / (1.0 * cby)) ** 2
    dome = top - an.dome_depth * r2 - 25 * np.clip((Y2 - cyc) / cby, 0, 1) ** 2
    dome = np.maximum(dome, an.bottom)
    above = Z > dome[None]

    # heart ellipsoid (rotated in the axial plane)
    ca, sa = np.cos(an.heart_angle), np.sin(an.heart_angle)
    hz_abs = hz
    u = (X2 - hx) * ca + (Y2 - hy) * sa
    v = -(X2 - hx) * sa + (Y2 - hy) * ca
    # evaluated in the heart's box only (identical values there; outside it heart_r > 1.12)
    hbox = (
        _span(zc, hz_abs, hc * 1.06),
        *_mask_span((u / ha) ** 2 + (v / hb) ** 2 <= 1.12),
    )
    zrel = (Z[hbox[0]] - hz_abs) / hc
    heart_r = (u[hbox[1:]] / ha) ** 2 + (v[hbox[1:]] / hb) ** 2 + zrel**2
    heart = np.zeros(shape, dtype=bool)
    heart[hbox] = heart_r <= 1.0
    peri = np.zeros(shape, dtype=bool)
    peri[hbox] = heart_r <= 1.12

    hemi = cavity & above
    lung_space = hemi & ~med & ~spine_block[None] & ~peri
    right = X2 < x_m
    lungs = np.zeros(shape, dtype=np.uint8)
    lungs[lung_space & right[None]] = 1
    lungs[lung_space & ~right[None]] = 2

    # chest wall muscle between ribs and cavity; fill the cavity with mediastinal fat
    wall_inside = (wall_in <= 1.0)[None] & body
    hu[wall_inside] = -80.0  # extrapleural/mediastinal fat by default
    # intercostal muscle ring: between cavity and wall_in
    ring = wall_inside & ~cavity
    hu[ring] = 40.0
    # abdomen below the domes (only in the slices up to the highest dome point)
    ab = slice(0, int(np.searchsorted(zc, float(dome.max()), side="right")) + 1)
    abdomen = np.zeros(shape, dtype=bool)
    abdomen[ab] = cavity[ab] & ~above[ab]
    hu[abdomen] = 40.0
    liver = abdomen[ab] & ((X < x_m + 35 - 0.4 * (Y - cyc)) | (Z[ab] < dome.min() - 10))
    hu[ab][liver] = rng.uniform(50, 65) + (30 if an.contrast else 0)
    # stomach with a gas cap under the left dome
    st_c = (0.35 * cav_a, cyc - 0.35 * cby, -an.dome_left_drop - 45)
    sb = (_span(zc, st_c[2], 40), _span(yc, st_c[1], 35), _span(xc, st_c[0], 45))
    Xs, Ys, Zs = X[..., sb[2]], Y[:, sb[1]], Z[sb[0]]
    st = ((Xs - st_c[0]) / 45) ** 2 + ((Ys - st_c[1]) / 35) ** 2 + ((Zs - st_c[2]) / 40) ** 2 <= 1
    st &= abdomen[sb]
    hu[sb][st] = 20.0
    gas = st & (Ys < st_c[1] - 10 + 0.0 * Zs) & (Zs > st_c[2])
    hu[sb][gas] = -990.0
    # spleen posterior left
    sp_c = (0.7 * cav_a, cyc + 0.4 * cby, float(dome.min()))
    sb = (_span(zc, sp_c[2], 60), _span(yc, sp_c[1], 45), _span(xc, sp_c[0], 30))
    Xs, Ys, Zs = X[..., sb[2]], Y[:, sb[1]], Z[sb[0]]
    sp = (
        ((Xs - 0.7 * cav_a) / 30) ** 2
        + ((Ys - cyc - 0.4 * cby) / 45) ** 2
        + ((Zs - dome.min()) / 60) ** 2
    ) <= 1
    hu[sb][sp & abdomen[sb]] = 50.0 + (40 if an.contrast else 0)

    # lungs: parenchyma with a dependent gradient and low-frequency texture
    grad = 40 * np.clip((Y2 - cyc + cby) / (2 * cby), 0, 1) ** 2
    if grid.fitted:
        small_shape = tuple(max(2, s // 8) for s in full_shape)
    else:  # about 16 mm cells across slices, 10 mm in-plane, whatever the spacing
        small_shape = tuple(
            max(2, int(round(n * d / c)))
            for n, d, c in zip(full_shape, spacing, (16, 10, 10), strict=True)
        )
    tex = _upsample(rng.normal(size=small_shape).astype(np.float32), full_shape, box=box)
    in_lung = lungs > 0
    hu[in_lung] = an.lung_hu + np.broadcast_to(grad[None], shape)[in_lung] + 12 * tex[in_lung]
    del tex

    # heart, pericardial fat
    hh, hp, hm = hu[hbox], heart[hbox], hemi[hbox]
    hh[peri[hbox] & hm & ~hp] = -90.0
    myo_hu = 100.0 if an.contrast else 45.0
    hh[hp & hm] = myo_hu
    blood = (heart_r <= 0.72) & hm
    hh[blood] = an.blood_hu
    # septum-ish: a thin myocardium plane through the blood pool
    sep = blood & (np.abs(u[hbox[1:]] - 0.15 * ha) < 4)
    hh[sep] = myo_hu

    # --- great vessels, trachea, oesophagus ---------------------------------------------------
    z_car = an.apex * rng.uniform(0.5, 0.58)
    z_arch = z_car + rng.uniform(15, 30)
    occ = np.zeros(shape, dtype=np.float32)
    y_ao_desc = spine_front - 8
    asc_top = (z_arch, y_front + 0.35 * (spine_front - y_front), -6.0)
    _tube(
        occ,
        coords,
        [
            (hz + 25, hy - 5, hx - 25),
            (hz + 55, hy - 8, -8.0),
            asc_top,
            (z_arch + 22, (asc_top[1] + y_ao_desc) / 2, 8.0),
            (z_arch, y_ao_desc, 24.0),
            (z_arch - 40, y_ao_desc + 2, 22.0),
            (z_car - 80, y_ao_desc + 4, 16.0),
            (zc[0] - 60, y_ao_desc + 6, 8.0),
        ],
        (rng.uniform(13, 17), rng.uniform(10, 13)),
        soft,
    )
    vessel_hu = an.blood_hu
    # SVC (right), pulmonary trunk
    _tube(
        occ,
        coords,
        [(an.apex + 30, y_front + 30, -30.0), (z_car, y_front + 32, -28.0), (hz + 45, hy, -25.0)],
        rng.uniform(8, 11),
        soft,
    )
    pt_top = (hz + 70, hy + 5, hx + 10)
    _tube(
        occ, coords, [(hz + 30, hy - 15, hx + 5), (hz + 55, hy - 10, hx + 12), pt_top], 13.0, soft
    )
    hil_r = np.array([z_car - 15, spine_front - 18, -0.42 * cav_a + x_m * 0.5])
    hil_l = np.array([z_car - 8, spine_front - 14, 0.40 * cav_a + x_m * 0.5])
    _tube(occ, coords, [pt_top, (hz + 75, hy + 25, 10.0), tuple(hil_r)], 10.0, soft)
    _tube(occ, coords, [pt_top, (hz + 78, hy + 25, hx + 25), tuple(hil_l)], 10.0, soft)
    # pulmonary veins to the left atrium
    la = np.array([hz + 25, hy + 0.6 * hb, hx - 5])
    vr = np.array([z_car - 45, spine_front - 10, -0.38 * cav_a])
    vl = np.array([z_car - 40, spine_front - 8, 0.36 * cav_a])
    _tube(occ, coords, [tuple(la), tuple(vr)], 7.0, soft)
    _tube(occ, coords, [tuple(la), tuple(vl)], 7.0, soft)
    at = np.flatnonzero(occ)  # the occupancies are sparse: blend only where they are > 0
    hu_flat = hu.reshape(-1)
    h = hu_flat[at]
    hu_flat[at] = h + (vessel_hu - h) * occ.reshape(-1)[at]

    # oesophagus: soft tissue tube, left of midline in front of the spine
    occ[:] = 0
    _tube(
        occ,
        coords,
        [
            (zc[-1] + 20, spine_front - 6, 2.0),
            (z_car, spine_front - 8, 8.0),
            (zc[0] - 20, y_ao_desc - 10, 20.0),
        ],
        7.0,
        soft,
    )
    hu[occ > 0.5] = 35.0

    # trachea and main bronchi: wall then lumen
    y_tr = spine_front - 22
    tr_r = rng.uniform(8, 10.5)
    car = (z_car, y_tr + 4, x_m)
    rb = (z_car - 25, hil_r[1] + 6, hil_r[2] + 12)
    lb = (z_car - 30, hil_l[1] + 8, hil_l[2] - 12)
    tr_path = [(zc[-1] + 20, y_tr - 4, x_m), (z_car + 40, y_tr, x_m), car]
    airway_occ = np.zeros(shape, dtype=np.float32)
    wall_occ = np.zeros(shape, dtype=np.float32)
    _tube(wall_occ, coords, tr_path, tr_r + 2.0, soft)
    _tube(airway_occ, coords, tr_path, tr_r, soft)
    for path, rr in (([car, rb], 7.0), ([car, lb], 6.5)):
        _tube(wall_occ, coords, path, rr + 1.5, soft)
        _tube(airway_occ, coords, path, rr, soft)

    # --- pulmonary vessel and airway trees --------------------------------------------------
    vessel = np.zeros(shape, dtype=np.float32)
    thick = 1.2 * max(sx, sy)
    for side, hil, ven, bronch in ((1, hil_r, vr, rb), (2, hil_l, vl, lb)):
        idx = np.flatnonzero(lungs.ravel() == side)
        if len(idx) < 50:
            continue
        n_pts = int(230 * an.vessel_density * min(1.0, len(idx) * sz * sy * sx / 1.2e6) + 20)
        for root, radius in ((hil, 6.5), (ven, 5.5)):
            pick = rng.choice(idx, size=min(n_pts, len(idx)), replace=False)
            iz, iy, ix = np.unravel_index(pick, shape)
            tg = (
                np.stack([zc[iz], yc[iy], xc[ix]], 1)
                + rng.uniform(-0.5, 0.5, (len(pick), 3)) * spacing
            )
            tree = grow_tree(rng, root, tg, root_radius=radius)
            _splat_tree(vessel, coords, spacing, tree, thick)
            if root is hil:
                # airways run with the arteries: same tree, offset, first generations only
                keep = tree.radii >= 2.2
                off = rng.normal(size=3)
                off -= (off @ np.array([0, 0, 1.0])) * np.array([0, 0, 1.0])
                off /= np.linalg.norm(off)
                for (p0, p1), r in zip(tree.ends[keep], tree.radii[keep], strict=True):
                    o = off * (r * 1.7 + 1.0)
                    ra = r * 0.85
                    _capsules_occupancy(
                        wall_occ, coords, p0 + o, p1 + o, ra + 0.4 + 0.12 * ra, soft
                    )
                    _capsules_occupancy(airway_occ, coords, p0 + o, p1 + o, ra, soft)
                _capsules_occupancy(wall_occ, coords, np.array(bronch), root, 4.5, soft)
                _capsules_occupancy(airway_occ, coords, np.array(bronch), root, 3.8, soft)
    inside = lungs > 0
    inside_flat = inside.reshape(-1)
    at = np.flatnonzero(vessel)
    vessel_in = np.clip(vessel.reshape(-1)[at], 0, 1) * inside_flat[at]
    del vessel
    v_hu = vessel_hu if an.contrast else rng.uniform(30, 50)
    h = hu_flat[at]
    hu_flat[at] = h + (v_hu - h) * vessel_in
    # airway walls (only where they replace lung or mediastinal fat) then lumen
    at = np.flatnonzero(wall_occ)
    h = hu_flat[at]
    w = wall_occ.reshape(-1)[at] * (inside_flat[at] | (h < -50)).astype(np.float32)
    hu_flat[at] = h + (30.0 - h) * np.clip(w - airway_occ.reshape(-1)[at], 0, 1)
    at = np.flatnonzero(airway_occ)
    h = hu_flat[at]
    hu_flat[at] = h + (-995.0 - h) * airway_occ.reshape(-1)[at]
    del wall_occ, airway_occ

    # --- fissures and lymph nodes (their own random stream: the rest of the case is unchanged)
    extra = rng.spawn(1)[0]
    _add_fissures(
        extra,
        hu,
        lungs,
        coords,
        spacing,
        z_car=z_car,
        y_post=cyc + cby,
        y_ant=cyc - cby,
        x_m=x_m,
        cav_a=cav_a,
    )
    _add_lymph_nodes(
        extra,
        hu,
        lungs,
        coords,
        stations=_node_stations(
            z_car=z_car,
            z_arch=z_arch,
            x_m=x_m,
            y_tr=y_tr,
            tr_r=tr_r,
            y_front=y_front,
            spine_front=spine_front,
            hil_r=hil_r,
            hil_l=hil_l,
        ),
        contrast=an.contrast,
    )

    # --- bones --------------------------------------------------------------------------------
    # vertebrae: bodies with cortex, discs, canal, posterior elements
    pitch = rng.uniform(24, 28)
    phase = rng.uniform(0, pitch)
    disc = ((Z - phase) % pitch) < 5.0  # (nz,1,1)
    vb_r = (X2 / vb_rx) ** 2 + ((Y2 - y_vb) / vb_ry) ** 2
    vb = vb_r <= 1.0
    cortex = vb & (vb_r > (1 - 2.0 / vb_rx) ** 2)
    canal = (X2 / 8.5) ** 2 + ((Y2 - y_canal) / 8.0) ** 2 <= 1
    arch = ((X2 / 14) ** 2 + ((Y2 - y_canal) / 13) ** 2 <= 1) & ~canal & (Y2 > y_vb)
    spinous = (np.abs(X2) < 3.5) & (Y2 > y_canal) & (Y2 < y_canal + 34)
    transverse = (np.abs(Y2 - y_canal + 3) < 4.5) & (np.abs(X2) < 34)
    para = ((np.abs(X2) - 22) / 20) ** 2 + ((Y2 - y_canal - 14) / 22) ** 2 <= 1
    para &= body2d
    hu[:, para] = 48.0
    bone_hu = rng.uniform(180, 260)
    vb3 = np.broadcast_to(vb, shape) & ~disc
    hu[vb3] = bone_hu
    hu[np.broadcast_to(cortex, shape) & ~disc] = bone_hu + 450
    hu[np.broadcast_to(vb, shape) & disc] = 85.0
    post = arch | spinous | (transverse & ~vb)
    post_z = ((Z - phase - pitch / 2) % pitch) < pitch * 0.6
    hu[np.broadcast_to(post, shape) & post_z] = bone_hu + 300
    hu[:, canal] = 25.0

    # ribs: oblique bands in the ring just outside the cavity, descending anteriorly
    # (evaluated on the voxels of the thin ring outside the cavity only: a voxel of the rib ring
    # has rc <= bound, so the candidates hold all of it)
    bound = np.maximum(1 + an.rib_t / (cbx * sx_z), 1 + an.rib_t / (cby * sy_z)) ** 2 * 1.01
    cz, cy, cx = np.nonzero((rc > 1.0) & (rc <= bound) & body)
    Xp, Yp = X[0, 0, cx], Y[0, cy, 0]
    ring_out = (
        (Xp / (cbx * sx_z[cz, 0, 0] + an.rib_t)) ** 2
        + ((Yp - cyc) / (cby * sy_z[cz, 0, 0] + an.rib_t)) ** 2
    ) <= 1
    keep = ring_out & (~spine_block[cy, cx] | (np.abs(Xp) > vb_rx + 6))
    cz, cy, cx = cz[keep], cy[keep], cx[keep]
    theta = np.arctan2(-(Y2 - cyc), np.abs(X2))  # 0 lateral, +pi/2 anterior, -pi/2 posterior
    tpos = (theta + np.pi / 2) / np.pi  # 0 posterior .. 1 anterior
    drop = rng.uniform(85, 115)
    rib_pitch = (an.apex + 10 - (an.bottom - 20)) / 10.5
    tp = tpos[cy, cx]
    zr = Z[cz, 0, 0] + drop * tp**1.3 - (an.bottom - 20)
    k = np.round(zr / rib_pitch)
    dz = np.abs(zr - k * rib_pitch)
    rib_half = 3.5 + 1.5 * tp
    band = (dz < rib_half) & (k >= 0)
    rib = band & (k <= 11) & (tp < 0.85)
    r_rad = np.sqrt(rc[cz, cy, cx])
    edge = (np.abs(dz / rib_half) > 0.6) | (
        np.abs(r_rad - 1 - an.rib_t / cbx / 2) > 0.3 * an.rib_t / cbx
    )
    hu[cz[rib], cy[rib], cx[rib]] = np.where(edge[rib], 650.0, 230.0)
    cart = band & (k <= 9) & (tp >= 0.85)
    hu[cz[cart], cy[cart], cx[cart]] = 110.0
    # sternum
    st_y = -(an.b_ant - t_f - 6)
    stern = (np.abs(X2 - x_m) < 16) & (np.abs(Y2 - st_y) < 6)
    stern_z = (Z < z_car + 55) & (Z > hz - 50)
    hu[np.broadcast_to(stern, shape) & stern_z] = 300.0
    stern_c = (np.abs(X2 - x_m) < 13) & (np.abs(Y2 - st_y) < 4)
    hu[np.broadcast_to(stern_c, shape) & stern_z] = 200.0

    # outside the body: air (and the table)
    outside = ~body & ~np.broadcast_to(table, shape)
    hu[outside] = -1000.0

    an.extras.update(
        {
            "z_carina": float(z_car + shift[2]),
            "contrast": an.contrast,
            "shift": shift,
        }
    )
    # embed the body box in the field of view (air elsewhere)
    hu_full = np.full(full_shape, -1000.0, dtype=np.float32)
    hu_full[box] = hu
    lungs_full = np.zeros(full_shape, dtype=np.uint8)
    lungs_full[box] = lungs
    body_full = np.zeros(full_shape, dtype=bool)
    body_full[box] = body
    return Phantom(
        hu=hu_full,
        lungs=lungs_full,
        origin_lps=origin_lps,
        spacing_zyx=spacing,
        anatomy=an,
        body=body_full,
        pleura=lungs_full,
        grid=grid,
        box=box,
    )


def _gaussian_in_box(
    a: np.ndarray,
    sigma: tuple[float, float, float],
    box: tuple[slice, slice, slice] | None,
    *,
    truncate: float = 3.0,
) -> np.ndarray:
    """Gaussian filter (mode ``nearest``) of ``a`` where it is not constant: only in ``box``.

    Outside ``box`` ``a`` must be one constant value, so the result there is that value; the box
    is widened by the kernel radius, so inside it the result equals filtering the whole array.
    """
    if box is None:
        return ndi.gaussian_filter(a, sigma, mode="nearest", truncate=truncate)
    wide = []
    for ax, sl in enumerate(box):
        r = int(truncate * float(sigma[ax]) + 0.5) + 1
        start = 0 if sl.start is None else sl.start
        stop = a.shape[ax] if sl.stop is None else sl.stop
        wide.append(slice(max(start - r, 0), min(stop + r, a.shape[ax])))
    out = a.copy()
    w = (wide[0], wide[1], wide[2])
    out[w] = ndi.gaussian_filter(a[w], sigma, mode="nearest", truncate=truncate)
    return out


def scanner(
    hu: np.ndarray,
    rng: np.random.Generator,
    *,
    spacing_zyx: tuple[float, float, float],
    psf_mm: float,
    noise_sd: float,
    noise_corr: float,
    body: np.ndarray | None = None,
    box: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """Apply the scanner: Gaussian PSF (in-plane ``psf_mm``, slice profile from the spacing) and
    in-plane correlated noise of standard deviation ``noise_sd`` HU (``noise_corr``: the
    correlation length in pixels); returns int16 HU.

    ``box``: where ``hu`` is not air (-1000), to blur only there (see :func:`_gaussian_in_box`).
    """
    sz, sy, sx = spacing_zyx
    sig = (0.45, psf_mm / sy, psf_mm / sx)
    out = _gaussian_in_box(hu, sig, box)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    ns = (0.0, noise_corr, noise_corr)
    noise = ndi.gaussian_filter(noise, ns, mode="wrap", truncate=3.0)
    # normalise: variance reduction of the in-plane Gaussian
    noise *= noise_sd / max(float(noise[:: max(1, hu.shape[0] // 8)].std()), 1e-6)
    if body is not None:
        # air outside the body is quieter
        np.multiply(noise, 0.5, out=noise, where=~body)
    out += noise
    np.clip(out, -1024, 3071, out=out)
    return np.rint(out, out=out).astype(np.int16)
