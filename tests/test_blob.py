"""Hessian blob evidence on the CT (napari_ctreport.model.blob)."""

import numpy as np
import pytest

from napari_ctreport.model.blob import BlobMeasure, blob_measure

SPACING = (1.25, 0.7, 0.7)  # a clinical chest CT grid: thin slices, sub-millimetre pixels


def _lung(shape=(48, 80, 80)):
    return np.full(shape, -850.0, dtype=np.float32)


def _mm(shape, centre):
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    return [(g - c) * s for g, c, s in zip((zz, yy, xx), centre, SPACING, strict=True)]


@pytest.mark.parametrize("radius", [2.5, 4.0, 6.0])
def test_a_solid_ball_is_a_strong_round_blob_at_its_own_scale(radius):
    ct = _lung()
    dz, dy, dx = _mm(ct.shape, (24, 40, 40))
    ct[dz**2 + dy**2 + dx**2 <= radius**2] = 30.0
    m = blob_measure(ct, spacing_zyx=SPACING, centre_index=(24.4, 40.6, 39.5))
    assert m.strength >= 150  # solid tissue against aerated lung
    assert m.ratio > 0.7  # round
    # the strongest scale grows with the ball (about r / sqrt(3))
    assert radius / 3.0 <= m.sigma_mm <= radius
    # isolated: the solid tissue connected to its centre ends at its surface, and the shell
    # half a radius beyond its edge is aerated lung
    assert radius - 1.0 <= m.extent_mm <= radius + 1.5
    assert m.shell_solid == 0.0


def test_a_ball_on_a_vessel_or_the_chest_wall_is_not_isolated():
    ct = _lung()
    dz, dy, dx = _mm(ct.shape, (24, 40, 40))
    ct[dz**2 + dy**2 + dx**2 <= 4.0**2] = 30.0
    free = blob_measure(ct, spacing_zyx=SPACING, centre_index=(24, 40, 40)).extent_mm
    ct[(dz**2 + (dx - 4.5) ** 2 <= 1.5**2) & (dy > 0)] = 30.0  # a vessel leaving it
    on_vessel = blob_measure(ct, spacing_zyx=SPACING, centre_index=(24, 40, 40))
    assert on_vessel.extent_mm > 2 * free
    # ... but the vessel crosses the shell around the ball in one small spot
    assert 0.0 < on_vessel.shell_solid <= 0.05
    wall = _lung()
    wall[dz**2 + dy**2 + dx**2 <= 4.0**2] = 30.0
    wall[:, :, :35] = 40.0  # soft tissue up to x = -4.2 mm: touching the ball
    on_wall = blob_measure(wall, spacing_zyx=SPACING, centre_index=(24, 40, 40))
    assert on_wall.extent_mm > 12
    # the chest wall cuts a cap off the shell, (1 - d / R) / 2 of its area for a wall d mm from
    # the blob centre (here d about 5 mm: the Hessian's centre moves off the wall; R about 6 mm):
    # more than the detector's limit for a ball on a thin vessel (BLOB_MAX_SHELL_SOLID)
    assert 0.06 <= on_wall.shell_solid <= 0.35
    inside = np.full(wall.shape, 40.0, dtype=np.float32)
    inside[dz**2 + dy**2 + dx**2 <= 4.0**2] = 300.0  # a calcified ball inside soft tissue
    assert blob_measure(inside, spacing_zyx=SPACING, centre_index=(24, 40, 40)).shell_solid == 1.0


def test_vessels_ground_glass_and_lung_are_not_solid_blobs():
    tube = _lung()
    dz, dy, dx = _mm(tube.shape, (24, 40, 40))
    tube[dz**2 + dx**2 <= 2.5**2] = 30.0  # a vessel along y
    m = blob_measure(tube, spacing_zyx=SPACING, centre_index=(24, 40, 40))
    assert m.ratio < 0.35

    ggo = _lung()
    ggo[dz**2 + dy**2 + dx**2 <= 4.0**2] = -550.0
    m = blob_measure(ggo, spacing_zyx=SPACING, centre_index=(24, 40, 40))
    assert 0 < m.strength < 150 and m.ratio > 0.7  # round but faint
    # with a density floor nothing near it reaches, no Hessian is taken
    assert blob_measure(ggo, spacing_zyx=SPACING, centre_index=(24, 40, 40), min_hu=-400) == (
        blob_measure(ggo, spacing_zyx=SPACING, centre_index=(24, 40, 40), sigmas_mm=())
    )
    assert blob_measure(ggo, spacing_zyx=SPACING, centre_index=(24, 40, 40), min_hu=-600) == m

    rng = np.random.default_rng(0)
    noisy = _lung() + rng.normal(0, 20, size=tube.shape).astype(np.float32)
    assert blob_measure(noisy, spacing_zyx=SPACING, centre_index=(24, 40, 40)).strength < 50


