"""Report writer, follow-up guideline and report parser."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ctreport.report.findings import Finding
from napari_ctreport.report.guidelines import (
    fleischner_size_mm,
    recommendation,
    solid_category,
    subsolid_category,
)
from napari_ctreport.report.lexicon import KINDS, effusion_grade
from napari_ctreport.report.parse import (
    clinical_consistency,
    consistency_details,
    extract_statements,
    split_sentences,
)
from napari_ctreport.report.writer import (
    NORMAL_FINDINGS,
    Report,
    coverage_note,
    describe_finding,
    format_mm,
    write_report,
)


def make(
    kind: str = "solid nodule",
    d: float = 7.0,
    s: float = 0.0,
    *,
    side: str = "right",
    zone: str = "upper",
    fid: str = "F1",
    volume_ml: float = 0.0,
    status: str = "proposed",
    **attributes: object,
) -> Finding:
    return Finding(
        id=fid,
        kind=kind,
        side=side,
        zone=zone,
        center_lps_mm=(0.0, 0.0, 0.0),
        bbox_lps_mm=((-d / 2, -d / 2, -d / 2), (d / 2, d / 2, d / 2)),
        diameter_mm=d,
        short_axis_mm=s,
        volume_ml=volume_ml,
        status=status,
        attributes=dict(attributes),
    )


def random_finding(rng: np.random.Generator, fid: str) -> Finding:
    kind = str(rng.choice(KINDS))
    side = str(rng.choice(["right", "left", "right", "left", "bilateral", "midline"]))
    zone = str(rng.choice(["upper", "middle", "lower"]))
    attrs: dict[str, object] = {}
    if kind == "mass":
        d = float(rng.uniform(30, 90))
    elif kind == "pleural effusion":
        d = float(rng.uniform(30, 160))
    else:
        d = float(rng.uniform(2, 30))
    s = float(d * rng.uniform(0.4, 1.0))
    if kind == "part-solid nodule":
        attrs["solid_diameter_mm"] = float(d * rng.uniform(0.1, 0.9))
    if rng.random() < 0.5:
        attrs["shape"] = str(rng.choice(["round", "lobulated", "spiculated"]))
    vol = float(rng.uniform(20, 2000)) if kind == "pleural effusion" else float(rng.uniform(0, 5))
    return make(kind, d, s, side=side, zone=zone, fid=fid, volume_ml=vol, **attrs)


# --- writer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (7.24, "7.2 mm"),
        (9.94, "9.9 mm"),
        (9.96, "10 mm"),
        (10.0, "10 mm"),
        (12.5, "13 mm"),
        (45.49, "45 mm"),
    ],
)
def test_size_rule(value: float, text: str) -> None:
    assert format_mm(value) == text


def test_canonical_sentence_is_deterministic_and_complete() -> None:
    f = make(
        "part-solid nodule",
        12.4,
        9.0,
        side="left",
        zone="lower",
        solid_diameter_mm=4.04,
        shape="lobulated",
    )
    text = describe_finding(f)
    assert text == describe_finding(f)
    assert (
        text
        == "A 12 mm lobulated part-solid nodule with a 4.0 mm solid component in the left lower zone."
    )
    eff = make("pleural effusion", 85, 22, side="right", zone="lower", volume_ml=412.4)
    text = describe_finding(eff)
    assert "Moderate right pleural effusion" in text
    assert "85 x 22 mm" in text and "412 ml" in text
    mass = make("mass", 46.2, 31.0, side="left", zone="middle", shape="spiculated")
    assert describe_finding(mass).startswith("A 46 x 31 mm spiculated mass in the left middle zone")
    assert describe_finding(make("solid nodule", 8.0)).startswith("An 8.0 mm")


def test_rng_varies_phrasing() -> None:
    f = make("solid nodule", 6.3, 5.0, side="left", zone="middle")
    rng = np.random.default_rng(1)
    texts = {describe_finding(f, rng=rng) for _ in range(40)}
    assert len(texts) >= 4


def test_normal_report() -> None:
    r = write_report([])
    assert r.findings == NORMAL_FINDINGS
    assert clinical_consistency(r, []) == 1.0
    # a normal report contradicts a case with findings
    assert clinical_consistency(r, [make()]) < 1.0


@pytest.mark.parametrize("lung_ml", [None, 0.0, 105.0, 999.0, 1000.0, 4000.0])
@pytest.mark.parametrize("with_nodule", [False, True])
def test_a_scan_with_part_of_the_lungs_says_so(lung_ml, with_nodule) -> None:
    """A head or abdominal CT holds no lung or only its bases: "no nodule" alone would speak for
    lungs nobody saw. Under PARTIAL_LUNG_ML of segmented lung both sections say how much lung was
    in the scan; with none, the report says the lungs were not assessed instead of "no nodule"
    (with a lesion reported, that only part of them was).
    The note states no finding, so the report stays consistent with its findings."""
    from napari_ctreport.report.writer import NORMAL_IMPRESSION, PARTIAL_LUNG_ML

    found = [make(fid="F1")] if with_nodule else []
    r = write_report(found, lung_ml=lung_ml)
    partial = lung_ml is not None and lung_ml < PARTIAL_LUNG_ML
    text = f"{r.findings}\n{r.impression}"
    # a report with a lesion never says no lung was scanned: the segmentation missed lung
    # the lesion lies in (the analysis sets its own findings aside when it finds no lung)
    assert ("Only part of the lungs" in text) == (partial and (lung_ml >= 1.0 or with_nodule))
    assert ("No lung is in the scanned volume" in text) == (
        partial and lung_ml < 1.0 and not with_nodule
    )
    assert ("not assessed" in text) == partial
    if partial and lung_ml >= 1.0:
        assert f"({lung_ml:.0f} ml of lung)" in r.findings and "ml of lung" in r.impression
    if not partial:
        assert r == write_report(found)  # unchanged for a whole chest or an unknown one
    if not with_nodule:
        assert (NORMAL_FINDINGS in r.findings) == (lung_ml is None or lung_ml >= 1.0)
        assert (NORMAL_IMPRESSION in r.impression) == (lung_ml is None or lung_ml >= 1.0)
    assert clinical_consistency(r, found) == 1.0
    plain = write_report(found)
    assert len(extract_statements(text)) == len(
        extract_statements(f"{plain.findings}\n{plain.impression}")
    )
    # each section's text is its sentences, in order
    for section, joined in (("findings", r.findings), ("impression", r.impression)):
        parts = [x.text for x in r.sentences if x.section == section]
        assert all(p in joined for p in parts)


def test_rejected_findings_are_left_out() -> None:
    r = write_report([make(fid="F1"), make("mass", 40, 30, fid="F2", status="rejected")])
    assert "mass" not in r.findings.lower()
    assert all(s.finding_id != "F2" for s in r.sentences)


def test_report_dict_round_trip_and_order() -> None:
    fs = [
        make("solid nodule", 5.0, fid="F1"),
        make("pleural effusion", 80, 20, fid="F2", volume_ml=150, side="left", zone="lower"),
        make("solid nodule", 9.0, fid="F3"),
        make("mass", 50, 40, fid="F4"),
    ]
    r = write_report(fs)
    ids = [s.finding_id for s in r.sentences if s.section == "findings" and s.finding_id]
    assert ids == ["F4", "F3", "F1", "F2"]
    assert Report.from_dict(r.to_dict()) == r
    assert r.impression.startswith("1. ")


@pytest.mark.parametrize("seed", range(6))
def test_random_reports_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(15):
        fs = [random_finding(rng, f"F{i}") for i in range(int(rng.integers(1, 6)))]
        for writer_rng in (None, rng):
            r = write_report(fs, rng=writer_rng, risk=str(rng.choice(["low", "high"])))
            details = consistency_details(r, fs)
            bad = [st.text for st, ok, _ in details["statements"] if not ok]
            assert details["consistency"] == 1.0, (trial, bad)
            assert details["coverage"] == 1.0
            # each finding sentence is read back with the finding's own kind, side and zone
            for sent in r.sentences:
                if sent.section != "findings" or sent.finding_id is None:
                    continue
                f = next(f for f in fs if f.id == sent.finding_id)
                (st,) = extract_statements(sent.text)
                assert (st.kind, st.side, st.zone) == (f.kind, f.side, f.zone)
                assert abs(st.size_mm - f.diameter_mm) <= 0.5 + 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_a_stored_finding_reads_as_the_measured_one(seed: int) -> None:
    """A finding and its stored copy (the JSON, the autosave, the case file) write the same
    report: 18.46 mm was "18 mm" in the findings written from the measurement and "19 mm" in
    the impression the review wrote from the copy stored as 18.5 (one report, two sizes)."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        fs = [random_finding(rng, f"F{i}") for i in range(int(rng.integers(1, 6)))]
        stored = [Finding.from_dict(f.to_dict()) for f in fs]
        assert write_report(stored) == write_report(fs)
    f = make("solid nodule", 18.46, fid="F1")
    assert f.diameter_mm == 18.5 and "19 mm" in write_report([f]).findings


