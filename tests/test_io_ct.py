"""Tests of the CT reader (napari_ctreport.io.ct) on the real data in shared/data/real and synthetic cases."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid
from scipy.ndimage import map_coordinates

from napari_ctreport.io import (
    CTReadError,
    CTVolume,
    GeometryError,
    LocalizerError,
    NotCTError,
    UnreadableError,
)
from napari_ctreport.io.ct import axis_codes, canonicalize, load_ct, probe_ct
from napari_ctreport.io.write import read_labels, write_dicom_series, write_volume


@pytest.fixture(scope="module")
def real(shared_data: Path) -> Path:
    return shared_data / "real"


@pytest.fixture(scope="module")
def manifest(real: Path) -> dict[str, dict]:
    return {e["path"]: e for e in json.loads((real / "manifest.json").read_text())}


# --------------------------------------------------------------------------------------------------
# probing
# --------------------------------------------------------------------------------------------------


def test_probe_ct(real: Path, tmp_path: Path) -> None:
    assert probe_ct(real / "totalsegmentator" / "example_ct_dicom")
    assert probe_ct(real / "totalsegmentator" / "example_ct.nii.gz")
    assert probe_ct(real / "dcmqi_ct3slice" / "seg" / "liver_seg.nrrd")
    no_ext = next((real / "monai_ct_dicom" / "CT_DICOM").iterdir())
    assert no_ext.suffix == ""
    assert probe_ct(no_ext)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "blob").write_bytes(b"\0" * 300)
    assert not probe_ct(tmp_path / "notes.txt")
    assert not probe_ct(tmp_path / "blob")
    assert not probe_ct(tmp_path / "does_not_exist.nii")


def test_probe_claims_only_folders_it_can_read(real: Path, tmp_path: Path) -> None:
    """A folder is claimed when it holds DICOM files (by suffix, or by the ``DICM`` marker of
    files without a known suffix, also a few folders down) or is a case folder; a folder of
    NIfTIs (a CT and its masks), of PNGs or an empty one is not: ``probe_ct`` was True for any
    folder, and the napari reader then failed with "no DICOM files found in this folder"."""
    assert probe_ct(real / "totalsegmentator" / "example_ct_dicom")  # no suffixes
    assert probe_ct(real / "monai_ct_dicom" / "CT_DICOM")
    assert probe_ct(real / "dcm_qa_ct" / "GE_gantry_tilt_subset")  # .dcm
    assert probe_ct(real / "monai_ct_dicom")  # DICOM one folder down
    assert not probe_ct(real / "totalsegmentator" / "pulmonary_report")  # NIfTIs only
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(20):
        (pngs / f"slice{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    (pngs / "notes").write_bytes(b"\0" * 300)  # no suffix, no DICM marker
    assert not probe_ct(pngs)
    (tmp_path / "empty").mkdir()
    assert not probe_ct(tmp_path / "empty")
    # a DICOM series named by UIDs (suffixes like ".37"), under PATIENT/STUDY/SERIES
    series = tmp_path / "pacs" / "PAT1" / "STUDY1" / "SERIES1"
    series.mkdir(parents=True)
    for f in sorted((real / "totalsegmentator" / "example_ct_dicom").iterdir())[:2]:
        shutil.copy(f, series / f"1.2.840.113619.2.55.{f.name}.37")
    assert probe_ct(tmp_path / "pacs")
    # a case folder
    case = tmp_path / "case"
    case.mkdir()
    (case / "case.json").write_text("{}")
    assert probe_ct(case)
    # single files: DICOM by suffix or marker, not a NIfTI
    from napari_ctreport.io.ct import is_dicom_file

    assert is_dicom_file(next(series.iterdir()))
    assert is_dicom_file(real / "pydicom_testfiles" / "ct" / "CT_small.dcm")
    assert not is_dicom_file(real / "totalsegmentator" / "example_ct.nii.gz")
    assert not is_dicom_file(pngs / "notes")
    assert not is_dicom_file(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# NIfTI geometry (RAS on disk)
# --------------------------------------------------------------------------------------------------


def test_nifti_ras_matches_simpleitk_physical_points(real: Path) -> None:
    path = real / "totalsegmentator" / "example_ct.nii.gz"
    vol = load_ct(path)
    img = sitk.ReadImage(str(path))
    raw = sitk.GetArrayFromImage(img)  # (k, j, i)
    assert vol.metadata["orientation_on_disk"] == "RAS"
    assert vol.metadata["format"] == "nifti"
    assert vol.shape == (raw.shape[0], raw.shape[1], raw.shape[2])
    assert vol.spacing_zyx == pytest.approx((3.0, 3.0, 3.0))
    rng = np.random.default_rng(0)
    for _ in range(50):
        i, j, k = (int(rng.integers(0, n)) for n in img.GetSize())
        p = np.array(img.TransformIndexToPhysicalPoint((i, j, k)))
        idx = vol.lps_to_index(p)
        assert np.allclose(idx, np.round(idx), atol=1e-4)
        z, y, x = np.round(idx).astype(int)
        assert vol.array[z, y, x] == raw[k, j, i]
        assert np.allclose(vol.index_to_lps((z, y, x)), p, atol=1e-4)


def test_nifti_anatomy_bone_posterior(real: Path) -> None:
    vol = load_ct(real / "totalsegmentator" / "example_ct.nii.gz")
    a = vol.array.astype(np.float32)
    nz, ny, nx = a.shape
    body = a > -300
    ys = np.nonzero(body.any(axis=(0, 2)))[0]
    y_mid = (ys.min() + ys.max()) // 2
    band = a[nz // 4 : 3 * nz // 4, :, nx // 3 : 2 * nx // 3]
    bone = band > 250
    posterior = bone[:, y_mid:, :].sum()  # larger y index = posterior
    anterior = bone[:, :y_mid, :].sum()
    assert posterior > 1.5 * anterior


def test_liver_on_patients_right(real: Path) -> None:
    ct = load_ct(real / "totalsegmentator" / "example_ct_sm.nii.gz")
    seg = read_labels(real / "totalsegmentator" / "example_seg.nii.gz", like=ct)
    liver = seg == 5  # TotalSegmentator v2 class id for liver
    assert liver.sum() > 1000
    body_x = np.nonzero(ct.array > -300)[2]
    mid_x = ct.index_to_lps((0, 0, (body_x.min() + body_x.max()) / 2))[0]
    liver_x = ct.index_to_lps(np.argwhere(liver).mean(axis=0))[0]
    assert liver_x < mid_x - 20  # patient's right is LPS x below the midline
    assert 0 < float(ct.array[liver].mean()) < 200  # soft tissue


def test_labels_on_other_grid_line_up(real: Path) -> None:
    folder = real / "totalsegmentator" / "pulmonary_report"
    ct = load_ct(folder / "ct_cropped.nii.gz")
    heart = read_labels(folder / "heart.nii.gz", like=ct)
    pa = read_labels(folder / "pulmonary_artery.nii.gz", like=ct)
    assert heart.shape == pa.shape == ct.shape
    # same-grid mask: identical to the raw array (LPS on disk)
    raw_pa = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pulmonary_artery.nii.gz")))
    assert np.array_equal(pa, raw_pa)
    # other grid: each labelled voxel maps to a labelled voxel of the source
    himg = sitk.ReadImage(str(folder / "heart.nii.gz"))
    hraw = sitk.GetArrayFromImage(himg)
    pts = np.argwhere(heart > 0)
    assert len(pts) > 1000
    for z, y, x in pts[:: max(1, len(pts) // 40)]:
        i, j, k = himg.TransformPhysicalPointToIndex(tuple(ct.index_to_lps((z, y, x))))
        assert hraw[k, j, i] == 1
    # contrast CT: blood in the heart and the pulmonary artery is dense
    assert float(ct.array[heart > 0].mean()) > 100
    assert float(ct.array[pa > 0].mean()) > 150


# --------------------------------------------------------------------------------------------------
# single DICOM files
# --------------------------------------------------------------------------------------------------


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_flipped_explicit_vr_un(real: Path) -> None:
    path = real / "pydicom_testfiles" / "ct" / "explicit_VR-UN.dcm"
    vol = load_ct(path)
    ds = pydicom.dcmread(path)
    assert vol.metadata["orientation_on_disk"] == "LAI"
    assert vol.shape == (1, 512, 512)
    ps = float(ds.PixelSpacing[0])
    # rows run anterior on disk: canonical row 0 is the last stored row
    assert vol.origin_lps == pytest.approx((0.0, -511 * ps, -121.0), abs=1e-3)
    assert np.array_equal(vol.array[0], _hu(ds)[::-1, :])
    # voxel [0, y, x] lies at the LPS point the header gives for stored pixel (511 - y, x)
    r, c = 100, 37
    p = np.array([0.0, 0.0, -121.0]) + c * ps * np.array([1, 0, 0]) + r * ps * np.array([0, -1, 0])
    assert vol.array[tuple(np.round(vol.lps_to_index(p)).astype(int))] == _hu(ds)[r, c]


def test_enhanced_multiframe_ct(real: Path) -> None:
    path = real / "pydicom_testfiles" / "ct" / "eCT_Supplemental.dcm"
    vol = load_ct(path)
    ds = pydicom.dcmread(path)
    assert vol.shape == (2, 512, 512)
    assert vol.spacing_zyx[0] == pytest.approx(10.0)
    assert vol.metadata["orientation_on_disk"] == "RPS"
    assert vol.origin_lps == pytest.approx((99.5 - 511 * 0.388672, -301.5, -159.0), abs=1e-3)
    frames = ds.pixel_array.astype(np.float64) - 1024.0  # shared rescale intercept
    assert np.array_equal(vol.array[0], frames[0][:, ::-1])
    assert np.array_equal(vol.array[1], frames[1][:, ::-1])
    assert vol.metadata["windows"] == [(49.0, 102.0)]


def test_single_slice_geometry_and_metadata(real: Path) -> None:
    path = real / "pydicom_testfiles" / "ct" / "CT_small.dcm"
    vol = load_ct(path)
    ds = pydicom.dcmread(path)
    assert vol.shape == (1, 128, 128)
    assert vol.spacing_zyx == pytest.approx(
        (float(ds.SliceThickness), *map(float, ds.PixelSpacing))
    )
    assert vol.origin_lps == pytest.approx(tuple(map(float, ds.ImagePositionPatient)), abs=1e-4)
    md = vol.metadata
    assert md["format"] == "dicom" and md["modality"] == "CT"
    assert md["series_uid"] == ds.SeriesInstanceUID
    assert md["sop_instance_uids"] == [ds.SOPInstanceUID]
    assert md["files"] == [str(path)]
    assert md["patient_position"] == "FFS"
    json.dumps(md)  # plain JSON-able types
    assert vol.warnings == []


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("derived/CT_small_RLE.dcm", "ct/CT_small.dcm"),
        ("ct/693_J2KR.dcm", "ct/693_UNCR.dcm"),
    ],
)
def test_compressed_equals_uncompressed(real: Path, compressed: str, reference: str) -> None:
    base = real / "pydicom_testfiles"
    a, b = load_ct(base / compressed), load_ct(base / reference)
    assert np.array_equal(a.array, b.array)
    assert a.origin_lps == b.origin_lps and a.spacing_zyx == b.spacing_zyx


@pytest.mark.parametrize(
    "rel",
    [
        "pydicom_testfiles/ct/CT_small.dcm",
        "pydicom_testfiles/ct/693_J2KI.dcm",
        "pydicom_testfiles/ct/693_UNCI.dcm",
        "pydicom_testfiles/ct/bad_sequence.dcm",
        "pydicom_testfiles/ct/explicit_VR-UN.dcm",
        "pydicom_testfiles/ct/eCT_Supplemental.dcm",
        "dcmqi_ct3slice/ct-3slice",
        "totalsegmentator/example_ct_sm.nii.gz",
        "totalsegmentator/pulmonary_report/ct_cropped.nii.gz",
    ],
)
def test_hu_range_matches_manifest(real: Path, manifest: dict, rel: str) -> None:
    vol = load_ct(real / rel)
    entry = manifest[rel]
    assert float(vol.array.min()) == entry["min"]
    assert float(vol.array.max()) == entry["max"]


@pytest.mark.parametrize(
    ("rel", "shown"),
    [
        ("dcmqi_ct3slice/seg/liver_seg.nrrd", "0..1"),
        ("dcmqi_ct3slice/seg/heart_seg.nrrd", "0..3"),
        ("dcmqi_ct3slice/seg/liver_spine_seg.nrrd", "0..2"),
        ("totalsegmentator/example_seg.nii.gz", "0..117"),
        ("totalsegmentator/pulmonary_report/heart.nii.gz", "0..1"),
        ("totalsegmentator/pulmonary_report/pulmonary_artery.nii.gz", "0..1"),
    ],
)
def test_a_label_map_is_not_ct(real: Path, rel: str, shown: str) -> None:
    """A label map or mask (small non-negative integers only) is refused as not CT, one line
    naming the file; it was read as a CT with a warning ("no air below -500 HU"), then
    analysed and reported on. ``label_map=True`` reads it as what it is."""
    from napari_ctreport.io.ct import load_study

    path = real / rel
    for load in (load_ct, load_study):
        with pytest.raises(NotCTError) as err:
            load(path)
        assert str(err.value) == (
            f"{path}: holds small non-negative integers only ({shown}), a label map or mask, not CT"
        )
    labels = load_ct(path, label_map=True)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert labels.array.dtype == raw.dtype and labels.warnings == []
    assert np.array_equal(np.unique(labels.array), np.unique(raw))


def test_no_real_ct_is_taken_for_a_label_map(real: Path, manifest: dict, tmp_path: Path) -> None:
    """Every CT of shared/data/real that is a NIfTI, NRRD or MHA opens (none is taken for a label
    map), and so do a synthetic CT, a crop of soft tissue only, a CT stored without its rescale
    (air at 0, soft tissue above 1000) and a volume of fractions (not integers); an empty
    (all-zero) volume is refused as a mask."""
    from napari_ctreport.io.ct import VOLUME_SUFFIXES, _suffix
    from napari_ctreport.synth import generate_case

    volumes = [e["path"] for e in manifest.values() if _suffix(Path(e["path"])) in VOLUME_SUFFIXES]
    cts = [rel for rel in volumes if manifest[rel]["min"] < 0]
    assert len(cts) >= 3
    for rel in cts:
        assert load_ct(real / rel).array.min() < 0, rel
    rng = np.random.default_rng(3)
    soft = rng.normal(40, 15, (8, 32, 32)).round().astype(np.int16)  # a crop of soft tissue
    raw = (rng.integers(-1000, 400, (8, 32, 32)) + 1024).astype(np.uint16)  # no rescale
    frac = np.zeros((8, 32, 32), np.float32)
    frac[2:4] = 0.5
    for name, arr in (("soft", soft), ("raw", raw), ("frac", frac)):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"{name}.nrrd"))
        vol = load_ct(tmp_path / f"{name}.nrrd")
        assert np.array_equal(vol.array, arr), name
    synthetic = generate_case(seed=116, shape=(24, 64, 64)).volume
    back = load_ct(write_volume(synthetic, tmp_path / "synthetic.nii.gz"))
    assert np.array_equal(back.array, synthetic.array)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(tmp_path / "0.mha"))
    with pytest.raises(NotCTError, match=r"integers only \(only 0\), a label map or mask"):
        load_ct(tmp_path / "0.mha")


def test_a_label_map_is_one_line_exit_2_in_the_cli(real: Path, capsys) -> None:
    """``ctreport analyze`` of a label map: one line naming the file, exit 2, no report (it was
    a warning, exit 0 and a clinical report of a mask)."""
    from napari_ctreport.cli import main

    path = real / "dcmqi_ct3slice" / "seg" / "liver_seg.nrrd"
    assert main(["analyze", str(path)]) == 2
    out = capsys.readouterr()
    err_lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert out.out == ""
    assert len(err_lines) == 1 and str(path) in err_lines[0]
    assert "label map or mask, not CT" in err_lines[0]


@pytest.mark.parametrize(
    ("rel", "name"),
    [
        ("totalsegmentator/pulmonary_report/ct_cropped.nii.gz", "ct_cropped"),
        ("totalsegmentator/example_ct.nii.gz", "example_ct"),
        ("dcmqi_ct3slice/ct-3slice", "ct-3slice"),  # a DICOM folder without SeriesDescription
        ("pydicom_testfiles/ct/CT_small.dcm", "CT_small"),
    ],
)
def test_the_source_is_named_by_its_file_or_folder(real: Path, rel: str, name: str) -> None:
    """``metadata["source_name"]`` (a napari layer's name where the CT has no series
    description) is the file's name without its suffix, or the folder's name; it was only set
    for case folders, and every NIfTI/NRRD/MHA layer was named "CT"."""
    from napari_ctreport._napari.layers import image_layer_data

    vol = load_ct(real / rel)
    assert vol.metadata["source_name"] == name
    assert not vol.metadata["series_description"]
    assert image_layer_data(vol)[1]["name"] == name


def test_oblique_single_slice_is_resampled(real: Path) -> None:
    path = real / "pydicom_testfiles" / "ct" / "J2K_pixelrep_mismatch.dcm"
    vol = load_ct(path)
    ds = pydicom.dcmread(path)
    assert vol.metadata["resampled"] is True
    assert any("oblique" in w and path.name in w for w in vol.warnings)
    # every output voxel inside the slab holds the stored image at its projection onto the slice
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    iop[3:] /= np.linalg.norm(iop[3:])  # stored with 4 decimals: not exactly unit length
    ps = [float(v) for v in ds.PixelSpacing]
    normal = np.cross(iop[:3], iop[3:])
    hu = _hu(ds)
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, n, 20000) for n in vol.shape], axis=1)
    rel = vol.index_to_lps(idx) - ipp
    col, row, dist = rel @ iop[:3] / ps[1], rel @ iop[3:] / ps[0], rel @ normal
    inside = (np.abs(dist) < 2.0) & (row > 1) & (row < 510) & (col > 1) & (col < 510)
    assert inside.sum() > 200
    got = vol.array[tuple(idx[inside].T)]
    want = map_coordinates(hu, [row[inside], col[inside]], order=1)
    np.testing.assert_allclose(got, want, atol=0.05)
    # outside the slab: the image's lowest value (its padding), or air if that is lower
    assert np.all(vol.array[tuple(idx[np.abs(dist) > 3.0].T)] == min(-1024.0, float(hu.min())))


@pytest.mark.parametrize(
    "rel",
    [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "emri_small.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ],
)
def test_mr_is_not_ct(real: Path, rel: str) -> None:
    path = real / "pydicom_testfiles" / "transfer_syntax_mr" / rel
    with pytest.raises(NotCTError, match="MR") as err:
        load_ct(path)
    assert str(path) in str(err.value)


def test_mr_folder_is_not_ct(real: Path) -> None:
    with pytest.raises(NotCTError, match="MR series.*not CT"):
        load_ct(real / "pydicom_testfiles" / "transfer_syntax_mr")


def test_seg_is_not_ct(real: Path) -> None:
    path = real / "dcmqi_ct3slice" / "seg" / "liver.dcm"
    with pytest.raises(NotCTError, match="SEG") as err:
        load_ct(path)
    assert str(path) in str(err.value)
    with pytest.raises(NotCTError, match="SEG"):
        load_ct(path.parent)


def test_localizer_refused(real: Path) -> None:
    path = real / "dcm_qa_ct" / "Philips_localizer" / "I10.dcm"
    with pytest.raises(LocalizerError, match="localizer") as err:
        load_ct(path)
    assert str(path) in str(err.value)


def test_no_meta_unreadable(real: Path) -> None:
    path = real / "pydicom_testfiles" / "ct" / "no_meta.dcm"
    with pytest.raises(UnreadableError) as err:
        load_ct(path)
    assert str(path) in str(err.value)


def test_broken_files_unreadable(real: Path, tmp_path: Path) -> None:
    src = (real / "pydicom_testfiles" / "ct" / "CT_small.dcm").read_bytes()
    cases = {
        "empty.dcm": b"",
        "garbage.dcm": bytes(range(256)) * 10,
        "truncated.dcm": src[:2000],
        "text.nii": b"this is not an image\n",
        "text.nrrd": b"hello\n",
        "noext": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableError) as err:
            load_ct(tmp_path / name)
        assert name in str(err.value)
        assert "Traceback" not in str(err.value)
    with pytest.raises(UnreadableError, match="no such"):
        load_ct(tmp_path / "missing.nii.gz")
    with pytest.raises(UnreadableError, match="no DICOM"):
        load_ct(_empty_dir(tmp_path))


def test_a_single_slice_nifti_is_a_one_slice_volume(tmp_path: Path) -> None:
    """A 2-D NIfTI (one axial slice) reads as a volume of one slice, like a single DICOM slice;
    it was refused with "cannot reshape array of size 4 into shape (3,3)"."""
    arr = np.full((64, 48), -1000, np.int16)
    arr[16:48, 8:40] = 40
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 0.7))
    sitk.WriteImage(image, str(tmp_path / "slice.nii.gz"))
    vol = load_ct(tmp_path / "slice.nii.gz")
    assert vol.shape == (1, 64, 48) and np.array_equal(vol.array[0], arr)
    assert vol.spacing_zyx[1:] == pytest.approx((0.7, 0.8))


def _small_nifti(path: Path) -> np.ndarray:
    """Write a 12 x 32 x 24 int16 CT-like volume (air around a body, a ramp of values so every
    slice differs) to ``path`` with SimpleITK; returns its array."""
    arr = np.full((12, 32, 24), -1000, np.int16)
    arr[:, 4:28, 4:20] = (np.arange(12, dtype=np.int16) * 25 - 100)[:, None, None]
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 0.7, 2.5))
    sitk.WriteImage(image, str(path))
    return arr


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_truncated_nifti_is_refused(tmp_path: Path, suffix: str) -> None:
    """A NIfTI cut short (a copy or download that stopped) is refused naming the file and
    saying it is truncated, as a truncated NRRD/MHA/DICOM is; SimpleITK read it silently, the
    missing slices as 0 HU, and ``ctreport analyze`` reported a normal CT with exit 0."""
    intact = tmp_path / f"ct{suffix}"
    arr = _small_nifti(intact)
    vol = load_ct(intact)
    assert vol.shape == arr.shape and not vol.warnings
    data = intact.read_bytes()
    # (a .nii.gz cut in its 8-byte gzip trailer only still holds the whole image: not refused)
    ends = (len(data) * 2 // 3, len(data) - (12 if suffix == ".nii.gz" else 1), len(data) // 10)
    for keep in (*ends, 200) if suffix == ".nii" else ends:  # (200: inside the header)
        cut = tmp_path / f"cut_{keep}{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(UnreadableError) as err:
            load_ct(cut)
        msg = str(err.value)
        assert msg.startswith(str(cut)) and "truncated" in msg, msg
        assert "\n" not in msg and "Traceback" not in msg


def test_a_nifti_gz_is_checked_after_decompression(tmp_path: Path) -> None:
    """A ``.nii.gz`` whose gzip stream is whole but holds less image data than its header
    describes is refused; one written as several gzip members (the length in the last
    trailer is then not the file's) still opens."""
    raw = tmp_path / "ct.nii"
    arr = _small_nifti(raw)
    data = raw.read_bytes()
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(data[: len(data) - 24 * 32 * 2]))  # one slice missing
    with pytest.raises(UnreadableError, match="truncated") as err:
        load_ct(short)
    assert f"{len(data) - 24 * 32 * 2:,} of the {len(data):,} bytes" in str(err.value)
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(data[:5000]) + gzip.compress(data[5000:]))
    assert np.array_equal(load_ct(members).array, arr)