def test_outside_the_volume_is_no_blob_and_edges_are_safe():
    ct = _lung((10, 20, 20))
    ct[4:7, 8:12, 8:12] = 30.0
    assert blob_measure(ct, spacing_zyx=SPACING, centre_index=(-3, 5, 5)).strength == 0.0
    assert blob_measure(ct, spacing_zyx=SPACING, centre_index=(5, 10, 30)).strength == 0.0
    m = blob_measure(ct, spacing_zyx=SPACING, centre_index=(0, 0, 0))  # a corner: a patch cut short
    assert np.isfinite(m.strength) and np.isfinite(m.ratio)


def _chest(shape=(40, 120, 120)):
    """Soft tissue (40 HU) around a box of aerated lung (-850 HU); the lung mask (1 inside)."""
    ct = np.full(shape, 40.0, dtype=np.float32)
    lungs = np.zeros(shape, dtype=np.uint8)
    inner = (slice(4, shape[0] - 4), slice(10, shape[1] - 10), slice(10, shape[2] - 10))
    ct[inner] = -850.0
    lungs[inner] = 1
    return ct, lungs


def _put_ball(ct, centre, radius, hu=40.0):
    dz, dy, dx = _mm(ct.shape, centre)
    ct[dz**2 + dy**2 + dx**2 <= radius**2] = hu


def _near(cands, centre, mm=3.0):
    return any(np.linalg.norm((np.asarray(c) - centre) * SPACING) <= mm for c, _ in cands)


def test_nodule_candidates_find_isolated_balls_not_vessels_or_wall():
    from napari_ctreport.model.blob import nodule_candidates

    ct, lungs = _chest()
    free, thin, wall = (20, 35, 35), (20, 80, 40), (20, 60, 105)
    _put_ball(ct, free, 4.0)  # an isolated 8 mm nodule
    _put_ball(ct, thin, 3.5)  # a 7 mm nodule a thin vessel touches
    dz, dy, dx = _mm(ct.shape, thin)
    ct[(dz**2 + (dx - 3.0) ** 2 <= 1.0**2) & (dy > 0)] = 40.0
    _put_ball(ct, wall, 4.0)  # a ball set into the chest wall (x index 110 on; 3.5 mm away)
    dz, dy, dx = _mm(ct.shape, (20, 60, 60))
    ct[(dz**2 + dx**2 <= 2.5**2) & (np.abs(dy) <= 25)] = 40.0  # a 5 mm vessel along y, 50 mm
    ct[(dz**2 + dy**2 <= 0.9**2) & (np.abs(dx) <= 25)] = 40.0  # a thin vessel along x
    cands = nodule_candidates(ct, spacing_zyx=SPACING, lungs=lungs)
    assert _near(cands, free) and _near(cands, thin)
    assert not _near(cands, wall, mm=6.0)
    assert len(cands) == 2  # nothing on the vessels
    # candidates are CT indices, with the radius of the ball their core suggests
    assert all(np.all((c >= 0) & (c < ct.shape)) for c, _ in cands)
    radii = sorted(r for _, r in cands)
    assert 2.0 <= radii[0] <= 4.5 and 3.0 <= radii[1] <= 5.5  # the 7 mm and the 8 mm nodule
    # no lungs, no candidates
    assert nodule_candidates(ct, spacing_zyx=SPACING, lungs=np.zeros_like(lungs)) == []


