"""The default model on real chest CT with real, labelled lung cancers.

pyradiomics' test cases (NSCLC-Radiomics collection, 5 mm slices), fetched by
``scripts/fetch_real_lesions.sh``: ``lung1`` holds a 16 mm solid nodule in the right upper lobe,
``lung2`` a 56 mm mass against the posterior chest wall of the left lower lobe. Neither CT was
used to build or tune the model before these tests were written; the rules they check
(:data:`~napari_ctreport.analysis.PLEURAL_MASS_MAX_HULL_AIR`,
:data:`~napari_ctreport.analysis.MASS_MIN_LUNG_CONTACT`) were measured on the synthetic
validation sets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_ctreport.analysis import analyze
from napari_ctreport.io.ct import load_ct
from napari_ctreport.report.measure import finding_from_mask
from napari_ctreport.synth.acquisition import low_dose


def _truth(real_lesions, name):
    """The labelled tumour as a finding, measured like the model's."""
    volume = load_ct(real_lesions / f"{name}_image.nrrd")
    label = load_ct(real_lesions / f"{name}_label.nrrd", label_map=True).array > 0
    return volume, finding_from_mask(label, volume=volume, id="T", kind="mass")


def _inside(point, box) -> bool:
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    return bool(np.all(np.asarray(point) >= np.minimum(lo, hi) - 1e-6)) and bool(
        np.all(np.asarray(point) <= np.maximum(lo, hi) + 1e-6)
    )


@pytest.mark.parametrize(
    ("name", "kinds", "side"),
    [
        ("lung1", {"solid nodule"}, "right"),
        # the network called this one a pleural effusion: a ball against the pleura, not a
        # crescent around the lung, so it is reported as a mass and measured on the CT
        ("lung2", {"mass"}, "left"),
    ],
)
def test_a_real_lung_cancer_is_found_alone_on_its_side_and_measured(
    real_lesions, name, kinds, side
):
    volume, truth = _truth(real_lesions, name)
    a = analyze(volume, device="cpu")
    # the tumour, and nothing else: no effusion, no mediastinal "mass"
    assert len(a.findings) == 1, [(f.kind, f.side, f.diameter_mm) for f in a.findings]
    f = a.findings[0]
    assert f.kind in kinds
    assert f.side == side == truth.side
    assert _inside(f.center_lps_mm, truth.bbox_lps_mm)
    assert _inside(truth.center_lps_mm, f.bbox_lps_mm)
    assert abs(f.diameter_mm - truth.diameter_mm) <= 0.15 * truth.diameter_mm
    assert "effusion" not in a.report.findings.replace("No pleural effusion", "")


@pytest.mark.parametrize(
    ("name", "kind", "noise_hu", "slice_mm"),
    [("lung1", "solid nodule", 60.0, 1.25), ("lung2", "mass", 40.0, None)],
)
def test_a_real_lung_cancer_on_a_low_dose_scan_is_found_alone(
    real_lesions, name, kind, noise_hu, slice_mm
):
    """The same CTs with the noise of a low-dose scan (the synthetic training cases had 10-25
    HU): lung1 on 1.25 mm slices with 60 HU of noise, lung2 on its 5 mm slices with 40 HU. The
    cancer is still found, measured within 15 %, and the noise makes no false finding."""
    volume, truth = _truth(real_lesions, name)
    noisy = low_dose(volume, noise_hu=noise_hu, slice_mm=slice_mm)
    a = analyze(noisy, device="cpu")
    assert [(f.kind, f.side) for f in a.findings] == [(kind, truth.side)], [
        (f.kind, f.side, round(f.diameter_mm, 1)) for f in a.findings
    ]
    f = a.findings[0]
    assert _inside(f.center_lps_mm, truth.bbox_lps_mm)
    assert abs(f.diameter_mm - truth.diameter_mm) <= 0.15 * truth.diameter_mm


def test_a_real_cancer_taken_for_fluid_on_thinner_slices_is_reported_as_a_mass(real_lesions):
    """lung2 on 2.5 mm slices: the network again takes its cancer against the posterior chest
    wall for fluid, and its mask curves along the pleura on the middle slices (hull air 0.116,
    over the 0.1 a fluid-density "effusion" must stay under). Its median attenuation is that of
    soft tissue (43 HU), so it is reported as a mass, measured within 15 %, not as a 72.5 mm
    effusion."""
    volume, truth = _truth(real_lesions, "lung2")
    thin = low_dose(volume, noise_hu=0.0, slice_mm=2.5)
    a = analyze(thin, device="cpu")
    assert [(f.kind, f.side) for f in a.findings] == [("mass", "left")], [
        (f.kind, f.side, round(f.diameter_mm, 1)) for f in a.findings
    ]
    f = a.findings[0]
    assert _inside(f.center_lps_mm, truth.bbox_lps_mm)
    assert abs(f.diameter_mm - truth.diameter_mm) <= 0.15 * truth.diameter_mm


