"""Read finding statements back out of report text, and check them against findings.

This is the inverse of :mod:`.writer` for the facts a report must get right: kind, side, zone
and sizes. It is rule-based and understands the writer's size rule (``"7.2 mm"``,
``"23 mm"``, ``"45 x 32 mm"``) as well as centimetres (``"4.5 cm"``) and ml volumes.

Sentences that give advice rather than state a finding (those mentioning a guideline,
"recommend", "follow-up" or "consider") are not statements. Sentences that begin with a
negation (``"No pleural effusion."``) are *negated* statements: they claim that no finding of the
kinds they name exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .findings import Finding
from .lexicon import NODULE_KINDS

#: Kind patterns, most specific first; ``"nodule"`` is the generic nodule (any nodule kind).
_KIND_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("part-solid nodule", re.compile(r"\bpart[- ]solid (?:pulmonary )?nodules?\b")),
    (
        "ground-glass nodule",
        re.compile(r"\bground[- ]glass (?:pulmonary )?(?:nodules?|opacity|opacities)\b"),
    ),
    ("calcified nodule", re.compile(r"\bcalcified (?:pulmonary )?(?:nodules?|granulomas?)\b")),
    ("solid nodule", re.compile(r"(?<!part-)(?<!part )\bsolid (?:pulmonary )?nodules?\b")),
    ("mass", re.compile(r"\bmass(?:es)?\b")),
    ("pleural effusion", re.compile(r"\b(?:pleural )?effusions?\b")),
    ("nodule", re.compile(r"\bnodules?\b")),
)

_SIDE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bilateral", re.compile(r"\b(?:bilateral(?:ly)?|both lungs|both sides)\b")),
    ("right", re.compile(r"\bright\b")),
    ("left", re.compile(r"\bleft\b")),
    ("midline", re.compile(r"\bmidline\b")),
)

_ZONE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("upper", re.compile(r"\b(?:upper|apical|apex)\b")),
    ("middle", re.compile(r"\b(?:middle|mid)\b")),
    ("lower", re.compile(r"\b(?:lower|basal|base|bases)\b")),
)

_NUM = r"\d+(?:\.\d+)?"
_SIZE = re.compile(
    rf"(?P<pre>[<>≤≥]\s*|\b(?:under|over|than|least|most|to|and)\s+)?"
    rf"(?P<a>{_NUM})(?:\s*(?:x|×|by)\s*(?P<b>{_NUM}))?(?:\s*(?:x|×|by)\s*(?P<c>{_NUM}))?"
    rf"\s*(?P<unit>mm|cm)\b(?P<post>\s*(?:or (?:more|less|larger|smaller)|and (?:above|over)))?"
)
_RANGE = re.compile(rf"{_NUM}\s*(?:-|–|to)\s*{_NUM}\s*(?:mm|cm)\b")
_VOLUME = re.compile(rf"(?P<v>{_NUM})\s*(?:ml|mL|cc)\b")
_ADVICE = re.compile(r"\b(?:fleischner|guideline|recommend\w*|follow-up|follow up|consider)\b")
_NEGATION = re.compile(r"^\s*(?:\d+\.\s*)?(?:no|there is no|there are no|negative for|without)\b")


@dataclass
class Statement:
    """What one sentence states about a finding; ``None`` where it does not say.

    Attributes
    ----------
    kind
        A lexicon kind, or ``"nodule"`` for an unqualified nodule.
    side, zone
        Lexicon side and zone.
    size_mm, short_mm
        Long axis, and the second dimension of an ``"A x B mm"`` size.
    solid_mm
        Solid component of a part-solid nodule.
    volume_ml
        A stated volume.
    negated
        The sentence denies the kind(s): ``kinds`` lists all kinds it names.
    text
        The sentence.
    """

    kind: str | None
    side: str | None = None
    zone: str | None = None
    size_mm: float | None = None
    short_mm: float | None = None
    solid_mm: float | None = None
    volume_ml: float | None = None
    negated: bool = False
    kinds: list[str] = field(default_factory=list)
    text: str = ""


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (newlines, then ``.``/``!``/``?`` before a space).

    Decimal points never end a sentence; a list number like ``"1."`` at a line start is dropped.
    """
    out: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\d+[.)]\s+", "", line)
        for part in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(])", line.strip()):
            part = part.strip()
            if part:
                out.append(part)
    return out


