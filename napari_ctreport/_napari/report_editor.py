"""The report editor: Findings and Impression (one sentence a line) and a Changes view.

It shows what :class:`~napari_ctreport._napari.session.ReviewSession` says and reports back the
reader's typing, line by line: a typed-over line of a finding becomes that finding's hand-edited
sentence, a new line belongs to no finding.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from qtpy.QtCore import QTimer, Signal
from qtpy.QtGui import QColor, QFont, QTextCursor, QTextFormat
from qtpy.QtWidgets import QPlainTextEdit, QTabWidget, QTextEdit

Lines = Sequence[tuple[str | None, str]]

HIGHLIGHT = QColor(90, 110, 160)
#: Typing pauses this long (ms) before an edit is taken.
EDIT_DELAY_MS = 600


def split_edit(old: Lines, new_texts: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Attribute edited lines to findings.

    Parameters
    ----------
    old
        The lines shown before the edit, ``(finding id, text)``: the id is ``None`` for a
        generated statement and ``""`` for a line of the reader's own.
    new_texts
        The non-empty lines after the edit.

    Returns
    -------
    (sentences, extra)
        ``sentences``: finding id -> new text (``""`` when its line was deleted) for every finding
        line that changed; ``extra``: new lines that belong to no finding and are not one of the
        generated statements shown before.
    """
    sentences: dict[str, str] = {}
    extra: list[str] = []
    generated_free = {t for fid, t in old if fid is None}
    # a finding's line moved elsewhere unchanged stays its own (moved up, it came back as a
    # line of no finding, and the finding's sentence as an empty typed one)
    new_list = list(new_texts)
    moved_old: set[int] = set()
    moved_new: set[int] = set()
    for i, (fid, text) in enumerate(old):
        if not fid:
            continue
        j = next((j for j, t in enumerate(new_list) if t == text and j not in moved_new), None)
        if j is not None:  # matched: out of the diff below
            moved_old.add(i)
            moved_new.add(j)
    old = [o for i, o in enumerate(old) if i not in moved_old]
    new_list = [t for j, t in enumerate(new_list) if j not in moved_new]
    old_texts = [t for _, t in old]
    sm = difflib.SequenceMatcher(a=old_texts, b=new_list, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for j in range(j1, j2):
                if old[i1 + j - j1][0] == "":
                    extra.append(new_list[j])
            continue
        olds = list(old[i1:i2])
        news = list(new_list[j1:j2])
        for fid, text in _pair(olds, news):
            if fid:
                sentences[fid] = text or ""
            elif text is not None and text not in generated_free:
                extra.append(text)
    return sentences, extra


def _pair(olds: Lines, news: list[str]) -> list[tuple[str | None, str | None]]:
    """Old lines of a changed block paired with its new lines: in order when there are as many
    (a line typed over is that finding's); otherwise each new line with the old line most like
    it (at least half alike), so that deleting one finding's line and editing the next in one
    pause does not give the next one's text to the deleted one."""
    if len(olds) == len(news):
        return [(fid, text) for (fid, _), text in zip(olds, news, strict=True)]
    pairs: list[tuple[str | None, str | None]] = []
    free = list(range(len(olds)))
    for text in news:
        scores = [
            (difflib.SequenceMatcher(a=olds[i][1].split(), b=text.split()).ratio(), i) for i in free
        ]
        best = max(scores, default=(0.0, -1))
        if best[0] >= 0.5:
            free.remove(best[1])
            pairs.append((olds[best[1]][0], text))
        else:
            pairs.append((None, text))
    pairs += [(olds[i][0], None) for i in free]
    return pairs


class _Editor(QPlainTextEdit):
    def __init__(self) -> None:
        super().__init__()
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        font = QFont()
        font.setPointSize(10)
        self.setFont(font)


class ReportEditor(QTabWidget):
    """Findings / Impression / Changes tabs.

    Signals
    -------
    findings_edited(dict, list)
        Finding id -> typed sentence, and the reader's own extra lines.
    impression_edited(str)
        The typed impression.
    """

    findings_edited = Signal(dict, list)
    impression_edited = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.findings_edit = _Editor()
        self.impression_edit = _Editor()
        self.changes_view = _Editor()
        self.changes_view.setReadOnly(True)
        self.changes_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("Monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        self.changes_view.setFont(mono)
        self.addTab(self.findings_edit, "Findings")
        self.addTab(self.impression_edit, "Impression")
        self.addTab(self.changes_view, "Changes")
        self._flines: list[tuple[str | None, str]] = []
        self._ilines: list[tuple[str | None, str]] = []
        self._impression_text = ""
        self._selected: str | None = None
        self._updating = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(EDIT_DELAY_MS)
        self._timer.timeout.connect(self.commit)
        self._dirty: set[str] = set()
        self.findings_edit.textChanged.connect(lambda: self._typed("findings"))
        self.impression_edit.textChanged.connect(lambda: self._typed("impression"))
        self.setMinimumHeight(160)

    # -- display ---------------------------------------------------------------------------
    def show_report(self, findings: Lines, impression: Lines, diff: str) -> None:
        """Show the current report (the reader's pending typing is taken first)."""
        if self._dirty:
            self.commit()
        self._flines = [(fid, t) for fid, t in findings if t.strip()]
        self._ilines = list(impression)
        self._impression_text = "\n".join(t for _, t in self._ilines)
        self._updating = True
        try:
            _set_text_keep_cursor(self.findings_edit, "\n".join(t for _, t in self._flines))
            _set_text_keep_cursor(self.impression_edit, self._impression_text)
            self.changes_view.setPlainText(diff or "(no changes from the model's draft)")
        finally:
            self._updating = False
        self.highlight(self._selected)

    def highlight(self, finding_id: str | None) -> None:
        """Highlight the sentences of a finding in both sections."""
        self._selected = finding_id
        for edit, lines in (
            (self.findings_edit, self._flines),
            (self.impression_edit, self._ilines),
        ):
            sels = []
            if finding_id is not None:
                doc = edit.document()
                for i, (fid, _) in enumerate(lines):
                    if fid != finding_id or i >= doc.blockCount():
                        continue
                    sel = QTextEdit.ExtraSelection()
                    sel.format.setBackground(HIGHLIGHT)
                    sel.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
                    # the line itself (BlockUnderCursor took the line break before it too,
                    # so the highlight began at the end of the line above)
                    cursor = QTextCursor(doc.findBlockByNumber(i))
                    cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock)
                    cursor.movePosition(
                        QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor
                    )
                    sel.cursor = cursor
                    sels.append(sel)
            edit.setExtraSelections(sels)

    def highlighted_lines(self, section: str = "findings") -> list[str]:
        """Texts of the highlighted lines (for tests and screen readers)."""
        edit = self.findings_edit if section == "findings" else self.impression_edit
        return [s.cursor.selectedText().strip("\u2029") for s in edit.extraSelections()]

    # -- typing ----------------------------------------------------------------------------
    def _typed(self, section: str) -> None:
        if self._updating:
            return
        self._dirty.add(section)
        self._timer.start()

    def commit(self) -> None:
        """Take the reader's pending typing now (normally after a pause)."""
        self._timer.stop()
        dirty, self._dirty = self._dirty, set()
        if "findings" in dirty:
            new = [ln.strip() for ln in self.findings_edit.toPlainText().splitlines() if ln.strip()]
            sentences, extra = split_edit(self._flines, new)
            self.findings_edited.emit(sentences, extra)
        if "impression" in dirty:
            text = self.impression_edit.toPlainText().strip()
            if text != self._impression_text.strip():
                self.impression_edited.emit(text)


def _set_text_keep_cursor(edit: QPlainTextEdit, text: str) -> None:
    if edit.toPlainText() == text:
        return
    pos = edit.textCursor().position()
    bar = edit.verticalScrollBar().value()
    edit.setPlainText(text)
    cursor = edit.textCursor()
    cursor.setPosition(min(pos, len(text)))
    edit.setTextCursor(cursor)
    edit.verticalScrollBar().setValue(bar)