def test_a_vessel_on_a_real_cancers_edge_is_not_a_second_nodule(real_lesions):
    """lung2 with the patient turned 6 degrees: the vessel running into the cancer's upper edge
    (mean -301 HU, scored 0.12) was reported as a 10.5 mm ground-glass nodule beside the 49 mm
    mass. A nodule within 2 mm of a mass reported before it is that mass's margin: it was set
    aside as the same lesion (session 29). Since session 36 the vessel test holds for ground glass
    too (SUBSOLID_VESSELS) and sets it aside first, as the vessel it is; either way the cancer
    alone is reported (the same-lesion rule is tested on its own in test_analysis)."""
    from scipy import ndimage as ndi

    from napari_ctreport.io.volume import CTVolume

    volume, truth = _truth(real_lesions, "lung2")
    arr = ndi.rotate(
        volume.array.astype(np.float32), 6.0, axes=(1, 2), reshape=False, order=1, cval=-1024
    )
    turned = CTVolume(
        array=np.rint(arr).astype(np.int16),
        spacing_zyx=volume.spacing_zyx,
        origin_lps=volume.origin_lps,
    )
    a = analyze(turned, device="cpu")
    assert [(f.kind, f.side) for f in a.findings] == [("mass", "left")], [
        (f.kind, f.side, round(f.diameter_mm, 1)) for f in a.findings
    ]
    assert [d.attributes["dropped_by"] for d in a.dropped if d.kind == "ground-glass nodule"] == [
        "vessel"
    ], [(d.kind, d.attributes["dropped_by"], round(d.score, 2)) for d in a.dropped]


def test_evaluate_on_the_imported_real_cancers(real_lesions, tmp_path, capsys):
    """``ctreport import`` turns each CT and its tumour label into a case folder, and
    ``ctreport evaluate`` scores the model on them: both found, nothing else reported."""
    from napari_ctreport.cli import main

    for name, kind in (("lung1", "solid nodule"), ("lung2", "mass")):
        rc = main(
            [
                "import",
                str(real_lesions / f"{name}_image.nrrd"),
                str(real_lesions / f"{name}_label.nrrd"),
                "--out",
                str(tmp_path / "cases" / name),
                "--kind",
                kind,
            ]
        )
        assert rc == 0, capsys.readouterr().err
    out = tmp_path / "metrics.json"
    rc = main(
        ["evaluate", "--data", str(tmp_path / "cases"), "--device", "cpu", "--json", str(out)]
    )
    assert rc == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    assert m["n_gt"] == 2
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["side_accuracy"] == 1.0 and m["kind_accuracy"] == 1.0
    assert m["size_error_median"] <= 0.15


@pytest.mark.parametrize("seed", [0, 2])
def test_a_real_lung_cancer_beside_an_effusion_on_its_side_is_still_found(real_lesions, seed):
    """lung2's cancer with a synthetic effusion inserted on its side (left): the network takes
    the cancer for fluid too, and its detection merged into the effusion, so that only an
    effusion was reported (seed 2), or one 81 mm "mass" of the two (seed 0). Both are reported
    now: the effusion and, split off it, the mass on the tumour. (The mass is measured short,
    43 mm for 56 mm, when the network's piece of it was small: seed 2.)"""
    from napari_ctreport.synth.generate import insert_lesions

    volume, truth = _truth(real_lesions, "lung2")
    case = insert_lesions(volume, rng=np.random.default_rng(seed), kinds=["pleural effusion"])
    assert [(f.kind, f.side) for f in case.findings] == [("pleural effusion", "left")]
    a = analyze(case.volume, device="cpu")
    got = sorted((f.kind, f.side) for f in a.findings)
    assert got == [("mass", "left"), ("pleural effusion", "left")], got
    mass = next(f for f in a.findings if f.kind == "mass")
    assert _inside(mass.center_lps_mm, truth.bbox_lps_mm)
    assert 0.7 * truth.diameter_mm <= mass.diameter_mm <= 1.15 * truth.diameter_mm
    assert "mass" in a.report.findings and "effusion" in a.report.findings


