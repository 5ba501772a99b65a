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
