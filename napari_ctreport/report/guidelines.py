"""Follow-up recommendations for the findings of a report.

Pulmonary nodules follow the Fleischner Society 2017 guideline for incidental pulmonary nodules
(MacMahon H. et al., *Radiology* 2017;284:228-243), which applies to incidentally found nodules
in adults aged 35 years or older; it does not apply to lung cancer screening, to patients with a
known primary cancer or to immunocompromised patients. Masses (a lesion of kind ``"mass"`` at any
size, or any lesion longer than 30 mm), calcified nodules and pleural effusions fall outside it and
get the recommendations below. Nodules found alongside a mass are not incidental nodules (the
mass makes cancer suspected): they get one line that says so instead of the Fleischner tables.

The management of solid nodules depends on the patient's risk for lung cancer (low or high). The
software does not know it (nothing records it), so by default (``risk=None``) the solid-nodule
line gives both managements where they differ; ``risk="low"`` or ``"high"`` gives one.

Nodule size for the guideline's categories is the mean of the long and short axis diameters,
rounded to the nearest millimetre (the long axis alone when no short axis is known), as the
guideline asks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .findings import Finding
from .lexicon import written_mm

#: Name of the nodule guideline, as it appears in recommendation lines.
FLEISCHNER = "Fleischner Society 2017"

#: Longest diameter (mm) above which a lesion is a mass rather than a nodule.
MASS_THRESHOLD_MM = 30.0

RISKS: tuple[str, ...] = ("low", "high")

SOLID_KINDS = frozenset({"solid nodule"})
SUBSOLID_KINDS = frozenset({"ground-glass nodule", "part-solid nodule"})

# (multiplicity, size category) -> (low-risk text, high-risk text)
_SOLID: dict[tuple[str, str], tuple[str, str]] = {
    ("single", "<6"): ("no routine follow-up", "optional CT at 12 months"),
    ("single", "6-8"): (
        "CT at 6-12 months, then consider CT at 18-24 months",
        "CT at 6-12 months, then CT at 18-24 months",
    ),
    ("single", ">8"): (
        "consider CT at 3 months, PET/CT or tissue sampling",
        "consider CT at 3 months, PET/CT or tissue sampling",
    ),
    ("multiple", "<6"): ("no routine follow-up", "optional CT at 12 months"),
    ("multiple", "6-8"): (
        "CT at 3-6 months, then consider CT at 18-24 months",
        "CT at 3-6 months, then CT at 18-24 months",
    ),
    ("multiple", ">8"): (
        "CT at 3-6 months, then consider CT at 18-24 months",
        "CT at 3-6 months, then CT at 18-24 months",
    ),
}

# (type, size category) -> text (subsolid nodules do not depend on risk)
_SUBSOLID: dict[tuple[str, str], str] = {
    ("ground-glass", "<6"): "no routine follow-up",
    ("ground-glass", ">=6"): (
        "CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years"
    ),
    ("part-solid", "<6"): "no routine follow-up",
    ("part-solid", ">=6"): (
        "CT at 3-6 months to confirm persistence; if unchanged and the solid component remains "
        "under 6 mm, annual CT for 5 years"
    ),
    ("part-solid", ">=6 solid>=6"): (
        "highly suspicious if persistent (solid component 6 mm or more): CT at 3-6 months to "
        "confirm persistence, then consider PET/CT, tissue sampling or resection"
    ),
    ("multiple", "<6"): "CT at 3-6 months; if stable, consider CT at 2 and 4 years",
    ("multiple", ">=6"): (
        "CT at 3-6 months; subsequent management based on the most suspicious nodule(s)"
    ),
}


@dataclass(frozen=True)
class NoduleCategory:
    """Where a group of nodules falls in the Fleischner tables."""

    table: str  # "solid", "ground-glass", "part-solid" or "multiple subsolid"
    multiplicity: str  # "single" or "multiple"
    size_category: str  # "<6", "6-8", ">8" (solid) or "<6", ">=6" (subsolid)
    size_mm: int  # the (rounded mean) size that decided the category
    text: str  # the recommended management


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves upwards (7.5 -> 8), as size rounding in reports."""
    return int(math.floor(value + 0.5))


