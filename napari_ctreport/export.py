"""Export a reviewed (or drafted) case for the record and for retraining.

:func:`export_case` writes one *version* of a case, ``OUT_DIR/<case_id>/v001/`` (a re-export of the
same study makes ``v002`` and keeps ``v001``), holding:

* the case folder (``case.json``, ``image.nii.gz``, ``labels.nii.gz``; format ``ctreport.case/1``,
  see ``docs/case_format.md``) with the corrected findings and report, the model's draft
  (``original``), the edit log and the provenance (model name/version/sha256, reviewer, times);
* ``seg.dcm``: a DICOM Segmentation, one binary segment per finding that has a mask;
* ``sr.dcm``: a DICOM Comprehensive 3D SR (TID 1500 measurement report), one measurement group
  per finding, referencing its segment (a finding without a mask: its box on the CT slice
  through its centre, a SCOORD3D polygon in the CT's frame of reference);
* ``ct/``: a derived DICOM CT series of the volume, written when the SEG cannot reference the
  source images (NIfTI/NRRD input, a resampled DICOM series, enhanced multi-frame files);
* ``report.md``, ``report.pdf`` and ``fhir_diagnosticreport.json`` (FHIR R4).

By default everything is de-identified (:mod:`napari_ctreport.io.deid`, DICOM PS3.15 basic
profile, keyed UIDs). The version folder appears atomically: it is written into a hidden sibling
folder and renamed when complete. No napari or Qt here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__
from .io.case import SOURCES, Case, _jsonable, _lung_ml, validate_case, write_case
from .io.deid import METHOD, Deidentifier, hash_uid, load_key
from .io.volume import CTVolume
from .report.findings import Finding
from .report.markdown import (
    DISCLAIMER,
    TABLE_HEADER,
    findings_table_rows,
    provenance_facts,
    render_markdown,
    status_line,
)
from .report.writer import Report

if TYPE_CHECKING:
    from .analysis import Analysis

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "ExportResult",
    "export_analysis",
    "export_case",
    "fhir_diagnostic_report",
    "write_pdf",
]

#: Everything :func:`export_case` can write.
FORMATS: tuple[str, ...] = ("case", "sr", "seg", "markdown", "pdf", "fhir")
#: File names inside a version folder.
SR_FILE = "sr.dcm"
REPORT_SR_FILE = "report_sr.dcm"
SEG_FILE = "seg.dcm"
CT_DIR = "ct"
MARKDOWN_FILE = "report.md"
PDF_FILE = "report.pdf"
FHIR_FILE = "fhir_diagnosticreport.json"

_MANUFACTURER = "napari-ctreport"
_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_LOCAL_SCHEME = "99NCTR"

# Coded concepts (SNOMED CT, DICOM, LOINC, UCUM) used in the SEG and SR.
_SCT, _DCM, _LN, _UCUM = "SCT", "DCM", "LN", "UCUM"


def _code(value: str, scheme: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _kind_type(kind: str) -> tuple[str, str, str]:
    if kind == "mass":
        return ("4147007", _SCT, "Mass")
    if kind == "pleural effusion":
        return ("60046008", _SCT, "Pleural effusion")
    return ("27925004", _SCT, "Nodule")


_ZONE_CODES = {
    "upper": ("281392002", _SCT, "Upper zone of lung"),
    "middle": ("281393007", _SCT, "Middle zone of lung"),
    "lower": ("281394001", _SCT, "Lower zone of lung"),
}
_SIDE_CODES = {
    "right": ("24028007", _SCT, "Right"),
    "left": ("7771000", _SCT, "Left"),
    "bilateral": ("51440002", _SCT, "Bilateral"),
}
_MIDLINE_CODE = ("261129000", _SCT, "Midline")


@dataclass
class ExportResult:
    """What :func:`export_case` wrote.

    Attributes
    ----------
    folder
        The version folder, ``OUT_DIR/<case_id>/vNNN``.
    files
        Written paths by role: ``case`` (case.json), ``image``, ``labels``, ``seg``, ``sr``,
        ``ct`` (derived DICOM series folder), ``markdown``, ``pdf``, ``fhir``.
    case_id
        The case identifier (from the de-identified series UID; stable across re-exports).
    version
        The version number (1 for ``v001``).
    deidentified
        Whether identifiers were removed.
    warnings
        What the export could not do as asked, one line each.
    """

    folder: Path
    files: dict[str, Path]
    case_id: str
    version: int
    deidentified: bool
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _pn(name: str) -> str:
    """A DICOM person name: a single-component name gets a trailing caret."""
    return name if "^" in name else name + "^"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _as_finding(f: Finding | Mapping[str, Any]) -> Finding:
    return f if isinstance(f, Finding) else Finding.from_dict(dict(f))


def _as_report(r: Report | Mapping[str, Any]) -> Report:
    return r if isinstance(r, Report) else Report.from_dict(dict(r))


def _original_json(original: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if original is None:
        return None
    out: dict[str, Any] = {}
    for k, v in original.items():
        if k == "findings":
            out[k] = [(_as_finding(f)).to_dict() for f in v]
        elif k == "report":
            out[k] = _as_report(v).to_dict()
        else:
            out[k] = _jsonable(v)
    return out


def _content_hash(volume: CTVolume) -> str:
    h = hashlib.sha256()
    h.update(repr((volume.shape, volume.spacing_zyx, volume.origin_lps)).encode())
    h.update(np.ascontiguousarray(volume.array).tobytes())
    return h.hexdigest()


def _next_version(case_dir: Path) -> int:
    n = 0
    if case_dir.is_dir():
        for p in case_dir.iterdir():
            if p.is_dir() and p.name.startswith("v") and p.name[1:].isdigit():
                n = max(n, int(p.name[1:]))
    return n + 1


def _read_headers(files: Sequence[str]) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(str(f), stop_before_pixels=True, force=True) for f in files]


def _sanitize_source(ds: Any, deid: Deidentifier | None, fill: Mapping[str, str]) -> Any:
    """A copy of a source header that highdicom accepts (de-identified when ``deid`` is given).

    Real files may leave SOPClassUID / SOPInstanceUID empty in the data set (only in the file
    meta), carry an empty SpecificCharacterSet, or have empty study/series/frame UIDs (filled
    from ``fill``, the UIDs the export uses).
    """
    import copy

    ds = copy.deepcopy(ds)
    fm = getattr(ds, "file_meta", None)
    if not str(ds.get("SOPClassUID", "") or "").strip():
        ds.SOPClassUID = str(getattr(fm, "MediaStorageSOPClassUID", "") or "") or _CT_STORAGE
    if not str(ds.get("SOPInstanceUID", "") or "").strip() and fm is not None:
        ds.SOPInstanceUID = str(getattr(fm, "MediaStorageSOPInstanceUID", "") or "")
    if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
        del ds.SpecificCharacterSet
    if deid is not None:
        deid.dataset(ds)
    for kw, value in fill.items():
        if not str(ds.get(kw, "") or "").strip():
            setattr(ds, kw, value)
    return ds


def _aligned_source(volume: CTVolume, headers: list[Any] | None) -> tuple[list[Any] | None, str]:
    """Source headers in array-z order when each slice of ``volume`` is exactly one source image."""
    md = volume.metadata or {}
    if md.get("format") != "dicom":
        return None, "the input is not a DICOM series"
    if md.get("resampled"):
        return None, "the DICOM series was resampled on reading"
    if not headers:
        return None, "the source DICOM files are not available"
    nz, ny, nx = volume.shape
    if len(headers) != nz:
        return None, f"{len(headers)} source files for {nz} slices"
    sz, sy, sx = volume.spacing_zyx
    ox, oy, oz = volume.origin_lps
    by_k: dict[int, Any] = {}
    for ds in headers:
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            return None, "multi-frame source images"
        iop = [float(v) for v in ds.get("ImageOrientationPatient", [])]
        if len(iop) != 6 or not np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-4):
            return None, "source rows/columns do not run along +x/+y"
        if int(ds.Rows) != ny or int(ds.Columns) != nx:
            return None, "source image size differs from the volume"
        ps = [float(v) for v in ds.PixelSpacing]
        if not np.allclose(ps, [sy, sx], rtol=1e-4, atol=1e-4):
            return None, "source pixel spacing differs from the volume"
        ipp = [float(v) for v in ds.ImagePositionPatient]
        if abs(ipp[0] - ox) > 1e-2 or abs(ipp[1] - oy) > 1e-2:
            return None, "source image position differs from the volume"
        kf = (ipp[2] - oz) / sz
        k = int(round(kf))
        if abs(kf - k) > 0.01 or not 0 <= k < nz or k in by_k:
            return None, "source slice positions do not match the volume"
        by_k[k] = ds
    return [by_k[k] for k in range(nz)], ""


class _Ids:
    """UID and identifier policy of one export (de-identified or not; ``map_uids=False`` for
    an input whose UIDs are pseudonyms already)."""

    def __init__(self, deid: Deidentifier | None, *, map_uids: bool = True) -> None:
        self.deid = deid
        self.map_uids = map_uids

    def uid(self, uid: str) -> str:
        return self.deid.uid(uid) if self.deid and self.map_uids and uid else uid

    def derived(self, *parts: str) -> str:
        return (
            self.deid.derived_uid(*parts) if self.deid else hash_uid("derived:" + "/".join(parts))
        )

    def text(self, obj: Any) -> Any:
        """``obj`` with the identifiers seen scrubbed from its strings (whole words; the words of
        :func:`report_vocabulary` are never taken out, see :meth:`Deidentifier.scrub_text`)."""
        return self.deid.scrub_json(obj, keep=report_vocabulary()) if self.deid else obj


#: Words a reader commonly types into a chest CT report that are also surnames (Wall, Fluid,
#: Base, ...): protected like the writer's own words (:func:`report_vocabulary`).
_FREE_TEXT_TERMS = (
    "chest wall fluid air lung lungs lobe base apex hilum node nodes heart bone rib soft tissue "
    "axis long short size stable new prior"
)


@functools.lru_cache(maxsize=1)
def report_vocabulary() -> frozenset[str]:
    """Every word (lower case, letters only) the report writer may write, and a few common chest
    CT terms (:data:`_FREE_TEXT_TERMS`).

    Collected from the lexicon (kinds, sides, zones, shapes, effusion grades), the writer's fixed
    sentences, its templates (each of :func:`~.report.writer.phrasings`, the
    impression lines, the coverage notes), the guideline recommendations and the findings
    table's headings, by writing them for a grid of findings: the set follows the writer as it
    changes. De-identification does not remove a name part that is one of these words from free
    text (a patient called Small, Mass or Left): removing it would corrupt the report.
    """
    import re

    from .report.guidelines import FLEISCHNER, RISKS
    from .report.lexicon import EFFUSION_GRADES, KINDS, SHAPES, SIDES, ZONES
    from .report.writer import (
        NORMAL_FINDINGS,
        NORMAL_IMPRESSION,
        coverage_note,
        phrasings,
        write_report,
    )

    texts: list[str] = [*KINDS, *SIDES, *ZONES, *SHAPES, *(g for g, _ in EFFUSION_GRADES)]
    texts += [NORMAL_FINDINGS, NORMAL_IMPRESSION, FLEISCHNER, *TABLE_HEADER, _FREE_TEXT_TERMS]
    for lung_ml in (0.0, 500.0):
        for lesions in (False, True):
            texts += coverage_note(lung_ml, lesions=lesions) or ()

    def finding(n: int, kind: str, mm: float, side: str = "right", zone: str = "upper", **kw: Any):
        box = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        ml = {4.0: 100.0, 7.0: 500.0}.get(mm, 1500.0)
        return Finding(f"F{n}", kind, side, zone, box[0], box, mm, mm * 0.7, ml, attributes=kw)

    for kind in KINDS:
        for side in SIDES:
            for zone in ZONES:
                for shape in (None, *SHAPES):
                    attrs = {"shape": shape} if shape else {}
                    f = finding(1, kind, 12.0, side, zone, solid_diameter_mm=7.0, **attrs)
                    texts += phrasings(f)
    groups = []
    for mm in (4.0, 7.0, 12.0, 40.0):
        for solid in (3.0, 7.0):
            for kind in KINDS:
                same = [finding(n, kind, mm, solid_diameter_mm=solid) for n in range(1, 12)]
                groups += [same[:1], same[:2], same]
            groups.append([finding(n, k, mm, solid_diameter_mm=solid) for n, k in enumerate(KINDS)])
    for count in range(3, 11):  # the number words of the impression
        groups.append([finding(n, "solid nodule", 7.0) for n in range(count)])
        groups.append([finding(n, "calcified nodule", 7.0) for n in range(count)])
    for group in groups:
        for risk in RISKS:
            texts.append(write_report(group, risk=risk).text)
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"[^\W\d_]+", text.lower()))
    return frozenset(words)


# --------------------------------------------------------------------------------------------------
# DICOM SEG and SR
# --------------------------------------------------------------------------------------------------


def _write_derived_ct(
    volume: CTVolume, folder: Path, *, meta: dict[str, Any], study_uid: str, for_uid: str
) -> list[Any]:
    """Write ``volume`` as a DICOM CT series with the given (already de-identified) metadata."""
    import pydicom
    from pydicom.uid import generate_uid

    from .io.write import write_dicom_series

    vol = CTVolume(volume.array, volume.spacing_zyx, volume.origin_lps, metadata=meta)
    series_uid = generate_uid(prefix=None)
    paths = write_dicom_series(
        vol,
        folder,
        study_uid=study_uid,
        series_uid=series_uid,
        series_description="napari-ctreport derived CT",
    )
    headers = []
    for p in paths:
        ds = pydicom.dcmread(str(p))
        ds.FrameOfReferenceUID = for_uid
        if meta.get("deidentified"):
            ds.PatientIdentityRemoved = "YES"
            ds.DeidentificationMethod = "napari-ctreport: PS3.15 basic profile"
        ds.save_as(str(p), enforce_file_format=True)
        del ds.PixelData
        headers.append(ds)
    nz = volume.shape[0]
    oz = volume.origin_lps[2]
    sz = volume.spacing_zyx[0]
    return sorted(headers, key=lambda d: int(round((float(d.ImagePositionPatient[2]) - oz) / sz)))[
        :nz
    ]


def _algorithm(model: Mapping[str, Any] | None) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name = str((model or {}).get("name") or "napari-ctreport")
    version = str((model or {}).get("version") or __version__)
    return hd.AlgorithmIdentificationSequence(
        name=name[:64], family=codes.cid7162.ArtificialIntelligence, version=version[:64]
    )


def _segment_algorithm_type(f: Finding) -> str:
    if f.status == "added":
        return "MANUAL"
    if f.status == "edited":
        return "SEMIAUTOMATIC"
    return "AUTOMATIC"


def _coding_schemes() -> list[Any]:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [
        CodingSchemeIdentificationItem(
            designator=_LOCAL_SCHEME,
            name="napari-ctreport local codes",
            responsible_organization="napari-ctreport",
        )
    ]


def _anatomic_region(f: Finding) -> Any:
    """The SEG segment's anatomic region: the finding's lung zone, qualified by its side.

    highdicom's ``SegmentDescription`` takes the regions as bare codes and has no parameter for
    their modifiers, so the side is set here on the region's code item as its Anatomic Region
    Modifier Sequence (0008,2220) (General Anatomy macro, PS3.3 Table 10-7; CID 2 *Anatomic
    Modifier*): the laterality the SR's finding site carries (:data:`_SIDE_CODES`, SCT 24028007
    Right / 7771000 Left / 51440002 Bilateral), or SCT 261129000 *Midline* for a midline finding
    (the SR's topographical modifier).

    Parameters
    ----------
    f
        The finding of the segment.

    Returns
    -------
    highdicom.sr.CodedConcept
        The zone code (SCT 281392002 / 281393007 / 281394001), with one modifier item.
    """
    region = _code(*_ZONE_CODES[f.zone])
    modifier = _SIDE_CODES.get(f.side) or (_MIDLINE_CODE if f.side == "midline" else None)
    if modifier is not None:
        region.AnatomicRegionModifierSequence = [_code(*modifier)]
    return region


def _build_seg(
    *,
    sources: list[Any],
    labels: np.ndarray,
    seg_findings: list[Finding],
    ids: _Ids,
    case_key: str,
    model: Mapping[str, Any] | None,
    reviewer: str | None,
    draft: bool,
) -> Any:
    import highdicom as hd

    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.uint16)
    descriptions = []
    for n, f in enumerate(seg_findings, start=1):
        lut[f.label] = n
        algo_type = _segment_algorithm_type(f)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=f"{f.id} {f.kind}"[:64],
                segmented_property_category=_code(
                    "49755003", _SCT, "Morphologically Altered Structure"
                ),
                segmented_property_type=_code(*_kind_type(f.kind)),
                algorithm_type=algo_type,
                algorithm_identification=None if algo_type == "MANUAL" else _algorithm(model),
                tracking_uid=ids.derived(case_key, "finding", f.id),
                tracking_id=f"{f.id} {f.kind}"[:64],
                anatomic_regions=[_anatomic_region(f)],
            )
        )
    seg_map = lut[labels]
    seg_map = seg_map.astype(np.uint8 if len(seg_findings) < 256 else np.uint16)
    kwargs: dict[str, Any] = {}
    if reviewer and not draft:
        kwargs["content_creator_name"] = _pn(reviewer)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=seg_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **_new_instance(series_number=901),
        manufacturer_model_name=str((model or {}).get("name") or "napari-ctreport")[:64],
        software_versions=__version__,
        device_serial_number="0",
        content_description=("model draft" if draft else "radiologist corrected")[:64],
        content_label="FINDINGS",
        series_description="napari-ctreport findings " + ("(draft)" if draft else "(corrected)"),
        **kwargs,
    )
    return seg


def _measurements(f: Finding) -> list[Any]:
    import highdicom as hd

    mm = _code("mm", _UCUM, "millimeter")
    out = [
        hd.sr.Measurement(
            name=_code("103339001", _SCT, "Long Axis"),
            value=float(round(f.diameter_mm, 2)),
            unit=mm,
        )
    ]
    if f.short_axis_mm > 0:
        out.append(
            hd.sr.Measurement(
                name=_code("103340004", _SCT, "Short Axis"),
                value=float(round(f.short_axis_mm, 2)),
                unit=mm,
            )
        )
    if f.volume_ml > 0:
        out.append(
            hd.sr.Measurement(
                name=_code("118565006", _SCT, "Volume"),
                value=float(round(f.volume_ml * 1000.0, 1)),
                unit=_code("mm3", _UCUM, "cubic millimeter"),
            )
        )
    out.append(
        hd.sr.Measurement(
            name=_code("112181", _DCM, "Mean Attenuation Coefficient"),
            value=float(round(f.mean_hu, 1)),
            unit=_code("[hnsf'U]", _UCUM, "Hounsfield unit"),
            derivation=_code("373098007", _SCT, "Mean"),
        )
    )
    return out


def _finding_site(f: Finding) -> Any:
    import highdicom as hd

    side = _SIDE_CODES.get(f.side)
    return hd.sr.FindingSite(
        anatomic_location=_code(*_ZONE_CODES[f.zone]),
        laterality=_code(*side) if side else None,
        topographical_modifier=_code(*_MIDLINE_CODE) if f.side == "midline" else None,
    )


def _axial_plane_z(f: Finding, slice_z_mm: Sequence[float]) -> float:
    """The z (LPS mm) of the axial plane that shows ``f``: the CT slice nearest its centre.

    Only slices within the finding's box, widened by half a slice gap, are candidates; with none
    (a finding outside the scanned range) the centre's own z is kept.

    Parameters
    ----------
    f
        The finding.
    slice_z_mm
        The z (LPS mm) of each CT slice, in any order.

    Returns
    -------
    float
        The z of the chosen slice, or of the finding's centre.
    """
    zc = float(f.center_lps_mm[2])
    zs = np.unique(np.asarray(slice_z_mm, dtype=float))
    if zs.size == 0:
        return zc
    half_gap = float(np.median(np.diff(zs))) / 2.0 if zs.size > 1 else 0.0
    lo_z, hi_z = sorted((float(f.bbox_lps_mm[0][2]), float(f.bbox_lps_mm[1][2])))
    near = zs[(zs >= lo_z - half_gap - 1e-6) & (zs <= hi_z + half_gap + 1e-6)]
    if near.size == 0:
        return zc
    return float(near[np.argmin(np.abs(near - zc))])


def _finding_region(f: Finding, *, frame_of_reference_uid: str, slice_z_mm: Sequence[float]) -> Any:
    """Where a finding without a segment is: a SCOORD3D region in the CT's frame of reference.

    The finding's box cut by the axial CT slice nearest its centre (:func:`_axial_plane_z`): a
    closed POLYGON through its four corners (x lo/hi, y lo/hi, LPS mm), at least 1 mm wide in
    each.

    Parameters
    ----------
    f
        The finding.
    frame_of_reference_uid
        The CT's exported Frame of Reference UID, the one its SEG and source series carry.
    slice_z_mm
        The z (LPS mm) of each CT slice.

    Returns
    -------
    highdicom.sr.ImageRegion3D
        The region, an *Image Region* (DCM 111030) SCOORD3D content item.
    """
    import highdicom as hd

    z = _axial_plane_z(f, slice_z_mm)
    lo, hi = f.bbox_lps_mm
    x0, x1 = sorted((float(lo[0]), float(hi[0])))
    y0, y1 = sorted((float(lo[1]), float(hi[1])))
    # a region is a closed shape (TID 1410 has no POINT region): a box with no width in x or y
    # is widened to 1 mm there, about its centre
    if x1 - x0 < 1.0:
        x0, x1 = (x0 + x1) / 2.0 - 0.5, (x0 + x1) / 2.0 + 0.5
    if y1 - y0 < 1.0:
        y0, y1 = (y0 + y1) / 2.0 - 0.5, (y0 + y1) / 2.0 + 0.5
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    data = np.array([(x, y, z) for x, y in corners], dtype=float)
    return hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
        graphic_data=data,
        frame_of_reference_uid=frame_of_reference_uid,
    )


def _build_sr(
    *,
    seg: Any,
    seg_numbers: dict[str, int],
    findings: list[Finding],
    ids: _Ids,
    case_key: str,
    ct_series_uid: str,
    frame_of_reference_uid: str,
    slice_z_mm: Sequence[float],
    model: Mapping[str, Any] | None,
    reviewer: str | None,
    draft: bool,
) -> Any:
    """The measurement report (TID 1500) as a DICOM Comprehensive 3D SR.

    One measurement group per finding: a finding with a segment in ``seg`` is a volumetric ROI
    group (TID 1411) referencing it; one without (no mask, or an empty one) a planar ROI group
    (TID 1410) with its box as a SCOORD3D region in the CT's frame (:func:`_finding_region`).

    Parameters
    ----------
    seg
        The SEG written, or (with no SEG) a CT source header, the SR's evidence.
    seg_numbers
        Segment number by finding id, for the findings with a segment.
    findings
        The findings reported (not rejected), at least one.
    ids, case_key
        The export's UID policy and case key (for the findings' tracking UIDs).
    ct_series_uid
        The CT series the segments were made from.
    frame_of_reference_uid
        The CT's exported Frame of Reference UID (the SEG's and the referenced series').
    slice_z_mm
        The z (LPS mm) of each CT slice: a maskless finding's region lies on one of them.
    model, reviewer, draft
        The provenance: the model and the (pseudonymised) reviewer; ``draft`` for a model draft.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The SR, not yet written.
    """
    import highdicom as hd

    model = model or {}
    context = _observation_context(model=model, reviewer=reviewer, draft=draft)
    algo = (
        hd.sr.AlgorithmIdentification(
            name=str(model.get("name") or "napari-ctreport")[:64],
            version=str(model.get("version") or __version__)[:64],
        )
        if draft
        else None
    )
    groups: list[Any] = []
    for f in findings:
        tracking = hd.sr.TrackingIdentifier(
            uid=ids.derived(case_key, "finding", f.id), identifier=f"{f.id} {f.kind}"[:64]
        )
        common: dict[str, Any] = {
            "tracking_identifier": tracking,
            "finding_type": _code(*_kind_type(f.kind)),
            "finding_sites": [_finding_site(f)],
            "measurements": _measurements(f),
            "qualitative_evaluations": [
                hd.sr.QualitativeEvaluation(
                    name=_code("kind", _LOCAL_SCHEME, "Finding kind"),
                    value=_code(f.kind.replace(" ", "-")[:16], _LOCAL_SCHEME, f.kind),
                ),
                hd.sr.QualitativeEvaluation(
                    name=_code("review", _LOCAL_SCHEME, "Review status"),
                    value=_code(f.status, _LOCAL_SCHEME, f.status),
                ),
            ],
        }
        if algo is not None:
            common["algorithm_id"] = algo
        if f.id in seg_numbers:
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=seg_numbers[f.id],
                source_series=hd.sr.SourceSeriesForSegmentation(ct_series_uid),
            )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    referenced_segment=ref, **common
                )
            )
        else:
            # the box's axial cross-section: viewers draw SCOORD3D coplanar with the displayed
            # slice (an ELLIPSOID VolumeSurface needs 3D awareness; TID 1411 takes no ImageRegion3D)
            region = _finding_region(
                f, frame_of_reference_uid=frame_of_reference_uid, slice_z_mm=slice_z_mm
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    referenced_region=region, **common
                )
            )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_code("24627-2", _LN, "CT Chest"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=report,
        **_new_instance(series_number=902),
        series_description="napari-ctreport measurements "
        + ("(draft)" if draft else "(corrected)"),
        coding_schemes=_coding_schemes(),
        **_sr_flags(reviewer=reviewer, draft=draft),
    )


def _new_instance(*, series_number: int) -> dict[str, Any]:
    """The identity of a new DICOM object in its own series (new series and instance UIDs, the
    given series number, instance 1, this project as manufacturer): the SEG is series 901, the
    measurement SR 902, the report SR 903."""
    from pydicom.uid import generate_uid

    return {
        "series_instance_uid": generate_uid(prefix=None),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(prefix=None),
        "instance_number": 1,
        "manufacturer": _MANUFACTURER,
    }


def _observation_context(*, model: Mapping[str, Any], reviewer: str | None, draft: bool) -> Any:
    """TID 1001: the model (a device) observed a draft, the reviewer (a person) a correction."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if draft:
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hash_uid("model:" + str(model.get("sha256") or model.get("name") or "none")),
            name=str(model.get("name") or "napari-ctreport model")[:64],
            manufacturer_name=_MANUFACTURER,
            model_name=str(model.get("version") or __version__)[:64],
        )
        return hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.cid270.Device, observer_identifying_attributes=device
            )
        )
    person = hd.sr.PersonObserverIdentifyingAttributes(name=_pn(reviewer or "Reviewer"))
    return hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Person, observer_identifying_attributes=person
        )
    )


