"""The review session (no Qt): edits, sentences, diff, atomic autosave, restore after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.analysis import Analysis
from napari_ctreport.report.writer import describe_finding, write_report
from napari_ctreport.synth import generate_case

SEED, SHAPE = 5, (40, 96, 96)  # three findings on a small grid


def _analysis(case, attention=None, attention_per_finding=None) -> Analysis:
    """The case's ground truth in the shape of a model run (status ``proposed``)."""
    return Analysis(
        volume_info={},
        findings=case.findings,
        report=write_report(case.findings),
        attention=attention,
        attention_per_finding=attention_per_finding or {},
        labels=case.labels,
        model_info={"name": "ground truth", "version": "0", "sha256": ""},
        device="cpu",
        timings_s={},
    )


@pytest.fixture(scope="module")
def case():
    return generate_case(seed=SEED, shape=SHAPE)


@pytest.fixture
def session(case, tmp_path):
    from napari_ctreport._napari.session import ReviewSession

    return ReviewSession.from_analysis(_analysis(case), case.volume, autosave_root=tmp_path)


def test_a_review_keeps_the_note_on_how_much_lung_was_scanned(case, tmp_path):
    """The analysis found only part of the lungs in the scan (``lung_ml`` under
    ``PARTIAL_LUNG_ML``): the review's report says so after every edit, and so does the review
    restored from its autosave."""
    from dataclasses import replace

    from napari_ctreport._napari.session import ReviewSession

    a = replace(_analysis(case), volume_info={"lung_ml": 143.0})
    s = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path)
    assert s.lung_ml == 143.0
    note = "Only part of the lungs is in the scanned volume (143 ml of lung)"
    assert note in s.report().findings and "143 ml of lung" in s.report().impression
    s.set_status(s.findings[0].id, "rejected")
    assert note in s.report().findings
    s.save()
    back = ReviewSession.restore(case.volume, root=tmp_path)
    assert back.lung_ml == 143.0 and note in back.report().findings
    whole = ReviewSession.from_analysis(_analysis(case), case.volume, autosave_root=None)
    assert whole.lung_ml is None and "lungs" not in whole.report().findings


def test_reject_keeps_finding_but_drops_sentence(session):
    fid = session.findings[0].id
    text = session.sentences[fid]
    session.set_status(fid, "rejected")
    assert session.finding(fid).status == "rejected"
    assert text not in session.report().findings
    assert all(s.finding_id != fid for s in session.report().sentences)
    assert len(session.findings) == 3  # kept for retraining
    assert "-" + text in session.diff()
    assert session.edit_log[-1].action == "status"


def test_disagreements_name_wrong_sentences_and_findings_left_out(session):
    """Before export the reader is told where the text and the table disagree: a typed sentence
    that adds a second nodule, and a finding whose sentence was typed away (the impression
    alone, "Two pulmonary nodules", does not say where it is)."""
    assert session.disagreements() == []
    a, b = session.findings[0], session.findings[1]
    typed = f"{session.sentences[a.id][:-1]} and a 31 mm mass in the {a.side} {a.zone} zone."
    session.set_sentence(a.id, typed)
    session.set_sentence(b.id, "")
    session.set_impression("See findings.")
    wrong = session.disagreements()
    assert wrong == [typed, f"Not in the report: {b.id} {b.kind}, {b.side} {b.zone} zone"]
    session.set_status(b.id, "rejected")
    assert session.disagreements() == [typed]


def test_hand_edit_survives_other_changes_and_regenerates_on_demand(session):
    a, b = session.findings[0].id, session.findings[1].id
    session.set_sentence(a, "Reader's own words about this nodule.")
    session.set_kind(a, "mass")  # attribute change of the hand-edited finding itself
    session.set_kind(b, "ground-glass nodule")
    assert session.sentences[a] == "Reader's own words about this nodule."
    assert "ground-glass nodule" in session.sentences[b]
    assert session.finding(b).status == "edited"
    report = session.report()
    assert "Reader's own words about this nodule." in report.findings
    assert session.regenerate_sentence(a) == describe_finding(session.finding(a))
    assert "mass" in session.sentences[a]


def test_move_box_moves_mask_and_remeasures(session):
    f = session.findings[1]
    mask = session.mask(f.id)
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    before_center = np.array(f.center_lps_mm)
    n_before = int(mask.sum())
    session.move_box(f.id, lo + (0, 0, 3), hi + (0, 0, 3))  # 3 voxels towards patient's left
    moved = session.mask(f.id)
    assert int(moved.sum()) == n_before
    np.testing.assert_allclose(np.argwhere(moved).mean(axis=0) - idx.mean(axis=0), (0, 0, 3))
    expected_x = session.volume.index_to_lps(np.argwhere(moved).mean(axis=0))[0]
    assert f.center_lps_mm[0] == pytest.approx(expected_x)
    assert f.center_lps_mm[0] > before_center[0]
    assert f.status == "edited"
    # shrink the box: the mask is cut to it
    session.move_box(f.id, lo + (0, 0, 3), (hi + lo) / 2 + (0, 0, 3))
    assert 0 < session.mask(f.id).sum() < n_before


def test_an_in_plane_move_keeps_every_voxel_of_the_mask(session):
    """A finding's box as drawn (its LPS box, rounded to 0.01 mm, back on the grid) holds every
    slice of its mask, and moving it in-plane keeps the whole mask (it used to lose the slices
    and columns whose box corner had rounded a hair inwards)."""
    from napari_ctreport._napari.layers import box_rectangles, finding_box_index

    for f in session.findings:
        mask = session.mask(f.id)
        n, zs = int(mask.sum()), set(np.argwhere(mask)[:, 0])
        lo, hi = finding_box_index(f, session.volume)
        rects = box_rectangles(lo, hi, session.volume.shape, planes=(0,))
        assert {int(r[0, 0]) for r in rects} == zs
        session.move_box(f.id, lo + (0, 2, -2), hi + (0, 2, -2))
        assert int(session.mask(f.id).sum()) == n
        assert {int(r[0, 0]) for r in rects} == set(np.argwhere(session.mask(f.id))[:, 0])


