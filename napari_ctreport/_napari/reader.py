"""npe2 reader: DICOM folders and files, NIfTI, NRRD, MHA/MHD into patient-LPS image layers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import CTReadError
from ..io.ct import (
    SeriesInfo,
    ct_series,
    dicom_series_uid,
    is_dicom_file,
    is_dicom_folder,
    load_ct,
    open_series_of_file,
    probe_ct,
)
from .layers import META_KEY, image_layer_data

#: A DICOM folder with several CT series (a study: thin and thick slices, other kernels or
#: phases) opens each series as its own layer when they hold at most this many images together:
#: the largest shown and selected, the others hidden. Beyond it only the largest opens, and a
#: warning names the others (``ctreport info FOLDER`` lists them; ``--series`` opens one).
ALL_SERIES_MAX_IMAGES = 2000

#: One image of a CT series opens the whole series (as ITK-SNAP and Slicer do). napari hands
#: the files of a drop over one at a time (several files dropped without Shift): a file of a
#: series this reader opened whole from the same folder adds nothing when the last file of it
#: came less than this many seconds before and the series is a layer of the viewer, so the drop
#: gives one layer, not one per file.
SAME_DROP_S = 5.0

PathOrPaths = str | Sequence[str]

#: (folder, SeriesInstanceUID) of the series opened whole from one of their files -> when the
#: last file of that series came (``time.monotonic()``); see :data:`SAME_DROP_S`.
_opened_whole: dict[tuple[str, str], float] = {}


def _single_path(path: PathOrPaths) -> str | None:
    """Reduce napari's path argument to one file or folder, or ``None`` if we cannot read it.

    Several paths are read as one only when they are DICOM files of one folder
    (:func:`~napari_ctreport.io.ct.is_dicom_file`: a suffix or a 132-byte head each), as that
    folder; several NIfTIs (a CT and its masks), or files of several folders, are not ours to
    read as one.
    """
    if isinstance(path, str | os.PathLike):
        return str(path)
    paths = [str(p) for p in path]
    if len(paths) == 1:
        return paths[0]
    # Several DICOM files dropped together: read the folder that holds them.
    parents = {str(Path(p).parent) for p in paths}
    if len(parents) == 1 and all(is_dicom_file(p) for p in paths):
        return parents.pop()
    return None


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list] | None:
    """Return :func:`read_ct` if ``path`` looks like CT we can open, else ``None``.

    The check is cheap (file and folder names, and a few 132-byte DICOM preambles; no pixel
    reads: :func:`~napari_ctreport.io.ct.probe_ct`) and never raises. ``None`` lets napari try
    its other readers: for a folder that holds no DICOM file and is no case folder (a folder of
    NIfTIs or PNGs), and for several files that are not the DICOM files of one folder.
    """
    try:
        single = _single_path(path)
        if single is None or not probe_ct(single):
            return None
    except Exception:  # a reader probe must never raise into napari
        return None
    return read_ct


def read_ct(path: PathOrPaths) -> list[tuple[Any, ...]]:
    """Read a CT and return its image layer in patient LPS space (a DICOM folder with several
    CT series: one layer per series, :data:`ALL_SERIES_MAX_IMAGES`).

    Problems are shown as napari notifications naming the file; a file we cannot open gives
    no layer and no traceback.
    """
    from napari.utils.notifications import show_error, show_warning

    single = _single_path(path)
    if single is None:
        show_error(
            f"{path}: several files that are not the DICOM files of one folder; "
            "open them one at a time"
        )
        return [(None,)]
    try:
        series = _study_series(Path(single))
        if len(series) > 1 and sum(s.images for s in series) <= ALL_SERIES_MAX_IMAGES:
            return _read_series(Path(single), series)
        if Path(single).is_file():
            whole = _whole_series(Path(single))
            if whole is not None:
                return whole
        volume = load_ct(single)
    except CTReadError as err:
        show_error(str(err))
        return [(None,)]
    for line in volume.warnings:
        show_warning(line)
    return [image_layer_data(volume)]


def _whole_series(file: Path) -> list[tuple[Any, ...]] | None:
    """The whole CT series that the DICOM ``file`` is one image of, as a layer (``[(None,)]``,
    no layer, for another file of a series just opened this way and still open:
    :data:`SAME_DROP_S`), or ``None`` when the file is not one image of a larger series in its
    folder. The file's own header is checked against the series just opened before its
    folder's headers are read: those are read once per drop, not once per file."""
    from napari.utils.notifications import show_info, show_warning

    uid = dicom_series_uid(file, blank="")  # a series without a UID is one too
    if uid is None:
        return None
    key = (str(file.parent.resolve()), uid)
    last = _opened_whole.get(key)
    now = time.monotonic()
    if last is not None and now - last < SAME_DROP_S and _is_a_layer(uid):
        _opened_whole[key] = now
        return [(None,)]  # dropped with a file of it: the series is open already
    volume = open_series_of_file(file)
    if volume is None:
        return None
    _opened_whole[key] = time.monotonic()
    # the last warning says the whole series was opened: news once, not a warning the layer
    # keeps (it read as if one file had been dropped when all of them were)
    opened = volume.warnings.pop()
    show_info(f"{opened} (from {file.parent})")
    for line in volume.warnings:
        show_warning(line)
    return [image_layer_data(volume)]


def _is_a_layer(series_uid: str) -> bool:
    """Whether a layer of napari's current viewer shows the CT series ``series_uid``."""
    from napari import current_viewer

    viewer = current_viewer()
    if viewer is None:
        return False
    return any(
        ((layer.metadata or {}).get(META_KEY) or {}).get("series_uid") == series_uid
        for layer in viewer.layers
    )


def _study_series(path: Path) -> list[SeriesInfo]:
    """The CT series of a DICOM folder (largest first); none for anything else."""
    return ct_series(path) if is_dicom_folder(path) else []


def _read_series(folder: Path, series: list[SeriesInfo]) -> list[tuple[Any, ...]]:
    """Each CT series of ``folder`` as its own layer: the smallest first, so the largest,
    added last, is on top and selected; only it is visible. A series that cannot be read is
    left out with an error naming it, the others still open."""
    from napari.utils.notifications import show_error, show_info, show_warning

    layers = []
    opened = []
    for s in reversed(series):
        try:
            volume = load_ct(folder, series=s.uid)
        except CTReadError as err:
            show_error(f"{s.label} not opened: {err}")
            continue
        for line in volume.warnings:
            show_warning(line)
        data, kwargs, kind = image_layer_data(volume)
        layers.append((data, {**kwargs, "visible": False}, kind))
        opened.append(s)
    if not layers:
        return [(None,)]
    layers[-1][1]["visible"] = True
    shown = opened[-1]
    hidden = [s.label for s in reversed(opened[:-1])]
    show_info(
        f"{folder.name}: {len(opened)} CT series opened as layers; shown: {shown.label}"
        + (f"; hidden: {', '.join(hidden)}" if hidden else "")
    )
    return layers