def mean_diameter_mm(finding: Finding) -> float:
    """A nodule's mean diameter: the mean of its long and short axis (the long axis where no
    short axis was measured)."""
    d = finding.diameter_mm
    s = finding.short_axis_mm
    return (d + s) / 2.0 if s > 0 else d


def fleischner_size_mm(finding: Finding) -> int:
    """Size of a nodule for the Fleischner categories: its mean diameter, rounded."""
    return round_half_up(mean_diameter_mm(finding))


def _solid_category(size: int) -> str:
    if size < 6:
        return "<6"
    if size <= 8:
        return "6-8"
    return ">8"


def over_mass_size(length_mm: float) -> bool:
    """Whether a lesion's long axis is over :data:`MASS_THRESHOLD_MM` as the report writes it
    (:func:`~.lexicon.written_mm`: 30.3 mm is written "30 mm", a nodule's size): the one size
    rule of :func:`is_mass`, the analysis's names (``analysis.name_by_size``) and the
    synthetic truth's (``synth.generate.kind_by_size``)."""
    return written_mm(length_mm) > MASS_THRESHOLD_MM


def is_mass(f: Finding) -> bool:
    """Whether a finding is worked up as a mass: its kind is ``"mass"``, or it is a lesion whose
    long axis as written (:func:`~.lexicon.written_mm`) is over :data:`MASS_THRESHOLD_MM` (a
    30.1 mm nodule, written "30 mm", is a nodule: it was a "30 mm solid nodule" worked up as a
    lesion over 30 mm). The analysis names its own findings by the same rule
    (``analysis.name_by_size``)."""
    return f.kind == "mass" or (f.kind != "pleural effusion" and over_mass_size(f.diameter_mm))


def _active(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.status != "rejected"]


def solid_category(
    findings: Sequence[Finding], *, risk: str | None = None
) -> NoduleCategory | None:
    """Fleischner category of the solid nodules (30 mm or less) among ``findings``, or ``None``.

    With several solid nodules the "multiple" table applies and the largest nodule decides.
    With ``risk=None`` (not known) the text gives the low- and the high-risk management where
    they differ (``"low risk, no routine follow-up; high risk, optional CT at 12 months"``).
    """
    _check_risk(risk)
    solid = [f for f in _active(findings) if f.kind in SOLID_KINDS and not is_mass(f)]
    if not solid:
        return None
    size = max(fleischner_size_mm(f) for f in solid)
    mult = "single" if len(solid) == 1 else "multiple"
    cat = _solid_category(size)
    low, high = _SOLID[(mult, cat)]
    if risk == "low":
        text = low
    elif risk == "high":
        text = high
    else:
        text = low if low == high else f"low risk, {low}; high risk, {high}"
    return NoduleCategory("solid", mult, cat, size, text)


def subsolid_category(findings: Sequence[Finding]) -> NoduleCategory | None:
    """Fleischner category of the subsolid (ground-glass and part-solid) nodules, or ``None``.

    A single part-solid nodule of 6 mm or more whose solid component
    (``attributes["solid_diameter_mm"]``) is 6 mm or more is flagged as highly suspicious.
    """
    sub = [f for f in _active(findings) if f.kind in SUBSOLID_KINDS and not is_mass(f)]
    if not sub:
        return None
    size = max(fleischner_size_mm(f) for f in sub)
    cat = "<6" if size < 6 else ">=6"
    if len(sub) > 1:
        return NoduleCategory(
            "multiple subsolid", "multiple", cat, size, _SUBSOLID[("multiple", cat)]
        )
    f = sub[0]
    table = "ground-glass" if f.kind == "ground-glass nodule" else "part-solid"
    key = cat
    if table == "part-solid" and cat == ">=6":
        solid = float(f.attributes.get("solid_diameter_mm", 0.0) or 0.0)
        # the component as written ("5.5 mm"), to the nearest millimetre: 5.45 and 5.5 mm,
        # both written "5.5 mm", got different managements
        if round_half_up(written_mm(solid)) >= 6:
            key = ">=6 solid>=6"
    return NoduleCategory(table, "single", cat, size, _SUBSOLID[(table, key)])


def _check_risk(risk: str | None) -> None:
    if risk is not None and risk not in RISKS:
        raise ValueError(
            f"unknown risk {risk!r}; expected one of {', '.join(RISKS)}, or None (not known)"
        )


