"""Layer data built for napari without napari: box label colours over the CT."""

from __future__ import annotations

import numpy as np

from napari_ctreport._napari.layers import (
    LABEL_DARK,
    LABEL_LIGHT,
    box_edge_widths,
    box_rectangles,
    label_text_colors,
    rectangle_plane,
)
from napari_ctreport.io import CTVolume


def _volume() -> CTVolume:
    arr = np.full((10, 100, 100), -1000, dtype=np.int16)  # air
    arr[:, :40, 50:] = 300  # a bright block where the right box's label goes
    return CTVolume(array=arr, spacing_zyx=(1.0, 1.0, 1.0), origin_lps=(0.0, 0.0, 0.0))


def test_label_colour_follows_the_ct_under_the_label():
    vol = _volume()
    left = box_rectangles(np.array([2, 40, 5]), np.array([4, 60, 25]), vol.shape, planes=(0,))
    right = box_rectangles(np.array([2, 40, 55]), np.array([4, 60, 75]), vol.shape, planes=(0,))
    rects, texts = left + right, ["F1 solid nodule 0.90"] * (len(left) + len(right))
    # soft-tissue limits: the 300 HU block is white, air black
    colors = label_text_colors(vol, rects, texts, limits=(-160.0, 240.0))
    assert colors == [LABEL_LIGHT] * len(left) + [LABEL_DARK] * len(right)
    # a window where everything is white (limits below air) / black (limits above the block)
    assert set(label_text_colors(vol, rects, texts, limits=(-3000.0, -2000.0))) == {LABEL_DARK}
    assert set(label_text_colors(vol, rects, texts, limits=(1000.0, 2000.0))) == {LABEL_LIGHT}


def test_label_at_the_top_edge_samples_the_box_itself():
    vol = _volume()
    rects = box_rectangles(np.array([0, 0, 55]), np.array([2, 20, 75]), vol.shape, planes=(0,))
    assert label_text_colors(vol, rects, ["F2 mass 0.5"] * len(rects), limits=(-160, 240)) == [
        LABEL_DARK
    ] * len(rects)


def test_a_box_is_outlined_on_every_plane():
    """A box is drawn as a rectangle on each axial, coronal and sagittal slice whose centre it
    spans, so each view shows its outline; each rectangle says which plane and slice it lies on
    and spans the box's two other axes. A box thinner than a slice gets the nearest one."""
    lo, hi = np.array([2.6, 39.5, 4.5]), np.array([5.4, 60.5, 25.5])
    rects = box_rectangles(lo, hi, (10, 100, 100))
    planes = [rectangle_plane(v) for v in rects]
    assert [(a, i) for a, i, _, _ in planes] == (
        [(0, z) for z in range(3, 6)]
        + [(1, y) for y in range(40, 61)]
        + [(2, x) for x in range(5, 26)]
    )
    for axis, _, v_lo, v_hi in planes:
        sides = [a for a in range(3) if a != axis]
        np.testing.assert_allclose(v_lo[sides], lo[sides])
        np.testing.assert_allclose(v_hi[sides], hi[sides])
    # a 3-D view's outline: the first and last slice of each plane
    outline = box_rectangles(lo, hi, (10, 100, 100), outline=True)
    assert [rectangle_plane(v)[:2] for v in outline] == [
        (0, 3),
        (0, 5),
        (1, 40),
        (1, 60),
        (2, 5),
        (2, 25),
    ]
    thin = box_rectangles(np.array([4.1, 10, 10]), np.array([4.3, 20, 20]), (10, 100, 100))
    assert [rectangle_plane(v)[:2] for v in thin if rectangle_plane(v)[0] == 0] == [(0, 4)]


def test_label_colour_on_a_coronal_slice_samples_inside_the_lower_edge():
    """On a coronal slice turned head up napari draws a box's label inside its lower-left corner
    (the least z), so its colour is picked for the CT there, not for what lies above an axial
    rectangle."""
    arr = np.full((10, 100, 100), -1000, dtype=np.int16)
    arr[3:, 40:61, :] = 300  # bright inside the box, from its lower edge up
    vol = CTVolume(array=arr, spacing_zyx=(1.0, 1.0, 1.0), origin_lps=(0.0, 0.0, 0.0))
    rects = box_rectangles(np.array([2, 40, 5]), np.array([8, 60, 25]), vol.shape, planes=(0, 1))
    colors = label_text_colors(vol, rects, ["F1 mass 0.9"] * len(rects), limits=(-160, 240))
    by_plane = {
        a: {c for v, c in zip(rects, colors, strict=True) if rectangle_plane(v)[0] == a}
        for a in (0, 1)
    }
    assert by_plane == {0: {LABEL_LIGHT}, 1: {LABEL_DARK}}