def test_a_truncated_nifti_is_one_line_exit_2_in_the_cli(tmp_path: Path, capsys) -> None:
    """``ctreport info`` / ``analyze`` of a truncated NIfTI: one line naming the file, exit 2."""
    from napari_ctreport.cli import main

    _small_nifti(tmp_path / "ct.nii.gz")
    data = (tmp_path / "ct.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert main(["info", str(tmp_path / "cut.nii.gz")]) == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and "cut.nii.gz" in err_lines[0] and "truncated" in err_lines[0]


def test_voxels_that_are_not_numbers_are_read_as_air(tmp_path: Path) -> None:
    """NaN and infinite voxels of a floating-point NRRD are read as -1024 HU with a warning
    that counts them, so that no filter, measurement or JSON value becomes NaN."""
    arr = np.full((6, 32, 32), -1000.0, np.float32)
    arr[:, 8:24, 8:24] = 40.5
    arr[2, 10, 10], arr[3, 3, 3], arr[4, 4, 4] = np.nan, np.inf, -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nrrd"))
    vol = load_ct(tmp_path / "nan.nrrd")
    assert np.isfinite(vol.array).all()
    assert vol.array[2, 10, 10] == vol.array[3, 3, 3] == vol.array[4, 4, 4] == -1024.0
    assert any("3 voxel(s) not a number" in w and "nan.nrrd" in w for w in vol.warnings)
    assert vol.array[0, 10, 10] == pytest.approx(40.5)


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_a_case_folder_opens_as_its_image(tmp_path: Path, fmt: str) -> None:
    """A case folder (``case.json`` with ``image.nii.gz`` or ``dicom/``: a synthetic case, an
    exported draft or a corrected case) opens as its CT, so that it can be dropped on napari or
    given to ``ctreport analyze``; the NIfTI one was refused ("no DICOM files found in this
    folder"). A broken ``case.json`` is refused naming the folder."""
    from napari_ctreport.io.case import iter_cases, read_case
    from napari_ctreport.synth import write_dataset

    write_dataset(tmp_path / "cases", cases=1, seed=900129, shape=(24, 64, 64), formats=(fmt,))
    folder = next(iter(iter_cases(tmp_path / "cases")))
    vol = load_ct(folder)
    ref = read_case(folder).load_volume()
    assert vol.shape == ref.shape and np.array_equal(vol.array, ref.array)
    assert vol.spacing_zyx == pytest.approx(ref.spacing_zyx)
    if fmt == "nifti":  # the folder of a dataset says what it holds
        with pytest.raises(UnreadableError, match="holds 1 case folder"):
            load_ct(tmp_path / "cases")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "case.json").write_text('{"schema": "ctreport.case/1"}')
    with pytest.raises(UnreadableError, match="not a valid case folder") as err:
        load_ct(tmp_path / "broken")
    assert str(err.value).startswith(str(tmp_path / "broken"))