def test_add_box_makes_added_finding_with_sentence(session):
    vol = session.volume
    # a box around a bright (soft tissue) spot that no finding owns
    free = (vol.array > 0) & (session.labels == 0)
    z, y, x = np.argwhere(free)[len(np.argwhere(free)) // 2]
    f = session.add_box((z - 1.5, y - 3.5, x - 3.5), (z + 1.5, y + 3.5, x + 3.5))
    assert f.status == "added" and f.score == 1.0 and f.id == "F4"
    assert (session.labels == f.label).sum() > 0
    assert f.diameter_mm > 0
    assert session.sentences[f.id] in session.report().findings


def test_a_rectangle_drawn_on_a_slice_adds_the_lesion_on_that_slice(case, tmp_path):
    """Index coordinates are napari's (voxel i spans [i - 0.5, i + 0.5]): a rectangle drawn
    around a nodule's voxels on its slice gets those voxels, not the next slice's (7.9 mm
    slices here; the old half-voxel shift put a small box one slice further)."""
    from napari_ctreport._napari.session import ReviewSession

    truth = case.findings[2]
    labels = case.labels.copy()
    labels[labels == truth.label] = 0
    a = _analysis(case)
    a.findings, a.labels = case.findings[:2], labels
    a.report = write_report(a.findings)
    session = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path)
    idx = np.argwhere(case.labels == truth.label)
    (z,) = set(idx[:, 0])
    lo_yx = idx[:, 1:].min(axis=0) - 1.5  # one voxel of margin around the labelled voxels
    hi_yx = idx[:, 1:].max(axis=0) + 1.5
    f = session.add_rectangle(int(z), lo_yx, hi_yx)
    got = np.argwhere(session.mask(f.id))
    assert set(got[:, 0]) == {z}
    win = case.volume.array[z, int(lo_yx[0] + 0.5) : int(hi_yx[0] + 0.5), int(lo_yx[1] + 0.5) :]
    dense = np.argwhere(win[:, : int(hi_yx[1] - lo_yx[1])] >= -650)
    assert len(got) == len(dense) >= len(idx)  # the nodule's dense voxels in the rectangle
    assert np.linalg.norm(np.subtract(f.center_lps_mm, truth.center_lps_mm)) < 0.1


