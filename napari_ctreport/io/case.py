"""Case folders: the one format for synthetic ground truth, model drafts and corrected exports.

A case folder holds ``case.json`` (schema ``ctreport.case/1``, see ``docs/case_format.md`` and
``case_schema.json`` beside this module), the image (``image.nii.gz`` or a ``dicom/`` series) and
``labels.nii.gz``, a label map on the image grid whose region ``n`` is the finding with
``label == n``. Paths inside ``case.json`` are relative to the folder. Coordinates are patient
LPS millimetres whatever the orientation the image is stored in.

Writing is atomic: the case is written into a hidden sibling folder that is renamed into place
only once complete, so a reader never sees half a case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..report.findings import Finding
from .volume import CTVolume

#: Schema identifier written into every ``case.json``.
CASE_SCHEMA = "ctreport.case/1"
#: File names inside a case folder.
CASE_JSON = "case.json"
IMAGE_NIFTI = "image.nii.gz"
IMAGE_DICOM = "dicom"
LABELS_FILE = "labels.nii.gz"
#: Provenance sources.
SOURCES: tuple[str, ...] = ("synthetic", "model draft", "radiologist corrected", "imported labels")
#: Edit-log actions that are no reader's edit: the model run's own record and the opening of a
#: case folder for review (``ReviewSession.changes`` and training's edit counts leave them out).
NOT_EDITS: tuple[str, ...] = ("analysis", "case opened")

_SCHEMA_PATH = Path(__file__).with_name("case_schema.json")
#: Name of an export version folder (``v001``, ``v002``, ...).
_VERSION_RE = re.compile(r"v\d{3,}")


class CaseFormatError(ValueError):
    """A case folder is missing, malformed or inconsistent; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Case:
    """One case: findings, report and provenance, with the paths of its image and label map.

    Attributes
    ----------
    case_id
        Identifier, usually the folder name.
    findings
        Findings; ``Finding.label`` is the region value in the label map (0: no mask).
    report
        ``{"findings": str, "impression": str, "sentences": [...]}``.
    provenance
        ``source`` (one of :data:`SOURCES`), ``model``, ``generator``, ``reviewer``, ``created``
        (ISO time) and ``edit_log`` (``[{time, action, finding_id, before, after}]``).
    image_path, labels_path
        Absolute paths of the image (a file or a DICOM folder) and the label map, once on disk.
    original
        The model's draft (``{"findings": [...], "report": {...}}``) when this case corrects it.
    folder
        The case folder it was read from or written to.
    image_orientation
        On-disk orientation code of the image (``image.orientation``), for information only.
    lung_ml
        Segmented lung in the scan (ml), as the analysis measured it
        (``Analysis.volume_info["lung_ml"]``); stored as ``provenance.input.lung_ml``. Under
        :data:`~napari_ctreport.report.writer.PARTIAL_LUNG_ML` the report says that only part of
        the lungs was scanned, so a case reopened for review needs it to write the same report.
        ``None`` when not known (older cases, synthetic cases).
    """

    case_id: str
    findings: list[Finding]
    report: dict[str, Any]
    provenance: dict[str, Any]
    image_path: Path | None = None
    labels_path: Path | None = None
    original: dict[str, Any] | None = None
    folder: Path | None = None
    image_orientation: str | None = field(default=None, compare=False)
    lung_ml: float | None = None

    def to_json(self, *, image: dict[str, Any] | None, labels: str | None) -> dict[str, Any]:
        """The ``case.json`` content, given the folder-relative image and label entries.

        Parameters
        ----------
        image
            The ``image`` entry (``{"file": ...}`` or ``{"dicom_dir": ...}``, plus
            ``orientation``), or ``None``.
        labels
            The label map's folder-relative path, or ``None``.

        Returns
        -------
        dict
            The JSON object. A known :attr:`lung_ml` is written as ``provenance.input.lung_ml``
            (replacing what ``provenance`` holds there); with ``None`` the provenance is written
            as it is.

        Raises
        ------
        ValueError
            When :attr:`lung_ml` is negative or not finite.
        """
        prov = {
            "source": "synthetic",
            "model": None,
            "generator": None,
            "reviewer": None,
            "created": "",
            "edit_log": [],
            **self.provenance,
        }
        if self.lung_ml is not None:
            prov["input"] = {**(prov.get("input") or {}), "lung_ml": _lung_ml(self.lung_ml)}
        return {
            "schema": CASE_SCHEMA,
            "case_id": self.case_id,
            "image": image,
            "labels": labels,
            "findings": [f.to_dict() for f in self.findings],
            "report": _jsonable(self.report),
            "provenance": _jsonable(prov),
            "original": _jsonable(self.original),
        }

    def source_metadata(self) -> dict[str, Any]:
        """The identity of the study the case was exported from, as CT volume metadata.

        An exported case's image is a NIfTI copy of the study; ``provenance.input`` keeps the
        study, series and frame-of-reference UIDs, the input's format, its study date and
        (not de-identified) its patient. Put into the metadata of the reopened image, they make a
        re-export a new version of the same case and study (:func:`~napari_ctreport.export.
        export_case`), with ``deidentified`` telling the exporter that they are pseudonyms
        already.

        Returns
        -------
        dict
            Metadata keys (``study_uid``, ``series_uid``, ``frame_of_reference_uid``,
            ``source_format``, ``study_date``, ``patient_id``, ``patient_name``, ``deidentified``);
            empty for a case without ``provenance.input`` (synthetic cases).
        """
        inp = self.provenance.get("input")
        if not isinstance(inp, dict):
            return {}
        out: dict[str, Any] = {
            k: str(inp[k])
            for k in (
                "study_uid",
                "series_uid",
                "frame_of_reference_uid",
                "study_date",
                "patient_id",
                "patient_name",
            )
            if inp.get(k)
        }
        if inp.get("format"):  # the image read now is the case's NIfTI copy
            out["source_format"] = str(inp["format"])
        export = self.provenance.get("export")
        if isinstance(export, dict) and export.get("deidentified"):
            out["deidentified"] = True
        return out

    def load_volume(self) -> CTVolume:
        """Read the case's image (via :func:`napari_ctreport.io.ct.load_ct`) into LPS, with the
        identity of the study it came from (:meth:`source_metadata`)."""
        if self.image_path is None:
            raise CaseFormatError(self.folder or self.case_id, "case has no image")
        from .ct import load_ct

        volume = load_ct(self.image_path)
        volume.metadata.update(self.source_metadata())
        return volume

    def load_labels(self, volume: CTVolume) -> np.ndarray:
        """Read the label map onto ``volume``'s grid (``(nz, ny, nx)``, LPS)."""
        if self.labels_path is None:
            return np.zeros(volume.shape, dtype=np.uint8)
        from .write import read_labels

        return read_labels(self.labels_path, like=volume)


