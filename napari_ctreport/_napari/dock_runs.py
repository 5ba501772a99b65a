"""Running the analysis from the review dock, and showing its result without freezing napari.

:class:`AnalysisRuns` is the part of :class:`~napari_ctreport._napari.review_dock.ReviewDock`
that starts :func:`~napari_ctreport._napari.session.run_analysis` in a
:func:`napari.qt.threading.thread_worker` (progress in napari's activity dock, Cancel) and adds
its layers. The layers' data are built in the worker thread
(:func:`~napari_ctreport._napari.layers.result_layers_data`); the UI thread then adds them in
steps of at most about :data:`SLICE_BUDGET_S` of our own work each (one layer, a few glyphs of the
boxes' text, a chunk of box rectangles), chained with ``QTimer.singleShot(0, ...)`` so that the
event loop paints and handles input in between. The dock's ``result_shown`` is emitted when the
last step is done.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..io import window_limits
from ..io.volume import CTVolume
from .dock_edits import _clear_undo_history
from .dock_views import _text_columns
from .layers import BOX_EDGE, result_layers_data, volume_from_layer
from .session import AnalysisCancelled, ReviewSession, run_analysis

#: Showing a run's layers gives the event loop a turn once this much UI-thread time (s) is spent.
SLICE_BUDGET_S = 0.05
#: Box rectangles added to the Shapes layer per call while a run's layers are shown.
BOX_CHUNK = 16


def _n_findings(analysis) -> str:
    n = len(analysis.findings)
    return f"{n} finding" if n == 1 else f"{n} findings"


class _Progress(QObject):
    """Carries progress from the analysis thread to the UI thread (queued signal)."""

    progressed = Signal(float, str)


@dataclass(eq=False)  # runs are compared by identity (they hold arrays)
class RunResult:
    """What one analysis run put into the viewer."""

    analysis: Any
    session: ReviewSession
    volume: CTVolume
    ct_name: str
    boxes: Any = None
    attention: Any = None
    masks: Any = None
    #: Shapes layer outlining the set-aside candidate last shown (``None`` until one is).
    set_aside: Any = None
    suffix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: The session's :attr:`~.session.ReviewSession.labels_written` when the masks layer's undo
    #: history was last made to match it.
    labels_written: int = 0

    @property
    def layers(self) -> tuple[Any, ...]:
        """The layers this run put into the viewer (``None`` for one it has not added)."""
        return (self.boxes, self.attention, self.masks, self.set_aside)


def _run_analysis(
    volume: CTVolume,
    *,
    model: str | None,
    device: str,
    progress,
    cancel: threading.Event,
    autosave_root: Path | None,
    isolate: bool = True,
    run: int = 1,
):
    """The worker's job (worker thread): analyse (in a child process), start the session."""
    try:
        analysis, lungs = run_analysis(
            volume, model=model, device=device, progress=progress, cancel=cancel, isolate=isolate
        )
    except AnalysisCancelled:
        return None  # not an error: no notification
    if cancel.is_set():
        return None
    session = ReviewSession.from_analysis(
        analysis, volume, autosave_root=autosave_root, lungs=lungs, run=run
    )
    # attention stays float16 as it comes: napari converts only the slice on screen
    prepared = result_layers_data(session.findings, session.labels, session.attention, volume)
    return analysis, session, prepared


def _warm_glyphs(viewer, chars: str):
    """Render the glyphs of ``chars`` into the canvas's font atlas, yielding every
    :data:`SLICE_BUDGET_S` (generator). A text visual otherwise renders every glyph it lacks in one
    draw: ~10 ms a glyph on a software OpenGL, a ~0.4 s stall for the boxes' labels. Uses the
    canvas's font manager (napari 0.9's ``font_info()``); does nothing where that is not there."""
    try:
        info = viewer.window._qt_viewer.canvas.font_info()
        font = info.font_manager.get_font(info.face, False, False)
    except (AttributeError, TypeError):
        return
    t0 = time.perf_counter()
    for ch in chars:
        if ch.isspace():
            continue
        font[ch]
        if time.perf_counter() - t0 > SLICE_BUDGET_S:
            yield "glyphs"
            t0 = time.perf_counter()


