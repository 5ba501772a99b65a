"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data`` beside the repository root (real CT test files); skips when absent."""
    data = SHARED / "data"
    if not (data / "real").is_dir():
        pytest.skip(f"real test data not found at {data / 'real'}")
    return data


@pytest.fixture(scope="session")
def real_lesions() -> Path:
    """Real chest CT with labelled lung cancers (pyradiomics' lung1 and lung2), fetched by
    ``scripts/fetch_real_lesions.sh`` into ``.cache/real_lesions``; skips when absent."""
    d = Path(__file__).resolve().parents[1] / ".cache" / "real_lesions"
    if not (d / "lung2_label.nrrd").is_file():
        pytest.skip(f"real lesion CTs not found at {d} (run scripts/fetch_real_lesions.sh)")
    return d


@pytest.fixture
def sample_dock(make_napari_viewer):
    """Factory: a viewer with the sample CT open and a :class:`ReviewDock` on it.

    ``sample_dock(model=None, docked=True, **viewer_kwargs) -> (viewer, dock)``; ``docked`` adds
    the dock to the window, a ``model`` folder is chosen in the dock with the CPU as device.
    """

    def make(model=None, *, docked: bool = True, **viewer_kwargs):
        from napari_ctreport._napari.review_dock import ReviewDock

        viewer = make_napari_viewer(**viewer_kwargs)
        viewer.open_sample("napari-ctreport", "chest_ct")
        dock = ReviewDock(viewer)
        if docked:
            viewer.window.add_dock_widget(dock, name="CT report")
        if model is not None:
            dock.set_model(model)
            dock.device_combo.setCurrentText("cpu")
        return viewer, dock

    return make
