"""The controlled vocabulary of findings and locations.

Every kind, side and zone a finding can carry, and every such word the report writer may use,
comes from here. Extend the lists by appending (existing meanings are part of the JSON schema).
"""

from __future__ import annotations

import math

#: Finding kinds (``Finding.kind``), in label-id order: class id ``i + 1`` is ``KINDS[i]``.
KINDS: tuple[str, ...] = (
    "solid nodule",
    "part-solid nodule",
    "ground-glass nodule",
    "calcified nodule",
    "mass",
    "pleural effusion",
)

#: Sides, as the patient's side (``right`` = LPS x below the body midline).
SIDES: tuple[str, ...] = ("right", "left", "bilateral", "midline")

#: Cranio-caudal zones of the lungs.
ZONES: tuple[str, ...] = ("upper", "middle", "lower")

#: Kinds that are nodules (the Fleischner guideline applies to these).
NODULE_KINDS: frozenset[str] = frozenset(k for k in KINDS if k.endswith("nodule"))

#: A display colour per kind (RGB hex), used by the viewer and the PNG figures.
KIND_COLORS: dict[str, str] = {
    "solid nodule": "#ff4040",
    "part-solid nodule": "#ff9f1c",
    "ground-glass nodule": "#ffe066",
    "calcified nodule": "#b0b0ff",
    "mass": "#ff3cc7",
    "pleural effusion": "#3cc7ff",
}


def kind_id(kind: str) -> int:
    """Return the 1-based class id of a finding kind (0 is background)."""
    try:
        return KINDS.index(kind) + 1
    except ValueError:
        raise ValueError(
            f"unknown finding kind {kind!r}; expected one of {', '.join(KINDS)}"
        ) from None


def kind_weight(kind: str, weight: float) -> tuple[str, float]:
    """Return ``(kind, float(weight))`` for a lexicon kind and a positive weight.

    Raises
    ------
    ValueError
        Naming the lexicon's kinds for an unknown kind, or for a weight that is not a positive
        number (NaN included).
    """
    if kind not in KINDS:
        raise ValueError(f"the kind must be one of {', '.join(KINDS)}, not {kind!r}")
    try:
        w = float(weight)
    except (TypeError, ValueError):
        w = float("nan")
    if not w > 0:
        raise ValueError(f"the weight must be a positive number, not {weight!r} ({kind})")
    return kind, w


def check_term(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is in ``allowed``, else raise a ``ValueError`` naming ``what``."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


#: Shape descriptors a finding may carry in ``Finding.attributes["shape"]``.
SHAPES: tuple[str, ...] = ("round", "lobulated", "spiculated")

#: Pleural effusion grades by volume, as ``(grade, upper bound in ml)``; the last has no bound.
EFFUSION_GRADES: tuple[tuple[str, float], ...] = (
    ("small", 300.0),
    ("moderate", 1000.0),
    ("large", float("inf")),
)


def written_mm(length_mm: float) -> float:
    """A length (mm) as the report writes it: to 0.1 mm below 10 mm, whole mm from 10 mm
    (halves upwards), for :func:`~napari_ctreport.report.writer.format_mm` and the guideline's
    thresholds (a nodule written "30 mm" is not over 30 mm; a solid component written "5.5 mm"
    is 6 mm to the nearest millimetre)."""
    value = float(length_mm)
    if round(value, 1) < 10.0:
        return round(value, 1)
    return float(math.floor(value + 0.5))


def written_ml(volume_ml: float) -> float:
    """A volume (ml) as the report writes it: to 0.1 ml below 10 ml, whole ml from 10 ml
    (halves upwards), for :func:`~napari_ctreport.report.writer.format_ml` and
    :func:`effusion_grade`: the rule of :func:`written_mm`."""
    return written_mm(volume_ml)


def effusion_grade(volume_ml: float) -> str:
    """Return ``"small"``, ``"moderate"`` or ``"large"`` for an effusion volume in ml.

    Small is below 300 ml, moderate 300 ml up to 1000 ml, large 1000 ml or more (a volume-based
    reading of the usual small/moderate/large CT grading). The grade is that of the volume as
    the report writes it (:func:`~napari_ctreport.report.writer.format_ml`: one decimal below
    10 ml, whole ml from 10 ml, halves upwards), so that 299.6 ml, written "300 ml", is
    moderate, not a "small ... (300 ml)" effusion.
    """
    value = float(volume_ml)
    if math.isfinite(value):
        value = written_ml(value)
    for grade, upper in EFFUSION_GRADES:
        if value < upper:
            return grade
    return EFFUSION_GRADES[-1][0]
