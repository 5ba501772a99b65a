"""Synthetic chest CT: determinism, valid case folders, LPS positions through every on-disk form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.io.case import read_case, validate_case, write_case
from napari_ctreport.report.lexicon import NODULE_KINDS
from napari_ctreport.synth import generate_case, insert_lesions, write_dataset

SHAPE = (64, 96, 96)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CT = SHARED / "data/real/totalsegmentator/pulmonary_report/ct_cropped.nii.gz"


def _case_with_nodule(style: str = "default"):
    for seed in range(40):
        c = generate_case(seed=seed, shape=SHAPE, style=style)
        if any(f.kind in NODULE_KINDS or f.kind == "mass" for f in c.findings):
            return seed, c
    raise AssertionError("no seed in 0..39 produced a nodule")


def test_deterministic_per_seed() -> None:
    a = generate_case(seed=3, shape=SHAPE)
    b = generate_case(seed=3, shape=SHAPE)
    assert a.volume.array.tobytes() == b.volume.array.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.volume.spacing_zyx == b.volume.spacing_zyx
    assert a.volume.origin_lps == b.volume.origin_lps
    assert json.dumps([f.to_dict() for f in a.findings]) == json.dumps(
        [f.to_dict() for f in b.findings]
    )
    assert a.report.to_dict() == b.report.to_dict()
    assert a.meta == b.meta
    c = generate_case(seed=4, shape=SHAPE)
    assert c.volume.array.tobytes() != a.volume.array.tobytes()


def test_phantom_looks_like_chest_ct() -> None:
    c = generate_case(seed=11, shape=SHAPE)
    arr = c.volume.array
    assert arr.dtype == np.int16 and arr.shape == SHAPE
    assert c.volume.metadata["source"] == "synthetic"
    # air outside, lungs, soft tissue and bone are all present in sensible amounts
    frac = lambda lo, hi: float(((arr >= lo) & (arr < hi)).mean())  # noqa: E731
    assert frac(-1100, -950) > 0.1  # air around the body
    assert frac(-950, -700) > 0.05  # lung parenchyma
    assert frac(-150, -50) > 0.03  # fat
    assert frac(0, 100) > 0.05  # muscle, heart, liver
    assert frac(300, 3000) > 0.002  # bone
    # the right lung (patient's right = low x = low array column) exists at mid height
    mid = arr[SHAPE[0] // 2]
    right, left = mid[:, : SHAPE[2] // 2], mid[:, SHAPE[2] // 2 :]
    assert ((right > -950) & (right < -700)).sum() > 100
    assert ((left > -950) & (left < -700)).sum() > 100


def test_findings_match_masks_and_sit_in_lung() -> None:
    for seed in range(6):
        c = generate_case(seed=seed, shape=SHAPE)
        for f in c.findings:
            mask = c.labels == f.label
            assert mask.any(), f
            idx = np.argwhere(mask).mean(0)
            np.testing.assert_allclose(c.volume.index_to_lps(idx), f.center_lps_mm, atol=0.02)
            if f.kind == "mass":
                assert f.diameter_mm > 30
            elif f.kind in NODULE_KINDS:
                assert 2.5 <= f.diameter_mm <= 30
            if f.kind in ("solid nodule", "mass"):
                assert f.mean_hu > -400, f
            if f.kind == "calcified nodule":
                assert f.mean_hu > 100, f
            if f.kind == "ground-glass nodule":
                assert -800 < f.mean_hu < -200, f
            if f.kind == "pleural effusion":
                assert -150 < f.mean_hu < 80, f
        assert set(np.unique(c.labels)) == {0} | {f.label for f in c.findings}


def test_alt_style_and_bad_style() -> None:
    a = generate_case(seed=2, shape=SHAPE, style="alt")
    assert a.meta["style"] == "alt"
    with pytest.raises(ValueError, match="style"):
        generate_case(seed=2, shape=SHAPE, style="cartoon")


def _lesion_centre_check(case, folder: Path) -> None:
    back = read_case(folder)
    vol = back.load_volume()
    labels = back.load_labels(vol)
    assert vol.shape == case.volume.shape
    np.testing.assert_allclose(vol.origin_lps, case.volume.origin_lps, atol=1e-2)
    np.testing.assert_allclose(vol.spacing_zyx, case.volume.spacing_zyx, rtol=1e-4)
    np.testing.assert_array_equal(vol.array, case.volume.array)
    sp = np.asarray(vol.spacing_zyx)[::-1]  # x, y, z
    assert back.findings
    for f, f0 in zip(back.findings, case.findings, strict=True):
        mask = labels == f.label
        centroid = vol.index_to_lps(np.argwhere(mask).mean(0))
        assert np.all(np.abs(centroid - np.asarray(f.center_lps_mm)) <= sp), (centroid, f)
        # the voxel at the finding centre belongs to the lesion and has its attenuation
        i = tuple(np.floor(vol.lps_to_index(f.center_lps_mm) + 0.5).astype(int))
        if f.attributes.get("shape") == "round" and f.kind != "pleural effusion":
            assert labels[i] == f.label, f
            if f.kind == "part-solid nodule":  # the centre may be in the solid core
                assert float(vol.array[i]) > -750, (vol.array[i], f)
            else:
                assert abs(float(vol.array[i]) - f.mean_hu) < 300, (vol.array[i], f)
        assert f.to_dict() == f0.to_dict()


@pytest.mark.parametrize(
    ("orientation", "fmt"), [("RAS", "nifti"), ("LPI", "nifti"), ("LPS", "dicom"), ("LPI", "dicom")]
)
def test_lesions_at_right_lps_position_on_disk(tmp_path: Path, orientation: str, fmt: str) -> None:
    seed, c = _case_with_nodule()
    folder = write_case(
        c.to_case(f"s{seed}"),
        tmp_path / "case",
        volume=c.volume,
        labels=c.labels,
        orientation=orientation,
        image_format=fmt,
    )
    assert validate_case(folder) == []
    if fmt == "dicom":
        assert (folder / "dicom").is_dir() and not (folder / "image.nii.gz").exists()
    _lesion_centre_check(c, folder)


def test_write_dataset_cases_validate(tmp_path: Path) -> None:
    calls = []
    paths = write_dataset(
        tmp_path / "ds",
        cases=3,
        seed=5,
        shape=(24, 64, 64),
        progress=lambda i, n: calls.append((i, n)),
    )
    assert [p.name for p in paths] == ["case_0000", "case_0001", "case_0002"]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for p in paths:
        assert validate_case(p) == [], p
        case = read_case(p)
        assert case.provenance["source"] == "synthetic"
        assert case.provenance["generator"]["dataset_seed"] == 5
    # the same seed writes the same dataset (except timestamps and DICOM UIDs)
    again = write_dataset(tmp_path / "ds2", cases=1, seed=5, shape=(24, 64, 64))
    a = json.loads((paths[0] / "case.json").read_text())
    b = json.loads((again[0] / "case.json").read_text())
    for d in (a, b):
        d["provenance"].pop("created")
    assert a == b


@pytest.mark.skipif(not REAL_CT.exists(), reason=f"real chest CT not found at {REAL_CT}")
def test_insert_into_real_ct_lies_in_lung() -> None:
    from napari_ctreport.io.ct import load_ct
    from napari_ctreport.report.anatomy import segment_lungs

    bg = load_ct(REAL_CT)
    lungs = segment_lungs(bg)
    c = insert_lesions(
        bg, rng=np.random.default_rng(1), kinds=["solid nodule", "ground-glass nodule"]
    )
    assert c.findings
    for f in c.findings:
        mask = c.labels == f.label
        assert (lungs[mask] > 0).mean() == 1.0
        i = tuple(np.rint(bg.lps_to_index(f.center_lps_mm)).astype(int))
        assert lungs[i] > 0
    # untouched away from the lesions
    far = ~np.zeros(bg.shape, bool)
    from scipy import ndimage as ndi

    far &= ~ndi.binary_dilation(c.labels > 0, iterations=4)
    np.testing.assert_array_equal(c.volume.array[far], bg.array[far])


def test_write_dataset_same_cases_with_workers(tmp_path):
    import json

    from napari_ctreport.synth import write_dataset

    kw = {"cases": 2, "seed": 11, "shape": (24, 64, 64), "formats": ("nifti",)}
    one = write_dataset(tmp_path / "one", workers=1, **kw)
    two = write_dataset(tmp_path / "two", workers=2, **kw)
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        ja = json.loads((a / "case.json").read_text())
        jb = json.loads((b / "case.json").read_text())
        assert ja["findings"] == jb["findings"] and ja["report"] == jb["report"]
