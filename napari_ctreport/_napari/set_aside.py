"""The "set aside" row of the dock: candidates the model proposed that a plausibility rule
dropped (:attr:`napari_ctreport.analysis.Analysis.dropped`, kept by the review session as
:attr:`~napari_ctreport._napari.session.ReviewSession.set_aside`).

They are not in the report. The reader picks one to see it (the dock jumps to it and outlines
its box in grey) and adds it as a finding when it is a lesion the rules got wrong. The widget only
lists and signals; the dock does the viewing and the session does the adding.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from ..report.findings import Finding

#: What each rule (``attributes["dropped_by"]``) means, in the reader's words.
RULE_WORDS = {
    "outside the lung": "lies mostly outside the lung",
    "chest wall": "taken for chest wall (fat or muscle against the pleura)",
    "speck": "smaller than a nodule is reported at",
    "mediastinum": "taken for mediastinum or hilum",
    "faint": "no solid blob on the CT where the network was unsure",
    "vessel": "taken for a vessel",
    "same lesion": "part of another finding",
}

#: Edge colour of a set-aside candidate's box (grey: not a finding).
SET_ASIDE_COLOR = "#b0b0b0"


def candidate_text(c: Finding) -> str:
    """One line for a candidate, e.g. ``"D2  8.1 mm solid nodule, left lower: vessel (0.23)"``."""
    rule = str(c.attributes.get("dropped_by", "?"))
    return f"{c.id}  {c.diameter_mm:.1f} mm {c.kind}, {c.side} {c.zone}: {rule} ({c.score:.2f})"


def candidate_tooltip(c: Finding) -> str:
    """Why the candidate was set aside, and its measurements."""
    rule = str(c.attributes.get("dropped_by", "?"))
    return (
        f"Set aside: {RULE_WORDS.get(rule, rule)}.\n"
        f"Network score {c.score:.2f}; {c.diameter_mm:.1f} x {c.short_axis_mm:.1f} mm, "
        f"mean {c.mean_hu:.0f} HU; lung contact {c.attributes.get('lung_contact', '?')}."
    )


class SetAsidePanel(QWidget):
    """A combo of set-aside candidates with "Show" and "Add as finding".

    Signals carry the candidate id: :attr:`show_requested` when one is picked or "Show" is
    pressed, :attr:`add_requested` for "Add as finding".
    """

    show_requested = Signal(str)
    add_requested = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setToolTip(
            "Candidates the model proposed that a plausibility rule set aside: not in the "
            "report. Pick one to see it; add it if it is a lesion."
        )
        self.combo.activated.connect(self._picked)
        self.show_button = QPushButton("Show")
        self.show_button.setToolTip("Go to the candidate and outline its box in grey")
        self.show_button.clicked.connect(lambda: self._emit(self.show_requested))
        self.add_button = QPushButton("Add as finding")
        self.add_button.setToolTip(
            "Add the candidate to the findings (measured on the CT, status 'added')"
        )
        self.add_button.clicked.connect(lambda: self._emit(self.add_requested))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("Set aside")
        row.addWidget(self.title)
        row.addWidget(self.combo, 1)
        row.addWidget(self.show_button)
        row.addWidget(self.add_button)
        self.ids: list[str] = []
        self.set_candidates([])

    def set_candidates(self, candidates: Sequence[Finding]) -> None:
        """Show these candidates, the network's surest first; keep the current one picked if it
        is still there."""
        current = self.current_id()
        ordered = sorted(candidates, key=lambda c: (-c.score, c.id))
        ids = [c.id for c in ordered]
        texts = [candidate_text(c) for c in ordered]
        have = [self.combo.itemText(i) for i in range(self.combo.count())]
        if (texts or ["none"]) != have:
            self.combo.blockSignals(True)
            self.combo.clear()
            for i, c in enumerate(ordered):
                self.combo.addItem(texts[i])
                self.combo.setItemData(i, candidate_tooltip(c), 3)  # Qt.ToolTipRole
            if not ordered:
                self.combo.addItem("none")
            if current in ids:
                self.combo.setCurrentIndex(ids.index(current))
            self.combo.blockSignals(False)
        self.ids = ids
        self.title.setText(f"Set aside ({len(ids)})")
        for w in (self.combo, self.show_button, self.add_button):
            w.setEnabled(bool(ids))

    def current_id(self) -> str | None:
        """Id of the picked candidate, or ``None`` when there is none."""
        i = self.combo.currentIndex()
        return self.ids[i] if 0 <= i < len(self.ids) else None

    def pick(self, candidate_id: str) -> None:
        """Pick a candidate (as the reader would) and ask to show it."""
        self.combo.setCurrentIndex(self.ids.index(candidate_id))
        self._picked(self.combo.currentIndex())

    def _picked(self, _index: int) -> None:
        self._emit(self.show_requested)

    def _emit(self, signal) -> None:
        cid = self.current_id()
        if cid is not None:
            signal.emit(cid)
