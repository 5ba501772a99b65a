"""Synthetic chest CT with lesions, ground-truth masks/findings and reference reports.

No napari or Qt here. See ``docs/synthetic_data.md``.
"""

from .generate import (
    GENERATOR_NAME,
    ORIENTATIONS,
    SynthCase,
    case_seed,
    generate_case,
    insert_lesions,
    read_background,
    save_background,
    write_dataset,
)
from .phantom import STYLES

__all__ = [
    "GENERATOR_NAME",
    "ORIENTATIONS",
    "STYLES",
    "SynthCase",
    "case_seed",
    "generate_case",
    "insert_lesions",
    "read_background",
    "save_background",
    "write_dataset",
]
