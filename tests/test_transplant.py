"""Real lesions moved into other lungs (an evaluation set with real lesion texture)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_ctreport.io.case import read_case, validate_case, write_case
from napari_ctreport.report.anatomy import segment_lungs
from napari_ctreport.report.lexicon import NODULE_KINDS
from napari_ctreport.synth import generate_case
from napari_ctreport.synth.transplant import lesion_sources, write_transplant_dataset

SHAPE = (64, 96, 96)


def _folder(tmp_path: Path, name: str, *, seed_from: int, with_lesion: bool) -> tuple[Path, object]:
    for seed in range(seed_from, seed_from + 40):
        c = generate_case(seed=seed, shape=SHAPE)
        nodules = [f for f in c.findings if f.kind in NODULE_KINDS and f.diameter_mm >= 8]
        if with_lesion and len(nodules) == 1 and len(c.findings) == 1:
            break
        if not with_lesion and c.findings and not nodules:
            break  # a background with a lesion of its own that is not moved (mass, effusion)
    else:
        raise AssertionError("no suitable seed")
    return write_case(c.to_case(name), tmp_path / name, volume=c.volume, labels=c.labels), c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tx")
    src, src_case = _folder(tmp, "src", seed_from=0, with_lesion=True)
    bg, bg_case = _folder(tmp, "bg", seed_from=100, with_lesion=False)
    return tmp, src, src_case, bg, bg_case


def test_lesion_sources_cut_out_the_labelled_nodule(folders) -> None:
    _, src, src_case, _, _ = folders
    (s,) = lesion_sources([src])
    f = src_case.findings[0]
    assert s.kind == f.kind and s.diameter_mm == pytest.approx(f.diameter_mm, abs=0.06)
    assert s.mask.sum() == (src_case.labels == f.label).sum()
    assert s.hu[s.mask].mean() == pytest.approx(
        src_case.volume.array[src_case.labels == f.label].mean()
    )


@pytest.mark.parametrize("place", ["parenchyma", "pleura"])
def test_a_moved_lesion_keeps_its_size_and_texture_and_sits_where_asked(folders, place) -> None:
    tmp, src, src_case, bg, bg_case = folders
    out = write_transplant_dataset(
        tmp / f"ds_{place}",
        sources=[src],
        backgrounds=[bg],
        cases=2,
        seed=7,
        scale=(1.0, 1.0),
        pleura_fraction=1.0 if place == "pleura" else 0.0,
    )
    assert out
    (s,) = lesion_sources([src])
    lungs = segment_lungs(bg_case.volume) > 0
    for folder in out:
        assert validate_case(folder) == []
        case = read_case(folder)
        assert case.provenance["generator"]["place"] == place
        vol = case.load_volume()
        labels = case.load_labels(vol)
        n = len(bg_case.findings)
        # the background's own lesions stay ground truth, untouched
        for old, new in zip(bg_case.findings, case.findings[:n], strict=True):
            assert (new.kind, new.side) == (old.kind, old.side)
            np.testing.assert_array_equal(labels == new.label, bg_case.labels == old.label)
        moved = case.findings[n]
        region = labels == moved.label
        assert moved.diameter_mm == pytest.approx(s.diameter_mm, rel=0.15)
        assert moved.kind == s.kind
        # its own texture: the same mean density as where it came from
        assert vol.array[region].mean() == pytest.approx(s.hu[s.mask].mean(), abs=60)
        # only the lesion's neighbourhood changed
        near = ndi.binary_dilation(region, iterations=4)
        np.testing.assert_array_equal(vol.array[~near], bg_case.volume.array[~near])
        in_lung = lungs[region].mean()
        depth = ndi.distance_transform_edt(lungs, sampling=vol.spacing_zyx)
        centre = tuple(int(round(c)) for c in ndi.center_of_mass(region))
        touches = (ndi.binary_dilation(region) & ~lungs).any()
        if place == "parenchyma":  # lung all round it
            assert in_lung > 0.95 and depth[centre] > 0.5 * moved.diameter_mm
        else:  # against the pleura: mostly in the lung, its centre within a radius of the edge
            assert in_lung > 0.5 and touches and depth[centre] < 0.5 * moved.diameter_mm
        assert not (region & (bg_case.labels > 0)).any()


def test_transplant_cases_follow_from_the_seed(folders) -> None:
    tmp, src, _, bg, _ = folders
    kw = dict(sources=[src], backgrounds=[bg], cases=3, seed=3, scale=(0.9, 1.1))
    a = write_transplant_dataset(tmp / "a", **kw)
    b = write_transplant_dataset(tmp / "b", **kw)
    assert a and [p.name for p in a] == [p.name for p in b]
    # one case made again alone is the same case
    (c,) = write_transplant_dataset(tmp / "c", **kw, indices=[int(a[-1].name[-4:])])
    np.testing.assert_array_equal(
        read_case(c).load_volume().array, read_case(a[-1]).load_volume().array
    )
    for pa, pb in zip(a, b, strict=True):
        ca, cb = read_case(pa), read_case(pb)
        np.testing.assert_array_equal(ca.load_volume().array, cb.load_volume().array)
        assert ca.findings == cb.findings


def test_no_source_lesion_is_a_clear_error(folders) -> None:
    tmp, src, src_case, bg, _ = folders
    rejected = [replace(f, status="rejected") for f in src_case.findings]
    none = write_case(
        replace(src_case.to_case("none"), findings=rejected),
        tmp / "none",
        volume=src_case.volume,
        labels=src_case.labels,
    )
    with pytest.raises(ValueError, match="no nodule or mass"):
        write_transplant_dataset(tmp / "ds_none", sources=[none], backgrounds=[bg], cases=1, seed=0)


def test_an_augmented_training_set_turns_and_stretches_the_lesion(folders) -> None:
    tmp, src, _, bg, _ = folders
    kw = dict(sources=[src], backgrounds=[bg], cases=4, seed=11, scale=(1.0, 1.0))
    plain = write_transplant_dataset(tmp / "plain", **kw)
    turned = write_transplant_dataset(tmp / "turned", **kw, augment=True)
    assert plain and turned
    (s,) = lesion_sources([src])
    shapes = []
    for folder in turned:
        assert validate_case(folder) == []
        case = read_case(folder)
        assert case.provenance["generator"]["augmented"] is True
        moved = case.findings[-1]
        region = case.load_labels(case.load_volume()) == moved.label
        # still the same lesion: its size within the stretch, its voxel count about the same
        assert moved.diameter_mm == pytest.approx(s.diameter_mm, rel=0.35)
        assert region.sum() == pytest.approx(s.mask.sum(), rel=0.6)
        shapes.append(tuple(int(n) for n in np.ptp(np.nonzero(region), axis=1)))
    # not one shape copied: the extents differ between cases
    assert len(set(shapes)) > 1
    for folder in plain:
        assert read_case(folder).provenance["generator"]["augmented"] is False