def new_provenance(*, source: str, generator: dict[str, Any]) -> dict[str, Any]:
    """The provenance of a case made here rather than reviewed: ``source`` (``"synthetic"``,
    ``"imported labels"``), the ``generator`` that made it (its name, version and arguments),
    no model, no reviewer, an empty edit log and the time now (UTC).

    Parameters
    ----------
    source
        Where the case came from.
    generator
        What made it, as written into ``case.json``.

    Returns
    -------
    dict
        The ``provenance`` of a :class:`Case`.
    """
    return {
        "source": source,
        "model": None,
        "generator": generator,
        "reviewer": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edit_log": [],
    }


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _lung_ml(value: Any) -> float:
    """``value`` as a lung volume in ml: a finite number, not negative (``ValueError`` else)."""
    try:
        ml = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"lung_ml must be a number of ml, not {value!r}") from None
    if not np.isfinite(ml) or ml < 0:
        raise ValueError(f"lung_ml must be a finite, non-negative number of ml, not {value!r}")
    return ml


def case_lung_ml(doc: dict[str, Any]) -> float | None:
    """The measured lung volume (ml) a ``case.json`` object records, or ``None``.

    Parameters
    ----------
    doc
        The ``case.json`` object (or just ``{"provenance": ...}``).

    Returns
    -------
    float or None
        ``provenance.input.lung_ml``; ``None`` where the case does not record it (cases
        written before it was stored, synthetic cases) or records ``null``.
    """
    prov = doc.get("provenance")
    inp = prov.get("input") if isinstance(prov, dict) else None
    value = inp.get("lung_ml") if isinstance(inp, dict) else None
    return None if value is None else float(value)


def load_schema() -> dict[str, Any]:
    """The JSON schema of ``case.json``."""
    return json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))


