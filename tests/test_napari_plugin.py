"""The npe2 plugin inside a real napari viewer (runs under Xvfb via pytest-xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/real is not beside the repo")


def test_manifest_is_valid():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("napari-ctreport")
    assert manifest.name == "napari-ctreport"
    assert manifest.contributions.readers and manifest.contributions.writers
    assert manifest.contributions.sample_data and manifest.contributions.widgets
    commands = {c.id for c in manifest.contributions.commands}
    assert len(commands) == 4  # reader, writer, sample, widget: each its own command


def test_get_reader_is_cheap_and_never_raises(tmp_path):
    from napari_ctreport._napari.reader import napari_get_reader

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert napari_get_reader(str(text)) is None
    assert napari_get_reader(str(tmp_path / "missing.png")) is None
    nifti = tmp_path / "x.nii.gz"
    nifti.write_bytes(b"not really gzip")
    assert napari_get_reader(str(nifti)) is not None  # decided by name: cheap
    assert napari_get_reader(str(tmp_path)) is None  # a folder without DICOM files
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert napari_get_reader(str(tmp_path)) is not None  # a DICOM file, named without suffix


@needs_real
def test_get_reader_leaves_what_it_cannot_read_to_other_readers(tmp_path):
    """A folder of NIfTIs or PNGs, and several NIfTIs selected together (a CT and its mask),
    are not claimed: ``napari_get_reader`` returned ``read_ct`` for any folder and for any
    files of one folder, which then failed ("no DICOM files found in this folder") and kept
    napari from trying its other readers. DICOM folders, DICOM files of one folder and case
    folders still are."""
    import shutil

    from napari_ctreport._napari.reader import napari_get_reader, read_ct

    masks = REAL / "totalsegmentator" / "pulmonary_report"
    assert napari_get_reader(str(masks)) is None
    assert (
        napari_get_reader([str(masks / "ct_cropped.nii.gz"), str(masks / "heart.nii.gz")]) is None
    )
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(3):
        (pngs / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    assert napari_get_reader(str(pngs)) is None
    assert napari_get_reader([str(p) for p in sorted(pngs.iterdir())]) is None
    # DICOM: a folder (files named without suffix), files of one folder, a case folder
    dicom = REAL / "totalsegmentator" / "example_ct_dicom"
    assert napari_get_reader(str(dicom)) is read_ct
    assert napari_get_reader([str(p) for p in sorted(dicom.iterdir())[:3]]) is read_ct
    three = REAL / "dcmqi_ct3slice" / "ct-3slice"
    assert napari_get_reader([str(p) for p in sorted(three.iterdir())]) is read_ct
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(masks / "ct_cropped.nii.gz", case / "image.nii.gz")
    (case / "case.json").write_text("{}")
    assert napari_get_reader(str(case)) is read_ct


@needs_real
def test_a_label_map_notifies_and_adds_nothing(make_napari_viewer, monkeypatch):
    """A label map (0..3) is not opened as a CT image: one error naming the file, no layer
    (it opened as an image layer named "CT")."""
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    path = REAL / "dcmqi_ct3slice" / "seg" / "heart_seg.nrrd"
    viewer.open(str(path), plugin="napari-ctreport")
    assert len(viewer.layers) == 0
    assert shown == [
        f"{path}: holds small non-negative integers only (0..3), a label map or mask, not CT"
    ]


@needs_real
def test_open_nifti_in_patient_space(make_napari_viewer):
    import SimpleITK as sitk

    path = REAL / "totalsegmentator" / "example_ct.nii.gz"
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-ctreport")
    assert len(layers) == 1
    layer = layers[0]
    # The voxel shown at world point p (z, y, x) is the patient's LPS point p.
    img = sitk.ReadImage(str(path))
    raw = sitk.GetArrayFromImage(img)  # (k, j, i)
    for ijk in [(10, 20, 30), (100, 80, 5), (60, 50, 100)]:
        lps = img.TransformIndexToPhysicalPoint(ijk)
        world = (lps[2], lps[1], lps[0])
        idx = np.round(layer.world_to_data(world)).astype(int)
        assert layer.data[tuple(idx)] == raw[ijk[2], ijk[1], ijk[0]]
    assert layer.metadata["ctreport"]["orientation_on_disk"] == "RAS"
    # named after its file (every NIfTI layer was named "CT")
    assert layer.name == "example_ct"


def test_a_study_folder_opens_each_series_as_a_layer(make_napari_viewer, tmp_path, monkeypatch):
    """A DICOM folder with two CT series (thin and thick slices of one study) opens both, each
    its own layer in patient space: the larger on top, selected and shown, the other hidden; a
    notification names them. Above ALL_SERIES_MAX_IMAGES only the larger opens, with a warning
    naming the other."""
    import napari.utils.notifications as notifications
    from test_io_ct import _study_of_two_series

    from napari_ctreport._napari import reader

    said: list[str] = []
    monkeypatch.setattr(notifications, "show_info", said.append)
    monkeypatch.setattr(notifications, "show_warning", said.append)
    from napari_ctreport._napari.review_dock import ReviewDock

    thin, thick = _study_of_two_series(tmp_path)
    viewer = make_napari_viewer()
    dock = ReviewDock(viewer)
    layers = viewer.open(str(tmp_path), plugin="napari-ctreport")
    assert [ly.name for ly in layers] == ["thick", "thin"]
    assert [ly.visible for ly in layers] == [False, True]
    assert viewer.layers.selection.active is layers[1]
    # the dock analyses the series shown, and follows the reader's pick in the layer list
    assert dock.current_layer() is layers[1]
    viewer.layers.selection.active = layers[0]
    assert dock.current_layer() is layers[0] and "3.00 mm" in dock.info.text()
    # with a review of the other series shown, the status line says which is which
    from napari_ctreport._napari.review_dock import RunResult

    dock.result = RunResult(analysis=None, session=None, volume=None, ct_name="thin")
    viewer.layers.selection.active = layers[1]
    viewer.layers.selection.active = layers[0]
    assert dock.status.text() == "Reviewing the findings of thin; Run analyses thick."
    dock.result = None
    assert np.array_equal(layers[1].data, thin.array) and np.array_equal(
        layers[0].data, thick.array
    )
    assert tuple(layers[0].scale) == (3.0, 0.8, 0.8) and tuple(layers[1].scale) == (1.5, 0.8, 0.8)
    assert any("2 CT series opened as layers; shown: 'thin' #2" in m for m in said)
    monkeypatch.setattr(reader, "ALL_SERIES_MAX_IMAGES", 10)
    said.clear()
    layers = viewer.open(str(tmp_path), plugin="napari-ctreport")
    assert [ly.name for ly in layers] == ["thin [1]"]
    assert any("not loaded: 'thick' #5 (6 images)" in m for m in said)


@needs_real
def test_bad_file_notifies_and_adds_nothing(make_napari_viewer, monkeypatch):
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    path = REAL / "dcm_qa_ct" / "Philips_localizer" / "I10.dcm"
    viewer.open(str(path), plugin="napari-ctreport")
    assert len(viewer.layers) == 0
    assert len(shown) == 1 and "I10.dcm" in shown[0] and "localizer" in shown[0].lower()


def test_sample_data_and_dock_windows(make_napari_viewer):
    from napari_ctreport.io import WINDOW_PRESETS, window_limits

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ctreport", "chest_ct")
    image = viewer.layers["Sample chest CT"]
    labels = viewer.layers["Sample lesions (ground truth)"]
    assert image.data.ndim == 3 and labels.data.shape == image.data.shape
    assert labels.data.max() >= 1
    assert tuple(labels.scale) == tuple(image.scale)
    _, dock = viewer.window.add_plugin_dock_widget("napari-ctreport", "CT report")
    assert dock.layer_combo.currentText() == "Sample chest CT"
    assert "Size (z, y, x)" in dock.info.text()
    dock.preset_buttons["lung"].click()
    assert tuple(image.contrast_limits) == pytest.approx(window_limits(*WINDOW_PRESETS["lung"]))


@needs_real
def test_writer_round_trip(make_napari_viewer, tmp_path):
    from napari_ctreport.io.ct import load_ct

    src = REAL / "totalsegmentator" / "pulmonary_report" / "ct_cropped.nii.gz"
    viewer = make_napari_viewer()
    viewer.open(str(src), plugin="napari-ctreport")
    out = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(out), plugin="napari-ctreport")
    a, b = load_ct(src), load_ct(out)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.origin_lps, b.origin_lps, atol=1e-3)
    np.testing.assert_allclose(a.spacing_zyx, b.spacing_zyx, atol=1e-5)


def test_viewer_screenshot(tmp_path, qapp):
    from napari_ctreport._napari.launch import main

    shot = tmp_path / "shot.png"
    assert main(["--screenshot", str(shot)]) == 0
    assert shot.stat().st_size > 10_000


def test_torch_imports_after_napari_opened_a_canvas():
    """Opening napari (Mesa's LLVM under Xvfb) and then the model stack must not crash."""
    import os
    import subprocess
    import sys

    code = (
        "import napari\n"
        "v = napari.Viewer(show=False)\n"
        "v.add_image(__import__('numpy').zeros((4, 8, 8)))\n"
        "import torch._dynamo, transformers  # what the report decoder needs\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


def test_the_files_of_a_series_dropped_together_open_it_once(
    make_napari_viewer, tmp_path, monkeypatch
):
    """Several files of a series dropped without Shift: napari hands them to the reader one at
    a time. The first opens its whole series (the 12 images of 'thin'; before, each file was a
    one-slice layer), the others add nothing; a notification says so. A file alone in its
    folder is that image; a file of a series no layer shows, or past SAME_DROP_S, opens it
    again."""
    import shutil

    import napari.utils.notifications as notifications
    from test_io_ct import _study_of_two_series

    from napari_ctreport._napari import reader

    said: list[str] = []
    monkeypatch.setattr(notifications, "show_info", said.append)
    thin, _ = _study_of_two_series(tmp_path)
    files = sorted(str(p) for p in tmp_path.glob("thin_*"))
    assert len(files) == 12
    viewer = make_napari_viewer()
    layers = viewer.open(files, plugin="napari-ctreport")  # stack=False: one call per file
    assert len(layers) == 1 and np.array_equal(layers[0].data, thin.array)
    assert len(said) == 1 and "is one image of 'thin' #2 (12 images)" in said[0]
    # said once, not kept as a warning of the layer (the dock shows those: it read as if one
    # file had been dropped when all of them were)
    kept = layers[0].metadata["ctreport"]["warnings"]
    assert not any("is one image of" in w for w in kept)
    viewer.layers.remove(layers[0])  # deleted, and dropped again at once: it opens again
    (layers,) = viewer.open(files[2:5], plugin="napari-ctreport")
    assert np.array_equal(layers.data, thin.array)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(files[4], lone)
    (one,) = viewer.open(str(lone / Path(files[4]).name), plugin="napari-ctreport")
    assert one.data.shape == (1, *thin.shape[1:])
    assert sum(np.array_equal(one.data[0], image) for image in thin.array) == 1
    monkeypatch.setattr(reader, "SAME_DROP_S", 0.0)
    (again,) = viewer.open(files[7], plugin="napari-ctreport")
    assert np.array_equal(again.data, thin.array)
