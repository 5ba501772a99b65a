"""The CT volume every layer of the package works with.

A :class:`CTVolume` is always axis-aligned in patient LPS space: array axis 0 runs towards the
patient's superior (+z), axis 1 towards posterior (+y), axis 2 towards the patient's left (+x).
Readers reorient (and, for oblique or tilted acquisitions, resample) into this frame, so that
napari's world coordinates ``(z, y, x)`` are LPS millimetres: the voxel shown at world point
``p`` is the patient's point ``p``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Window presets (name -> (level, width)) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}


def window_limits(level: float, width: float) -> tuple[float, float]:
    """Return the (low, high) HU display limits of a window given by level and width."""
    return (level - width / 2.0, level + width / 2.0)


@dataclass
class CTVolume:
    """A CT volume in HU on an axis-aligned patient-LPS grid.

    Attributes
    ----------
    array
        HU values, shape ``(nz, ny, nx)``; axis order (LPS z, LPS y, LPS x), each increasing.
    spacing_zyx
        Voxel size in mm along the three array axes.
    origin_lps
        LPS position ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``.
    metadata
        Study/series UIDs, patient fields, acquisition details, window presets, source path.
    warnings
        What the reader corrected or set aside (resampling, tilt, other series), one line each.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"CTVolume needs a 3-D array, got shape {self.array.shape}")
        self.spacing_zyx = tuple(float(s) for s in self.spacing_zyx)  # type: ignore[assignment]
        self.origin_lps = tuple(float(o) for o in self.origin_lps)  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def translate_zyx(self) -> tuple[float, float, float]:
        """napari ``translate`` of the image layer: the LPS (z, y, x) of voxel [0, 0, 0]."""
        x, y, z = self.origin_lps
        return (z, y, x)

    def index_to_lps(self, index_zyx: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Convert (fractional) voxel indices ``(..., 3)`` in (z, y, x) order to LPS ``(x, y, z)`` mm."""
        idx = np.asarray(index_zyx, dtype=float)
        zyx = idx * np.asarray(self.spacing_zyx) + np.asarray(self.translate_zyx)
        return zyx[..., ::-1].copy()

    def lps_to_index(self, lps_xyz: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Convert LPS ``(..., 3)`` (x, y, z) mm to fractional voxel indices in (z, y, x) order."""
        p = np.asarray(lps_xyz, dtype=float)[..., ::-1]
        return (p - np.asarray(self.translate_zyx)) / np.asarray(self.spacing_zyx)

    def default_window(self) -> tuple[float, float]:
        """(level, width) to open with: the file's own first window if it has one, else soft tissue."""
        windows = self.metadata.get("windows") or []
        if windows:
            level, width = windows[0]
            if width > 1:
                return float(level), float(width)
        return WINDOW_PRESETS["soft tissue"]