def test_nodule_candidates_ignore_tissue_outside_the_lungs():
    from napari_ctreport.model.blob import nodule_candidates

    ct, lungs = _chest()
    _put_ball(ct, (20, 60, 60), 4.0)
    lungs[:, :, 50:70] = 0  # the ball lies outside the (here, cut) lung mask
    assert not _near(nodule_candidates(ct, spacing_zyx=SPACING, lungs=lungs), (20, 60, 60))


def _wall_chest(shape=(40, 100, 100)):
    """Aerated lung (-850 HU) with a flat chest wall (40 HU) from x index 70 on; the lung mask
    stops at the wall, as the lung segmentation draws it (a nodule on the wall lies outside)."""
    ct = np.full(shape, -850.0, dtype=np.float32)
    ct[:, :, 70:] = 40.0
    ct[:3], ct[-3:] = 40.0, 40.0
    lungs = (ct < -500).astype(np.uint8)
    return ct, lungs


def test_wall_candidates_find_a_nodule_on_the_pleura_not_the_wall_or_a_free_ball():
    from napari_ctreport.model.blob import nodule_candidates, wall_bump_mask, wall_candidates

    ct, lungs = _wall_chest()
    on_wall = (20, 50, 66)  # a 9 mm ball whose centre lies 2.8 mm in front of the wall
    _put_ball(ct, on_wall, 4.5)
    _put_ball(ct, (20, 25, 30), 4.0)  # a free ball: nodule_candidates' business
    dz, dy, dx = _mm(ct.shape, (20, 80, 60))
    ct[(dz**2 + dy**2 <= 2.0**2) & (dx >= -20) & (dx <= 8)] = 40.0  # a vessel into the wall
    lungs = lungs & (ct < -500)  # the wall nodule (and vessel) are not lung
    bumps = wall_candidates(ct, spacing_zyx=SPACING, lungs=lungs)
    near = [b for b in bumps if np.linalg.norm((b.centre - on_wall) * SPACING) <= 4.0]
    assert len(near) == 1
    b = near[0]
    assert b.lung_share >= 0.6 and b.wall_share >= 0.05 and b.elongation <= 2.2
    assert 3.0 <= b.radius_mm <= 7.0
    # the free ball is not a wall bump, and the isolated-ball search does not find the wall one
    assert not any(np.linalg.norm((x.centre - (20, 25, 30)) * SPACING) <= 6 for x in bumps)
    assert not _near(nodule_candidates(ct, spacing_zyx=SPACING, lungs=lungs), on_wall, mm=6.0)
    # the vessel that runs into the wall is too long to be a bump
    assert not any(x.elongation <= 2.2 and abs(x.centre[1] - 80) * 0.7 < 4 for x in bumps)
    # the bump's own mask: the part standing out of the wall, not the wall behind it
    slices, mask = wall_bump_mask(
        ct, spacing_zyx=SPACING, centre_index=b.centre, radius_mm=b.radius_mm
    )
    full = np.zeros(ct.shape, dtype=bool)
    full[slices] = mask
    assert full[on_wall] and full[:, :, 70:].sum() <= 0.2 * full.sum()
    ys = np.nonzero(full[20].any(axis=1))[0]
    assert 7.0 <= (ys.max() - ys.min() + 1) * SPACING[1] <= 11.0  # about the 9 mm ball
    # a flat wall alone, or no lungs: nothing
    flat, flat_lungs = _wall_chest()
    assert wall_candidates(flat, spacing_zyx=SPACING, lungs=flat_lungs) == []
    assert wall_candidates(ct, spacing_zyx=SPACING, lungs=np.zeros_like(lungs)) == []
    assert wall_bump_mask(flat, spacing_zyx=SPACING, centre_index=on_wall, radius_mm=5.0) is None