def test_tampered_report_is_inconsistent() -> None:
    fs = [
        make("solid nodule", 7.2, side="right", zone="upper"),
        make("mass", 42, 30, side="left", fid="F2"),
    ]
    r = write_report(fs)
    text = r.findings + "\n" + r.impression
    assert clinical_consistency(text, fs) == 1.0
    assert clinical_consistency(text.replace("7.2 mm", "9.2 mm"), fs) < 1.0
    assert clinical_consistency(text.replace("right upper", "left upper"), fs) < 1.0
    assert clinical_consistency(text.replace("42 x 30", "52 x 30"), fs) < 1.0
    assert clinical_consistency(text.replace("solid nodule", "ground-glass nodule"), fs) < 1.0
    # and against the wrong case entirely
    assert clinical_consistency(r, [make("solid nodule", 4.0, side="left")]) < 0.5


def _bad(text: str, fs: list[Finding]) -> list[str]:
    """The statements of ``text`` that disagree with ``fs``."""
    return [st.text for st, ok, _ in consistency_details(text, fs)["statements"] if not ok]


def test_sizes_are_checked_to_the_rounding_of_the_written_figure() -> None:
    """The writer gives one decimal below 10 mm: "7.7 mm" for a 7.2 mm nodule is wrong (it was
    within the old fixed 0.6 mm); "7 mm" and "0.72 cm" are right, "7.0 mm" is not; against
    ground truth the evaluation still allows 0.6 mm."""
    fs = [make("solid nodule", 7.2), make("pleural effusion", 90, 30, fid="F2", volume_ml=252.0)]
    assert _bad("A 7.7 mm solid nodule in the right upper zone.", fs)
    assert _bad("A 7.0 mm solid nodule in the right upper zone.", fs)
    assert not _bad("A 7 mm solid nodule in the right upper zone. A 0.72 cm solid nodule.", fs)
    assert clinical_consistency("A 7.7 mm solid nodule.", fs, size_tol_mm=0.6) == 1.0
    assert _bad("Small right pleural effusion (250 ml).", fs)
    assert not _bad("Small right pleural effusion (252 ml).", fs)


@pytest.mark.parametrize(
    ("text", "n_bad"),
    [
        # a second finding in the same sentence
        (
            "A 7.2 mm solid nodule in the right upper zone and a 14 mm solid nodule in the left "
            "lower zone.",
            1,
        ),
        ("A 7.2 mm solid nodule in the right upper zone, with a 9.0 mm nodule in the RLL.", 1),
        # a finding stated before advice
        ("A 25 mm mass in the right upper zone; recommend PET/CT.", 1),
        ("A 25 mm mass in the right upper zone, consider biopsy.", 1),
        # a denial after a finding, and after a heading
        ("A 7.2 mm solid nodule in the right upper zone, no effusion.", 1),
        ("Lungs: no mass or effusion is seen.", 1),
        ("Lungs: no mass is seen.", 0),
        # a size after "to" is a measurement ("up to 30 mm" is a threshold)
        ("The solid nodule in the right upper zone has grown to 14 mm.", 1),
        # a sentence that begins with a small letter
        ("A 7.2 mm solid nodule in the right upper zone. a 30 mm mass in the left lower zone.", 1),
        # the grade of an effusion
        ("Large right pleural effusion (120 ml).", 1),
        ("Moderate right pleural effusion.", 1),
        # counts
        ("Three pulmonary nodules, the largest a 7.2 mm solid nodule in the right upper zone.", 1),
        ("Multiple solid nodules in the right upper zone.", 1),
        # lobes
        ("A 7.2 mm solid nodule in the LLL.", 1),
        # what the writer would say, and what it may also say
        ("A 7.2 mm solid nodule in the RUL, no left pleural effusion.", 0),
        ("Small right pleural effusion (120 ml); no mass.", 0),
        ("Lung mass: recommend staging.", 1),
        ("A 5.0 mm calcified nodule in the right lower zone, compatible with a granuloma.", 0),
    ],
)
def test_the_checker_reads_each_clause(text: str, n_bad: int) -> None:
    """A report is checked clause by clause: an invented second finding, a finding stated before
    advice, a denial in mid-sentence, a wrong grade or count, a lobe abbreviation (audit of
    session 45: each of these passed)."""
    fs = [
        make("solid nodule", 7.2, fid="F1"),
        make("calcified nodule", 5.0, zone="lower", fid="F2"),
        make("pleural effusion", 90, 30, fid="F3", zone="lower", volume_ml=120.0),
    ]
    assert len(_bad(text, fs)) == n_bad, _bad(text, fs)


