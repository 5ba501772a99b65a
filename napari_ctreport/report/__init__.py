"""Findings, measurements and report text; no napari or Qt here."""

from .anatomy import body_midline_x, locate, segment_lungs
from .findings import STATUSES, Finding
from .guidelines import recommendation
from .lexicon import (
    EFFUSION_GRADES,
    KIND_COLORS,
    KINDS,
    NODULE_KINDS,
    SHAPES,
    SIDES,
    ZONES,
    effusion_grade,
)
from .measure import finding_from_mask, measure_mask
from .parse import Statement, clinical_consistency, consistency_details, extract_statements
from .writer import Report, Sentence, describe_finding, write_report

__all__ = [
    "EFFUSION_GRADES",
    "Finding",
    "KINDS",
    "KIND_COLORS",
    "NODULE_KINDS",
    "Report",
    "SHAPES",
    "SIDES",
    "STATUSES",
    "Sentence",
    "Statement",
    "ZONES",
    "body_midline_x",
    "clinical_consistency",
    "consistency_details",
    "describe_finding",
    "effusion_grade",
    "extract_statements",
    "finding_from_mask",
    "locate",
    "measure_mask",
    "recommendation",
    "segment_lungs",
    "write_report",
]
