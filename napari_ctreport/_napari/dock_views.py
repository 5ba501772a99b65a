"""What the review dock shows of a review: the selected finding (slice, box, text, attention),
set-aside candidates, and the findings' boxes, labels and masks kept in step with the session
in 2-D and 3-D views.

:class:`ReviewViews` is the part of :class:`~napari_ctreport._napari.review_dock.ReviewDock`
that draws; it changes no finding (the reader's edits are
:class:`~napari_ctreport._napari.dock_edits.LayerEdits`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from ..io.volume import CTVolume
from .layers import (
    META_KEY,
    box_edge_widths,
    box_outline_3d,
    box_rectangles,
    boxes_layer_data,
    finding_box_index,
    label_text_colors,
    labels_layer_data,
    rectangle_plane,
)
from .set_aside import SET_ASIDE_COLOR, candidate_text

if TYPE_CHECKING:
    from .dock_runs import RunResult

#: HU of the surface a CT of ours is drawn as in the 3-D view: bone (and contrast-filled vessels).
BONE_SURFACE_HU = 200.0


def _text_columns(features: dict[str, list]) -> dict[str, np.ndarray]:
    """``features`` as object columns: an empty list makes a float column in pandas, and the
    text defaults (``""``) then failed to convert, so a run with no finding never showed."""
    return {k: np.asarray(v, dtype=object) for k, v in features.items()}


def _set_aside_label(candidate) -> str:
    """The text on a set-aside candidate's grey outline: its id and the rule that dropped it."""
    return f"{candidate.id} set aside: {candidate.attributes.get('dropped_by', '?')}"


def _groups(ids: list[str]) -> dict[str, list[int]]:
    """Finding id -> positions of its rectangles, in order."""
    out: dict[str, list[int]] = {}
    for i, fid in enumerate(ids):
        out.setdefault(fid, []).append(i)
    return out


def _rgba(colors: list[str], shape: tuple[int, ...]) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    out = transform_color(colors)
    return out if out.shape == shape else np.zeros(shape)