def _chest_cases(real_lesions, tmp_path):
    """``lung1`` and ``lung2`` as case folders (as ``scripts/eval_sets.py make`` imports them)."""
    from napari_ctreport.io.case import write_case
    from napari_ctreport.report.labelled import case_from_labels

    folders = []
    for name, kind in (("lung1", "solid nodule"), ("lung2", "mass")):
        case, volume, labels = case_from_labels(
            real_lesions / f"{name}_image.nrrd",
            real_lesions / f"{name}_label.nrrd",
            kinds=kind,
            case_id=name,
        )
        folders.append(write_case(case, tmp_path / name, volume=volume, labels=labels))
    return folders


def _realtx_case(real_lesions, tmp_path, index, *, cancer: bool = False):
    """Case ``index`` of the model card's realtx set (lung1's nodule moved and resized in the two
    real chest CTs; ``scripts/eval_sets.py make``'s seed), made alone; with ``cancer``, of its
    realtx2 set (lung2's cancer moved and resized)."""
    from napari_ctreport.io.case import read_case
    from napari_ctreport.synth.transplant import write_transplant_dataset

    folders = _chest_cases(real_lesions, tmp_path)
    made = (
        {"sources": folders[1:], "cases": 20, "seed": 4343, "scale": (0.25, 0.6)}
        if cancer
        else {"sources": folders[:1], "cases": 40, "seed": 4242}
    )
    (folder,) = write_transplant_dataset(
        tmp_path / ("realtx2" if cancer else "realtx"),
        backgrounds=folders,
        indices=[index],
        **made,
    )
    return read_case(folder)


def _found_alone(case):
    """Analyse ``case``: its analysis and the findings that hit its moved lesion (its last
    finding), having checked that there is one and that every finding hits a lesion of the case
    (the moved one or the background's own)."""
    from napari_ctreport.metrics import hits

    a = analyze(case.load_volume(), device="cpu")
    found = [f for f in a.findings if hits(f, case.findings[-1])]
    assert found, [(f.kind, f.diameter_mm) for f in a.findings]
    assert all(any(hits(f, g) for g in case.findings) for f in a.findings)
    return a, found


def test_a_real_nodule_moved_against_the_pleura_is_found(real_lesions, tmp_path):
    """lung1's real nodule (lobulated, 5 mm slices) moved against lung2's pleura (case 1 of the
    model card's realtx set): the rolling-ball search finds the bump, but its blob is weaker and
    flatter (strength 95, curvature ratio 0.33) than the generator's smooth nodules on the wall;
    with the session-19 limits (80, 0.3) it is reported, measured within 15 % (missed at 100, 0.4)."""
    case = _realtx_case(real_lesions, tmp_path, 1)
    assert case.provenance["generator"]["place"] == "pleura"
    moved = case.findings[-1]
    _, found = _found_alone(case)  # and nothing else but the background's own cancer
    assert abs(found[0].diameter_mm - moved.diameter_mm) <= 0.15 * moved.diameter_mm


def test_a_large_real_cancer_moved_into_the_lung_is_not_taken_for_a_vessel(real_lesions, tmp_path):
    """lung2's cancer shrunk to 32 mm and moved into lung1's right lower lobe (case 18 of the
    model card's realtx2 set). The network finds a 19 mm piece of it at 0.23. At the largest
    Hessian scale (6 mm) the rules' blob measure needs a patch of 18 mm half-width: on the old
    14 mm patch the Gaussian derivatives met the patch's reflected border and the shell around
    the piece was cut, its curvature ratio came out 0.49 (a tube: dropped as a vessel); on 18 mm
    it is 0.66 (:data:`~napari_ctreport.analysis.RULE_BLOB_PATCH_MM`)."""
    from napari_ctreport.metrics import hits

    case = _realtx_case(real_lesions, tmp_path, 18, cancer=True)
    moved = case.findings[-1]
    assert moved.diameter_mm > 30
    a = analyze(case.load_volume(), device="cpu")
    assert any(hits(f, moved) for f in a.findings), [
        (d.kind, d.diameter_mm, d.attributes["dropped_by"]) for d in a.dropped
    ]
    assert all(any(hits(f, g) for g in case.findings) for f in a.findings)


