"""Open napari with the CT report dock and a CT (the sample chest CT by default).

Usage: ``ctreport-viewer [PATH] [--screenshot FILE]``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Start the viewer; with ``--screenshot`` save a PNG of the window and quit."""
    parser = argparse.ArgumentParser(prog="ctreport-viewer", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="CT to open (DICOM folder/file, NIfTI, NRRD, MHA)")
    parser.add_argument("--screenshot", help="save a screenshot of the whole window and exit")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-ctreport")
    viewer.window.resize(1500, 950)
    if args.path:
        viewer.open(args.path, plugin="napari-ctreport")
    else:
        viewer.open_sample("napari-ctreport", "chest_ct")
    viewer.window.add_plugin_dock_widget("napari-ctreport", "CT report")
    layers = [ly for ly in viewer.layers if ly._type_string == "image"]
    if layers:
        viewer.dims.set_point(0, _middle(layers[0]))
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        viewer.window.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0


def _middle(layer) -> float:
    lo, hi = layer.extent.world[0][0], layer.extent.world[1][0]
    return float((lo + hi) / 2)


if __name__ == "__main__":
    sys.exit(main())