def _empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "emptydir"
    d.mkdir()
    (d / "readme.txt").write_text("not dicom")
    return d


# --------------------------------------------------------------------------------------------------
# DICOM series
# --------------------------------------------------------------------------------------------------


def test_example_ct_dicom_series(real: Path) -> None:
    folder = real / "totalsegmentator" / "example_ct_dicom"
    calls: list[tuple[int, int]] = []
    vol = load_ct(folder, on_progress=lambda d, t: calls.append((d, t)))
    assert vol.shape == (20, 512, 512)
    assert vol.spacing_zyx == pytest.approx((2.0, 0.976562, 0.976562), abs=1e-5)
    assert vol.origin_lps == pytest.approx((-249.51171875, -437.51171875, -804.5))
    assert vol.array.min() == -1024 and vol.array.max() == 1839
    assert calls[-1] == (20, 20) and len(calls) == 20
    md = vol.metadata
    assert len(md["files"]) == 20 and len(md["sop_instance_uids"]) == 20
    zs = [
        float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
        for f in md["files"]
    ]
    assert zs == sorted(zs)  # files listed in slice (array) order
    assert md["slice_thickness_mm"] == 3.0
    assert md["resampled"] is False
    assert md["orientation_on_disk"] == "LPI"  # instance numbers run head to feet
    ref = sitk.GetArrayFromImage(sitk.ReadImage(md["files"][5]))[0]
    assert np.array_equal(vol.array[5], ref)
    assert vol.warnings == []


def test_dcmqi_three_slices_with_labels(real: Path) -> None:
    vol = load_ct(real / "dcmqi_ct3slice" / "ct-3slice")
    assert vol.shape == (3, 512, 512)
    assert vol.spacing_zyx == pytest.approx((1.0, 0.8105, 0.8105), abs=1e-4)
    assert vol.origin_lps == pytest.approx((-235.2, -226.8, -128.69), abs=1e-3)
    liver = read_labels(real / "dcmqi_ct3slice" / "seg" / "liver_seg.nrrd", like=vol)
    spine = read_labels(real / "dcmqi_ct3slice" / "seg" / "spine_seg.nrrd", like=vol)
    assert liver.shape == vol.shape
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(real / "dcmqi_ct3slice/seg/liver_seg.nrrd")))
    assert np.array_equal(liver, raw)
    # anatomy: liver on the patient's right, spine posterior, bone dense
    assert (
        vol.index_to_lps(np.argwhere(liver).mean(0))[0]
        < vol.index_to_lps(np.argwhere(spine).mean(0))[0]
    )
    assert (
        vol.index_to_lps(np.argwhere(spine).mean(0))[1]
        > vol.index_to_lps(np.argwhere(liver).mean(0))[1]
    )
    assert float(vol.array[spine > 0].mean()) > float(vol.array[liver > 0].mean())


def test_gantry_tilt_resampled(real: Path) -> None:
    folder = real / "dcm_qa_ct" / "GE_gantry_tilt_subset"
    vol = load_ct(folder)
    assert any("tilt 18.5 deg" in w for w in vol.warnings)
    assert any("uneven" in w for w in vol.warnings)
    assert all(folder.name in w for w in vol.warnings)
    assert vol.metadata["gantry_tilt_deg"] == pytest.approx(18.5)
    assert vol.metadata["resampled"] is True
    assert vol.spacing_zyx[0] != pytest.approx(5.28, abs=0.05)
    assert vol.spacing_zyx[0] == pytest.approx(4.1, abs=0.1)
    assert vol.spacing_zyx[1:] == pytest.approx((0.48828, 0.48828), abs=1e-4)
    # outside the tilted slab: the scanner's padding outside its field of view (-1500), not air
    assert float(vol.array.min()) == -1500.0
    assert np.all(vol.array[0, :, 256] == -1500.0) and np.all(vol.array[:, 5, 5] == -1500.0)
    # pixels of an original slice appear at their true LPS positions
    ds = pydicom.dcmread(folder / "16.dcm")
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    ps = [float(v) for v in ds.PixelSpacing]
    hu = _hu(ds)
    rng = np.random.default_rng(2)
    rc = rng.integers(60, 450, size=(400, 2))
    pts = ipp + rc[:, 1:2] * ps[1] * iop[:3] + rc[:, 0:1] * ps[0] * iop[3:]
    got = map_coordinates(vol.array, vol.lps_to_index(pts).T, order=1, cval=-1024)
    want = hu[rc[:, 0], rc[:, 1]]
    assert np.corrcoef(got, want)[0, 1] > 0.8


def test_missing_slices_refused(real: Path) -> None:
    folder = real / "monai_ct_dicom" / "CT_DICOM"
    with pytest.raises(GeometryError, match="missing slices") as err:
        load_ct(folder)
    assert "202.50" in str(err.value)
    assert str(folder) in str(err.value)


def test_duplicate_slice_warns(real: Path, tmp_path: Path) -> None:
    src = real / "dcmqi_ct3slice" / "ct-3slice"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    ds = pydicom.dcmread(src / "02.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "02_copy.dcm")
    vol = load_ct(tmp_path)
    assert vol.shape == (3, 512, 512)
    assert any("1 duplicate" in w for w in vol.warnings)
    ref = load_ct(src)
    assert np.array_equal(vol.array, ref.array)


def test_multi_series_takes_largest(real: Path, tmp_path: Path) -> None:
    for f in (real / "dcmqi_ct3slice" / "ct-3slice").iterdir():
        shutil.copy(f, tmp_path / f.name)
    ds = pydicom.dcmread(real / "pydicom_testfiles" / "ct" / "CT_small.dcm")
    ds.SeriesDescription = "Other small series"
    sub = tmp_path / "sub"
    sub.mkdir()
    ds.save_as(sub / "IM0001")  # no extension, in a subfolder
    shutil.copy(real / "dcm_qa_ct" / "Philips_localizer" / "I10.dcm", sub / "scout")
    shutil.copy(real / "dcmqi_ct3slice" / "seg" / "liver.dcm", sub / "seg.dcm")
    (tmp_path / "notes.txt").write_text("ignored")
    vol = load_ct(tmp_path)
    assert vol.shape == (3, 512, 512)
    assert any("Other small series" in w and "1 images" in w for w in vol.warnings)
    assert any("localizer" in w for w in vol.warnings)


def _study_of_two_series(folder: Path) -> tuple[CTVolume, CTVolume]:
    """One folder holding two CT series of one study (as a PACS or CD export writes them): 'thin'
    (series 2, 12 slices of 1.5 mm) and 'thick' (series 5, 6 slices of 3 mm, other values)."""
    rng = np.random.default_rng(0)
    thin = CTVolume(
        rng.integers(-1000, 400, (12, 20, 24)).astype(np.int16), (1.5, 0.8, 0.8), (0.0, 0.0, 0.0)
    )
    thick = CTVolume((thin.array[::2] // 2).astype(np.int16), (3.0, 0.8, 0.8), (0.0, 0.0, 0.0))
    study = pydicom.uid.generate_uid()
    for vol, desc, number in ((thin, "thin", 2), (thick, "thick", 5)):
        for f in write_dicom_series(vol, folder / desc, study_uid=study, series_description=desc):
            ds = pydicom.dcmread(f)
            ds.SeriesNumber = number
            ds.save_as(folder / f"{desc}_{f.name}")
        shutil.rmtree(folder / desc)
    return thin, thick


def test_a_series_is_chosen_by_number_or_uid(tmp_path: Path) -> None:
    from napari_ctreport.io.ct import ct_series

    thin, thick = _study_of_two_series(tmp_path)
    found = ct_series(tmp_path)
    assert [(s.description, s.number, s.images) for s in found] == [
        ("thin", "2", 12),
        ("thick", "5", 6),
    ]
    default = load_ct(tmp_path)  # the most images; the other named
    assert np.array_equal(default.array, thin.array)
    assert any("not loaded: 'thick' #5 (6 images)" in w for w in default.warnings)
    by_number = load_ct(tmp_path, series="5")
    assert np.array_equal(by_number.array, thick.array) and by_number.spacing_zyx[0] == 3.0
    assert by_number.warnings == []  # asked for by name: nothing to warn about
    by_uid = load_ct(tmp_path, series=found[1].uid)
    assert by_uid.metadata["series_uid"] == found[1].uid
    with pytest.raises(UnreadableError, match="no CT series has the number or UID '7'.*'thick' #5"):
        load_ct(tmp_path, series="7")
    with pytest.raises(UnreadableError, match="only be chosen in a folder"):
        load_ct(next(tmp_path.glob("thin_*")), series="2")


def test_a_series_with_no_geometry_is_set_aside(real: Path, tmp_path: Path) -> None:
    """A study folder as PACS exports it often holds a dose report or screen capture stored as
    CT (secondary capture, no ImagePositionPatient) in its own series. It used to refuse the
    whole folder ("no image position/orientation"); it is now set aside with a warning naming
    it, and the CT series opens. Alone, it is still refused."""
    for f in (real / "dcmqi_ct3slice" / "ct-3slice").iterdir():
        shutil.copy(f, tmp_path / f.name)
    ds = pydicom.dcmread(tmp_path / "01.dcm")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = 999, "Dose Report"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, key)
    ds.save_as(tmp_path / "dose.dcm")
    vol = load_ct(tmp_path)
    assert vol.shape == (3, 512, 512)
    assert any(
        "series 'Dose Report' #999 (1 images) set aside: no image position" in w
        for w in vol.warnings
    )
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.move(tmp_path / "dose.dcm", alone / "dose.dcm")
    with pytest.raises(GeometryError, match="no image position"):
        load_ct(alone)


def test_mixed_sizes_refused(real: Path, tmp_path: Path) -> None:
    src = real / "dcmqi_ct3slice" / "ct-3slice"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    ref = pydicom.dcmread(src / "01.dcm", stop_before_pixels=True)
    ds = pydicom.dcmread(real / "pydicom_testfiles" / "ct" / "CT_small.dcm")
    ds.SeriesInstanceUID = ref.SeriesInstanceUID
    ds.save_as(tmp_path / "04.dcm")
    with pytest.raises(GeometryError, match="mixed image sizes"):
        load_ct(tmp_path)


def _synthetic_series(tmp_path: Path, nz: int = 10) -> tuple[CTVolume, list[Path]]:
    z = np.arange(nz, dtype=np.float32)[:, None, None]
    arr = (np.zeros((nz, 12, 16), np.float32) + z * 10.0 - 500.0).astype(np.int16)
    vol = CTVolume(arr, (2.0, 0.8, 0.7), (-5.0, 10.0, -100.0))
    return vol, write_dicom_series(vol, tmp_path / "series")


def test_uneven_spacing_resampled(tmp_path: Path) -> None:
    vol, files = _synthetic_series(tmp_path)
    # InstanceNumber 1 is the most superior (head first); drop the slice at index z=4
    z4 = [f for f in files if float(pydicom.dcmread(f).ImagePositionPatient[2]) == -92.0]
    z4[0].unlink()
    out = load_ct(files[0].parent)
    assert any("uneven slice spacing" in w and "4 mm x1" in w for w in out.warnings)
    assert out.metadata["resampled"] is True
    assert out.shape == vol.shape and out.spacing_zyx == pytest.approx(vol.spacing_zyx)
    assert out.origin_lps == pytest.approx(vol.origin_lps)
    np.testing.assert_allclose(out.array, vol.array, atol=1e-3)  # linear in z: exact


def test_two_missing_slices_refused(tmp_path: Path) -> None:
    vol, files = _synthetic_series(tmp_path)
    for f in files:
        if float(pydicom.dcmread(f).ImagePositionPatient[2]) in (-92.0, -90.0):
            f.unlink()
    with pytest.raises(GeometryError, match="missing slices.*6.00 mm"):
        load_ct(files[0].parent)


def test_mixed_orientation_refused(tmp_path: Path) -> None:
    vol, files = _synthetic_series(tmp_path, nz=4)
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
    ds.save_as(files[1])
    with pytest.raises(GeometryError, match="mixed slice orientations"):
        load_ct(files[0].parent)


# --------------------------------------------------------------------------------------------------
# canonicalize
# --------------------------------------------------------------------------------------------------


def test_canonicalize_permutation_exact() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 1000, size=(4, 5, 6)).astype(np.int16)
    aff = np.eye(4)
    # axis 0 -> towards R (x, -), axis 1 -> towards I (z, -), axis 2 -> towards P (y, +)
    aff[:3, 0] = [-1.5, 0, 0]
    aff[:3, 1] = [0, 0, -2.0]
    aff[:3, 2] = [0, 0.5, 0]
    aff[:3, 3] = [10, 20, 30]
    out, sp, org, resampled = canonicalize(arr, aff)
    assert not resampled and out.dtype == np.int16
    assert sp == pytest.approx((2.0, 0.5, 1.5))
    vol = CTVolume(out, sp, org)
    for idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        p = aff[:3, :3] @ np.array(idx) + aff[:3, 3]
        z, y, x = np.round(vol.lps_to_index(p)).astype(int)
        assert out[z, y, x] == arr[idx]
    assert axis_codes(aff[:3, :3]) == "RIP"


def test_canonicalize_oblique_linear_field() -> None:
    # value = a linear function of LPS position; trilinear resampling must reproduce it inside
    ang = np.radians(30)
    rot = np.array([[1, 0, 0], [0, np.cos(ang), -np.sin(ang)], [0, np.sin(ang), np.cos(ang)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 1.0, 1.0])
    aff[:3, 3] = [-3, 4, 5]
    idx = np.indices((10, 12, 14)).reshape(3, -1).T
    lps = idx @ aff[:3, :3].T + aff[:3, 3]
    coef = np.array([0.3, -0.7, 1.1])
    arr = (lps @ coef).reshape(10, 12, 14).astype(np.float32)
    out, sp, org, resampled = canonicalize(arr, aff)
    assert resampled
    vol = CTVolume(out, sp, org)
    inner = idx[(idx > 1).all(1) & (idx < np.array([8, 10, 12])).all(1)]
    p = inner @ aff[:3, :3].T + aff[:3, 3]
    got = map_coordinates(out, vol.lps_to_index(p).T, order=1)
    np.testing.assert_allclose(got, p @ coef, atol=1e-3)


def test_errors_are_ctreaderrors(real: Path) -> None:
    for sub in (UnreadableError, NotCTError, LocalizerError, GeometryError):
        assert issubclass(sub, CTReadError)


def test_the_series_a_dicom_file_belongs_to(tmp_path: Path) -> None:
    """``series_of_file``: the series of its folder that a DICOM file is one image of; nothing
    for a file alone in its folder, a NIfTI or a file that is not DICOM."""
    from napari_ctreport.io.ct import series_of_file

    thin, thick = _study_of_two_series(tmp_path)
    files = sorted(tmp_path.glob("thick_*"))
    s = series_of_file(files[2])
    assert s is not None and (s.description, s.number, s.images) == ("thick", "5", 6)
    assert np.array_equal(load_ct(tmp_path, series=s.uid).array, thick.array)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(files[0], lone)
    assert series_of_file(lone / files[0].name) is None
    nifti = tmp_path / "ct.nii.gz"
    write_volume(thin, nifti)
    assert series_of_file(nifti) is None
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert series_of_file(tmp_path / "notes.txt") is None


def test_a_multi_frame_file_alone_is_its_whole_series(real: Path, tmp_path: Path) -> None:
    """``eCT_Supplemental.dcm`` is one file of two frames, the only file of its series in its
    folder: it is not "one image of" a series of 2 images (``ctreport analyze`` warned that the
    whole series had been opened); files are counted, not frames."""
    from napari_ctreport.io.ct import load_study, series_of_file

    path = real / "pydicom_testfiles" / "ct" / "eCT_Supplemental.dcm"
    assert series_of_file(path) is None
    vol = load_study(path)
    assert vol.shape[0] == 2 and vol.metadata["files"] == [str(path)]
    assert not any("is one image of" in w for w in vol.warnings)
    # with a second file of its series beside it, it is one file of a series of two
    shutil.copy(path, tmp_path / "a.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "b.dcm")
    s = series_of_file(tmp_path / "a.dcm")
    assert s is not None and s.images == 4


def test_the_file_named_wins_over_duplicates_at_its_position(real: Path) -> None:
    """``693_UNCR.dcm`` is one of four files at one slice position (one series): its series,
    opened from it with ``prefer``, shows its own pixels, not those of another of the four
    (``ctreport info 693_UNCR.dcm`` showed 693_UNCI.dcm's); the warning says which was kept."""
    from napari_ctreport.io.ct import series_of_file

    folder = real / "pydicom_testfiles" / "ct"
    alone = load_ct(folder / "693_UNCR.dcm")
    for name in ("693_UNCR.dcm", "693_UNCI.dcm", "693_J2KR.dcm"):
        s = series_of_file(folder / name)
        assert s is not None and s.images == 4
        vol = load_ct(folder, series=s.uid, prefer=folder / name)
        assert vol.metadata["files"] == [str(folder / name)]
        assert np.array_equal(vol.array, load_ct(folder / name).array)
        assert any("3 duplicate" in w and f"{name} kept" in w for w in vol.warnings)
    vol = load_ct(folder, series=s.uid, prefer=folder / "693_UNCR.dcm")
    assert np.array_equal(vol.array, alone.array)
    assert (int(vol.array.min()), int(vol.array.max())) == (-3024, 1468)
    # a relative or differently spelled path names the same file
    rel = Path(os.path.relpath(folder / "693_UNCR.dcm"))
    assert load_ct(folder, series=s.uid, prefer=rel).metadata["files"] == [
        str(folder / "693_UNCR.dcm")
    ]
    # a file not at a duplicated position, or not in the series: the usual choice
    plain = load_ct(folder, series=s.uid)
    other = load_ct(folder, series=s.uid, prefer=folder / "CT_small.dcm")
    assert other.metadata["files"] == plain.metadata["files"]
    assert not any("kept at its position" in w for w in plain.warnings + other.warnings)


def test_a_file_of_a_series_without_uid_opens_its_series(real: Path) -> None:
    """The TotalSegmentator DICOM series has no SeriesInstanceUID: one of its files is one
    image of the series its folder opens as (20 slices, grouped under the UID ``""``), not a
    CT of one slice."""
    from napari_ctreport.io.ct import dicom_series_uid, series_of_file

    folder = real / "totalsegmentator" / "example_ct_dicom"
    file = sorted(folder.iterdir())[7]
    assert dicom_series_uid(file) is None and dicom_series_uid(file, blank="") == ""
    s = series_of_file(file)
    assert s is not None and (s.uid, s.images) == ("", 20)
    vol = load_ct(folder, series=s.uid, prefer=file)
    whole = load_ct(folder)
    assert vol.shape == whole.shape == (20, 512, 512)
    assert np.array_equal(vol.array, whole.array)
    assert dicom_series_uid(real / "totalsegmentator" / "example_ct.nii.gz", blank="") is None
