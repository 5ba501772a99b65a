"""The CT report dock: pick the CT, run the model, review its findings and report, export.

The dock holds no file, model or measurement logic: analysis runs
:func:`napari_ctreport.analysis.analyze` in a :func:`napari.qt.threading.thread_worker`, and every
edit goes through :class:`~napari_ctreport._napari.session.ReviewSession` (which measures with
:mod:`napari_ctreport.report.measure`, writes with :mod:`napari_ctreport.report.writer` and
autosaves). Layers: boxes (Shapes, a rectangle per slice of a finding's 3-D box on each plane),
attention (Image, additive inferno) and masks (Labels, one label per finding).

Keeping the viewer responsive: the layers' data are built in the worker thread
(:func:`~napari_ctreport._napari.layers.result_layers_data`); the UI thread then adds them in
steps of at most about :data:`SLICE_BUDGET_S` of our own work each (one layer, a few glyphs of the
boxes' text, a chunk of box rectangles), chained with ``QTimer.singleShot(0, ...)`` so that the
event loop paints and handles input in between. :attr:`ReviewDock.result_shown` is emitted when
the last step is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
from ..report.writer import format_ml, format_mm
from .findings_table import FindingsTable
from .layers import (
    BOX_EDGE,
    META_KEY,
    box_edge_widths,
    box_rectangles,
    boxes_layer_data,
    finding_box_index,
    label_text_colors,
    labels_layer_data,
    rectangle_plane,
    result_layers_data,
    study_summary,
    volume_from_layer,
)
from .orientation import OrientationLetters
from .report_editor import ReportEditor
from .session import (
    AnalysisCancelled,
    ReviewSession,
    default_autosave_root,
    run_analysis,
    study_key,
)
from .set_aside import SET_ASIDE_COLOR, SetAsidePanel, candidate_text

if TYPE_CHECKING:
    import napari

#: Presets offered as buttons, in reading order for chest CT.
PRESET_BUTTONS = ("lung", "mediastinum", "soft tissue", "bone")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODEL = "Default model"
#: Masks are re-measured this long (ms) after the last paint stroke.
PAINT_DELAY_MS = 300
#: Showing a run's layers gives the event loop a turn once this much UI-thread time (s) is spent.
SLICE_BUDGET_S = 0.05
#: Box labels are re-coloured for the CT's window this long (ms) after it last changed.
LABEL_DELAY_MS = 200
#: A nodule's or mass's mean attenuation (HU) below which a moved box's mask lies over aerated
#: lung, not a lesion (the dock then says so).
OFF_LESION_HU = -500.0
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


#: Keys the dock binds on napari's canvas (next finding, previous, accept, reject): keys no
#: napari layer uses.
CANVAS_KEYS: tuple[str, ...] = ("N", "Shift-N", "Alt-A", "Alt-R")


#: HU of the surface a CT of ours is drawn as in the 3-D view: bone (and contrast-filled vessels).
BONE_SURFACE_HU = 200.0


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


class ReviewDock(QWidget):
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

    def _outline_set_aside(self, r: RunResult, rects: list[np.ndarray], label: str = "") -> None:
        layer = r.set_aside if r.set_aside in self.viewer.layers else None
        if layer is None:
            if not rects:
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
        if rects:
            layer.feature_defaults = {"label": label}
            layer.add_rectangles(
                rects,
                edge_color=SET_ASIDE_COLOR,
                face_color="transparent",
                edge_width=box_edge_widths(rects, r.volume),
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
            for i in event.data_indices:
                if not (0 <= i < len(ids)) or not ids[i] or ids[i] in moved:
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

    # -- views ----------------------------------------------------------------------------
    def _sync_history(self, r: RunResult | None) -> None:
        """After the session wrote the label map itself (a box moved or drawn, a mask redrawn
        for its kind), napari's undo history of the masks layer, which holds only strokes, is
        cleared: Ctrl+Z would replay an older stroke over the new mask (a moved nodule left in
        two pieces, measured as one)."""
        if r is None or r.masks is None or r.session.labels_written == r.labels_written:
            return
        r.labels_written = r.session.labels_written
        _clear_undo_history(r.masks)

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
        """The view went 3-D or back to 2-D: every run's boxes are drawn again, as outlines (a
        box's outer rectangles) in 3-D and slice by slice in 2-D; so is a set-aside outline.

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

    def _box_outline(self, f, volume: CTVolume) -> list[np.ndarray]:
        """A box's rectangles for the view: every slice's in 2-D, the outer ones in 3-D."""
        return box_rectangles(*finding_box_index(f, volume), volume.shape, outline=self._in_3d())

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
                not np.allclose(old[i], data[j], atol=1e-3)
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
                    layer.add_rectangles(
                        [data[j] for j in add],
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


def _text_columns(features: dict[str, list]) -> dict[str, np.ndarray]:
    """``features`` as object columns: an empty list makes a float column in pandas, and the
    text defaults (``""``) then failed to convert, so a run with no finding never showed."""
    return {k: np.asarray(v, dtype=object) for k, v in features.items()}


def _set_aside_label(candidate) -> str:
    """The text on a set-aside candidate's grey outline: its id and the rule that dropped it."""
    return f"{candidate.id} set aside: {candidate.attributes.get('dropped_by', '?')}"


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


def _export_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("napari_ctreport.export") is not None


def _selectable():
    return Qt.TextInteractionFlag.TextSelectableByMouse