def test_a_set_aside_candidate_can_be_added_back_and_survives_a_restart(case, tmp_path):
    """A nodule a rule set aside (``Analysis.dropped``) is listed, autosaved, and added back as
    a finding measured on the CT; the candidate then leaves the list."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.report.findings import Finding

    truth = case.findings[2]  # the 8.4 mm solid nodule
    assert truth.kind == "solid nodule"
    cand = Finding.from_dict({**truth.to_dict(), "id": "D1", "score": 0.23})
    cand.attributes["dropped_by"] = "vessel"
    labels = case.labels.copy()
    labels[labels == truth.label] = 0  # not among the findings: no label of its own
    a = _analysis(case)
    a.findings, a.labels, a.dropped = case.findings[:2], labels, [cand]
    a.report = write_report(a.findings)
    session = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path)
    assert [c.id for c in session.set_aside] == ["D1"]
    assert all(f.id != "D1" for f in session.findings)
    assert len(session.report().sentences) == len(a.report.sentences)  # not reported
    back = ReviewSession.restore(case.volume, root=tmp_path)
    assert [c.to_dict() for c in back.set_aside] == [cand.to_dict()]
    with pytest.raises(KeyError):
        back.add_set_aside("D9")

    f = back.add_set_aside("D1")
    assert f.id == "F3" and f.kind == "solid nodule" and f.status == "added"
    assert f.side == truth.side == "left"
    assert f.attributes["set_aside_id"] == "D1" and f.attributes["dropped_by"] == "vessel"
    assert f.attributes["model_score"] == 0.23
    # measured afresh on the CT: where the nodule is, about its size
    assert np.linalg.norm(np.subtract(f.center_lps_mm, truth.center_lps_mm)) < 1.5
    assert f.diameter_mm == pytest.approx(truth.diameter_mm, rel=0.25)
    mask = back.mask(f.id)
    truth_mask = case.labels == truth.label
    assert (mask & truth_mask).sum() > 0.7 * truth_mask.sum()
    assert back.set_aside == [] and back.sentences[f.id] in back.report().findings
    assert back.edit_log[-1].action == "add" and back.edit_log[-1].before["id"] == "D1"
    again = ReviewSession.restore(case.volume, root=tmp_path)
    assert again.set_aside == [] and again.finding("F3").attributes["set_aside_id"] == "D1"
    # its box deleted: set aside again, to be brought in again (it was lost)
    again.delete_added("F3")
    assert [c.to_dict() for c in again.set_aside] == [cand.to_dict()]
    assert again.add_set_aside("D1").attributes["set_aside_id"] == "D1"
    # a candidate whose box holds no free voxel stays in the list
    back.set_aside = [cand]
    back.labels[back.mask(f.id) | (back.labels == 0)] = 99
    with pytest.raises(ValueError):
        back.add_set_aside("D1")
    assert [c.id for c in back.set_aside] == ["D1"]


def test_paint_remeasures(session):
    f = session.findings[0]
    before = f.volume_ml
    m = session.mask(f.id)
    session.labels[m & (np.cumsum(m.ravel()).reshape(m.shape) % 2 == 0)] = 0  # erase half
    changed = session.mask_changed([f.id])
    assert changed and f.volume_ml < before
    session.labels[session.mask(f.id)] = 0
    session.mask_changed([f.id])
    assert f.status == "rejected"
    # an erased finding cannot be accepted again (its measurements are of a region that is
    # gone, and its export failed validation: "no region for finding label"); nor can a status
    # outside the lexicon be set, and neither attempt changes anything
    n_log, other = len(session.edit_log), session.findings[1].status
    with pytest.raises(ValueError, match="no region left"):
        session.set_status(f.id, "accepted")
    with pytest.raises(ValueError, match="unknown status"):
        session.set_status(session.findings[1].id, "maybe")
    assert f.status == "rejected" and session.findings[1].status == other
    assert len(session.edit_log) == n_log


def test_a_box_moved_past_the_far_end_keeps_the_edge_voxels(session):
    """A box dragged beyond the far end of the scan keeps the last slice, as one dragged beyond
    the near end keeps the first (it was cut to nothing there: the finding's voxels were
    wiped, then measuring raised, and its export failed); a box moved wholly onto another
    finding is refused before anything changes."""
    shape = np.asarray(session.labels.shape)
    f = session.findings[0]
    session.move_box(f.id, shape + 10, shape + 20)
    idx = np.argwhere(session.mask(f.id))
    assert idx.size and (idx.max(axis=0) == shape - 1).all() and f.volume_ml > 0
    session.move_box(f.id, (-20, -20, -20), (-10, -10, -10))
    idx = np.argwhere(session.mask(f.id))
    assert idx.size and (idx.min(axis=0) == 0).all()
    # onto another finding's voxels alone: refused, nothing changes
    g = session.findings[1]
    session.labels[session.mask(f.id)] = 0
    session.labels[0, 0, 0] = f.label  # one voxel of its own, in a corner
    session.mask_changed([f.id])
    session.labels[(session.labels == 0)] = g.label  # every free voxel is g's
    before = session.labels.copy()
    with pytest.raises(ValueError, match="none of its own voxels"):
        session.move_box(f.id, (10, 10, 10), (14, 14, 14))
    assert np.array_equal(session.labels, before)


def test_a_lesion_painted_with_a_new_label_is_added(session):
    """An annotator paints a missed lesion with napari's "new label" (a value no finding has):
    it becomes an added finding measured on exactly the painted voxels, in the report and the
    edit log, and it survives a restore."""
    from napari_ctreport._napari.session import ReviewSession

    vol = session.volume
    sp = np.asarray(vol.spacing_zyx)
    zz, yy, xx = np.indices(vol.shape)
    free = np.argwhere((session.labels == 0) & (vol.array > -500))
    c = free[len(free) // 2]
    ball = ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2
    ball = (ball <= 5.0**2) & (session.labels == 0)
    value = int(session.labels.max()) + 7
    session.labels[ball] = value  # napari's paint brush writes into the same array
    f = session.add_painted(value)
    assert f.status == "added" and f.score == 1.0 and f.label == value and f.id == "F4"
    assert np.array_equal(session.mask(f.id), ball)
    assert 8.0 <= f.diameter_mm <= 10.0 + 2 * sp[1:].max()  # a 10 mm ball, in whole voxels
    assert session.sentences[f.id] in session.report().findings
    assert session.edit_log[-1].action == "add" and session.edit_log[-1].finding_id == f.id
    with pytest.raises(ValueError, match="not a new one"):
        session.add_painted(value)  # now F4's
    with pytest.raises(ValueError, match="no voxel"):
        session.add_painted(value + 1)
    back = ReviewSession.restore(vol, folder=session.folder)
    assert back.finding(f.id).label == value and np.array_equal(back.mask(f.id), ball)
    # a lesion larger than a nodule (over 30 mm) is added as the lexicon names it: a mass
    big = (zz - c[0]) ** 2 * sp[0] ** 2 + ((yy - c[1]) ** 2 + (xx - 20) ** 2) * sp[1] ** 2
    big = (big <= 18.0**2) & (session.labels == 0)
    session.labels[big] = value + 1
    m = session.add_painted(value + 1)
    assert m.diameter_mm > 30.0 and m.kind == "mass"
    assert (
        session.sentences[m.id].startswith(f"A {m.diameter_mm:.0f}")
        and "mass" in session.sentences[m.id]
    )


def _attention(case):
    """Attention maps shaped as :func:`~napari_ctreport.analysis.analyze` makes them: a float16
    map on the CT grid (max 1, zero far from the findings) and a coarse map per finding."""
    from napari_ctreport.analysis import FindingAttention

    rng = np.random.default_rng(0)
    shape = case.volume.shape
    att = np.zeros(shape, dtype=np.float16)
    zz, yy, xx = np.indices(shape, sparse=True)
    per = {}
    for f in case.findings:
        c = np.argwhere(case.labels == f.label).mean(axis=0)
        g = np.exp(-(((zz - c[0]) / 3) ** 2 + ((yy - c[1]) / 5) ** 2 + ((xx - c[2]) / 5) ** 2))
        g[g < 0.01] = 0
        np.maximum(att, g.astype(np.float16), out=att)
        w = rng.random((4, 6, 6)).astype(np.float32)
        lo = tuple(float(v) for v in c - (2, 3, 3))
        per[f.id] = FindingAttention(
            weights=w / w.max(),
            index_lo_zyx=lo,
            index_hi_zyx=tuple(float(v) for v in c + (2, 3, 3)),
            scale_zyx_mm=(1.0, 0.5, 0.5),
            translate_zyx_mm=(lo[0] + 0.5, lo[1] + 0.25, lo[2] + 0.25),
        )
    return att, per


def test_autosave_roundtrip(case, tmp_path):
    from napari_ctreport._napari.session import ATTENTION_FILE, ReviewSession

    att, per = _attention(case)
    session = ReviewSession.from_analysis(
        _analysis(case, att, per), case.volume, autosave_root=tmp_path
    )
    folder = ReviewSession.find_autosave(case.volume, root=tmp_path)
    assert folder is not None
    att_file = folder / ATTENTION_FILE
    written = att_file.stat().st_mtime_ns
    assert att_file.stat().st_size < att.nbytes / 20  # cropped, quantised, compressed
    a = session.findings[0].id
    session.set_sentence(a, "Edited text.")
    session.set_status(session.findings[1].id, "accepted")
    session.set_impression("1. My impression.")
    folder = ReviewSession.find_autosave(case.volume, root=tmp_path)
    assert folder is not None and (folder / "labels.npz").is_file()
    assert not list(folder.glob("*.tmp"))
    back = ReviewSession.restore(case.volume, root=tmp_path)
    assert back.sentences[a] == "Edited text." and a in back.hand_edited
    assert back.finding(session.findings[1].id).status == "accepted"
    assert back.report().impression == "1. My impression."
    np.testing.assert_array_equal(back.labels, session.labels)
    assert [r.action for r in back.edit_log] == [r.action for r in session.edit_log]
    assert back.draft.to_dict() == session.draft.to_dict()
    # attention maps: written once (not on every edit), back within the uint8 quantisation step
    assert att_file.stat().st_mtime_ns == written
    assert back.attention is not None and back.attention.shape == case.volume.shape
    np.testing.assert_allclose(
        back.attention.astype(np.float32), att.astype(np.float32), atol=0.5 / 255 + 1e-3
    )
    assert (back.attention == 0).sum() == (att == 0).sum()
    assert set(back.attention_per_finding) == set(per)
    for fid, fa in per.items():
        got = back.attention_per_finding[fid]
        np.testing.assert_allclose(got.weights, fa.weights, rtol=1e-3)
        assert got.translate_zyx_mm == fa.translate_zyx_mm
        assert got.index_hi_zyx == fa.index_hi_zyx and got.scale_zyx_mm == fa.scale_zyx_mm
    # an autosave from before attention was saved still restores, without attention
    att_file.unlink()
    older = ReviewSession.restore(case.volume, root=tmp_path)
    assert older.attention is None and older.attention_per_finding == {}


def test_study_key_is_stable_and_distinct(case):
    from napari_ctreport._napari.session import study_key

    again = generate_case(seed=SEED, shape=SHAPE)
    other = generate_case(seed=SEED + 1, shape=SHAPE)
    assert study_key(case.volume) == study_key(again.volume)
    assert study_key(case.volume) != study_key(other.volume)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_session import _analysis, SEED, SHAPE
    from napari_ctreport.synth import generate_case
    from napari_ctreport._napari.session import ReviewSession

    case = generate_case(seed=SEED, shape=SHAPE)
    s = ReviewSession.from_analysis(_analysis(case), case.volume, autosave_root=Path({root!r}))
    f1, f2, f3 = (f.id for f in s.findings)
    s.set_status(f2, "rejected")
    s.set_kind(f3, "mass")
    s.move_box(f1, *[tuple(v) for v in ({lo}, {hi})])
    print("EDITS", len(s.edit_log), flush=True)
    i = 0
    while True:  # keep typing until killed
        i += 1
        s.set_sentence(f1, f"typed {{i}}")
        print("TYPED", i, flush=True)
    """
)