def _one_bump_on_the_wall(monkeypatch):
    """A 9 mm ball on the wall of :func:`_wall_chest`, the one pleural bump the search finds there
    (``wall_candidates`` patched in ``inference`` to return it twice, when asked): the ball's
    centre, the CT's shape, and a call of ``inference._wall_nodules`` on that CT, its model grid
    and a heatmap in which the network saw something everywhere."""
    import napari_ctreport.model.inference as inference
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.model.blob import wall_candidates
    from napari_ctreport.report.lexicon import KINDS

    ct, lungs = _wall_chest()
    on_wall = (20, 50, 66)
    _put_ball(ct, on_wall, 4.5)
    lungs = lungs & (ct < -500)
    bumps = [
        b
        for b in wall_candidates(ct, spacing_zyx=SPACING, lungs=lungs)
        if np.linalg.norm((b.centre - on_wall) * SPACING) <= 4.0
    ]
    assert len(bumps) == 1
    volume = CTVolume(array=ct, spacing_zyx=SPACING, origin_lps=(0.0, 0.0, 0.0))
    config = {"spacing_zyx": [2.0, 1.5, 1.5], "hu_clip": [-1100.0, 500.0], "patch_zyx": [8, 8, 8]}
    prep = inference.prepare(volume, config, crop=False)
    cells = [(s + 3) // 4 for s in prep.array.shape]
    heat = np.full((len(KINDS), *cells), 0.5, dtype=np.float32)

    def run(*, twice: bool = False):
        if twice:
            monkeypatch.setattr(inference, "wall_candidates", lambda *a, **k: bumps * 2)
        # comp_voxels as detect's (a mask component's voxel count by its id): None is a TypeError
        return inference._wall_nodules(volume, prep, lungs, [], {"heat": heat}, int, 10.0, None)

    return on_wall, ct.shape, run


def test_a_bump_found_twice_is_one_nodule_on_the_pleura(monkeypatch):
    """The wall search met a bump lying on a nodule an earlier bump had found (measured on the
    CT, with no mask component of the network's): it crashed the analysis on a smoothed real CT
    (TypeError in ``_wall_nodules``). The second bump is the same nodule."""
    on_wall, shape, run = _one_bump_on_the_wall(monkeypatch)
    out = run(twice=True)
    assert len(out) == 1
    slices, mask = out[0]["ct_mask"]
    full = np.zeros(shape, dtype=bool)
    full[slices] = mask
    assert full[on_wall]


@pytest.mark.parametrize("drawn", ["ball", "sliver"])
def test_a_sliver_off_the_wall_is_not_a_nodule_on_the_pleura(monkeypatch, drawn):
    """Where the lung's surface curves round a vertebral body, the opening takes a sliver about
    2 mm thick off the wall; on a real CT (5 mm slices) it was reported as a 9-10 mm "nodule". A
    nodule on the pleura is a ball: its mask must hold a disk of
    ``WALL_MIN_INSCRIBED_MM`` on some slice."""
    import napari_ctreport.model.inference as inference

    _, _, run = _one_bump_on_the_wall(monkeypatch)
    if drawn == "sliver":  # what comes off the wall there: 9 mm long, 2.1 mm (3 voxels) thick
        sliver = np.ones((2, 13, 3), dtype=bool)
        box = (slice(19, 21), slice(44, 57), slice(67, 70))
        monkeypatch.setattr(inference, "wall_bump_mask", lambda *a, **k: (box, sliver))
        assert inference._inscribed_mm(sliver, SPACING[1:]) < inference.WALL_MIN_INSCRIBED_MM
    assert len(run()) == (1 if drawn == "ball" else 0)


def _thick_slice_ball(radius_mm: float, z_offset_mm: float, wall_gap_mm: float | None = None):
    """A solid ball (30 HU) in aerated lung on 5 mm slices of 0.7 mm pixels, each voxel the
    average over its volume (the slice's partial volume), centred ``z_offset_mm`` off a slice
    centre; with ``wall_gap_mm``, a solid slab (the chest wall) ends that far from its side."""
    sp = np.array([5.0, 0.7, 0.7])
    n = np.ceil((radius_mm + 16.0) / sp).astype(int)
    shape = 2 * n + 1
    sub = 5  # subsamples per voxel and axis
    axes = [((np.arange(shape[a] * sub) + 0.5) / sub - shape[a] / 2) * sp[a] for a in range(3)]
    z, y, x = np.meshgrid(axes[0] - z_offset_mm, axes[1], axes[2], indexing="ij", sparse=True)
    solid = (z**2 + y**2 + x**2 <= radius_mm**2).astype(np.float32)
    if wall_gap_mm is not None:
        solid = np.maximum(solid, (x < -radius_mm - wall_gap_mm).astype(np.float32))
    frac = solid.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))
    return (-850.0 + 880.0 * frac).astype(np.float32), (shape - 1) / 2.0, tuple(sp)


