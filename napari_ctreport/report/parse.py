"""Read finding statements back out of report text, and check them against findings.

This is the inverse of :mod:`.writer` for the facts a report must get right: kind, side, zone,
sizes, effusion grade and counts. It is rule-based and understands the writer's size rule
(``"7.2 mm"``, ``"23 mm"``, ``"45 x 32 mm"``) as well as centimetres (``"4.5 cm"``), ml
volumes and lobe abbreviations (``"RUL"``).

A sentence is read clause by clause: ``"A 7 mm nodule in the right upper zone and a 12 mm
nodule in the left lower zone, no effusion."`` states two nodules and denies an effusion.
Advice (from a mention of a guideline, "recommend", "follow-up" or "consider" onwards) is not a
statement, but what a sentence says before its advice is (``"A 25 mm mass; recommend PET/CT."``
states a mass). Clauses that begin with a negation (``"No pleural effusion."``, ``"..., no
mass"``) are *negated* statements: they claim that no finding of the kinds they name exists.

The exception are the impression's follow-up lines in the forms
:func:`~.guidelines.recommendation` writes (:func:`read_guideline_line`): a Fleischner category
(``"...: single solid, 6 to 8 mm (mean diameter 7 mm): CT at 6-12 months, ..."``) claims a
nodule type, a count, a size category, a mean diameter and the category's management, and is
one statement checked against what the guideline functions give for the findings; a mass line,
a line of nodules alongside a mass, and the line of solid and subsolid nodules together claim
the findings they name. Free prose advice is still not read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .findings import Finding
from .guidelines import (
    RISKS,
    SOLID_KINDS,
    SUBSOLID_KINDS,
    NoduleCategory,
    is_mass,
    mean_diameter_mm,
    solid_category,
    subsolid_category,
)
from .lexicon import NODULE_KINDS, effusion_grade

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
    ("pleural effusion", re.compile(r"(?<!pericardial )\b(?:pleural )?effusions?\b")),
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
    rf"(?P<pre>[<>≤≥]\s*|\b(?:under|over|than|least|most|up to|and)\s+)?"
    rf"(?P<a>{_NUM})(?:\s*(?:x|×|by)\s*(?P<b>{_NUM}))?(?:\s*(?:x|×|by)\s*(?P<c>{_NUM}))?"
    rf"\s*(?P<unit>mm|cm)\b(?P<post>\s*(?:or (?:more|less|larger|smaller)|and (?:above|over)))?"
)
_RANGE = re.compile(rf"{_NUM}\s*(?:-|–|to)\s*{_NUM}\s*(?:mm|cm)\b")
_VOLUME = re.compile(rf"(?P<v>{_NUM})\s*(?:ml|mL|cc)\b")
_ADVICE = re.compile(r"\b(?:fleischner|guideline|recommend\w*|follow-up|follow up|consider)\b")
_NEGATION = re.compile(
    r"^\s*(?:\d+\.\s*)?(?:[a-z ]{1,20}:\s*)?"
    r"(?:and |but |with )?(?:no|there is no|there are no|negative for|without)\b"
    r"(?!\s+(?:significant\s+|interval\s+)?change)"  # "no change in the 7 mm nodule"
    r"|:\s*none\b"  # "Pleural effusion: none."
)
#: A denial of *other* findings than those the report names ("no new nodules", "no other
#: nodule"): it says nothing checkable about the findings there are.
_OTHER = re.compile(r"\b(?:new|other|further|additional|more)\b")
#: Where a sentence's next clause begins: a semicolon; a comma or "and"/"but"/"with" before a
#: negation; "and"/"but"/"with"/"plus"/a comma before a new mention ("a", "another", a count or a
#: size), but not "compatible with a ...". A piece that names no finding kind (", with an estimated volume of
#: 250 ml") stays with the clause before it.
_MENTION = (
    r"(?:an?|another|one|two|three|four|five|six|seven|eight|nine|ten|several|multiple"
    r"|\d+(?:\.\d+)?)\b"
)
_CLAUSE = re.compile(
    r";\s*"
    r"|,\s*(?=(?:and\s+|but\s+)?(?:no|without)\b)"
    r"|\s+(?:and|but|with)\s+(?=(?:no|without)\b)"
    r"|\s+(?=without\b)"
    r"|(?<!compatible)(?<!consistent)(?<!keeping),?\s+"
    r"(?:and|but|with|plus|as well as|along with|apart from)\s+"
    rf"(?={_MENTION})"
    rf"|,\s+(?={_MENTION})"
)
_COUNT_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_COUNT = re.compile(
    r"\b(?P<n>two|three|four|five|six|seven|eight|nine|ten|\d+|multiple|several|numerous)\s+"
    r"(?P<q>(?:(?:small|tiny|pulmonary|lung|solid|part[- ]solid|ground[- ]glass|calcified|"
    r"subsolid)\s+)*)(?P<noun>nodules|masses)\b"
)
_GRADE = re.compile(r"\b(small|moderate|large)\b")
#: Lobe abbreviations as side words only: a lobe is not a zone (a superior-segment RLL or a
#: lingular nodule lies in the middle zone).
_LOBES = {
    "RUL": "right lung",
    "RML": "right lung",
    "RLL": "right lung",
    "LUL": "left lung",
    "LLL": "left lung",
}
_LOBE = re.compile(r"\b(?:RUL|RML|RLL|LUL|LLL)\b")
#: Words with a full stop that does not end a sentence.
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|cf|vs|approx|fig|dr|mr|mrs|ms|st)\.$", re.IGNORECASE)

# The follow-up lines of the impression (:func:`~.guidelines.recommendation`), read in lower case.
#: A Fleischner category: "Fleischner Society 2017, incidental nodules in adults 35 years or
#: older[, low-risk patient]: single solid, 6 to 8 mm (mean diameter 7 mm): <management>."
_CATEGORY_LINE = re.compile(
    r"\bfleischner\b(?P<head>[^:]*):\s*"
    r"(?:(?P<mult>single|multiple)\s+)?(?P<table>part[- ]solid|ground[- ]glass|subsolid|solid)\b"
    r"(?:\s+(?:pulmonary\s+)?nodules?(?:\(s\))?)?"
    r"(?:\s*,\s*(?P<bucket>[^(:]*?))?"
    rf"(?:\s*\(mean diameter (?P<mean>{_NUM})\s*(?P<unit>mm|cm)\))?"
    r"\s*(?::\s*(?P<text>.*?))?[\s.]*$"
)
_RISK = re.compile(r"\b(?P<risk>low|high)[- ]risk\b")
#: The line that follows the two categories of solid and subsolid nodules together.
_MIXED_LINE = re.compile(r"\bsolid and subsolid nodules together\b")
#: A mass or lesion over 30 mm, outside the guideline.
_MASS_LINE = re.compile(
    r"\b(?P<what>lung mass and lesion over 30 mm|lung mass|lesion over 30 mm)\s*"
    r"\(outside the fleischner\b"
)
#: Nodules beside a mass or a lesion over 30 mm, outside the guideline.
_ALONGSIDE_LINE = re.compile(
    r"\bnodules?(?:\(s\))? alongside (?:an? |the )?(?P<beside>mass|lesion over 30 mm)\b"
    r"[^:]*:\s*outside the fleischner\b"
)
#: Size categories as written, and the rounded mean diameters (mm) each allows.
_BUCKETS: dict[str, tuple[float, float]] = {
    "under 6 mm": (-math.inf, 5),
    "<6 mm": (-math.inf, 5),
    "6 to 8 mm": (6, 8),
    "6-8 mm": (6, 8),
    "over 8 mm": (9, math.inf),
    ">8 mm": (9, math.inf),
    "6 mm or more": (6, math.inf),
    ">=6 mm": (6, math.inf),
    "≥6 mm": (6, math.inf),
}
#: The nodule kinds each Fleischner table word names.
_TABLE_KINDS: dict[str, frozenset[str]] = {
    "solid": SOLID_KINDS,
    "subsolid": SUBSOLID_KINDS,
    "ground-glass": frozenset({"ground-glass nodule"}),
    "part-solid": frozenset({"part-solid nodule"}),
}


@dataclass(frozen=True)
class GuidelineLine:
    """A follow-up line of the impression in a form of :func:`~.guidelines.recommendation`.

    Attributes
    ----------
    form
        ``"category"`` (a Fleischner category of the solid or of the subsolid nodules),
        ``"mixed"`` (solid and subsolid nodules together), ``"mass"`` (a mass or lesion over
        30 mm, outside the guideline) or ``"alongside"`` (nodules beside one).
    table
        A category's nodule type: ``"solid"``, ``"ground-glass"``, ``"part-solid"`` or
        ``"subsolid"``.
    multiplicity
        ``"single"`` or ``"multiple"`` as stated, or implied (the ground-glass and part-solid
        tables are of a single nodule); ``None`` where the line does not say.
    sizes
        The lowest and highest rounded mean diameter (mm) the stated size category allows
        (``"6 to 8 mm"``: 6 and 8); ``None`` where the line states none the checker knows.
    mean_mm, mean_rounding
        The stated mean diameter (mm), and half a unit of its last digit.
    management
        The text after the category, lower case, single-spaced, without the final full stop.
    risk
        A stated patient risk (``"low"`` or ``"high"``).
    mass, over
        A mass line names a mass / a lesion over 30 mm; a line of nodules alongside one names
        which.
    """

    form: str
    table: str | None = None
    multiplicity: str | None = None
    sizes: tuple[float, float] | None = None
    mean_mm: float | None = None
    mean_rounding: float | None = None
    management: str | None = None
    risk: str | None = None
    mass: bool = False
    over: bool = False


@dataclass
class Statement:
    """What one clause states about a finding; ``None`` where it does not say.

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
        The clause denies the kind(s): ``kinds`` lists all kinds it names.
    text
        The clause.
    grade
        A stated effusion grade (``"small"``, ``"moderate"``, ``"large"``).
    count
        A stated number of nodules or masses (``"Two pulmonary nodules"``; "multiple" and
        "several" are 2, :attr:`at_least` set), with ``counted`` the kinds it counts.
    rounding
        Half a unit of the last digit of each stated figure, in mm or ml (``"7.2 mm"``: 0.05),
        keyed ``size_mm``, ``short_mm``, ``solid_mm``, ``volume_ml`` (and ``mean_mm``, a
        guideline line's mean diameter): what rounding allows.
    sentence
        The whole sentence the clause is part of.
    largest
        The size is that of the largest of the kinds counted (``"..., the largest a 14 mm
        part-solid nodule"``).
    guideline
        The follow-up line of the impression the statement is (its :attr:`text`), checked as
        :func:`clinical_consistency` says; ``None`` for a statement of a finding.
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
    grade: str | None = None
    count: int | None = None
    at_least: bool = False
    counted: tuple[str, ...] = ()
    rounding: dict[str, float] = field(default_factory=dict)
    sentence: str = ""
    largest: bool = False
    guideline: GuidelineLine | None = None


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (newlines, then ``.``/``!``/``?`` before a space).

    Decimal points and abbreviations (``"e.g."``) never end a sentence; a sentence may begin
    with a small letter; a list number like ``"1."`` at a line start is dropped.
    """
    out: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\d+[.)]\s+", "", line)
        parts: list[str] = []
        for part in re.split(r"(?<=[.!?])\s+(?=[A-Za-z0-9(])", line.strip()):
            if parts and _ABBREVIATION.search(parts[-1]):
                parts[-1] = f"{parts[-1]} {part}"
            else:
                parts.append(part)
        out.extend(p.strip() for p in parts if p.strip())
    return out


def _first(patterns: tuple[tuple[str, re.Pattern[str]], ...], text: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, pat in patterns:
        m = pat.search(text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return None if best is None else best[1]


def _kind_spans(text: str) -> list[tuple[int, int, str]]:
    """Where each kind is named in ``text``: ``(start, end, kind)`` in order of appearance, the
    most specific pattern winning where patterns overlap (``"solid nodule"``, not ``"nodule"``)."""
    found: list[tuple[int, int, str]] = []
    for name, pat in _KIND_PATTERNS:
        for m in pat.finditer(text):
            if any(a <= m.start() < b or a < m.end() <= b for a, b, _ in found):
                continue
            found.append((m.start(), m.end(), name))
    return sorted(found)


def _kinds(text: str, spans: list[tuple[int, int, str]] | None = None) -> list[str]:
    """All kinds named in a sentence, in order of appearance (generic ``nodule`` only if no other
    nodule); ``spans``: its :func:`_kind_spans`, when known."""
    out: list[str] = []
    for _, _, name in _kind_spans(text) if spans is None else spans:
        if name not in out:
            out.append(name)
    return out


#: Words that set a finding named after a generic "nodule" beside it, not as what the nodule is
#: ("a 5 mm nodule abutting the effusion"; but "a nodule/mass", "a nodule or mass").
_BESIDE = re.compile(
    r"\b(?:abutting|alongside|adjacent|near|beside|next to|against|contacting|touching|close to|"
    r"within|inside|in|into|at|behind|above|below|medial|lateral|anterior|posterior|superior|"
    r"inferior|from|of|with)\b"
)


def _subject(text: str, spans: list[tuple[int, int, str]]) -> str:
    """The kind a clause (lower case, naming at least one kind: ``spans``, its
    :func:`_kind_spans`) states: the first named from
    its first size on ("Right upper lobe nodule, now a 35 mm mass": a mass; "Two nodules
    alongside a 45 mm mass": the mass), or from its start where it states no size; a generic
    ``"nodule"`` is the next kind named after it unless a word such as "abutting" or "near"
    sets that one beside it ("a 35 mm nodule/mass": a mass; "a 7.2 mm nodule abutting the
    pleural effusion": a nodule, which was read as a 7.2 mm effusion)."""
    size = _SIZE.search(text)
    if size is not None:
        spans = [s for s in spans if s[0] >= size.start()] or spans
    start, end, kind = spans[0]
    if kind != "nodule" or len(spans) == 1:
        return kind
    nxt = spans[1]
    return "nodule" if _BESIDE.search(text[end : nxt[0]]) else nxt[2]


def _half_unit(number: str, scale: float = 1.0) -> float:
    """Half a unit of a written number's last digit (``"7.2"``: 0.05), times ``scale``."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    return 0.5 * 10.0**-decimals * scale


def _sizes(text: str) -> tuple[float | None, float | None, float | None, dict[str, float]]:
    """(long axis, second dimension, solid component) in mm from a clause, and their rounding."""
    ranges = [(m.start(), m.end()) for m in _RANGE.finditer(text)]
    size = short = solid = None
    rounding: dict[str, float] = {}
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
        if after.lstrip().startswith(("solid component", "solid part")) or re.search(
            r"solid (?:component|part)(?: of| measuring| measures| measured at| is)?\s*$", before
        ):
            if solid is None:
                solid = a
                rounding["solid_mm"] = _half_unit(m.group("a"), scale)
            continue
        if size is None:
            size, short = a, b
            rounding["size_mm"] = _half_unit(m.group("a"), scale)
            if b is not None:
                rounding["short_mm"] = _half_unit(m.group("b"), scale)
    return size, short, solid, rounding


def _count(text: str) -> tuple[int, bool, tuple[str, ...]] | None:
    """A stated count of nodules or masses: (number, whether "at least", kinds it counts;
    ``("nodule",)`` for nodules of any kind)."""
    m = _COUNT.search(text)
    if m is None:
        return None
    word = m.group("n")
    if word in ("multiple", "several", "numerous"):
        number, at_least = 2, True
    else:
        number, at_least = (int(word) if word.isdigit() else _COUNT_WORDS[word]), False
    if m.group("noun") == "masses":
        return number, at_least, ("mass",)
    q = re.sub(r"ground[- ]glass", "ground-glass", re.sub(r"part[- ]solid", "part-solid", m["q"]))
    words = q.split()
    for word, kinds in (
        ("part-solid", ("part-solid nodule",)),
        ("subsolid", ("part-solid nodule", "ground-glass nodule")),
        ("ground-glass", ("ground-glass nodule",)),
        ("calcified", ("calcified nodule",)),
        ("solid", ("solid nodule",)),
    ):
        if word in words:
            return number, at_least, kinds
    return number, at_least, ("nodule",)


def _clauses(sentence: str) -> list[str]:
    """A sentence cut into clauses (:data:`_CLAUSE`); a piece naming no kind stays with the
    clause before it unless it is a negation."""
    spans: list[list[int]] = []
    start = 0
    cuts = [(m.start(), m.end()) for m in _CLAUSE.finditer(sentence.lower())]
    for a, b in [*cuts, (len(sentence), len(sentence))]:
        low = sentence[start:a].lower()
        if spans and not _kinds(low) and not _NEGATION.search(low):
            spans[-1][1] = a
        else:
            spans.append([start, a])
        start = b
    return [c for a, b in spans if (c := sentence[a:b].strip(" ,;"))]


def parse_statements(sentence: str) -> list[Statement]:
    """The :class:`Statement` of each clause of one sentence that states or denies a finding,
    and of a follow-up line of the impression (:func:`read_guideline_line`) the sentence ends
    with."""
    expanded = _LOBE.sub(lambda m: _LOBES[m.group(0)], sentence)
    found = read_guideline_line(expanded)
    start = len(expanded) if found is None else found[1]
    out = [st for c in _clauses(expanded[:start]) if (st := _clause_statement(c, sentence))]
    if found is not None:
        out.append(_guideline_statement(found[0], expanded[start:], sentence))
    return out


def _clause_statement(clause: str, sentence: str) -> Statement | None:
    """What one clause states or denies, or ``None`` where it names no finding kind (before
    its advice, if it gives any)."""
    low = clause.lower()
    advice = _ADVICE.search(low)
    if advice:  # what comes before the advice is still stated
        clause, low = clause[: advice.start()], low[: advice.start()]
    spans = _kind_spans(low)
    kinds = _kinds(low, spans)
    if not kinds:
        return None
    side, zone = _first(_SIDE_PATTERNS, low), _first(_ZONE_PATTERNS, low)
    if _NEGATION.search(low):
        if _OTHER.search(low):
            return None  # "no new nodules", "no other nodule": not a denial of those there are
        return Statement(
            kind=kinds[0],
            side=side,
            zone=zone,
            negated=True,
            kinds=kinds,
            text=clause.strip(" ,;:("),
            sentence=sentence,
        )
    size, short, solid, rounding = _sizes(low)
    vol = _VOLUME.search(clause)
    if vol:
        rounding["volume_ml"] = _half_unit(vol.group("v"))
    kind = _subject(low, spans)
    grade = _GRADE.search(low) if kind == "pleural effusion" else None
    count = _count(low)
    return Statement(
        kind=kind,
        side=side,
        zone=zone,
        size_mm=size,
        short_mm=short,
        solid_mm=solid,
        volume_ml=float(vol.group("v")) if vol else None,
        kinds=kinds,
        text=clause.strip(" ,;:("),
        grade=grade.group(1) if grade else None,
        count=count[0] if count else None,
        at_least=bool(count and count[1]),
        counted=count[2] if count else (),
        rounding=rounding,
        sentence=sentence,
        largest=bool(re.search(r"\b(?:the )?largest\b", low)) and size is not None,
    )


def read_guideline_line(sentence: str) -> tuple[GuidelineLine, int] | None:
    """Read a follow-up line of the impression in one of the forms
    :func:`~.guidelines.recommendation` writes.

    Parameters
    ----------
    sentence
        One sentence of a report.

    Returns
    -------
    tuple of GuidelineLine and int, or None
        The line and where in ``sentence`` it begins (what comes before it is read as findings
        are), or ``None`` for a sentence that is no such line: free prose advice, and a line in
        a form the checker does not know, are not read.
    """
    low = sentence.lower()
    if m := _CATEGORY_LINE.search(low):
        return _category_line(m), m.start()
    if m := _MIXED_LINE.search(low):
        return GuidelineLine("mixed"), m.start()
    if m := _MASS_LINE.search(low):
        what = m.group("what")
        return GuidelineLine("mass", mass="mass" in what, over="lesion" in what), m.start()
    if m := _ALONGSIDE_LINE.search(low):
        beside = m.group("beside")
        return GuidelineLine("alongside", mass=beside == "mass", over=beside != "mass"), m.start()
    return None


def _category_line(m: re.Match[str]) -> GuidelineLine:
    """The :class:`GuidelineLine` of a match of :data:`_CATEGORY_LINE`."""
    table = m.group("table").replace(" ", "-")
    mult = m.group("mult")
    if mult is None and table in ("ground-glass", "part-solid"):
        mult = "single"  # the guideline's ground-glass and part-solid tables are of one nodule
    bucket = re.sub(r"\s+", " ", m.group("bucket") or "").strip()
    mean = m.group("mean")
    scale = 10.0 if m.group("unit") == "cm" else 1.0
    risk = _RISK.search(m.group("head"))
    return GuidelineLine(
        "category",
        table=table,
        multiplicity=mult,
        sizes=_bucket_sizes(bucket),
        mean_mm=float(mean) * scale if mean else None,
        mean_rounding=_half_unit(mean, scale) if mean else None,
        management=_normal(m.group("text")) if m.group("text") else None,
        risk=risk.group("risk") if risk else None,
    )


def _bucket_sizes(text: str) -> tuple[float, float] | None:
    """The rounded mean diameters (mm) a size category as written allows (:data:`_BUCKETS`),
    read with the spellings a reader types ("over 8mm", "6–8 mm", "< 6 mm", "more than 8 mm");
    ``None`` for one the checker does not know."""
    t = re.sub(r"[–—]", "-", text.lower())
    t = re.sub(r"(\d)\s*mm\b", r"\1 mm", t)
    t = re.sub(r"\s*([<>≤≥]=?)\s*", r"\1", t)
    t = re.sub(r"\s*-\s*", "-", t)
    t = re.sub(r"\b(?:less than|below|smaller than)\b", "under", t)
    t = re.sub(r"\b(?:more than|greater than|above|larger than)\b", "over", t)
    return _BUCKETS.get(re.sub(r"\s+", " ", t).strip())


def _normal(text: str) -> str:
    """Text as follow-up texts are compared: lower case, single spaces, no final full stop."""
    return re.sub(r"\s+", " ", text.lower()).strip(" .")


def _guideline_statement(line: GuidelineLine, text: str, sentence: str) -> Statement:
    """The statement of a follow-up line; the kind it names is for show (what it is checked
    for is :func:`_guideline_findings`)."""
    if line.form == "category":
        kinds = sorted(_TABLE_KINDS[line.table or "subsolid"])
    elif line.form == "mass":
        kinds = ["mass"]
    else:
        kinds = ["nodule"]
    rounding = {} if line.mean_rounding is None else {"mean_mm": line.mean_rounding}
    return Statement(
        kind=kinds[0] if len(kinds) == 1 else "nodule",
        kinds=kinds,
        text=text.strip(" ,;:("),
        rounding=rounding,
        sentence=sentence,
        guideline=line,
    )


def extract_statements(text: str, *, include_negated: bool = False) -> list[Statement]:
    """Statements of findings in report text, one per clause that states a finding.

    Parameters
    ----------
    text
        Report text (both sections, or either).
    include_negated
        Also return negated statements (``"No pleural effusion."``).
    """
    return [
        st
        for sentence in split_sentences(text)
        for st in parse_statements(sentence)
        if include_negated or not st.negated
    ]


def _kind_ok(stated: str, actual: str) -> bool:
    if stated == "nodule":
        return actual in NODULE_KINDS
    return stated == actual


def _allowed(st: Statement, key: str, tol: float | None) -> float:
    """How far a stated figure may be off: ``tol``, or with none the rounding of the figure."""
    return st.rounding.get(key, 0.05) + 1e-6 if tol is None else tol


def _not_calcified(active: Sequence[Finding]) -> list[Finding]:
    """The nodules an unqualified count of nodules may leave out calcified ones from (the
    writer's "Two pulmonary nodules" beside its calcified granulomas)."""
    return [f for f in active if f.kind in NODULE_KINDS and f.kind != "calcified nodule"]


def _agrees(st: Statement, f: Finding, tol: float | None, rel: float = 0.0) -> bool:
    def far(key: str, stated: float, actual: float) -> bool:
        return abs(stated - actual) > max(_allowed(st, key, tol), rel * actual)

    if st.kind is not None and not _kind_ok(st.kind, f.kind):
        return False
    if st.side is not None and st.side != f.side:
        return False
    if st.zone is not None and st.zone != f.zone:
        return False
    if st.size_mm is not None and far("size_mm", st.size_mm, f.diameter_mm):
        return False
    if st.short_mm is not None and far("short_mm", st.short_mm, f.short_axis_mm):
        return False
    if st.solid_mm is not None:
        solid = f.attributes.get("solid_diameter_mm")
        if solid is None or far("solid_mm", st.solid_mm, float(solid)):
            return False
    if st.volume_ml is not None:
        allowed = (
            max(_allowed(st, "volume_ml", None), rel * f.volume_ml)
            if tol is None
            else max(tol, max(0.01, rel) * f.volume_ml)
        )
        if abs(st.volume_ml - f.volume_ml) > allowed:
            return False
    if st.grade is not None and f.kind == "pleural effusion":
        volumes = (f.volume_ml * (1 - rel), f.volume_ml, f.volume_ml * (1 + rel))
        if st.grade not in {effusion_grade(v) for v in volumes}:
            return False
    return True


def _denied(st: Statement, f: Finding) -> bool:
    """Whether a negated statement denies finding ``f``: its kind, on the side and in the zone
    the statement names, if it names them ("no left effusion" beside a right one; "no nodule in
    the right upper zone" beside a right lower one)."""
    if not any(_kind_ok(k, f.kind) for k in st.kinds):
        return False
    if st.zone is not None and f.zone != st.zone:
        return False
    return st.side is None or f.side in (st.side, "bilateral") or st.side == "bilateral"


def _count_ok(st: Statement, active: Sequence[Finding]) -> bool:
    """Whether a stated count of nodules or masses is the number there are; an unqualified
    count of nodules may count all nodules or those that are not calcified (the writer's
    "Two pulmonary nodules" beside its calcified granulomas)."""
    if st.count is None:
        return True
    if st.counted == ("nodule",):
        numbers = {
            sum(f.kind in NODULE_KINDS for f in active),
            len(_not_calcified(active)),
        }
    else:
        numbers = {sum(f.kind in st.counted for f in active)}
    if st.at_least:
        return max(numbers) >= st.count
    return st.count in numbers


def _largest_ok(st: Statement, active: Sequence[Finding], tol: float | None, rel: float) -> bool:
    """Whether "the largest" is: no nodule (or mass) of the kinds counted (an unqualified count
    of nodules: those not calcified, as the writer counts them) is longer than the size stated."""
    if not st.largest or st.size_mm is None:
        return True
    kinds = st.counted or ((st.kind,) if st.kind else ("nodule",))
    if kinds == ("nodule",):
        pool = _not_calcified(active)
    else:
        pool = [f for f in active if f.kind in kinds]
    allowed = _allowed(st, "size_mm", tol)
    return all(f.diameter_mm - st.size_mm <= max(allowed, rel * f.diameter_mm) for f in pool)


def _locates(st: Statement) -> bool:
    """Whether a statement says where or how large its finding is: what covers a finding
    ("Lung mass: recommend staging" alone does not report the mass)."""
    return any(v is not None for v in (st.side, st.zone, st.size_mm, st.volume_ml, st.solid_mm))


def _nodules(active: Sequence[Finding], kinds: frozenset[str]) -> list[Finding]:
    """The nodules of ``kinds`` the Fleischner tables take (not those worked up as a mass)."""
    return [f for f in active if f.kind in kinds and not is_mass(f)]


def _resized(f: Finding, sign: int, tol: float | None, rel: float) -> Finding:
    """Nodule ``f`` larger (``sign`` 1) or smaller (-1) in each axis and in its solid component
    by what the size tolerance allows (``max(tol, rel * size)``, as for a stated size)."""

    def moved(v: float) -> float:
        return max(0.0, v + sign * max(tol or 0.0, rel * v)) if v > 0 else v

    attrs = dict(f.attributes)
    if "solid_diameter_mm" in attrs:
        attrs["solid_diameter_mm"] = moved(float(attrs["solid_diameter_mm"] or 0.0))
    return dataclasses.replace(
        f,
        diameter_mm=moved(f.diameter_mm),
        short_axis_mm=moved(f.short_axis_mm),
        attributes=attrs,
    )


def _size_variants(active: Sequence[Finding], tol: float | None, rel: float) -> list[list[Finding]]:
    """The findings as measured and, where a size tolerance is given, with every nodule smaller
    and with every nodule larger by what it allows (:func:`_resized`)."""
    variants = [list(active)]
    if tol or rel:
        nodule_kinds = SOLID_KINDS | SUBSOLID_KINDS
        for sign in (-1, 1):
            variants.append(
                [
                    _resized(f, sign, tol, rel) if f.kind in nodule_kinds and not is_mass(f) else f
                    for f in active
                ]
            )
    return variants


def _categories(
    table: str, active: Sequence[Finding], risk: str | None, tol: float | None, rel: float
) -> list[NoduleCategory]:
    """The Fleischner categories of the solid (``table`` ``"solid"``) or the subsolid nodules
    in each of :func:`_size_variants` (as measured first): with a size tolerance a size near a
    threshold may fall on either side."""
    variants = _size_variants(active, tol, rel)
    if table == "solid":
        cats = [solid_category(fs, risk=risk) for fs in variants]
    else:
        cats = [subsolid_category(fs) for fs in variants]
    return [c for c in cats if c is not None]


@functools.cache
def _guideline_texts() -> frozenset[str]:
    """Every management text of the Fleischner categories (:func:`_normal`): what
    :func:`~.guidelines.solid_category` (at each risk) and :func:`~.guidelines.subsolid_category`
    give for one and two nodules of each kind and size category."""

    def nodule(kind: str, d: float, solid: float) -> Finding:
        return Finding(
            id="F",
            kind=kind,
            side="right",
            zone="upper",
            center_lps_mm=(0.0, 0.0, 0.0),
            bbox_lps_mm=((0.0, 0.0, 0.0), (d, d, d)),
            diameter_mm=d,
            attributes={"solid_diameter_mm": solid},
        )

    texts: set[str] = set()
    for d in (5.0, 7.0, 10.0):  # under 6, 6 to 8 and over 8 mm
        for kind in (*SOLID_KINDS, *SUBSOLID_KINDS):
            for solid in (1.0, d):  # a part-solid nodule's component under 6 mm, and not
                for fs in ([nodule(kind, d, solid)], [nodule(kind, d, solid)] * 2):
                    cats = [solid_category(fs, risk=r) for r in (None, *RISKS)]
                    cats.append(subsolid_category(fs))
                    texts.update(_normal(c.text) for c in cats if c is not None)
    return frozenset(texts)


def _sizes_ok(line: GuidelineLine, cats: Sequence[NoduleCategory]) -> bool:
    """Whether a category line's size category is that of the nodules (of one of ``cats``),
    and can hold the mean diameter it states: some mean the written figure stands for (to its
    rounding: "5.5 mm" is 5.45-5.55) rounds into the category ("under 6 mm (mean diameter
    5.5 mm)" for a mean of 5.45 was flagged when the figure was rounded again)."""
    if line.sizes is None:
        return True
    lo, hi = line.sizes
    if line.mean_mm is not None:
        r = line.mean_rounding or 0.0
        if not (line.mean_mm + r >= lo - 0.5 and line.mean_mm - r < hi + 0.5):
            return False  # "over 8 mm (mean diameter 7 mm)"
    return any(lo <= c.size_mm <= hi for c in cats)


def _mean_ok(
    st: Statement, line: GuidelineLine, pool: Sequence[Finding], tol: float | None, rel: float
) -> bool:
    """Whether a category line's mean diameter is that of the largest nodule of its table, to
    the rounding of the figure or the tolerance (as a stated size, :func:`_allowed`); with a
    tolerance, plus the figure's rounding (the guideline writes the mean to the millimetre, so
    a mean 0.5 mm off is the writing, not the measurement)."""
    if line.mean_mm is None:
        return True
    actual = max(mean_diameter_mm(f) for f in pool)
    allowed = _allowed(st, "mean_mm", tol)
    if tol is not None:
        allowed += line.mean_rounding or 0.0
    return abs(line.mean_mm - actual) <= max(allowed, rel * actual)


def _guideline_prefix(text: str) -> str | None:
    """The guideline's own management text (:func:`_guideline_texts`) that ``text`` is or
    begins with (words added after it, "... (per radiologist)", do not make it free advice),
    the longest such; ``None`` for other text."""
    best = None
    for t in _guideline_texts():
        if text.startswith(t) and (len(text) == len(t) or not text[len(t)].isalnum()):
            best = t if best is None or len(t) > len(best) else best
    return best


#: A management given for both risks: "low risk, A; high risk, B".
_BOTH_RISKS = re.compile(r"low risk, (?P<low>.+?); high risk, (?P<high>.+)")


def _management_ok(line: GuidelineLine, by_risk: dict[str | None, list[NoduleCategory]]) -> bool:
    """Whether a category line's management, where it is (or begins with) a text of the
    guideline's, is that of the nodules' category: at the risk the line states, at either
    where it states none (``by_risk``: the categories at each risk, :func:`_categories`). A
    management for both risks ("low risk, A; high risk, B") is checked half by half, each at
    its risk (a line with one half edited was free advice). Other text is free advice, not
    read."""
    if line.management is None:
        return True

    def texts(risks) -> set[str]:
        return {_normal(c.text) for r in risks if r in by_risk for c in by_risk[r]}

    both = _BOTH_RISKS.fullmatch(line.management)
    if both is not None and ("low" in by_risk or "high" in by_risk):
        for risk in RISKS:
            stated = _guideline_prefix(both.group(risk))
            if stated is not None and stated not in texts((risk,)):
                return False
        return True
    stated = _guideline_prefix(line.management)
    if stated is None:
        return True
    return stated in texts((line.risk,) if line.risk else by_risk)


def _category_findings(
    st: Statement, line: GuidelineLine, active: Sequence[Finding], tol: float | None, rel: float
) -> list[Finding] | None:
    """The nodules a Fleischner category line is about, or ``None`` where it is not theirs:
    there is a mass or a lesion over 30 mm (the guideline gives no category then), no nodule
    of its type, or its multiplicity, size category, mean diameter or management is not what
    :func:`~.guidelines.solid_category` / :func:`~.guidelines.subsolid_category` give (at the
    risk it states; at any, where it states none)."""
    table = line.table or "subsolid"
    if any(is_mass(f) for f in active) or not _nodules(active, _TABLE_KINDS[table]):
        return None
    pool = _nodules(active, SOLID_KINDS if table == "solid" else SUBSOLID_KINDS)
    risks = (None, *RISKS) if table == "solid" else (None,)
    by_risk = {r: _categories(table, active, r, tol, rel) for r in risks}
    stated = (line.risk,) if line.risk is not None and line.risk in by_risk else risks
    cats = [c for r in stated for c in by_risk[r]]
    ok = (
        line.multiplicity in (None, cats[0].multiplicity)
        and _sizes_ok(line, cats)
        and _mean_ok(st, line, pool, tol, rel)
        and _management_ok(line, by_risk)
    )
    return pool if ok else None


def _guideline_findings(
    st: Statement, active: Sequence[Finding], tol: float | None, rel: float
) -> list[Finding] | None:
    """The findings a follow-up line (:attr:`Statement.guideline`) is about, or ``None`` where
    the line is not theirs. A mass line needs the mass or lesion over 30 mm it names; a line
    of nodules alongside one needs the nodules too; the line of solid and subsolid nodules
    together needs both and no mass."""
    line = st.guideline
    if line is None:
        return None
    if line.form == "category":
        return _category_findings(st, line, active, tol, rel)
    masses = [f for f in active if f.kind == "mass"]
    over = [f for f in active if is_mass(f) and f.kind != "mass"]
    nodules = _nodules(active, SOLID_KINDS | SUBSOLID_KINDS)
    if line.form == "mixed":
        mixed = _nodules(active, SOLID_KINDS) and _nodules(active, SUBSOLID_KINDS)
        return nodules if mixed and not masses and not over else None
    named = [*(masses if line.mass else []), *(over if line.over else [])]
    ok = (masses or not line.mass) and (over or not line.over)
    if line.form == "alongside":
        ok, named = ok and bool(nodules), [*nodules, *named]
    return named if ok else None


def consistency_details(
    report: Any,
    findings: Sequence[Finding],
    *,
    size_tol_mm: float | None = None,
    size_tol_rel: float = 0.0,
) -> dict[str, Any]:
    """Check every statement of a report against findings; see :func:`clinical_consistency`.

    Returns
    -------
    dict
        ``statements`` (list of ``(Statement, ok, matched finding ids)``), ``n_checked``,
        ``n_consistent``, ``consistency``, ``covered`` (ids of findings that some consistent
        positive statement giving a side, zone, size or volume agrees with), ``coverage`` (share
        of findings covered; 1.0 with no findings).
    """
    text = _report_text(report)
    active = [f for f in findings if f.status != "rejected"]
    rows = []
    covered: set[str] = set()
    for st in extract_statements(text, include_negated=True):
        if st.guideline is not None:
            found = _guideline_findings(st, active, size_tol_mm, size_tol_rel)
            rows.append((st, found is not None, [f.id for f in found or []]))
            continue
        if st.negated:
            ok = not any(_denied(st, f) for f in active)
            rows.append((st, ok, []))
            continue
        ids = [f.id for f in active if _agrees(st, f, size_tol_mm, size_tol_rel)]
        ok = bool(ids) and _count_ok(st, active)
        ok = ok and _largest_ok(st, active, size_tol_mm, size_tol_rel)
        rows.append((st, ok, ids if ok else []))
        if ok and _locates(st):
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
    size_tol_mm: float | None = None,
    size_tol_rel: float = 0.0,
) -> float:
    """Share of a report's statements that agree with the findings.

    A positive statement agrees when at least one non-rejected finding matches everything it
    states: its kind (``"nodule"`` matches any nodule kind), side, zone, long axis, second
    dimension, solid component and volume (to the tolerance below), and an effusion's grade;
    a stated count of nodules or masses must be the number there are (an unqualified count of
    nodules may leave out calcified ones; "multiple" and "several" mean at least two). A
    negated statement agrees when no finding has a kind it denies (on the side it names, if
    it names one). Free advice is not checked; a follow-up line of the impression in a form
    of :func:`~.guidelines.recommendation` is one statement, which agrees when its nodule type
    is among the findings (and no mass or lesion over 30 mm is, for a Fleischner category),
    its multiplicity is that of :func:`~.guidelines.solid_category` /
    :func:`~.guidelines.subsolid_category`, its size category and mean diameter (to the
    tolerance below) are the category's, and its management, where it is one of the guideline's
    texts, is the category's (at the risk the line states); a mass line and a line of nodules
    alongside a mass agree when the findings they name exist. With no statement to check the
    score is 1.0
    (nothing stated, nothing wrong; see ``coverage`` of :func:`consistency_details` for
    completeness).

    Parameters
    ----------
    report
        A :class:`~napari_ctreport.report.writer.Report` (both sections are read) or text.
    findings
        The findings to check against.
    size_tol_mm
        Size tolerance in mm (and ml for the volume, which may also differ by 1 %). ``None``
        (the default): what the rounding of each written figure allows, half a unit of its last
        digit ("7.2 mm": 7.15 to 7.25; "23 mm": 22.5 to 23.5; "4.5 cm": 44.5 to 45.5 mm;
        "250 ml": 249.5 to 250.5), so a report is checked against the findings it was written
        from to the figure. A number (0.6 for the evaluation against ground truth) allows that
        much whatever the precision. A guideline line's mean diameter is a size like the
        others (against the largest nodule's mean of long and short axis); its size category
        and management are exact without a tolerance, and with one may also be those of the
        nodules made smaller or larger by what it allows.
    size_tol_rel
        Relative size tolerance: sizes (and the volume, and so the effusion grade) may differ by
        up to this share of the finding's own, when that is more than the tolerance above. 0
        (the default) checks a report against the findings it was written from; against ground
        truth measured on another mask, 0.15 (the project's size-error target) checks what the
        report says, not how two masks differ by a millimetre.
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