def _add_rectangles(layer, rects: list[np.ndarray], kw: dict[str, Any]):
    """Add box rectangles to a Shapes layer in chunks of :data:`BOX_CHUNK` (generator, yields
    every :data:`SLICE_BUDGET_S`), each chunk with its finding's features; at the end the layer
    holds ``rects`` with ``kw``'s features and defaults."""
    features = kw["features"]
    ids, colors = features["finding_id"], kw["edge_color"]
    t0 = time.perf_counter()
    i = 0
    while i < len(rects):
        j = i + 1
        while j < len(rects) and j - i < BOX_CHUNK and ids[j] == ids[i]:
            j += 1
        layer.feature_defaults = {k: v[i] for k, v in features.items()}
        layer.add_rectangles(
            rects[i:j],
            edge_color=colors[i:j],
            face_color="transparent",
            edge_width=kw["edge_width"][i:j],
        )
        i = j
        if time.perf_counter() - t0 > SLICE_BUDGET_S:
            yield f"box rectangles {i}/{len(rects)}"
            t0 = time.perf_counter()
    layer.features = _text_columns(features)
    layer.feature_defaults = kw["feature_defaults"]


class AnalysisRuns:
    """The review dock's runs (a mixin of
    :class:`~napari_ctreport._napari.review_dock.ReviewDock`, whose widgets and state it uses):
    :meth:`run` analyses the picked CT in a worker, :meth:`cancel` stops it, and the result's
    layers are added step by step (:meth:`_show_steps`)."""

    def run(self):
        """Analyse the picked CT in a worker thread; returns the worker (or ``None``)."""
        layer = self.current_layer()
        if layer is None or self.busy:
            return None
        self.report_editor.commit()  # typed text counts among the changes a replace discards
        self._replace_choice = None
        runs = [r.session.run for r in self.results if r.ct_name == layer.name]
        run_no = 1
        if runs:
            choice = self.ask_replace_or_keep()
            if choice is None:
                return None
            self._replace_choice = choice
            # a kept run gets the next number (its own autosave); a replacing run takes over run 1
            run_no = max(runs) + 1 if choice == "keep" else 1
        from napari.qt.threading import create_worker
        from napari.utils import progress
        from napari.utils.notifications import show_warning

        from ..analysis import too_thin_to_analyse

        volume = volume_from_layer(layer)
        thin = too_thin_to_analyse(volume)
        if thin is not None:  # said here, before a child process starts for nothing
            self.status.setText(f"Not analysed: {layer.name} is {thin}.")
            show_warning(f"{layer.name}: {thin}")
            return None
        self._cancel = threading.Event()
        emitter = _Progress(self)
        emitter.progressed.connect(self._on_progress)
        self._pbar = progress(total=100, desc=f"CT analysis: {layer.name}")
        worker = create_worker(
            _run_analysis,
            volume,
            model=self.model(),
            device=self.device_combo.currentText(),
            progress=emitter.progressed.emit,
            cancel=self._cancel,
            autosave_root=self.autosave_root,
            isolate=self.isolate,
            run=run_no,
            _start_thread=False,
            _ignore_errors=True,  # shown by napari's notification and in the status line
        )
        worker.returned.connect(lambda res, v=volume, n=layer.name: self._on_returned(res, v, n))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._emitter = emitter
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Starting…")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running analysis (it stops at the next sliding window or finding)."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        if self._pbar is not None:
            n = int(round(100 * fraction))
            if n > self._pbar.n:
                self._pbar.update(n - self._pbar.n)
            self._pbar.set_description(f"CT analysis: {message}")
        self.status.setText(f"{int(100 * fraction)} %  {message}")

    def _on_error(self, exc: BaseException) -> None:
        # napari's worker already shows the error as a notification
        self.status.setText(f"Analysis failed: {exc}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._cancel = None
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(self.current_layer() is not None and not self.busy)

    def _on_returned(self, res, volume: CTVolume, ct_name: str) -> None:
        t0 = time.perf_counter()
        self.timings = {"returned_at": t0}
        if res is None:
            self.status.setText("Cancelled.")
            return
        analysis, session, prepared = res
        if ct_name not in self.viewer.layers:
            # the reader closed the CT while it was analysed: no layers for a CT that is gone;
            # the review was autosaved and is offered when the CT is opened again. The CT's
            # earlier reviews go too (a replaced one is not saved again: its autosave is this
            # run's now)
            if self._replace_choice == "replace":
                for r in self.results:
                    if r.ct_name == ct_name and r.session is not None:
                        r.extra["replaced"] = r.session.run == session.run
            self._drop_closed_cts()
            self.status.setText(
                f"{ct_name} was closed during the run: its {_n_findings(analysis)} were "
                "autosaved; open the CT again to review them."
            )
            return
        suffix = ""
        replaced: list[RunResult] = []
        if self._replace_choice == "replace":
            replaced = [r for r in self.results if r.ct_name == ct_name]
            for r in replaced:  # the reader chose to drop these reviews: no restoring them later
                if r.session.run != session.run:
                    r.session.discard_autosave()
        elif session.run > 1:
            suffix = f" (run {session.run})"
        t = analysis.timings_s.get("total", 0.0)
        self.status.setText(f"{_n_findings(analysis)} in {t:.1f} s; adding the layers…")

        # the run that takes over run 1's layers (new data in napari's existing layers costs
        # far less UI time than removing and inserting layers); the others are removed
        reuse = next((r for r in replaced if r.session.run == 1 and r.suffix == ""), None)

        def steps():
            for r in replaced:
                if r is not reuse:
                    yield from self._remove_result(r)
            yield from self._show_steps(
                session,
                volume,
                ct_name,
                analysis=analysis,
                prepared=prepared,
                suffix=suffix,
                reuse=reuse,
            )
            self.status.setText(
                f"{_n_findings(analysis)} in {t:.1f} s on {analysis.device} "
                f"({analysis.model_info.get('name', '')} "
                f"{analysis.model_info.get('version', '')})."
            )

        self._showing = steps()
        self.show_log = []
        self.run_button.setEnabled(False)
        self.timings["show_steps"] = 0
        self.timings["show_max_step_s"] = 0.0
        QTimer.singleShot(0, self._show_next_step)

    def _show_next_step(self) -> None:
        """Run one step of showing a result (UI thread), then give the event loop a turn."""
        steps = self._showing
        if steps is None:
            return
        t0 = time.perf_counter()
        done = False
        what = "?"
        try:
            what = next(steps)
        except StopIteration:
            done, what = True, "select the first finding"
        except BaseException:
            self._showing = None
            self._show_study()
            raise
        finally:
            dt = time.perf_counter() - t0
            self.show_log.append((str(what), dt))
            self.timings["show_steps"] = self.timings.get("show_steps", 0) + 1
            self.timings["show_max_step_s"] = max(self.timings.get("show_max_step_s", 0.0), dt)
        if not done:
            QTimer.singleShot(0, self._show_next_step)
            return
        self._showing = None
        now = time.perf_counter()
        self.timings["shown_at"] = now
        self.timings["show_layers_s"] = now - self.timings.get("returned_at", now)
        self._show_study()
        self.result_shown.emit(self.result)

    def _remove_result(self, r: RunResult):
        """Remove a run's layers, one a step (generator), then forget the run."""
        if self.result is r:
            r.session.on_change = None
            self.result = None
        for layer in r.layers:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
                yield f"removed {layer.name!r}"
        self.results.remove(r)

    def _show_steps(
        self,
        session: ReviewSession,
        volume: CTVolume,
        ct_name: str,
        *,
        analysis,
        prepared: dict[str, Any],
        suffix: str,
        reuse: RunResult | None = None,
    ):
        """Add the layers of a session and wire the dock to it (UI thread), as a generator: each
        ``yield`` is a point where the event loop may run (see the module docstring). With
        ``reuse`` (a run being replaced), its layers get the new data instead."""
        if self.result is not None:
            self._take_pending_edits()
            if self.result.session is not None:
                self.result.session.on_change = None
            self.result = None
        r = RunResult(
            analysis=analysis, session=session, volume=volume, ct_name=ct_name, suffix=suffix
        )
        layers = self.viewer.layers
        old_attention, old_masks, old_boxes = (
            (ly if ly is not None and ly in layers else None)
            for ly in ((reuse.attention, reuse.masks, reuse.boxes) if reuse else (None,) * 3)
        )
        if reuse is not None:
            self.results.remove(reuse)
            if reuse.set_aside is not None and reuse.set_aside in layers:
                layers.remove(reuse.set_aside)
                yield "removed the old set-aside layer"
        if old_attention is not None:
            if prepared["attention"] is None:
                layers.remove(old_attention)
                yield "removed the old attention layer"
            else:
                r.attention = old_attention
        if prepared["attention"] is not None:
            data, kw = prepared["attention"]
            if r.attention is not None:
                r.attention.data = data
            else:
                r.attention = self.viewer.add_image(
                    data, **{**kw, "name": f"{ct_name} attention{suffix}"}
                )
            r.extra["attention_all"] = data
            yield "attention layer"
        data, kw = prepared["masks"]
        if old_masks is not None:
            r.masks = old_masks
            r.masks.data = data
            r.masks.colormap = kw["colormap"]
            _clear_undo_history(
                r.masks
            )  # the strokes of the run replaced: Ctrl+Z must not redo them
        else:
            r.masks = self.viewer.add_labels(data, **{**kw, "name": f"{ct_name} masks{suffix}"})
            r.masks.events.paint.connect(self._on_paint)
            self._watch_history(r.masks)
        yield "masks layer"
        yield from _warm_glyphs(self.viewer, prepared["glyphs"])
        rects, kw = prepared["boxes"]
        new_boxes = old_boxes is None
        if old_boxes is not None:
            r.boxes = old_boxes
            self._syncing_boxes = True
            try:
                with r.boxes.events.data.blocker():
                    r.boxes.data = []
            finally:
                self._syncing_boxes = False
        else:
            r.boxes = self.viewer.add_shapes(
                None,
                ndim=3,
                **{
                    k: v
                    for k, v in kw.items()
                    if k
                    not in (
                        "edge_color",
                        "edge_width",
                        "features",
                        "feature_defaults",
                        "shape_type",
                        "name",
                    )
                },
                edge_width=BOX_EDGE,  # what the reader draws
                name=f"{ct_name} findings{suffix}",
                features={k: np.empty(0, dtype=object) for k in kw["features"]},
            )
        yield "boxes layer"
        yield from _add_rectangles(r.boxes, rects, kw)
        if new_boxes:
            r.boxes.events.data.connect(self._on_boxes_data)
        r.boxes.mode = "select"
        if ct_name in layers:
            ct_layer = layers[ct_name]
            if id(ct_layer) not in self._watched_ct:
                self._watched_ct.add(id(ct_layer))
                ct_layer.events.contrast_limits.connect(self._window_changed)
            r.extra["ct_layer"] = ct_layer
            if tuple(ct_layer.contrast_limits) != window_limits(*volume.default_window()):
                self._label_timer.start()
        self.results.append(r)
        self.result = r
        self.viewer.reset_view()
        session.on_change = self._session_changed
        self._set_review_enabled(True)
        self.selected = None
        # the layers were just drawn from the session (for a 2-D view: a 3-D one shows outlines)
        self._refresh_views(boxes=self._in_3d())
        yield "table and report"
        active = [f for f in session.findings if f.status != "rejected"]
        if active:
            self.select_finding(active[0].id)