def test_restore_after_sigkill(case, tmp_path):
    from napari_ctreport._napari.session import ReviewSession

    f1 = case.findings[0]
    idx = np.argwhere(case.labels == f1.label)
    lo = tuple(float(v) for v in idx.min(axis=0) - 0.5 + (0, 2, 0))
    hi = tuple(float(v) for v in idx.max(axis=0) + 0.5 + (0, 2, 0))
    code = _CHILD.format(tests=str(Path(__file__).parent), root=str(tmp_path), lo=lo, hi=hi)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    typed = 0
    deadline = time.monotonic() + 120
    try:
        assert proc.stdout is not None
        while typed < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child died: {proc.stderr.read() if proc.stderr else ''}")
            if line.startswith("TYPED"):
                typed = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # mid-review, possibly mid-save
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    folder = ReviewSession.find_autosave(case.volume, root=tmp_path)
    assert folder is not None
    json.loads((folder / "session.json").read_text())  # never torn
    back = ReviewSession.restore(case.volume, root=tmp_path)
    ids = [f.id for f in case.findings]
    assert back.finding(ids[1]).status == "rejected"
    assert back.finding(ids[2]).kind == "mass"
    assert back.finding(ids[0]).status == "edited"
    moved = back.mask(ids[0])
    assert moved.sum() == (case.labels == f1.label).sum()
    assert np.argwhere(moved).min(axis=0)[1] == idx.min(axis=0)[1] + 2
    n = int(back.sentences[ids[0]].split()[1])
    assert n >= typed  # every edit acknowledged before the kill is there
    assert ids[1] not in {s.finding_id for s in back.report().sentences}


