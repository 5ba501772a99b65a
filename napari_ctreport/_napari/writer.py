"""npe2 writer: save an image layer as NIfTI, NRRD or MHA with its patient-LPS geometry."""

from __future__ import annotations

from typing import Any

from ..io.write import write_volume
from .layers import volume_from_layer


class _LayerView:
    """The parts of a napari layer that :func:`volume_from_layer` reads, from writer arguments."""

    def __init__(self, data: Any, meta: dict) -> None:
        self.data = data
        self.name = meta.get("name", "image")
        self.scale = meta.get("scale", (1.0, 1.0, 1.0))
        self.translate = meta.get("translate", (0.0, 0.0, 0.0))
        self.metadata = meta.get("metadata", {}) or {}


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer to ``path`` (format from the extension); return the written paths."""
    volume = volume_from_layer(_LayerView(data, meta))
    return [str(write_volume(volume, path))]