def test_counts_denials_by_side_and_coverage() -> None:
    """ "Two pulmonary nodules" may leave out calcified ones (the writer's impression does);
    "no left effusion" beside a right one is true; "Lung mass: recommend staging" alone does not
    report where or how large the mass is, so it covers nothing."""
    fs = [
        make("solid nodule", 7.2, fid="F1"),
        make("ground-glass nodule", 12.0, side="left", fid="F2"),
        make("calcified nodule", 4.0, fid="F3"),
        make("pleural effusion", 90, 30, fid="F4", volume_ml=120.0),
        make("mass", 40.0, 30.0, side="left", zone="lower", fid="F5"),
    ]
    for ok in ("Two pulmonary nodules.", "Three nodules.", "Several nodules.", "Two subsolid"):
        assert not _bad(ok, fs), ok
    for wrong in ("Four pulmonary nodules.", "Two calcified nodules.", "Two masses."):
        assert _bad(wrong, fs), wrong
    assert not _bad("Right pleural effusion, no left effusion.", fs)
    bilateral = [make("pleural effusion", 90, 30, side="bilateral", volume_ml=500.0)]
    assert _bad("No left pleural effusion.", bilateral)
    assert consistency_details("Lung mass: recommend staging.", fs)["covered"] == []
    details = consistency_details("A 40 x 30 mm mass in the left lower zone.", fs)
    assert details["covered"] == ["F5"] and details["consistency"] == 1.0


def test_consistency_with_a_relative_size_tolerance() -> None:
    """Against ground truth measured on another mask, sizes may be allowed to differ by a share
    of the truth's (the size-error target): 8.0 mm stated for 7.2 is 11 % off and agrees at
    15 %, 9.2 mm (28 % off) does not; side, zone and kind are checked as strictly as ever."""
    fs = [
        make("solid nodule", 7.2, side="right", zone="upper"),
        make("mass", 42, 30, side="left", fid="F2"),
    ]
    text = write_report(fs).findings
    close = text.replace("7.2 mm", "8.0 mm").replace("42 x 30", "46 x 28")
    assert clinical_consistency(close, fs) < 1.0
    assert clinical_consistency(close, fs, size_tol_rel=0.15) == 1.0
    for wrong in (
        text.replace("7.2 mm", "9.2 mm"),
        text.replace("42 x 30", "52 x 30"),
        text.replace("right upper", "left upper"),
        text.replace("solid nodule", "ground-glass nodule"),
    ):
        assert clinical_consistency(wrong, fs, size_tol_rel=0.15) < 1.0


# --- parser -------------------------------------------------------------------------------


def test_parser_details() -> None:
    sents = split_sentences(
        "1. A 7.2 mm solid nodule in the right upper zone. No pleural effusion.\n2. Foo."
    )
    assert sents == [
        "A 7.2 mm solid nodule in the right upper zone.",
        "No pleural effusion.",
        "Foo.",
    ]
    (st,) = extract_statements("There is a 2.3 cm spiculated mass at the left lung base.")
    assert (st.kind, st.side, st.zone, st.size_mm) == ("mass", "left", "lower", 23.0)
    (st,) = extract_statements(
        "Part-solid nodule (solid component 5.5 mm) in the right middle zone, measuring 14 mm."
    )
    assert (st.kind, st.size_mm, st.solid_mm) == ("part-solid nodule", 14.0, 5.5)
    # advice and thresholds are not findings
    assert (
        extract_statements(
            "Fleischner Society 2017: single solid nodule 6 to 8 mm: CT at 6-12 months."
        )
        == []
    )
    assert extract_statements("Recommend CT for the nodule over 8 mm.") == []
    negs = extract_statements(NORMAL_FINDINGS, include_negated=True)
    assert len(negs) == 1 and negs[0].negated
    assert set(negs[0].kinds) == {"nodule", "mass", "pleural effusion"}


# --- guidelines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "risk", "mult", "cat", "text"),
    [
        ([4.0], "low", "single", "<6", "no routine follow-up"),
        ([4.0], "high", "single", "<6", "optional CT at 12 months"),
        ([5.4], "low", "single", "<6", "no routine follow-up"),
        ([5.5], "low", "single", "6-8", "CT at 6-12 months, then consider CT at 18-24 months"),
        ([7.0], "high", "single", "6-8", "CT at 6-12 months, then CT at 18-24 months"),
        ([8.4], "low", "single", "6-8", "CT at 6-12 months, then consider CT at 18-24 months"),
        ([8.6], "low", "single", ">8", "consider CT at 3 months, PET/CT or tissue sampling"),
        ([20.0], "high", "single", ">8", "consider CT at 3 months, PET/CT or tissue sampling"),
        ([3.0, 4.0], "low", "multiple", "<6", "no routine follow-up"),
        ([3.0, 4.0], "high", "multiple", "<6", "optional CT at 12 months"),
        (
            [3.0, 7.0],
            "low",
            "multiple",
            "6-8",
            "CT at 3-6 months, then consider CT at 18-24 months",
        ),
        ([3.0, 7.0], "high", "multiple", "6-8", "CT at 3-6 months, then CT at 18-24 months"),
        (
            [12.0, 7.0],
            "low",
            "multiple",
            ">8",
            "CT at 3-6 months, then consider CT at 18-24 months",
        ),
        ([12.0, 7.0], "high", "multiple", ">8", "CT at 3-6 months, then CT at 18-24 months"),
    ],
)
def test_fleischner_solid(sizes: list[float], risk: str, mult: str, cat: str, text: str) -> None:
    fs = [make("solid nodule", d, fid=f"F{i}") for i, d in enumerate(sizes)]
    c = solid_category(fs, risk=risk)
    assert c is not None
    assert (c.multiplicity, c.size_category, c.text) == (mult, cat, text)
    lines = recommendation(fs, risk=risk)
    assert len(lines) == 1 and "Fleischner Society 2017" in lines[0] and text in lines[0]