def _copy_into(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def write_case(
    case: Case,
    folder: str | os.PathLike[str],
    *,
    volume: CTVolume | None = None,
    labels: np.ndarray | None = None,
    orientation: str = "LPS",
    image_format: str = "nifti",
) -> Path:
    """Write ``case`` as a case folder, atomically.

    Parameters
    ----------
    case
        The record; its image and label map are copied from ``case.image_path`` /
        ``case.labels_path`` when ``volume`` / ``labels`` are not given.
    folder
        The case folder; replaced if it exists.
    volume
        The image to write (``image.nii.gz``, or a ``dicom/`` series with ``image_format="dicom"``).
    labels
        Label map on ``volume``'s grid, ``(nz, ny, nx)`` (needs ``volume``).
    orientation
        On-disk orientation code of the NIfTI files (``"LPS"``, ``"RAS"``, feet-first ``"LPI"``);
        for DICOM, a code ending in ``I`` writes a feet-first series.
    image_format
        ``"nifti"`` or ``"dicom"``.

    Returns
    -------
    Path
        The case folder. ``case.folder``, ``case.image_path`` and ``case.labels_path`` are updated.
    """
    if image_format not in ("nifti", "dicom"):
        raise ValueError(f"unknown image format {image_format!r}; expected 'nifti' or 'dicom'")
    if labels is not None and volume is None:
        raise ValueError("write_case: labels need the volume they lie on")
    if labels is not None and tuple(labels.shape) != tuple(volume.shape):  # type: ignore[union-attr]
        raise ValueError(
            f"write_case: labels shape {labels.shape} differs from the image {volume.shape}"  # type: ignore[union-attr]
        )
    _check_findings(case.findings, Path(folder) / CASE_JSON)
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        image_entry: dict[str, Any] | None = None
        if volume is not None:
            if image_format == "nifti":
                from .write import write_volume

                write_volume(volume, tmp / IMAGE_NIFTI, orientation=orientation)
                image_entry = {"file": IMAGE_NIFTI, "orientation": orientation}
            else:
                from .write import write_dicom_series

                feet_first = orientation.upper().endswith("I")
                write_dicom_series(
                    volume,
                    tmp / IMAGE_DICOM,
                    feet_first=feet_first,
                    series_description=f"napari-ctreport case {case.case_id}",
                )
                image_entry = {
                    "dicom_dir": IMAGE_DICOM + "/",
                    "orientation": "LPI" if feet_first else "LPS",
                }
        elif case.image_path is not None and Path(case.image_path).exists():
            src = Path(case.image_path)
            name = IMAGE_DICOM if src.is_dir() else src.name
            _copy_into(src, tmp / name)
            image_entry = {"dicom_dir": name + "/"} if src.is_dir() else {"file": name}
            if case.image_orientation:
                image_entry["orientation"] = case.image_orientation
        labels_entry: str | None = None
        if labels is not None:
            from .write import write_labels

            write_labels(labels, like=volume, path=tmp / LABELS_FILE, orientation=orientation)
            labels_entry = LABELS_FILE
        elif case.labels_path is not None and Path(case.labels_path).exists():
            _copy_into(Path(case.labels_path), tmp / LABELS_FILE)
            labels_entry = LABELS_FILE
        doc = case.to_json(image=image_entry, labels=labels_entry)
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
        (tmp / CASE_JSON).write_text(text + "\n", encoding="utf-8")
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    case.folder = folder
    case.image_path = _image_path(folder, doc["image"])
    case.labels_path = folder / labels_entry if labels_entry else None
    case.image_orientation = (doc["image"] or {}).get("orientation")
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` to ``folder``, replacing an existing case folder."""
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _image_path(folder: Path, entry: dict[str, Any] | None) -> Path | None:
    if not entry:
        return None
    rel = entry.get("file") or entry.get("dicom_dir")
    return (folder / rel.rstrip("/")) if rel else None


def _check_findings(findings: list[Finding], where: Path) -> None:
    ids = [f.id for f in findings]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CaseFormatError(where, f"duplicate finding ids {', '.join(dup)}")


def _schema_problems(doc: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"{CASE_JSON}: {where}: {err.message}")
    return out


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / CASE_JSON
    if not folder.is_dir():
        raise CaseFormatError(folder, "not a folder")
    if not path.is_file():
        raise CaseFormatError(path, "missing: not a case folder")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CaseFormatError(path, f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise CaseFormatError(path, "not a JSON object")
    return doc


def _label_values(path: Path) -> tuple[set[int], tuple[int, int, int]]:
    """Region values and (nz, ny, nx) size of a label map file (no reorientation needed)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayViewFromImage(img)
    values = {int(v) for v in np.unique(arr)}
    return values, tuple(int(s) for s in arr.shape)  # type: ignore[return-value]


def _image_size(path: Path) -> tuple[int, int, int] | None:
    """Size (nz, ny, nx) of a NIfTI/NRRD/MHA image from its header; ``None`` for DICOM folders."""
    if path.is_dir():
        return None
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    if len(size) != 3:
        return None
    return (int(size[2]), int(size[1]), int(size[0]))


def validate_case(folder: str | os.PathLike[str]) -> list[str]:
    """Check a case folder; returns the problems found, one line each (``[]`` when valid).

    Checks ``case.json`` against the schema, that the image and label files exist, that every
    finding is valid (kind, side, zone, status from the lexicon, unique id), that every finding
    label is a region of the label map, and that the label map has the image's size.
    """
    folder = Path(folder)
    try:
        doc = _read_json(folder)
    except CaseFormatError as err:
        return [str(err)]
    problems = _schema_problems(doc)
    if problems:
        return problems
    image = _image_path(folder, doc["image"])
    if image is not None and not image.exists():
        problems.append(f"{image}: image missing")
    if doc["image"] and "dicom_dir" in doc["image"] and image is not None and image.is_dir():
        if not any(p.is_file() for p in image.iterdir()):
            problems.append(f"{image}: DICOM folder is empty")
    ids: list[str] = []
    for i, d in enumerate(doc["findings"]):
        try:
            Finding.from_dict(d)
        except (TypeError, ValueError) as err:
            problems.append(f"{folder / CASE_JSON}: findings/{i}: {err}")
        ids.append(d["id"])
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.append(f"{folder / CASE_JSON}: duplicate finding ids {', '.join(dup)}")
    # a finding rejected on review may have had its mask erased; every other labelled one needs it
    wanted = {
        int(d["label"])
        for d in doc["findings"]
        if int(d["label"]) > 0 and d.get("status") != "rejected"
    }
    if doc["labels"]:
        lab = folder / doc["labels"]
        if not lab.is_file():
            problems.append(f"{lab}: label map missing")
        else:
            try:
                values, size = _label_values(lab)
            except Exception as err:  # noqa: BLE001 - any reader failure is a problem to report
                problems.append(f"{lab}: unreadable label map ({err})")
            else:
                missing = sorted(wanted - values)
                if missing:
                    problems.append(f"{lab}: no region for finding label(s) {missing}")
                if image is not None and image.exists():
                    isize = _image_size(image)
                    if isize is not None and isize != size:
                        problems.append(f"{lab}: size {size} differs from the image {isize}")
    elif wanted:
        problems.append(
            f"{folder / CASE_JSON}: findings have labels {sorted(wanted)} but no label map"
        )
    return problems


def read_case(folder: str | os.PathLike[str]) -> Case:
    """Read and validate a case folder.

    Raises
    ------
    CaseFormatError
        (a ``ValueError``) naming the file and the first problem when the folder is not a valid case.
    """
    folder = Path(folder).absolute()
    problems = validate_case(folder)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CaseFormatError(folder, f"invalid case: {first}{more}")
    doc = _read_json(folder)
    findings = [Finding.from_dict(d) for d in doc["findings"]]
    image_entry = doc["image"] or {}
    return Case(
        case_id=doc["case_id"],
        findings=findings,
        report=doc["report"],
        provenance=doc["provenance"],
        image_path=_image_path(folder, doc["image"]),
        labels_path=folder / doc["labels"] if doc["labels"] else None,
        original=doc.get("original"),
        folder=folder,
        image_orientation=image_entry.get("orientation"),
        lung_ml=case_lung_ml(doc),
    )


def iter_cases(root: str | os.PathLike[str], *, all_versions: bool = False) -> Iterator[Path]:
    """Yield every case folder (a folder with ``case.json``) under ``root``, sorted, ``root`` included.

    Hidden folders (partial writes) are skipped; case folders are not searched further. Exports
    keep every version of a case as sibling folders ``v001``, ``v002``, ...: only the newest of
    them is yielded (the latest correction supersedes the earlier ones) unless ``all_versions``.
    """
    root = Path(root)
    if (root / CASE_JSON).is_file():
        yield root
        return
    if not root.is_dir():
        return
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        keep = []
        cases = []
        for d in dirnames:
            p = Path(dirpath) / d
            if (p / CASE_JSON).is_file():
                cases.append(p)
            else:
                keep.append(d)
        versions = [p for p in cases if _VERSION_RE.fullmatch(p.name)]
        if versions and not all_versions:
            newest = max(versions, key=lambda p: int(p.name[1:]))
            cases = [p for p in cases if p not in versions or p == newest]
        found.extend(cases)
        dirnames[:] = keep
    yield from sorted(found)
