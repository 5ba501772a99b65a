"""A real CT as another scanner setting would have acquired it (for robustness checks).

No napari or Qt here. ``scripts/eval_sets.py variants`` and the real-lesion tests use these to
ask whether a finding survives a lower dose or thicker slices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..io.volume import CTVolume

#: In-plane Gaussian sigma (pixels) of the added noise's grain: a low-dose reconstruction's
#: noise is correlated over neighbouring pixels, not white.
GRAIN_SIGMA_PX = 0.7


def add_low_dose_noise(arr: np.ndarray, *, noise_hu: float, seed: int) -> np.ndarray:
    """``arr`` (HU) plus noise of standard deviation ``noise_hu`` whose grain is correlated
    in-plane (:data:`GRAIN_SIGMA_PX`), clipped to the CT range; float32. The same ``seed`` and
    shape give the same noise."""
    grain = np.random.default_rng(seed).standard_normal(arr.shape).astype(np.float32)
    grain = ndi.gaussian_filter(grain, (0, GRAIN_SIGMA_PX, GRAIN_SIGMA_PX))
    out = np.asarray(arr, dtype=np.float32) + grain * (noise_hu / grain.std())
    return np.clip(out, -1024, 3071)


def low_dose(
    volume: CTVolume, *, noise_hu: float, slice_mm: float | None = None, seed: int = 7
) -> CTVolume:
    """``volume`` as a low-dose scan.

    Parameters
    ----------
    volume
        The CT.
    noise_hu
        Standard deviation (HU) of the added noise (:func:`add_low_dose_noise`).
    slice_mm
        Resample to slices this thick (linear), or keep the slices.
    seed
        Seed of the noise.

    Returns
    -------
    CTVolume
        int16 HU on the new grid, at the same origin.
    """
    arr = volume.array.astype(np.float32)
    spacing = np.asarray(volume.spacing_zyx, dtype=float)
    if slice_mm:
        arr = ndi.zoom(arr, (spacing[0] / slice_mm, 1.0, 1.0), order=1)
        spacing[0] = slice_mm
    arr = add_low_dose_noise(arr, noise_hu=noise_hu, seed=seed)
    return CTVolume(
        array=np.rint(arr).astype(np.int16),
        spacing_zyx=tuple(float(v) for v in spacing),
        origin_lps=volume.origin_lps,
    )