@pytest.mark.parametrize(
    ("findings", "table", "cat", "phrase"),
    [
        ([("ground-glass nodule", 5.0, None)], "ground-glass", "<6", "no routine follow-up"),
        (
            [("ground-glass nodule", 6.0, None)],
            "ground-glass",
            ">=6",
            "CT every 2 years until 5 years",
        ),
        ([("part-solid nodule", 5.0, 2.0)], "part-solid", "<6", "no routine follow-up"),
        ([("part-solid nodule", 9.0, 4.0)], "part-solid", ">=6", "annual CT for 5 years"),
        ([("part-solid nodule", 14.0, 7.0)], "part-solid", ">=6", "highly suspicious"),
        (
            [("ground-glass nodule", 4.0, None), ("part-solid nodule", 5.0, 2.0)],
            "multiple subsolid",
            "<6",
            "consider CT at 2 and 4 years",
        ),
        (
            [("ground-glass nodule", 4.0, None), ("ground-glass nodule", 7.0, None)],
            "multiple subsolid",
            ">=6",
            "most suspicious nodule",
        ),
    ],
)
def test_fleischner_subsolid(findings: list, table: str, cat: str, phrase: str) -> None:
    fs = []
    for i, (kind, d, solid) in enumerate(findings):
        attrs = {} if solid is None else {"solid_diameter_mm": solid}
        fs.append(make(kind, d, fid=f"F{i}", **attrs))
    c = subsolid_category(fs)
    assert c is not None
    assert (c.table, c.size_category) == (table, cat)
    assert phrase in c.text
    # subsolid management does not depend on risk
    assert recommendation(fs, risk="low") == recommendation(fs, risk="high")


def test_fleischner_size_is_mean_of_axes() -> None:
    assert fleischner_size_mm(make(d=8.0, s=4.0)) == 6
    assert fleischner_size_mm(make(d=7.0, s=0.0)) == 7
    assert solid_category([make(d=9.0, s=2.0)]).size_category == "6-8"  # mean 5.5 rounds to 6
    assert solid_category([make(d=9.0, s=1.8)]).size_category == "<6"  # mean 5.4 rounds to 5


def test_other_recommendations() -> None:
    assert recommendation([]) == []
    (line,) = recommendation([make("mass", 45, 30)])
    assert "tissue sampling" in line and "multidisciplinary" in line
    (line,) = recommendation([make("calcified nodule", 5)])
    assert "benign" in line and "no follow-up" in line
    (line,) = recommendation([make("pleural effusion", 80, 20, volume_ml=200)])
    assert "thoracentesis" in line
    # a "solid nodule" over 30 mm is managed as a mass
    (line,) = recommendation([make("solid nodule", 32, 25)])
    assert "tissue sampling" in line
    assert recommendation([make(status="rejected")]) == []
    with pytest.raises(ValueError, match="risk"):
        recommendation([make()], risk="medium")


@pytest.mark.parametrize(
    ("ml", "grade"),
    [
        (10, "small"),
        (299, "small"),
        (299.4, "small"),
        (299.5, "moderate"),
        (299.6, "moderate"),
        (300, "moderate"),
        (999, "moderate"),
        (999.4, "moderate"),
        (999.5, "large"),
        (1000, "large"),
    ],
)
def test_effusion_grade(ml: float, grade: str) -> None:
    # graded on the volume as the report writes it (whole ml from 10 ml): 299.6 ml is "300 ml"
    assert effusion_grade(ml) == grade


# --- guideline audit: unknown risk, nodules beside a mass, mass wording, effusions, table ---


def _advice(findings: list[Finding], **kw: object) -> list[str]:
    """The impression's recommendation lines (those of no finding) of the written report."""
    r = write_report(findings, **kw)
    return [s.text for s in r.sentences if s.section == "impression" and s.finding_id is None]


@pytest.mark.parametrize(
    ("sizes", "text"),
    [
        (
            [4.0],
            "single solid, under 6 mm (mean diameter 4 mm): low risk, no routine follow-up; high risk, "
            "optional CT at 12 months.",
        ),
        (
            [7.0],
            "single solid, 6 to 8 mm (mean diameter 7 mm): low risk, CT at 6-12 months, then consider "
            "CT at 18-24 "
            "months; high risk, CT at 6-12 months, then CT at 18-24 months.",
        ),
        (
            [3.0, 4.0],
            "multiple solid, under 6 mm (mean diameter 4 mm): low risk, no routine follow-up; high risk",
        ),
        # where the two managements are the same, one text without the risk words
        (
            [12.0],
            "single solid, over 8 mm (mean diameter 12 mm): consider CT at 3 months, PET/CT or "
            "tissue sampling.",
        ),
    ],
)
def test_solid_line_gives_both_risks_when_risk_is_not_known(sizes: list[float], text: str) -> None:
    """Nothing records the patient's risk: every impression said "low-risk patient"."""
    fs = [make("solid nodule", d, fid=f"F{i}") for i, d in enumerate(sizes)]
    (line,) = recommendation(fs)
    assert line.startswith(
        "Fleischner Society 2017, incidental nodules in adults 35 years or older: "
    )
    assert text in line
    assert "risk patient" not in line
    if sizes == [12.0]:
        assert "risk" not in line
    assert _advice(fs) == [line]
    assert recommendation(fs, risk=None) == [line]
    assert solid_category(fs).text in line
    # a caller that knows the risk still gets the one management
    (low,) = recommendation(fs, risk="low")
    assert "low-risk patient" in low and "high risk" not in low
    (high,) = recommendation(fs, risk="high")
    assert "high-risk patient" in high and "low risk" not in high
    assert _advice(fs, risk="high") == [high]


