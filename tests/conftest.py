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