@pytest.mark.parametrize(("index", "rule"), [(5, "vessel"), (9, "faint")])
def test_a_large_real_cancer_touching_vessels_is_not_dropped(real_lesions, tmp_path, index, rule):
    """lung2's cancer resized to 26 and 30 mm (cases 5 and 9 of the model card's realtx2 set),
    lobulated and touching vessels. The network finds most of it (0.36 and 0.28); at its centre
    the rules' blob measure, on scales that fit balls up to about 20 mm, reads a tube (ratio
    0.48, dropped as a vessel) and a weak blob (strength 78, dropped as faint). With most of its
    border in aerated lung (contact 0.88 and 0.67) it is neither
    (:data:`~napari_ctreport.analysis.LARGE_NODULE_MIN_CONTACT`)."""
    from napari_ctreport import analysis
    from napari_ctreport.metrics import hits

    case = _realtx_case(real_lesions, tmp_path, index, cancer=True)
    moved = case.findings[-1]
    assert moved.diameter_mm > 25
    volume = case.load_volume()
    a = analyze(volume, device="cpu")
    found = [f for f in a.findings if hits(f, moved)]
    assert found, [(d.kind, d.diameter_mm, d.attributes["dropped_by"]) for d in a.dropped]
    f = found[0]
    assert f.kind == "solid nodule" and f.diameter_mm >= analysis.LARGE_NODULE_MM
    assert all(any(hits(f, g) for g in case.findings) for f in a.findings)
    # with less aerated lung around it, the rule named would have dropped it
    assert analysis._not_a_lung_lesion(f, volume, contact=0.5, ct_mask=False) == rule


def test_a_real_nodule_moved_into_thick_slice_lung_is_found_on_the_ct(real_lesions, tmp_path):
    """lung1's real nodule shrunk to 10 mm and moved into aerated lung on 5 mm slices (case 39 of
    the model card's realtx set). The network has no heat there (0.01). The CT's own candidates
    find it since session 26: its eroded core is one slice deep, which no longer reads as a flat
    vessel piece, and its blob (strength 129 at a 3 mm scale, isolated) passes the broad scale's
    bar (BLOB_MIN_STRENGTH_BROAD; a real nodule is less dense than a phantom's)."""
    case = _realtx_case(real_lesions, tmp_path, 39)
    assert 9.0 <= case.findings[-1].diameter_mm <= 11.5
    _, found = _found_alone(case)
    assert found[0].kind == "solid nodule"


def test_a_real_nodule_the_network_draws_half_as_wide_is_measured_whole(real_lesions, tmp_path):
    """lung1's nodule resized to 15.4 mm and moved to another place of lung1's CT (case 4 of the model
    card's realtx set). The network finds it but draws it 6.7 mm wide; refined one 2 mm step
    beyond that it measured 10.2 mm (-34 %). Followed on while it goes on all round, to where
    it ends (:data:`~napari_ctreport.report.refine.REFINE_MAX_GROW_MM`), it is measured within 15 %."""
    from napari_ctreport.metrics import hits

    case = _realtx_case(real_lesions, tmp_path, 4)
    moved = case.findings[-1]
    assert 14.5 <= moved.diameter_mm <= 16.5
    a, found = _found_alone(case)
    assert found[0].kind == "solid nodule"
    assert abs(found[0].diameter_mm - moved.diameter_mm) <= 0.15 * moved.diameter_mm
    # the background's own nodule keeps its size (16.3 mm against 16.5)
    own = [f for f in a.findings if hits(f, case.findings[0])]
    assert own and abs(own[0].diameter_mm - case.findings[0].diameter_mm) <= 0.05 * 16.5


def test_a_real_cancer_and_the_effusion_beside_it_drawn_by_the_reader_are_read_apart(
    real_lesions,
):
    """lung2's cancer against the posterior chest wall with a synthetic effusion on its side
    (as realchest makes them): a rectangle drawn around each on its middle slice (the dock's
    box) is read from the CT as what it is. The effusion's fluid lies around the lung as a
    crescent (it was read as a mass); the cancer is a ball whose rim the fluid-following only
    grazes."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.report.writer import Report
    from napari_ctreport.synth.generate import insert_lesions

    volume, _ = _truth(real_lesions, "lung2")
    cancer = load_ct(real_lesions / "lung2_label.nrrd", label_map=True).array > 0
    case = insert_lesions(volume, rng=np.random.default_rng(2), kinds=["pleural effusion"])
    (eff,) = case.findings
    session = ReviewSession(
        volume=case.volume,
        findings=[],
        labels=np.zeros(volume.shape, dtype=np.uint16),
        draft=Report(findings="", impression=""),
    )
    for want, truth in (("pleural effusion", case.labels == eff.label), ("mass", cancer)):
        idx = np.argwhere(truth)
        z = int(np.median(idx[:, 0]))
        on = idx[idx[:, 0] == z][:, 1:]
        added = session.add_rectangle(z, on.min(axis=0) - 0.5, on.max(axis=0) + 0.5)
        assert added.kind == want and added.attributes["kind_from_ct"], (want, added.kind)
        assert added.side == "left"
        session.delete_added(added.id)