def _first(patterns: tuple[tuple[str, re.Pattern[str]], ...], text: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, pat in patterns:
        m = pat.search(text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return None if best is None else best[1]


def _kinds(text: str) -> list[str]:
    """All kinds named in a sentence, in order of appearance (generic ``nodule`` only if no other nodule)."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for name, pat in _KIND_PATTERNS:
        for m in pat.finditer(text):
            if any(a <= m.start() < b or a < m.end() <= b for a, b in taken):
                continue
            taken.append((m.start(), m.end()))
            found.append((m.start(), name))
    found.sort()
    out: list[str] = []
    for _, name in found:
        if name not in out:
            out.append(name)
    return out


def _sizes(text: str) -> tuple[float | None, float | None, float | None]:
    """(long axis, second dimension, solid component) in mm from a sentence."""
    ranges = [(m.start(), m.end()) for m in _RANGE.finditer(text)]
    size = short = solid = None
    for m in _SIZE.finditer(text):
        if m.group("pre") or m.group("post"):
            continue  # "<6 mm", "under 6 mm", "6 mm or more": thresholds, not measurements
        if any(a <= m.start("a") < b for a, b in ranges):
            continue
        scale = 10.0 if m.group("unit") == "cm" else 1.0
        a = float(m.group("a")) * scale
        b = float(m.group("b")) * scale if m.group("b") else None
        after = text[m.end() : m.end() + 20]
        before = text[max(0, m.start() - 30) : m.start()]
        if after.lstrip().startswith("solid component") or re.search(
            r"solid component(?: of| measuring)?\s*$", before
        ):
            if solid is None:
                solid = a
            continue
        if size is None:
            size, short = a, b
    return size, short, solid


def parse_sentence(sentence: str) -> Statement | None:
    """The :class:`Statement` of one sentence, or ``None`` if it states no finding."""
    low = sentence.lower()
    if _ADVICE.search(low):
        return None
    kinds = _kinds(low)
    if not kinds:
        return None
    if _NEGATION.search(low):
        return Statement(kind=kinds[0], negated=True, kinds=kinds, text=sentence)
    size, short, solid = _sizes(low)
    vol = _VOLUME.search(sentence)
    return Statement(
        kind=next((k for k in kinds if k != "nodule"), kinds[0]),
        side=_first(_SIDE_PATTERNS, low),
        zone=_first(_ZONE_PATTERNS, low),
        size_mm=size,
        short_mm=short,
        solid_mm=solid,
        volume_ml=float(vol.group("v")) if vol else None,
        kinds=kinds,
        text=sentence,
    )


def extract_statements(text: str, *, include_negated: bool = False) -> list[Statement]:
    """Statements of findings in report text, one per sentence that states a finding.

    Parameters
    ----------
    text
        Report text (both sections, or either).
    include_negated
        Also return negated statements (``"No pleural effusion."``).
    """
    out = []
    for sentence in split_sentences(text):
        st = parse_sentence(sentence)
        if st is not None and (include_negated or not st.negated):
            out.append(st)
    return out


def _kind_ok(stated: str, actual: str) -> bool:
    if stated == "nodule":
        return actual in NODULE_KINDS
    return stated == actual


def _agrees(st: Statement, f: Finding, tol: float, rel: float = 0.0) -> bool:
    def far(stated: float, actual: float) -> bool:
        return abs(stated - actual) > max(tol, rel * actual)

    if st.kind is not None and not _kind_ok(st.kind, f.kind):
        return False
    if st.side is not None and st.side != f.side:
        return False
    if st.zone is not None and st.zone != f.zone:
        return False
    if st.size_mm is not None and far(st.size_mm, f.diameter_mm):
        return False
    if st.short_mm is not None and far(st.short_mm, f.short_axis_mm):
        return False
    if st.solid_mm is not None:
        solid = f.attributes.get("solid_diameter_mm")
        if solid is None or far(st.solid_mm, float(solid)):
            return False
    if st.volume_ml is not None and abs(st.volume_ml - f.volume_ml) > max(
        tol, max(0.01, rel) * f.volume_ml
    ):
        return False
    return True


def consistency_details(
    report: Any,
    findings: Sequence[Finding],
    *,
    size_tol_mm: float = 0.6,
    size_tol_rel: float = 0.0,
) -> dict[str, Any]:
    """Check every statement of a report against findings; see :func:`clinical_consistency`.

    Returns
    -------
    dict
        ``statements`` (list of ``(Statement, ok, matched finding ids)``), ``n_checked``,
        ``n_consistent``, ``consistency``, ``covered`` (ids of findings some consistent positive
        statement agrees with), ``coverage`` (share of findings covered; 1.0 with no findings).
    """
    text = _report_text(report)
    active = [f for f in findings if f.status != "rejected"]
    rows = []
    covered: set[str] = set()
    for st in extract_statements(text, include_negated=True):
        if st.negated:
            ok = not any(_kind_ok(k, f.kind) for k in st.kinds for f in active)
            rows.append((st, ok, []))
            continue
        ids = [f.id for f in active if _agrees(st, f, size_tol_mm, size_tol_rel)]
        rows.append((st, bool(ids), ids))
        covered.update(ids)
    n_ok = sum(1 for _, ok, _ in rows if ok)
    return {
        "statements": rows,
        "n_checked": len(rows),
        "n_consistent": n_ok,
        "consistency": n_ok / len(rows) if rows else 1.0,
        "covered": sorted(covered),
        "coverage": len(covered & {f.id for f in active}) / len(active) if active else 1.0,
    }


def clinical_consistency(
    report: Any,
    findings: Sequence[Finding],
    *,
    size_tol_mm: float = 0.6,
    size_tol_rel: float = 0.0,
) -> float:
    """Share of a report's statements that agree with the findings.

    A positive statement agrees when at least one non-rejected finding matches everything it
    states: its kind (``"nodule"`` matches any nodule kind), side, zone, long axis and second
    dimension within ``size_tol_mm``, solid component within ``size_tol_mm`` and volume within
    ``max(size_tol_mm, 1 %)`` ml. A negated statement agrees when no finding has any kind it
    denies. Advice sentences are not checked. With no statement to check the score is 1.0
    (nothing stated, nothing wrong; see ``coverage`` of :func:`consistency_details` for
    completeness).

    Parameters
    ----------
    report
        A :class:`~napari_ctreport.report.writer.Report` (both sections are read) or text.
    findings
        The findings to check against.
    size_tol_mm
        Size tolerance; 0.6 mm covers the writer's rounding to whole millimetres from 10 mm.
    size_tol_rel
        Relative size tolerance: sizes (and the volume) may differ by up to this share of the
        finding's own, when that is more than ``size_tol_mm``. 0 (the default) checks a report
        against the findings it was written from; against ground truth measured on another mask,
        0.15 (the project's size-error target) checks what the report says, not how two masks
        differ by a millimetre.
    """
    return float(
        consistency_details(report, findings, size_tol_mm=size_tol_mm, size_tol_rel=size_tol_rel)[
            "consistency"
        ]
    )


def _report_text(report: Any) -> str:
    if isinstance(report, str):
        return report
    if isinstance(report, dict):
        return f"{report.get('findings', '')}\n{report.get('impression', '')}"
    return f"{report.findings}\n{report.impression}"
