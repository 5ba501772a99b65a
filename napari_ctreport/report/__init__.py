"""Findings, measurements and report text; no napari or Qt here."""

from .findings import STATUSES, Finding
from .lexicon import KIND_COLORS, KINDS, NODULE_KINDS, SIDES, ZONES

__all__ = ["Finding", "KINDS", "KIND_COLORS", "NODULE_KINDS", "SIDES", "STATUSES", "ZONES"]
