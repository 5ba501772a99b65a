"""The reader's edits in the review dock: boxes moved, drawn and deleted, masks painted and
undone, kinds and locations changed in the table, text typed in the report editor.

:class:`LayerEdits` is the part of :class:`~napari_ctreport._napari.review_dock.ReviewDock`
that turns napari's layer events (the findings' Shapes layer, the masks' Labels layer) and the
table's and editor's signals into calls on the run's
:class:`~napari_ctreport._napari.session.ReviewSession`, which measures, rewrites the report and
autosaves.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer

from ..report.writer import format_ml, format_mm
from .layers import finding_box_index, rectangle_plane

if TYPE_CHECKING:
    from .dock_runs import RunResult

#: A nodule's or mass's mean attenuation (HU) below which a moved box's mask lies over aerated
#: lung, not a lesion (the dock then says so).
OFF_LESION_HU = -500.0


def _clear_undo_history(layer: Any) -> None:
    """Empty a napari Labels layer's undo and redo history (private API, where it exists)."""
    reset = getattr(layer, "_reset_history", None)
    if reset is not None:
        reset()


def _pieces(mask: np.ndarray) -> int:
    """How many separate pieces (26-connected) a finding's mask is in."""
    from scipy import ndimage as ndi

    idx = np.argwhere(mask)
    if idx.size == 0:
        return 0
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    return int(ndi.label(crop, structure=np.ones((3, 3, 3), dtype=bool))[1])


def _paint_values(atom: Any) -> tuple[np.ndarray, np.ndarray]:
    """The label values a napari paint-history atom replaced, and those it wrote.

    napari 0.9's brush, fill and polygon store a ``_MaskedPaintAtom`` (``slice_key``, ``mask``,
    ``old_values``, ``new_value``); ``data_setitem`` and older napari the 3-tuple ``(indices,
    old values, new values)``. Anything else: none (before session 43 only the 3-tuple was
    read, so brush strokes on napari 0.9 re-measured nothing)."""
    old = getattr(atom, "old_values", None)
    new = getattr(atom, "new_value", None)
    if old is None:
        try:
            _, old, new = atom
        except (TypeError, ValueError):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.unique(np.asarray(old)), np.unique(np.asarray(new))


def _added_text(f) -> str:
    """The status line for a finding the reader drew or painted."""
    if f.attributes.get("kind_from_ct"):
        return (
            f"Added {f.id}: a {f.kind}, as the CT shows it there. "
            "If it is not, change its kind in the table."
        )
    return f"Added {f.id}: a {f.kind}."


