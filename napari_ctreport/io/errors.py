"""Errors and warnings raised while reading CT.

Every error names the file and the problem in one line, so the CLI can print ``str(err)`` and the
viewer can show it as a notification without a traceback.
"""

from __future__ import annotations

from os import PathLike


class CTReadError(Exception):
    """A file or folder could not be opened as a CT volume.

    Parameters
    ----------
    path
        The file or folder at fault.
    problem
        What is wrong with it, in words a radiologist understands.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnreadableError(CTReadError):
    """The file is not a readable image (corrupt, unknown format, no pixel data)."""


class NotCTError(CTReadError):
    """The file is a medical image, but not a CT (e.g. MR, a DICOM SEG or SR)."""


class LocalizerError(CTReadError):
    """The image is a localizer / scout / topogram, not an axial CT volume."""


class GeometryError(CTReadError):
    """The slices do not form a usable volume (missing slices, mixed orientations, ...)."""


class CTReadWarning(UserWarning):
    """Something about the input was corrected or set aside while reading; the data is usable."""
