"""Lesion measurements and lung anatomy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.io.volume import CTVolume
from napari_ctreport.report.anatomy import body_midline_x, locate, segment_lungs
from napari_ctreport.report.measure import finding_from_mask, measure_mask

SPACING = (2.5, 0.7, 0.9)


def ellipsoid(shape, spacing, centre_mm, radii_mm):
    z, y, x = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    c, r = centre_mm, radii_mm
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1


@pytest.mark.parametrize("radii", [(10.0, 10.0, 10.0), (8.0, 12.0, 7.0), (15.0, 6.0, 11.0)])
def test_ellipsoid_on_anisotropic_grid(radii: tuple[float, float, float]) -> None:
    shape = (30, 60, 50)
    centre = (37.3, 20.2, 22.6)  # mm from voxel [0, 0, 0], off the grid
    mask = ellipsoid(shape, SPACING, centre, radii)
    vol = CTVolume(np.where(mask, 40, -850).astype(np.int16), SPACING, (-100.0, 50.0, -300.0))
    m = measure_mask(mask, volume=vol)
    long_true, short_true = 2 * max(radii[1:]), 2 * min(radii[1:])
    voxel = max(SPACING[1:])
    assert abs(m["diameter_mm"] - long_true) <= voxel
    assert abs(m["short_axis_mm"] - short_true) <= voxel
    v_true = 4 / 3 * np.pi * np.prod(radii) / 1000
    assert abs(m["volume_ml"] - v_true) / v_true < 0.05
    assert m["mean_hu"] == pytest.approx(40.0)
    # centroid and box in LPS (x, y, z): origin + index * spacing, axes reversed
    expect = np.array([-100.0 + centre[2], 50.0 + centre[1], -300.0 + centre[0]])
    assert np.allclose(m["center_lps_mm"], expect, atol=0.3)
    lo, hi = np.array(m["bbox_lps_mm"])
    assert np.all(lo < expect) and np.all(hi > expect)
    assert np.allclose(hi - lo, 2 * np.array(radii[::-1]), atol=max(SPACING) + 0.01)


def test_long_axis_in_one_slice_and_obliquely() -> None:
    # a thin diagonal bar on one slice: 40 px along x, 30 px along y -> Feret = hypot
    sp = (5.0, 0.5, 1.0)
    mask = np.zeros((3, 40, 50), dtype=bool)
    for i in range(30):
        mask[1, 5 + i, 5 + round(i * 39 / 29)] = True
    vol = CTVolume(np.zeros(mask.shape, np.int16), sp, (0, 0, 0))
    m = measure_mask(mask, volume=vol)
    expect = np.hypot(30 * 0.5, 40 * 1.0)
    assert abs(m["diameter_mm"] - expect) <= 1.0
    assert m["axial_slice"] == 1
    with pytest.raises(ValueError, match="empty"):
        measure_mask(np.zeros_like(mask), volume=vol)


def phantom(nz: int = 40, ny: int = 96, nx: int = 128, spacing=(5.0, 3.0, 3.0)) -> CTVolume:
    """Air around an elliptic body of soft tissue with two lungs; patient's right at low x."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    body = ((y - ny / 2) / (ny * 0.42)) ** 2 + ((x - nx / 2) / (nx * 0.45)) ** 2 <= 1
    arr = np.where(body, np.float32(40), np.float32(-1000)) * np.ones((nz, 1, 1), np.float32)
    for cx in (nx * 0.3, nx * 0.7):
        lung = ((y - ny / 2) / (ny * 0.3)) ** 2 + ((x - cx) / (nx * 0.15)) ** 2 + (
            (z - nz / 2) / (nz * 0.45)
        ) ** 2 <= 1
        arr[lung] = -850
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * 20
    return CTVolume(arr.astype(np.int16), spacing, (-nx * 1.5, -ny * 1.5, -100.0))