def _sr_flags(*, reviewer: str | None, draft: bool) -> dict[str, Any]:
    """Completion, preliminary/final and verification of an SR: a draft is preliminary and
    unverified; a correction is final, and verified by its reviewer when one is named."""
    verified = (not draft) and bool(reviewer)
    out: dict[str, Any] = {"is_complete": True, "is_final": not draft, "is_verified": verified}
    if verified:
        out.update(
            verifying_observer_name=_pn(reviewer), verifying_organization="napari-ctreport user"
        )
    return out


def _build_report_sr(
    *,
    sources: Sequence[Any],
    report: Report,
    model: Mapping[str, Any] | None,
    reviewer: str | None,
    draft: bool,
) -> Any:
    """The report's text as a DICOM Comprehensive SR after TID 2000 (Basic Diagnostic Imaging
    Report): the observer context, the procedure (CT chest), a Findings container with one TEXT
    item per sentence and an Impressions container with one per impression line. Written for
    every export, also with no finding (the measurement SR, TID 1500, needs at least one)."""
    import highdicom as hd
    from highdicom.sr import ContainerContentItem, ContentSequence, TextContentItem
    from highdicom.sr import RelationshipTypeValues as Rel

    from .report.parse import split_sentences

    def section(code: tuple[str, str, str], item: tuple[str, str, str], lines: list[str]) -> Any:
        box = ContainerContentItem(name=_code(*code), relationship_type=Rel.CONTAINS)
        box.ContentSequence = ContentSequence(
            [
                TextContentItem(name=_code(*item), value=ln, relationship_type=Rel.CONTAINS)
                for ln in lines
            ]
        )
        return box

    sentences = [s.text for s in report.sentences if s.section == "findings" and s.text.strip()]
    if not sentences:  # a report given as text only
        sentences = [t for t in split_sentences(report.findings) if t.strip()]
    impression = [ln for ln in report.impression.splitlines() if ln.strip()]
    root = ContainerContentItem(
        name=_code("18748-4", _LN, "Diagnostic imaging report"), template_id="2000"
    )
    items = list(_observation_context(model=model or {}, reviewer=reviewer, draft=draft))
    items.append(
        hd.sr.CodeContentItem(
            name=_code("121058", "DCM", "Procedure reported"),
            value=_code("24627-2", _LN, "CT Chest"),
            relationship_type=Rel.HAS_CONCEPT_MOD,
        )
    )
    items.append(section(("121070", "DCM", "Findings"), ("121071", "DCM", "Finding"), sentences))
    items.append(
        section(("121072", "DCM", "Impressions"), ("121073", "DCM", "Impression"), impression)
    )
    root.ContentSequence = ContentSequence(items)
    return hd.sr.ComprehensiveSR(
        evidence=list(sources),
        content=root,
        **_new_instance(series_number=903),
        series_description="napari-ctreport report " + ("(draft)" if draft else "(corrected)"),
        **_sr_flags(reviewer=reviewer, draft=draft),
    )