def recommendation(findings: Sequence[Finding], *, risk: str | None = None) -> list[str]:
    """Follow-up recommendations for a set of findings, one line each.

    Parameters
    ----------
    findings
        The case's findings; those with status ``"rejected"`` are ignored.
    risk
        Patient risk for lung cancer in the Fleischner sense: ``"low"`` or ``"high"``, or
        ``None`` (not known, the default): the solid-nodule line then gives both managements
        where they differ.

    Returns
    -------
    list of str
        Lines in the order masses, solid nodules, subsolid nodules, calcified nodules, pleural
        effusions; each names the guideline it follows. With a mass (or a lesion over 30 mm)
        the solid and subsolid nodules get one line saying the Fleischner guideline does not
        apply instead of its categories. Empty when there is nothing to recommend.
    """
    _check_risk(risk)
    active = _active(findings)
    lines: list[str] = []
    masses = [f for f in active if is_mass(f)]
    if masses:
        named = any(f.kind == "mass" for f in masses)
        over = any(f.kind != "mass" for f in masses)
        what = {
            (True, False): "Lung mass",
            (False, True): "Lesion over 30 mm",
            (True, True): "Lung mass and lesion over 30 mm",
        }[(named, over)]
        lines.append(
            f"{what} (outside the {FLEISCHNER} guideline, which covers nodules up to 30 mm): "
            "recommend contrast-enhanced chest CT or PET/CT staging, tissue sampling and "
            "multidisciplinary team review."
        )
        nodules = [f for f in active if f.kind in SOLID_KINDS | SUBSOLID_KINDS and not is_mass(f)]
        if nodules:
            beside = "a mass suspicious for malignancy" if named else "a lesion over 30 mm"
            lines.append(
                f"Nodule(s) alongside {beside}: outside the {FLEISCHNER} guideline (not for "
                "known or suspected cancer); assess at staging."
            )
    else:
        lines += _nodule_lines(active, risk)
    if any(f.kind == "calcified nodule" and not is_mass(f) for f in active):
        lines.append(
            f"Calcified nodule(s): benign pattern of calcification; no follow-up needed "
            f"({FLEISCHNER})."
        )
    if any(f.kind == "pleural effusion" for f in active):
        lines.append(
            "Pleural effusion: clinical correlation recommended; diagnostic thoracentesis if "
            "clinically indicated (BTS Guideline for Pleural Disease 2023)."
        )
    return lines


def _nodule_lines(active: Sequence[Finding], risk: str | None) -> list[str]:
    """The Fleischner lines of the solid and the subsolid nodules (no mass among ``active``).

    Each line gives the size that decided its category, the mean of the long and short axes
    rounded (:func:`fleischner_size_mm`): the report's sentences give the long axis, and "a
    6.8 mm nodule ... under 6 mm" read as a contradiction. With solid and subsolid nodules
    together neither line calls its nodule "single" (the impression counts them all), and the
    most suspicious nodule guides management, as the guideline says of multiple nodules."""
    lines: list[str] = []
    scope = f"{FLEISCHNER}, incidental nodules in adults 35 years or older"
    solid = solid_category(active, risk=risk)
    sub = subsolid_category(active)
    mixed = solid is not None and sub is not None
    if solid is not None:
        size_txt = {"<6": "under 6 mm", "6-8": "6 to 8 mm", ">8": "over 8 mm"}[solid.size_category]
        who = "" if risk is None else f", {risk}-risk patient"
        what = (
            "solid" if mixed and solid.multiplicity == "single" else f"{solid.multiplicity} solid"
        )
        lines.append(
            f"{scope}{who}: {what}, {size_txt} (mean diameter {solid.size_mm} mm): {solid.text}."
        )
    if sub is not None:
        size_txt = "under 6 mm" if sub.size_category == "<6" else "6 mm or more"
        what = {
            "ground-glass": "ground-glass" if mixed else "single ground-glass",
            "part-solid": "part-solid" if mixed else "single part-solid",
            "multiple subsolid": "multiple subsolid",
        }[sub.table]
        lines.append(f"{scope}: {what}, {size_txt} (mean diameter {sub.size_mm} mm): {sub.text}.")
    if mixed:
        lines.append(
            f"Solid and subsolid nodules together: management by the most suspicious nodule "
            f"({FLEISCHNER})."
        )
    return lines
