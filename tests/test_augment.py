"""Training patches turned in the axial plane: image, labels and targets turn together."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ctreport.model.train import _CaseData, _Target, _turned_patch, sample_patch

PATCH = np.array([16, 48, 48])


def _case(centre=(24, 70, 60), radii=(4.0, 4.0, 11.0)) -> _CaseData:
    """One ellipsoid lesion (long along x) in a 48 x 140 x 140 volume whose background is not
    the padding value, so padding in a patch would show."""
    shape = (48, 140, 140)
    g = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    inside = sum(((g[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
    image = np.where(inside, 0.5, -0.5).astype(np.float16)
    target = _Target(
        kind=0,
        side=0,
        zone=0,
        size_bin=0,
        centre=np.asarray(centre, float),
        size=2.0 * np.asarray(radii),
        label=1,
    )
    return _CaseData(
        name="ellipsoid",
        image=image,
        labels=inside.astype(np.uint8),
        valid=shape,
        targets=[target],
        spacing=np.array([2.0, 1.5, 1.5]),
    )


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, -45.0])
def test_a_turned_patch_keeps_image_labels_and_targets_together(angle):
    case = _case()
    # the patch centre 8 / 6 voxels off the lesion in y / x: a turn moves the lesion in the patch
    lo = np.array([24, 62, 54]) - PATCH // 2
    s = _turned_patch(
        case, PATCH, PATCH.copy(), lo, angle, np.random.default_rng(0), augment=False, pad=-1.0
    )
    img, lab = s["image"], s["labels"]
    assert img.shape == lab.shape == tuple(PATCH)
    assert img.min() > -0.6  # every corner sampled from the volume, none from the padding
    assert np.array_equal(img > 0, lab > 0) or np.mean((img > 0) != (lab > 0)) < 0.01
    ((t, centre, size),) = s["findings"]
    zz, yy, xx = np.nonzero(lab)
    np.testing.assert_allclose(centre, [zz.mean(), yy.mean(), xx.mean()], atol=1.0)
    extent = np.array([np.ptp(a) + 1 for a in (zz, yy, xx)], float)
    np.testing.assert_allclose(size, extent, atol=2.0)
    th = np.deg2rad(angle)
    long_axis = 1 if abs(np.sin(th)) > abs(np.cos(th)) else 2  # x turns towards y past 45 degrees
    if abs(abs(np.sin(th)) - abs(np.cos(th))) > 0.2:
        assert size[long_axis] > size[3 - long_axis]


def test_rotation_augmentation_turns_some_patches_and_keeps_targets_on_their_lesion():
    case = _case()
    rng = np.random.default_rng(3)
    turned = 0
    for _ in range(40):
        s = sample_patch(
            case, PATCH, rng, lesion_prob=1.0, augment=True, pad_value=-1.0, rotate_deg=40.0
        )
        for _t, centre, _size in s["findings"]:
            assert s["labels"][tuple(np.clip(np.round(centre).astype(int), 0, PATCH - 1))] == 1
        _zz, yy, xx = np.nonzero(s["labels"])
        if len(yy) > 20:  # the lesion's long axis: along x unless the patch was turned
            c = np.cov(np.stack([yy, xx]).astype(float))
            turned += abs(np.degrees(0.5 * np.arctan2(2 * c[0, 1], c[1, 1] - c[0, 0]))) > 5
    assert 8 <= turned <= 32  # about half


def test_no_rotation_draws_no_random_number():
    case = _case()
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    sa = sample_patch(case, PATCH, a, lesion_prob=1.0, augment=True, pad_value=-1.0)
    sb = sample_patch(case, PATCH, b, lesion_prob=1.0, augment=True, pad_value=-1.0, rotate_deg=0.0)
    assert np.array_equal(sa["image"], sb["image"]) and a.random() == b.random()
