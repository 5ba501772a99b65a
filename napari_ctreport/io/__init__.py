"""Reading and writing CT and case folders; no napari or Qt here."""

from .errors import (
    CTReadError,
    CTReadWarning,
    GeometryError,
    LocalizerError,
    NotCTError,
    UnreadableError,
)
from .volume import WINDOW_PRESETS, CTVolume, window_limits

__all__ = [
    "CTReadError",
    "CTReadWarning",
    "CTVolume",
    "GeometryError",
    "LocalizerError",
    "NotCTError",
    "UnreadableError",
    "WINDOW_PRESETS",
    "window_limits",
]
