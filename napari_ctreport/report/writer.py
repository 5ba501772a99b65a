"""Grounded report text: every sentence comes from one finding's attributes.

Size rule (shared with :mod:`.parse`): a length is written in millimetres with one decimal below
10 mm (``"7.2 mm"``) and as a whole number from 10 mm up (``"23 mm"``), rounding halves upwards;
volumes are written in ml, with one decimal below 10 ml and whole numbers above. No size is
computed here: every number is the finding's own ``diameter_mm``, ``short_axis_mm``,
``volume_ml`` or ``attributes["solid_diameter_mm"]``, formatted by that rule.

With ``rng=None`` the writer uses one canonical phrasing (what the model's reports use); with a
:class:`numpy.random.Generator` it picks among several templates, so that synthetic reference
reports are not all one template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .findings import Finding
from .guidelines import is_mass, recommendation, round_half_up
from .lexicon import SHAPES, effusion_grade, written_ml, written_mm

#: The findings section when there is nothing to report.
NORMAL_FINDINGS = "No pulmonary nodules, masses or pleural effusions."
#: The impression when there is nothing to report.
NORMAL_IMPRESSION = "No pulmonary nodule, mass or pleural effusion."
#: A scan with less segmented lung than this (ml) holds only part of the lungs (the lung bases of
#: an abdominal CT, a cropped field of view; an adult chest holds several litres): its report
#: says so (:func:`coverage_note`) instead of letting "no nodule" stand for the whole lungs. On
#: the real CTs of ``../shared``: 117 ml (two abdominal CTs with the lung bases), 498 ml (an
#: upper-abdominal series), 1906 ml (a central chest crop), 2912 and 4029 ml (chest CTs).
PARTIAL_LUNG_ML = 1000.0
#: Under this much segmented lung (ml) the scan holds no lung at all, and the report says that
#: instead of "no nodule".
NO_LUNG_ML = 1.0

SECTIONS: tuple[str, ...] = ("findings", "impression")

_NUMBER_WORDS = {
    2: "Two",
    3: "Three",
    4: "Four",
    5: "Five",
    6: "Six",
    7: "Seven",
    8: "Eight",
    9: "Nine",
    10: "Ten",
}

# Clinical order of kinds in a report: masses first, effusions last.
_KIND_ORDER = {
    "mass": 0,
    "solid nodule": 1,
    "part-solid nodule": 1,
    "ground-glass nodule": 1,
    "calcified nodule": 2,
    "pleural effusion": 3,
}


@dataclass
class Sentence:
    """One sentence of a report and the finding it states (``None`` for normal statements)."""

    text: str
    finding_id: str | None
    section: str

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"unknown report section {self.section!r}; expected one of {SECTIONS}")


@dataclass
class Report:
    """A report: the two sections as text, and the sentences they are made of."""

    findings: str
    impression: str
    sentences: list[Sentence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict ``{"findings", "impression", "sentences": [{text, finding_id, section}]}``."""
        return {
            "findings": self.findings,
            "impression": self.impression,
            "sentences": [asdict(s) for s in self.sentences],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """Build a report from :meth:`to_dict` output (``sentences`` may be absent)."""
        return cls(
            findings=str(d.get("findings", "")),
            impression=str(d.get("impression", "")),
            sentences=[Sentence(**s) for s in d.get("sentences", [])],
        )

    @property
    def text(self) -> str:
        """The whole report as plain text with section headings."""
        return f"FINDINGS:\n{self.findings}\n\nIMPRESSION:\n{self.impression}"


def format_mm(value: float) -> str:
    """Format a length by the size rule: ``"7.2 mm"`` below 10 mm, ``"23 mm"`` from 10 mm."""
    return _written(written_mm(value), "mm")


def _num(value: float) -> str:
    """The number part of :func:`format_mm`."""
    return format_mm(value)[:-3]


def format_ml(value: float) -> str:
    """Format a volume: ``"4.5 ml"`` below 10 ml, ``"120 ml"`` from 10 ml (:func:`~.lexicon.
    written_ml`)."""
    return _written(written_ml(value), "ml")


def _written(shown: float, unit: str) -> str:
    """A figure already rounded as written: one decimal below 10, whole from 10."""
    return f"{shown:.1f} {unit}" if shown < 10.0 else f"{int(shown):d} {unit}"


def indefinite_article(size_text: str) -> str:
    """``"a"`` or ``"an"`` before a spoken number (an 8.0, an 11, an 18, an 80)."""
    head = size_text.split(" ")[0]
    integer = head.split(".")[0]
    if integer.startswith("8") or integer in ("11", "18"):
        return "an"
    return "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _location(f: Finding, *, variant: int = 0) -> str:
    """Where a finding is, e.g. ``"right upper zone"``."""
    if f.side == "midline":
        return f"{f.zone} zone, midline" if variant != 1 else f"midline {f.zone} zone"
    if f.side == "bilateral":
        return f"{f.zone} zones bilaterally" if variant != 1 else f"{f.zone} zones of both lungs"
    if variant == 1:
        return f"{f.zone} zone of the {f.side} lung"
    if variant == 2:
        return f"{f.side} {f.zone} lung zone"
    return f"{f.side} {f.zone} zone"


def _shape(f: Finding) -> str:
    shape = f.attributes.get("shape")
    return f"{shape} " if shape in SHAPES else ""


def _size_phrase(f: Finding, *, with_short: bool) -> str:
    if with_short and f.short_axis_mm > 0:
        return f"{_num(f.diameter_mm)} x {format_mm(f.short_axis_mm)}"
    return format_mm(f.diameter_mm)


def _solid_component(f: Finding) -> float | None:
    if f.kind != "part-solid nodule":
        return None
    value = f.attributes.get("solid_diameter_mm")
    if value is None or float(value) <= 0:
        return None
    return float(value)


def _describe_effusion(f: Finding, variant: int) -> str:
    grade = effusion_grade(f.volume_ml)
    side = "bilateral" if f.side == "bilateral" else f.side
    noun = "pleural effusions" if f.side == "bilateral" else "pleural effusion"
    dims = _size_phrase(f, with_short=True)
    vol = format_ml(f.volume_ml)
    zone = f"{f.zone} zone" + ("s" if f.side == "bilateral" else "")
    if variant == 1:
        return (
            f"{'There are' if f.side == 'bilateral' else 'There is a'} {grade} {side} {noun}, most "
            f"marked in the {zone}, measuring {dims} in axial extent (estimated volume {vol})."
        )
    if variant == 2:
        return (
            f"{_cap(side)} {noun} of {grade} size ({vol}), {dims} in axial extent, "
            f"predominantly in the {zone}."
        )
    return (
        f"{_cap(grade)} {side} {noun} in the {zone}, measuring {dims} in axial extent, "
        f"with an estimated volume of {vol}."
    )


def describe_finding(finding: Finding, *, rng: np.random.Generator | None = None) -> str:
    """Write one radiology-style sentence stating a finding's kind, side, zone and size.

    Parameters
    ----------
    finding
        The finding to describe; its numbers are copied by the module's size rule.
    rng
        ``None`` for the canonical phrasing; a generator to pick one of several templates.

    Returns
    -------
    str
        One sentence ending with a full stop.
    """
    variant = 0 if rng is None else int(rng.integers(0, 3))
    if finding.kind == "pleural effusion":
        return _describe_effusion(finding, variant)
    return _describe(finding, variant, 0 if rng is None else int(rng.integers(0, 3)))


def phrasings(finding: Finding) -> set[str]:
    """Every sentence :func:`describe_finding` may write for ``finding`` (each template and
    wording of its location)."""
    if finding.kind == "pleural effusion":
        return {_describe_effusion(finding, v) for v in range(3)}
    return {_describe(finding, v, w) for v in range(3) for w in range(3)}


def _describe(f: Finding, variant: int, loc_variant: int) -> str:
    """A nodule's or mass's sentence in template ``variant``, its location worded
    ``loc_variant`` (:func:`describe_finding`)."""
    shape = _shape(f)
    kind = f.kind
    mass_like = kind == "mass"
    size = _size_phrase(f, with_short=mass_like)
    loc = _location(f, variant=loc_variant)
    solid = _solid_component(f)
    solid_txt = ""
    if solid is not None:
        solid_txt = (
            f" with {indefinite_article(format_mm(solid))} {format_mm(solid)} solid component"
            if variant != 2
            else f" (solid component {format_mm(solid)})"
        )
    extra = ""
    if kind == "calcified nodule" and not is_mass(f):  # over 30 mm it is worked up as a mass
        extra = ", compatible with a calcified granuloma"
    elif mass_like and f.attributes.get("shape") == "spiculated":
        extra = ", suspicious for malignancy"
    lead = f"{shape}{kind}"
    if variant == 1:
        return f"There is {indefinite_article(size)} {size} {lead}{solid_txt} in the {loc}{extra}."
    if variant == 2:
        return f"{_cap(lead)}{solid_txt} in the {loc}, measuring {size}{extra}."
    return f"{_cap(indefinite_article(size))} {size} {lead}{solid_txt} in the {loc}{extra}."


def _order(findings: Sequence[Finding]) -> list[Finding]:
    active = [f for f in findings if f.status != "rejected"]
    return sorted(active, key=lambda f: (_KIND_ORDER.get(f.kind, 9), -f.diameter_mm, f.id))


def _impression_item(f: Finding) -> str:
    loc = _location(f)
    if f.kind == "mass":
        return f"{_cap(_size_phrase(f, with_short=True))} {_shape(f)}mass in the {loc}, suspicious for malignancy."
    if f.kind == "pleural effusion":
        noun = "pleural effusions" if f.side == "bilateral" else "pleural effusion"
        return f"{_cap(effusion_grade(f.volume_ml))} {f.side} {noun} ({format_ml(f.volume_ml)})."
    # the shape and a part-solid nodule's solid component, as in the findings: both bear on
    # the management (the component decides the part-solid line's category)
    solid = _solid_component(f)
    with_solid = (
        ""
        if solid is None
        else f" with {indefinite_article(format_mm(solid))} {format_mm(solid)} solid component"
    )
    return f"{_cap(format_mm(f.diameter_mm))} {_shape(f)}{f.kind}{with_solid} in the {loc}."


def coverage_note(lung_ml: float | None, *, lesions: bool = False) -> tuple[str, str] | None:
    """The findings sentence and the impression line that say only part of the lungs was in the
    scan (less than :data:`PARTIAL_LUNG_ML` of segmented lung), or ``None`` (a whole chest, or
    ``lung_ml`` unknown). They name no finding kind, so they state no finding. With ``lesions``
    (the report describes some) and under :data:`NO_LUNG_ML`, they say part of the lungs was
    scanned, not that none was: the segmentation missed lung the reader found a lesion in."""
    # judged on the volume as written: 999.6 ml read "only part ... (1000 ml of lung)"
    if lung_ml is None:
        return None
    shown = round_half_up(lung_ml)
    if shown >= PARTIAL_LUNG_ML:
        return None
    if lung_ml < NO_LUNG_ML and lesions:
        return (
            "Only part of the lungs is in the scanned volume; the rest was not assessed.",
            "Only part of the lungs was scanned.",
        )
    if lung_ml < NO_LUNG_ML:
        return (
            "No lung is in the scanned volume; the lungs were not assessed.",
            "Lungs not assessed: not in the scanned volume.",
        )
    ml = f"{shown:d} ml of lung"
    return (
        f"Only part of the lungs is in the scanned volume ({ml}); the rest was not assessed.",
        f"Only part of the lungs was scanned ({ml}).",
    )


def write_report(
    findings: Sequence[Finding],
    *,
    rng: np.random.Generator | None = None,
    risk: str | None = None,
    lung_ml: float | None = None,
) -> Report:
    """Write the findings and impression sections of a report from a case's findings.

    Parameters
    ----------
    findings
        The case's findings; those with status ``"rejected"`` are left out.
    rng
        ``None`` for canonical phrasing; a generator for varied phrasing (reference reports).
    risk
        Patient risk (``"low"`` or ``"high"``) for the Fleischner follow-up of solid nodules;
        ``None`` (the default: nothing records it) gives both managements where they differ.
    lung_ml
        Segmented lung in the scan (ml); under :data:`PARTIAL_LUNG_ML` both sections end with
        :func:`coverage_note`'s sentences. ``None``: not known (nothing is added).

    Returns
    -------
    Report
        Findings: one sentence per finding, masses first, then nodules by decreasing size,
        calcified nodules and effusions (or :data:`NORMAL_FINDINGS`). Impression: a numbered
        summary (one item per mass and effusion, one for all non-calcified nodules, one for the
        calcified ones) followed by numbered follow-up recommendations from
        :func:`~napari_ctreport.report.guidelines.recommendation`.
    """
    ordered = _order(findings)
    sentences: list[Sentence] = []
    note = coverage_note(lung_ml, lesions=bool(ordered))
    if not ordered:
        # (findings sentence, impression line) pairs; with no lung in the scan "no nodule" would
        # say nothing true about the lungs, and the note stands alone
        pairs = [(NORMAL_FINDINGS, NORMAL_IMPRESSION)]
        if note:
            pairs = [note] if lung_ml is not None and lung_ml < NO_LUNG_ML else [*pairs, note]
        sentences = [Sentence(t, None, "findings") for t, _ in pairs]
        sentences += [Sentence(t, None, "impression") for _, t in pairs]
        return Report(" ".join(t for t, _ in pairs), " ".join(t for _, t in pairs), sentences)

    for f in ordered:
        sentences.append(Sentence(describe_finding(f, rng=rng), f.id, "findings"))
    kinds = {f.kind for f in ordered}
    if "pleural effusion" not in kinds:
        sentences.append(Sentence("No pleural effusion.", None, "findings"))
    if note:
        sentences.append(Sentence(note[0], None, "findings"))

    items: list[tuple[str, str | None]] = []
    nodules = [
        f for f in ordered if f.kind in ("solid nodule", "part-solid nodule", "ground-glass nodule")
    ]
    calcified = [f for f in ordered if f.kind == "calcified nodule"]
    for f in ordered:
        if f.kind == "mass":
            items.append((_impression_item(f), f.id))
    if len(nodules) == 1:
        items.append((_impression_item(nodules[0]), nodules[0].id))
    elif nodules:
        big = nodules[0]
        count = _NUMBER_WORDS.get(len(nodules), "Multiple")
        items.append(
            (
                f"{count} pulmonary nodules, the largest {indefinite_article(format_mm(big.diameter_mm))} "
                f"{format_mm(big.diameter_mm)} {big.kind} in the {_location(big)}.",
                big.id,
            )
        )
    # "benign" only for calcified nodules: a calcified lesion over 30 mm gets the mass work-up
    # (recommendation's "lesion over 30 mm"), and the impression said "benign" beside it
    benign = ", benign" if calcified and not is_mass(calcified[0]) else ""
    if len(calcified) == 1:
        f = calcified[0]
        items.append(
            (
                f"{_cap(format_mm(f.diameter_mm))} calcified nodule in the {_location(f)}{benign}.",
                f.id,
            )
        )
    elif calcified:
        big = calcified[0]
        count = _NUMBER_WORDS.get(len(calcified), "Multiple")
        items.append(
            (
                f"{count} calcified nodules{benign}, the largest {format_mm(big.diameter_mm)} "
                f"in the {_location(big)}.",
                big.id,
            )
        )
    for f in ordered:
        if f.kind == "pleural effusion":
            items.append((_impression_item(f), f.id))
    for line in recommendation(ordered, risk=risk):
        items.append((line, None))
    if note:
        items.append((note[1], None))

    findings_text = " ".join(s.text for s in sentences)
    lines = []
    for i, (text, fid) in enumerate(items, start=1):
        lines.append(f"{i}. {text}")
        sentences.append(Sentence(text, fid, "impression"))
    return Report(findings_text, "\n".join(lines), sentences)