def test_box_edges_are_as_thin_across_thick_slices_as_along_the_pixels():
    """napari draws an edge as wide in voxels along both axes of a plane: on a coronal slice of
    5 mm slices a 2-voxel edge would be 10 mm thick at the box's top and bottom. Coronal and
    sagittal rectangles get a width narrowed by the plane's spacing ratio (not under 0.5 voxel);
    axial ones of square pixels keep 2."""
    lo, hi = np.array([2, 10, 10]), np.array([6, 30, 30])
    for spacing, across in (((5.0, 0.7, 0.7), 0.5), ((1.25, 0.7, 0.7), 2 * 0.7 / 1.25)):
        vol = CTVolume(
            array=np.zeros((10, 40, 40), np.int16), spacing_zyx=spacing, origin_lps=(0, 0, 0)
        )
        rects = box_rectangles(lo, hi, vol.shape)
        widths = box_edge_widths(rects, vol)
        by_plane = {
            a: {
                round(w, 6)
                for v, w in zip(rects, widths, strict=True)
                if rectangle_plane(v)[0] == a
            }
            for a in range(3)
        }
        assert by_plane == {0: {2.0}, 1: {round(across, 6)}, 2: {round(across, 6)}}


def test_the_study_summary_writes_names_and_dates_as_people_do():
    """The dock's study lines: a DICOM person name as "Family, Given", a pseudonym without its
    caret, the study date as YYYY-MM-DD (they showed "Doe^Jane" and 20190412)."""
    from napari_ctreport._napari.layers import person_name, study_summary

    record = {"patient_name": "Doe^Jane^M", "patient_id": "MRN-1", "study_date": "20190412",
              "study_description": "CT chest", "spacing_zyx": [2.5, 0.7, 0.7]}  # fmt: skip
    text = study_summary(record, (8, 64, 64))
    assert text.splitlines()[:2] == [
        "Patient: Doe, Jane M  ID: MRN-1",
        "Study: CT chest  2019-04-12",
    ]
    assert person_name("CTR-1A2B^") == "CTR-1A2B" and person_name("") == ""
    assert (
        person_name("^Jane") == "Jane" and person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"
    )
    assert study_summary({}, (1, 2, 3)).splitlines()[:2] == ["Patient: —  ID: —", "Study: —"]


def test_in_3d_a_label_has_its_box_s_colour():
    """In a 3-D view the one labelled rectangle of a box floats over the rendered volume or the
    black behind it, not over the slice its colour was picked for (dark grey on black there):
    it is drawn in the box's own colour."""
    from napari_ctreport._napari.layers import boxes_layer_data
    from napari_ctreport.report.findings import Finding
    from napari_ctreport.report.lexicon import KIND_COLORS

    vol = _volume()
    f = Finding("F1", "mass", "left", "lower", (65.0, 50.0, 3.0), ((55.0, 40.0, 1.5), (75.0, 60.0, 4.5)),
                20.0, 15.0, 1.0, 30.0, 0.9, label=1)  # fmt: skip
    data, kw, _ = boxes_layer_data([f], vol, limits=(-160.0, 240.0), outline=True)
    assert len(data) == 6 and kw["features"]["text_color"] == [KIND_COLORS["mass"]] * 6
    flat, kw2, _ = boxes_layer_data([f], vol, limits=(-160.0, 240.0))
    assert set(kw2["features"]["text_color"]) <= {LABEL_DARK, LABEL_LIGHT}


def test_in_3d_a_box_is_a_wire_frame_with_edges_thin_across_thick_slices():
    """A 3-D view draws a box as two axial rectangles (its first and last slice) and its four
    edges along z, each edge no thicker than :data:`OUTLINE_EDGE_MM` across the coarsest axis
    it crosses: napari stretches a 3-D edge's cross-section by the layer's scale, and the six
    outer rectangles with 2-D edge widths were slabs 10 mm thick on 5 mm slices."""
    from napari_ctreport._napari.layers import BOX_EDGE, OUTLINE_EDGE_MM, box_outline_3d

    lo, hi = np.array([2.6, 39.5, 4.5]), np.array([5.4, 60.5, 25.5])
    for sp in ((5.0, 0.63, 0.63), (1.0, 0.7, 0.7), (2.5, 1.5, 1.5)):
        shapes = box_outline_3d(lo, hi, (10, 100, 100), sp)
        assert [t for _, t, _ in shapes] == ["rectangle"] * 2 + ["line"] * 4
        rects = [v for v, t, _ in shapes if t == "rectangle"]
        assert [rectangle_plane(v)[:2] for v in rects] == [(0, 3), (0, 5)]
        for v, t, w in shapes:
            across = max(sp) if t == "rectangle" else max(sp[1:])
            assert w * across <= OUTLINE_EDGE_MM + 1e-9 and w <= BOX_EDGE
            if t == "line":
                assert v[:, 0].tolist() == [3.0, 5.0] and np.ptp(v[:, 1:], axis=0).max() == 0
        corners = {(float(v[0, 1]), float(v[0, 2])) for v, t, _ in shapes if t == "line"}
        assert corners == {(39.5, 4.5), (39.5, 25.5), (60.5, 4.5), (60.5, 25.5)}
    # a box of one slice is its rectangle
    thin = box_outline_3d(np.array([4.1, 10, 10]), np.array([4.3, 20, 20]), (10, 100, 100), sp)
    assert [t for _, t, _ in thin] == ["rectangle"]
