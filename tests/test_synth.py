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


# -- grids: clinical spacing, real-size anatomy, targeted fields of view ----------------------


def test_default_grid_is_clinical_for_many_seeds() -> None:
    from napari_ctreport.synth.phantom import (
        MATRIX,
        MAX_SLICES,
        SLICE_SPACINGS_MM,
        choose_grid,
        draw_anatomy,
    )

    seen = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        an = draw_anatomy(rng, "default" if seed % 4 else "alt")
        g = choose_grid(rng, an, None)
        sz, sy, sx = g.spacing
        assert 0.6 <= sy == sx <= 1.0, g
        assert sz in SLICE_SPACINGS_MM
        nz, ny, nx = g.shape
        assert (ny, nx) == (MATRIX, MATRIX)
        assert 1 <= nz <= MAX_SLICES
        # the field of view holds the body (real size, it does not shrink to fit)
        assert nx * sx >= g.body_fov >= 2 * an.a
        assert not g.fitted
        seen.append(sx)
    # the whole range is used, not one value
    assert min(seen) < 0.7 and max(seen) > 0.95


def test_default_case_has_clinical_spacing_and_real_size_anatomy() -> None:
    seed = 1  # 5 mm slices: a small default case
    c = generate_case(seed=seed)
    sz, sy, sx = c.volume.spacing_zyx
    assert 0.6 <= sy <= 1.0 and 0.6 <= sx <= 1.0
    assert 1.0 <= sz <= 5.0
    assert c.volume.shape[1:] == (512, 512)
    assert c.meta["spacing_zyx"] == [sz, sy, sx]
    # the same anatomy on a coarse fitted grid: the body is as wide in mm on both
    coarse = generate_case(seed=seed, shape=(40, 96, 96))

    def body_width_mm(case) -> float:
        arr = case.volume.array
        widths = [
            np.ptp(np.flatnonzero((arr[z] > -500).any(axis=0))) * case.volume.spacing_zyx[2]
            for z in range(arr.shape[0] // 3, 2 * arr.shape[0] // 3)
        ]
        return float(np.median(widths))

    wide, narrow = body_width_mm(c), body_width_mm(coarse)
    assert 250 < wide < 420, wide  # an adult chest (table included), in mm
    assert abs(wide - narrow) < 3 * coarse.volume.spacing_zyx[2], (wide, narrow)


def _lesions_inside(c) -> None:
    shape = c.labels.shape
    for f in c.findings:
        m = c.labels == f.label
        for ax in range(3):
            assert not np.take(m, 0, axis=ax).any(), (f, ax)
            assert not np.take(m, shape[ax] - 1, axis=ax).any(), (f, ax)


def test_targeted_matrix_crops_the_body_keeps_mm_and_lesions_inside() -> None:
    n_findings = 0
    for seed in range(6):
        c = generate_case(seed=seed, matrix=160)
        sz, sy, sx = c.volume.spacing_zyx
        assert c.volume.shape[1:] == (160, 160)
        assert 0.6 <= sy == sx <= 1.0
        # a 96-160 mm field of view crops an adult chest: body (not outside air) at every edge
        mid = c.volume.array[c.volume.shape[0] // 2]
        for edge in (mid[:, 0], mid[:, -1], mid[0], mid[-1]):
            assert np.median(edge) > -950, seed
        _lesions_inside(c)
        for f in c.findings:
            if f.kind in NODULE_KINDS:
                assert f.diameter_mm >= 3.0 - 1e-6
        n_findings += len(c.findings)
    assert n_findings > 0


def test_explicit_shape_and_spacing_give_exactly_that_grid() -> None:
    c = generate_case(seed=4, shape=(20, 64, 72), spacing=(2.5, 0.8, 0.7))
    assert c.volume.shape == (20, 64, 72)
    assert c.volume.spacing_zyx == (2.5, 0.8, 0.7)
    c = generate_case(seed=4, spacing=(3.0, 1.0))
    assert c.volume.spacing_zyx == (3.0, 1.0, 1.0)
    assert c.volume.shape[1] >= 512  # the matrix holds the body at that spacing
    with pytest.raises(ValueError, match="matrix"):
        generate_case(seed=4, shape=(20, 64, 64), matrix=256)
    with pytest.raises(ValueError, match="spacing"):
        generate_case(seed=4, spacing=(1.0, -0.5))


def test_default_grid_deterministic_per_seed() -> None:
    a = generate_case(seed=8, matrix=128)
    b = generate_case(seed=8, matrix=128)
    assert a.volume.spacing_zyx == b.volume.spacing_zyx
    assert a.volume.array.tobytes() == b.volume.array.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]
    assert a.report.to_dict() == b.report.to_dict()
    others = {generate_case(seed=s, matrix=32).volume.spacing_zyx for s in range(9, 13)}
    assert len(others) > 1  # the spacing is drawn per case


@pytest.mark.parametrize("spacing", [(2.5, 0.7, 0.7), (1.0, 0.6, 0.6), (5.0, 0.98, 0.98)])
@pytest.mark.parametrize("diameter", [4.0, 9.0, 23.0])
def test_lesion_diameter_in_mm_on_clinical_grids(spacing, diameter) -> None:
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.report.measure import measure_mask
    from napari_ctreport.synth.lesions import make_lesion

    shape = (40, 96, 96)
    centre = np.array([20.0, 48.0, 48.0])  # a voxel centre: slice 20 cuts the sphere's equator
    les = make_lesion(
        np.random.default_rng(0),
        "solid nodule",
        center_idx=centre,
        diameter_mm=diameter,
        spacing=spacing,
        shape=shape,
        lesion_shape="round",
        aspect=(1.0, 1.0, 1.0),
    )
    mask = np.zeros(shape, dtype=bool)
    mask[les.box] = les.mask
    vol = CTVolume(array=np.zeros(shape, np.int16), spacing_zyx=spacing, origin_lps=(0, 0, 0))
    m = measure_mask(mask, volume=vol)
    # the longest axial diameter is the sphere's, in mm, within one in-plane pixel
    assert abs(m["diameter_mm"] - diameter) <= spacing[1], m
    assert abs(m["short_axis_mm"] - diameter) <= spacing[1], m
    if spacing[0] <= diameter / 3:  # thick slices through a small sphere: no volume to speak of
        v = np.pi / 6 * diameter**3 / 1000.0
        assert abs(m["volume_ml"] - v) <= 0.1 * v, (m, v)


@pytest.mark.parametrize("spacing", [(2.5, 0.7, 0.7), (1.5, 1.5, 1.5), (3.0, 3.0, 3.0)])
@pytest.mark.parametrize("kind", ["solid nodule", "calcified nodule", "ground-glass nodule"])
def test_a_lesion_looks_as_large_as_its_ground_truth_measures(spacing, kind) -> None:
    """The image shows a synthetic lesion at the size its mask (the ground truth) measures: its
    attenuation's half-way contour is the mask's edge. Until session 35 solid lesions were
    written whole one voxel past the mask, a 6 mm nodule on 1.5 mm pixels looking 9 mm wide."""
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.report.measure import measure_mask
    from napari_ctreport.synth.lesions import composite, make_lesion

    shape = (32, 48, 48)
    for seed, diameter in enumerate([4.5, 6.0, 8.0, 12.0]):
        rng = np.random.default_rng(seed)
        centre = np.array([16.0, 24.0, 24.0]) + rng.uniform(-0.5, 0.5, 3)
        les = make_lesion(
            rng, kind, center_idx=centre, diameter_mm=diameter, spacing=spacing, shape=shape
        )
        lung = -850.0
        hu = np.full(shape, lung, np.float32)
        composite(hu, les)
        truth = np.zeros(shape, dtype=bool)
        truth[les.box] = les.mask
        half = 0.5 * (float(np.median(les.hu[les.mask])) + lung)
        vol = CTVolume(array=np.zeros(shape, np.int16), spacing_zyx=spacing, origin_lps=(0, 0, 0))
        seen = measure_mask(hu > half, volume=vol)["diameter_mm"]
        drawn = measure_mask(truth, volume=vol)["diameter_mm"]
        assert abs(seen - drawn) <= 0.5 * spacing[1], (diameter, seen, drawn)
        # partial volume: the voxels outside that the surface cuts are under half lesion
        own = hu[les.box]
        ring = (own > lung + 1.0) & ~les.mask
        assert ring.any() and (own[ring] - lung < 0.5 * (les.hu[ring] - lung)).all()


def test_synth_cli_grid_options(tmp_path: Path) -> None:
    from napari_ctreport.cli import main
    from napari_ctreport.io.case import read_case

    out = tmp_path / "ds"
    rc = main(["synth", "--out", str(out), "--cases", "1", "--workers", "1", "--shape", "20x48x48"])
    assert rc == 0
    vol = read_case(out / "case_0000").load_volume()
    assert vol.shape == (20, 48, 48)
    rc = main(
        ["synth", "--out", str(tmp_path / "m"), "--cases", "1", "--workers", "1"]
        + ["--matrix", "64"]
    )
    assert rc == 0
    vol = read_case(tmp_path / "m" / "case_0000").load_volume()
    assert vol.shape[1:] == (64, 64) and 0.6 <= vol.spacing_zyx[2] <= 1.0
    assert main(["synth", "--out", str(out), "--cases", "1", "--shape", "20x48"]) == 2
    assert main(["synth", "--out", str(out), "--cases", "1", "--spacing", "a,b"]) == 2


def test_effusion_is_one_dependent_crescent() -> None:
    """Free pleural fluid collects in the back of the chest: a synthetic effusion is one
    connected posterior crescent, not also a strip in front of the heart or scattered specks."""
    from scipy import ndimage as ndi

    seen = 0
    for seed in range(900000, 900012):
        c = generate_case(seed=seed, shape=(96, 128, 128))
        for f in c.findings:
            if f.kind != "pleural effusion":
                continue
            seen += 1
            m = c.labels == f.label
            assert ndi.label(m)[1] == 1, f"seed {seed}: effusion in pieces"
            assert np.nonzero(m)[1].mean() > m.shape[1] / 2  # the posterior half (LPS +y)
    assert seen >= 2


def test_a_case_folder_background_keeps_its_own_lesions(tmp_path) -> None:
    """A corrected case (or a CT with a lesion segmentation) as a background: its findings stay
    ground truth, untouched in the CT and the label map, and the inserted lesions keep clear of
    them; a finding the reviewer rejected is not kept."""
    from dataclasses import replace

    seed, src = _case_with_nodule()
    assert len(src.findings) >= 1
    findings = list(src.findings)
    rejected = None
    if len(findings) > 1:
        rejected = findings[-1]
        findings[-1] = replace(rejected, status="rejected")
    bg_folder = write_case(
        replace(src.to_case("bg"), findings=findings),
        tmp_path / "bg",
        volume=src.volume,
        labels=src.labels,
    )
    kept = [f for f in findings if f.status != "rejected"]
    out = write_dataset(
        tmp_path / "ds",
        cases=2,
        seed=21,
        real_backgrounds=[bg_folder],
        real_fraction=1.0,
        formats=("nifti",),
    )
    for folder in out:
        assert validate_case(folder) == []
        case = read_case(folder)
        vol = case.load_volume()
        labels = case.load_labels(vol)
        n = len(kept)
        assert len(case.findings) > n  # at least one lesion was inserted
        for old, new in zip(kept, case.findings[:n], strict=True):
            assert (new.kind, new.side) == (old.kind, old.side)
            assert new.diameter_mm == pytest.approx(old.diameter_mm, abs=0.06)
            before = src.labels == old.label
            np.testing.assert_array_equal(labels == new.label, before)
            np.testing.assert_array_equal(vol.array[before], src.volume.array[before])
        if rejected is not None:  # not ground truth any more
            gone = src.labels == rejected.label
            assert all(not np.array_equal(labels == f.label, gone) for f in case.findings)
        ids = [f.id for f in case.findings]
        assert ids == [f"F{i}" for i in range(1, len(ids) + 1)]
        for f in case.findings[n:]:
            region = labels == f.label
            assert region.any() and f.label > max(o.label for o in kept)
            assert not (region & (src.labels > 0)).any()


def test_a_dataset_segments_each_background_once(tmp_path, monkeypatch) -> None:
    """A dataset inserting into the same real CT again and again reads and segments it once
    (per process), and each case is the one a freshly segmented background gives; the cached
    lung labels are not changed by the cases drawn from them."""
    from napari_ctreport.synth import generate

    _, src = _case_with_nodule()
    bg = write_case(src.to_case("bg"), tmp_path / "bg", volume=src.volume, labels=src.labels)
    real = generate.segment_lungs
    calls: list[tuple[int, ...]] = []

    def counted(volume):
        calls.append(volume.shape)
        return real(volume)

    monkeypatch.setattr(generate, "segment_lungs", counted)
    generate._background.cache_clear()
    try:
        out = write_dataset(
            tmp_path / "ds",
            cases=3,
            seed=21,
            real_backgrounds=[bg],
            real_fraction=1.0,
            formats=("nifti",),
        )
        assert len(calls) == 1
        volume, known, lungs = generate._background(str(bg))
        before = lungs.copy()
        seed = generate.case_seed(21, 2)
        cached = generate_case(seed=seed, background=volume, known=known, background_lungs=lungs)
        fresh = generate_case(seed=seed, background=volume, known=known)
        assert len(calls) == 2  # the fresh one segmented again
        np.testing.assert_array_equal(lungs, before)
        np.testing.assert_array_equal(cached.volume.array, fresh.volume.array)
        np.testing.assert_array_equal(cached.labels, fresh.labels)
        assert [f.to_dict() for f in cached.findings] == [f.to_dict() for f in fresh.findings]
        written = read_case(out[2]).findings
        assert [f.kind for f in written] == [f.kind for f in fresh.findings]
        assert [f.diameter_mm for f in written] == pytest.approx(
            [f.diameter_mm for f in fresh.findings], abs=0.06
        )
        with pytest.raises(ValueError, match="lung labels"):
            insert_lesions(volume, rng=np.random.default_rng(0), lungs=lungs[:-1])
    finally:
        generate._background.cache_clear()


def test_an_export_folder_as_background_stands_for_its_newest_cases(tmp_path) -> None:
    """A folder of exported cases as a background: each case at its newest version (a
    re-export supersedes the first), so the corrections count, not the draft."""
    from dataclasses import replace

    from napari_ctreport.synth.generate import _backgrounds

    _, src = _case_with_nodule()
    case = src.to_case("x")
    export = tmp_path / "export"
    write_case(case, export / "x" / "v001", volume=src.volume, labels=src.labels)
    fixed = [replace(f, status="rejected") for f in src.findings[:1]] + list(src.findings[1:])
    write_case(
        replace(case, findings=fixed), export / "x" / "v002", volume=src.volume, labels=src.labels
    )
    ct = tmp_path / "plain.nii.gz"
    assert _backgrounds([export, ct]) == (str(export / "x" / "v002"), str(ct))
    (folder,) = write_dataset(
        tmp_path / "ds",
        cases=1,
        seed=3,
        real_backgrounds=[export],
        real_fraction=1.0,
        formats=("nifti",),
    )
    got = read_case(folder).findings
    kept = [f for f in fixed if f.status != "rejected"]
    assert [f.kind for f in got[: len(kept)]] == [f.kind for f in kept]
    assert len(got) > len(kept)


def test_masses_set_against_the_pleura_with_an_effusion_on_their_side() -> None:
    """``wall_masses``: a mass is set against the pleura (its centre under a radius deep in the
    lung, which cuts it where it ends) with an effusion on its side when the case has one, as a
    lung cancer with its effusion; with 0 the cases are drawn as before."""
    from scipy import ndimage as ndi

    from napari_ctreport.synth.generate import WALL_DEPTH
    from napari_ctreport.synth.phantom import build_phantom

    seen = with_fluid = 0
    for seed in range(60):
        plain = generate_case(seed=seed, shape=SHAPE)
        if not any(f.kind == "mass" for f in plain.findings):
            continue
        assert generate_case(seed=seed, shape=SHAPE, wall_masses=0.0).findings == plain.findings
        case = generate_case(seed=seed, shape=SHAPE, wall_masses=1.0)
        masses = [f for f in case.findings if f.kind == "mass"]
        if not masses:
            continue
        ph = build_phantom(np.random.default_rng(seed), shape=SHAPE)
        depth = ndi.distance_transform_edt(ph.lungs > 0, sampling=ph.spacing_zyx)
        for m in masses:
            region = case.labels == m.label
            centre = tuple(np.argwhere(region).mean(0).round().astype(int))
            radius = 0.5 * m.diameter_mm
            # the lung's edge cuts it (its centre shifts inward by the cut, its axial diameter
            # may fall short of the drawn one)
            assert depth[centre] <= (WALL_DEPTH[1] + 0.4) * radius
            ring = ndi.binary_dilation(region, iterations=2) & ~region
            assert (ph.lungs[ring] == 0).any()
        effusions = [f.side for f in case.findings if f.kind == "pleural effusion"]
        if effusions:
            assert any(m.side in effusions for m in masses)
            with_fluid += 1
        seen += 1
    assert seen >= 5 and with_fluid >= 3


def test_low_dose_noise_has_its_level_and_an_in_plane_grain() -> None:
    """``synth.acquisition.low_dose``: on a flat 40 HU block the added noise has the asked
    standard deviation, neighbouring pixels in-plane are correlated (a reconstruction's grain)
    but neighbouring slices are not, the same seed gives the same scan, and thicker slices
    change the grid (not the origin)."""
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.synth.acquisition import low_dose

    flat = CTVolume(
        array=np.full((20, 64, 64), 40, dtype=np.int16),
        spacing_zyx=(1.0, 0.7, 0.7),
        origin_lps=(1.0, 2.0, 3.0),
    )
    noisy = low_dose(flat, noise_hu=30.0, seed=3)
    d = noisy.array.astype(float) - 40.0
    assert noisy.array.dtype == np.int16
    assert abs(d.std() - 30.0) < 1.0
    assert abs(d.mean()) < 1.0

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert corr(d[:, :, 1:], d[:, :, :-1]) > 0.5
    assert abs(corr(d[1:], d[:-1])) < 0.05
    assert np.array_equal(low_dose(flat, noise_hu=30.0, seed=3).array, noisy.array)
    assert not np.array_equal(low_dose(flat, noise_hu=30.0, seed=4).array, noisy.array)
    thick = low_dose(flat, noise_hu=0.0, slice_mm=2.5)
    assert thick.shape[0] == 8 and thick.spacing_zyx == (2.5, 0.7, 0.7)
    assert np.all(thick.array == 40) and thick.origin_lps == flat.origin_lps


def test_lesions_are_placed_where_a_reader_can_see_them() -> None:
    """A nodule goes into aerated lung, not into soft tissue the lung label also covers (the
    phantom's hilar vessels): with the image given, every spot ``_place_nodule`` picks in a lung
    whose right half is 40 HU "vessel" is aerated; without it, some land in the vessel. An
    effusion that would wrap a nodule already placed is refused; one beside it, or wrapping a
    mass-sized lesion (a cancer and its effusion), is not."""
    from napari_ctreport.synth.generate import _place_nodule, _wraps_lesion

    shape, sp = (40, 80, 80), (2.0, 1.5, 1.5)
    lungs = np.ones(shape, dtype=np.uint8)
    hu = np.full(shape, -850.0, dtype=np.float32)
    hu[:, :, 40:] = 40.0  # soft tissue inside the lung label
    labels = np.zeros(shape, dtype=np.uint8)

    def spots(image) -> list[float]:
        out = []
        for seed in range(12):
            les = _place_nodule(
                np.random.default_rng(seed),
                "solid nodule",
                lungs=lungs,
                labels=labels,
                spacing=sp,
                hu=image,
            )
            assert les is not None
            out.append(float(np.median(hu[les.box][les.mask])))
        return out

    assert max(spots(hu)) < -500.0
    assert max(spots(None)) > -500.0

    zz, yy, xx = np.indices(shape)
    dist = np.sqrt(((zz - 20) * sp[0]) ** 2 + ((yy - 40) * sp[1]) ** 2 + ((xx - 40) * sp[2]) ** 2)
    box = tuple(slice(0, n) for n in shape)
    for radius, fluid, wraps in (
        (4.0, dist <= 12.0, True),  # a nodule floating in the fluid
        (4.0, (dist > 4.0) & (yy > 42), False),  # fluid on one side of it only
        (17.0, dist <= 25.0, False),  # a mass, left to its effusion
    ):
        nodule = np.zeros(shape, dtype=np.uint8)
        nodule[dist <= radius] = 1
        assert _wraps_lesion(fluid & (nodule == 0), box, nodule, sp) is wraps, radius


def test_an_effusion_ends_at_its_meniscus() -> None:
    """Fluid fills the dependent lung up to the meniscus and nothing above it: no slice above
    the drawn height holds fluid (an inclusive depth bound once made the deepest lung voxel of
    every column fluid up to the apex), and below it the fluid is deepest at the base."""
    from napari_ctreport.synth.lesions import effusion_mask

    shape, sp = (120, 60, 50), (2.0, 1.5, 1.5)
    lung = np.zeros(shape, dtype=bool)
    lung[:, 5:55, 5:45] = True
    for seed in range(6):
        m = effusion_mask(np.random.default_rng(seed), lung, spacing=sp)
        area = m.sum(axis=(1, 2))
        held = np.flatnonzero(area)
        assert held[0] == 0  # from the base (z index 0 here)
        # the drawn height is 35-110 mm: 18-55 slices of 2 mm
        assert 15 <= len(held) <= 56, len(held)
        assert np.all(area[held[-1] + 1 :] == 0)
        assert held[-1] == len(held) - 1  # one run of slices, no sheet above
        assert area[0] == area.max() and area[held[-1]] < area[0] / 4
