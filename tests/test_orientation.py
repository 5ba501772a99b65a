"""Orientation letters at the canvas edges (R/L, A/P, S/I) follow the plane shown."""

from __future__ import annotations

import pytest

from napari_ctreport._napari.orientation import edge_letters


@pytest.mark.parametrize(
    ("displayed", "vertical", "horizontal", "expected"),
    [
        ((1, 2), "down", "right", "A P R L"),  # axial, napari's default: radiological view
        ((0, 2), "down", "right", "I S R L"),  # coronal as napari draws it: feet up
        ((0, 2), "up", "right", "S I R L"),  # ... with the vertical axis flipped
        ((0, 1), "up", "right", "S I A P"),  # sagittal
        ((1, 2), "down", "left", "A P L R"),  # axial seen from above (neurological view)
    ],
)
def test_edge_letters_name_the_patient_directions(displayed, vertical, horizontal, expected):
    got = edge_letters(displayed, vertical=vertical, horizontal=horizontal)
    assert " ".join(got[e] for e in ("top", "bottom", "left", "right")) == expected


@pytest.mark.gui
def test_the_dock_shows_the_letters_of_the_plane_shown(make_napari_viewer):
    """With a CT of ours open the canvas shows the patient's directions at its edges: A at the
    top, R on the left on the axial view; a roll to the coronal plane turns it head up, the
    letters follow that and a flip of the camera, and are hidden in 3-D and when no CT is
    open."""
    pytest.importorskip("napari.components.overlays", reason="napari canvas overlays")
    from napari_ctreport._napari.review_dock import ReviewDock

    viewer = make_napari_viewer()
    if not hasattr(viewer, "canvas") or not hasattr(viewer.canvas, "overlays"):
        pytest.skip("napari < 0.9: no canvas overlays, no letters")
    dock = ReviewDock(viewer)
    assert dock.orientation.letters() is None  # no CT yet
    viewer.open_sample("napari-ctreport", "chest_ct")
    assert dock.orientation.letters() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    viewer.dims.order = (1, 0, 2)  # coronal: turned head up
    assert dock.orientation.letters() == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert str(viewer.scene.camera.orientation2d[0]) == "up"
    viewer.scene.camera.orientation2d = ("down", "right")  # the reader flips it: it stays
    assert dock.orientation.letters()["top"] == "I"
    viewer.dims.order = (0, 1, 2)  # axial again: anterior up
    assert dock.orientation.letters() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    viewer.dims.ndisplay = 3
    assert dock.orientation.letters() is None
    viewer.dims.ndisplay = 2
    viewer.layers.clear()
    assert dock.orientation.letters() is None