def test_lungs_on_phantom_and_locate() -> None:
    vol = phantom()
    lungs = segment_lungs(vol)
    assert lungs.shape == vol.shape and lungs.dtype == np.uint8
    xs_r = np.nonzero(lungs == 1)[2].mean()
    xs_l = np.nonzero(lungs == 2)[2].mean()
    assert xs_r < vol.shape[2] / 2 < xs_l
    mid = body_midline_x(vol)
    assert abs(mid - (vol.origin_lps[0] + (vol.shape[2] / 2) * 3.0)) < 6.0
    # a point in the upper part of the right lung; one just outside the left lung, low down
    nz, ny, nx = vol.shape
    p_right_upper = vol.index_to_lps((nz * 0.8, ny / 2, nx * 0.3))
    assert locate(p_right_upper, volume=vol, lungs=lungs) == ("right", "upper")
    p_left_lower = vol.index_to_lps((nz * 0.1, ny / 2, nx * 0.9))
    assert locate(p_left_lower, volume=vol, lungs=lungs) == ("left", "lower")
    # without lungs: side by the midline, zone by thirds of the volume
    assert locate(p_right_upper, volume=vol, lungs=None) == ("right", "upper")
    centre = vol.index_to_lps((nz / 2, ny / 2, nx / 2 - 0.5))
    assert locate(centre, volume=vol, lungs=None, midline_x=mid) == ("midline", "middle")


