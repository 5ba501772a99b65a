"""Round-trip tests of the writers in napari_ctreport.io.write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_ctreport.io import CTVolume
from napari_ctreport.io.ct import axis_codes, load_ct
from napari_ctreport.io.write import (
    read_labels,
    write_dicom_series,
    write_labels,
    write_volume,
)

ORIENTATIONS = ["LPS", "RAS", "LPI"]
SUFFIXES = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


@pytest.fixture
def volume() -> CTVolume:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1024, 1500, size=(6, 7, 8)).astype(np.int16)
    arr[0, 0, 0] = -1024
    return CTVolume(
        arr,
        (2.5, 0.75, 0.875),
        (-10.5, 20.25, -300.0),
        metadata={"patient_name": "Doe^Jane", "windows": [(-600.0, 1500.0)]},
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_write_volume_round_trip(
    volume: CTVolume, tmp_path: Path, suffix: str, orientation: str
) -> None:
    path = write_volume(volume, tmp_path / f"ct{suffix}", orientation=orientation)
    # independent check of the on-disk orientation
    img = sitk.ReadImage(str(path))
    assert axis_codes(np.array(img.GetDirection()).reshape(3, 3)) == orientation
    back = load_ct(path)
    assert back.metadata["orientation_on_disk"] == orientation
    assert np.array_equal(back.array, volume.array)
    assert back.spacing_zyx == pytest.approx(volume.spacing_zyx, abs=1e-5)
    assert back.origin_lps == pytest.approx(volume.origin_lps, abs=1e-4)
    assert back.warnings == []


def test_write_volume_ras_stores_flipped_array(volume: CTVolume, tmp_path: Path) -> None:
    path = write_volume(volume, tmp_path / "ct.nii.gz", orientation="RAS")
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.array_equal(raw, volume.array[:, ::-1, ::-1])
    lpi = sitk.GetArrayFromImage(
        sitk.ReadImage(str(write_volume(volume, tmp_path / "f.mha", orientation="LPI")))
    )
    assert np.array_equal(lpi, volume.array[::-1])


def test_write_volume_dtype_and_float(volume: CTVolume, tmp_path: Path) -> None:
    fvol = CTVolume(volume.array.astype(np.float32) + 0.25, volume.spacing_zyx, volume.origin_lps)
    back = load_ct(write_volume(fvol, tmp_path / "f.nrrd", orientation="RAS"))
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, fvol.array)
    back16 = load_ct(write_volume(volume, tmp_path / "i.nii.gz", dtype=np.float32))
    assert sitk.ReadImage(str(tmp_path / "i.nii.gz")).GetPixelID() == sitk.sitkFloat32
    assert np.array_equal(back16.array, volume.array)


def test_write_volume_bad_orientation(volume: CTVolume, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="orientation"):
        write_volume(volume, tmp_path / "x.nii.gz", orientation="LLS")
    with pytest.raises(ValueError, match="suffix"):
        write_volume(volume, tmp_path / "x.png")


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_labels_round_trip(volume: CTVolume, tmp_path: Path, orientation: str) -> None:
    labels = np.zeros(volume.shape, np.uint8)
    labels[1:3, 2:5, 3:7] = 1
    labels[4, 0, :] = 7
    path = write_labels(labels, like=volume, path=tmp_path / "seg.nii.gz", orientation=orientation)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    back = read_labels(path, like=volume)
    assert back.dtype == np.uint8
    assert np.array_equal(back, labels)


def test_labels_uint16(volume: CTVolume, tmp_path: Path) -> None:
    labels = np.zeros(volume.shape, np.int32)
    labels[2, 3, 4] = 300
    path = write_labels(labels, like=volume, path=tmp_path / "seg.nrrd")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    assert np.array_equal(read_labels(path, like=volume), labels)


def test_read_labels_onto_other_grid(volume: CTVolume, tmp_path: Path) -> None:
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:5, 1:6, 2:7] = 3
    path = write_labels(labels, like=volume, path=tmp_path / "seg.mha", orientation="RAS")
    # a crop of the CT: origin moved by (1, 2, 3) voxels in (z, y, x)
    crop = CTVolume(
        volume.array[1:5, 2:7, 3:8],
        volume.spacing_zyx,
        tuple(volume.index_to_lps((1, 2, 3))),
    )
    assert np.array_equal(read_labels(path, like=crop), labels[1:5, 2:7, 3:8])
    # a finer grid (half the spacing) covering the same box: nearest neighbour
    fine = CTVolume(
        np.zeros((11, 13, 15), np.int16),
        tuple(s / 2 for s in volume.spacing_zyx),
        volume.origin_lps,
    )
    out = read_labels(path, like=fine)
    assert np.array_equal(out[::2, ::2, ::2], labels)
    # outside the source extent: 0
    shifted = CTVolume(volume.array, volume.spacing_zyx, (1000.0, 0.0, 0.0))
    assert read_labels(path, like=shifted).max() == 0


@pytest.mark.parametrize("feet_first", [False, True])
def test_dicom_series_round_trip(volume: CTVolume, tmp_path: Path, feet_first: bool) -> None:
    files = write_dicom_series(
        volume,
        tmp_path / "dcm",
        patient={"name": "Test^Patient", "PatientID": "P123", "sex": "F"},
        feet_first=feet_first,
        series_description="round trip",
    )
    assert len(files) == volume.shape[0]
    dss = [pydicom.dcmread(f) for f in files]
    assert [int(d.InstanceNumber) for d in dss] == list(range(1, len(files) + 1))
    zs = [float(d.ImagePositionPatient[2]) for d in dss]
    assert zs == (sorted(zs) if feet_first else sorted(zs, reverse=True))
    assert {d.PatientPosition for d in dss} == {"FFS" if feet_first else "HFS"}
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert len({d.SeriesInstanceUID for d in dss}) == 1
    assert dss[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert dss[0].pixel_array.dtype == np.int16

    back = load_ct(tmp_path / "dcm")
    assert back.warnings == []
    assert np.array_equal(back.array, volume.array)
    assert back.spacing_zyx == pytest.approx(volume.spacing_zyx, abs=1e-5)
    assert back.origin_lps == pytest.approx(volume.origin_lps, abs=1e-5)
    md = back.metadata
    assert md["patient_name"] == "Test^Patient" and md["patient_id"] == "P123"
    assert md["patient_sex"] == "F"
    assert md["series_description"] == "round trip"
    assert md["patient_position"] == ("FFS" if feet_first else "HFS")
    assert md["orientation_on_disk"] == ("LPS" if feet_first else "LPI")
    assert md["windows"] == [(-600.0, 1500.0)]
    # SimpleITK's own series reader agrees (independent reader)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "dcm")))
    img = reader.Execute()
    ref = sitk.GetArrayFromImage(img)
    assert np.array_equal(ref, volume.array)
    assert img.GetOrigin() == pytest.approx(volume.origin_lps, abs=1e-5)


def test_dicom_series_float_and_wide_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arr = rng.uniform(-1000, 3000, size=(3, 4, 5)).astype(np.float32)
    vol = CTVolume(arr, (1.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    back = load_ct(write_dicom_series(vol, tmp_path / "a")[0].parent)
    np.testing.assert_allclose(back.array, arr, atol=0.5 + 1e-3)
    wide = CTVolume(
        np.array([[[-40000.0, 40000.0]]], np.float32).repeat(2, 0), (1, 1, 1), (0, 0, 0)
    )
    back = load_ct(write_dicom_series(wide, tmp_path / "b")[0].parent)
    np.testing.assert_allclose(back.array, wide.array, rtol=1e-3, atol=2.0)


def test_dicom_series_real_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = load_ct(shared_data / "real" / "dcmqi_ct3slice" / "ct-3slice")
    write_dicom_series(src, tmp_path / "copy", study_uid=src.metadata["study_uid"])
    back = load_ct(tmp_path / "copy")
    assert np.array_equal(back.array, src.array)
    assert back.origin_lps == pytest.approx(src.origin_lps, abs=1e-5)
    assert back.metadata["study_uid"] == src.metadata["study_uid"]
    assert back.metadata["series_uid"] != src.metadata["series_uid"]
    assert back.metadata["patient_id"] == src.metadata["patient_id"]
