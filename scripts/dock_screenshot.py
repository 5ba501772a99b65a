"""Screenshot of napari with the CT report dock after a run (for the README and for review);
a case folder's own findings are shown instead of a run.

Usage (headless): xvfb-run -a -s "-screen 0 1800x1100x24" .venv/bin/python scripts/dock_screenshot.py \
    sample|PATH OUT.png [--model DIR] [--window lung|mediastinum|soft tissue|bone]
    [--select F2] [--plane axial|coronal|sagittal|3d]
"""

from __future__ import annotations

import argparse
import time

#: napari's dims order (z, y, x) for each plane: the sliced axis first.
PLANE_ORDER = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
#: Camera angles of the 3-D view: from the front, turned a little to the patient's left.
ANGLES_3D = (0.0, -20.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="'sample', a CT path or a case folder")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--model", default=None, help="model folder (default: shipped model)")
    parser.add_argument("--window", default="lung")
    parser.add_argument("--select", default=None, help="finding ID to jump to (default: the first)")
    parser.add_argument(
        "--plane",
        default="axial",
        choices=[*sorted(PLANE_ORDER), "3d"],
        help="the plane shown, or napari's 3-D view",
    )
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ctreport._napari.review_dock import ReviewDock

    viewer = napari.Viewer(title="napari-ctreport")
    viewer.window.resize(1700, 1050)
    if args.source == "sample":
        viewer.open_sample("napari-ctreport", "chest_ct")
    else:
        viewer.open(args.source, plugin="napari-ctreport")
    # no question dialogs: an autosave is not restored; a case folder's findings are shown
    # instead of a run
    ReviewDock.ask_restore = lambda self, summary: False
    ReviewDock.ask_open_case = lambda self, summary: True
    dock = ReviewDock(viewer)
    dock.autosave_root = None  # a screenshot is not a review: write no autosave
    viewer.window.add_dock_widget(dock, name="CT report", area="right")
    if args.model:
        dock.set_model(args.model)
    dock.device_combo.setCurrentText("cpu")
    if dock.result is None:
        dock.run()
    app = QApplication.instance()
    while dock.busy:
        app.processEvents()
        time.sleep(0.02)
    dock.apply_window(args.window)
    if args.plane == "3d":
        viewer.dims.ndisplay = 3
        for _ in range(20):  # the canvas at its size before the view is fitted to it
            app.processEvents()
            time.sleep(0.02)
        viewer.reset_view()
        viewer.scene.camera.angles = ANGLES_3D
    else:
        viewer.dims.order = PLANE_ORDER[args.plane]
    if dock.table.ids and args.plane != "3d":
        dock.select_finding(args.select if args.select in dock.table.ids else dock.table.ids[0])
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    viewer.screenshot(args.out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
