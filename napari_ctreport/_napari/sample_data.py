"""npe2 sample data: a synthetic chest CT with lesions and their ground-truth masks."""

from __future__ import annotations

from typing import Any

from ..report.lexicon import KIND_COLORS
from ..synth import generate_case
from .layers import image_layer_data

SAMPLE_SEED = 2  # four kinds: ground-glass, solid, calcified nodule and an effusion


def make_sample_data() -> list[tuple[Any, dict, str]]:
    """Return the sample chest CT (image) and its lesion masks (labels), in patient LPS space."""
    case = generate_case(seed=SAMPLE_SEED)
    volume = case.volume
    volume.metadata.setdefault("series_description", "Synthetic chest CT (sample)")
    image = image_layer_data(volume, name="Sample chest CT")
    colors = {None: "transparent", 0: "transparent"}
    for f in case.findings:
        colors[f.label] = KIND_COLORS[f.kind]
    labels = (
        case.labels,
        {
            "name": "Sample lesions (ground truth)",
            "scale": volume.spacing_zyx,
            "translate": volume.translate_zyx,
            "opacity": 0.5,
            "colormap": colors,
            "metadata": {"ctreport": {"findings": [f.to_dict() for f in case.findings]}},
        },
        "labels",
    )
    return [image, labels]