def test_no_report_asserts_a_risk_by_default() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        fs = [random_finding(rng, f"F{i}") for i in range(int(rng.integers(1, 6)))]
        r = write_report(fs)
        assert "risk patient" not in r.impression and "low-risk" not in r.impression


def test_nodules_beside_a_mass_get_no_incidental_nodule_advice() -> None:
    """A 5 mm nodule next to a 45 mm spiculated mass got "no routine follow-up"."""
    fs = [
        make("mass", 45, 30, fid="F1", shape="spiculated"),
        make("solid nodule", 5.0, side="left", fid="F2"),
        make("ground-glass nodule", 7.0, side="left", fid="F3"),
        make("calcified nodule", 4.0, fid="F4"),
    ]
    lines = recommendation(fs)
    assert lines == [
        "Lung mass (outside the Fleischner Society 2017 guideline, which covers nodules up to "
        "30 mm): recommend contrast-enhanced chest CT or PET/CT staging, tissue sampling and "
        "multidisciplinary team review.",
        "Nodule(s) alongside a mass suspicious for malignancy: outside the Fleischner Society "
        "2017 guideline (not for known or suspected cancer); assess at staging.",
        "Calcified nodule(s): benign pattern of calcification; no follow-up needed "
        "(Fleischner Society 2017).",
    ]
    assert recommendation(fs, risk="high") == lines
    assert not any("incidental" in ln or "follow-up;" in ln for ln in lines)
    r = write_report(fs)
    assert _advice(fs) == lines
    assert clinical_consistency(r, fs) == 1.0
    # the categories themselves are still computed for callers that ask
    assert solid_category(fs) is not None and subsolid_category(fs) is not None
    # a mass alone, or with calcified nodules only, gets no nodule line
    assert len(recommendation(fs[:1])) == 1
    assert not any("alongside" in ln for ln in recommendation([fs[0], fs[3]]))
    # a rejected mass leaves the nodules incidental again
    rejected = make("mass", 45, 30, fid="F1", status="rejected")
    assert any("incidental nodules" in ln for ln in recommendation([rejected, fs[1]]))


def test_mass_line_makes_no_size_claim_and_names_the_lesion_as_the_report_does() -> None:
    """A reader's 25 mm "mass" was "Mass larger than 30 mm"; a 32 mm ground-glass nodule was a
    "nodule" in one impression line and a "Mass" in the next."""
    (line,) = recommendation([make("mass", 25, 20)])
    assert line.startswith(
        "Lung mass (outside the Fleischner Society 2017 guideline, which covers nodules up to "
        "30 mm): recommend"
    )
    assert "larger than" not in line
    for kind in ("ground-glass nodule", "part-solid nodule", "solid nodule"):
        fs = [make(kind, 32, 25, solid_diameter_mm=10.0)]
        r = write_report(fs)
        (line,) = _advice(fs)
        assert line.startswith("Lesion over 30 mm (outside the Fleischner Society 2017 guideline")
        assert "tissue sampling" in line
        assert "mass" not in r.impression.lower()  # the lesion is never called a mass
        assert f"32 mm {kind}" in r.impression
    # nodules beside a lesion over 30 mm are not incidental either
    fs = [make("ground-glass nodule", 32, 25, fid="F1"), make("solid nodule", 5, fid="F2")]
    lines = recommendation(fs)
    assert lines[1] == (
        "Nodule(s) alongside a lesion over 30 mm: outside the Fleischner Society 2017 guideline "
        "(not for known or suspected cancer); assess at staging."
    )
    assert len(lines) == 2
    # a mass and a lesion over 30 mm: one line naming both
    (line, _) = recommendation([make("mass", 45, 30, fid="F1"), *fs])
    assert line.startswith("Lung mass and lesion over 30 mm (outside")


@pytest.mark.parametrize(
    ("ml", "grade", "shown"),
    [(299.6, "Moderate", "300 ml"), (299.4, "Small", "299 ml"), (999.5, "Large", "1000 ml")],
)
def test_effusion_grade_agrees_with_the_volume_shown(ml: float, grade: str, shown: str) -> None:
    """299.6 ml was "Small right pleural effusion (300 ml)"."""
    f = make("pleural effusion", 80, 30, side="right", zone="lower", volume_ml=ml)
    r = write_report([f])
    assert f"{grade} right pleural effusion ({shown})." in r.impression
    assert r.findings.startswith(f"{grade} right pleural effusion") and shown in r.findings
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert grade.lower() in describe_finding(f, rng=rng).lower()


def test_midline_effusion_names_the_midline_once() -> None:
    """It read "Small midline pleural effusion in the midline in the lower zone"."""
    f = make("pleural effusion", 50, 20, side="midline", zone="lower", volume_ml=50)
    text = describe_finding(f)
    assert text.startswith("Small midline pleural effusion in the lower zone, measuring 50 x 20 mm")
    rng = np.random.default_rng(3)
    for t in {text, *(describe_finding(f, rng=rng) for _ in range(30))}:
        assert t.lower().count("midline") == 1, t
        (st,) = extract_statements(t)
        assert (st.kind, st.side, st.zone) == ("pleural effusion", "midline", "lower")
    assert "Small midline pleural effusion (50 ml)." in write_report([f]).impression


def test_findings_table_gives_small_volumes_in_mm3() -> None:
    """A 7 mm³ nodule read "0.0 ml" in report.md's findings table."""
    from napari_ctreport.report.markdown import findings_table_rows, render_markdown

    fs = [
        make("solid nodule", 2.4, fid="F1", volume_ml=0.007),
        make("solid nodule", 6.7, fid="F2", volume_ml=0.158),
        make("solid nodule", 12.0, fid="F3", volume_ml=0.9996),
        make("mass", 45, 30, fid="F4", volume_ml=25.34),
        make("pleural effusion", 50, 20, fid="F5", volume_ml=0.5),  # as the text states it
        make("solid nodule", 4.0, fid="F6"),
    ]
    vols = [row[5] for row in findings_table_rows(fs)]
    assert vols == ["7 mm³", "158 mm³", "1.0 ml", "25 ml", "0.5 ml", "-"]
    md = render_markdown(findings=fs, report=write_report(fs), draft=True, case_id="c1")
    assert "| 158 mm³ |" in md and "0.0 ml" not in md


