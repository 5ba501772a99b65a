"""napari-ctreport: CT abnormality detection, attention maps and grounded reports in napari.

The package is layered: ``io`` (reading CT into patient LPS space), ``report`` (findings,
measurements, report text), ``model`` and ``synth``, ``analysis`` (the headless pipeline) and
``_napari`` (the thin viewer layer). Nothing below ``_napari`` imports napari or Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
