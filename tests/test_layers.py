"""Layer data built for napari without napari: box label colours over the CT."""

from __future__ import annotations

import numpy as np

from napari_ctreport._napari.layers import (
    LABEL_DARK,
    LABEL_LIGHT,
    box_rectangles,
    label_text_colors,
)
from napari_ctreport.io import CTVolume


def _volume() -> CTVolume:
    arr = np.full((10, 100, 100), -1000, dtype=np.int16)  # air
    arr[:, :40, 50:] = 300  # a bright block where the right box's label goes
    return CTVolume(array=arr, spacing_zyx=(1.0, 1.0, 1.0), origin_lps=(0.0, 0.0, 0.0))


def test_label_colour_follows_the_ct_under_the_label():
    vol = _volume()
    left = box_rectangles(np.array([2, 40, 5]), np.array([4, 60, 25]), vol.shape)
    right = box_rectangles(np.array([2, 40, 55]), np.array([4, 60, 75]), vol.shape)
    rects, texts = left + right, ["F1 solid nodule 0.90"] * (len(left) + len(right))
    # soft-tissue limits: the 300 HU block is white, air black
    colors = label_text_colors(vol, rects, texts, limits=(-160.0, 240.0))
    assert colors == [LABEL_LIGHT] * len(left) + [LABEL_DARK] * len(right)
    # a window where everything is white (limits below air) / black (limits above the block)
    assert set(label_text_colors(vol, rects, texts, limits=(-3000.0, -2000.0))) == {LABEL_DARK}
    assert set(label_text_colors(vol, rects, texts, limits=(1000.0, 2000.0))) == {LABEL_LIGHT}


def test_label_at_the_top_edge_samples_the_box_itself():
    vol = _volume()
    rects = box_rectangles(np.array([0, 0, 55]), np.array([2, 20, 75]), vol.shape)
    assert label_text_colors(vol, rects, ["F2 mass 0.5"] * len(rects), limits=(-160, 240)) == [
        LABEL_DARK
    ] * len(rects)
