"""Read CT from DICOM (folders or single files), NIfTI, NRRD and MHA/MHD into a :class:`CTVolume`.

Every reader ends in :func:`canonicalize`, which puts the voxels on the axis-aligned patient-LPS grid
the rest of the package relies on (array ``(z, y, x)``, each axis increasing towards L, P, S).
Orientations that are a signed permutation of the LPS axes are handled exactly (transpose + flip);
oblique or gantry-tilted data are resampled with trilinear interpolation.

DICOM series are stacked here, from ImagePositionPatient / ImageOrientationPatient, rather than by
SimpleITK's series reader (which averages the slice spacing): duplicate positions are dropped, uneven
spacing is resampled to a uniform step, missing slices are refused, and gantry tilt is corrected.

What the reader corrected is listed, one line each, in ``CTVolume.warnings``; errors raise the
subclasses of :class:`~napari_ctreport.io.errors.CTReadError` with the file and the problem.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CTReadError, GeometryError, LocalizerError, NotCTError, UnreadableError
from .volume import CTVolume

__all__ = [
    "DICOM_SUFFIXES",
    "VOLUME_SUFFIXES",
    "axis_codes",
    "canonicalize",
    "load_ct",
    "probe_ct",
    "dicom_series_uid",
    "is_dicom_file",
    "read_dicom_headers",
    "series_of_file",
    "sitk_array_affine",
]

log = logging.getLogger(__name__)

#: File suffixes read as DICOM.
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: File suffixes read with SimpleITK, and the ``metadata["format"]`` they get.
VOLUME_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
}

#: DICOM modalities that are not images (skipped in folders).
_NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "PR", "KO", "REG", "RTPLAN", "RTRECORD", "DOC"}
#: SOP class UID prefixes of non-image objects.
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, SEG, fiducials
    "1.2.840.10008.5.1.4.1.1.88",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481",  # RT objects
    "1.2.840.10008.5.1.4.1.1.104",  # encapsulated PDF / CDA
)
_LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
_CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}

#: Positions closer than this (mm, along the slice normal) are the same slice.
_DUPLICATE_MM = 0.01
#: A gap larger than this multiple of the usual step means missing slices.
_MISSING_FACTOR = 2.5
#: Tilt angles below this (degrees) are ignored.
_TILT_MIN_DEG = 0.5


# --------------------------------------------------------------------------------------------------
# probing
# --------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


#: File suffixes of formats that are not DICOM (nor a volume :func:`load_ct` reads): a folder
#: probe does not look for the ``DICM`` marker in such files.
_OTHER_SUFFIXES = frozenset(
    ".png .jpg .jpeg .tif .tiff .bmp .gif .webp .svg .txt .md .rst .json .csv .tsv .xml .html "
    ".htm .pdf .doc .docx .xls .xlsx .zip .tar .gz .bz2 .xz .7z .npy .npz .h5 .hdf5 .zarr .mat "
    ".pkl .pt .pth .py .log .yaml .yml .ini .cfg .exe .dll .so .mp4 .avi .mov".split()
)
#: How many files a folder probe reads the first 132 bytes of, looking for the ``DICM`` marker
#: (files named without a DICOM suffix, as many PACS and CD exports write them).
_PROBE_MAGIC_FILES = 8
#: How many folders a folder probe lists: the folder, then its subfolders breadth first (a
#: DICOM folder is searched recursively, a study often as ``PATIENT/STUDY/SERIES/``).
_PROBE_FOLDERS = 16


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Cheaply tell whether ``path`` is a DICOM file (reads at most 132 bytes).

    Parameters
    ----------
    path
        Any path.

    Returns
    -------
    bool
        True for a file with a DICOM suffix (``.dcm``, ``.dicom``, ``.ima``), or with another
        suffix that is not a volume format's and carries the ``DICM`` marker at byte 128.
        Never raises.
    """
    try:
        p = Path(path)
        if not p.is_file():
            return False
        suffix = _suffix(p)
        if suffix in DICOM_SUFFIXES:
            return True
        return suffix not in VOLUME_SUFFIXES and _has_dicm_magic(p)
    except Exception:  # noqa: BLE001 - a probe must never raise
        return False


def _folder_might_be_ct(folder: Path) -> bool:
    """Whether :func:`load_ct` might open ``folder``: a case folder (``case.json``), or a folder
    holding, at most :data:`_PROBE_FOLDERS` folders deep in a breadth-first walk, a file with a
    DICOM suffix or, among the first :data:`_PROBE_MAGIC_FILES` files without a known suffix,
    one with the ``DICM`` marker. A folder of NIfTIs or PNGs is not one. Lists folders and reads
    at most that many 132-byte heads; never raises."""
    from .case import CASE_JSON

    if (folder / CASE_JSON).is_file():
        return True
    queue = [folder]
    magic_left = _PROBE_MAGIC_FILES
    for _ in range(_PROBE_FOLDERS):
        if not queue:
            break
        here = queue.pop(0)
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    queue.append(Path(entry.path))
                    continue
                if not entry.is_file():
                    continue
            except OSError:
                continue
            suffix = _suffix(Path(entry.name))
            if suffix in DICOM_SUFFIXES:
                return True
            if suffix in VOLUME_SUFFIXES or suffix in _OTHER_SUFFIXES or magic_left <= 0:
                continue
            magic_left -= 1
            if _has_dicm_magic(Path(entry.path)):
                return True
    return False


def probe_ct(path: str | os.PathLike[str]) -> bool:
    """Cheaply tell whether :func:`load_ct` might open ``path`` (no pixel reads).

    Parameters
    ----------
    path
        A file or folder.

    Returns
    -------
    bool
        For a file: True for a known suffix (NIfTI, NRRD, MHA/MHD, DICOM) and for a file with
        another suffix that carries the ``DICM`` marker at byte 128 (132 bytes read). For a
        folder: True for a case folder (``case.json``) and for a folder that holds DICOM files
        (:func:`_folder_might_be_ct`: folders listed, a few 132-byte heads read); a folder of
        NIfTIs, PNGs or other files is not claimed. Never raises.
    """
    try:
        p = Path(path)
        if p.is_dir():
            return _folder_might_be_ct(p)
        if not p.is_file():
            return False
        suffix = _suffix(p)
        if suffix in VOLUME_SUFFIXES or suffix in DICOM_SUFFIXES:
            return True
        return _has_dicm_magic(p)
    except Exception:  # noqa: BLE001 - a probe must never raise
        return False


# --------------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------------

_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


def axis_codes(directions: np.ndarray) -> str:
    """Name the direction each axis points towards (nibabel convention) in LPS space.

    Parameters
    ----------
    directions
        3x3 matrix whose columns are the LPS direction vectors of the axes, in axis order.

    Returns
    -------
    str
        Three letters, e.g. ``"LPS"`` for the DICOM identity, ``"RAS"`` for a NIfTI written in RAS.
    """
    d = np.asarray(directions, dtype=float)
    out = []
    for c in range(d.shape[1]):
        axis = int(np.argmax(np.abs(d[:, c])))
        out.append(_LETTERS[axis][0 if d[axis, c] > 0 else 1])
    return "".join(out)


def _effective_spacing(m: np.ndarray) -> np.ndarray:
    """Spacing of each axis measured perpendicular to the plane of the other two."""
    det = abs(float(np.linalg.det(m)))
    out = np.empty(3)
    for a in range(3):
        b, c = [i for i in range(3) if i != a]
        area = float(np.linalg.norm(np.cross(m[:, b], m[:, c])))
        out[a] = det / area if area > 0 else float(np.linalg.norm(m[:, a]))
    return out