class ReviewViews:
    """The review dock's views and navigation (a mixin of
    :class:`~napari_ctreport._napari.review_dock.ReviewDock`, whose widgets and state it uses)."""

    # -- selection and navigation ---------------------------------------------------------
    def select_finding(self, finding_id: str) -> None:
        """Select a finding: jump to its slice and centre, select its box, highlight its text."""
        r = self.result
        if r is None:
            return
        try:
            f = r.session.finding(finding_id)
        except KeyError:
            return
        self.selected = finding_id
        if self.table.selected_id() != finding_id:
            self.table.blockSignals(True)
            self.table.select_finding(finding_id)
            self.table.blockSignals(False)
        self._go_to(f, r.volume)
        self._select_box(finding_id)
        self.report_editor.highlight(finding_id)
        self._show_attention()
        if (
            r.masks is not None
            and f.label
            and f.status != "rejected"  # a stroke would go into a finding the reader refused
            and r.masks.selected_label != f.label
        ):
            # the brush paints the finding selected (it stayed on label 1: a stroke beside
            # the selected nodule went to another finding, the mass in the other lung)
            r.masks.selected_label = int(f.label)

    def _go_to(self, f, volume: CTVolume) -> None:
        """Show the slice through the middle of a finding's box in the plane shown (axial,
        coronal or sagittal), centred on it."""
        x, y, _ = f.center_lps_mm
        lo, hi = finding_box_index(f, volume)
        zi = int(np.clip(np.round((lo[0] + hi[0]) / 2.0), 0, volume.shape[0] - 1))
        z_world = volume.translate_zyx[0] + zi * volume.spacing_zyx[0]
        at = (z_world, y, x)  # world (LPS z, y, x)
        for axis, value in enumerate(at):
            self.viewer.dims.set_point(axis, value)
        # napari >= 0.9 keeps the camera on the scene; older releases on the viewer. The
        # camera's centre is in the dims' order (its last two: the plane shown).
        scene = getattr(self.viewer, "scene", None)
        camera = scene.camera if scene is not None else self.viewer.camera
        order = tuple(self.viewer.dims.order)[-3:]
        camera.center = tuple(at[a] for a in order) if len(order) == 3 else at

    # -- set-aside candidates -------------------------------------------------------------
    def show_set_aside(self, candidate_id: str) -> None:
        """Go to a candidate a rule set aside and outline its box in grey (its own layer)."""
        r = self.result
        if r is None:
            return
        try:
            c = r.session.set_aside_candidate(candidate_id)
        except KeyError:
            return
        self._outline_set_aside(r, self._box_outline(c, r.volume), _set_aside_label(c))
        self._go_to(c, r.volume)
        self.status.setText(f"Set aside: {candidate_text(c)}")

    def _outline_set_aside(
        self, r: RunResult, shapes: list[tuple[np.ndarray, str, float]], label: str = ""
    ) -> None:
        """Outline a set-aside candidate's box with ``shapes`` (:meth:`_box_outline`) in the
        run's grey layer (added on first use), or clear it (``[]``)."""
        layer = r.set_aside if r.set_aside in self.viewer.layers else None
        if layer is None:
            if not shapes:
                return
            active = self.viewer.layers.selection.active
            layer = r.set_aside = self.viewer.add_shapes(
                None,
                ndim=3,
                name=f"{r.ct_name} set aside{r.suffix}",
                scale=r.volume.spacing_zyx,
                translate=r.volume.translate_zyx,
                metadata={META_KEY: {"role": "set aside"}},
                features={"label": np.empty(0, dtype=object)},
                text={
                    "string": "{label}",
                    "color": SET_ASIDE_COLOR,
                    "size": 10,
                    "anchor": "upper_left",
                    "translation": [0, -3, 0],
                },
            )
            if active is not None:  # drawing a missed finding stays on the boxes layer
                self.viewer.layers.selection.active = active
        if len(layer.data):
            layer.selected_data = set(range(len(layer.data)))
            layer.remove_selected()
        if shapes:
            layer.feature_defaults = {"label": label}
            layer.add(
                [v for v, _, _ in shapes],
                shape_type=[t for _, t, _ in shapes],
                edge_color=SET_ASIDE_COLOR,
                face_color="transparent",
                edge_width=[w for _, _, w in shapes],
            )

    def add_set_aside(self, candidate_id: str) -> None:
        """Add a set-aside candidate as a finding (measured on the CT) and select it."""
        r = self.result
        if r is None:
            return
        try:
            f = r.session.add_set_aside(candidate_id)
        except (KeyError, ValueError) as e:
            self.status.setText(f"Could not add {candidate_id}: {e}")
            return
        self._outline_set_aside(r, [])
        self.status.setText(f"Added set-aside {candidate_id} as {f.id}.")
        self.select_finding(f.id)

    def _shown_slice(self, volume: CTVolume) -> tuple[int, int]:
        """``(axis, index)`` of the slice shown: the plane's axis of the CT index (0 axial, 1
        coronal, 2 sagittal; axial in a 3-D view) and the slice's index along it."""
        dims = self.viewer.dims
        extra = dims.ndim - 3  # leading dims of other layers, if any
        axis = int(dims.order[-3]) - extra if dims.ndisplay == 2 and dims.ndim >= 3 else 0
        axis = axis if 0 <= axis < 3 else 0
        at = (dims.point[extra + axis] - volume.translate_zyx[axis]) / volume.spacing_zyx[axis]
        return axis, int(np.round(at))

    def _box_hits(self, finding_id: str) -> list[int]:
        """The rectangles of a finding's box on the slice shown."""
        r = self.result
        if r is None or r.boxes is None:
            return []
        shown = self._shown_slice(r.volume)
        ids = r.boxes.features["finding_id"].to_numpy()
        return [
            i
            for i, fid in enumerate(ids)
            if fid == finding_id and rectangle_plane(r.boxes.data[i])[:2] == shown
        ]

    def _select_box(self, finding_id: str) -> None:
        if self.result is not None and self.result.boxes is not None:
            self.result.boxes.selected_data = set(self._box_hits(finding_id))

    def step_finding(self, step: int) -> None:
        """Select the next (``+1``) or previous (``-1``) finding in table order."""
        ids = self.table.ids
        if not ids:
            return
        i = ids.index(self.selected) if self.selected in ids else (-1 if step > 0 else 0)
        self.select_finding(ids[(i + step) % len(ids)])

    def _command(self, name: str) -> None:
        if name in ("accept", "reject"):
            self.set_status(name + "ed")
        else:
            self.step_finding(+1 if name == "next" else -1)

    def set_status(self, status: str) -> None:
        """Accept or reject the selected finding."""
        if self.result is None or self.selected is None:
            return
        try:
            self.result.session.set_status(self.selected, status)
        except ValueError as e:  # an erased finding: nothing to accept
            self.status.setText(f"Could not {status[:-2]} {self.selected}: {e}.")

    def regenerate_sentence(self) -> None:
        """Rewrite the selected finding's sentence from its attributes."""
        if self.result is None or self.selected is None:
            return
        self.report_editor.commit()
        self.result.session.regenerate_sentence(self.selected)

    # -- views ----------------------------------------------------------------------------
    def _session_changed(self, action: str, finding_id: str | None) -> None:
        self._sync_history(self.result)
        self._refresh_views(
            boxes=action not in ("sentence", "free text", "impression", "regenerate sentence")
        )

    def _refresh_views(self, *, boxes: bool = True) -> None:
        self._watch_window()  # docked by now: the window is napari's (not the dock's frame)
        if self._in_3d():
            self._style_for_view()  # a review shown while the view is 3-D already
        r = self.result
        if r is None:
            return
        s = r.session
        self.table.set_findings(s.findings, selected=self.selected)
        self.set_aside_panel.set_candidates(s.set_aside)
        if r.set_aside is not None and self.set_aside_panel.current_id() is None:
            self._outline_set_aside(r, [])
        self.report_editor.show_report(s.findings_lines(), s.impression_lines(), s.diff())
        if boxes:
            self._redraw_boxes()
            self._recolor_masks()

    def _in_3d(self) -> bool:
        return self.viewer.dims.ndisplay == 3

    def _view_changed(self, event: object = None) -> None:
        """The view went 3-D or back to 2-D: every run's boxes are drawn again, as wire frames
        in 3-D (:func:`~.layers.box_outline_3d`) and slice by slice in 2-D; so is a set-aside
        outline.

        In 3-D a CT of ours still shown as napari's default maximum intensity projection (with
        a lung window, a white slab that hides everything in it) is shown as the surface of its
        bone (:data:`BONE_SURFACE_HU`), the findings' masks and boxes inside the ribs; the boxes
        and their labels are drawn over everything (no depth test), so none is hidden behind
        bone or a mask."""
        self._style_for_view()
        for r in self.results:
            self._redraw_boxes(r)
            current = self.set_aside_panel.current_id() if r is self.result else None
            if current is not None and r.set_aside in self.viewer.layers:
                with contextlib.suppress(KeyError):
                    c = r.session.set_aside_candidate(current)
                    self._outline_set_aside(r, self._box_outline(c, r.volume), _set_aside_label(c))

    def _style_for_view(self) -> None:
        """The CTs' rendering and the boxes' blending for the view shown (:meth:`_view_changed`;
        also for a review shown while the view is 3-D already)."""
        three_d = self._in_3d()
        if three_d:
            reviewed = {r.ct_name for r in self.results}
            for ct in self.ct_layers():
                if (META_KEY in ct.metadata or ct.name in reviewed) and ct.rendering == "mip":
                    ct.rendering = "iso"
                    ct.iso_threshold = BONE_SURFACE_HU
        blending = "translucent_no_depth" if three_d else "translucent"
        for r in self.results:
            if (
                r.boxes is not None
                and r.boxes in self.viewer.layers
                and r.boxes.blending != blending
            ):
                r.boxes.blending = blending

    def _box_outline(self, f, volume: CTVolume) -> list[tuple[np.ndarray, str, float]]:
        """The shapes that draw a box in the view, ``(vertices, shape_type, edge_width)``: a
        rectangle on every slice in 2-D (:func:`~.layers.box_rectangles`), its wire frame in 3-D
        (:func:`~.layers.box_outline_3d`)."""
        lo, hi = finding_box_index(f, volume)
        if self._in_3d():
            return box_outline_3d(lo, hi, volume.shape, volume.spacing_zyx)
        rects = box_rectangles(lo, hi, volume.shape)
        return list(
            zip(rects, ["rectangle"] * len(rects), box_edge_widths(rects, volume), strict=True)
        )

    def _redraw_boxes(self, r: RunResult | None = None) -> None:
        """Bring a run's boxes layer (default: the reviewed run's) in line with its session.
        Only the rectangles of findings whose box changed (moved, resized, added, deleted; the
        view turned 3-D or 2-D) are replaced; colours and labels of the others are updated in
        place (an accept or a kind change re-triangulates nothing)."""
        r = self.result if r is None else r
        if r is None or r.boxes is None or r.boxes not in self.viewer.layers:
            return
        layer = r.boxes
        data, kw, _ = boxes_layer_data(
            r.session.findings, r.volume, limits=self._ct_limits(r), outline=self._in_3d()
        )
        want_ids = list(kw["features"]["finding_id"])
        have_ids = [str(v) for v in layer.features["finding_id"].to_numpy()]
        if len(have_ids) != len(layer.data):  # features out of step: start over
            have_ids = [""] * len(layer.data)
        want = _groups(want_ids)
        have = _groups(have_ids)
        old = layer.data
        changed = {
            fid
            for fid in set(want) | set(have)
            if not fid
            or len(want.get(fid, ())) != len(have.get(fid, ()))
            or any(
                old[i].shape != data[j].shape or not np.allclose(old[i], data[j], atol=1e-3)
                for i, j in zip(have[fid], want[fid], strict=True)
            )
        }
        remove = sorted(i for fid in changed for i in have.get(fid, ()))
        add = [j for fid in dict.fromkeys(want_ids) if fid in changed for j in want[fid]]
        # layer order after the edit: kept rectangles as they were, then the re-added ones
        removed = set(remove)
        kept = [i for i in range(len(have_ids)) if i not in removed]
        order = [want[have_ids[i]][have[have_ids[i]].index(i)] for i in kept] + add
        self._syncing_boxes = True
        try:
            with layer.events.data.blocker():
                if remove:
                    layer.selected_data = set(remove)
                    layer.remove_selected()
                if add:
                    types = kw["shape_type"]  # one for all (2-D), or one per shape (3-D)
                    layer.add(
                        [data[j] for j in add],
                        shape_type=types if isinstance(types, str) else [types[j] for j in add],
                        edge_color=[kw["edge_color"][j] for j in add],
                        face_color="transparent",
                        edge_width=[kw["edge_width"][j] for j in add],
                    )
                colors = [kw["edge_color"][j] for j in order]
                if colors and not np.allclose(
                    layer.edge_color, _rgba(colors, layer.edge_color.shape)
                ):
                    layer.edge_color = colors
                features = {k: [v[j] for j in order] for k, v in kw["features"].items()}
                if changed or any(layer.features[k].tolist() != v for k, v in features.items()):
                    layer.features = _text_columns(features)
                layer.feature_defaults = kw["feature_defaults"]
        finally:
            self._syncing_boxes = False
        if self.selected is not None and r is self.result:
            hits = self._box_hits(self.selected)
            if hits:
                layer.selected_data = set(hits)

    def _window_changed(self, event: object = None) -> None:
        self._label_timer.start()  # debounced: a window drag changes the limits many times

    def _ct_limits(self, r: RunResult) -> tuple[float, float] | None:
        """The display limits of the run's CT layer (``None`` when it is gone: the default
        window), which the box labels' text colours are picked for."""
        ct = r.extra.get("ct_layer")
        if ct is None or ct not in self.viewer.layers:
            return None
        lo, hi = ct.contrast_limits
        return float(lo), float(hi)

    def _recolor_labels(self) -> None:
        """Pick each box label's text colour again for the CT's current window (2-D: in 3-D
        the labels have their boxes' colours)."""
        if self._in_3d():
            return
        for r in self.results:
            layer, limits = r.boxes, self._ct_limits(r)
            if layer is None or limits is None or not len(layer.data):
                continue
            colors = label_text_colors(
                r.volume,
                list(layer.data),
                [str(t) for t in layer.features["label"]],
                limits=limits,
            )
            if layer.features["text_color"].tolist() != colors:
                features = layer.features.copy()
                features["text_color"] = colors
                layer.features = features

    def _recolor_masks(self) -> None:
        r = self.result
        if r is None or r.masks is None:
            return
        _, kw, _ = labels_layer_data(r.session.labels, r.session.findings, r.volume)
        from napari.utils.colormaps import DirectLabelColormap

        r.masks.colormap = DirectLabelColormap(color_dict=kw["colormap"])
        r.masks.refresh()

    def _show_attention(self) -> None:
        r = self.result
        if r is None or r.attention is None:
            return
        per = r.session.attention_per_finding
        if self.attention_selected.isChecked() and self.selected in per:
            fa = per[self.selected]
            r.attention.data = np.asarray(fa.weights, dtype=np.float32)
            r.attention.scale = fa.scale_zyx_mm
            r.attention.translate = fa.translate_zyx_mm
        elif "attention_all" in r.extra and r.attention.data is not r.extra["attention_all"]:
            r.attention.data = r.extra["attention_all"]
            r.attention.scale = r.volume.spacing_zyx
            r.attention.translate = r.volume.translate_zyx
