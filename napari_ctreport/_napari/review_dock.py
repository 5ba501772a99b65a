"""The CT report dock: pick the CT, run the model, review its findings and report, export.

The dock holds no file, model or measurement logic: analysis runs
:func:`napari_ctreport.analysis.analyze` in a :func:`napari.qt.threading.thread_worker`, and every
edit goes through :class:`~napari_ctreport._napari.session.ReviewSession` (which measures with
:mod:`napari_ctreport.report.measure`, writes with :mod:`napari_ctreport.report.writer` and
autosaves). Layers: boxes (Shapes, a rectangle per slice of a finding's 3-D box on each plane),
attention (Image, additive inferno) and masks (Labels, one label per finding).

This module builds the dock's widgets and keeps track of the CTs, their reviews and the
questions asked of the reader; its other parts are mixins in their own modules:
:class:`~napari_ctreport._napari.dock_runs.AnalysisRuns` (running the analysis and showing its
layers in steps that keep napari responsive),
:class:`~napari_ctreport._napari.dock_edits.LayerEdits` (the reader's edits of boxes, masks,
table and text) and :class:`~napari_ctreport._napari.dock_views.ReviewViews` (selection,
navigation, set-aside candidates, and the layers kept in step with the session).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..io import WINDOW_PRESETS, window_limits
from ..io.case import read_case
from ..io.volume import CTVolume
from .dock_edits import LayerEdits
from .dock_runs import AnalysisRuns, RunResult
from .dock_views import ReviewViews
from .findings_table import FindingsTable
from .layers import (
    META_KEY,
    result_layers_data,
    study_summary,
    volume_from_layer,
)
from .orientation import OrientationLetters
from .report_editor import ReportEditor
from .session import (
    ReviewSession,
    default_autosave_root,
    study_key,
)
from .set_aside import SetAsidePanel

if TYPE_CHECKING:
    import napari

#: Presets offered as buttons, in reading order for chest CT.
PRESET_BUTTONS = ("lung", "mediastinum", "soft tissue", "bone")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODEL = "Default model"
#: Masks are re-measured this long (ms) after the last paint stroke.
PAINT_DELAY_MS = 300
#: Box labels are re-coloured for the CT's window this long (ms) after it last changed.
LABEL_DELAY_MS = 200


#: Keys the dock binds on napari's canvas (next finding, previous, accept, reject): keys no
#: napari layer uses.
CANVAS_KEYS: tuple[str, ...] = ("N", "Shift-N", "Alt-A", "Alt-R")


class _CloseWatcher(QObject):
    """An event filter on napari's window that calls ``on_close`` (the dock's
    ``_take_pending_edits``, held weakly) when the window is about to close: text typed in the
    report editor's 0.6 s pause and strokes in their 0.3 s were lost when napari closed. It is
    the window's child (it goes with it) and never stops the window from closing."""

    def __init__(self, window: QObject, on_close: Any) -> None:
        import weakref

        super().__init__(window)
        self._on_close = weakref.WeakMethod(on_close)
        window.installEventFilter(self)

    def eventFilter(self, obj: Any, e: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if e.type() == QEvent.Type.Close and obj is self.parent():
            call = self._on_close()
            if call is not None:
                try:
                    call()
                except Exception:  # the window closes whatever happens here
                    logging.getLogger(__name__).exception("pending edits not saved on close")
        return False


class ReviewDock(AnalysisRuns, LayerEdits, ReviewViews, QWidget):
    """Dock widget: the study, windows, Run/Cancel, findings table, report editor, export.

    Hooks for tests and embedding (replace on the instance or the class):
    :meth:`ask_replace_or_keep` (second run), :meth:`ask_restore` (an autosave exists),
    :meth:`ask_open_case` (the CT came from a case folder) and :meth:`ask_export_anyway` (the
    report disagrees with the findings). :attr:`result_shown` is emitted
    with the :class:`RunResult` once a run's (or a restored review's, or a case's) layers are all
    in the viewer.
    """

    result_shown = Signal(object)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.setObjectName("ctreport-review-dock")
        self.autosave_root: Path | None = default_autosave_root()
        #: Run the analysis in a child process (no GIL contention with the UI thread).
        self.isolate = True
        self.result: RunResult | None = None
        self.results: list[RunResult] = []
        self.worker = None
        self.selected: str | None = None
        self._cancel: threading.Event | None = None
        self._pbar = None
        self._replace_choice: str | None = None
        self._syncing_boxes = False
        self._pending_removed: list[str] = []
        self._checked_studies: set[str] = set()
        #: The steps that still have to run to show a result (``None`` when none is pending).
        self._showing = None
        #: A review is being shown in one go (:meth:`_show_now`): its layers' arrival does not
        #: offer the CT's autosave or case folder again (a restore asked "Open case" midway).
        self._showing_now = False
        self._docked = False  # in napari's window (see :meth:`event`)
        #: Of the last run: ``returned_at`` and ``shown_at`` (perf_counter), ``show_layers_s``
        #: (wall time from the worker's result to the last layer), ``show_steps`` (UI-thread
        #: steps it took) and ``show_max_step_s`` (the longest of them).
        self.timings: dict[str, float] = {}
        #: ``(what, seconds)`` of each UI-thread step that showed the last run's result.
        self.show_log: list[tuple[str, float]] = []
        self.last_export = None
        #: Re-picks the box labels' text colours shortly after the CT's window changed.
        self._label_timer = QTimer(self)
        self._label_timer.setSingleShot(True)
        self._label_timer.setInterval(LABEL_DELAY_MS)
        self._label_timer.timeout.connect(self._recolor_labels)
        self._watched_ct: set[int] = set()  # ids of CT layers whose window changes we follow
        self._build_ui()
        self._bind_keys()

        self.layer_combo.currentTextChanged.connect(self._show_study)
        self.layer_combo.activated.connect(self._bring_forward)  # the reader picked a CT
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self.viewer.dims.events.ndisplay.connect(self._view_changed)
        #: R/L, A/P, S/I at the canvas edges while a CT of ours (patient LPS) is open.
        self.orientation = OrientationLetters(self.viewer)
        self._refresh_layers()

    # -- UI -------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("CT image layer to review")
        self.info = QLabel("Open a CT: drag a DICOM folder, NIfTI, NRRD or MHA onto the viewer.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(self.info.textInteractionFlags() | _selectable())
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #ffb347;")

        window_box = QGroupBox("Window")
        grid = QGridLayout(window_box)
        self.preset_buttons: dict[str, QPushButton] = {}
        for i, name in enumerate(PRESET_BUTTONS):
            level, width = WINDOW_PRESETS[name]
            button = QPushButton(name.capitalize())
            button.setToolTip(f"L {level:g} / W {width:g} HU")
            button.clicked.connect(lambda _=False, n=name: self.apply_window(n))
            grid.addWidget(button, 0, i)
            self.preset_buttons[name] = button

        run_box = QGroupBox("Analysis")
        rl = QGridLayout(run_box)
        self.model_combo = QComboBox()
        self.model_combo.addItems([DEFAULT_MODEL, "Choose folder…"])
        self.model_combo.setToolTip("Model folder (config.json + model.safetensors + tokenizer)")
        self.model_combo.activated.connect(self._model_chosen)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Find abnormalities and draft the report")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        rl.addWidget(QLabel("Model"), 0, 0)
        rl.addWidget(self.model_combo, 0, 1, 1, 3)
        rl.addWidget(QLabel("Device"), 1, 0)
        rl.addWidget(self.device_combo, 1, 1)
        rl.addWidget(self.run_button, 1, 2)
        rl.addWidget(self.cancel_button, 1, 3)
        rl.addWidget(self.status, 2, 0, 1, 4)

        self.table = FindingsTable()
        self.table.finding_selected.connect(self.select_finding)
        self.table.kind_edited.connect(self._kind_edited)
        self.table.location_edited.connect(self._location_edited)
        self.table.command.connect(self._command)

        buttons = QHBoxLayout()
        self.prev_button = QPushButton("◀")
        self.prev_button.setToolTip("Previous finding (Shift+N; [ in the dock)")
        self.next_button = QPushButton("▶")
        self.next_button.setToolTip("Next finding (N; ] in the dock)")
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip(
            "Accept the selected finding (A in the dock, Alt+A in the viewer)"
        )
        self.reject_button = QPushButton("Reject")
        self.reject_button.setToolTip(
            "Reject the selected finding: it leaves the report and is kept as a negative for "
            "retraining (R in the dock, Alt+R in the viewer)"
        )
        self.regen_button = QPushButton("Regenerate sentence")
        self.regen_button.setToolTip("Rewrite the selected finding's sentence from its attributes")
        self.prev_button.clicked.connect(lambda: self.step_finding(-1))
        self.next_button.clicked.connect(lambda: self.step_finding(+1))
        self.accept_button.clicked.connect(lambda: self.set_status("accepted"))
        self.reject_button.clicked.connect(lambda: self.set_status("rejected"))
        self.regen_button.clicked.connect(self.regenerate_sentence)
        for b in (self.prev_button, self.next_button, self.accept_button, self.reject_button):
            buttons.addWidget(b)
        buttons.addWidget(self.regen_button)
        self.set_aside_panel = SetAsidePanel()
        self.set_aside_panel.show_requested.connect(self.show_set_aside)
        self.set_aside_panel.add_requested.connect(self.add_set_aside)
        self.attention_selected = QCheckBox("Attention of the selected finding only")
        self.attention_selected.toggled.connect(lambda _: self._show_attention())

        self.report_editor = ReportEditor()
        self.report_editor.findings_edited.connect(self._findings_typed)
        self.report_editor.impression_edited.connect(self._impression_typed)

        self.export_button: QPushButton | None = None
        export_row = QHBoxLayout()
        if _export_available():
            self.export_button = QPushButton("Export case…")
            self.export_button.setToolTip(
                "Write the corrected case (image, masks, findings, report, edit log)"
            )
            # a lambda: the signal's "checked" argument would be taken for the folder
            self.export_button.clicked.connect(lambda: self.export())
            export_row.addWidget(self.export_button)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("CT layer"))
        layout.addWidget(self.layer_combo)
        layout.addWidget(self.info)
        layout.addWidget(self.warnings)
        layout.addWidget(window_box)
        layout.addWidget(run_box)
        layout.addWidget(self.table, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.set_aside_panel)
        layout.addWidget(self.attention_selected)
        layout.addWidget(self.report_editor, 3)
        layout.addLayout(export_row)
        self._set_review_enabled(False)

        self._paint_timer = QTimer(self)
        self._paint_timer.setSingleShot(True)
        self._paint_timer.setInterval(PAINT_DELAY_MS)
        self._paint_timer.timeout.connect(self._remeasure_painted)
        self._painted: set[int] = set()
        #: The run the strokes in :attr:`_painted` were made in (``None``: the one reviewed).
        self._painted_in: RunResult | None = None

    def _bind_keys(self) -> None:
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for key, fn in (
            ("A", lambda: self.set_status("accepted")),
            ("R", lambda: self.set_status("rejected")),
            ("N", lambda: self.step_finding(+1)),
            ("P", lambda: self.step_finding(-1)),
            ("]", lambda: self.step_finding(+1)),
            ("[", lambda: self.step_finding(-1)),
        ):
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(context)
            sc.activated.connect(fn)
        # on the canvas: keys no napari layer uses
        for key, fn in zip(
            CANVAS_KEYS,
            (
                lambda: self.step_finding(+1),
                lambda: self.step_finding(-1),
                lambda: self.set_status("accepted"),
                lambda: self.set_status("rejected"),
            ),
            strict=True,
        ):
            self.viewer.bind_key(key, lambda _v, f=fn: self._canvas_key(f), overwrite=True)

    def _canvas_key(self, fn) -> None:
        """Run a canvas key's action while the dock is shown (not while it sits in a hidden
        tab, say): a closed dock's keys acted on its review with nothing on screen to show it
        (Alt+R rejected a finding)."""
        if self.isVisible():
            fn()

    def event(self, e: QEvent) -> bool:
        """Follow the dock being docked, and closed: napari takes a closed dock out of its
        window (the widget loses its parent); see :meth:`close_reviews`."""
        if e.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                self._watch_window()
            elif getattr(self, "_docked", False):
                self._docked = False
                self.close_reviews()
        return super().event(e)

    def _watch_window(self) -> None:
        """Be told when napari's window closes (:class:`_CloseWatcher`), once the dock sits in
        it: text being typed and strokes not yet measured are then taken into their review."""
        window = self.window()
        watcher = getattr(self, "_close_watcher", None)
        if not isinstance(window, QMainWindow) or (
            watcher is not None and watcher.parent() is window
        ):
            return  # the dock's own frame, not yet in napari's window (or floating); or done
        self._drop_close_watcher()
        self._close_watcher = _CloseWatcher(window, self._take_pending_edits)

    def _drop_close_watcher(self) -> None:
        watcher, self._close_watcher = getattr(self, "_close_watcher", None), None
        if watcher is not None:
            with contextlib.suppress(RuntimeError):  # already gone with its window
                watcher.parent().removeEventFilter(watcher)
                watcher.deleteLater()

    def close_reviews(self) -> None:
        """The dock was closed: put its reviews away (:meth:`_put_away`) and stop following the
        viewer. Text being typed and strokes not yet measured are taken into their review, which
        autosaves them as every edit; nothing else is saved (an exported review stays put away);
        the reviews' layers go (an edit of them would reach no review), and the
        viewer's events and canvas keys are let go. The dock opened again offers each CT's
        autosave (a closed dock had gone on answering the viewer: reopened from the Plugins
        menu, both docks restored and drew the same review twice)."""
        if self.worker is not None:
            self.cancel()
        self._put_away(list(self.results))
        self._drop_close_watcher()
        events = self.viewer.layers.events
        for emitter, slot in (
            (events.inserted, self._refresh_layers),
            (events.removed, self._refresh_layers),
            (self.viewer.layers.selection.events.active, self._follow_active),
            (self.viewer.dims.events.ndisplay, self._view_changed),
        ):
            with contextlib.suppress(Exception):  # napari's emitters raise nothing we need
                emitter.disconnect(slot)
        for ly in self.viewer.layers:
            with contextlib.suppress(Exception):
                ly.events.contrast_limits.disconnect(self._window_changed)
        self._watched_ct.clear()
        for key in CANVAS_KEYS:
            with contextlib.suppress(Exception):
                self.viewer.bind_key(key, None)
        self.orientation.set_visible(False)

    def _set_review_enabled(self, on: bool) -> None:
        for w in (
            self.prev_button,
            self.next_button,
            self.accept_button,
            self.reject_button,
            self.regen_button,
            self.attention_selected,
        ):
            w.setEnabled(on)
        if self.export_button is not None:
            self.export_button.setEnabled(on)
        if not on:
            self.set_aside_panel.set_candidates([])

    # -- hooks (replace in tests) ---------------------------------------------------------
    def ask_replace_or_keep(self) -> str | None:
        """A second run: ``"replace"`` the first result, ``"keep"`` both, or ``None`` (cancel).
        When the review the new run would replace holds the reader's changes, the question says
        how many would be discarded, and "Keep both" is the default."""
        layer = self.current_layer()
        first = next(
            (
                r
                for r in self.results
                if layer is not None and r.ct_name == layer.name and r.session.run == 1
            ),
            None,
        )
        changes = first.session.changes if first is not None else 0
        box = QMessageBox(self)
        box.setWindowTitle("Run again")
        box.setText("This CT already has findings from a run.")
        box.setInformativeText(
            "Replace them with the new run, or keep both?"
            + (
                f"\n\nIts review holds {changes} change(s) of yours: replacing it discards "
                "them (an export keeps them)."
                if changes
                else ""
            )
        )
        replace = box.addButton("Replace", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Keep both", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep if changes else replace)
        box.exec()
        clicked = box.clickedButton()
        return "replace" if clicked is replace else "keep" if clicked is keep else None

    def ask_open_case(self, summary: dict[str, Any]) -> bool:
        """The CT was opened from a case folder: review its findings?"""
        answer = QMessageBox.question(
            self,
            "Open case",
            f"This CT comes from the case folder {summary['case_id']} "
            f"({summary['source']}, {summary['n_findings']} findings"
            + (f", reviewed by {summary['reviewer']}" if summary.get("reviewer") else "")
            + "). Review its findings and report?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def ask_export_anyway(self, sentences: list[str]) -> bool:
        """The report says what the findings do not (a typed sentence or impression left
        behind by an edit), or leaves a finding out: export it all the same?"""
        shown = "\n".join(f"• {t}" for t in sentences[:6])
        more = f"\n… and {len(sentences) - 6} more" if len(sentences) > 6 else ""
        answer = QMessageBox.question(
            self,
            "Report disagrees with the findings",
            "The report and the findings table disagree (kind, side, zone, size, grade or "
            f"count, or a finding the report leaves out):\n\n{shown}{more}\n\n"
            "Export the report as it is?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def ask_restore(self, summary: dict[str, Any]) -> bool:
        """An autosaved review of this study exists: restore it?"""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.get("saved_at") or 0))
        answer = QMessageBox.question(
            self,
            "Restore review",
            f"An unfinished review of this CT was saved on {when} "
            f"({summary.get('n_findings', 0)} findings, {summary.get('n_edits', 0)} edits"
            + (f", {summary['runs']} runs kept side by side" if summary.get("runs", 1) > 1 else "")
            + "). Restore it?",
        )
        return answer == QMessageBox.StandardButton.Yes

    # -- layers ---------------------------------------------------------------------------
    def ct_layers(self) -> list[napari.layers.Image]:
        """Image layers that are 3-D volumes (ours first; attention maps left out)."""
        from napari.layers import Image

        layers = [
            ly
            for ly in self.viewer.layers
            if isinstance(ly, Image)
            and ly.ndim == 3
            and ly.metadata.get(META_KEY, {}).get("role") != "attention"
        ]
        return sorted(layers, key=lambda ly: META_KEY not in ly.metadata)

    def current_layer(self) -> napari.layers.Image | None:
        """The layer picked in the combo box, if it still exists."""
        name = self.layer_combo.currentText()
        return next((ly for ly in self.ct_layers() if ly.name == name), None)

    def _refresh_layers(self, event: object = None) -> None:
        current = self.layer_combo.currentText()
        layers = self.ct_layers()
        names = [ly.name for ly in layers]
        if current not in names:
            # none picked yet, or it was removed: the CT layer the reader selected, else the
            # topmost one shown (a study's other series open hidden beneath it)
            active = self.viewer.layers.selection.active
            shown = [ly for ly in self.viewer.layers if ly in layers and ly.visible]
            pick = active if active in layers else (shown[-1] if shown else None)
            current = pick.name if pick is not None else current
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self.orientation.set_visible(any(META_KEY in ly.metadata for ly in layers))
        self._show_study()
        if any(not self._ct_open(r) for r in self.results):
            QTimer.singleShot(0, self._drop_closed_cts)  # not inside napari's removal
        elif any(self._lost_layers(r) for r in self.results):
            QTimer.singleShot(0, self._put_back_layers)

    def _lost_layers(self, r: RunResult) -> list[str]:
        """Which of a review's editing layers (findings, masks) the reader deleted."""
        return [
            name
            for name, ly in (("findings", r.boxes), ("masks", r.masks))
            if ly is not None and ly not in self.viewer.layers
        ]

    def _put_back_layers(self) -> None:
        """The reader deleted a review's findings or masks layer, its CT still open: the review
        is shown again from its session, layers and all (the table and the report stayed
        editable with no layer to draw on, and nothing brought the layer back but closing the
        CT). A review's layers go with its CT: closing the CT ends the review."""
        if self.busy:
            return
        for r in [r for r in self.results if self._ct_open(r) and self._lost_layers(r)]:
            lost = self._lost_layers(r)
            if r is self.result:
                self._take_pending_edits()
            for _ in self._remove_result(r):
                pass
            self._show_now(r.session, r.volume, r.ct_name, suffix=r.suffix)
            self.status.setText(
                f"The {' and '.join(lost)} layer of {r.ct_name}'s review is put back: a "
                "review's layers go with its CT (close the CT to end its review)."
            )

    def _ct_open(self, r: RunResult) -> bool:
        ct = r.extra.get("ct_layer")
        return (ct in self.viewer.layers) if ct is not None else (r.ct_name in self.viewer.layers)

    def _drop_closed_cts(self) -> None:
        """The reviews of a CT the reader closed leave the dock with their layers (boxes,
        masks and attention over no CT, an editable table for a CT that is gone). Each was
        autosaved at every edit (text being typed is taken first) and comes back when the CT
        is opened again; a review a replacing run took the place of is not saved again (its
        autosave is the new run's now)."""
        gone = [r for r in self.results if not self._ct_open(r)]
        if not gone:
            return
        shown = self._put_away(gone)
        if shown is not None:
            saved = shown.session is not None and shown.session.folder is not None
            self.status.setText(
                f"{shown.ct_name} was closed"
                + (": its review is autosaved; open the CT again to go on." if saved else ".")
            )

    def _put_away(self, runs: list[RunResult]) -> RunResult | None:
        """Take ``runs`` out of the dock with all their layers at once (a closed CT, a closed
        dock); each review was autosaved at every edit. When the review shown is among them,
        text being typed goes into it first (unless a replacing run took its place: its
        autosave is the new run's now) and the table and report are emptied; it is returned."""
        shown = self.result if self.result in runs else None
        if shown is not None and not shown.extra.get("replaced"):
            self._take_pending_edits()
        for r in runs:
            for _ in self._remove_result(r):
                pass
        if shown is not None:
            self.selected = None
            self.table.set_findings([])
            self.report_editor.show_report([], [], "")
            self._set_review_enabled(False)
        return shown

    def _follow_active(self, event: object = None) -> None:
        """Follow the layer the reader selects in the layer list (not during a run): a CT layer
        is picked (and its review shown, :meth:`_show_study`); a layer of a run (its findings,
        masks or attention) makes that run the one reviewed."""
        active = self.viewer.layers.selection.active
        if self.busy or active is None:
            return
        run = next(
            (r for r in self.results if active in r.layers),
            None,
        )
        if run is not None:
            self._review(run)
            ct = [ly for ly in self.ct_layers() if ly.name == run.ct_name]
            if ct:
                active = ct[0]  # its CT is the one picked
        if active not in self.ct_layers():
            return
        if active.name != self.layer_combo.currentText():
            self.layer_combo.setCurrentText(active.name)

    def _review(self, r: RunResult) -> None:
        """Make ``r`` (a run kept beside the one reviewed: another CT's, or an earlier run of
        this CT) the run the table, the report and the edits of the layers work on, and its CT
        the one picked (the list and the study lines said the other CT's). Strokes still
        waiting to be measured are measured in the run they were painted in first."""
        if r is self.result or self.busy or r.session is None:
            return
        self._take_pending_edits()
        if self.result is not None and self.result.session is not None:
            self.result.session.on_change = None
        self.result = r
        r.session.on_change = self._session_changed
        self._sync_history(r)  # it may have written its labels while another was shown
        self.selected = None
        self._set_review_enabled(True)
        self._refresh_views()
        if self.layer_combo.currentText() != r.ct_name:
            self.layer_combo.setCurrentText(r.ct_name)  # the study lines follow
        self.status.setText(f"Reviewing the findings of {r.ct_name}{r.suffix}.")

    def _bring_forward(self, index: int = -1) -> None:
        """The reader picked a CT in the list: it and its review's layers are shown, the other
        CTs (opened by this plugin's reader, or reviewed) and their reviews' layers hidden (an
        image of the reader's own, such as a PET overlay, stays as it is), and its findings layer (else the CT) made the
        active layer, so that what the canvas shows, what napari's tools draw on and what the
        table lists are one CT. With two CTs open in one patient space the last opened was
        drawn over the other, and a box drawn there went into the other CT's review."""
        layer = self.current_layer()
        if layer is None or self.busy:
            return
        mine = [r for r in self.results if r.ct_name == layer.name]
        others = [r for r in self.results if r.ct_name != layer.name]
        reviewed = {r.ct_name for r in self.results}
        for ct in self.ct_layers():
            # other CTs (opened by our reader, or reviewed); the reader's own overlays stay
            if ct is not layer and (META_KEY in ct.metadata or ct.name in reviewed):
                ct.visible = False
        for r in others:
            for ly in r.layers:
                if ly is not None and ly in self.viewer.layers:
                    ly.visible = False
        layer.visible = True
        for r in mine:
            for ly in (r.boxes, r.masks):
                if ly is not None and ly in self.viewer.layers:
                    ly.visible = True
        shown = self.result if self.result in mine else (mine[-1] if mine else None)
        target = shown.boxes if shown is not None and shown.boxes in self.viewer.layers else layer
        self.viewer.layers.selection.active = target

    def _take_pending_edits(self) -> None:
        """Text being typed in the report editor and strokes not yet measured go into the
        review shown now (before the dock shows another)."""
        self.report_editor.commit()
        if self._paint_timer.isActive():
            self._paint_timer.stop()
            self._remeasure_painted()

    def _run_of(self, source: object, attr: str) -> RunResult | None:
        """The run whose layer ``attr`` (``"masks"``, ``"boxes"``) is ``source``: an edit of a
        kept run's layer makes that run the one reviewed (:meth:`_review`), so that no stroke is
        lost; ``None`` for any other layer. During a run the review shown does not change: a
        kept run's strokes are measured in that run all the same (they were dropped, and its
        table and autosave kept the voxels the reader had erased), its boxes are not edited
        (``None``; :meth:`_on_boxes_data` puts them back and says why)."""
        if self.result is not None and getattr(self.result, attr) is source:
            return self.result
        run = next((r for r in self.results if getattr(r, attr) is source), None)
        if run is None:
            return None
        if self.busy:
            return run if attr == "masks" else None
        self._review(run)
        return run

    def _show_study(self, *_: object) -> None:
        layer = self.current_layer()
        self.run_button.setEnabled(layer is not None and not self.busy)
        if layer is None:
            self.info.setText(
                "No CT layer. Drag a DICOM folder, NIfTI, NRRD or MHA onto the viewer."
            )
            self.warnings.setText("")
            return
        record = layer.metadata.get(META_KEY, {})
        if not record:
            record = {"spacing_zyx": list(layer.scale[-3:]), "source_name": layer.name}
        self.info.setText(study_summary(record, tuple(layer.data.shape)))
        self.warnings.setText("\n".join(f"⚠ {w}" for w in record.get("warnings", [])))
        if self.result is not None and self.result.ct_name != layer.name and not self.busy:
            kept = [r for r in self.results if r.ct_name == layer.name]
            if kept:
                self._review(kept[-1])  # this CT's latest run
            else:
                # the table still holds another CT's review until this one is run (or restored)
                self.status.setText(
                    f"Reviewing the findings of {self.result.ct_name}; Run analyses {layer.name}."
                )
        self._offer_restore(layer)
        self._offer_case(layer)

    @property
    def busy(self) -> bool:
        """An analysis runs or its layers are still being added."""
        return self.worker is not None or self._showing is not None

    def _offer_case(self, layer) -> None:
        """Offer the findings of the case folder the CT was read from (once per layer), unless
        a review of this CT is already shown (a run, or a restored autosave) or being shown."""
        folder = layer.metadata.get(META_KEY, {}).get("case_folder")
        if not folder or self.busy or self._showing_now:
            return
        if any(r.ct_name == layer.name for r in self.results):
            return
        key = f"case:{folder}:{id(layer)}"  # asked once per layer: opening it again asks again
        if key in self._checked_studies:
            return
        self._checked_studies.add(key)
        try:
            case = read_case(folder)
        except (OSError, ValueError) as e:
            self.status.setText(f"The case folder {folder} is unreadable: {e}")
            return
        prov = case.provenance or {}
        summary = {
            "case_id": case.case_id,
            "source": prov.get("source") or "case",
            "reviewer": prov.get("reviewer"),
            "n_findings": len(case.findings),
        }
        if not self.ask_open_case(summary):
            return
        volume = volume_from_layer(layer)
        try:
            session = ReviewSession.from_case(case, volume, autosave_root=self.autosave_root)
        except (OSError, ValueError) as e:
            self.status.setText(f"Could not open the case's findings: {e}")
            return
        self._show_now(session, volume, layer.name)
        self.result_shown.emit(self.result)
        self.status.setText(
            f"Case {case.case_id} ({summary['source']}): {len(case.findings)} findings to review."
        )

    def _show_now(
        self, session: ReviewSession, volume: CTVolume, ct_name: str, *, suffix: str = ""
    ) -> None:
        """Show a session that needs no analysis (a restored autosave, a case folder) in one go:
        the reader just answered a question and waits for the review."""
        prepared = result_layers_data(session.findings, session.labels, session.attention, volume)
        self._showing_now = True
        try:
            for _ in self._show_steps(
                session, volume, ct_name, analysis=None, prepared=prepared, suffix=suffix
            ):
                pass
        finally:
            self._showing_now = False

    def _offer_restore(self, layer) -> None:
        if self.autosave_root is None or self.busy or self._showing_now:
            return
        if self.result is not None and self.result.ct_name == layer.name:
            return
        volume = volume_from_layer(layer)
        key = study_key(volume)
        if key in self._checked_studies:
            return
        self._checked_studies.add(key)
        folders = ReviewSession.find_autosaves(volume, root=self.autosave_root)
        if not folders:
            return
        try:
            summaries = [ReviewSession.autosave_summary(f) for f in folders]
        except (OSError, ValueError) as e:
            self.status.setText(f"An autosave in {folders[0].parent} is unreadable: {e}")
            return
        newest = max(summaries, key=lambda d: d.get("saved_at") or 0.0)
        summary = {**newest, "n_edits": sum(d["n_edits"] for d in summaries), "runs": len(folders)}
        if not self.ask_restore(summary):
            return
        restored, failed = [], []
        for folder in folders:
            try:
                session = ReviewSession.restore(volume, root=self.autosave_root, folder=folder)
            except (OSError, ValueError, KeyError) as e:
                failed.append(f"{folder.name}: {e}")
                continue
            self._show_now(
                session,
                volume,
                layer.name,
                suffix=f" (run {session.run})" if session.run > 1 else "",
            )
            restored.append(session)
        if not restored:
            self.status.setText("Could not restore the review: " + "; ".join(failed))
            return
        self.result_shown.emit(self.result)
        saved = time.strftime("%H:%M", time.localtime(summary["saved_at"]))
        runs = f"{len(restored)} runs, " if len(restored) > 1 else ""
        msg = f"Restored the review saved {saved} ({runs}{summary['n_edits']} edits)."
        if failed:
            msg += " Not restored: " + "; ".join(failed)
        self.status.setText(msg)

    # -- windows --------------------------------------------------------------------------
    def apply_window(self, preset: str) -> None:
        """Set the CT layer's contrast limits to a named window preset."""
        layer = self.current_layer()
        if layer is None:
            return
        layer.contrast_limits = window_limits(*WINDOW_PRESETS[preset])

    # -- analysis -------------------------------------------------------------------------
    def _model_chosen(self, index: int) -> None:
        if self.model_combo.itemText(index) != "Choose folder…":
            return
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.set_model(folder)
        else:
            self.model_combo.setCurrentIndex(0)

    def set_model(self, folder: str | Path | None) -> None:
        """Use a model folder (``None`` for the default model)."""
        if folder is None:
            self.model_combo.setCurrentIndex(0)
            return
        text = str(folder)
        if self.model_combo.findText(text) < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, text)
        self.model_combo.setCurrentText(text)

    def model(self) -> str | None:
        """The chosen model folder (``None`` = default)."""
        text = self.model_combo.currentText()
        return None if text in (DEFAULT_MODEL, "Choose folder…") else text

    # -- export ---------------------------------------------------------------------------
    def export(self, out_dir: str | Path | None = None):
        """Export the reviewed case with :func:`napari_ctreport.export.export_case` in a worker."""
        r = self.result
        if r is None or not _export_available():
            return None
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self, "Export the reviewed case to")
            if not out_dir:
                return None
        from napari.qt.threading import create_worker

        from .. import export as export_mod

        self.report_editor.commit()
        s = r.session
        wrong = s.disagreements()
        if wrong and not self.ask_export_anyway(wrong):
            self.status.setText(
                f"Not exported: {len(wrong)} point(s) where the report and the findings "
                f"disagree (first: {wrong[0]!r}); edit or regenerate the text."
            )
            return None
        worker = create_worker(
            export_mod.export_case,
            volume=r.volume,
            findings=list(s.findings),
            labels=s.labels.copy(),
            report=s.report(),
            out_dir=Path(out_dir),
            original=s.original(),
            edit_log=[e.to_case_dict() for e in s.edit_log],
            model_info=dict(s.model_info),
            lung_ml=s.lung_ml,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda res, s=s: self._exported(res, s))
        worker.errored.connect(lambda e: self.status.setText(f"Export failed: {e}"))
        worker.start()
        return worker

    def _exported(self, res, session: ReviewSession | None = None) -> None:
        """The export is the record now: the review's autosave goes (reopening the study or an
        export of it asked to restore an "unfinished review"); an edit after it saves again."""
        self.last_export = res
        if session is not None:
            session.discard_autosave()
        self.status.setText(f"Exported to {res.folder}")


def _export_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("napari_ctreport.export") is not None


def _selectable():
    return Qt.TextInteractionFlag.TextSelectableByMouse