def _signed_permutation(u: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """If unit columns ``u`` are a signed permutation of the identity, return (lps_axis, sign)."""
    lps_axis = np.argmax(np.abs(u), axis=0)
    if sorted(lps_axis.tolist()) != [0, 1, 2]:
        return None
    perm = np.zeros((3, 3))
    signs = np.sign(u[lps_axis, [0, 1, 2]])
    perm[lps_axis, [0, 1, 2]] = signs
    if float(np.max(np.abs(u - perm))) > tol:
        return None
    return lps_axis, signs


def canonicalize(
    array: np.ndarray,
    affine: np.ndarray,
    *,
    cval: float | None = None,
    order: int = 1,
    tol: float = 1e-3,
    stack_axis: int | None = None,
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], bool]:
    """Put an array with an index->LPS affine onto the axis-aligned LPS grid.

    Parameters
    ----------
    array
        3-D array, any axis order.
    affine
        4x4 matrix mapping the array index ``(i0, i1, i2, 1)`` to LPS ``(x, y, z, 1)`` mm; its
        columns may be oblique or sheared.
    cval
        Value for output voxels outside the source extent when resampling; ``None``: the
        array's lowest value or -1024 (air), whichever is lower, so that the margin outside the
        acquired slab (a gantry-tilted series) reads as the scanner's own padding outside its
        field of view, where it has one.
    order
        Spline order when resampling (1 = trilinear, 0 = nearest).
    tol
        How far (in direction cosines) the axes may be from a signed permutation to count as one.
    stack_axis
        The slice-stacking axis, if any: when resampling, its output spacing is the distance
        between slice planes (not the length of a sheared, gantry-tilted stacking step).

    Returns
    -------
    array, spacing_zyx, origin_lps, resampled
        ``resampled`` is False when the data were only transposed/flipped (exact).
    """
    a = np.asarray(affine, dtype=float)
    m = a[:3, :3].copy()
    origin = a[:3, 3].copy()
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms <= 0) or abs(np.linalg.det(m)) < 1e-9:
        raise ValueError("degenerate affine (zero spacing or collinear axes)")
    u = m / norms
    sp = _signed_permutation(u, tol)
    if sp is not None:
        lps_axis, signs = sp
        arr = array
        start = np.zeros(3)
        for ax in range(3):
            if signs[ax] < 0:
                arr = np.flip(arr, axis=ax)
                start[ax] = array.shape[ax] - 1
        new_origin = origin + m @ start
        axes = [int(np.where(lps_axis == lps)[0][0]) for lps in (2, 1, 0)]
        arr = np.ascontiguousarray(np.transpose(arr, axes))
        spacing = tuple(float(norms[ax]) for ax in axes)
        return arr, spacing, tuple(float(v) for v in new_origin), False  # type: ignore[return-value]

    from scipy.ndimage import affine_transform

    src = np.asarray(array, dtype=np.float32)
    if cval is None:
        cval = min(-1024.0, float(src.min())) if src.size else -1024.0
    # A single slice is a slab one spacing thick: represent it as two copies half a voxel apart.
    for ax in range(3):
        if src.shape[ax] == 1:
            src = np.concatenate([src, src], axis=ax)
            origin = origin - 0.5 * m[:, ax]
    # In-plane axes keep their own spacing; a stacking axis sheared against the plane of the other
    # two (gantry tilt) gets its spacing measured along that plane's normal.
    eff = norms.copy()
    if stack_axis is not None:
        eff[stack_axis] = _effective_spacing(m)[stack_axis]
    # Output spacing per LPS axis: the source axis best aligned with it (one-to-one).
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(u[lps, p[lps]]) for lps in range(3)),
    )
    out_sp_xyz = np.array([eff[best[lps]] for lps in range(3)])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in src.shape])), dtype=float)
    pts = corners @ m.T + origin
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    n_xyz = np.floor((hi - lo) / out_sp_xyz + 1e-6).astype(int) + 1
    out_shape = (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))
    # output index (z, y, x) -> LPS offset from lo
    p = np.zeros((3, 3))
    p[0, 2], p[1, 1], p[2, 0] = out_sp_xyz[0], out_sp_xyz[1], out_sp_xyz[2]
    minv = np.linalg.inv(m)
    out = affine_transform(
        src,
        minv @ p,
        offset=minv @ (lo - origin),
        output_shape=out_shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    spacing_zyx = (float(out_sp_xyz[2]), float(out_sp_xyz[1]), float(out_sp_xyz[0]))
    return out, spacing_zyx, tuple(float(v) for v in lo), True  # type: ignore[return-value]


def _max_obliquity_deg(u: np.ndarray) -> float:
    """Largest angle (degrees) between an axis and its nearest LPS axis."""
    cos = np.clip(np.max(np.abs(u), axis=0), -1.0, 1.0)
    return float(np.degrees(np.max(np.arccos(cos))))


# --------------------------------------------------------------------------------------------------
# SimpleITK formats
# --------------------------------------------------------------------------------------------------


def sitk_array_affine(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(array, affine)`` of a SimpleITK image: array in numpy order, affine index->LPS.

    SimpleITK reports every format in LPS physical space (it converts NIfTI's RAS on reading).
    """
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D scalar image, got array shape {arr.shape}")
    dim = image.GetDimension()
    d = np.array(image.GetDirection(), dtype=float).reshape(dim, dim)
    sp = np.array(image.GetSpacing(), dtype=float)
    org = np.array(image.GetOrigin(), dtype=float)
    if dim == 2:
        d3 = np.eye(3)
        d3[:2, :2] = d
        d, sp, org = d3, np.append(sp, 1.0), np.append(org, 0.0)
    cols = d * sp  # column c = direction of index axis c (x, y, z) times spacing
    aff = np.eye(4)
    # numpy axes (0, 1, 2) = sitk index axes (z, y, x)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = cols[:, 2], cols[:, 1], cols[:, 0]
    aff[:3, 3] = org
    return arr, aff


def _hu_dtype(arr: np.ndarray) -> np.ndarray:
    """int16 where the values are integers that fit, float32 otherwise."""
    if arr.dtype == np.int16:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0 or (arr.min() >= -32768 and arr.max() <= 32767):
            return arr.astype(np.int16)
        return arr.astype(np.float32)
    arr = arr.astype(np.float32, copy=False)
    if arr.size and np.all(np.isfinite(arr)):
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= -32768 and hi <= 32767 and np.array_equal(arr, np.round(arr)):
            return arr.astype(np.int16)
    return arr


#: The value (HU, air) that voxels which are not numbers (NaN, infinite) in a floating-point
#: NIfTI/NRRD/MHA file are read as, with a warning: left as they are, they spread through every
#: filter and measurement (and NaN is not valid JSON).
NOT_A_NUMBER_HU = -1024.0


#: Bytes read from a NIfTI file to parse its header (NIfTI-2: 540; NIfTI-1: 348).
_NIFTI_HEADER_BYTES = 540
#: Chunk size (bytes) in which a ``.nii.gz`` is decompressed to count its length.
_GZIP_CHUNK = 1 << 20


def _nifti_expected_size(head: bytes) -> int | None:
    """Length (bytes) of a single-file NIfTI-1/-2 image (``n+1`` / ``n+2``) from its header:
    ``vox_offset + prod(dim) * bitpix / 8``; ``None`` when ``head`` is not such a header (the
    reader then says what is wrong). A header cut short itself gives its own length."""
    if len(head) < 4:
        return None
    sizes = {struct.unpack(e + "i", head[:4])[0] for e in "<>"} & {348, 540}
    if sizes and len(head) < min(sizes):  # cut inside the header: it is at least that long
        return min(sizes)
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348 and head[344:348] == b"n+1\0":
            dims = struct.unpack(endian + "8h", head[40:56])
            (bitpix,) = struct.unpack(endian + "h", head[72:74])
            (offset,) = struct.unpack(endian + "f", head[108:112])
            break
        if sizeof_hdr == 540 and len(head) >= 540 and head[4:8] == b"n+2\0":
            (bitpix,) = struct.unpack(endian + "h", head[14:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not np.isfinite(offset):
        return None
    shape = dims[1 : ndim + 1]
    if any(n < 1 for n in shape):
        return None
    n_bits = int(np.prod(np.array(shape, dtype=object))) * int(bitpix)
    return max(int(offset), sizeof_hdr) + (n_bits + 7) // 8


def _check_nifti_complete(path: Path) -> None:
    """Refuse a NIfTI file (``.nii`` or gzip-compressed ``.nii.gz``) that is shorter than its
    header says: SimpleITK reads one silently, the missing slices as 0 HU.

    A ``.nii.gz`` is decompressed in chunks (never held whole) to count its length, unless the
    length in its gzip trailer already matches the header's. Files whose header is not a
    NIfTI-1/-2 one are left to SimpleITK to refuse.

    Raises
    ------
    UnreadableError
        The file (or its compressed stream) ends before the image data does.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != b"\x1f\x8b":  # not compressed: the file length says it
        with open(path, "rb") as fh:
            length = _nifti_expected_size(fh.read(_NIFTI_HEADER_BYTES))
        on_disk = path.stat().st_size
        if length is not None and on_disk < length:
            raise UnreadableError(
                path,
                f"not a readable NIFTI image (truncated: the file ends after {on_disk:,} of the "
                f"{length:,} bytes its header describes)",
            )
        return
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(size - 4, 0))
        trailer = fh.read(4)
    isize = struct.unpack("<I", trailer)[0] if len(trailer) == 4 else None
    head = bytearray()
    have = 0
    need: int | None = None
    ended_early = False
    try:
        with gzip.open(path, "rb") as gz:
            while len(head) < _NIFTI_HEADER_BYTES and (
                chunk := gz.read1(_NIFTI_HEADER_BYTES - len(head))
            ):
                head += chunk
            have, need = len(head), _nifti_expected_size(bytes(head))
            if need is None or isize == need % (1 << 32):  # not NIfTI, or complete
                return
            while have < need and (chunk := gz.read1(_GZIP_CHUNK)):
                have += len(chunk)
    except EOFError:  # the compressed stream ends before its end marker: cut short
        ended_early = True
    except (OSError, zlib.error):  # not gzip after all, or corrupt: SimpleITK says so
        return
    if need is None:  # cut inside the header
        have, need = len(head), _nifti_expected_size(bytes(head))
        if need is None and ended_early:
            raise UnreadableError(
                path, "not a readable NIFTI image (truncated: the gzip data ends before its header)"
            )
    if need is not None and (ended_early or have < need):
        raise UnreadableError(
            path,
            "not a readable NIFTI image (truncated: the gzip data ends after "
            f"{have:,} of the {need:,} bytes its header describes)",
        )


#: A volume whose values are all integers from 0 to this, with at most
#: :data:`LABEL_MAP_MAX_VALUES` distinct values, is a label map or mask, not CT: a CT in HU has
#: air below -500 (a CT stored unsigned reads as HU after its rescale), and a CT stored without
#: its rescale (air at 0) has soft tissue above 1000 and thousands of distinct values.
LABEL_MAP_MAX_VALUE = 1000
#: See :data:`LABEL_MAP_MAX_VALUE`.
LABEL_MAP_MAX_VALUES = 256
#: Voxels counted at a time when telling a label map (bounds the memory of the count).
_LABEL_CHUNK = 1 << 22


def _label_map_range(arr: np.ndarray) -> tuple[int, int] | None:
    """``(least, greatest)`` value of ``arr`` when it holds small non-negative integers only
    (:data:`LABEL_MAP_MAX_VALUE`, :data:`LABEL_MAP_MAX_VALUES`): a label map or mask, not CT;
    ``None`` for anything else. Costs one pass over the array (min/max) for a CT with air."""
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return None
    lo, hi = arr.min(), arr.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > LABEL_MAP_MAX_VALUE:
        return None
    top = int(hi)
    counts = np.zeros(top + 1, dtype=np.int64)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _LABEL_CHUNK):
        chunk = flat[start : start + _LABEL_CHUNK]
        if arr.dtype.kind == "f" and not np.array_equal(chunk, np.floor(chunk)):
            return None  # fractions: not labels
        counts += np.bincount(chunk.astype(np.intp), minlength=top + 1)
    if np.count_nonzero(counts) > LABEL_MAP_MAX_VALUES:
        return None
    return int(lo), top


def _load_sitk(path: Path, fmt: str, *, label_map: bool = False) -> CTVolume:
    import SimpleITK as sitk

    name = path.name
    if path.stat().st_size == 0:
        raise UnreadableError(path, "empty file")
    if fmt == "nifti":
        _check_nifti_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        short = next((ln for ln in reason if "ERROR" in ln or "Unable" in ln), "")
        short = short.split("ERROR:")[-1].strip() if short else ""
        raise UnreadableError(
            path, f"not a readable {fmt.upper()} image" + (f" ({short[:160]})" if short else "")
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotCTError(path, "multi-component (colour or vector) image, not a CT volume")
    if image.GetDimension() not in (2, 3):
        raise UnreadableError(path, f"{image.GetDimension()}-D image; expected a 3-D volume")
    vol_warnings: list[str] = []
    try:
        arr, aff = sitk_array_affine(image)
        if not label_map and (labels := _label_map_range(arr)) is not None:
            lo, hi = labels
            shown = f"only {lo}" if lo == hi else f"{lo}..{hi}"
            raise NotCTError(
                path,
                f"holds small non-negative integers only ({shown}), a label map or mask, not CT",
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = ~np.isfinite(arr)
            vol_warnings.append(
                f"{name}: {int(bad.sum())} voxel(s) not a number (NaN or infinite) set to "
                f"{NOT_A_NUMBER_HU:g} HU"
            )
            arr = np.where(bad, np.asarray(NOT_A_NUMBER_HU, dtype=arr.dtype), arr)
        # a label map resampled (oblique) keeps its labels: nearest neighbour, 0 outside
        out, spacing, origin, resampled = (
            canonicalize(arr, aff, order=0, cval=0.0) if label_map else canonicalize(arr, aff)
        )
    except ValueError as exc:
        raise GeometryError(path, str(exc)) from None
    dim = image.GetDimension()
    codes = axis_codes(np.array(image.GetDirection()).reshape(dim, dim)) if dim == 3 else "LPS"
    if resampled:
        u = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
        vol_warnings.append(
            f"{name}: oblique orientation ({_max_obliquity_deg(u):.1f} deg off the patient axes) "
            "resampled onto an axis-aligned grid"
        )
    if label_map:
        out = out.astype(arr.dtype, copy=False) if resampled else out
    else:
        out = _hu_dtype(out) if not resampled else out.astype(np.float32, copy=False)
    # (small non-negative integers only, a label map, were refused above)
    if not label_map and out.size and float(out.min()) > -500:
        vol_warnings.append(f"{name}: does not look like CT (no air below -500 HU)")
    meta = _empty_metadata(path, fmt)
    meta.update(orientation_on_disk=codes, resampled=bool(resampled))
    return CTVolume(out, spacing, origin, metadata=meta, warnings=vol_warnings)


# --------------------------------------------------------------------------------------------------
# DICOM headers
# --------------------------------------------------------------------------------------------------


@dataclass
class _Slice:
    """One 2-D image of a DICOM series (a file, or one frame of an enhanced multi-frame file)."""

    path: Path
    frame: int | None
    ipp: np.ndarray
    iop: np.ndarray
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    rows: int
    cols: int
    slope: float
    intercept: float
    instance: int
    sop_uid: str
    thickness: float | None

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.iop[:3], self.iop[3:])
        return n / np.linalg.norm(n)


@dataclass
class DicomHeader:
    """Header of one DICOM file as read by :func:`read_dicom_headers` (no pixels)."""

    path: Path
    ds: Any
    modality: str
    series_uid: str
    sop_class: str
    image_type: list[str] = field(default_factory=list)

    @property
    def is_image(self) -> bool:
        """True for objects with pixel rows/columns that are not SEG/SR/RT/presentation states."""
        if self.modality in _NON_IMAGE_MODALITIES:
            return False
        if self.sop_class.startswith(_NON_IMAGE_SOP_PREFIXES):
            return False
        return "Rows" in self.ds and "Columns" in self.ds

    @property
    def is_ct(self) -> bool:
        """True for CT images (Modality CT, or a CT SOP class without Modality)."""
        return self.modality == "CT" or (not self.modality and self.sop_class in _CT_SOP_CLASSES)

    @property
    def is_localizer(self) -> bool:
        """True when ImageType says localizer / scout / topogram."""
        return bool(_LOCALIZER_TYPES.intersection(self.image_type))


def _dcmread(path: Path, *, headers_only: bool) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path), stop_before_pixels=headers_only)


