"""npe2 sample data: a synthetic chest CT with lesions and their ground-truth masks."""

from __future__ import annotations

from typing import Any

from ..report.lexicon import KIND_COLORS
from ..synth import generate_case
from .layers import image_layer_data

SAMPLE_SEED = 116  # four kinds: a mass, a solid and a part-solid nodule, and an effusion

#: The sample's grid: the whole chest resampled onto 120 x 256 x 256 (about 1.3 mm pixels and
#: 2.5 mm slices), so that it opens in about a second; synthetic cases by default use clinical
#: 0.6-1.0 mm pixels on a 512 x 512 matrix, four times the pixels.
SAMPLE_SHAPE = (120, 256, 256)


def make_sample_data() -> list[tuple[Any, dict, str]]:
    """Return the sample chest CT (image) and its lesion masks (labels), in patient LPS space.

    The sample is generated with an explicit, coarser grid (:data:`SAMPLE_SHAPE`: the whole
    chest on 120 x 256 x 256, about 1.3 mm in-plane) than the synthetic default (0.6-1.0 mm on
    512 x 512), to open quickly.
    """
    case = generate_case(seed=SAMPLE_SEED, shape=SAMPLE_SHAPE)
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
