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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: Styles the phantom knows. ``"alt"`` is held out of training for generalisation checks.
STYLES: tuple[str, ...] = ("default", "alt")

#: Slice spacings (mm) drawn from, with their weights.
_Z_SPACINGS = np.array([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0])
_Z_WEIGHTS = np.array([0.08, 0.1, 0.12, 0.2, 0.25, 0.15, 0.1])


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
    noise_corr: float
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


def choose_grid(
    rng: np.random.Generator,
    anat: Anatomy,
    shape: tuple[int, int, int] | None,
) -> tuple[tuple[int, int, int], tuple[float, float, float], tuple[float, float], float]:
    """Pick shape, spacing ``(sz, sy, sx)``, the in-plane FOV centre offset and the z of slice 0.

    The z range covers from below the diaphragm to above the apices; fine slices cover a random
    sub-range so that the default volume stays near 120-160 slices.
    """
    z_lo_full = anat.bottom - rng.uniform(15, 35)
    z_hi_full = anat.apex + rng.uniform(5, 25)
    extent = z_hi_full - z_lo_full
    fov = 2 * anat.a * rng.uniform(1.08, 1.22)
    if shape is None:
        n_xy = 256
        sz = float(rng.choice(_Z_SPACINGS, p=_Z_WEIGHTS / _Z_WEIGHTS.sum()))
        nz = int(round(extent / sz))
        if nz > 160:
            nz = 160
        shape = (nz, n_xy, n_xy)
    else:
        nz = int(shape[0])
        sz = extent / nz
    nz, ny, nx = (int(s) for s in shape)
    sxy = round(fov / max(nx, ny), 4)
    cover = nz * sz
    z0 = z_lo_full + rng.uniform(0, max(extent - cover, 0.0))
    offset = (rng.uniform(-8, 8), rng.uniform(-12, 4))
    return (nz, ny, nx), (float(sz), sxy, sxy), offset, float(z0)


def _capsules_occupancy(
    out: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    p0: np.ndarray,
    p1: np.ndarray,
    radius: float,
    soft: float,
) -> None:
    """Max-composite the partial-volume occupancy of a tube p0-p1 (mm) into ``out`` in place."""
    zc, yc, xc = coords
    lo = np.minimum(p0, p1) - radius - soft
    hi = np.maximum(p0, p1) + radius + soft
    sl = []
    for ax, c in enumerate((zc, yc, xc)):
        i0 = int(np.searchsorted(c, lo[ax]))
        i1 = int(np.searchsorted(c, hi[ax], side="right"))
        if i1 <= i0:
            return
        sl.append(slice(i0, i1))
    z = zc[sl[0]][:, None, None] - p0[0]
    y = yc[sl[1]][None, :, None] - p0[1]
    x = xc[sl[2]][None, None, :] - p0[2]
    d = p1 - p0
    dd = float(d @ d) or 1e-9
    t = np.clip((z * d[0] + y * d[1] + x * d[2]) / dd, 0.0, 1.0)
    dist = np.sqrt((z - t * d[0]) ** 2 + (y - t * d[1]) ** 2 + (x - t * d[2]) ** 2)
    occ = np.clip((radius - dist) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    view = out[sl[0], sl[1], sl[2]]
    np.maximum(view, occ, out=view)


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
    ends: list[np.ndarray] = []
    radii: list[float] = []
    depths: list[int] = []
    n_total = len(targets)
    stack: list[tuple[np.ndarray, np.ndarray, int]] = []
    if trunk is not None:
        ends.append(np.stack([trunk, root]))
        radii.append(root_radius)
        depths.append(0)
    stack.append((root, np.arange(n_total), 1))
    while stack:
        start, idx, depth = stack.pop()
        pts = targets[idx]
        if len(idx) <= 1 or depth > 14:
            for q in pts:
                r = max(root_radius * (1 / n_total) ** (1 / 2.6), min_radius)
                ends.append(np.stack([start, q]))
                radii.append(r)
                depths.append(depth)
            continue
        centred = pts - pts.mean(0)
        # principal axis by power iteration (cheap, deterministic given rng)
        v = rng.normal(size=3)
        cov = centred.T @ centred
        for _ in range(8):
            v = cov @ v
            v /= np.linalg.norm(v) + 1e-12
        proj = centred @ v
        order = np.argsort(proj, kind="stable")
        cut = len(idx) // 2 + int(rng.integers(-len(idx) // 6, len(idx) // 6 + 1))
        cut = min(max(cut, 1), len(idx) - 1)
        for part in (idx[order[:cut]], idx[order[cut:]]):
            c = targets[part].mean(0)
            frac = rng.uniform(0.35, 0.55) if len(part) > 1 else 1.0
            end = start + (c - start) * frac
            r = max(root_radius * (len(part) / n_total) ** (1 / 2.6), min_radius)
            ends.append(np.stack([start, end]))
            radii.append(r)
            depths.append(depth)
            stack.append((end, part, depth + 1))
    return Tree(np.asarray(ends), np.asarray(radii), np.asarray(depths))


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
    add = np.bincount(flat, weights=w[ok], minlength=occ.size).astype(np.float32)
    occ += add.reshape(occ.shape)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    w = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), np.minimum(lo + 1, n_in - 1)] += w
    return m