def test_a_small_nodule_between_two_thick_slices_has_half_its_blob_strength() -> None:
    """On 5 mm slices a 9 mm solid nodule's blob strength depends on where the slices fall: 242
    centred on a slice, about half that centred between two (the slices take its middle in
    halves), under the detector's BLOB_MIN_STRENGTH; isolated all the same. Its scale is broad
    (3 mm), so since session 26 it passes BLOB_MIN_STRENGTH_BROAD."""
    from napari_ctreport.model import inference

    centred, c0, sp = _thick_slice_ball(4.5, 0.0)
    on_slice = blob_measure(centred, spacing_zyx=sp, centre_index=c0)
    ct, c, sp = _thick_slice_ball(4.5, 2.5)
    between = blob_measure(ct, spacing_zyx=sp, centre_index=c)
    assert on_slice.strength >= inference.BLOB_MIN_STRENGTH
    assert 0.35 * on_slice.strength <= between.strength <= 0.65 * on_slice.strength
    assert between.strength < inference.BLOB_MIN_STRENGTH
    assert between.shell_solid <= inference.BLOB_MAX_SHELL_SOLID  # isolated all the same
    assert between.sigma_mm >= inference.BLOB_BROAD_SIGMA_MM
    assert between.strength >= inference.BLOB_MIN_STRENGTH_BROAD


def test_a_nodule_found_on_the_pleura_is_held_to_the_wall_s_blob_test() -> None:
    """A low-scored solid nodule with a blob weaker than SOLID_MIN_BLOB_STRENGTH is "faint" and
    not reported, unless it was found on the pleura (its mask drawn on the CT): that one passed
    the wall's own test (WALL_MIN_STRENGTH; a ball against the wall scores lower) and is held to
    it. Here a 9 mm nodule between two 5 mm slices, 1 mm from the chest wall."""
    from napari_ctreport import analysis
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.model import inference
    from napari_ctreport.model.blob import _distance_mm
    from napari_ctreport.report.measure import finding_from_mask

    ct, c, sp = _thick_slice_ball(4.5, 2.5, wall_gap_mm=1.0)
    vol = CTVolume(array=ct, spacing_zyx=sp, origin_lps=(0.0, 0.0, 0.0))
    m = blob_measure(ct, spacing_zyx=sp, centre_index=c)
    assert inference.WALL_MIN_STRENGTH <= m.strength < analysis.SOLID_MIN_BLOB_STRENGTH
    ball = (ct > -400.0) & (_distance_mm(ct.shape, c, np.asarray(sp)) <= 4.5)
    f = finding_from_mask(ball, volume=vol, id="F1", kind="solid nodule", score=0.2)
    assert f.score < analysis.FAINT_MAX_SCORE
    assert analysis._not_a_lung_lesion(f, vol, contact=0.8, ct_mask=False) == "faint"
    assert analysis._not_a_lung_lesion(f, vol, contact=0.8, ct_mask=True) is None


def test_a_nodule_core_one_thick_slice_deep_is_compact_not_flat() -> None:
    """On 5 mm slices the eroded core of a nodule is often one slice deep. Its points have no
    spread along z, but each stands for a voxel 5 mm deep: with the voxels' own spread the
    core of a 6 mm disc is compact (it was "3.2 times longer than thick" and dropped as a vessel
    piece, which lost moved real nodules of 10 mm on 5 mm slices), and the ball it suggests
    reaches half a slice along z."""
    from napari_ctreport.model.blob import CANDIDATE_ERODE_MM, _compact_cores

    ssp = np.array([5.0, 1.25, 1.25])
    cores = np.zeros((5, 20, 20), dtype=np.int32)
    yy, xx = np.indices((20, 20))
    cores[2][((yy - 10) * 1.25) ** 2 + ((xx - 10) * 1.25) ** 2 <= 3.0**2] = 1
    (found,) = list(_compact_cores(cores, ssp))
    _pts, centre, elong, radius = found
    assert np.allclose(centre, (2, 10, 10))
    assert elong < 1.5
    assert radius >= 2.5 + CANDIDATE_ERODE_MM
    # a vessel piece in one slice is still elongated
    cores[:] = 0
    cores[2, 9:11, 2:18] = 1
    assert list(_compact_cores(cores, ssp)) == []


