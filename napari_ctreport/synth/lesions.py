"""Synthetic lesions: masks and attenuation of nodules, masses and pleural effusions.

Lesions are built in a local box around their centre, in millimetres on the volume's grid, so the
same code inserts them into the phantom (before the scanner blur and noise) and into real CT
(where they get their own blur and noise). Shapes: ``round`` (a randomly oriented ellipsoid),
``lobulated`` (radius modulated by a few smooth bumps) and ``spiculated`` (a core with tapering
spikes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..report.measure import largest_component

#: Relative frequency of each finding kind in synthetic cases.
KIND_WEIGHTS: dict[str, float] = {
    "solid nodule": 0.30,
    "part-solid nodule": 0.12,
    "ground-glass nodule": 0.14,
    "calcified nodule": 0.12,
    "mass": 0.13,
    "pleural effusion": 0.19,
}

SHAPES: tuple[str, ...] = ("round", "lobulated", "spiculated")


@dataclass
class Lesion:
    """A lesion on a local box of the volume grid.

    ``mask`` is the finding's region; ``hu`` the attenuation inside it; ``blend`` says how it
    combines with the tissue below (``"max"`` keeps brighter vessels through a ground-glass
    nodule, ``"set"`` replaces, as fluid does). ``occupancy`` (same box), when given, is the
    share of each voxel the lesion fills (:func:`partial_volume`): ``>= 0.5`` exactly on
    ``mask``, a ramp across its surface; without it the lesion fills ``mask`` whole.
    """

    kind: str
    box: tuple[slice, slice, slice]
    mask: np.ndarray
    hu: np.ndarray
    blend: str = "max"
    attributes: dict[str, Any] = field(default_factory=dict)
    core: np.ndarray | None = None  # solid component of a part-solid nodule (same box)
    occupancy: np.ndarray | None = None


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def local_box(
    center_idx: np.ndarray,
    half_mm: float,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Slices of a box of half-size ``half_mm`` round ``center_idx`` and its (z, y, x) offsets in mm."""
    sl = []
    offs = []
    for ax in range(3):
        h = int(np.ceil(half_mm / spacing[ax])) + 1
        c = float(center_idx[ax])
        i0 = max(int(np.floor(c)) - h, 0)
        i1 = min(int(np.ceil(c)) + h + 1, shape[ax])
        sl.append(slice(i0, i1))
        offs.append((np.arange(i0, i1) - c) * spacing[ax])
    z = offs[0][:, None, None]
    y = offs[1][None, :, None]
    x = offs[2][None, None, :]
    return (sl[0], sl[1], sl[2]), (z, y, x)


