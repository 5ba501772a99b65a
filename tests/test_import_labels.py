"""``ctreport import``: a case folder from a CT and a lesion label map drawn elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ctreport.cli import main
from napari_ctreport.io.case import read_case, validate_case
from napari_ctreport.io.volume import CTVolume
from napari_ctreport.io.write import write_volume
from napari_ctreport.synth import generate_case


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A synthetic case with lesions, its CT as RAS NRRD and its label map as LPS NIfTI."""
    d = tmp_path_factory.mktemp("import")
    case = generate_case(seed=900131, shape=(48, 128, 128))
    gts = [f for f in case.findings if f.label]
    assert len(gts) >= 2, "the seed should give a case with several lesions"
    ct = write_volume(case.volume, d / "ct.nrrd", orientation="RAS")
    lab = CTVolume(
        array=case.labels.astype(np.float32),
        spacing_zyx=case.volume.spacing_zyx,
        origin_lps=case.volume.origin_lps,
    )
    labels = write_volume(lab, d / "labels.nii.gz", orientation="LPS", dtype=np.uint8)
    return d, case, gts, ct, labels


def test_import_measures_each_lesion_like_a_finding(phantom, capsys):
    d, case, gts, ct, labels = phantom
    kinds = [f"{g.label}={g.kind}" for g in gts]
    out = d / "imported"
    assert main(["import", str(ct), str(labels), "--out", str(out), "--kind", *kinds]) == 0
    assert "wrote" in capsys.readouterr().out
    assert validate_case(out) == []
    got = read_case(out)
    assert got.provenance["source"] == "imported labels"
    assert len(got.findings) == len(gts)
    for f, g in zip(got.findings, sorted(gts, key=lambda g: g.label), strict=True):
        assert (f.kind, f.side, f.zone) == (g.kind, g.side, g.zone)
        assert f.diameter_mm == pytest.approx(g.diameter_mm, abs=0.1)
        assert np.allclose(f.center_lps_mm, g.center_lps_mm, atol=0.1)
        assert f.status == "accepted" and f.score == 1.0
    assert got.report["findings"]  # the writer's report of the imported findings


def test_import_splits_components_of_one_value(phantom, capsys):
    d, case, gts, ct, _ = phantom
    one = CTVolume(
        array=(case.labels > 0).astype(np.float32),
        spacing_zyx=case.volume.spacing_zyx,
        origin_lps=case.volume.origin_lps,
    )
    labels = write_volume(one, d / "one.nii.gz", dtype=np.uint8)
    out = d / "split"
    rc = main(["import", str(ct), str(labels), "--out", str(out), "--kind", "mass", "--components"])
    assert rc == 0, capsys.readouterr().err
    got = read_case(out)
    assert len(got.findings) >= len(gts)
    assert {f.kind for f in got.findings} == {"mass"}


@pytest.mark.parametrize("problem", ["grid", "no kind", "bad kind", "empty"])
def test_import_bad_input_names_the_label_file(phantom, problem, capsys):
    d, case, gts, ct, labels = phantom
    kind = ["mass"]
    if problem == "grid":
        arr = case.labels[:, :, :-4].astype(np.float32)
        labels = write_volume(
            CTVolume(arr, case.volume.spacing_zyx, case.volume.origin_lps), d / "small.nii.gz"
        )
    elif problem == "no kind":
        kind = ["99=mass"]
    elif problem == "bad kind":
        kind = ["tumour"]
    else:
        arr = np.zeros(case.labels.shape, dtype=np.float32)
        labels = write_volume(
            CTVolume(arr, case.volume.spacing_zyx, case.volume.origin_lps), d / "empty.nii.gz"
        )
    out = d / f"bad_{problem.replace(' ', '_')}"
    assert main(["import", str(ct), str(labels), "--out", str(out), "--kind", *kind]) == 2
    err = capsys.readouterr().err
    assert labels.name in err and "Traceback" not in err
    assert not out.exists()