def test_a_less_dense_nodule_on_thick_slices_is_a_candidate_and_a_broad_blob() -> None:
    """A 10 mm nodule of -250 HU (a real one is often -100 to -200 HU on average) between two
    5 mm slices: a CT candidate, isolated, its blob at a broad scale with a strength under the
    phantoms' BLOB_MIN_STRENGTH but over BLOB_MIN_STRENGTH_BROAD."""
    from napari_ctreport.model import inference
    from napari_ctreport.model.blob import _distance_mm, nodule_candidates

    sp = (5.0, 0.7, 0.7)
    ct = np.full((20, 120, 120), -850.0, dtype=np.float32)
    c = np.array([10.5, 60.0, 60.0])
    ball = _distance_mm(ct.shape, c, np.asarray(sp)) <= 5.0
    ct[ball] = -250.0
    lungs = (ct < -500).astype(np.uint8) | ball
    cands = nodule_candidates(ct, spacing_zyx=sp, lungs=lungs)
    assert len(cands) == 1 and np.linalg.norm((cands[0][0] - c) * sp) <= 3.0
    m = blob_measure(ct, spacing_zyx=sp, centre_index=c)
    assert m.sigma_mm >= inference.BLOB_BROAD_SIGMA_MM
    assert inference.BLOB_MIN_STRENGTH_BROAD <= m.strength < inference.BLOB_MIN_STRENGTH
    assert m.shell_solid <= inference.BLOB_MAX_SHELL_SOLID
    assert inference._min_strength(m) == inference.BLOB_MIN_STRENGTH_BROAD
    # a subsolid peak is held to the full bar (the ground-glass test comes next), and so is a
    # blob at a vessel's scale
    assert inference._min_strength(m, broad=False) == inference.BLOB_MIN_STRENGTH
    small = BlobMeasure(strength=m.strength, ratio=m.ratio, sigma_mm=1.5)
    assert inference._min_strength(small) == inference.BLOB_MIN_STRENGTH


def test_a_nodule_taller_than_wide_on_thick_slices_is_a_candidate(monkeypatch) -> None:
    """A nodule 14 mm head-to-foot and 7 x 10 mm in-plane on 5 mm slices (as a real one moved
    into real lungs measured): the erosion thins its core in-plane only, and the bare core looks
    like a vessel along z (elongation over CANDIDATE_MAX_ELONGATION); the core grown back by the
    erosion does not. Vessels along z or in-plane are still no candidates."""
    from napari_ctreport.model import blob

    sp = np.array((5.0, 0.63, 0.63))
    zz, yy, xx = np.indices((20, 120, 120))
    axes = (7.0, 3.5, 5.0)
    nodule = ((zz - 10.2) * sp[0] / axes[0]) ** 2 + ((yy - 60) * sp[1] / axes[1]) ** 2 + (
        (xx - 60) * sp[2] / axes[2]
    ) ** 2 <= 1.0
    along_z = ((yy - 60) * sp[1]) ** 2 + ((xx - 60) * sp[2]) ** 2 <= 2.5**2
    along_y = (((zz - 10.2) * sp[0]) ** 2 + ((xx - 60) * sp[2]) ** 2 <= 3.5**2) & (
        np.abs((yy - 60) * sp[1]) <= 15.0
    )

    def candidates(region):
        ct = np.where(region, 40.0, -850.0).astype(np.float32)
        lungs = np.ones(ct.shape, dtype=np.uint8)
        return blob.nodule_candidates(ct, spacing_zyx=sp, lungs=lungs)

    (found,) = candidates(nodule)
    assert np.linalg.norm((found[0] - [10.2, 60, 60]) * sp) <= 3.0
    assert candidates(along_z) == [] and candidates(along_y) == []
    bare = blob._compact_cores
    monkeypatch.setattr(blob, "_compact_cores", lambda cores, ssp, *grown: bare(cores, ssp))
    assert candidates(nodule) == []  # the bare core's elongation