def test_mixed_nodules_are_not_each_called_single_and_the_deciding_size_is_given():
    """A 4 mm solid nodule and a 6.8 x 4.0 mm ground-glass nodule: under "Two pulmonary
    nodules" each line said "single", and "6.8 mm ... under 6 mm" read as a contradiction. The
    lines name their type without "single", give the mean diameter that decided the category,
    and say the most suspicious nodule guides management."""
    solid = make("solid nodule", 4.0, fid="F1")
    ggn = make("ground-glass nodule", 6.8, fid="F2")
    ggn.short_axis_mm = 4.0
    lines = recommendation([solid, ggn])
    assert len(lines) == 3 and not any("single" in t for t in lines)
    assert ": solid, under 6 mm (mean diameter 4 mm):" in lines[0]
    assert ": ground-glass, under 6 mm (mean diameter 5 mm):" in lines[1]
    assert "most suspicious nodule" in lines[2]
    (alone,) = recommendation([ggn])
    assert ": single ground-glass, under 6 mm (mean diameter 5 mm):" in alone


def test_a_calcified_lesion_over_30_mm_is_not_called_benign():
    """A 35 mm calcified lesion gets the work-up of a lesion over 30 mm; its impression item
    called it "benign" beside that advice. A small calcified nodule is still benign."""
    big = make("calcified nodule", 35.0, fid="F1")
    imp = write_report([big]).impression
    assert "benign" not in imp and "Lesion over 30 mm" in imp
    small = make("calcified nodule", 5.0, fid="F2")
    assert "calcified nodule in the" in write_report([small]).impression
    assert ", benign." in write_report([small]).impression
    both = write_report([big, make("calcified nodule", 5.0, fid="F3")]).impression
    assert "Two calcified nodules, the largest 35 mm" in both


def test_guideline_thresholds_read_the_written_figures():
    """What the report writes decides: a solid component written "5.5 mm" is 6 mm to the
    nearest millimetre whether it measured 5.45 or 5.5 (they got different managements beside
    the same printed figure); a nodule written "30 mm" is not over 30 mm (30.04 and 30.06 mm,
    both "30 mm", went to different pathways); a 35 mm calcified lesion sent for staging is not
    "compatible with a calcified granuloma" in the findings; 999.6 ml of lung, written
    "1000 ml", is a whole chest."""
    for solid in (5.45, 5.5):
        f = make("part-solid nodule", 12.0, 10.0, solid_diameter_mm=solid)
        r = write_report([f])
        assert "5.5 mm solid component" in r.findings
        assert "highly suspicious" in subsolid_category([f]).text, solid
    assert (
        "highly suspicious"
        not in subsolid_category(
            [make("part-solid nodule", 12.0, 10.0, solid_diameter_mm=5.44)]
        ).text
    )
    for d in (30.04, 30.06):
        imp = write_report([make("solid nodule", d, 25.0)]).impression
        assert "30 mm solid nodule" in imp and "Lesion over 30 mm" not in imp, d
        assert "over 8 mm" in imp
    assert "Lesion over 30 mm" in write_report([make("solid nodule", 30.5, 25.0)]).impression
    big = write_report([make("calcified nodule", 35.0)])
    assert "granuloma" not in big.findings and "Lesion over 30 mm" in big.impression
    assert "granuloma" in write_report([make("calcified nodule", 29.9)]).findings
    assert coverage_note(999.6) is None
    assert "(999 ml of lung)" in coverage_note(999.4)[0]


@pytest.mark.parametrize(
    ("text", "n_bad"),
    [
        ("Two pulmonary nodules, the largest a 7.2 mm solid nodule in the right upper zone.", 1),
        (
            "Two pulmonary nodules, the largest a 9.0 mm ground-glass nodule in the left upper zone.",
            0,
        ),
        ("A 9.0 mm ground-glass nodule in the left upper zone without pleural effusion.", 1),
        # (review of session 46) sizes of two digits and counts start a new mention too
        ("A 7.2 mm solid nodule in the right upper zone and 12 mm solid nodule in the LLL.", 1),
        ("A 7.2 mm solid nodule in the right upper zone, 12 mm mass in the left lower zone.", 1),
        ("A 7.2 mm solid nodule in the right upper zone with no pleural effusion.", 1),
        ("No masses, but a 7.2 mm solid nodule in the right upper zone.", 0),
        ("No new nodules. No other nodule in the right lung.", 0),
        ("No change in the 7.2 mm solid nodule in the right upper zone.", 0),
        ("No pericardial effusion.", 0),
        ("Pleural effusion: none.", 1),
        ("No nodule in the right lower zone.", 0),
        ("No nodule in the right upper zone.", 1),
        ("A 7.2 mm solid nodule in the RLL.", 0),
        # (session 47) a nodule named beside another finding is a nodule (it was the effusion)
        ("A 7.2 mm nodule abutting the pleural effusion in the right upper zone.", 0),
        ("A 9 mm nodule near the effusion, left upper zone.", 0),
        ("A 12 mm nodule near the effusion, left upper zone.", 1),
    ],
)
def test_the_largest_and_a_denial_without_a_comma(text: str, n_bad: int) -> None:
    fs = [
        make("solid nodule", 7.2, fid="F1"),
        make("ground-glass nodule", 9.0, side="left", fid="F2"),
        make("pleural effusion", 90, 30, fid="F3", zone="lower", volume_ml=120.0),
    ]
    assert len(_bad(text, fs)) == n_bad, _bad(text, fs)


def test_the_impression_keeps_the_shape_and_the_solid_component():
    """A single nodule's impression line gives what decides its management: a part-solid
    nodule's solid component and a spiculated outline (both were only in the findings)."""
    ps = make("part-solid nodule", 14.0, 10.0, solid_diameter_mm=6.0, zone="middle")
    assert "1. 14 mm part-solid nodule with a 6.0 mm solid component in the right middle zone." in (
        write_report([ps]).impression
    )
    sp = make("solid nodule", 9.0, 7.0, shape="spiculated")
    assert write_report([sp]).impression.startswith(
        "1. 9.0 mm spiculated solid nodule in the right upper zone."
    )
    for f in (ps, sp):
        assert consistency_details(write_report([f]), [f])["consistency"] == 1.0


# --- the impression's guideline lines are checked ---------------------------------------------

_SCOPE = "Fleischner Society 2017, incidental nodules in adults 35 years or older"
_SINGLE_6_8 = "CT at 6-12 months, then consider CT at 18-24 months"