_NO_TORCH_CHILD = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport._napari.session import AnalysisCancelled, run_analysis

    volume = CTVolume(np.full((8, 16, 16), -1000, np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    stop = threading.Event()
    stop.set()
    try:
        run_analysis(volume, device="cpu", cancel=stop)
        outcome = "finished"
    except AnalysisCancelled:
        outcome = "cancelled"
    except RuntimeError as e:
        outcome = f"failed: {e}"
    print("OUTCOME", outcome)
    print("TORCH", "torch" in sys.modules)
    """
)


def test_run_analysis_keeps_torch_out_of_the_calling_process():
    """The viewer's process never imports torch to run the model in its child process (loading
    torch's libraries holds the GIL ~0.5 s: the viewer froze at every Run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(ln.split(" ", 1) for ln in out.stdout.splitlines() if " " in ln)
    assert lines["OUTCOME"] == "cancelled"
    assert lines["TORCH"] == "False"


def test_a_case_folder_is_reviewed_with_its_own_text(tmp_path):
    """A case folder opened for review (``ReviewSession.from_case``) keeps its report as it
    stands. What its edit log says the reader typed (F1's sentence, a line of no finding, the
    impression) is the reader's own and survives an edit (a rejection), which still takes the
    rejected finding's sentence out; any other text is a writer's (F2's, in an older wording)
    and is rewritten when its finding changes. The draft kept for the "Changes" view is the
    case as opened."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.io.case import iter_cases, read_case
    from napari_ctreport.synth import write_dataset

    write_dataset(
        tmp_path / "cases", cases=1, seed=900129, shape=(40, 112, 112), formats=("nifti",)
    )
    case = read_case(next(iter(iter_cases(tmp_path / "cases"))))
    f1, f2 = case.findings[:2]
    own = "Mild centrilobular emphysema."
    older = f"An older writer's words on {f2.kind}."  # no edit record: not the reader's
    case.report["sentences"] = [
        {"text": "Reader's words on F1.", "finding_id": f1.id, "section": "findings"},
        {"text": older, "finding_id": f2.id, "section": "findings"},
        {"text": own, "finding_id": None, "section": "findings"},
    ]
    case.report["impression"] = "Typed impression."
    earlier = {"time": "2026-01-02T03:04:05.000+00:00", "action": "status", "finding_id": f1.id}
    typed = [
        {"time": earlier["time"], "action": "sentence", "finding_id": f1.id, "after": "x"},
        {"time": earlier["time"], "action": "free text", "after": [own]},
        {"time": earlier["time"], "action": "impression", "after": "Typed impression."},
    ]
    case.provenance["edit_log"] = [{**earlier, "before": "proposed", "after": "accepted"}, {}]
    case.provenance["edit_log"] += typed
    volume = case.load_volume()
    s = ReviewSession.from_case(case, volume, autosave_root=tmp_path / "autosave")
    assert s.hand_edited == {f1.id} and s.sentences[f1.id] == "Reader's words on F1."
    assert s.sentences[f2.id] == older  # as the case has it, until an edit rewrites it
    assert s.extra_lines == [own] and s.impression_override == "Typed impression."
    # the case's own edit log goes on (an unreadable entry left out), then "case opened"
    assert [e.action for e in s.edit_log] == [
        "status",
        "sentence",
        "free text",
        "impression",
        "case opened",
    ]
    assert s.edit_log[0].to_case_dict()["time"] == earlier["time"]
    np.testing.assert_array_equal(s.labels, case.load_labels(volume))
    # an edit rewrites the writer's sentence (the reader's own stays)
    s.set_location(f2.id, side="left" if f2.side != "left" else "right")
    assert s.sentences[f2.id] == describe_finding(s.finding(f2.id)) != older
    s.set_status(f2.id, "rejected")
    text = s.report().findings
    assert "Reader's words on F1." in text and own in text
    assert describe_finding(f2) not in text
    assert s.report().impression == "Typed impression."
    assert s.draft.impression == "Typed impression."
    restored = ReviewSession.restore(volume, root=tmp_path / "autosave")
    assert restored.finding(f2.id).status == "rejected" and restored.extra_lines == [own]


def test_an_older_writers_impression_is_not_taken_for_the_readers(tmp_path):
    """A case whose impression an older writer wrote (no "impression" record in its edit log)
    opens with the generated impression, which follows edits: it was frozen as the reader's
    and kept describing a mass the reader rejected (realchest case_0002). A sentence and an
    impression typed and then given back to the writer are not the reader's either."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.io.case import iter_cases, read_case
    from napari_ctreport.synth import write_dataset

    write_dataset(
        tmp_path / "cases", cases=1, seed=900129, shape=(40, 112, 112), formats=("nifti",)
    )
    case = read_case(next(iter(iter_cases(tmp_path / "cases"))))
    f1 = case.findings[0]
    case.report["impression"] = f"An older writer's impression on the {f1.kind}."
    t = "2026-01-02T03:04:05+00:00"
    case.provenance["edit_log"] = [
        {"time": t, "action": "sentence", "finding_id": f1.id, "after": "typed"},
        {"time": t, "action": "regenerate sentence", "finding_id": f1.id, "after": "x"},
        {"time": t, "action": "impression", "after": "typed"},
        {"time": t, "action": "impression", "after": None},
    ]
    s = ReviewSession.from_case(case, case.load_volume(), autosave_root=None)
    assert s.impression_override is None and s.hand_edited == set()
    for f in list(s.active_findings()):
        s.set_status(f.id, "rejected")
    assert "older writer" not in s.report().impression


def test_a_reopened_case_keeps_how_much_lung_was_scanned(session, tmp_path):
    """A review of a scan with part of the lungs, exported and opened again from its case
    folder, keeps ``lung_ml``: its report is the writer's (the coverage note is not taken for
    the reader's own line, nor its impression for a typed one) and follows edits as the first
    review's does (it was frozen: rejecting every nodule left the Fleischner advice)."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.export import export_case
    from napari_ctreport.io.case import read_case

    session.lung_ml = 143.0
    assert "Only part of the lungs" in session.report().findings
    res = export_case(
        volume=session.volume,
        findings=list(session.findings),
        labels=session.labels.copy(),
        report=session.report(),
        out_dir=tmp_path / "export",
        original=session.original(),
        edit_log=[e.to_case_dict() for e in session.edit_log],
        model_info=dict(session.model_info),
        lung_ml=session.lung_ml,
    )
    case = read_case(res.folder)
    again = ReviewSession.from_case(case, session.volume, autosave_root=tmp_path / "again")
    assert again.lung_ml == 143.0
    assert again.extra_lines == [] and again.impression_override is None
    assert again.report().findings == session.report().findings
    for s in (session, again):
        for f in list(s.active_findings()):
            s.set_status(f.id, "rejected")
    assert again.report().impression == session.report().impression
    assert "Fleischner" not in again.report().impression


def test_a_reopened_case_whose_draft_found_nothing_keeps_that_draft(tmp_path):
    """A draft with no finding, to which the reader added one, exported and opened again: the
    model's draft is still the empty one (it became the reader's finding, so the "Changes" view
    and an erased mask treated the reader's finding as the model's)."""
    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.export import export_case
    from napari_ctreport.io.case import read_case
    from napari_ctreport.io.ct import load_ct
    from napari_ctreport.io.volume import CTVolume

    shape = (20, 64, 64)
    arr = np.full(shape, -850.0, np.float32)
    arr[8:12, 28:36, 28:36] = 40.0
    vol = CTVolume(array=arr, spacing_zyx=(2.0, 1.0, 1.0), origin_lps=(0.0, 0.0, 0.0))
    s = ReviewSession.from_analysis(_empty_analysis(shape), vol, autosave_root=None)
    added = s.add_box(np.array([7.5, 26.5, 26.5]), np.array([12.5, 37.5, 37.5]))
    res = export_case(
        volume=vol,
        findings=list(s.findings),
        labels=s.labels.copy(),
        report=s.report(),
        out_dir=tmp_path / "out",
        original=s.original(),
        edit_log=[e.to_case_dict() for e in s.edit_log],
        model_info=dict(s.model_info),
        deidentify=False,
    )
    case = read_case(res.folder)
    assert case.original["findings"] == []
    again = ReviewSession.from_case(case, load_ct(res.folder), autosave_root=None)
    assert again.original()["findings"] == [] and again.finding(added.id).status == "added"


def _empty_analysis(shape) -> Analysis:
    """An analysis that found nothing, on a volume of ``shape``: a review to add findings to."""
    return Analysis(
        volume_info={},
        findings=[],
        report=write_report([]),
        attention=None,
        attention_per_finding={},
        labels=np.zeros(shape, dtype=np.int32),
        model_info={"name": "none", "version": "0", "sha256": ""},
        device="cpu",
        timings_s={},
    )


def test_a_box_drawn_round_a_small_nodule_measures_the_nodule():
    """A box drawn round an 8 mm solid nodule on 1.5 mm pixels and 2.5 mm slices (blurred as a
    scanner does): its region is cut back to the nodule's half maximum, so the nodule measures
    about 8 mm. Everything denser than -650 HU in the box took in the partial volume of its
    edge (8.7 mm here; on real CT a 6.2 mm nodule measured 10.1 mm, a Fleischner category up)."""
    from scipy import ndimage as ndi

    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.io.volume import CTVolume

    sp = np.array([2.5, 1.5, 1.5])
    shape = (24, 80, 80)
    zz, yy, xx = np.indices(shape, sparse=True)
    c = np.array([12, 40, 40])
    ball = ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + (
        (xx - c[2]) * sp[2]
    ) ** 2 <= 4.0**2
    arr = np.full(shape, -850.0, np.float32)
    arr[ball] = 40.0
    arr = ndi.gaussian_filter(arr, sigma=0.8 / sp)
    arr += np.random.default_rng(1).normal(0, 15, shape).astype(np.float32)
    vol = CTVolume(array=arr, spacing_zyx=tuple(sp), origin_lps=(0.0, 0.0, 0.0))
    empty = _empty_analysis(shape)
    s = ReviewSession.from_analysis(empty, vol, autosave_root=None)
    half = 4.0 / sp + 1.0  # a voxel's margin all round
    f = s.add_box(c - half, c + half)
    assert f.kind == "solid nodule"
    assert f.diameter_mm == pytest.approx(8.0, rel=0.05)


def test_a_drawn_lesion_renamed_is_measured_on_the_box_it_was_drawn_with():
    """A box drawn round a part-solid nodule and named a solid nodule is cut back to the solid
    part's edge; renamed part-solid, the finding is measured on the whole region the box held
    again (ground glass and all), with its solid part; named solid again, cut back again. A
    mask the reader paints in between is the reader's own and stays."""
    from test_analysis import _lesion_phantom

    from napari_ctreport._napari.session import ReviewSession

    vol, truth = _lesion_phantom()
    empty = _empty_analysis(vol.shape)
    s = ReviewSession.from_analysis(empty, vol, autosave_root=None)
    idx = np.argwhere(truth["part-solid nodule"])
    f = s.add_box(idx.min(0) - 1.5, idx.max(0) + 1.5, kind="solid nodule")
    cut = f.diameter_mm
    assert cut < 10.0  # the 7 mm solid part, not the 14 mm nodule
    s.set_kind(f.id, "part-solid nodule")
    assert f.diameter_mm > 12.0 and f.attributes["solid_diameter_mm"] < 10.0
    whole = int(s.mask(f.id).sum())
    s.set_kind(f.id, "solid nodule")
    assert f.diameter_mm == pytest.approx(cut)
    s.set_kind(f.id, "part-solid nodule")
    assert int(s.mask(f.id).sum()) == whole
    # painted: the reader's mask is kept through a rename
    s.labels[tuple(np.argwhere(s.mask(f.id))[0])] = 0  # one voxel erased
    s.mask_changed([f.id])
    painted = int(s.mask(f.id).sum())
    s.set_kind(f.id, "solid nodule")
    assert int(s.mask(f.id).sum()) == painted


def test_an_added_finding_takes_the_kind_the_ct_shows(tmp_path):
    """A lesion the reader adds with no kind named is read from the CT (ground glass is not
    added as a solid nodule); a part-solid nodule, added or renamed, gets its solid part
    measured, which sets its follow-up; a kind the reader names is kept."""
    from test_analysis import _lesion_phantom

    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.report.guidelines import recommendation

    vol, truth = _lesion_phantom()
    empty = _empty_analysis(vol.shape)
    session = ReviewSession.from_analysis(empty, vol, autosave_root=tmp_path)

    def box(m):
        idx = np.argwhere(m)
        return idx.min(axis=0) - 1.5, idx.max(axis=0) + 1.5

    glass = session.add_box(*box(truth["ground-glass nodule"]))
    assert glass.kind == "ground-glass nodule" and glass.attributes["kind_from_ct"] is True
    assert "ground-glass" in session.sentences[glass.id]
    session.labels[truth["part-solid nodule"]] = 9  # napari's brush, a new label
    part = session.add_painted(9)
    assert part.kind == "part-solid nodule"
    assert 6.0 <= part.attributes["solid_diameter_mm"] <= 8.5  # its 7 mm solid part
    assert "solid component" in session.sentences[part.id]
    # a solid part of 6 mm or more makes it highly suspicious (Fleischner 2017)
    assert any("highly suspicious" in line for line in recommendation([part]))
    solid = session.add_box(*box(truth["solid nodule"]))
    assert solid.kind == "solid nodule" and "solid_diameter_mm" not in solid.attributes
    session.set_kind(solid.id, "part-solid nodule")  # the reader says so: its solid part
    assert solid.attributes["solid_diameter_mm"] >= 8.0 and "kind_from_ct" not in solid.attributes
    session.set_kind(solid.id, "solid nodule")
    assert "solid_diameter_mm" not in solid.attributes
    named = session.add_box(*box(truth["calcified nodule"]), kind="solid nodule")
    assert named.kind == "solid nodule" and "kind_from_ct" not in named.attributes
    back = ReviewSession.restore(vol, folder=session.folder)
    assert back.finding(part.id).attributes == part.attributes
    assert back.finding(glass.id).kind == "ground-glass nodule"


def test_an_effusion_the_reader_marks_is_measured_on_its_fluid(tmp_path, monkeypatch):
    """A rectangle drawn around a missed effusion also holds chest wall and liver (here three
    times its volume); read from the CT it is an effusion (it was a mass, the reader had to
    name it), and named an effusion (in the table, or when added) it is measured on the fluid
    it holds, followed through the fluid beside the lung, as the analysis measures one. A mask
    the reader painted stays as painted."""
    from napari_ctreport._napari.session import ReviewSession

    case = generate_case(seed=7, shape=(60, 160, 160))  # a 130 ml effusion on 2.3 mm pixels
    (eff,) = [f for f in case.findings if f.kind == "pleural effusion"]
    truth = case.labels == eff.label
    a = _analysis(case)
    a.findings, a.labels = [], np.zeros_like(case.labels)
    a.report = write_report([])
    session = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path)
    idx = np.argwhere(truth)
    z = int(np.median(idx[:, 0]))
    on = idx[idx[:, 0] == z][:, 1:]
    lo, hi = on.min(axis=0) - 0.5, on.max(axis=0) + 0.5

    def dice(m):
        return 2 * (m & truth).sum() / (m.sum() + truth.sum())

    from napari_ctreport import analysis

    follow = analysis._follow_effusion
    calls: list[int] = []
    monkeypatch.setattr(
        analysis, "_follow_effusion", lambda *a, **kw: calls.append(1) or follow(*a, **kw)
    )
    guessed = session.add_rectangle(z, lo, hi)
    assert guessed.kind == "pleural effusion" and guessed.attributes["kind_from_ct"] is True
    assert len(calls) == 1  # the fluid the guess followed is the mask (not followed twice)
    monkeypatch.setattr(analysis, "_follow_effusion", follow)
    assert 0.6 * eff.volume_ml <= guessed.volume_ml <= 1.2 * eff.volume_ml
    assert dice(session.mask(guessed.id)) > 0.7 and guessed.side == eff.side
    session.delete_added(guessed.id)
    drawn = session.add_rectangle(z, lo, hi, kind="mass")  # the reader's slip
    assert drawn.volume_ml > 2 * eff.volume_ml
    assert dice(session.mask(drawn.id)) < 0.5
    session.set_kind(drawn.id, "pleural effusion")
    assert 0.6 * eff.volume_ml <= drawn.volume_ml <= 1.2 * eff.volume_ml
    assert dice(session.mask(drawn.id)) > 0.7 and drawn.side == eff.side
    assert "pleural effusion" in session.sentences[drawn.id]
    assert session.edit_log[-1].after["volume_ml"] == pytest.approx(drawn.volume_ml, abs=1e-3)
    # named something else again (a slip): the region drawn comes back; so it does in the
    # review restored from its autosave (it came back as the 1-voxel effusion redraw there)
    back = ReviewSession.restore(case.volume, root=tmp_path)
    back.autosave_root = None
    back.set_kind(drawn.id, "mass")
    region, drawn_ml = session.mask(drawn.id).copy(), drawn.volume_ml
    session.set_kind(drawn.id, "mass")
    assert drawn.volume_ml > 2 * eff.volume_ml and dice(session.mask(drawn.id)) < 0.5
    assert np.array_equal(back.mask(drawn.id), session.mask(drawn.id))
    session.set_kind(drawn.id, "pleural effusion")
    assert np.array_equal(session.mask(drawn.id), region) and drawn.volume_ml == drawn_ml
    # named an effusion as it is added: the same fluid
    session.labels[session.mask(drawn.id)] = 0
    session.set_status(drawn.id, "rejected")
    named = session.add_rectangle(z, lo, hi, kind="pleural effusion")
    assert dice(session.mask(named.id)) > 0.7
    # a mask the reader painted is the reader's: naming it an effusion keeps it
    session.labels[session.mask(named.id)] = 0
    session.set_status(named.id, "rejected")
    session.labels[truth & (np.arange(truth.shape[0]) < z)[:, None, None]] = 50
    painted = session.add_painted(50)
    before = session.mask(painted.id).copy()
    session.set_kind(painted.id, "pleural effusion")
    assert np.array_equal(session.mask(painted.id), before)
    assert painted.attributes["mask_by_reader"] is True


