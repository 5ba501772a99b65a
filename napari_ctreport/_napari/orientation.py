"""Orientation letters at the edges of the canvas (R/L, A/P, S/I), as a PACS viewer shows them.

The reader puts a CT in patient LPS millimetres: napari world axes (0, 1, 2) are the LPS
(z, y, x) axes, whose values grow towards the patient's superior, posterior and left. On the
axial view napari draws axis 1 downwards and axis 2 to the right, so the patient's right is on
the screen's left and anterior at the top (the radiological convention); the letters say so,
and follow when the reader shows another plane (napari's "roll" or "transpose" of the dims) or
flips an axis of the 2-D camera. A coronal or sagittal plane is turned head up when it is
shown (napari would draw it feet up). In 3-D the letters are hidden.

The letters are napari canvas text overlays (``viewer.canvas.overlays``, napari 0.9 and later);
with an older napari there are none.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Per world axis (LPS z, y, x): the patient direction of decreasing and of increasing values.
AXIS_LETTERS: tuple[tuple[str, str], ...] = (("I", "S"), ("A", "P"), ("R", "L"))

#: Canvas position of each edge's letter.
EDGES = {
    "top": "top_center",
    "bottom": "bottom_center",
    "left": "middle_left",
    "right": "middle_right",
}

#: Overlay keys in ``viewer.canvas.overlays``.
KEY = "ctreport_orientation_{}"


def edge_letters(
    displayed: tuple[int, int], *, vertical: str = "down", horizontal: str = "right"
) -> dict[str, str]:
    """The letters at the canvas edges for the displayed world axes ``(vertical, horizontal)``
    of a 3-D LPS world, given which way the 2-D camera draws growing values (``vertical``
    ``"down"`` or ``"up"``, ``horizontal`` ``"right"`` or ``"left"``, napari's
    ``camera.orientation2d``)."""
    v_low, v_high = AXIS_LETTERS[displayed[0]]
    h_low, h_high = AXIS_LETTERS[displayed[1]]
    top, bottom = (v_low, v_high) if vertical == "down" else (v_high, v_low)
    left, right = (h_low, h_high) if horizontal == "right" else (h_high, h_low)
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class OrientationLetters:
    """Keeps the four letters of a viewer up to date; :meth:`set_visible` shows or hides them
    (the review dock shows them while a CT of ours, in patient LPS, is open)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.wanted = False
        self.overlays: dict[str, Any] = {}
        try:
            from napari.components.overlays import TextOverlay

            canvas = viewer.canvas.overlays
            for edge, position in EDGES.items():
                overlay = TextOverlay(text="", position=position, visible=False, font_size=14)
                overlay.color = "yellow"
                canvas[KEY.format(edge)] = overlay
                self.overlays[edge] = overlay
        except (AttributeError, ImportError, TypeError, ValueError) as exc:  # napari < 0.9
            log.debug("no orientation letters: %s", exc)
            self.overlays = {}
            return
        viewer.dims.events.order.connect(self._plane_changed)
        viewer.dims.events.ndisplay.connect(self.update)
        viewer.dims.events.ndim.connect(self.update)
        _camera(viewer).events.orientation.connect(self.update)

    def _plane_changed(self, event: object = None) -> None:
        """Another plane is shown: a coronal or sagittal one is drawn head up (napari draws
        growing values downwards, which puts the feet at the top), an axial one anterior up.
        Only when the plane changes: a flip the reader makes afterwards stays."""
        dims = self.viewer.dims
        if self.wanted and dims.ndim == 3 and dims.ndisplay == 2:
            camera = _camera(self.viewer)
            vertical = "up" if int(dims.displayed[0]) == 0 else "down"
            camera.orientation2d = (vertical, str(camera.orientation2d[1]))
        self.update()

    def set_visible(self, on: bool) -> None:
        """Show the letters (when the view is a 2-D plane of a 3-D world) or hide them."""
        self.wanted = bool(on)
        self.update()

    def letters(self) -> dict[str, str] | None:
        """The letters now shown at each edge, or ``None`` when none are."""
        if not self.overlays or not self.overlays["top"].visible:
            return None
        return {edge: o.text for edge, o in self.overlays.items()}

    def update(self, event: object = None) -> None:
        if not self.overlays:
            return
        dims = self.viewer.dims
        show = self.wanted and dims.ndim == 3 and dims.ndisplay == 2
        if show:
            vertical, horizontal = (str(v) for v in _camera(self.viewer).orientation2d)
            displayed = tuple(int(a) for a in dims.displayed)
            text = edge_letters(displayed, vertical=vertical, horizontal=horizontal)  # type: ignore[arg-type]
            for edge, overlay in self.overlays.items():
                overlay.text = text[edge]
        for overlay in self.overlays.values():
            overlay.visible = show