def _ball_with_vessels(hu: float, *, radius_mm: float, wall: bool = False):
    """A ball of ``hu`` in aerated lung on a thin-slice grid, three 5 mm vessels running into it
    (and, with ``wall``, the chest wall pressed against it); the CT and its centre index."""
    shape = (48, 90, 90)
    ct = _lung(shape)
    c = np.array([24.0, 45.0, 45.0])
    dz, dy, dx = _mm(shape, c)
    for d in ((0.0, 1.0, 0.0), (0.0, -0.6, 0.8), (0.7, 0.0, -0.7)):
        u = np.array(d) / np.linalg.norm(d)
        along = dz * u[0] + dy * u[1] + dx * u[2]
        ct[(along > 0) & (dz**2 + dy**2 + dx**2 - along**2 <= 2.5**2)] = 30.0
    ct[dz**2 + dy**2 + dx**2 <= radius_mm**2] = hu
    if wall:
        ct[:, :, : int(45 - (radius_mm + 0.5) / SPACING[2])] = 40.0
    return ct, c


def _confirm(ct, c, heat: float = 0.0, spacing=SPACING):
    """:func:`~napari_ctreport.model.inference._ct_blob` at index ``c`` of ``ct`` (on
    ``spacing``, the model grid the CT's own) for a peak of ``heat``."""
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.model import inference
    from napari_ctreport.model.inference import Prepared

    vol = CTVolume(array=ct, spacing_zyx=spacing, origin_lps=(0.0, 0.0, 0.0))
    prep = Prepared(ct, ct.shape, np.zeros(3), np.ones(3), np.asarray(spacing))
    return inference._ct_blob(vol, prep, c, heat=heat)


def test_a_faint_ball_alone_in_the_lung_is_confirmed_when_its_solid_tissue_fills_it() -> None:
    """A 10 mm nodule of -350 HU between two 5 mm slices (a small solid nodule averaged with the
    lung around it): its blob strength, about 100, is under BLOB_MIN_STRENGTH_BROAD, but it is
    alone in aerated lung and its solid tissue fills it, so BLOB_MIN_STRENGTH_ALONE (a ground-glass
    ball's strength) confirms it. Not the same ball 1 mm from the chest wall (its shell is not
    aerated), nor a 12 mm ground-glass haze around a 4 mm solid speck of the same strength (the
    solid tissue does not fill the ball: the phantoms' faint false blobs)."""
    from napari_ctreport.model import inference
    from napari_ctreport.model.blob import _distance_mm

    sp = (5.0, 0.7, 0.7)

    def ball(z: float, radius_mm: float, hu: float, *, haze_hu=None, wall_mm=None):
        ct = np.full((20, 120, 120), -850.0, dtype=np.float32)
        c = np.array([z, 60.0, 60.0])
        d = _distance_mm(ct.shape, c, np.asarray(sp))
        if haze_hu is not None:
            ct[d <= 6.0] = haze_hu
        ct[d <= radius_mm] = hu
        if wall_mm is not None:
            ct[:, :, : int(60 - (radius_mm + wall_mm) / sp[2])] = 40.0
        m = blob_measure(ct, spacing_zyx=sp, centre_index=c, min_hu=inference.BLOB_SOLID_HU)
        return m, _confirm(ct, c, spacing=sp)

    m, found = ball(10.5, 5.0, -350.0)
    assert inference.BLOB_MIN_STRENGTH_ALONE <= m.strength < inference.BLOB_MIN_STRENGTH_BROAD
    assert m.sigma_mm >= inference.BLOB_BROAD_SIGMA_MM and m.shell_solid == 0.0
    assert m.extent_mm >= m.sigma_mm * np.sqrt(3.0)
    assert found is not None
    m, found = ball(10.5, 5.0, -350.0, wall_mm=1.0)
    assert m.strength >= inference.BLOB_MIN_STRENGTH_ALONE
    assert m.shell_solid > inference.BLOB_MAX_SHELL_SOLID and found is None
    m, found = ball(10.0, 2.0, -200.0, haze_hu=-650.0)
    assert inference.BLOB_MIN_STRENGTH_ALONE <= m.strength < inference.BLOB_MIN_STRENGTH_BROAD
    assert m.sigma_mm >= inference.BLOB_BROAD_SIGMA_MM and m.shell_solid == 0.0
    assert m.extent_mm < m.sigma_mm * np.sqrt(3.0) and found is None