# --------------------------------------------------------------------------------------------------
# PDF and FHIR
# --------------------------------------------------------------------------------------------------


def write_pdf(
    path: str | os.PathLike[str],
    *,
    findings: Sequence[Finding],
    report: Report | Mapping[str, Any],
    draft: bool,
    case_id: str,
    provenance: Mapping[str, Any] | None = None,
    compress: bool = True,
) -> Path:
    """Write the report as a one-to-few page PDF (reportlab), with the same content as the Markdown.

    Parameters
    ----------
    path
        Destination ``.pdf``.
    findings, report, draft, case_id, provenance
        As for :func:`napari_ctreport.report.markdown.render_markdown`.
    compress
        Compress page streams (``False`` keeps the text greppable in the raw bytes).
    """
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    rep = _as_report(report)
    prov = dict(provenance or {})
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7.5, leading=9)
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)
    p = Path(path)
    doc = SimpleDocTemplate(
        str(p),
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=f"Chest CT report {case_id}",
        author="napari-ctreport",
        subject="draft" if draft else "corrected",
        creator=f"napari-ctreport {__version__}",
        pageCompression=1 if compress else 0,
        invariant=1,
    )
    story: list[Any] = [Paragraph(escape(f"Chest CT report: {case_id}"), styles["Title"])]
    banner = Table(
        [
            [
                Paragraph(
                    f"<b>{escape(status_line(draft=draft, reviewer=prov.get('reviewer'), model=prov.get('model')))}</b>",
                    cell,
                )
            ]
        ],
        colWidths=[174 * mm],
    )
    banner.setStyle(
        TableStyle(
            [
                (
                    "BACKGROUND",
                    (0, 0),
                    (-1, -1),
                    colors.HexColor("#fff3cd" if draft else "#d4edda"),
                ),
                ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#999999")),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
            ]
        )
    )
    story += [banner, Spacer(1, 4 * mm), Paragraph("Findings table", styles["Heading2"])]
    rows = findings_table_rows(findings)
    if rows:
        data = [[Paragraph(f"<b>{escape(h)}</b>", cell) for h in TABLE_HEADER]]
        data += [[Paragraph(escape(c), cell) for c in r] for r in rows]
        widths = [10, 30, 32, 17, 17, 17, 15, 14, 22]
        table = Table(data, colWidths=[w * mm for w in widths], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#aaaaaa")),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story.append(table)
    else:
        story.append(Paragraph("No findings.", styles["BodyText"]))
    rejected = [f.id for f in findings if f.status == "rejected"]
    if rejected:
        story.append(
            Paragraph(escape(f"Rejected on review (not reported): {', '.join(rejected)}."), small)
        )
    story += [
        Paragraph("Findings", styles["Heading2"]),
        Paragraph(escape(rep.findings or "-"), styles["BodyText"]),
    ]
    story.append(Paragraph("Impression", styles["Heading2"]))
    for line in (rep.impression or "-").splitlines():
        story.append(Paragraph(escape(line), styles["BodyText"]))
    story.append(Paragraph("Provenance", styles["Heading2"]))
    for name, value in provenance_facts(prov):
        story.append(Paragraph(f"<b>{escape(name)}:</b> {escape(value)}", small))
    story += [
        Spacer(1, 4 * mm),
        Paragraph("Disclaimer", styles["Heading3"]),
        Paragraph(escape(DISCLAIMER), small),
    ]
    p.parent.mkdir(parents=True, exist_ok=True)
    doc.build(story)
    return p


def fhir_diagnostic_report(
    *,
    markdown: str,
    impression: str,
    draft: bool,
    case_id: str,
    study_uid: str | None = None,
    patient_id: str | None = None,
    reviewer: str | None = None,
    model: Mapping[str, Any] | None = None,
    issued: str | None = None,
    effective_date: str | None = None,
    report_id: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 DiagnosticReport (JSON object) for the report.

    ``status`` is ``preliminary`` for a draft and ``final`` once corrected; ``code`` is LOINC
    18748-4 *Diagnostic imaging study*; ``conclusion`` is the impression; ``presentedForm`` holds
    the Markdown (base64). The imaging study is a logical reference by its DICOM study UID.
    """
    md_bytes = markdown.encode("utf-8")
    res: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": (report_id or case_id)[:64],
        "status": "preliminary" if draft else "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "18748-4",
                    "display": "Diagnostic imaging study",
                }
            ],
            "text": "CT chest",
        },
        "issued": issued or _now(),
        "conclusion": impression,
        "presentedForm": [
            {
                "contentType": "text/markdown; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(md_bytes).decode("ascii"),
                "size": len(md_bytes),
                "hash": base64.b64encode(hashlib.sha1(md_bytes).digest()).decode("ascii"),  # noqa: S324 - FHIR Attachment.hash is SHA-1
                "title": MARKDOWN_FILE,
            }
        ],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:ctreport:case:{case_id}"}],
    }
    if patient_id:
        res["subject"] = {"identifier": {"value": patient_id}, "type": "Patient"}
    if effective_date:
        res["effectiveDateTime"] = effective_date
    if study_uid:
        res["imagingStudy"] = [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
            }
        ]
    if reviewer and not draft:
        res["resultsInterpreter"] = [{"display": reviewer}]
    if model:
        res["extension"] = [
            {
                "url": "urn:ctreport:model",
                "valueString": f"{model.get('name', '')} {model.get('version', '')} "
                f"sha256:{model.get('sha256') or ''}".strip(),
            }
        ]
    return res


def _fhir_date(da: str) -> str | None:
    if len(da) >= 8 and da[:8].isdigit():
        return f"{da[:4]}-{da[4:6]}-{da[6:8]}"
    return None


# --------------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------------


def export_case(
    *,
    volume: CTVolume,
    findings: Sequence[Finding | Mapping[str, Any]],
    labels: np.ndarray,
    report: Report | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    original: Mapping[str, Any] | None = None,
    edit_log: Iterable[Mapping[str, Any]] = (),
    model_info: Mapping[str, Any] | None = None,
    reviewer: str | None = None,
    source: str = "radiologist corrected",
    deidentify: bool = True,
    key: str | bytes | None = None,
    formats: Iterable[str] = FORMATS,
    lung_ml: float | None = None,
) -> ExportResult:
    """Export a case: case folder, DICOM SEG + SR, Markdown, PDF and FHIR report, as a new version.

    Parameters
    ----------
    volume
        The CT (as read by :func:`~napari_ctreport.io.ct.load_ct`; its metadata supplies UIDs,
        patient fields and, for DICOM input, the source files).
    findings
        The findings to record (``Finding`` or their dicts). Rejected findings are kept in
        ``case.json`` but left out of the SEG, SR and report table.
    labels
        Label map on the CT grid, value = ``finding.label``.
    report
        The report (``Report`` or its dict).
    out_dir
        Export root; the version is written to ``out_dir/<case_id>/vNNN``.
    original
        The model's draft (``{"findings": [...], "report": {...}}``) when ``findings`` correct it.
    edit_log
        Review edits ``[{time, action, finding_id, before, after}]``.
    model_info
        ``{"name", "version", "sha256"}`` of the model that drafted the findings.
    reviewer
        Who corrected the case (pseudonymised when de-identifying).
    source
        ``"radiologist corrected"`` (default), ``"model draft"`` or ``"synthetic"``; a model draft
        gives a preliminary report observed by the device, anything else a final one.
    deidentify
        Apply the PS3.15 basic profile (see :mod:`napari_ctreport.io.deid`) to everything
        written; ``False`` keeps identifiers, for the clinical record.
    key
        De-identification key (default: ``$CTREPORT_DEID_KEY``, else the per-installation key).
    formats
        Subset of :data:`FORMATS`; ``"sr"`` implies ``"seg"`` (the SR references the segments).
    lung_ml
        Segmented lung in the scan (ml; ``Analysis.volume_info["lung_ml"]``, a review session's
        ``lung_ml``), recorded as ``provenance.input.lung_ml`` in ``case.json`` (``null`` when
        ``None``: not known) so that a reopened case writes the same report ("Only part of the
        lungs was scanned", "No lung is in the scanned volume").

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        On an unknown format or source, labels that do not fit the CT, an edit without an action,
        or a negative or non-finite ``lung_ml``.
    """
    fmts = set(formats)
    unknown = fmts - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; expected some of {FORMATS}")
    if "sr" in fmts:
        fmts.add("seg")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise ValueError(f"labels shape {labels.shape} differs from the CT's {volume.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    lung = None if lung_ml is None else _lung_ml(lung_ml)
    finds = [_as_finding(f) for f in findings]
    rep = _as_report(report)
    draft = source == "model draft"
    model = dict(model_info) if model_info else None
    notes: list[str] = []

    meta = dict(volume.metadata or {})
    deid = Deidentifier(load_key(key)) if deidentify else None
    # a reopened de-identified case: its UIDs and patient are pseudonyms already, kept as they
    # are so that a re-export is a new version of the same case and study
    already = bool(meta.get("deidentified"))
    ids = _Ids(deid, map_uids=not already)
    headers: list[Any] | None = None
    if meta.get("format") == "dicom" and meta.get("files"):
        try:
            headers = _read_headers(meta["files"])
        except Exception as err:  # noqa: BLE001 - a vanished source only costs the reference
            notes.append(f"source DICOM files unreadable ({err}); a derived series is referenced")
            headers = None
    if deid is not None and not already:
        deid.remember(meta.get("patient_name"), meta.get("patient_id"))
        for ds in (headers or [])[:1]:
            deid.collect(ds)
        out_meta = deid.metadata(meta)
    else:
        out_meta = dict(meta)
    deidentified = deid is not None or already

    in_series = str(meta.get("series_uid") or "")
    chash = None if in_series else _content_hash(volume)
    if meta.get("study_uid"):
        study_uid = ids.uid(str(meta["study_uid"]))
    else:
        study_uid = ids.derived("content", chash or in_series, "study")
    series_uid = ids.uid(in_series) if in_series else ids.derived("content", chash or "", "series")
    for_in = str(meta.get("frame_of_reference_uid") or "")
    for_uid = ids.uid(for_in) if for_in else ids.derived("content", chash or in_series, "frame")
    case_id = "ct-" + hashlib.sha256(series_uid.encode()).hexdigest()[:16]
    case_key = series_uid

    out_reviewer = reviewer
    if deid is not None and reviewer:
        out_reviewer = deid.pseudonym(reviewer, prefix="REVIEWER")
    patient_out = str(out_meta.get("patient_id") or "") or None

    case_dir = Path(out_dir).absolute() / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(case_dir)
    final = case_dir / f"v{version:03d}"
    tmp = case_dir / f".v{version:03d}.partial-{uuid.uuid4().hex[:8]}"
    created = _now()
    # the study's date: the input's (shifted when de-identifying), else the first export's, kept
    # in case.json so that every version's derived series agrees on it
    study_date = str(out_meta.get("study_date") or "") or created[:10].replace("-", "")
    edits = []
    for i, e in enumerate(edit_log):
        if not isinstance(e, Mapping) or not str(e.get("action") or ""):
            raise ValueError(f"edit_log[{i}]: an edit needs an 'action' ({e!r})")
        edits.append({"time": created, "finding_id": None, **dict(e)})  # undated: export time
    files: dict[str, Path] = {}
    active = [f for f in finds if f.status != "rejected"]
    report_json = ids.text(rep.to_dict())
    rep_out = Report.from_dict(report_json)
    provenance: dict[str, Any] = {
        "source": source,
        "model": model,
        "generator": None,
        "reviewer": out_reviewer,
        "created": created,
        "edit_log": _jsonable(ids.text(edits)),
        "export": {
            "version": version,
            "exporter": f"napari-ctreport {__version__}",
            "deidentified": deidentified,
            "deidentification_method": METHOD if deidentified else None,
        },
        "input": {
            "format": meta.get("source_format") or meta.get("format") or "",
            "study_uid": study_uid,
            "series_uid": series_uid,
            "frame_of_reference_uid": for_uid,
            "size_zyx": list(volume.shape),
            "spacing_zyx_mm": [float(v) for v in volume.spacing_zyx],
            "lung_ml": lung,
            # pseudonyms and the shifted date when de-identified
            "patient_name": str(out_meta.get("patient_name") or ""),
            "patient_id": str(out_meta.get("patient_id") or ""),
            "study_date": study_date,
        },
    }
    if not deidentified:
        provenance["input"]["source_path"] = str(meta.get("source_path") or "")
    md_prov = {
        "source": source,
        "model": model,
        "reviewer": out_reviewer,
        "created": created,
        "edits": len(edits) if edits else None,
        "version": f"v{version:03d}",
        "study_uid": study_uid,
        "series_uid": series_uid,
        "deidentified": deidentified,
    }
    try:
        if "case" in fmts:
            case = Case(
                case_id=case_id,
                findings=finds,
                report=report_json,
                provenance=provenance,
                original=ids.text(_original_json(original)),
                lung_ml=lung,
            )
            write_case(
                case,
                tmp,
                volume=CTVolume(volume.array, volume.spacing_zyx, volume.origin_lps),
                labels=labels,
            )
            problems = validate_case(tmp)
            if problems:  # a bug, not the user's fault: refuse rather than write a bad case
                raise ValueError(f"exported case would not validate: {'; '.join(problems[:3])}")
            files["case"] = tmp / "case.json"
            files["image"] = tmp / "image.nii.gz"
            files["labels"] = tmp / "labels.nii.gz"
        else:
            tmp.mkdir()

        if "seg" in fmts:
            present = (
                set(np.flatnonzero(np.bincount(labels.ravel().astype(np.int64))).tolist())
                if labels.size
                else set()
            )
            seg_findings = [f for f in active if f.label > 0 and f.label in present]
            for f in active:
                if f.label > 0 and f.label not in present:
                    notes.append(f"{f.id}: label {f.label} has no voxels; no segment written")
            seg_kw: dict[str, Any] = {
                "labels": labels,
                "seg_findings": seg_findings,
                "ids": ids,
                "case_key": case_key,
                "model": model,
                "reviewer": out_reviewer,
                "draft": draft,
            }
            seg = None
            src: list[Any] | None
            sources, why = _aligned_source(volume, headers)
            if sources is not None:
                fill = {
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": series_uid,
                    "FrameOfReferenceUID": for_uid,
                }
                src = [_sanitize_source(ds, deid, fill) for ds in sources]
                if seg_findings:
                    try:
                        seg = _build_seg(sources=src, **seg_kw)
                    except (ValueError, KeyError, AttributeError, TypeError) as err:
                        src, why = None, f"the source headers were refused: {err}"
            else:
                src = None
            if src is None:
                what = "SEG and SR reference" if seg_findings else "the SRs reference"
                notes.append(f"{what} a derived CT series in {CT_DIR}/ ({why})")
                ct_meta = {**out_meta, "study_date": study_date}
                src = _write_derived_ct(
                    volume, tmp / CT_DIR, meta=ct_meta, study_uid=study_uid, for_uid=for_uid
                )
                files["ct"] = tmp / CT_DIR
                if seg_findings:
                    seg = _build_seg(sources=src, **seg_kw)
            ct_series_uid = str(src[0].SeriesInstanceUID)
            if seg is not None:
                seg.save_as(str(tmp / SEG_FILE), enforce_file_format=True)
                files["seg"] = tmp / SEG_FILE
            else:
                notes.append("no finding has a mask: no SEG written")
            if "sr" in fmts:
                text_sr = _build_report_sr(
                    sources=src, report=rep_out, model=model, reviewer=out_reviewer, draft=draft
                )
                text_sr.save_as(str(tmp / REPORT_SR_FILE), enforce_file_format=True)
                files["report_sr"] = tmp / REPORT_SR_FILE
            if "sr" in fmts and not active:
                notes.append(
                    "no findings: no measurement SR written (TID 1500 needs a measurement group);"
                    f" the report is in {REPORT_SR_FILE}"
                )
            elif "sr" in fmts:
                sr = _build_sr(
                    seg=seg if seg is not None else src[0],
                    seg_numbers={f.id: n for n, f in enumerate(seg_findings, start=1)}
                    if seg is not None
                    else {},
                    findings=active,
                    ids=ids,
                    case_key=case_key,
                    ct_series_uid=ct_series_uid,
                    # the SEG's: highdicom copies it from the (de-identified) source headers
                    frame_of_reference_uid=str(src[0].FrameOfReferenceUID),
                    slice_z_mm=[float(ds.ImagePositionPatient[2]) for ds in src],
                    model=model,
                    reviewer=out_reviewer,
                    draft=draft,
                )
                sr.save_as(str(tmp / SR_FILE), enforce_file_format=True)
                files["sr"] = tmp / SR_FILE

        markdown = render_markdown(
            findings=finds, report=rep_out, draft=draft, case_id=case_id, provenance=md_prov
        )
        if "markdown" in fmts:
            (tmp / MARKDOWN_FILE).write_text(markdown, encoding="utf-8")
            files["markdown"] = tmp / MARKDOWN_FILE
        if "pdf" in fmts:
            files["pdf"] = write_pdf(
                tmp / PDF_FILE,
                findings=finds,
                report=rep_out,
                draft=draft,
                case_id=case_id,
                provenance=md_prov,
            )
        if "fhir" in fmts:
            doc = fhir_diagnostic_report(
                markdown=markdown,
                impression=rep_out.impression,
                draft=draft,
                case_id=case_id,
                study_uid=study_uid,
                patient_id=patient_out,
                reviewer=out_reviewer,
                model=model,
                issued=created,
                effective_date=_fhir_date(str(out_meta.get("study_date") or "")),
                report_id=f"{case_id}-v{version:03d}",
            )
            (tmp / FHIR_FILE).write_text(
                json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            files["fhir"] = tmp / FHIR_FILE
        if final.exists():
            raise FileExistsError(f"{final}: written by another export meanwhile; export again")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {k: final / v.relative_to(tmp) for k, v in files.items()}
    for line in notes:
        log.info("export %s: %s", final, line)
    return ExportResult(
        folder=final,
        files=files,
        case_id=case_id,
        version=version,
        deidentified=deidentified,
        warnings=notes,
    )


def export_analysis(
    analysis: Analysis,
    *,
    volume: CTVolume,
    out_dir: str | os.PathLike[str],
    **kw: Any,
) -> ExportResult:
    """Export the model's draft as is (``source="model draft"``), e.g. for ``ctreport analyze --export``.

    ``kw`` are passed to :func:`export_case` (``deidentify``, ``key``, ``formats``, ...);
    ``lung_ml`` defaults to the analysis's ``volume_info["lung_ml"]``.
    """
    kw.setdefault("source", "model draft")
    kw.setdefault("lung_ml", (getattr(analysis, "volume_info", None) or {}).get("lung_ml"))
    return export_case(
        volume=volume,
        findings=analysis.findings,
        labels=analysis.labels,
        report=analysis.report,
        out_dir=out_dir,
        model_info=analysis.model_info,
        **kw,
    )
