"""napari-ctreport: CT abnormality detection, attention maps and grounded reports in napari.

The package is layered: ``io`` (reading CT into patient LPS space), ``report`` (findings,
measurements, report text), ``model`` and ``synth``, ``analysis`` (the headless pipeline) and
``_napari`` (the thin viewer layer). Nothing below ``_napari`` imports napari or Qt.

The headless API is importable from the top level without importing napari, torch or the
model until first use::

    import napari_ctreport

    result = napari_ctreport.analyze("chest_ct.nii.gz", device="auto")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["Analysis", "__version__", "analyze", "evaluate_model"]

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import Analysis, analyze, evaluate_model

_LAZY = frozenset(__all__) - {"__version__"}  # from .analysis, on first use


def __getattr__(name: str) -> Any:
    # lazy: ``import napari_ctreport`` stays cheap (the napari manifest imports it)
    if name in _LAZY:
        from . import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