def test_a_wide_nodule_that_vessels_run_into_is_confirmed_on_the_ct() -> None:
    """A 12 mm nodule of -250 HU (as real ones are on average) with three vessels running into
    it: the solid tissue runs on through them (not "apart") and they take 6 % of the shell, over
    BLOB_MAX_SHELL_SOLID, while its strength is under BLOB_MIN_STRENGTH. At its wide scale the
    vessels' share is allowed up to BLOB_WIDE_MAX_SHELL (real nodules of 10-15 mm on thin-slice
    CT were lost this way); pressed against the chest wall, or a small ball on the same vessels,
    it is still turned down."""
    from napari_ctreport.model import inference

    ct, c = _ball_with_vessels(-250.0, radius_mm=6.0)
    m = blob_measure(ct, spacing_zyx=SPACING, centre_index=c, min_hu=inference.BLOB_SOLID_HU)
    assert m.sigma_mm >= inference.BLOB_WIDE_SIGMA_MM
    assert m.extent_mm > 15.0  # the extent test fails: tissue runs on along the vessels
    assert inference.BLOB_MAX_SHELL_SOLID < m.shell_solid <= inference.BLOB_WIDE_MAX_SHELL
    assert inference.BLOB_WIDE_MIN_STRENGTH <= m.strength < inference.BLOB_MIN_STRENGTH
    assert _confirm(ct, c) is not None
    walled, c = _ball_with_vessels(-250.0, radius_mm=6.0, wall=True)
    on_wall = blob_measure(walled, spacing_zyx=SPACING, centre_index=c, min_hu=-400.0)
    assert on_wall.shell_solid > inference.BLOB_WIDE_MAX_SHELL
    assert _confirm(walled, c) is None
    small, c = _ball_with_vessels(-250.0, radius_mm=3.0)
    assert blob_measure(small, spacing_zyx=SPACING, centre_index=c).sigma_mm < 3.0
    assert _confirm(small, c) is None


def test_a_peak_the_network_is_sure_of_needs_less_from_the_ct() -> None:
    """An 8 mm solid nodule with three vessels running into it: too small for the wide test, its
    shell 12 % solid (over BLOB_MAX_SHELL_SOLID) and the tissue running on, so a weak peak (heat
    under BLOB_SURE_HEAT) on it is turned down; a peak of BLOB_SURE_HEAT or more is confirmed by
    the round, clear ball. Not a fainter ball (-250 HU) on the same vessels, not a vessel, however
    hot, nor the ball against the chest wall."""
    from napari_ctreport.model import inference

    ct, c = _ball_with_vessels(30.0, radius_mm=4.0)
    m = blob_measure(ct, spacing_zyx=SPACING, centre_index=c, min_hu=inference.BLOB_SOLID_HU)
    assert m.sigma_mm < inference.BLOB_WIDE_SIGMA_MM and m.extent_mm > 15.0
    assert inference.BLOB_MAX_SHELL_SOLID < m.shell_solid <= inference.BLOB_SURE_MAX_SHELL
    assert m.ratio >= inference.BLOB_SURE_MIN_RATIO
    assert _confirm(ct, c, heat=inference.BLOB_SURE_HEAT - 0.02) is None
    assert _confirm(ct, c, heat=inference.BLOB_SURE_HEAT) is not None
    faint, c = _ball_with_vessels(-250.0, radius_mm=4.0)
    assert _confirm(faint, c, heat=0.9) is None
    tube = _lung(ct.shape)
    dz, dy, dx = _mm(ct.shape, c)
    tube[dz**2 + dx**2 <= 2.5**2] = 30.0  # a 5 mm vessel along y
    assert _confirm(tube, c, heat=0.9) is None
    walled, c = _ball_with_vessels(30.0, radius_mm=4.0, wall=True)
    assert _confirm(walled, c, heat=0.9) is None