def shape_rho(
    rng: np.random.Generator,
    shape: str,
    radius: float,
    zyx: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    aspect: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Normalised radius field of a lesion shape: ``<= 1`` inside. ``radius`` is in mm.

    The shape is stretched by random relative semi-axes ``(1, 0.8-1, 0.75-1)`` in a random
    orientation; ``aspect`` fixes them (``(1, 1, 1)``: a sphere of diameter ``2 * radius``).
    """
    z, y, x = zyx
    rot = _rotation(rng)
    axes = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.75, 1.0)])
    if aspect is not None:
        axes = np.asarray(aspect, dtype=float)
    p = np.stack(np.broadcast_arrays(z, y, x), -1)
    q = (p @ rot.T) / axes
    dist = np.linalg.norm(q, axis=-1)
    if shape == "round":
        return dist / radius
    u = q / np.maximum(dist, 1e-6)[..., None]
    if shape == "lobulated":
        dirs = _unit_vectors(rng, int(rng.integers(3, 7)))
        amp = rng.uniform(0.12, 0.3, len(dirs))
        kappa = rng.uniform(3.0, 7.0)
        bumps = (amp * np.exp(kappa * (u @ dirs.T - 1.0))).sum(-1)
        return dist / (radius * (0.85 + bumps))
    if shape == "spiculated":
        core = dist / (radius * 0.85)
        dirs = _unit_vectors(rng, int(rng.integers(6, 13)))
        rho = core
        for d in dirs:
            length = radius * rng.uniform(1.3, 1.7)
            width = max(radius * rng.uniform(0.12, 0.2), 0.6)
            t = q @ d
            perp = np.sqrt(np.maximum(dist**2 - t**2, 0.0))
            taper = width * np.clip(1.0 - t / length, 0.0, 1.0)
            spike = np.where((t > 0) & (t < length), perp / np.maximum(taper, 1e-6), np.inf)
            rho = np.minimum(rho, spike)
        return rho
    raise ValueError(f"unknown lesion shape {shape!r}; expected one of {', '.join(SHAPES)}")


def partial_volume(rho: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The share of each voxel inside the surface ``rho == 1`` of a normalised radius field
    (:func:`shape_rho`, ``<= 1`` inside) on a grid of ``spacing`` (mm, z y x).

    Linearised at each voxel: the share is ``0.5`` on the surface and ramps to 0 and 1 over the
    change of ``rho`` across the voxel's extent (``sum(|d rho / d x_i| * spacing_i)``, the width
    of a box voxel along the surface normal). A voxel's share is ``>= 0.5`` exactly where its
    centre is inside (``rho <= 1``, the lesion's mask), so the attenuation's half-way contour
    runs where the mask's edge does and the image shows the lesion at the size its mask
    measures.
    """
    grads = np.gradient(rho, *spacing) if min(rho.shape) > 1 else [np.zeros_like(rho)] * 3
    across = sum(np.abs(g) * s for g, s in zip(grads, spacing, strict=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        occ = 0.5 + (1.0 - rho) / across
    occ = np.where(np.isfinite(occ), occ, (rho <= 1.0).astype(float))
    # the share is >= 0.5 exactly on the mask (where the gradient vanishes the ramp's estimate
    # can disagree with rho's side of the surface)
    occ = np.where(rho <= 1.0, np.maximum(occ, 0.5), np.minimum(occ, 0.499))
    return np.clip(occ, 0.0, 1.0).astype(np.float32)


def nodule_diameter(rng: np.random.Generator, kind: str, min_mm: float) -> float:
    """Draw a nominal diameter (mm): nodules 3-30 mm (skewed small), masses 32-70 mm."""
    if kind == "mass":
        return float(rng.uniform(34, 70))
    lo = max(3.0, min_mm)
    hi = 12.0 if kind == "calcified nodule" else 26.0
    hi = max(hi, lo + 1)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def make_lesion(
    rng: np.random.Generator,
    kind: str,
    *,
    center_idx: np.ndarray,
    diameter_mm: float,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    lesion_shape: str | None = None,
    aspect: tuple[float, float, float] | None = None,
) -> Lesion:
    """Build a nodule or mass of ``kind`` centred at ``center_idx`` (fractional voxel indices).

    ``diameter_mm`` is the nominal diameter (of the longest semi-axis; ``aspect`` as in
    :func:`shape_rho`), in mm whatever the grid's ``spacing``.
    """
    r = diameter_mm / 2
    if lesion_shape is None:
        if kind == "calcified nodule":
            lesion_shape = "round"
        elif kind == "mass":
            lesion_shape = str(
                rng.choice(["lobulated", "spiculated", "round"], p=[0.5, 0.35, 0.15])
            )
        elif kind == "ground-glass nodule":
            lesion_shape = str(rng.choice(["round", "lobulated"], p=[0.7, 0.3]))
        else:
            lesion_shape = str(rng.choice(list(SHAPES), p=[0.5, 0.3, 0.2]))
    half = r * (1.8 if lesion_shape == "spiculated" else 1.4) + 2 * max(spacing)
    box, zyx = local_box(center_idx, half, spacing, shape)
    rho = shape_rho(rng, lesion_shape, r, zyx, aspect=aspect)
    mask = rho <= 1.0
    attrs: dict[str, Any] = {"shape": lesion_shape}
    tex = rng.normal(0, 1, mask.shape).astype(np.float32)
    core = None
    if kind == "solid nodule":
        hu = rng.uniform(20, 55) + 8 * tex
    elif kind == "mass":
        hu = rng.uniform(28, 48) + 8 * tex
        if rng.random() < 0.4:
            hu = np.where(rho < rng.uniform(0.3, 0.5), rng.uniform(5, 20), hu)
            attrs["necrosis"] = True
    elif kind == "calcified nodule":
        hu = rng.uniform(300, 900) + 30 * tex
    elif kind == "ground-glass nodule":
        hu = rng.uniform(-620, -380) + 25 * tex
    elif kind == "part-solid nodule":
        hu = rng.uniform(-600, -420) + 25 * tex
        frac = rng.uniform(0.3, 0.6)
        off = _unit_vectors(rng, 1)[0] * r * (1 - frac) * rng.uniform(0, 0.6)
        z, y, x = zyx
        cz = np.sqrt((z - off[0]) ** 2 + (y - off[1]) ** 2 + (x - off[2]) ** 2)
        core = (cz <= r * frac) & mask
        hu = np.where(core, rng.uniform(20, 50) + 8 * tex, hu)
    else:
        raise ValueError(f"make_lesion does not build {kind!r}")
    hu = np.asarray(hu, dtype=np.float32)
    # solid tissue replaces what was there (vessels end at a nodule); ground glass only raises
    # the attenuation, so vessels stay visible through it
    blend = "max" if kind in ("ground-glass nodule", "part-solid nodule") else "set"
    return Lesion(
        kind=kind,
        box=box,
        mask=mask,
        hu=hu,
        blend=blend,
        attributes=attrs,
        core=core,
        occupancy=partial_volume(rho, spacing),
    )


def effusion_mask(
    rng: np.random.Generator,
    lung_side: np.ndarray,
    *,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """A dependent (posterior, basal) crescent of one hemithorax's lung space ``lung_side`` (bool).

    For every (slice, column) the deepest ``depth(z)`` mm of lung next to the posterior chest
    wall becomes fluid; the depth is largest at the base and tapers to nothing at the meniscus.
    Only the largest connected piece is kept: in columns where the heart or the diaphragm dome
    fills the back of the chest, the deepest lung lies far anterior, and free fluid does not
    collect there (those columns gave a detached anterior strip and scattered specks, which made
    the ground-truth axial diameter span the whole hemithorax). Above the meniscus, where the
    depth is 0, no voxel is fluid (an inclusive bound made the deepest lung voxel of every
    column fluid up to the apex: a one-voxel sheet no reader would see as fluid).
    """
    sz, sy, _ = spacing
    nz, ny, _ = lung_side.shape
    has = lung_side.any(axis=1)  # (nz, nx)
    zs = np.flatnonzero(has.any(axis=1))
    if len(zs) == 0:
        return np.zeros_like(lung_side)
    z_bot = zs[0]
    height = rng.uniform(35, 110) / sz
    depth0 = rng.uniform(12, 45) / sy
    zi = np.arange(nz)
    taper = np.clip(1.0 - (zi - z_bot) / max(height, 1.0), 0.0, 1.0) ** 0.6
    depth = depth0 * taper  # voxels, (nz,)
    # deepest lung voxel of each (z, x) column
    ymax = ny - 1 - np.argmax(lung_side[:, ::-1, :], axis=1)  # (nz, nx)
    yi = np.arange(ny)[None, :, None]
    mask = lung_side & ((ymax[:, None, :] - yi) < depth[:, None, None]) & has[:, None, :]
    return largest_component(mask)


def composite(hu: np.ndarray, lesion: Lesion) -> None:
    """Write ``lesion`` into ``hu`` (float) in place, each voxel mixed with the tissue below by
    the share the lesion fills (``lesion.occupancy``, partial volume; before the scanner blur).

    (Until session 35 the attenuation of solid lesions was written whole one voxel past the
    mask in-plane, so the image showed them a voxel wider on every side than their ground truth
    measured: +3 mm on a 6 mm nodule on 1.5 mm pixels.)"""
    view = hu[lesion.box]
    occ = lesion.occupancy if lesion.occupancy is not None else lesion.mask.astype(np.float32)
    m = occ > 0
    mixed = view[m] + occ[m] * (lesion.hu[m] - view[m])
    view[m] = mixed if lesion.blend == "set" else np.maximum(view[m], mixed)