def _header(path: Path, ds: Any) -> DicomHeader:
    image_type = [str(v).strip().upper() for v in _multi(ds.get("ImageType"))]
    return DicomHeader(
        path=path,
        ds=ds,
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_class=str(ds.get("SOPClassUID", "") or ""),
        image_type=image_type,
    )


def _iter_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            yield Path(root) / f


def read_dicom_headers(paths: Path | str | Sequence[Path | str]) -> list[DicomHeader]:
    """Read the headers (no pixel data) of the DICOM files in a folder (recursive) or a list of files.

    Files that are not DICOM (no ``DICM`` marker at byte 128, or unparseable) are skipped silently.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        candidates: Iterable[Path] = _iter_files(p) if p.is_dir() else [p]
    else:
        candidates = [Path(x) for x in paths]
    out = []
    for f in candidates:
        if not _has_dicm_magic(f):
            continue
        try:
            ds = _dcmread(f, headers_only=True)
        except Exception:  # noqa: BLE001 - unreadable files are skipped in a folder scan
            log.debug("skipping unreadable DICOM %s", f, exc_info=True)
            continue
        out.append(_header(f, ds))
    return out


def _multi(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _floats(value: Any) -> list[float]:
    out = []
    for v in _multi(value):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return []
    return out


def _float_or_none(value: Any) -> float | None:
    vals = _floats(value)
    return vals[0] if vals else None


def _seq_item(ds: Any, *keywords: str) -> Any:
    """Walk nested one-item sequences, returning None where one is missing."""
    cur = ds
    for kw in keywords:
        seq = cur.get(kw) if cur is not None else None
        if not seq:
            return None
        cur = seq[0]
    return cur


def _fg(ds: Any, frame: int | None, seq: str) -> Any:
    """Functional-group item ``seq`` for a frame (per-frame first, then shared)."""
    if frame is not None:
        pf = ds.get("PerFrameFunctionalGroupsSequence")
        if pf and frame < len(pf):
            item = _seq_item(pf[frame], seq)
            if item is not None:
                return item
    return _seq_item(ds, "SharedFunctionalGroupsSequence", seq)


def _slices_of(h: DicomHeader) -> list[_Slice]:
    """Geometry of every 2-D image in a file; raises GeometryError when it is missing."""
    ds = h.ds
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    out = []
    frames: list[int | None] = list(range(n_frames)) if (enhanced or n_frames > 1) else [None]
    for fr in frames:
        if enhanced:
            pos = _fg(ds, fr, "PlanePositionSequence")
            ori = _fg(ds, fr, "PlaneOrientationSequence")
            meas = _fg(ds, fr, "PixelMeasuresSequence")
            pvt = _fg(ds, fr, "PixelValueTransformationSequence")
            ipp = _floats(pos.get("ImagePositionPatient")) if pos is not None else []
            iop = _floats(ori.get("ImageOrientationPatient")) if ori is not None else []
            ps = _floats(meas.get("PixelSpacing")) if meas is not None else []
            thick = _float_or_none(meas.get("SliceThickness")) if meas is not None else None
            slope = _float_or_none(pvt.get("RescaleSlope")) if pvt is not None else None
            inter = _float_or_none(pvt.get("RescaleIntercept")) if pvt is not None else None
        else:
            ipp = _floats(ds.get("ImagePositionPatient"))
            iop = _floats(ds.get("ImageOrientationPatient"))
            ps = _floats(ds.get("PixelSpacing"))
            thick = _float_or_none(ds.get("SliceThickness"))
            slope = inter = None
        ipp = ipp or _floats(ds.get("ImagePositionPatient"))
        iop = iop or _floats(ds.get("ImageOrientationPatient"))
        ps = ps or _floats(ds.get("PixelSpacing"))
        if slope is None:
            slope = _float_or_none(ds.get("RescaleSlope"))
        if inter is None:
            inter = _float_or_none(ds.get("RescaleIntercept"))
        if len(ipp) != 3 or len(iop) != 6:
            raise GeometryError(
                h.path, "no image position/orientation (ImagePositionPatient missing)"
            )
        iop_a = np.array(iop, dtype=float)
        r, c = iop_a[:3], iop_a[3:]
        if np.linalg.norm(r) < 1e-3 or np.linalg.norm(c) < 1e-3:
            raise GeometryError(h.path, "invalid ImageOrientationPatient")
        iop_a = np.concatenate([r / np.linalg.norm(r), c / np.linalg.norm(c)])
        if len(ps) != 2 or min(ps) <= 0:
            ps = _floats(ds.get("ImagerPixelSpacing")) or [1.0, 1.0]
        out.append(
            _Slice(
                path=h.path,
                frame=fr,
                ipp=np.array(ipp, dtype=float),
                iop=iop_a,
                pixel_spacing=(float(ps[0]), float(ps[1])),
                rows=int(ds.get("Rows", 0) or 0),
                cols=int(ds.get("Columns", 0) or 0),
                slope=1.0 if slope is None else slope,
                intercept=0.0 if inter is None else inter,
                instance=int(ds.get("InstanceNumber", 0) or 0) if fr is None else fr + 1,
                sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
                thickness=thick,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# DICOM pixels
# --------------------------------------------------------------------------------------------------


def _decode_file(path: Path) -> tuple[np.ndarray, Any]:
    """Stored pixel values of a DICOM file as (frames, rows, cols), and the full dataset."""
    try:
        ds = _dcmread(path, headers_only=False)
    except Exception as exc:  # noqa: BLE001
        raise UnreadableError(path, f"not a readable DICOM file ({type(exc).__name__})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise UnreadableError(path, "DICOM file without pixel data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise NotCTError(path, "colour image, not a CT slice")
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = arr[None]
        return arr, ds
    except NotCTError:
        raise
    except Exception as exc:  # noqa: BLE001 - fall back on SimpleITK's decoders (GDCM)
        log.debug("pydicom could not decode %s: %s", path, exc)
    try:
        import SimpleITK as sitk

        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        if arr.ndim == 2:
            arr = arr[None]
        # SimpleITK already applied the rescale: mark it so the caller does not apply it again
        ds._ctreport_rescaled = True
        return arr, ds
    except Exception:  # noqa: BLE001
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", str(ts)) if ts else "unknown transfer syntax"
        raise UnreadableError(path, f"pixel data could not be decoded ({ts_name})") from None


def _read_pixels(
    slices: list[_Slice], on_progress: Callable[[int, int], None] | None
) -> np.ndarray:
    """HU images (float32, shape (n, rows, cols)) of the slices, decoding each file once."""
    cache: dict[Path, tuple[np.ndarray, Any]] = {}
    total = len(dict.fromkeys(s.path for s in slices))
    done = 0
    out = np.empty((len(slices), slices[0].rows, slices[0].cols), dtype=np.float32)
    for n, s in enumerate(slices):
        if s.path not in cache:
            cache[s.path] = _decode_file(s.path)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        arr, ds = cache[s.path]
        img = arr[s.frame or 0]
        if img.shape != (s.rows, s.cols):
            raise GeometryError(
                s.path, f"pixel array {img.shape} does not match Rows/Columns ({s.rows}, {s.cols})"
            )
        out[n] = img
        if not getattr(ds, "_ctreport_rescaled", False) and (s.slope != 1.0 or s.intercept != 0.0):
            out[n] *= np.float32(s.slope)
            out[n] += np.float32(s.intercept)
        if s.frame is None:  # single-frame file: not needed again
            cache.pop(s.path, None)
    return out


# --------------------------------------------------------------------------------------------------
# DICOM stacking
# --------------------------------------------------------------------------------------------------


def _fmt_mm(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v - round(v, 2)) < 1e-9 else f"{v:.2f}"


def _gap_summary(gaps: np.ndarray) -> str:
    vals: dict[float, int] = {}
    for g in gaps:
        key = round(float(g), 2)
        vals[key] = vals.get(key, 0) + 1
    return ", ".join(f"{_fmt_mm(k)} mm x{n}" for k, n in vals.items())


def _stack(
    where: Path,
    slices: list[_Slice],
    *,
    resample_tolerance: float,
    on_progress: Callable[[int, int], None] | None,
    vol_warnings: list[str],
    gantry_tilt_tag: float | None,
    prefer: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, list[_Slice], dict[str, Any]]:
    """Stack 2-D slices into (array (k, row, col), index->LPS affine); returns also the kept slices.

    Of slices at one position (duplicates) the first by instance number is kept, or the one of
    the file ``prefer`` (the file the user named) when it is one of them.
    """
    name = where.name
    first = slices[0]
    for s in slices[1:]:
        if np.max(np.abs(s.iop - first.iop)) > 1e-3:
            raise GeometryError(
                where,
                f"mixed slice orientations in one series ({s.path.name}: "
                f"{np.round(s.iop, 3).tolist()} vs {np.round(first.iop, 3).tolist()})",
            )
        if (s.rows, s.cols) != (first.rows, first.cols):
            raise GeometryError(
                where,
                f"mixed image sizes in one series ({s.rows}x{s.cols} vs {first.rows}x{first.cols})",
            )
        if (
            max(abs(a - b) for a, b in zip(s.pixel_spacing, first.pixel_spacing, strict=True))
            > 1e-3
        ):
            raise GeometryError(where, "mixed pixel spacings in one series")
    normal = first.normal
    info: dict[str, Any] = {"resampled": False, "gantry_tilt_deg": 0.0}

    # sort along the normal (instance number breaks ties), drop duplicates
    slices = sorted(slices, key=lambda s: (float(s.ipp @ normal), s.instance))
    d = np.array([float(s.ipp @ normal) for s in slices])
    groups = [[0]]  # indices of the slices at one position
    for i in range(1, len(slices)):
        if d[i] - d[groups[-1][0]] >= _DUPLICATE_MM:
            groups.append([i])
        else:
            groups[-1].append(i)
    keep = [g[0] for g in groups]
    preferred = False
    if prefer is not None and len(groups) < len(slices):
        want = prefer.resolve()
        for k, g in enumerate(groups):
            if len(g) > 1:
                hit = next((i for i in g if slices[i].path.resolve() == want), None)
                if hit is not None:
                    keep[k], preferred = hit, True
    n_dup = len(slices) - len(keep)
    if n_dup:
        vol_warnings.append(
            f"{name}: {n_dup} duplicate slice(s) at the same position ignored "
            f"(kept {len(keep)} of {len(slices)}"
            + (f"; {prefer.name} kept at its position)" if preferred and prefer else ")")
        )
        slices = [slices[i] for i in keep]
        d = d[keep]

    r_vec, c_vec = first.iop[:3], first.iop[3:]
    row_sp, col_sp = first.pixel_spacing
    if len(slices) == 1:
        thick = first.thickness if first.thickness and first.thickness > 0 else 1.0
        stack_vec = normal * thick
        array = _read_pixels(slices, on_progress)
        aff = np.eye(4)
        aff[:3, 0], aff[:3, 1], aff[:3, 2] = stack_vec, c_vec * row_sp, r_vec * col_sp
        aff[:3, 3] = first.ipp
        return array, aff, slices, info

    gaps = np.diff(d)
    step = float(np.median(gaps))
    big = np.where(gaps > _MISSING_FACTOR * step)[0]
    if len(big):
        listing = "; ".join(
            f"{gaps[i]:.2f} mm between positions {d[i]:.2f} and {d[i + 1]:.2f} mm" for i in big
        )
        raise GeometryError(
            where,
            f"missing slices: gap(s) of {listing} (usual step {step:.2f} mm; slice gaps "
            f"{', '.join(f'{g:.2f}' for g in gaps)} mm)",
        )
    positions = np.array([s.ipp for s in slices])
    # IPPs must lie on a line (constant stacking direction)
    line = positions[-1] - positions[0]
    t = (d - d[0]) / (d[-1] - d[0])
    resid = positions - (positions[0] + t[:, None] * line)
    dev = float(np.max(np.linalg.norm(resid, axis=1)))
    if dev > max(0.5 * min(row_sp, col_sp), 0.1):
        raise GeometryError(
            where, f"slice positions do not lie on a line (off by up to {dev:.2f} mm)"
        )

    images = _read_pixels(slices, on_progress)
    uneven = float(np.max(np.abs(gaps - step))) > max(resample_tolerance * step, 0.01)
    if uneven:
        length = d[-1] - d[0]
        n = int(round(length / step)) + 1
        targets = d[0] + np.arange(n) * (length / (n - 1))
        new = np.empty((n, first.rows, first.cols), dtype=np.float32)
        for k, tk in enumerate(targets):
            i = int(np.clip(np.searchsorted(d, tk, side="right") - 1, 0, len(d) - 2))
            w = float(np.clip((tk - d[i]) / (d[i + 1] - d[i]), 0.0, 1.0))
            new[k] = images[i] if w < 1e-6 else (1 - w) * images[i] + w * images[i + 1]
        array = new
        vol_warnings.append(
            f"{name}: uneven slice spacing (gaps {_gap_summary(gaps)}) resampled to a uniform "
            f"{length / (n - 1):.2f} mm grid"
        )
        info["resampled"] = True
        n_out = n
    else:
        array = images
        n_out = len(slices)
    stack_vec = line / (n_out - 1)
    tilt = float(
        np.degrees(np.arccos(np.clip(abs(stack_vec @ normal) / np.linalg.norm(stack_vec), 0, 1)))
    )
    if tilt > _TILT_MIN_DEG:
        shown = abs(gantry_tilt_tag) if gantry_tilt_tag else tilt
        info["gantry_tilt_deg"] = round(float(shown), 3)
        info["tilt"] = True
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = stack_vec, c_vec * row_sp, r_vec * col_sp
    aff[:3, 3] = positions[0]
    return array, aff, slices, info


def _text(ds: Any, kw: str) -> str:
    v = ds.get(kw)
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _windows(ds: Any) -> list[tuple[float, float]]:
    src = ds
    if "WindowCenter" not in ds:
        item = _seq_item(ds, "SharedFunctionalGroupsSequence", "FrameVOILUTSequence")
        if item is None:
            item = _seq_item(ds, "PerFrameFunctionalGroupsSequence", "FrameVOILUTSequence")
        if item is not None:
            src = item
    centers = _floats(src.get("WindowCenter"))
    widths = _floats(src.get("WindowWidth"))
    return [(float(c), float(w)) for c, w in zip(centers, widths, strict=False)]


def _source_name(path: Path) -> str:
    """What a CT read from ``path`` is called where it has no series description (a napari
    layer's name): a file's name without its format suffix (``ct_cropped`` for
    ``ct_cropped.nii.gz``), or a folder's name."""
    name = path.name or str(path)
    if path.is_dir():
        return name
    suffix = _suffix(path)
    known = suffix in VOLUME_SUFFIXES or suffix in DICOM_SUFFIXES
    return name[: -len(suffix)] if known and len(name) > len(suffix) else name


def _empty_metadata(path: Path, fmt: str) -> dict[str, Any]:
    return {
        "source_path": str(path),
        "source_name": _source_name(path),
        "format": fmt,
        "files": [],
        "study_uid": "",
        "series_uid": "",
        "frame_of_reference_uid": "",
        "sop_instance_uids": [],
        "modality": "",
        "patient_name": "",
        "patient_id": "",
        "patient_birth_date": "",
        "patient_sex": "",
        "study_date": "",
        "study_description": "",
        "series_description": "",
        "manufacturer": "",
        "slice_thickness_mm": None,
        "kernel": "",
        "body_part": "",
        "windows": [],
        "orientation_on_disk": "",
        "patient_position": "",
        "resampled": False,
        "gantry_tilt_deg": 0.0,
    }


def _dicom_metadata(path: Path, ds: Any, slices: list[_Slice]) -> dict[str, Any]:
    meta = _empty_metadata(path, "dicom")
    thick = slices[0].thickness
    meta.update(
        files=list(dict.fromkeys(str(s.path) for s in slices)),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        sop_instance_uids=list({str(s.path): s.sop_uid for s in slices}.values()),
        modality=_text(ds, "Modality"),
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        manufacturer=_text(ds, "Manufacturer"),
        slice_thickness_mm=float(thick) if thick else None,
        kernel=_text(ds, "ConvolutionKernel"),
        body_part=_text(ds, "BodyPartExamined"),
        windows=_windows(ds),
        patient_position=_text(ds, "PatientPosition"),
    )
    return meta


def _disk_codes(slices: list[_Slice]) -> str:
    """Axis codes of the series as stored: (row direction, column direction, instance order)."""
    s0 = slices[0]
    if len(slices) > 1:
        by_inst = sorted(slices, key=lambda s: s.instance)
        k = by_inst[-1].ipp - by_inst[0].ipp
        if np.linalg.norm(k) < 1e-6:
            k = s0.normal
    else:
        k = s0.normal
    return axis_codes(np.stack([s0.iop[:3], s0.iop[3:], k / np.linalg.norm(k)], axis=1))


def _volume_from_slices(
    where: Path,
    headers: list[DicomHeader],
    slices: list[_Slice],
    *,
    resample_tolerance: float,
    on_progress: Callable[[int, int], None] | None,
    vol_warnings: list[str],
    prefer: Path | None = None,
) -> CTVolume:
    ds0 = headers[0].ds
    tilt_tag = _float_or_none(ds0.get("GantryDetectorTilt"))
    array, aff, kept, info = _stack(
        where,
        slices,
        resample_tolerance=resample_tolerance,
        on_progress=on_progress,
        vol_warnings=vol_warnings,
        gantry_tilt_tag=tilt_tag,
        prefer=prefer,
    )
    codes = _disk_codes(kept)
    try:
        out, spacing, origin, resampled = canonicalize(array, aff, stack_axis=0)
    except ValueError as exc:
        raise GeometryError(where, str(exc)) from None
    name = where.name
    if resampled:
        if info.get("tilt"):
            vol_warnings.append(
                f"{name}: gantry tilt {info['gantry_tilt_deg']:.1f} deg corrected by resampling "
                "onto an axis-aligned grid"
            )
        else:
            u = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
            vol_warnings.append(
                f"{name}: oblique slices ({_max_obliquity_deg(u):.1f} deg off the patient axes) "
                "resampled onto an axis-aligned grid"
            )
    resampled = bool(resampled or info["resampled"])
    out = out.astype(np.float32, copy=False) if resampled else _hu_dtype(out)
    meta = _dicom_metadata(where, ds0, kept)
    meta.update(
        orientation_on_disk=codes,
        resampled=resampled,
        gantry_tilt_deg=float(info["gantry_tilt_deg"]),
    )
    return CTVolume(out, spacing, origin, metadata=meta, warnings=vol_warnings)


def _is_axial(s: _Slice) -> bool:
    return abs(float(s.normal[2])) >= np.cos(np.radians(45.0))


def _plane_name(s: _Slice) -> str:
    ax = int(np.argmax(np.abs(s.normal)))
    return ("sagittal", "coronal", "axial")[ax]


@dataclass(frozen=True)
class SeriesInfo:
    """One CT series of a DICOM folder (:func:`ct_series`)."""

    uid: str
    number: str | None
    description: str | None
    images: int

    @property
    def label(self) -> str:
        """E.g. ``"'Lung 1.0' #3 (300 images)"``."""
        return (
            f"'{self.description or '(no description)'}'"
            + (f" #{self.number}" if self.number else "")
            + f" ({self.images} images)"
        )


def _ct_series_of(
    folder: Path, headers: list[DicomHeader], vol_warnings: list[str]
) -> tuple[dict[str, list[DicomHeader]], dict[str, list[_Slice]]]:
    """The axial or reformatted CT series of ``folder``'s ``headers`` (localizers and single
    non-axial images set aside, with a warning) and their slices, by SeriesInstanceUID."""
    if not headers:
        raise UnreadableError(folder, "no DICOM files found in this folder" + _cases_hint(folder))
    images = [h for h in headers if h.is_image]
    if not images:
        kinds = sorted({h.modality or "non-image" for h in headers})
        raise NotCTError(folder, f"only {', '.join(kinds)} objects here, no CT images")
    ct = [h for h in images if h.is_ct]
    if not ct:
        by_mod: dict[str, int] = {}
        for h in images:
            by_mod[h.modality or "unknown"] = by_mod.get(h.modality or "unknown", 0) + 1
        found = ", ".join(f"{m} series ({n} images)" for m, n in sorted(by_mod.items()))
        raise NotCTError(folder, f"{found}, not CT")
    name = folder.name
    localizers = [h for h in ct if h.is_localizer]
    if localizers:
        vol_warnings.append(f"{name}: {len(localizers)} localizer/scout image(s) set aside")
    series: dict[str, list[DicomHeader]] = {}
    for h in ct:
        if not h.is_localizer:
            series.setdefault(h.series_uid, []).append(h)
    # expand into slices; set aside single non-axial images, and series with no geometry (a
    # dose report or screen capture stored as CT) when another series has it
    series_slices: dict[str, list[_Slice]] = {}
    unplaced: list[tuple[str, list[DicomHeader], GeometryError]] = []
    for uid, hs in list(series.items()):
        try:
            sl = [s for h in hs for s in _slices_of(h)]
        except GeometryError as err:
            unplaced.append((uid, hs, err))
            del series[uid]
            continue
        if len(sl) == 1 and not _is_axial(sl[0]):
            vol_warnings.append(
                f"{name}: single {_plane_name(sl[0])} image {hs[0].path.name} set aside as a localizer"
            )
            del series[uid]
            continue
        series_slices[uid] = sl
    if not series_slices:
        if unplaced:
            raise unplaced[0][2]
        raise LocalizerError(folder, "only localizer/scout images here, no axial CT series")
    for uid, hs, err in unplaced:
        vol_warnings.append(
            f"{name}: series {_series_info(uid, hs, len(hs)).label} set aside: {err.problem}"
        )
    return series, series_slices


def _series_info(uid: str, hs: list[DicomHeader], n_slices: int) -> SeriesInfo:
    return SeriesInfo(
        uid=uid,
        number=_text(hs[0].ds, "SeriesNumber"),
        description=_text(hs[0].ds, "SeriesDescription"),
        images=n_slices,
    )


def ct_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The CT series of a DICOM folder (searched recursively), the one :func:`load_ct` opens
    by default first (the most images), then the others by decreasing size; localizers are
    left out. Reads headers only.

    Raises
    ------
    UnreadableError, NotCTError, LocalizerError, GeometryError
        As :func:`load_ct`: no DICOM, no CT, only localizers, unreadable headers.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UnreadableError(folder, "not a folder")
    with _reading(folder):
        series, slices = _ct_series_of(folder, read_dicom_headers(folder), [])
    return [_series_info(u, series[u], len(slices[u])) for u in _largest_first(slices)]


def dicom_series_uid(path: str | os.PathLike[str], *, blank: str | None = None) -> str | None:
    """The SeriesInstanceUID in a DICOM file's header (one header read).

    Parameters
    ----------
    path
        Any file.
    blank
        What to return for a DICOM file without a SeriesInstanceUID: ``None`` (the default),
        or ``""``, the UID under which :func:`ct_series` and :func:`load_ct` group the images
        of a folder that have none.

    Returns
    -------
    str or None
        The UID; ``None`` for a file that is not DICOM, ``blank`` for one without a UID.
    """
    p = Path(path)
    if not p.is_file() or p.suffix.lower() in VOLUME_SUFFIXES or p.name.endswith(".nii.gz"):
        return None
    try:
        with _pydicom_quiet():
            uid = str(_dcmread(p, headers_only=True).get("SeriesInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 (not DICOM: loading it alone says why)
        return None
    return uid or blank


def series_of_file(path: str | os.PathLike[str]) -> SeriesInfo | None:
    """The CT series of the DICOM folder holding ``path`` that this DICOM file is an image of,
    when that series holds other files too (one slice of a series, dropped or picked alone).

    Reads the file's header (:func:`dicom_series_uid`), then the headers of its folder
    (:func:`ct_series`). A file without a SeriesInstanceUID belongs, as in :func:`load_ct` of
    its folder, to the images of the folder that have none (the series whose ``uid`` is
    ``""``). Open the series with ``load_ct(folder, series=info.uid, prefer=path)``, so that
    the named file wins over other files at its slice position.

    Returns
    -------
    SeriesInfo or None
        ``None`` for anything else: not a DICOM file, no other file of its series in its
        folder (a multi-frame file alone is its whole series, however many frames it holds),
        or a folder that cannot be read as CT (the file alone may be).
    """
    uid = dicom_series_uid(path, blank="")
    if uid is None:
        return None
    folder = Path(path).parent
    try:
        with _reading(folder):
            series, slices = _ct_series_of(folder, read_dicom_headers(folder), [])
    except CTReadError:
        return None
    if uid not in slices or len(series[uid]) < 2:  # files, not frames
        return None
    return _series_info(uid, series[uid], len(slices[uid]))


def open_series_of_file(path: str | os.PathLike[str]) -> CTVolume | None:
    """The whole series a DICOM file is one image of (:func:`series_of_file`), loaded with the
    file's own pixels at its position, ``volume.warnings`` ending with one that says so; or
    ``None`` when the file is not one image of a larger series in its folder."""
    whole = series_of_file(path)
    if whole is None:
        return None
    p = Path(path)
    volume = load_ct(p.parent, series=whole.uid, prefer=p)
    volume.warnings.append(f"{p.name} is one image of {whole.label}: the whole series was opened")
    return volume


def load_study(path: str | os.PathLike[str], *, series: str | None = None) -> CTVolume:
    """What opening ``path`` means to a reader: :func:`load_ct`, except that a DICOM file that
    is one image of a larger series in its folder opens that whole series
    (:func:`open_series_of_file`), as ITK-SNAP and Slicer do; one slice is no CT to read. The
    CLI, :func:`napari_ctreport.analyze` and the napari reader open paths this way; ``load_ct``
    of a file still reads that file alone."""
    whole = open_series_of_file(path) if series is None and Path(path).is_file() else None
    return whole if whole is not None else load_ct(path, series=series)


def _largest_first(slices: dict[str, list[_Slice]]) -> list[str]:
    """SeriesInstanceUIDs by decreasing number of slices (ties: the greater UID first); the
    first is the series :func:`load_ct` opens by default."""
    return sorted(slices, key=lambda u: (len(slices[u]), u), reverse=True)


def _pick_series(
    folder: Path, series: dict[str, list[DicomHeader]], slices: dict[str, list[_Slice]], want
) -> str:
    """The SeriesInstanceUID to load: ``want`` (a UID or a SeriesNumber) or the largest."""
    if want is None:
        return _largest_first(slices)[0]
    want = str(want).strip()
    hits = [u for u in slices if u == want] or [
        u for u in slices if _text(series[u][0].ds, "SeriesNumber") == want
    ]
    if len(hits) != 1:
        have = "; ".join(_series_info(u, series[u], len(slices[u])).label for u in slices)
        why = "several CT series have" if hits else "no CT series has"
        raise UnreadableError(folder, f"{why} the number or UID {want!r}; series here: {have}")
    return hits[0]


def _load_dicom_folder(
    folder: Path,
    *,
    resample_tolerance: float,
    on_progress: Callable[[int, int], None] | None,
    series_wanted: str | None = None,
    prefer: Path | None = None,
) -> CTVolume:
    headers = read_dicom_headers(folder)
    vol_warnings: list[str] = []
    name = folder.name
    series, series_slices = _ct_series_of(folder, headers, vol_warnings)
    chosen = _pick_series(folder, series, series_slices, series_wanted)
    others = [u for u in series_slices if u != chosen]
    if others and series_wanted is None:  # (a series asked for by name: the caller chose it)

        def label(u: str) -> str:
            return _series_info(u, series[u], len(series_slices[u])).label

        vol_warnings.append(
            f"{name}: {len(series_slices)} CT series found; loaded {label(chosen)}, "
            f"not loaded: {'; '.join(label(u) for u in others)}"
        )
    return _volume_from_slices(
        folder,
        series[chosen],
        series_slices[chosen],
        resample_tolerance=resample_tolerance,
        on_progress=on_progress,
        vol_warnings=vol_warnings,
        prefer=prefer,
    )


def _load_dicom_file(
    path: Path,
    *,
    resample_tolerance: float,
    on_progress: Callable[[int, int], None] | None,
) -> CTVolume:
    if path.stat().st_size == 0:
        raise UnreadableError(path, "empty file")
    try:
        ds = _dcmread(path, headers_only=True)
    except Exception as exc:  # noqa: BLE001
        reason = "no DICOM header (missing 'DICM' marker)" if not _has_dicm_magic(path) else ""
        raise UnreadableError(
            path, reason or f"not a readable DICOM file ({type(exc).__name__})"
        ) from None
    h = _header(path, ds)
    if h.modality == "SEG" or h.sop_class.startswith("1.2.840.10008.5.1.4.1.1.66.4"):
        raise NotCTError(path, "DICOM SEG (segmentation) object, not a CT image")
    if h.modality in _NON_IMAGE_MODALITIES or h.sop_class.startswith(_NON_IMAGE_SOP_PREFIXES):
        raise NotCTError(path, f"{h.modality or 'non-image'} object, not a CT image")
    if not h.is_image:
        raise UnreadableError(
            path, "no image in this DICOM file (Rows/Columns missing; truncated?)"
        )
    if not h.is_ct:
        raise NotCTError(path, f"{h.modality or 'unknown modality'} image, not CT")
    if h.is_localizer:
        raise LocalizerError(path, "localizer/scout image, not an axial CT volume")
    try:
        slices = _slices_of(h)
    except GeometryError:
        raise
    if len(slices) == 1 and not _is_axial(slices[0]):
        raise LocalizerError(
            path, f"single {_plane_name(slices[0])} image (likely a localizer), not an axial CT"
        )
    return _volume_from_slices(
        path,
        [h],
        slices,
        resample_tolerance=resample_tolerance,
        on_progress=on_progress,
        vol_warnings=[],
    )


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def load_ct(
    path: str | os.PathLike[str],
    *,
    resample_tolerance: float = 0.02,
    on_progress: Callable[[int, int], None] | None = None,
    series: str | None = None,
    prefer: str | os.PathLike[str] | None = None,
    label_map: bool = False,
) -> CTVolume:
    """Open a CT from a DICOM folder or file, NIfTI, NRRD or MHA/MHD as an axis-aligned LPS volume.

    Parameters
    ----------
    path
        A folder of DICOM files (searched recursively; files with or without extension), a case
        folder (``case.json``: its image), a single DICOM file (a slice, or an enhanced
        multi-frame CT), or a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``
        file.
    resample_tolerance
        DICOM series whose slice gaps differ from the median gap by more than this fraction of it
        are resampled to a uniform grid.
    on_progress
        Called as ``on_progress(done, total)`` after each DICOM file's pixels are decoded.
    series
        For a DICOM folder with several CT series (:func:`ct_series`): the one to open, by its
        SeriesNumber or SeriesInstanceUID. ``None``: the one with the most images (the others
        are then named in ``volume.warnings``).
    prefer
        For a DICOM folder: a file of it that wins over the other files at its slice position
        when several are at one position (duplicates; otherwise the lowest InstanceNumber wins).
        Pass the file the user named when its whole series is opened from it
        (:func:`series_of_file`), so that the volume shows that file's pixels. Ignored for other
        inputs and when the file is not at a duplicated position of the series opened.
    label_map
        Read a NIfTI, NRRD or MHA/MHD label map or mask on the canonical LPS grid instead of a
        CT: its values as they are (nearest neighbour when an oblique one is resampled, 0
        outside it), and not refused for holding small non-negative integers only.

    Returns
    -------
    CTVolume
        HU (int16 when exact, float32 after resampling) on the canonical LPS grid; corrections
        that were made are listed in ``volume.warnings``. ``metadata["source_name"]`` is the
        file's name without its suffix, or the folder's name (a case folder: the case's id).

    Raises
    ------
    UnreadableError
        Missing, empty, corrupt or unknown-format input.
    NotCTError
        A medical image that is not CT (MR, DICOM SEG, ...), or a NIfTI, NRRD or MHA/MHD that
        holds small non-negative integers only (a label map or mask; unless ``label_map``).
    LocalizerError
        A localizer / scout image.
    GeometryError
        Slices that do not form a volume (missing slices, mixed orientations or sizes).
    """
    p = Path(path)
    if not p.exists():
        raise UnreadableError(p, "no such file or folder")
    return _load_ct(
        p,
        resample_tolerance=resample_tolerance,
        on_progress=on_progress,
        series=series,
        prefer=None if prefer is None else Path(prefer),
        label_map=label_map,
    )


def is_dicom_folder(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`load_ct` reads ``path`` as a folder of DICOM files: a folder that is not
    a case folder (``case.json``). Such a folder may hold several CT series (:func:`ct_series`)."""
    from .case import CASE_JSON

    p = Path(path)
    return p.is_dir() and not (p / CASE_JSON).is_file()


@contextlib.contextmanager
def _pydicom_quiet() -> Iterator[None]:
    """pydicom's complaints about odd headers silenced: not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom")
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom.*")
        yield


@contextlib.contextmanager
def _reading(p: Path) -> Iterator[None]:
    """Read CT from ``p``: pydicom's complaints about odd headers are silenced (not the user's
    business), and anything but a :class:`CTReadError` is refused as an :class:`UnreadableError`
    naming ``p`` (never a library traceback in the user's face)."""
    with _pydicom_quiet():
        try:
            yield
        except (UnreadableError, NotCTError, LocalizerError, GeometryError):
            raise
        except MemoryError:
            raise UnreadableError(p, "not enough memory to load this volume") from None
        except PermissionError:
            raise UnreadableError(p, "permission denied") from None
        except Exception as exc:  # noqa: BLE001 - never leak a library traceback to the user
            log.debug("unexpected error reading %s", p, exc_info=True)
            raise UnreadableError(
                p, f"could not be read ({type(exc).__name__}: {exc})"[:300]
            ) from None


def _cases_hint(folder: Path) -> str:
    """``" (it holds N case folders: open one of them)"`` when ``folder``'s subfolders are case
    folders (a dataset written by ``ctreport synth``, an export root), else ``""``."""
    from .case import CASE_JSON

    try:
        n = sum(1 for p in folder.iterdir() if (p / CASE_JSON).is_file())
        n += sum(1 for p in folder.glob(f"*/v[0-9]*/{CASE_JSON}"))
    except OSError:
        return ""
    return f" (it holds {n} case folder(s): open one of them)" if n else ""


def _load_case_image(
    folder: Path, *, resample_tolerance: float, on_progress: Callable[[int, int], None] | None
) -> CTVolume:
    """The CT of a case folder (``case.json`` with its ``image.nii.gz`` or ``dicom/``; see
    ``docs/case_format.md``): a synthetic case, an exported draft or a corrected case."""
    from .case import CaseFormatError, read_case

    try:
        case = read_case(folder)
    except CaseFormatError as err:
        raise UnreadableError(folder, f"not a valid case folder: {err.problem}"[:300]) from None
    if case.image_path is None:
        raise UnreadableError(folder, "case folder without an image (case.json names none)")
    volume = _load_ct(
        case.image_path, resample_tolerance=resample_tolerance, on_progress=on_progress
    )
    # the review dock offers the case's findings for review (``case_folder``)
    volume.metadata.update(case.source_metadata())
    volume.metadata.update(case_folder=str(folder), source_name=case.case_id or folder.name)
    return volume


def _load_ct(
    p: Path,
    *,
    resample_tolerance: float,
    on_progress: Callable[[int, int], None] | None,
    series: str | None = None,
    prefer: Path | None = None,
    label_map: bool = False,
) -> CTVolume:
    if series is not None and not is_dicom_folder(p):
        raise UnreadableError(p, "a series can only be chosen in a folder of DICOM files")
    with _reading(p):
        if is_dicom_folder(p):
            return _load_dicom_folder(
                p,
                resample_tolerance=resample_tolerance,
                on_progress=on_progress,
                series_wanted=series,
                prefer=prefer,
            )
        if p.is_dir():  # a case folder
            return _load_case_image(
                p, resample_tolerance=resample_tolerance, on_progress=on_progress
            )
        suffix = _suffix(p)
        if suffix in VOLUME_SUFFIXES:
            return _load_sitk(p, VOLUME_SUFFIXES[suffix], label_map=label_map)
        if suffix in DICOM_SUFFIXES or _has_dicm_magic(p):
            return _load_dicom_file(
                p, resample_tolerance=resample_tolerance, on_progress=on_progress
            )
        if p.stat().st_size == 0:
            raise UnreadableError(p, "empty file")
        raise UnreadableError(p, "unknown file format (expected DICOM, NIfTI, NRRD or MHA/MHD)")
