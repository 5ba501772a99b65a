"""Detection and report metrics, with expected values worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from napari_ctreport.metrics import (
    FP_RATES,
    average_precision,
    box_iou,
    evaluate,
    finding_f1,
    format_table,
    froc,
    median_size_error,
    median_volume_ratio,
    report_scores,
    sensitivity_at_fp,
    tokenize,
)
from napari_ctreport.report.findings import Finding
from napari_ctreport.report.writer import write_report


def box(
    fid: str, kind: str, side: str, c: tuple[float, float, float], d: float, score: float = 1.0
) -> Finding:
    h = d / 2
    return Finding(
        id=fid,
        kind=kind,
        side=side,
        zone="middle",
        center_lps_mm=c,
        bbox_lps_mm=(tuple(v - h for v in c), tuple(v + h for v in c)),
        diameter_mm=d,
        short_axis_mm=d * 0.8,
        volume_ml=d**3 / 2000,
        score=score,
    )


def shifted(f: Finding, dx: float, **kw) -> Finding:
    (x, y, z) = f.center_lps_mm
    lo, hi = f.bbox_lps_mm
    return replace(
        f,
        center_lps_mm=(x + dx, y, z),
        bbox_lps_mm=((lo[0] + dx, lo[1], lo[2]), (hi[0] + dx, hi[1], hi[2])),
        **kw,
    )


G1 = box("G1", "solid nodule", "right", (0.0, 0.0, 0.0), 8.0)
G2 = box("G2", "mass", "left", (100.0, 0.0, 0.0), 40.0)
G3 = box("G3", "solid nodule", "right", (50.0, 50.0, 50.0), 5.0)
GTS = [[G1, G2], [G3]]


def preds(*, score: float = 0.9) -> list[list[Finding]]:
    return [[replace(g, score=score) for g in scan] for scan in GTS]


def test_perfect() -> None:
    p = preds()
    fr = froc(p, GTS)
    assert fr["cpm"] == 1.0 and all(v == 1.0 for v in fr["sensitivity"].values())
    assert list(fr["sensitivity"]) == list(FP_RATES)
    assert average_precision(p, GTS, iou=0.1) == 1.0
    assert average_precision(p, GTS, iou=0.25) == 1.0
    f1 = finding_f1(p, GTS)
    assert (f1["precision"], f1["recall"], f1["f1"]) == (1.0, 1.0, 1.0)
    assert median_size_error(p, GTS) == 0.0
    assert sensitivity_at_fp(p, GTS) == 1.0


def test_missing_prediction() -> None:
    p = preds()
    p[1] = []  # G3 missed
    fr = froc(p, GTS)
    assert fr["cpm"] == pytest.approx(2 / 3)
    assert average_precision(p, GTS) == pytest.approx(2 / 3)
    f1 = finding_f1(p, GTS)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (2, 0, 1)
    assert f1["f1"] == pytest.approx(0.8)


def test_shifted_outside_box() -> None:
    p = preds()
    p[0][0] = shifted(p[0][0], 20.0)  # centre and box away from G1, same score
    fr = froc(p, GTS)
    # one threshold: 1 FP over 2 scans = 0.5 FP/scan at sensitivity 2/3
    assert fr["sensitivity"][0.125] == 0.0 and fr["sensitivity"][0.25] == 0.0
    assert all(fr["sensitivity"][r] == pytest.approx(2 / 3) for r in (0.5, 1.0, 2.0, 4.0, 8.0))
    assert fr["cpm"] == pytest.approx(10 / 21)
    p[0][0] = replace(p[0][0], score=0.5)  # ranked last: TP, TP, FP
    assert average_precision(p, GTS) == pytest.approx(2 / 3)
    f1 = finding_f1(p, GTS, score_threshold=0.5)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (2, 1, 1)
    assert f1["f1"] == pytest.approx(2 / 3)
    # G1 is the only nodule >= 6 mm and it is missed
    assert sensitivity_at_fp(p, GTS, fp_rate=1.0) == 0.0


def test_extra_prediction_ranked_first() -> None:
    p = preds()
    p[1].append(box("P9", "solid nodule", "left", (-80.0, -80.0, -80.0), 6.0, score=0.95))
    fr = froc(p, GTS)
    assert fr["sensitivity"][0.125] == 0.0 and fr["sensitivity"][0.25] == 0.0
    assert fr["sensitivity"][0.5] == 1.0
    assert fr["cpm"] == pytest.approx(5 / 7)
    # FP, TP, TP, TP: precision envelope 3/4 everywhere
    assert average_precision(p, GTS) == pytest.approx(0.75)
    assert finding_f1(p, GTS)["f1"] == pytest.approx(6 / 7)
    # the extra one is a false positive at 0.5 FP/scan: 1 FP/scan still finds G1
    assert sensitivity_at_fp(p, GTS, fp_rate=1.0) == 1.0
    assert sensitivity_at_fp(p, GTS, fp_rate=0.25) == 0.0


def test_wrong_side_drops_f1_not_froc() -> None:
    p = preds()
    p[0][0] = replace(p[0][0], side="left")
    assert froc(p, GTS)["cpm"] == 1.0
    assert average_precision(p, GTS) == 1.0
    f1 = finding_f1(p, GTS)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (2, 1, 1)
    p[0][0] = replace(p[0][0], side="right", kind="ground-glass nodule")
    assert finding_f1(p, GTS)["f1"] == pytest.approx(2 / 3)


def test_iou_thresholds() -> None:
    # shifted by 5 mm: centre outside G1's box (half-width 4), IoU = 3*8*8 / (2*512 - 192) = 0.23
    p = preds()
    p[0][0] = shifted(p[0][0], 5.0, score=0.5)
    assert box_iou(p[0][0], G1) == pytest.approx(192 / 832)
    assert average_precision(p, GTS, iou=0.1) == 1.0
    assert average_precision(p, GTS, iou=0.25) == pytest.approx(2 / 3)
    assert froc(p, GTS)["cpm"] == 1.0  # hit through IoU >= 0.1


def test_size_error() -> None:
    p = preds()
    p[0][0] = replace(p[0][0], diameter_mm=8.8)
    p[0][1] = replace(p[0][1], diameter_mm=36.0)
    assert median_size_error(p, GTS) == pytest.approx(0.1)
    p[0][1] = replace(p[0][1], diameter_mm=40.0)
    assert median_size_error(p, GTS) == 0.0
    assert math.isnan(median_size_error([[], []], GTS))


def test_effusion_volume_ratio() -> None:
    """The median reported / true volume over the matched effusions only; NaN with none."""
    e1 = box("E1", "pleural effusion", "right", (0.0, 80.0, 0.0), 60.0)
    e2 = box("E2", "pleural effusion", "left", (120.0, 80.0, 0.0), 50.0)
    gts = [[G1, e1], [e2]]
    p = [[replace(G1, volume_ml=9.0), replace(e1, volume_ml=e1.volume_ml * 0.5)], [e2]]
    assert median_volume_ratio(p, gts) == pytest.approx(0.75)  # (0.5 + 1.0) / 2; G1 not asked
    p[1] = []  # the left one missed: not counted
    assert median_volume_ratio(p, gts) == pytest.approx(0.5)
    assert math.isnan(median_volume_ratio(p, GTS))  # no effusion in the ground truth
    assert evaluate([(s, "") for s in p], [(g, "") for g in gts])["effusion_volume_ratio"] == (
        pytest.approx(0.5)
    )


def test_rejected_and_empty() -> None:
    p = preds()
    p[0].append(
        replace(box("X", "mass", "left", (-90.0, 0.0, 0.0), 30.0, score=0.99), status="rejected")
    )
    assert froc(p, GTS)["cpm"] == 1.0
    fr = froc([[]], [[]])
    assert math.isnan(fr["cpm"])
    assert finding_f1([[]], [[]])["f1"] == 1.0
    with pytest.raises(ValueError, match="scans"):
        froc([[]], [[], []])


def test_tokenize() -> None:
    assert tokenize("A 7.2 mm Part-solid nodule, right.") == "a 7.2 mm part-solid nodule , right ."


CASES = [
    [G1, G2],
    [G3],
    [box("E", "pleural effusion", "left", (80.0, 40.0, -60.0), 90.0)],
    [],
    [
        box("C", "calcified nodule", "right", (-60.0, 10.0, 30.0), 4.0),
        box("M", "mass", "right", (-50.0, 0.0, 0.0), 55.0),
    ],
]


def test_report_scores_identical_and_different() -> None:
    texts = [write_report(c).findings + " " + write_report(c).impression for c in CASES]
    s = report_scores(texts, texts)
    assert s["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert s["rouge_l"] == pytest.approx(1.0)
    assert s["cider"] == pytest.approx(10.0, rel=1e-6)
    shuffled = texts[1:] + texts[:1]
    worse = report_scores(shuffled, texts)
    assert worse["bleu4"] < 0.9 and worse["rouge_l"] < 0.9 and worse["cider"] < 5.0
    empty = report_scores([""] * len(texts), texts)
    assert empty["bleu4"] < 1e-3 and empty["cider"] < 1e-3


def test_evaluate_and_table() -> None:
    gt_cases = [(c, write_report(c)) for c in CASES]
    res = evaluate(gt_cases, gt_cases)
    for key in (
        "cpm",
        "ap_iou0.1",
        "ap_iou0.25",
        "f1",
        "sens_1fp_nodules_6mm",
        "rouge_l",
        "clinical_consistency",
        "clinical_consistency_15pct",
        "grounding",
    ):
        assert res[key] == pytest.approx(1.0), key
    assert res["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert res["size_error_median"] == 0.0
    assert res["cider"] == pytest.approx(10.0, rel=1e-6)
    # a model that says the right words about the wrong side
    wrong = [
        ([replace(f, side="left" if f.side == "right" else "right") for f in c], None)
        for c in CASES
    ]
    wrong = [(fs, write_report(fs)) for fs, _ in wrong]
    res2 = evaluate(wrong, gt_cases)
    assert res2["cpm"] == 1.0
    assert res2["f1"] < 0.5
    assert res2["clinical_consistency"] < 1.0
    assert res2["clinical_consistency_15pct"] < 1.0  # the side is wrong at any size tolerance
    assert res2["grounding"] == 1.0
    table = format_table(res)
    lines = table.splitlines()
    assert lines[0].startswith("metric") and "sens@1fp" in table and "cider" in table
    assert len({len(line) for line in lines}) == 1  # aligned


def test_found_by_kind() -> None:
    """Per ground-truth kind: the nodule found and named, the mass found but called fluid, the
    second nodule missed (its only prediction is under the threshold, and misplaced)."""
    from napari_ctreport.metrics import found_by_kind

    p = [
        [replace(G1, score=0.9), replace(G2, kind="pleural effusion", score=0.6)],
        [shifted(G3, 20.0, score=0.2), replace(G3, score=0.3)],
    ]
    got = found_by_kind(p, GTS, score_threshold=0.5)
    assert list(got) == ["solid nodule", "mass"]  # lexicon order
    assert got["solid nodule"] == {"n": 2, "found": 0.5, "kind_right": 0.5}
    assert got["mass"] == {"n": 1, "found": 1.0, "kind_right": 0.0}
    assert found_by_kind(p, GTS, score_threshold=0.25)["solid nodule"]["found"] == 1.0
    res = evaluate([(c, "") for c in p], [(c, "") for c in GTS], score_threshold=0.5)
    assert res["by_kind"] == got
    assert {k: v["found"] for k, v in res["by_kind"].items()} == {"solid nodule": 0.5, "mass": 1.0}
    assert {k: v["n"] for k, v in res["by_kind"].items()} == {"solid nodule": 2, "mass": 1}
    assert "by_kind.mass.found" in format_table(res)