def _upsample(small: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Separable linear upsampling of a coarse 3-D field to ``shape``."""
    out = np.tensordot(small, _interp_matrix(shape[2], small.shape[2]), axes=([2], [1]))
    out = np.einsum("abx,yb->ayx", out, _interp_matrix(shape[1], small.shape[1]))
    out = np.tensordot(_interp_matrix(shape[0], small.shape[0]), out, axes=([1], [0]))
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
    pleura: np.ndarray  # uint8 per side: the hemithorax space (lung + what may replace it)


def build_phantom(
    rng: np.random.Generator,
    *,
    style: str = "default",
    shape: tuple[int, int, int] | None = None,
) -> Phantom:
    """Build the noiseless, unblurred phantom (see the module docstring for what is modelled)."""
    an = draw_anatomy(rng, style)
    shape, spacing, offset, z0 = choose_grid(rng, an, shape)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    # Coordinates relative to the body centre (mm).
    xc = (np.arange(nx) - (nx - 1) / 2) * sx + offset[0]
    yc = (np.arange(ny) - (ny - 1) / 2) * sy + offset[1]
    zc = z0 + np.arange(nz) * sz
    coords = (zc, yc, xc)
    X = xc[None, None, :].astype(np.float32)
    Y = yc[None, :, None].astype(np.float32)
    Z = zc[:, None, None].astype(np.float32)
    X2, Y2 = X[0], Y[0]  # 2-D broadcastables (1, nx) and (ny, 1)
    soft = min(sx, sy)

    # Origin in LPS: a scanner-like table position, body centre not at 0.
    table_z = rng.uniform(-500, -100)
    origin_lps = (float(xc[0] + rng.uniform(-20, 20)), float(yc[0] + rng.uniform(-30, 30)), 0.0)
    shift = (origin_lps[0] - xc[0], origin_lps[1] - yc[0], table_z)
    origin_lps = (origin_lps[0], origin_lps[1], float(zc[0] + table_z))

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
    zrel = (Z - hz_abs) / hc
    heart_r = (u / ha) ** 2 + (v / hb) ** 2 + zrel**2
    heart = heart_r <= 1.0
    peri = heart_r <= 1.12

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
    # abdomen below the domes
    abdomen = cavity & ~above
    hu[abdomen] = 40.0
    liver = abdomen & ((X < x_m + 35 - 0.4 * (Y - cyc)) | (Z < dome.min() - 10))
    hu[liver] = rng.uniform(50, 65) + (30 if an.contrast else 0)
    # stomach with a gas cap under the left dome
    st_c = (0.35 * cav_a, cyc - 0.35 * cby, -an.dome_left_drop - 45)
    st = ((X - st_c[0]) / 45) ** 2 + ((Y - st_c[1]) / 35) ** 2 + ((Z - st_c[2]) / 40) ** 2 <= 1
    st &= abdomen
    hu[st] = 20.0
    gas = st & (Y < st_c[1] - 10 + 0.0 * Z) & (Z > st_c[2])
    hu[gas] = -990.0
    # spleen posterior left
    sp = (
        ((X - 0.7 * cav_a) / 30) ** 2
        + ((Y - cyc - 0.4 * cby) / 45) ** 2
        + ((Z - dome.min()) / 60) ** 2
    ) <= 1
    hu[sp & abdomen] = 50.0 + (40 if an.contrast else 0)

    # lungs: parenchyma with a dependent gradient and low-frequency texture
    grad = 40 * np.clip((Y2 - cyc + cby) / (2 * cby), 0, 1) ** 2
    small_shape = tuple(max(2, s // 8) for s in shape)
    tex = _upsample(rng.normal(size=small_shape).astype(np.float32), shape)
    lung_val = an.lung_hu + grad[None] + 12 * tex
    in_lung = lungs > 0
    hu[in_lung] = lung_val[in_lung]

    # heart, pericardial fat
    hu[peri & hemi & ~heart] = -90.0
    myo_hu = 100.0 if an.contrast else 45.0
    hu[heart & hemi] = myo_hu
    blood = (heart_r <= 0.72) & hemi
    hu[blood] = an.blood_hu
    # septum-ish: a thin myocardium plane through the blood pool
    sep = blood & (np.abs(u - 0.15 * ha) < 4)
    hu[sep] = myo_hu

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
    hu_v = hu + (vessel_hu - hu) * occ
    mask_v = occ > 0
    hu[mask_v] = hu_v[mask_v]

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
    np.clip(vessel, 0, 1, out=vessel)
    inside = lungs > 0
    vessel_in = vessel * inside
    v_hu = vessel_hu if an.contrast else rng.uniform(30, 50)
    hu += (v_hu - hu) * vessel_in
    # airway walls (only where they replace lung or mediastinal fat) then lumen
    wall_occ *= (inside | (hu < -50)).astype(np.float32)
    hu += (30.0 - hu) * np.clip(wall_occ - airway_occ, 0, 1)
    hu += (-995.0 - hu) * airway_occ

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
    ring_in = rc > 1.0
    ring_out = (
        (X / (cbx * sx_z + an.rib_t)) ** 2 + ((Y - cyc) / (cby * sy_z + an.rib_t)) ** 2
    ) <= 1
    rib_zone = ring_in & ring_out & body & (~spine_block[None] | (np.abs(X) > vb_rx + 6))
    theta = np.arctan2(-(Y2 - cyc), np.abs(X2))  # 0 lateral, +pi/2 anterior, -pi/2 posterior
    tpos = (theta + np.pi / 2) / np.pi  # 0 posterior .. 1 anterior
    drop = rng.uniform(85, 115)
    rib_pitch = (an.apex + 10 - (an.bottom - 20)) / 10.5
    zr = Z + drop * tpos[None] ** 1.3 - (an.bottom - 20)
    k = np.round(zr / rib_pitch)
    dz = np.abs(zr - k * rib_pitch)
    rib_half = 3.5 + 1.5 * tpos[None]
    rib = rib_zone & (dz < rib_half) & (k >= 0) & (k <= 11) & (tpos[None] < 0.85)
    r_rad = np.sqrt(rc)
    edge = (np.abs(dz / rib_half) > 0.6) | (
        np.abs(r_rad - 1 - an.rib_t / cbx / 2) > 0.3 * an.rib_t / cbx
    )
    hu[rib] = np.where(edge[rib], 650.0, 230.0)
    cart = rib_zone & (dz < rib_half) & (k >= 0) & (k <= 9) & (tpos[None] >= 0.85)
    hu[cart] = 110.0
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

    pleura = np.zeros(shape, dtype=np.uint8)
    pleura[hemi & right[None] & ~med & ~peri & ~spine_block[None]] = 1
    pleura[hemi & ~right[None] & ~med & ~peri & ~spine_block[None]] = 2
    an.extras.update(
        {
            "z_carina": float(z_car + shift[2]),
            "contrast": an.contrast,
            "shift": shift,
        }
    )
    return Phantom(
        hu=hu,
        lungs=lungs,
        origin_lps=origin_lps,
        spacing_zyx=spacing,
        anatomy=an,
        body=body,
        pleura=pleura,
    )


def scanner(
    hu: np.ndarray,
    rng: np.random.Generator,
    *,
    spacing_zyx: tuple[float, float, float],
    psf_mm: float,
    noise_sd: float,
    noise_corr: float,
    body: np.ndarray | None = None,
) -> np.ndarray:
    """Apply the scanner: Gaussian PSF (in-plane ``psf_mm``, slice profile from the spacing) and
    in-plane correlated noise of standard deviation ``noise_sd`` HU; returns int16 HU."""
    sz, sy, sx = spacing_zyx
    sig = (0.45, psf_mm / sy, psf_mm / sx)
    out = ndi.gaussian_filter(hu, sig, mode="nearest", truncate=3.0)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    ns = (0.0, noise_corr, noise_corr)
    noise = ndi.gaussian_filter(noise, ns, mode="wrap", truncate=3.0)
    # normalise: variance reduction of the in-plane Gaussian
    noise *= noise_sd / max(float(noise[:: max(1, hu.shape[0] // 8)].std()), 1e-6)
    if body is not None:
        # air outside the body is quieter
        noise = np.where(body, noise, noise * 0.5)
    out += noise
    np.clip(out, -1024, 3071, out=out)
    return np.rint(out).astype(np.int16)