def _guideline_rows(text: str, fs: list[Finding], **kw: float) -> list[bool]:
    """Whether each guideline line of ``text`` agrees with ``fs``."""
    rows = consistency_details(text, fs, **kw)["statements"]
    return [ok for st, ok, _ in rows if st.guideline is not None]


@pytest.mark.parametrize(
    ("findings", "line"),
    [
        # a size category (and its mean diameter) edited: the nodule's mean diameter is 7 mm
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single solid, over 8 mm (mean diameter 9 mm): {_SINGLE_6_8}.",
        ),
        # the size category alone
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single solid, under 6 mm (mean diameter 7 mm): {_SINGLE_6_8}.",
        ),
        (
            [make("ground-glass nodule", 5.0)],
            f"{_SCOPE}: single ground-glass, 6 mm or more (mean diameter 5 mm): no routine "
            "follow-up.",
        ),
        # the mean diameter alone (category and management still right), to its rounding
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 8 mm): {_SINGLE_6_8}.",
        ),
        (
            [make("solid nodule", 9.0, 5.0)],
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7.4 mm): {_SINGLE_6_8}.",
        ),
        # the multiplicity: two solid nodules (under 6 mm, where the managements are the same)
        (
            [make("solid nodule", 4.0), make("solid nodule", 5.0, fid="F2")],
            f"{_SCOPE}: single solid, under 6 mm (mean diameter 5 mm): low risk, no routine "
            "follow-up; high risk, optional CT at 12 months.",
        ),
        (
            [make("solid nodule", 4.0)],
            f"{_SCOPE}: multiple solid, under 6 mm (mean diameter 4 mm): low risk, no routine "
            "follow-up; high risk, optional CT at 12 months.",
        ),
        (
            [make("ground-glass nodule", 7.0), make("ground-glass nodule", 4.0, fid="F2")],
            f"{_SCOPE}: single ground-glass, 6 mm or more (mean diameter 7 mm): CT at 6-12 "
            "months to confirm persistence, then CT every 2 years until 5 years.",
        ),
        # a subsolid category without subsolid nodules, a part-solid one beside a ground-glass
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single ground-glass, 6 mm or more (mean diameter 7 mm): CT at 6-12 "
            "months to confirm persistence, then CT every 2 years until 5 years.",
        ),
        (
            [make("solid nodule", 4.0), make("solid nodule", 7.0, fid="F2")],
            f"{_SCOPE}: multiple subsolid, 6 mm or more (mean diameter 7 mm): CT at 3-6 months; "
            "subsequent management based on the most suspicious nodule(s).",
        ),
        (
            [make("ground-glass nodule", 7.0)],
            f"{_SCOPE}: single part-solid, 6 mm or more (mean diameter 7 mm): CT at 3-6 months "
            "to confirm persistence; if unchanged and the solid component remains under 6 mm, "
            "annual CT for 5 years.",
        ),
        # the management of another category, of another table, or of the other risk
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7 mm): consider CT at 3 months, "
            "PET/CT or tissue sampling.",
        ),
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7 mm): CT at 6-12 months to "
            "confirm persistence, then CT every 2 years until 5 years.",
        ),
        (
            [make("solid nodule", 7.0)],
            f"{_SCOPE}, low-risk patient: single solid, 6 to 8 mm (mean diameter 7 mm): CT at "
            "6-12 months, then CT at 18-24 months.",
        ),
        (
            [make("part-solid nodule", 12.0, 10.0, solid_diameter_mm=4.0)],
            f"{_SCOPE}: single part-solid, 6 mm or more (mean diameter 11 mm): highly suspicious "
            "if persistent (solid component 6 mm or more): CT at 3-6 months to confirm "
            "persistence, then consider PET/CT, tissue sampling or resection.",
        ),
        # a Fleischner category beside a mass (the guideline does not apply)
        (
            [make("solid nodule", 7.0), make("mass", 45.0, 30.0, fid="F2")],
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7 mm): {_SINGLE_6_8}.",
        ),
        # the other lines name findings there are not
        (
            [make("solid nodule", 7.0)],
            "Lesion over 30 mm (outside the Fleischner Society 2017 guideline, which covers "
            "nodules up to 30 mm): recommend contrast-enhanced chest CT or PET/CT staging.",
        ),
        (
            [make("mass", 45.0, 30.0)],
            "Nodule(s) alongside a mass suspicious for malignancy: outside the Fleischner "
            "Society 2017 guideline (not for known or suspected cancer); assess at staging.",
        ),
        (
            [make("solid nodule", 7.0), make("solid nodule", 4.0, fid="F2")],
            "Solid and subsolid nodules together: management by the most suspicious nodule "
            "(Fleischner Society 2017).",
        ),
    ],
)
def test_a_wrong_guideline_line_is_inconsistent(findings: list[Finding], line: str) -> None:
    """A reader's edit of the impression's guideline line (a figure, the category, the
    management) passed the export check: advice was never read."""
    details = consistency_details(f"1. As above.\n2. {line}", findings)
    bad = [st for st, ok, _ in details["statements"] if not ok]
    assert [st.sentence for st in bad] == [line]
    assert details["consistency"] < 1.0


@pytest.mark.parametrize(
    "findings",
    [
        [make("solid nodule", 5.0)],
        [make("solid nodule", 7.0, 5.0), make("solid nodule", 4.0, side="left", fid="F2")],
        [make("solid nodule", 12.0, 9.0), make("solid nodule", 6.0, side="left", fid="F2")],
        [make("part-solid nodule", 14.0, 10.0, solid_diameter_mm=6.0)],
        [make("part-solid nodule", 12.0, 10.0, solid_diameter_mm=5.4)],
        [make("part-solid nodule", 5.0, 4.0, solid_diameter_mm=2.0)],
        [make("ground-glass nodule", 6.8, 4.0)],
        [make("ground-glass nodule", 9.0), make("part-solid nodule", 5.0, fid="F2")],
        [make("solid nodule", 4.0), make("ground-glass nodule", 6.8, 4.0, fid="F2")],
        [
            make("solid nodule", 9.0),
            make("part-solid nodule", 8.0, solid_diameter_mm=3.0, fid="F2"),
            make("calcified nodule", 4.0, fid="F3"),
        ],
        [make("mass", 45.0, 30.0), make("solid nodule", 5.0, side="left", fid="F2")],
        [make("ground-glass nodule", 32.0, 25.0), make("solid nodule", 5.0, fid="F2")],
        [make("mass", 45.0, 30.0), make("solid nodule", 32.0, 25.0, fid="F2")],
    ],
)
@pytest.mark.parametrize("risk", [None, "low", "high"])
def test_the_writers_guideline_lines_are_read_and_agree(
    findings: list[Finding], risk: str | None
) -> None:
    r = write_report(findings, risk=risk)
    rows = _guideline_rows(r.impression, findings)
    assert rows and all(rows), r.impression
    assert consistency_details(r, findings)["consistency"] == 1.0