def _edited_box(
    box: tuple[np.ndarray, np.ndarray], vertices: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """A box ``(lo, hi)`` (CT index) after one of its rectangles became ``vertices``: the two
    axes of the rectangle's plane from the rectangle, the third as it was; ``None`` when the
    rectangle still matches the box."""
    axis, _, v_lo, v_hi = rectangle_plane(vertices)
    lo, hi = (np.array(v, dtype=float) for v in box)
    sides = [a for a in range(3) if a != axis]
    if np.allclose(np.r_[v_lo[sides], v_hi[sides]], np.r_[lo[sides], hi[sides]], atol=1e-3):
        return None
    lo[sides], hi[sides] = v_lo[sides], v_hi[sides]
    return lo, hi


class LayerEdits:
    """The review dock's handlers of the reader's edits (a mixin of
    :class:`~napari_ctreport._napari.review_dock.ReviewDock`, whose widgets and state it uses)."""

    # -- edits from the widgets and layers ------------------------------------------------
    def _kind_edited(self, fid: str, kind: str) -> None:
        if self.result is not None:
            QTimer.singleShot(0, lambda: self._set_kind(fid, kind))

    def _set_kind(self, fid: str, kind: str) -> None:
        r = self.result
        if r is None:
            return
        old = r.session.finding(fid)
        before, was = old.volume_ml, old.diameter_mm
        f = r.session.set_kind(fid, kind)
        if kind == "pleural effusion" and f.volume_ml != before:
            self.status.setText(
                f"{fid} measured as a pleural effusion, on the fluid it holds: "
                f"{format_ml(f.volume_ml)} (was {format_ml(before)})."
            )
        elif f.diameter_mm != was:  # drawn again from the region the reader marked
            self.status.setText(
                f"{fid} is now a {kind}, measured on the region you marked: "
                f"{format_mm(f.diameter_mm)} (was {format_mm(was)})."
            )
        else:  # no earlier line about this finding stays up
            self.status.setText(f"{fid} is now a {kind}.")

    def _location_edited(self, fid: str, side: str, zone: str) -> None:
        if self.result is not None:
            QTimer.singleShot(
                0, lambda: self.result.session.set_location(fid, side=side, zone=zone)
            )

    def _findings_typed(self, sentences: dict, extra: list) -> None:
        if self.result is not None:
            self.result.session.apply_findings_text(sentences, extra)

    def _impression_typed(self, text: str) -> None:
        if self.result is not None:
            self.result.session.set_impression(text)

    def _on_boxes_data(self, event) -> None:
        if self._syncing_boxes:
            return
        r = self._run_of(event.source, "boxes")
        if r is None:
            kept = next((k for k in self.results if k.boxes is event.source), None)
            if (
                kept is not None
                and self.busy
                and str(event.action) in ("added", "removed", "changed")
            ):
                # a kept run's box edited while another CT is analysed: put back, and say so
                QTimer.singleShot(0, lambda k=kept: self._redraw_boxes(k))
                self.status.setText(
                    f"{kept.ct_name}: boxes can be edited when the analysis running now ends."
                )
            return
        action = str(event.action)
        ids = r.boxes.features["finding_id"].to_numpy()
        if action == "removing":
            self._pending_removed = [str(ids[i]) for i in event.data_indices if 0 <= i < len(ids)]
            return
        if action == "removed":
            removed, self._pending_removed = self._pending_removed, []
            drafted = r.session.model_finding_ids()
            for fid in dict.fromkeys(f for f in removed if f):
                if fid not in drafted:  # the reader's own box: gone, not a rejected finding
                    if self.selected == fid:
                        self.selected = None
                    r.session.delete_added(fid)
                    self.status.setText(f"Deleted {fid} (added in this review).")
                elif r.session.finding(fid).status != "rejected":
                    r.session.set_status(fid, "rejected")
                else:
                    self._redraw_boxes()
            return
        if action == "added":
            idx = [i if i >= 0 else len(r.boxes.data) + i for i in event.data_indices]
            for i in idx:
                if ids[i]:
                    continue
                drawn = np.array(r.boxes.data[i])
                QTimer.singleShot(0, lambda v=drawn: self._box_drawn(v))
            return
        if action == "changed":
            moved: dict[str, np.ndarray] = {}
            types = r.boxes.shape_type
            for i in event.data_indices:
                if not (0 <= i < len(ids)) or not ids[i] or ids[i] in moved:
                    continue
                if types[i] != "rectangle":  # a 3-D frame's edge (napari edits none in 3-D)
                    continue
                v = np.array(r.boxes.data[i])
                if self._box_differs(str(ids[i]), v):
                    moved[str(ids[i])] = v
            for fid, v in moved.items():
                QTimer.singleShot(0, lambda f=fid, v=v: self._box_edited(f, v))

    def _box_differs(self, fid: str, vertices: np.ndarray) -> bool:
        r = self.result
        try:
            f = r.session.finding(fid)
        except KeyError:
            return False
        return _edited_box(finding_box_index(f, r.volume), vertices) is not None

    def _box_edited(self, fid: str, vertices: np.ndarray) -> None:
        """A box rectangle was moved or resized on a slice of any plane: the 3-D box follows in
        the plane's two axes and keeps its extent across it."""
        r = self.result
        if r is None:
            return
        box = _edited_box(finding_box_index(r.session.finding(fid), r.volume), vertices)
        if box is None:
            return
        was = r.session.finding(fid).mean_hu
        try:
            f = r.session.move_box(fid, *box)
        except ValueError as e:  # e.g. moved wholly onto another finding
            self.status.setText(f"Could not move {fid}'s box: {e}.")
            self._redraw_boxes(r)
            return
        if f.kind != "pleural effusion" and f.mean_hu < OFF_LESION_HU <= was:
            # the mask moves with the box: moved off the lesion, it measures lung
            self.status.setText(
                f"{fid}'s mask moved with its box onto aerated lung (mean {f.mean_hu:.0f} HU, "
                f"was {was:.0f}): move the box back, or paint the lesion."
            )

    def _box_drawn(self, vertices: np.ndarray) -> None:
        """A new rectangle, on an axial, coronal or sagittal slice: a finding the model missed
        (box depth = its size in the plane)."""
        r = self.result
        if r is None:
            return
        try:
            f = r.session.add_drawn(vertices)
        except ValueError as e:
            self.status.setText(str(e))
            self._redraw_boxes()
            return
        self.select_finding(f.id)
        self.status.setText(_added_text(f))

    def _on_paint(self, event) -> None:
        r = self._run_of(getattr(event, "source", None), "masks")
        if r is None:
            return
        self._painting_in(r)
        for atom in event.value or []:
            old, new = _paint_values(atom)
            self._painted.update(int(v) for v in old)
            self._painted.update(int(v) for v in new)
        self._paint_timer.start()

    def _watch_history(self, layer) -> None:
        """napari's undo and redo of a masks layer (Ctrl+Z) write the label map without a paint
        event: after either, every finding of its run is measured again (and a label a redo
        brings back is added), as after a stroke."""
        for name in ("undo", "redo"):
            step = getattr(layer, name)

            def replay(step=step, layer=layer) -> None:
                step()
                r = self._run_of(layer, "masks")
                if r is not None:
                    self._painting_in(r)
                    self._painted.update(f.label for f in r.session.findings if f.label)
                    self._painted.update(int(v) for v in np.unique(np.asarray(layer.data)))
                    self._paint_timer.start()

            setattr(layer, name, replay)

    def _painting_in(self, r: RunResult) -> None:
        """Strokes now go to run ``r``: those still waiting in another run are measured there."""
        if self._painted and self._painted_in is not r:
            self._paint_timer.stop()
            self._remeasure_painted()
        self._painted_in = r

    def _remeasure_painted(self) -> None:
        r = self.result if self._painted_in is None else self._painted_in
        painted, self._painted, self._painted_in = self._painted, set(), None
        if r is None or r not in self.results:
            return  # (its CT closed within the pause: its review is put away, autosaved)
        s = r.session
        ids = [f.id for f in s.findings if f.label and f.label in painted]
        changed = s.mask_changed(ids)
        gone = [f.id for f in changed if f not in s.findings]
        split = [  # (an effusion may lie in pieces: both sides, or parted by a fissure)
            (f.id, n)
            for f in changed
            if f in s.findings and f.kind != "pleural effusion" and (n := _pieces(s.mask(f.id))) > 1
        ]
        if split:  # a stroke far from its lesion: measured (and boxed) as one lesion
            fid, n = split[0]
            self.status.setText(
                f"{fid}'s mask is now {n} separate pieces, measured as one lesion: erase a "
                "stray piece, or paint it with a new label to make it a finding of its own."
            )
        if gone:  # added by the reader, and every voxel of it erased (an undone stroke)
            if r is self.result and self.selected in gone:
                self.selected = None
            self.status.setText(f"Removed {', '.join(gone)}: none of its voxels are left.")
        # a label no finding has (napari's "new label"): a lesion the model missed, painted
        for value in sorted(v for v in painted if v > 0 and s.by_label(v) is None):
            with contextlib.suppress(ValueError):  # painted over again: no voxel has it now
                self.status.setText(_added_text(s.add_painted(value)))
        if r is not self.result:  # a kept run's (during another CT's analysis): its boxes too
            self._sync_history(r)
            self._redraw_boxes(r)

    def _sync_history(self, r: RunResult | None) -> None:
        """After the session wrote the label map itself (a box moved or drawn, a mask redrawn
        for its kind), napari's undo history of the masks layer, which holds only strokes, is
        cleared: Ctrl+Z would replay an older stroke over the new mask (a moved nodule left in
        two pieces, measured as one)."""
        if r is None or r.masks is None or r.session.labels_written == r.labels_written:
            return
        r.labels_written = r.session.labels_written
        _clear_undo_history(r.masks)
