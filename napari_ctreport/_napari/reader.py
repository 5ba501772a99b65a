"""npe2 reader: DICOM folders and files, NIfTI, NRRD, MHA/MHD into patient-LPS image layers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import CTReadError
from ..io.ct import load_ct, probe_ct
from .layers import image_layer_data

PathOrPaths = str | Sequence[str]


def _single_path(path: PathOrPaths) -> str | None:
    """Reduce napari's path argument to one file or folder, or ``None`` if we cannot read it."""
    if isinstance(path, str | os.PathLike):
        return str(path)
    paths = [str(p) for p in path]
    if len(paths) == 1:
        return paths[0]
    # Several DICOM files dropped together: read the folder that holds them.
    parents = {str(Path(p).parent) for p in paths}
    if len(parents) == 1 and all(Path(p).is_file() for p in paths):
        return parents.pop()
    return None


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list] | None:
    """Return :func:`read_ct` if ``path`` looks like CT we can open, else ``None``.

    The check is cheap (file names and a 132-byte DICOM preamble, no pixel reads) and never raises.
    """
    try:
        single = _single_path(path)
        if single is None or not probe_ct(single):
            return None
    except Exception:  # a reader probe must never raise into napari
        return None
    return read_ct


def read_ct(path: PathOrPaths) -> list[tuple[Any, ...]]:
    """Read a CT and return one image layer in patient LPS space.

    Problems are shown as napari notifications naming the file; a file we cannot open gives
    no layer and no traceback.
    """
    from napari.utils.notifications import show_error, show_warning

    single = _single_path(path)
    if single is None:
        show_error(f"{path}: several files from different folders; open one series at a time")
        return [(None,)]
    try:
        volume = load_ct(single)
    except CTReadError as err:
        show_error(str(err))
        return [(None,)]
    for line in volume.warnings:
        show_warning(line)
    return [image_layer_data(volume)]
