"""Model registry and model folders.

``create_model(name, **overrides)`` builds a registered architecture (timm ``create_model``
style). A model folder holds ``config.json``, ``model.safetensors`` and the tokenizer files
(``tokenizer.json``, ``tokenizer_config.json``, ...); :func:`save_pretrained` writes one and
:func:`from_pretrained` reads it back (safetensors only, never pickles). The shipped default is
``napari_ctreport/weights/default``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy
    from .network import CTReportNet

#: Folder of the model shipped with the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "weights" / "default"

_BASE: dict[str, Any] = {
    "spacing_zyx": [2.0, 1.5, 1.5],
    "hu_clip": [-1100.0, 500.0],
    "patch_zyx": [32, 64, 64],
    "overlap": 0.25,
    "score_threshold": 0.3,
    "mask_threshold": 0.5,
    "nms_radius_mm": 10.0,
    "attention_window_tokens": [6, 12, 12],
    "max_findings": 20,
    "max_sentence_tokens": 64,
}

_REGISTRY: dict[str, dict[str, Any]] = {
    "ctreport-tiny": {
        **_BASE,
        "channels": [4, 8, 16, 32],
        "depth": 1,
        "heads": 2,
        "decoder": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64},
    },
    "ctreport-small": {
        **_BASE,
        "channels": [8, 16, 32, 64],
        "depth": 2,
        "heads": 4,
        "decoder": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 64},
    },
}


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_REGISTRY)


def model_config(model_name: str, **overrides: Any) -> dict[str, Any]:
    """The configuration of registered architecture ``model_name`` with ``overrides`` applied."""
    if model_name not in _REGISTRY:
        raise KeyError(f"unknown model {model_name!r}; registered: {', '.join(list_models())}")
    cfg = copy.deepcopy(_REGISTRY[model_name])
    cfg.update(copy.deepcopy(overrides))
    cfg["architecture"] = model_name
    cfg.setdefault("name", model_name)
    cfg.setdefault("version", "0.0.0")
    return cfg


def create_model(model_name: str, *, tokenizer=None, **overrides: Any) -> CTReportNet:
    """Build registered architecture ``model_name`` (random weights).

    Parameters
    ----------
    model_name
        A name from :func:`list_models`.
    tokenizer
        The decoder's tokenizer; sets ``vocab_size`` and the special-token ids. Without one a
        minimal lexicon tokenizer is built.
    **overrides
        Config keys to override.
    """
    from .network import CTReportNet

    cfg = model_config(model_name, **overrides)
    if tokenizer is None:
        tokenizer = default_tokenizer()
    cfg.update(
        vocab_size=len(tokenizer.get_vocab()),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CTReportNet(cfg)


def default_tokenizer():
    """A tokenizer over the lexicon words and placeholders only (for untrained models)."""
    from .text import build_tokenizer

    return build_tokenizer([["There", "is", "a", "in", "the", "zone", "measuring", "mm", "x"]])


@dataclass
class LoadedModel:
    """A model folder in memory: network, tokenizer, config and identity."""

    net: CTReportNet
    tokenizer: Any
    config: dict[str, Any]
    path: Path | None
    sha256: str

    @property
    def info(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` of the model, as written into every result."""
        return {
            "name": str(self.config.get("name", "")),
            "version": str(self.config.get("version", "")),
            "sha256": self.sha256,
        }


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pretrained(
    net: CTReportNet, tokenizer, out_dir: str | Path, **config_updates: Any
) -> Path:
    """Write a model folder: ``config.json``, ``model.safetensors`` and tokenizer files."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(net.config)
    cfg.update(config_updates)
    net.config = cfg
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # GPT-2 ties lm_head to the token embedding: store the tensor once.
    state.pop("decoder.lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def resolve_model_dir(model: str | Path | None) -> Path:
    """Folder of ``model``: ``None`` or ``"default"`` -> the shipped default, else the path."""
    if model is None or str(model) == "default":
        return DEFAULT_MODEL_DIR
    return Path(model)


def from_pretrained(model: str | Path | None = None, *, device: str = "cpu") -> LoadedModel:
    """Load a model folder written by :func:`save_pretrained` (``None`` = shipped default).

    Raises
    ------
    FileNotFoundError
        When the folder or one of its files is missing.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast

    from .network import CTReportNet

    folder = resolve_model_dir(model)
    cfg_path = folder / "config.json"
    weights = folder / "model.safetensors"
    for p in (cfg_path, weights, folder / "tokenizer.json"):
        if not p.is_file():
            raise FileNotFoundError(f"{folder}: not a model folder ({p.name} missing)")
    cfg = json.loads(cfg_path.read_text())
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    net = CTReportNet(cfg)
    state = load_file(str(weights))
    if "decoder.lm_head.weight" not in state:
        state["decoder.lm_head.weight"] = state["decoder.transformer.wte.weight"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights}: weights do not fit the config (missing {missing}, unexpected {unexpected})"
        )
    net.decoder.tie_weights()
    net.eval()
    net.to(torch.device(device))
    return LoadedModel(
        net=net, tokenizer=tokenizer, config=cfg, path=folder, sha256=file_sha256(weights)
    )


_CACHE: dict[tuple[str, str, float], LoadedModel] = {}


def load_cached(model: str | Path | None, *, device: str) -> LoadedModel:
    """:func:`from_pretrained` with a cache keyed by folder, device and file time."""
    folder = resolve_model_dir(model).resolve()
    weights = folder / "model.safetensors"
    key = (str(folder), device, weights.stat().st_mtime if weights.exists() else 0.0)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = from_pretrained(folder, device=device)
    return _CACHE[key]