def test_zone_ignores_the_trachea_above_the_apex() -> None:
    """At the 2.5 mm the lungs are segmented at, the trachea joins the right lung and the label
    runs up to the top of the scan; the zones are thirds of the lung's own extent, so those gas
    slices must not count (on the generator's phantoms 5.6 % of lung points were put one zone
    too low, against their true lungs, before)."""
    from napari_ctreport.report.anatomy import END_SLICE_MIN_MM2, _slices_holding, _trim_gas_ends

    vol = phantom(nz=60)
    arr = vol.array.astype(np.float32)
    nz, ny, nx = arr.shape
    arr[45:][arr[45:] > -950] = np.maximum(arr[45:][arr[45:] > -950], 40.0)  # lungs end at 44
    # a pure-gas trachea from the top of the scan down into the right lung's medial edge
    arr[40:, ny // 2 - 3 : ny // 2 + 3, int(nx * 0.43) : int(nx * 0.5)] = -1000.0
    # and a sliver of lung (a recess) under the right lung's base, slice 3
    arr[3, ny // 2 - 1 : ny // 2 + 1, int(nx * 0.3) - 1 : int(nx * 0.3) + 1] = -850.0
    vol = CTVolume(arr.astype(np.int16), vol.spacing_zyx, vol.origin_lps)
    lungs = segment_lungs(vol)
    assert (lungs[55] == 1).any() and not (lungs[55] == 2).any()  # the trachea is "right lung"
    held = _slices_holding(lungs, 1)
    kept = np.flatnonzero(_trim_gas_ends(vol, lungs, 1, held))
    assert np.flatnonzero(held)[[0, -1]].tolist() == [3, 59]
    assert 0 < (lungs[3] == 1).sum() * 9.0 < END_SLICE_MIN_MM2  # a sliver, kept at the base
    assert kept[[0, -1]].tolist() == [3, 44]
    p = vol.index_to_lps((36, ny / 2, nx * 0.3))  # upper third of the right lung (slices 3-44)
    assert locate(p, volume=vol, lungs=lungs) == ("right", "upper")
    q = vol.index_to_lps((36, ny / 2, nx * 0.7))
    assert locate(q, volume=vol, lungs=lungs) == ("left", "upper")
    low = vol.index_to_lps((12, ny / 2, nx * 0.3))
    assert locate(low, volume=vol, lungs=lungs) == ("right", "lower")


def test_lungs_touching_are_split() -> None:
    vol = phantom()
    arr = vol.array.copy()
    nz, ny, nx = arr.shape
    # an airway-like tube joining the two lungs through the mediastinum
    arr[nz // 2 - 2 : nz // 2 + 2, ny // 2 - 2 : ny // 2 + 2, int(nx * 0.3) : int(nx * 0.7)] = -900
    bridged = CTVolume(arr, vol.spacing_zyx, vol.origin_lps)
    lungs = segment_lungs(bridged)
    n_right, n_left = (lungs == 1).sum(), (lungs == 2).sum()
    assert n_right > 0 and n_left > 0 and 0.6 < n_right / n_left < 1.6
    assert np.nonzero(lungs == 1)[2].mean() < np.nonzero(lungs == 2)[2].mean()


def test_gas_in_the_bowel_is_not_lung() -> None:
    """A chest CT's lowest slices hold the stomach and colon: pure air (about -1000 HU), larger
    there than the lung bases (lung parenchyma, about -850 HU). Gas is not a lung."""
    vol = phantom()
    arr = vol.array.astype(np.float32)
    nz, ny, nx = arr.shape
    # a big gas-filled stomach under the left lung, in the lowest slices, and the lungs only
    # reaching down to the middle of the scan
    arr[: nz // 2][arr[: nz // 2] < -500] = 40.0
    z, y, x = np.ogrid[:nz, :ny, :nx]
    stomach = ((y - ny / 2) / (ny * 0.25)) ** 2 + ((x - nx * 0.55) / (nx * 0.25)) ** 2 <= 1
    low = nz // 2 - 2  # the diaphragm: two slices of tissue between the stomach and the lungs
    arr[:low][np.broadcast_to(stomach, arr.shape)[:low]] = -1000.0
    gut = CTVolume(arr.astype(np.int16), vol.spacing_zyx, vol.origin_lps)
    lungs = segment_lungs(gut)
    assert (lungs == 1).any() and (lungs == 2).any()
    assert not lungs[: nz // 2].any()  # no "lung" in the gas


def test_real_abdominal_ct_lung_bases(shared_data) -> None:
    """The real abdominal CT (3 mm) shows the lung bases in its top slices and a stomach and colon
    full of gas below them; the lungs are the bases, on their own sides."""
    from napari_ctreport.io.ct import load_ct

    vol = load_ct(shared_data / "real" / "totalsegmentator" / "example_ct.nii.gz")
    lungs = segment_lungs(vol)
    for side in (1, 2):
        zs = np.nonzero(lungs == side)[0]
        assert zs.size and zs.min() >= 95  # only the top slices (the gas reaches down to 55)
        assert np.median(vol.array[lungs == side]) > -900  # parenchyma, not pure air
    mid = body_midline_x(vol)
    xs = [vol.index_to_lps(np.argwhere(lungs == s).mean(0))[0] for s in (1, 2)]
    assert xs[0] < mid < xs[1]  # the patient's right lung at lower LPS x


def test_air_under_the_table_is_not_a_lung(shared_data) -> None:
    """On the real abdominal CT's 30-slice crop (3 mm), air under the curved table in the
    image's corner (68 ml, median -918 HU: not outside air by its median) was taken for the
    left lung, and the real left lung base was left out. Against TotalSegmentator's lobes on
    the same grid, each lung now lies in its own side's lobes."""
    from napari_ctreport.io.ct import load_ct
    from napari_ctreport.io.write import read_labels

    ts = shared_data / "real" / "totalsegmentator"
    vol = load_ct(ts / "example_ct_sm.nii.gz")
    lobes = read_labels(ts / "example_seg.nii.gz", like=vol)
    lungs = segment_lungs(vol)
    # TotalSegmentator v2 classes: 10-11 the left lung's lobes, 12-14 the right's
    for side, own in ((1, [12, 13, 14]), (2, [10, 11])):
        ours = lungs == side
        assert ours.sum() > 1000
        assert np.isin(lobes[ours], own).mean() > 0.9, side
        assert (ours & np.isin(lobes, own)).sum() > 0.8 * np.isin(lobes, own).sum(), side


@pytest.mark.parametrize("fallback", [True, False])
def test_lungs_cut_open_by_the_field_of_view(monkeypatch, fallback) -> None:
    """A field of view that cuts into the lungs (a large patient, a tight reconstruction circle)
    joins them to the air outside the body. Their parenchyma, denser than that air, is still
    found (``LUNGS_CUT_BY_FOV``); without it no lung at all is found."""
    from napari_ctreport.report import anatomy

    monkeypatch.setattr(anatomy, "LUNGS_CUT_BY_FOV", fallback)
    vol = phantom()
    native = segment_lungs(vol)
    nz, ny, nx = vol.shape
    arr = vol.array.copy()
    yy, xx = np.mgrid[:ny, :nx]
    fov = (yy - ny / 2) ** 2 + (xx - nx / 2) ** 2 <= 40**2  # the lungs reach 45 voxels out
    arr[:, ~fov] = -1024  # outside the reconstruction circle
    assert ((native > 0) & ~fov[None]).any()  # it cuts both lungs open
    lungs = segment_lungs(CTVolume(arr, vol.spacing_zyx, vol.origin_lps))
    if not fallback:
        assert not lungs.any()
        return
    for label in (1, 2):
        inside = (native == label) & fov[None]
        assert ((lungs == label) & inside).sum() >= 0.8 * inside.sum()
        assert ((lungs == label) & ~(native == label)).sum() <= 0.05 * inside.sum()


@pytest.mark.parametrize("disc_mm", [None, 0.0])
def test_padding_under_and_over_the_body_is_not_lung(monkeypatch, disc_mm) -> None:
    """A CT with no lung (the abdomen) lying on a foam mattress under a blanket (about -930 HU,
    denser than the air around them): with no lung apart from the outside air, the search for
    lungs the field of view cut open must not take the foam for lung, since it lies outside the
    body's outline. With the disc test off (``FOV_LUNG_MIN_RADIUS_MM`` 0) the foam is "lung"."""
    from napari_ctreport.report import anatomy

    if disc_mm is not None:
        monkeypatch.setattr(anatomy, "FOV_LUNG_MIN_RADIUS_MM", disc_mm)
    vol = phantom()
    arr = vol.array.astype(np.float32)
    arr[arr < -500] = -1000.0
    nz, ny, nx = arr.shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    body = ((y - ny / 2) / (ny * 0.42)) ** 2 + ((x - nx / 2) / (nx * 0.45)) ** 2 <= 1
    arr = np.where(body, 40.0, arr) * np.ones((nz, 1, 1), np.float32)  # soft tissue, no lung
    outline = ((y - ny / 2) / (ny * 0.42 + 3)) ** 2 + ((x - nx / 2) / (nx * 0.45 + 3)) ** 2 <= 1
    foam = np.broadcast_to(~body & outline | (y >= ny - 7), arr.shape)  # blanket and mattress
    rng = np.random.default_rng(1)
    arr[foam] = -930.0 + 10.0 * rng.standard_normal(int(foam.sum()))
    lungs = segment_lungs(CTVolume(arr.astype(np.int16), vol.spacing_zyx, vol.origin_lps))
    if disc_mm is None:
        assert not lungs.any()
    else:
        assert (lungs > 0).sum() > 0.5 * foam.sum()


def test_real_padding_is_not_lung(shared_data) -> None:
    """Two real CTs with no lung in them: the upper-abdominal DICOM series (below the lung
    bases; a mattress under it, a blanket over it) and the head CT (a head rest behind it) had
    498 and 99 ml of "lung" from the field-of-view search; the report then said "Only part of
    the lungs is in the scanned volume" instead of that the lungs were not assessed."""
    from napari_ctreport.io.ct import load_ct

    real = shared_data / "real"
    for path in (
        real / "totalsegmentator" / "example_ct_dicom",
        real / "dcm_qa_ct" / "GE_gantry_tilt_subset",
    ):
        assert not segment_lungs(load_ct(path)).any(), path.name


def test_no_lungs() -> None:
    arr = np.full((20, 40, 40), 40, np.int16)
    vol = CTVolume(arr, (2.0, 2.0, 2.0), (0, 0, 0))
    lungs = segment_lungs(vol)
    assert not lungs.any()
    side, zone = locate((5.0, 40.0, 35.0), volume=vol, lungs=lungs)
    assert (side, zone) == ("right", "upper")


def test_finding_from_mask() -> None:
    vol = phantom()
    nz, ny, nx = vol.shape
    mask = ellipsoid(
        vol.shape, vol.spacing_zyx, (nz * 0.75 * 5, ny / 2 * 3, nx * 0.7 * 3), (8, 8, 8)
    )
    f = finding_from_mask(
        mask,
        volume=vol,
        id="F7",
        kind="solid nodule",
        lungs=segment_lungs(vol),
        score=0.8,
        attributes={"shape": "round"},
    )
    assert (f.id, f.kind, f.side, f.zone, f.score) == ("F7", "solid nodule", "left", "upper", 0.8)
    assert abs(f.diameter_mm - 16) <= 3.0
    assert f.attributes == {"shape": "round"}


@pytest.mark.slow
def test_lungs_on_a_clinical_size_volume() -> None:
    """Both lungs on a 300 x 512 x 512 CT (its time is ``ctreport bench``'s, not a test's)."""
    vol = phantom(nz=300, ny=512, nx=512, spacing=(1.0, 0.7, 0.7))
    lungs = segment_lungs(vol)
    assert (lungs == 1).any() and (lungs == 2).any()


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CROP = SHARED / "data" / "real" / "totalsegmentator" / "pulmonary_report" / "ct_cropped.nii.gz"


def _read_crop() -> CTVolume:
    if not REAL_CROP.exists():
        pytest.skip(f"real chest CT crop not found at {REAL_CROP}")
    try:
        from napari_ctreport.io.ct import load_ct

        return load_ct(REAL_CROP)
    except ImportError:
        import SimpleITK as sitk

        img = sitk.ReadImage(str(REAL_CROP))
        assert np.allclose(img.GetDirection(), np.eye(3).ravel())  # stored in LPS already
        return CTVolume(sitk.GetArrayFromImage(img), img.GetSpacing()[::-1], img.GetOrigin())


def test_lungs_on_real_chest_crop() -> None:
    vol = _read_crop()
    lungs = segment_lungs(vol)
    voxel_ml = float(np.prod(vol.spacing_zyx)) / 1000
    right, left = lungs == 1, lungs == 2
    # both lungs found, each a substantial volume (the crop cuts them laterally)
    assert right.sum() * voxel_ml > 300 and left.sum() * voxel_ml > 300
    xr = vol.index_to_lps(np.argwhere(right).mean(axis=0))[0]
    xl = vol.index_to_lps(np.argwhere(left).mean(axis=0))[0]
    mid = body_midline_x(vol, lungs=lungs)
    assert xr < mid < xl  # patient's right lung at LPS x below the midline
    # the lungs are air: their mean HU is far below soft tissue
    assert vol.array[right | left].mean() < -600
    # the vertebral bodies lie on the midline (dense bone, posterior, within 2.5 cm)
    assert abs(mid - 14.0) < 25.0


def test_fast_box_and_lung_extent_match_their_plain_definitions() -> None:
    """The quick forms used on thin-slice CTs give what the plain whole-volume forms give: the
    tight box (other axes only over the first axis' range), and a lung's presence and
    cranio-caudal extent found from either end in chunks."""
    from napari_ctreport.report.anatomy import _slices_holding
    from napari_ctreport.report.measure import tight_box

    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = (int(rng.integers(1, 50)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        labels = np.zeros(shape, dtype=np.uint8)
        for _ in range(int(rng.integers(0, 4))):
            labels[tuple(int(rng.integers(0, n)) for n in shape)] = int(rng.integers(1, 3))
        for value in (1, 2):
            mask = labels == value
            pts = np.argwhere(mask)
            box = tight_box(mask)
            plain = np.flatnonzero(mask.any(axis=(1, 2)))
            got = np.flatnonzero(_slices_holding(labels, value, chunk=int(rng.integers(1, 20))))
            assert bool(got.size) == bool(pts.size)
            if not pts.size:
                assert box is None and not got.size
                continue
            assert box == tuple(
                slice(int(lo), int(hi) + 1) for lo, hi in zip(pts.min(0), pts.max(0), strict=True)
            )
            assert (got[0], got[-1]) == (plain[0], plain[-1])


def test_a_pieces_side_from_its_box_is_the_measured_findings_side() -> None:
    """``analysis._side_of`` (an effusion piece's side from its mask on its own box) gives the
    side ``finding_from_mask`` gives the whole-volume mask, for pieces all over the phantom."""
    from types import SimpleNamespace

    from napari_ctreport.analysis import _side_of

    vol = phantom()
    lungs = segment_lungs(vol)
    rng = np.random.default_rng(5)
    nz, ny, nx = vol.shape
    sides = set()
    for _ in range(12):
        lo = [int(rng.integers(0, n - 4)) for n in (nz, ny, nx)]
        hi = [min(n, a + int(rng.integers(4, 12))) for a, n in zip(lo, (nz, ny, nx), strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        piece = rng.random(tuple(b - a for a, b in zip(lo, hi, strict=True))) < 0.4
        piece[tuple(s // 2 for s in piece.shape)] = True
        full = np.zeros(vol.shape, dtype=bool)
        full[box] = piece
        want = finding_from_mask(full, volume=vol, id="E", kind="pleural effusion", lungs=lungs)
        assert _side_of(SimpleNamespace(mask=piece, mask_slices=box), vol, lungs) == want.side
        sides.add(want.side)
    assert sides == {"left", "right"}