def test_guideline_lines_to_a_size_tolerance_and_free_advice() -> None:
    """Against ground truth (a tolerance) the mean diameter is a size like the others, and a
    nodule near a threshold may be in either category; advice in other words is not read."""
    near = [make("solid nodule", 8.4)]  # mean 8.4 mm: 6 to 8 mm
    over = f"{_SCOPE}: single solid, over 8 mm (mean diameter 9 mm): consider CT at 3 months."
    assert _guideline_rows(over, near) == [False]
    assert _guideline_rows(over, near, size_tol_mm=0.6) == [True]
    assert _guideline_rows(over, [make("solid nodule", 7.2)], size_tol_mm=0.6) == [False]
    close = f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 8 mm): {_SINGLE_6_8}."
    assert _guideline_rows(close, [make("solid nodule", 7.2)]) == [False]
    assert _guideline_rows(close, [make("solid nodule", 7.2)], size_tol_rel=0.15) == [True]
    # the figure's rounding, in mm or cm
    fs = [make("solid nodule", 7.0, 6.0)]  # mean 6.5 mm
    for mean in ("6.5 mm", "0.65 cm", "7 mm"):
        line = f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter {mean}): {_SINGLE_6_8}."
        assert _guideline_rows(line, fs) == [True], mean
    assert _guideline_rows(line.replace("7 mm", "6.4 mm"), fs) == [False]
    # free advice is not a statement; an unknown management text is not checked
    for free, rows in (
        ("Follow-up CT in 12 months is recommended.", []),
        ("Fleischner Society 2017: single solid nodule 6 to 8 mm: CT at 6-12 months.", []),
        (
            f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7 mm): discuss with the patient.",
            [True],
        ),
    ):
        assert _guideline_rows(free, [make("solid nodule", 7.0)]) == rows, free
    # a finding stated before a guideline line in one sentence is still read, and prose that
    # names a nodule beside a mass is a finding, not the guideline's line
    text = f"A 7 mm solid nodule in the right upper zone; {_SCOPE}: single solid, 6 to 8 mm."
    sts = extract_statements(text)
    assert [(st.size_mm, st.guideline is None) for st in sts] == [(7.0, True), (None, False)]
    (st,) = extract_statements("A 5.0 mm solid nodule alongside the mass in the right lower zone.")
    assert st.guideline is None and (st.size_mm, st.zone) == (5.0, "lower")


def test_guideline_lines_as_a_reader_edits_them() -> None:
    """(Review of session 47.) Size categories in the spellings a reader types are read; a
    mean written with its rounding fits the category it rounds into; a management for both
    risks is checked half by half, and words added after a guideline text do not make it free
    advice; against ground truth the mean's own rounding adds to the tolerance."""
    seven = [make("solid nodule", 7.0)]
    for bucket in ("over 8mm", "> 8 mm", "more than 8 mm", "over  8 mm"):
        line = f"{_SCOPE}: single solid, {bucket} (mean diameter 9 mm): consider CT at 3 months."
        assert _guideline_rows(line, seven) == [False], bucket
    for bucket in ("6–8 mm", "6 - 8 mm", "6-8mm"):
        line = f"{_SCOPE}: single solid, {bucket} (mean diameter 7 mm): {_SINGLE_6_8}."
        assert _guideline_rows(line, seven) == [True], bucket
        assert _guideline_rows(line.replace("7 mm)", "9 mm)"), seven) == [False], bucket
    # a mean of 5.45 mm (under 6) written "5.5 mm"
    small = [make("solid nodule", 5.5, 5.4)]
    line = (
        f"{_SCOPE}: single solid, under 6 mm (mean diameter 5.5 mm): low risk, no routine "
        "follow-up; high risk, optional CT at 12 months."
    )
    assert _guideline_rows(line, small) == [True]
    # one half of the management for both risks edited to another category's
    edited = line.replace("optional CT at 12 months", "CT at 3-6 months, then CT at 18-24 months")
    assert _guideline_rows(edited, small) == [False]
    assert _guideline_rows(line[:-1] + " (per radiologist).", small) == [True]
    wrong = f"{_SCOPE}: single solid, under 6 mm (mean diameter 5.5 mm): consider CT at 3 months"
    assert _guideline_rows(wrong + ", PET/CT or tissue sampling (per radiologist).", small) == [
        False
    ]
    # against the truth (tolerance 0.6 mm): a prediction of 6.5 mm written "7 mm" for 6.3
    line = f"{_SCOPE}: single solid, 6 to 8 mm (mean diameter 7 mm): {_SINGLE_6_8}."
    assert _guideline_rows(line, [make("solid nodule", 6.3, 6.3)], size_tol_mm=0.6) == [True]
    assert _guideline_rows(line, [make("solid nodule", 5.8, 5.8)], size_tol_mm=0.6) == [False]


@pytest.mark.parametrize(
    ("text", "kind", "size"),
    [
        ("A 35 mm spiculated nodule/mass in the right upper lobe.", "mass", 35.0),
        ("Right upper lobe nodule, now a 35 mm mass.", "mass", 35.0),
        ("Multiple nodules alongside a 45 mm mass in the left upper zone.", "mass", 45.0),
        ("A 7.2 mm nodule abutting the pleural effusion in the right upper zone.", "nodule", 7.2),
        ("Nodule: a 7 mm solid nodule in the right upper zone.", "solid nodule", 7.0),
    ],
)
def test_the_finding_a_clause_states_is_the_one_its_size_belongs_to(
    text: str, kind: str, size: float
) -> None:
    """(Review of session 47.) A clause naming a nodule and a mass or effusion states the one
    named from its size on; a generic nodule is the kind named next unless set beside it."""
    (st,) = extract_statements(text)
    assert (st.kind, st.size_mm) == (kind, size)
