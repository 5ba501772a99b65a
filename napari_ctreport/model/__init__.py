"""The network, model folders, inference and training (no napari or Qt here).

Heavy modules (torch, timm, transformers) load on first use of the names below. Training is
``napari_ctreport.model.train.train`` (import it from the submodule).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Cancelled",
    "DEFAULT_MODEL_DIR",
    "create_model",
    "from_pretrained",
    "list_models",
    "save_pretrained",
]

_LAZY = {
    "Cancelled": ".inference",
    "DEFAULT_MODEL_DIR": ".registry",
    "create_model": ".registry",
    "from_pretrained": ".registry",
    "list_models": ".registry",
    "save_pretrained": ".registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