def test_a_drawn_effusion_is_read_as_one_and_a_drawn_lesion_is_not():
    """A rectangle drawn around each finding of eight phantoms (on its middle axial slice, as
    the dock makes a box of it): the effusions are read from the CT as effusions, and none of
    the 17 masses and nodules (a 45 mm mass among them) is."""
    from napari_ctreport._napari.session import ReviewSession

    kinds: dict[str, list[str]] = {"effusion": [], "other": []}
    for seed in (1, 2, 3, 6, 7, 8, 11, 12):
        case = generate_case(seed=seed, shape=(60, 160, 160))
        a = _analysis(case)
        a.findings, a.labels = [], np.zeros_like(case.labels)
        a.report = write_report([])
        session = ReviewSession.from_analysis(a, case.volume, autosave_root=None)
        for f in case.findings:
            idx = np.argwhere(case.labels == f.label)
            z = int(np.median(idx[:, 0]))
            on = idx[idx[:, 0] == z][:, 1:]
            added = session.add_rectangle(z, on.min(axis=0) - 0.5, on.max(axis=0) + 0.5)
            kinds["effusion" if f.kind == "pleural effusion" else "other"].append(added.kind)
            session.delete_added(added.id)
    assert kinds["effusion"] == ["pleural effusion"] * 2, kinds
    assert len(kinds["other"]) == 17 and "pleural effusion" not in kinds["other"], kinds


