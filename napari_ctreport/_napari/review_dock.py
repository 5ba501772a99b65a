"""The CT report dock: the study at hand, its warnings and reading windows.

The dock holds no file or model logic: it reads layer metadata written by the reader and
calls the headless packages below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..io import WINDOW_PRESETS, window_limits
from .layers import META_KEY, study_summary

if TYPE_CHECKING:
    import napari

#: Presets offered as buttons, in reading order for chest CT.
PRESET_BUTTONS = ("lung", "mediastinum", "soft tissue", "bone")


class ReviewDock(QWidget):
    """Dock widget: pick the CT layer, see the study, switch reading windows."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.setObjectName("ctreport-review-dock")

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
            grid.addWidget(button, i // 2, i % 2)
            self.preset_buttons[name] = button

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("CT layer"))
        layout.addWidget(self.layer_combo)
        layout.addWidget(self.info)
        layout.addWidget(self.warnings)
        layout.addWidget(window_box)
        layout.addStretch(1)

        self.layer_combo.currentTextChanged.connect(self._show_study)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # -- layers ---------------------------------------------------------------------------
    def ct_layers(self) -> list[napari.layers.Image]:
        """Image layers that are 3-D volumes (ours first)."""
        from napari.layers import Image

        layers = [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.ndim == 3]
        return sorted(layers, key=lambda ly: META_KEY not in ly.metadata)

    def current_layer(self) -> napari.layers.Image | None:
        """The layer picked in the combo box, if it still exists."""
        name = self.layer_combo.currentText()
        return next((ly for ly in self.ct_layers() if ly.name == name), None)

    def _refresh_layers(self, event: object = None) -> None:
        current = self.layer_combo.currentText()
        names = [ly.name for ly in self.ct_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._show_study()

    def _show_study(self, *_: object) -> None:
        layer = self.current_layer()
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

    # -- windows --------------------------------------------------------------------------
    def apply_window(self, preset: str) -> None:
        """Set the CT layer's contrast limits to a named window preset."""
        layer = self.current_layer()
        if layer is None:
            return
        layer.contrast_limits = window_limits(*WINDOW_PRESETS[preset])


def _selectable():
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse
