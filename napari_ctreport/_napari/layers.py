"""Conversions between CT volumes and napari layers.

napari world axes are (LPS z, LPS y, LPS x) in mm: an image layer gets ``scale`` = voxel spacing
and ``translate`` = the LPS position of voxel 0, so every layer of a study shares the patient frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io import CTVolume, window_limits

#: Key under which a layer's metadata keeps the study record.
META_KEY = "ctreport"


def image_layer_data(volume: CTVolume, *, name: str | None = None) -> tuple[Any, dict, str]:
    """Return a napari ``(data, kwargs, "image")`` tuple that shows ``volume`` in patient space.

    Parameters
    ----------
    volume
        A CT volume on the canonical LPS grid.
    name
        Layer name; defaults to the series description or the file name.
    """
    meta = volume.metadata
    if name is None:
        name = meta.get("series_description") or meta.get("source_name") or "CT"
    level, width = volume.default_window()
    record = {
        **meta,
        "spacing_zyx": list(volume.spacing_zyx),
        "origin_lps": list(volume.origin_lps),
        "warnings": list(volume.warnings),
        "window": [level, width],
    }
    kwargs = {
        "name": name,
        "scale": volume.spacing_zyx,
        "translate": volume.translate_zyx,
        "contrast_limits": window_limits(level, width),
        "colormap": "gray",
        "interpolation2d": "linear",
        "metadata": {META_KEY: record},
    }
    return volume.array, kwargs, "image"


def volume_from_layer(layer: Any) -> CTVolume:
    """Rebuild a :class:`CTVolume` from an image layer (ours or any 3-D image in the LPS frame).

    A layer opened by another reader is taken as it is drawn: its ``scale`` is the spacing and
    its ``translate`` the LPS (z, y, x) of voxel 0.
    """
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise ValueError(f"layer {layer.name!r} is {data.ndim}-D; a CT volume is 3-D")
    record = dict(layer.metadata.get(META_KEY, {}))
    scale = tuple(float(s) for s in layer.scale[-3:])
    tz, ty, tx = (float(t) for t in layer.translate[-3:])
    warnings = list(record.pop("warnings", []))
    for key in ("spacing_zyx", "origin_lps", "window"):
        record.pop(key, None)
    return CTVolume(
        array=data,
        spacing_zyx=scale,
        origin_lps=(tx, ty, tz),
        metadata=record,
        warnings=warnings,
    )


def study_summary(record: dict[str, Any], shape: tuple[int, ...]) -> str:
    """A few lines a radiologist checks before reading: who, which series, which grid."""
    sp = record.get("spacing_zyx") or []
    lines = [
        f"Patient: {record.get('patient_name') or '—'}  ID: {record.get('patient_id') or '—'}",
        f"Study: {record.get('study_description') or '—'}  {record.get('study_date') or ''}".rstrip(),
        f"Series: {record.get('series_description') or record.get('source_name') or '—'}",
        "Size (z, y, x): " + " × ".join(str(n) for n in shape),
        "Spacing (z, y, x): " + " × ".join(f"{s:.2f}" for s in sp) + " mm" if sp else "Spacing: —",
    ]
    if record.get("slice_thickness_mm"):
        lines.append(f"Slice thickness: {float(record['slice_thickness_mm']):.2f} mm")
    if record.get("kernel"):
        lines.append(f"Kernel: {record['kernel']}")
    if record.get("orientation_on_disk"):
        lines.append(f"On disk: {record['orientation_on_disk']} (shown in patient LPS)")
    return "\n".join(lines)