def test_a_drawn_cavitating_mass_is_not_an_effusion():
    """A 32 mm mass with an 22 mm air cavity deep in the lung, boxed by the reader: its region
    is a ring, whose hull holds air like a crescent of fluid, but it holds no fluid beside the
    lung, so it is no effusion (review of session 47: the region itself was taken for the
    fluid followed from it, a 13 ml "pleural effusion")."""
    from dataclasses import replace

    from scipy import ndimage as ndi

    from napari_ctreport._napari.session import ReviewSession
    from napari_ctreport.report.anatomy import segment_lungs

    case = generate_case(seed=3, shape=(80, 200, 200))
    vol = case.volume
    sp = np.asarray(vol.spacing_zyx)
    deep = ndi.distance_transform_edt(segment_lungs(vol) & (case.labels == 0), sampling=sp)
    c = np.unravel_index(np.argmax(deep), deep.shape)
    zz, yy, xx = np.ogrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    r = np.sqrt(
        ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2
    )
    arr = vol.array.copy()
    arr[r <= 16.0] = 35
    arr[r <= 11.0] = -1000
    vol = replace(vol, array=arr)
    a = _analysis(case)
    a.findings, a.labels = [], np.zeros_like(case.labels)
    a.report = write_report([])
    session = ReviewSession.from_analysis(a, vol, autosave_root=None)
    half = np.ceil(16.0 / sp).astype(int) + 1
    f = session.add_box(np.array(c) - half, np.array(c) + half)
    assert f.kind == "mass" and 28.0 <= f.diameter_mm <= 36.0, (f.kind, f.diameter_mm)


def test_a_rectangle_drawn_on_a_coronal_or_sagittal_slice_adds_the_lesion(tmp_path):
    """The reader draws on the plane shown: on a coronal (or sagittal) slice the rectangle spans
    z and x (or z and y), and the box is as deep across that plane as the rectangle is wide.
    Before, every rectangle was read as axial: one drawn on a coronal slice gave a box of zero
    height. On an axial slice ``add_drawn`` is ``add_rectangle``."""
    from napari_ctreport._napari.session import ReviewSession

    case = generate_case(seed=3, shape=(60, 160, 160))
    (truth,) = [f for f in case.findings if f.id == "F2"]  # a 9 mm solid nodule on 5 mm slices
    labels = case.labels.copy()
    labels[labels == truth.label] = 0
    a = _analysis(case)
    a.findings, a.labels = [f for f in case.findings if f is not truth], labels
    a.report = write_report(a.findings)
    idx = np.argwhere(case.labels == truth.label)
    lo, hi = idx.min(axis=0) - 1.5, idx.max(axis=0) + 1.5
    mid = np.round(idx.mean(axis=0))
    got = {}
    for name, axis in (("axial", 0), ("coronal", 1), ("sagittal", 2)):
        session = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path / name)
        corners = []
        (p, q) = [k for k in range(3) if k != axis]
        for u, w in ((lo[p], lo[q]), (lo[p], hi[q]), (hi[p], hi[q]), (hi[p], lo[q])):
            c = np.empty(3)
            c[axis], c[p], c[q] = mid[axis], u, w
            corners.append(c)
        f = session.add_drawn(np.array(corners))
        m = session.mask(f.id)
        got[name] = m
        assert (m & (case.labels == truth.label)).sum() >= 0.8 * len(idx), name
        assert np.ptp(np.argwhere(m), axis=0).min() > 0, name  # a box, not a flat slab
    axial = ReviewSession.from_analysis(a, case.volume, autosave_root=tmp_path / "plain")
    f = axial.add_rectangle(int(mid[0]), lo[1:], hi[1:])
    assert np.array_equal(axial.mask(f.id), got["axial"])


