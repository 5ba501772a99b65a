"""The findings table: one row per finding, kind and location editable with lexicon combos."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
)

from ..report.findings import Finding
from ..report.lexicon import KIND_COLORS, KINDS, SIDES, ZONES

#: Column headers, short so that every column, Status last, fits the dock's default width
#: (the headers were wider than the numbers under them, and Status was cut off at "prop"),
#: and what each means (the header's tooltip).
COLUMNS = ("ID", "Kind", "Where", "mm", "ml", "HU", "Score", "Status")
COLUMN_TIPS = (
    "Finding",
    "Kind (double-click to change)",
    "Side and zone (double-click to change)",
    "Longest axial diameter, mm",
    "Volume, ml",
    "Mean attenuation, HU",
    "The model's confidence (1 for a finding you added)",
    "Proposed, accepted, rejected, edited or added",
)
KIND_COL, LOC_COL, STATUS_COL = 1, 2, 7
#: Choices of the side / zone column ("right upper", ...).
LOCATIONS = tuple(f"{s} {z}" for s in SIDES for z in ZONES)

STATUS_COLORS = {
    "proposed": "#d0d0d0",
    "accepted": "#7bd88f",
    "rejected": "#8c8c8c",
    "edited": "#ffd166",
    "added": "#6ec6ff",
}


class ComboDelegate(QStyledItemDelegate):
    """Edits a cell with a combo box of fixed choices (lexicon terms)."""

    def __init__(self, choices: Sequence[str], parent=None) -> None:
        super().__init__(parent)
        self.choices = tuple(choices)

    def createEditor(self, parent, option, index):  # noqa: N802 - Qt API
        combo = QComboBox(parent)
        combo.addItems(self.choices)
        combo.activated.connect(lambda *_: self.commitData.emit(combo))
        return combo

    def setEditorData(self, editor, index):  # noqa: N802 - Qt API
        editor.setCurrentText(str(index.data(Qt.ItemDataRole.DisplayRole)))

    def setModelData(self, editor, model, index):  # noqa: N802 - Qt API
        model.setData(index, editor.currentText(), Qt.ItemDataRole.EditRole)


class FindingsTable(QTableWidget):
    """Findings as rows. Emits :attr:`finding_selected` (id) on a row click and
    :attr:`kind_edited` / :attr:`location_edited` (id, value) when a combo commits."""

    finding_selected = Signal(str)
    #: "accept", "reject", "next" or "previous" from the keyboard (A, R, N/], P/[).
    command = Signal(str)
    kind_edited = Signal(str, str)
    location_edited = Signal(str, str, str)

    def __init__(self, parent=None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        for c, tip in enumerate(COLUMN_TIPS):
            self.horizontalHeaderItem(c).setToolTip(tip)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setItemDelegateForColumn(KIND_COL, ComboDelegate(KINDS, self))
        self.setItemDelegateForColumn(LOC_COL, ComboDelegate(LOCATIONS, self))
        self._ids: list[str] = []
        self._filling = False
        self.itemChanged.connect(self._item_changed)
        self.itemSelectionChanged.connect(self._selection_changed)
        self.setMinimumHeight(140)

    @property
    def ids(self) -> list[str]:
        """Finding ids in row order."""
        return list(self._ids)

    def row_of(self, finding_id: str) -> int:
        """Row of a finding (-1 if absent)."""
        return self._ids.index(finding_id) if finding_id in self._ids else -1

    def set_findings(self, findings: Sequence[Finding], *, selected: str | None = None) -> None:
        """Fill the table (keeps the selection on ``selected``)."""
        self._filling = True
        try:
            self.setRowCount(len(findings))
            self._ids = [f.id for f in findings]
            for r, f in enumerate(findings):
                values = (
                    f.id,
                    f.kind,
                    f"{f.side} {f.zone}",
                    f"{f.diameter_mm:.1f}",
                    f"{f.volume_ml:.2f}",
                    f"{f.mean_hu:.0f}",
                    f"{f.score:.2f}",
                    f.status,
                )
                for c, v in enumerate(values):
                    item = QTableWidgetItem(v)
                    flags = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
                    if c in (KIND_COL, LOC_COL):
                        flags |= Qt.ItemFlag.ItemIsEditable
                        item.setToolTip("Double-click to change")
                    item.setFlags(flags)
                    if c == KIND_COL:
                        item.setForeground(QColor(KIND_COLORS[f.kind]))
                        if f.attributes.get("kind_from_ct"):
                            # a finding the reader added: its kind read from the CT, to check
                            font = item.font()
                            font.setItalic(True)
                            item.setFont(font)
                            item.setToolTip(
                                "Read from the CT where you added it: check it "
                                "(double-click to change)"
                            )
                    if c == STATUS_COL:
                        item.setForeground(QColor(STATUS_COLORS.get(f.status, "#d0d0d0")))
                    if f.status == "rejected" and c != STATUS_COL:
                        item.setForeground(QColor(STATUS_COLORS["rejected"]))
                        font = item.font()
                        font.setStrikeOut(True)
                        item.setFont(font)
                    self.setItem(r, c, item)
            if selected in self._ids:
                self.selectRow(self._ids.index(selected))
        finally:
            self._filling = False

    def select_finding(self, finding_id: str) -> None:
        """Select a finding's row (emits :attr:`finding_selected`)."""
        row = self.row_of(finding_id)
        if row >= 0:
            self.selectRow(row)

    def selected_id(self) -> str | None:
        """Id of the selected finding."""
        rows = {i.row() for i in self.selectedIndexes()}
        if not rows:
            return None
        r = min(rows)
        return self._ids[r] if r < len(self._ids) else None

    _KEYS = {
        Qt.Key.Key_A: "accept",
        Qt.Key.Key_R: "reject",
        Qt.Key.Key_N: "next",
        Qt.Key.Key_BracketRight: "next",
        Qt.Key.Key_P: "previous",
        Qt.Key.Key_BracketLeft: "previous",
    }

    def keyPressEvent(self, event):  # noqa: N802 - Qt API
        """A / R accept / reject, N or ] next, P or [ previous (instead of keyboard search)."""
        plain = event.modifiers() in (
            Qt.KeyboardModifier.NoModifier,
            Qt.KeyboardModifier.KeypadModifier,
        )
        if (
            plain
            and event.key() in self._KEYS
            and self.state() != QAbstractItemView.State.EditingState
        ):
            self.command.emit(self._KEYS[event.key()])
            event.accept()
            return
        super().keyPressEvent(event)

    def _selection_changed(self) -> None:
        if self._filling:
            return
        fid = self.selected_id()
        if fid is not None:
            self.finding_selected.emit(fid)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.row() >= len(self._ids):
            return
        fid = self._ids[item.row()]
        text = item.text().strip()
        if item.column() == KIND_COL and text in KINDS:
            self.kind_edited.emit(fid, text)
        elif item.column() == LOC_COL:
            parts = text.split()
            if len(parts) == 2 and parts[0] in SIDES and parts[1] in ZONES:
                self.location_edited.emit(fid, parts[0], parts[1])
