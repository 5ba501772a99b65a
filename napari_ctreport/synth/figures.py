"""PNG figures of synthetic (and real) CT at standard windows, for the documentation.

Uses Pillow only (no matplotlib). Axial slices are shown radiologically: the patient's right on
the image left, anterior at the top, which is ``array[z]`` as stored in LPS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.volume import WINDOW_PRESETS, CTVolume
from ..report.lexicon import KIND_COLORS
from .generate import SynthCase


def windowed(hu: np.ndarray, preset: str) -> np.ndarray:
    """Map HU to uint8 grey levels with a :data:`WINDOW_PRESETS` window."""
    level, width = WINDOW_PRESETS[preset]
    return (np.clip((hu.astype(np.float32) - (level - width / 2)) / width, 0, 1) * 255).astype(
        np.uint8
    )


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _resize(img: np.ndarray, spacing_yx: tuple[float, float], mm_per_px: float) -> np.ndarray:
    from PIL import Image

    h = max(1, int(round(img.shape[0] * spacing_yx[0] / mm_per_px)))
    w = max(1, int(round(img.shape[1] * spacing_yx[1] / mm_per_px)))
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def _outline(rgb: np.ndarray, mask: np.ndarray, color: str) -> None:
    from scipy import ndimage as ndi

    edge = mask & ~ndi.binary_erosion(mask)
    rgb[edge] = [int(color[i : i + 2], 16) for i in (1, 3, 5)]


def axial_panel(
    volume: CTVolume,
    z: int,
    *,
    labels: np.ndarray | None = None,
    kinds: dict[int, str] | None = None,
    mm_per_px: float = 1.0,
) -> np.ndarray:
    """RGB panel of slice ``z``: lung window, mediastinal window, lung window with lesion outlines."""
    sl = volume.array[z]
    sp = (volume.spacing_zyx[1], volume.spacing_zyx[2])
    parts = [_rgb(windowed(sl, "lung")), _rgb(windowed(sl, "mediastinum"))]
    if labels is not None:
        over = _rgb(windowed(sl, "lung"))
        for lab, kind in (kinds or {}).items():
            m = labels[z] == lab
            if m.any():
                _outline(over, m, KIND_COLORS.get(kind, "#ff0000"))
        parts.append(over)
    parts = [np.stack([_resize(p[..., c], sp, mm_per_px) for c in range(3)], -1) for p in parts]
    gap = np.full((parts[0].shape[0], 4, 3), 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def case_slice(case: SynthCase) -> int:
    """The slice to show: through the largest lesion, else mid-lung."""
    if case.findings:
        f = max(case.findings, key=lambda f: f.volume_ml if f.kind != "pleural effusion" else 0)
        m = case.labels == f.label
        counts = m.sum(axis=(1, 2))
        return int(np.argmax(counts))
    return int(case.volume.shape[0] * 0.55)


def save_png(path: str | os.PathLike[str], rows: Sequence[np.ndarray]) -> Path:
    """Stack RGB rows (padded to the widest) into one PNG."""
    from PIL import Image

    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)
        padded += [np.concatenate([r, pad], 1), np.full((6, width, 3), 255, np.uint8)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded[:-1], 0)).save(path)
    return path


def body_crop(
    volume: CTVolume, z: int, *, margin_mm: float = 8.0, threshold: float = -500.0
) -> tuple[slice, slice]:
    """Rows and columns of slice ``z`` that hold tissue (above ``threshold`` HU), plus a margin."""
    tissue = volume.array[z] > threshold
    rows, cols = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return slice(None), slice(None)
    my = int(round(margin_mm / volume.spacing_zyx[1]))
    mx = int(round(margin_mm / volume.spacing_zyx[2]))
    ny, nx = tissue.shape
    return (
        slice(max(int(rows[0]) - my, 0), min(int(rows[-1]) + my + 1, ny)),
        slice(max(int(cols[0]) - mx, 0), min(int(cols[-1]) + mx + 1, nx)),
    )


def _cropped(volume: CTVolume, labels: np.ndarray | None, crop: tuple[slice, slice]):
    sub = CTVolume(
        array=volume.array[:, crop[0], crop[1]],
        spacing_zyx=volume.spacing_zyx,
        origin_lps=volume.origin_lps,
    )
    return sub, None if labels is None else labels[:, crop[0], crop[1]]


#: Cases of the documentation figure ``synthetic_axial.png``: ``(seed, style, grid options)``.
DOC_CASES: tuple[tuple[int, str, dict], ...] = (
    (3, "default", {}),
    (12, "default", {}),
    (27, "default", {"matrix": 256}),
    (5, "alt", {}),
)

#: The synthetic case set beside the real CT (a contrast-enhanced one, as the real CT is a CTA).
DOC_COMPARE: tuple[int, str, dict] = (12, "default", {})

#: The real chest CT of the comparison figures, relative to the project's ``shared`` folder.
REAL_CT = "data/real/totalsegmentator/pulmonary_report/ct_cropped.nii.gz"


def make_doc_figures(
    out_dir: str | os.PathLike[str],
    *,
    real_ct: str | os.PathLike[str] | None = None,
    cases: Sequence[tuple[int, str, dict]] = DOC_CASES,
    compare: tuple[int, str, dict] = DOC_COMPARE,
    mm_per_px: float = 0.8,
) -> list[Path]:
    """Write the documentation figures (``docs/img``) and return their paths.

    * ``synthetic_axial.png``: one row per case of ``cases`` (seed, style, grid options of
      :func:`~napari_ctreport.synth.generate_case`): lung window, mediastinal window and lung
      window with the lesion outlines, through the largest lesion, cropped to the body.
    * with ``real_ct``: ``real_ct_axial.png`` (its middle slice at the same windows) and
      ``synthetic_vs_real.png`` (the ``compare`` case at the level of the heart, cropped to the
      real CT's field of view around it, above the real CT, both at ``mm_per_px``).
    """
    from .generate import generate_case

    out = Path(out_dir)
    rows = []
    for seed, style, grid in cases:
        case = generate_case(seed=seed, style=style, **grid)
        z = case_slice(case)
        vol, lab = _cropped(case.volume, case.labels, body_crop(case.volume, z))
        kinds = {f.label: f.kind for f in case.findings}
        rows.append(axial_panel(vol, z, labels=lab, kinds=kinds, mm_per_px=mm_per_px))
    paths = [save_png(out / "synthetic_axial.png", rows)]
    if real_ct is not None:
        from ..io.ct import load_ct

        real = load_ct(real_ct)
        zr = real.shape[0] // 2
        real_panel = axial_panel(real, zr, mm_per_px=mm_per_px)
        paths.append(save_png(out / "real_ct_axial.png", [real_panel]))
        # the synthetic slice at the level of the heart, cropped to the real field of view
        # (centred on the heart, as the real crop is)
        seed, style, grid = compare
        first = generate_case(seed=seed, style=style, **grid)
        vol = first.volume
        ny_mm = real.shape[1] * real.spacing_zyx[1]
        nx_mm = real.shape[2] * real.spacing_zyx[2]
        zs = _heart_slice(first)
        cy, cx = _heart_centre(first, zs)
        hy = int(round(ny_mm / 2 / vol.spacing_zyx[1]))
        hx = int(round(nx_mm / 2 / vol.spacing_zyx[2]))
        crop = (slice(max(cy - hy, 0), cy + hy), slice(max(cx - hx, 0), cx + hx))
        sub, _ = _cropped(vol, None, crop)
        syn_panel = axial_panel(sub, zs, mm_per_px=mm_per_px)
        paths.append(save_png(out / "synthetic_vs_real.png", [syn_panel, real_panel]))
    return paths


def _heart_slice(case: SynthCase) -> int:
    """A slice through the heart: most soft tissue (20-400 HU) in the middle of the chest,
    among the slices with at least 80 % of the most lung (which leaves out the liver below)."""
    arr = case.volume.array
    lung = ((arr > -950) & (arr < -600)).sum(axis=(1, 2))
    nx = arr.shape[2]
    mid = arr[:, :, int(nx * 0.3) : int(nx * 0.7)]
    soft = ((mid > 20) & (mid < 400)).sum(axis=(1, 2)).astype(float)
    soft[lung < 0.8 * lung.max()] = -1
    return int(np.argmax(soft))


def _heart_centre(case: SynthCase, z: int) -> tuple[int, int]:
    """Row and column of the centroid of the soft tissue between the lungs on slice ``z``."""
    from scipy import ndimage as ndi

    sl = case.volume.array[z]
    lung = (sl > -950) & (sl < -600)
    lung = ndi.binary_opening(lung, iterations=2)
    cols = np.flatnonzero(lung.any(axis=0))
    rows = np.flatnonzero(lung.any(axis=1))
    if len(cols) == 0:
        return sl.shape[0] // 2, sl.shape[1] // 2
    x0, x1 = int(cols[0]), int(cols[-1])
    y0, y1 = int(rows[0]), int(rows[-1])
    soft = np.zeros_like(lung)
    # the middle half of the chest's width, in front of the spine (the back quarter)
    soft[y0 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4] = True
    soft &= (sl > 20) & (sl < 400)
    ys, xs = np.nonzero(soft)
    if len(ys) == 0:
        return (y0 + y1) // 2, (x0 + x1) // 2
    return int(ys.mean()), int(xs.mean())