def test_an_undone_erase_gives_the_finding_back_its_status(session):
    """Erasing a finding's whole mask rejects it; undoing the erase (its voxels back, as napari's
    Ctrl+Z writes them) gives it back the status it had, in the report again. A finding the
    reader rejected stays rejected when its voxels are painted again."""
    f, g = session.findings[0], session.findings[1]
    session.set_status(f.id, "accepted")
    voxels = session.mask(f.id)
    session.labels[voxels] = 0
    session.mask_changed([f.id])
    assert f.status == "rejected" and session.sentences[f.id] not in session.report().findings
    session.labels[voxels] = f.label  # Ctrl+Z
    session.mask_changed([f.id])
    assert f.status == "accepted" and session.sentences[f.id] in session.report().findings
    assert session.edit_log[-1].action == "mask restored"
    session.set_status(g.id, "rejected")
    session.mask_changed([g.id])
    assert g.status == "rejected"


def test_a_box_the_reader_drew_is_deleted_and_a_rejected_lesion_can_be_boxed_again(session):
    """Deleting a box the reader drew takes the finding and its voxels away (it stayed as a
    rejected finding, exported as "rejected on review", its voxels blocking a box drawn again
    there); a model finding is rejected, not deleted; a box drawn over a rejected finding's
    lesion takes its voxels (it was refused: "the drawn box holds no free voxel"), and gives
    them back when deleted, in the review restored from its autosave too (they stayed the
    drawn box's)."""
    from napari_ctreport._napari.session import ReviewSession

    g = session.findings[1]
    lo = np.argwhere(session.mask(g.id)).min(axis=0) - 0.5
    hi = np.argwhere(session.mask(g.id)).max(axis=0) + 0.5
    with pytest.raises(ValueError, match="no free voxel"):
        session.add_box(lo, hi)
    with pytest.raises(ValueError, match="reject it instead"):
        session.delete_added(g.id)
    session.set_status(g.id, "rejected")
    g_voxels, g_mm = session.mask(g.id).copy(), g.diameter_mm
    half = hi.copy()
    half[2] = (lo[2] + hi[2]) / 2  # over half the lesion: the rejected finding keeps the rest
    added = session.add_box(lo, half)
    assert added.status == "added" and (session.labels == added.label).any()
    kept = session.mask(g.id)
    assert 0 < kept.sum() < g_voxels.sum() and g.diameter_mm < g_mm  # measured on what it kept
    back = ReviewSession.restore(session.volume, folder=session.folder)
    back.autosave_root = None
    back.delete_added(added.id)
    assert np.array_equal(back.mask(g.id), g_voxels)
    assert back.finding(g.id).diameter_mm == g_mm
    n = len(session.findings)
    written = session.labels_written
    session.delete_added(added.id)
    assert len(session.findings) == n - 1 and added.id not in session.sentences
    assert not (session.labels == added.label).any()
    assert session.labels_written == written + 1
    assert session.edit_log[-1].action == "removed"
    # the voxels it took are the rejected finding's again, measured as before
    assert np.array_equal(session.mask(g.id), g_voxels) and g.diameter_mm == g_mm


def test_an_undone_erase_brings_back_the_readers_own_finding(session):
    """A finding the reader drew, named and described, then erased whole: the erase undone (its
    voxels back) brings back that finding, kind, status and typed sentence (it came back as a
    new one, its kind read from the CT again and the sentence lost). The label painted on
    another spot is a new finding."""
    vol = session.volume
    free = (vol.array > 0) & (session.labels == 0)
    z, y, x = np.argwhere(free)[len(np.argwhere(free)) // 2]
    f = session.add_box((z - 1.5, y - 3.5, x - 3.5), (z + 1.5, y + 3.5, x + 3.5))
    session.set_kind(f.id, "ground-glass nodule")
    session.set_sentence(f.id, "Faint ground glass, my words.")
    voxels = session.labels == f.label
    session.labels[voxels] = 0
    session.mask_changed([f.id])
    assert f.id not in {g.id for g in session.findings}
    session.labels[voxels] = f.label  # Ctrl+Z
    back = session.add_painted(f.label)
    assert (back.id, back.kind, back.status) == (f.id, "ground-glass nodule", "added")
    assert session.report().findings.count("Faint ground glass, my words.") == 1
    # erased again, and a new lesion painted elsewhere with the same label value: a new one
    session.labels[voxels] = 0
    session.mask_changed([back.id])
    far = np.zeros_like(voxels)
    far[tuple(np.argwhere(free)[0])] = True
    session.labels[far] = back.label
    new = session.add_painted(back.label)
    assert (
        new.id not in session.hand_edited and "Faint ground glass" not in session.report().findings
    )


def test_an_autosave_of_drawn_regions_from_before_session_47_is_read(tmp_path):
    """``redrawn.npz`` written before it held the voxels drawn boxes took (no ``n_took``) reads
    as no voxels taken; what it holds and what is written now read back as written."""
    from napari_ctreport._napari.session import _redrawn_bytes, _redrawn_from_file

    old = tmp_path / "old.npz"
    marked, region = np.array([3, 4, 5]), np.array([4])
    np.savez_compressed(
        old,
        n=np.asarray([1]),
        id0=np.asarray(["F3"]),
        marked0=marked,
        region0=region,
        drawn0=np.asarray([True]),
    )
    redrawn, took = _redrawn_from_file(old)
    assert took == {} and list(redrawn) == ["F3"] and redrawn["F3"][2] is True
    new = tmp_path / "new.npz"
    new.write_bytes(_redrawn_bytes(redrawn, {"F3": {2: np.array([7, 9])}, "F4": {}}))
    redrawn2, took2 = _redrawn_from_file(new)
    assert np.array_equal(redrawn2["F3"][0], marked) and np.array_equal(took2["F3"][2], [7, 9])
    assert list(took2) == ["F3"]
