"""Write CT volumes and label maps (NIfTI, NRRD, MHA/MHD, DICOM series) and read label maps back.

Everything written here reads back through :func:`napari_ctreport.io.ct.load_ct` onto the same
axis-aligned LPS grid: the orientation a file is stored in on disk (``"LPS"``, ``"RAS"``,
``"LPI"`` for feet-first, ...) only changes the bytes, never the geometry.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .ct import VOLUME_SUFFIXES, _suffix, canonicalize, sitk_array_affine
from .errors import GeometryError, UnreadableError
from .volume import CTVolume

__all__ = ["read_labels", "write_atomically", "write_dicom_series", "write_labels", "write_volume"]

_AXIS_OF = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees part of it: a temporary file
    beside it, flushed to disk, then renamed over it; missing folders are made.

    Parameters
    ----------
    path
        The file.
    data
        Its new content.
    mode
        The permissions it gets; ``None`` keeps the temporary file's (0600: the user's alone).

    Raises
    ------
    OSError
        When it cannot be written; no temporary file is left.
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_orientation(code: str) -> list[tuple[int, int]]:
    """``"RAS"`` -> [(lps_axis, sign)] for the on-disk index axes (i, j, k)."""
    code = code.upper()
    if len(code) != 3 or any(c not in _AXIS_OF for c in code):
        raise ValueError(f"orientation must be three letters from L/R, P/A, S/I, got {code!r}")
    out = [_AXIS_OF[c] for c in code]
    if sorted(a for a, _ in out) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r} names an axis twice")
    return out


def _to_sitk(
    array: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    origin_lps: tuple[float, float, float],
    orientation: str,
) -> Any:
    """A SimpleITK image of a canonical (z, y, x) LPS array, stored in ``orientation`` on disk."""
    import SimpleITK as sitk

    axes = _parse_orientation(orientation)
    # canonical numpy axis of each LPS axis: x -> 2, y -> 1, z -> 0
    canon_axis = {0: 2, 1: 1, 2: 0}
    arr = array
    start = np.zeros(3)  # canonical (z, y, x) index of the disk voxel [0, 0, 0]
    for lps, sign in axes:
        if sign < 0:
            ax = canon_axis[lps]
            arr = np.flip(arr, axis=ax)
            start[ax] = array.shape[ax] - 1
    # numpy order of the disk array is (k, j, i)
    order = [canon_axis[axes[2][0]], canon_axis[axes[1][0]], canon_axis[axes[0][0]]]
    disk = np.ascontiguousarray(np.transpose(arr, order))
    image = sitk.GetImageFromArray(disk)
    sp = np.asarray(spacing_zyx, dtype=float)
    image.SetSpacing([float(sp[canon_axis[lps]]) for lps, _ in axes])
    direction = np.zeros((3, 3))
    for col, (lps, sign) in enumerate(axes):
        direction[lps, col] = sign
    image.SetDirection([float(v) for v in direction.ravel()])
    org_zyx = np.asarray(origin_lps, dtype=float)[::-1] + start * sp
    image.SetOrigin([float(v) for v in org_zyx[::-1]])
    return image


def _check_suffix(path: Path) -> None:
    if _suffix(path) not in VOLUME_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported suffix; use one of {', '.join(sorted(VOLUME_SUFFIXES))}"
        )


def write_volume(
    volume: CTVolume,
    path: str | os.PathLike[str],
    *,
    orientation: str = "LPS",
    dtype: Any = None,
) -> Path:
    """Write a CT volume as NIfTI, NRRD or MHA/MHD with exact geometry.

    Parameters
    ----------
    volume
        The volume to write.
    path
        Destination; the suffix (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``)
        picks the format.
    orientation
        Axis codes of the array as stored on disk (nibabel convention: the direction each index
        axis i, j, k points towards), e.g. ``"LPS"`` (DICOM-like), ``"RAS"``, ``"LPI"``
        (feet-first). Reading the file back with ``load_ct`` gives the same array either way.
    dtype
        Stored data type (default: the array's own).

    Returns
    -------
    Path
        The written file.
    """
    import SimpleITK as sitk

    p = Path(path)
    _check_suffix(p)
    arr = volume.array if dtype is None else volume.array.astype(dtype)
    image = _to_sitk(arr, volume.spacing_zyx, volume.origin_lps, orientation)
    p.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(p), useCompression=_suffix(p) != ".mhd")
    return p


def write_labels(
    labels: np.ndarray,
    *,
    like: CTVolume,
    path: str | os.PathLike[str],
    orientation: str = "LPS",
) -> Path:
    """Write a label map (uint8, or uint16 above 255 labels) on the grid of ``like``.

    Parameters
    ----------
    labels
        Integer labels, shape ``like.shape`` (canonical z, y, x).
    like
        The CT the labels belong to; its spacing and origin are written.
    path
        Destination (NIfTI, NRRD, MHA/MHD by suffix).
    orientation
        On-disk axis codes, as for :func:`write_volume`.
    """
    import SimpleITK as sitk

    lab = np.asarray(labels)
    if lab.shape != like.shape:
        raise ValueError(f"labels shape {lab.shape} differs from the CT's {like.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 65535):
        raise ValueError("labels must lie in 0..65535")
    lab = lab.astype(np.uint8 if (lab.size == 0 or lab.max() < 256) else np.uint16)
    p = Path(path)
    _check_suffix(p)
    image = _to_sitk(lab, like.spacing_zyx, like.origin_lps, orientation)
    p.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(p), useCompression=_suffix(p) != ".mhd")
    return p


def read_labels(path: str | os.PathLike[str], *, like: CTVolume) -> np.ndarray:
    """Read a label map and put it, nearest-neighbour, onto the grid of ``like``.

    Parameters
    ----------
    path
        A label map SimpleITK can read (NIfTI, NRRD, MHA/MHD), on any grid and in any orientation.
    like
        The CT whose grid the labels are wanted on.

    Returns
    -------
    numpy.ndarray
        Labels of shape ``like.shape`` (uint8 or uint16); 0 outside the label map's extent.
    """
    import SimpleITK as sitk
    from scipy.ndimage import affine_transform

    p = Path(path)
    if not p.is_file():
        raise UnreadableError(p, "no such file")
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError:
        raise UnreadableError(p, "not a readable label map (NIfTI, NRRD or MHA/MHD)") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableError(p, "multi-component image, not a label map")
    try:
        arr, aff = sitk_array_affine(image)
    except ValueError as exc:
        raise GeometryError(p, str(exc)) from None
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    if arr.size and arr.min() < 0:
        raise UnreadableError(p, "negative values: not a label map")
    out_dtype = np.uint8 if (arr.size == 0 or arr.max() < 256) else np.uint16
    arr = arr.astype(out_dtype)
    # exact path: an axis-aligned map on the same grid
    m = aff[:3, :3]
    u = m / np.linalg.norm(m, axis=0)
    if float(np.max(np.abs(np.abs(u) - np.round(np.abs(u))))) < 1e-4:
        canon, spacing, origin, _ = canonicalize(arr, aff, cval=0, order=0)
        if (
            canon.shape == like.shape
            and np.allclose(spacing, like.spacing_zyx, atol=1e-3)
            and np.allclose(origin, like.origin_lps, atol=1e-2)
        ):
            return canon
    # general path: for each voxel of `like`, the nearest source voxel
    sp = np.asarray(like.spacing_zyx, dtype=float)
    p_mat = np.zeros((3, 3))  # like index (z, y, x) -> LPS (x, y, z) offset
    p_mat[0, 2], p_mat[1, 1], p_mat[2, 0] = sp[2], sp[1], sp[0]
    minv = np.linalg.inv(m)
    out = affine_transform(
        arr,
        minv @ p_mat,
        offset=minv @ (np.asarray(like.origin_lps, dtype=float) - aff[:3, 3]),
        output_shape=like.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return out.astype(out_dtype, copy=False)


_PATIENT_KEYS = {
    "name": "PatientName",
    "patient_name": "PatientName",
    "id": "PatientID",
    "patient_id": "PatientID",
    "birth_date": "PatientBirthDate",
    "patient_birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "patient_sex": "PatientSex",
    "age": "PatientAge",
}


def write_dicom_series(
    volume: CTVolume,
    folder: str | os.PathLike[str],
    *,
    patient: dict[str, Any] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    feet_first: bool = False,
    series_description: str = "napari-ctreport CT",
) -> list[Path]:
    """Write a volume as a DICOM CT series, one CT Image Storage file per axial slice.

    Parameters
    ----------
    volume
        The volume; HU are stored as int16 with RescaleSlope/Intercept (rounded to 1 HU when the
        range allows, else scaled).
    folder
        Destination folder (created).
    patient
        PatientName / PatientID / PatientBirthDate / PatientSex, keyed by DICOM keyword or by
        ``name``, ``id``, ``birth_date``, ``sex``; defaults come from ``volume.metadata``.
    study_uid, series_uid
        UIDs to use (new random ``2.25`` UIDs by default; the study UID defaults to the
        volume's own, if any). The study date (and time) is the volume's ``study_date``
        (``study_time``), else now.
    feet_first
        Write PatientPosition FFS and number the slices from the feet up (InstanceNumber 1 = most
        inferior); head-first (HFS) numbers them from the head down.
    series_description
        SeriesDescription of the new series.

    Returns
    -------
    list of Path
        The files written, in InstanceNumber order.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = volume.metadata or {}
    pat: dict[str, Any] = {
        # one name component: the caret says so (PS3.5 6.2.1.2)
        "PatientName": meta.get("patient_name") or "Anonymous^",
        "PatientID": meta.get("patient_id") or "CTREPORT",
        "PatientBirthDate": meta.get("patient_birth_date") or "",
        "PatientSex": meta.get("patient_sex") or "",
    }
    for k, v in (patient or {}).items():
        pat[_PATIENT_KEYS.get(k, k)] = v
    study_uid = study_uid or meta.get("study_uid") or generate_uid(prefix=None)
    series_uid = series_uid or generate_uid(prefix=None)
    frame_uid = generate_uid(prefix=None)
    now = datetime.now()
    study_date = meta.get("study_date") or now.strftime("%Y%m%d")

    hu = np.asarray(volume.array, dtype=np.float64)
    lo, hi = (float(hu.min()), float(hu.max())) if hu.size else (0.0, 0.0)
    intercept, slope = -1024.0, 1.0
    if lo + 1024 < -32768 or hi + 1024 > 32767:
        slope = max((hi - lo) / 65000.0, 1e-6)
        intercept = lo + 32768 * slope
    stored = np.clip(np.rint((hu - intercept) / slope), -32768, 32767).astype(np.int16)

    nz, ny, nx = volume.shape
    sz, sy, sx = volume.spacing_zyx
    ox, oy, oz = volume.origin_lps
    order = list(range(nz)) if feet_first else list(range(nz - 1, -1, -1))
    windows = meta.get("windows") or [volume.default_window()]
    paths = []
    for inst, k in enumerate(order, start=1):
        sop_uid = generate_uid(prefix=None)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = _CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.Modality = "CT"
        ds.Manufacturer = meta.get("manufacturer") or "napari-ctreport"
        for kw, v in pat.items():
            setattr(ds, kw, v)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = study_date
        ds.SeriesDate = now.strftime("%Y%m%d")
        ds.SeriesTime = now.strftime("%H%M%S")
        # a known study date keeps its time (empty when unknown: type 2), so one study's
        # series written on different days do not disagree on when the study was
        ds.StudyTime = meta.get("study_time") or ("" if meta.get("study_date") else ds.SeriesTime)
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = meta.get("study_description") or ""
        ds.SeriesDescription = series_description
        ds.SeriesNumber = 1
        ds.InstanceNumber = inst
        ds.PatientPosition = "FFS" if feet_first else "HFS"
        # Type 2 attributes of the CT Image IOD: present, empty when unknown.
        ds.Laterality = None
        ds.PositionReferenceIndicator = None
        ds.KVP = None
        ds.AcquisitionNumber = None
        if meta.get("body_part"):
            ds.BodyPartExamined = meta["body_part"]
        ds.ImagePositionPatient = [f"{ox:.6f}", f"{oy:.6f}", f"{oz + k * sz:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{oz + k * sz:.6f}"
        ds.SliceThickness = f"{sz:.6f}"
        ds.SpacingBetweenSlices = f"{sz:.6f}"
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = f"{intercept:.6g}" if slope == 1.0 else f"{intercept:.10g}"
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = [f"{c:g}" for c, _ in windows]
        ds.WindowWidth = [f"{w:g}" for _, w in windows]
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = out_dir / f"CT{inst:05d}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
