"""Training and fine-tuning from case folders.

Each case (``io.case.read_case``) is put on the model grid once (cropped, resampled, HU scaled,
labels by nearest neighbour) and cached in memory. Training patches are centred on a lesion with
probability ``lesion_prob`` and drawn at random otherwise; augmentations are intensity scale and
shift, noise, isotropic zoom and, when asked for (``rotate_deg``), a turn in the axial plane (no
flips: a left-right flip would change the side of every finding). Losses: CenterNet focal loss
on the heatmaps, L1 on log-sizes and offsets at the centres, BCE + Dice on the lesion mask,
cross-entropy on the kind from the finding's cross-attention plus a KL term pulling its attention
onto the finding's mask, and the report decoder's language-model loss on the case's own
sentence for that finding (corrected text in corrected cases) or the writer's varied phrasings.
Findings with status ``"rejected"`` are negatives: no heatmap target and background in the mask
target. Model drafts (``ctreport analyze --export``: the model's own output, not reviewed) are
left out unless asked for (:func:`training_case_folders`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..io.volume import CTVolume
from ..report.findings import Finding
from ..report.lexicon import KINDS, SIDES, ZONES, kind_id, kind_weight
from .inference import pick_device, prepare
from .network import size_bin

log = logging.getLogger(__name__)


@dataclass
class _Target:
    kind: int
    side: int
    zone: int
    size_bin: int
    centre: np.ndarray  # model-grid (z, y, x)
    size: np.ndarray  # extent in model voxels (z, y, x)
    label: int
    sentences: list[list[str]] = field(default_factory=list)


@dataclass
class _CaseData:
    name: str
    image: np.ndarray  # float16 scaled, model grid (padded)
    labels: np.ndarray  # uint8/uint16, positive lesion labels only (others 0)
    valid: tuple[int, int, int]
    targets: list[_Target]
    spacing: np.ndarray
    #: model-grid centres of findings rejected on review (hard negatives)
    negatives: list[np.ndarray] = field(default_factory=list)
    #: who/what the case is: case id, provenance source, export version, reviewer, counts
    info: dict[str, Any] = field(default_factory=dict)


def _case_sentences(case, f: Finding, *, rng: np.random.Generator, n_variants: int) -> list[str]:
    """Reference sentences for one finding: the case's own sentence + writer variants.

    Descriptors the pipeline cannot measure (the ``shape`` attribute) are left out: sentences
    naming a shape are skipped and the writer's variants are written without it, so the decoder
    learns to state only what the findings carry.
    """
    import dataclasses

    from ..report.lexicon import SHAPES
    from ..report.writer import describe_finding
    from .text import words

    plain = dataclasses.replace(
        f, attributes={k: v for k, v in f.attributes.items() if k != "shape"}
    )
    out = []
    for s in (case.report or {}).get("sentences", []) or []:
        if s.get("finding_id") == f.id and s.get("section") == "findings":
            text = str(s["text"])
            if not {w.lower() for w in words(text)} & set(SHAPES):
                out.append(text)
    for _ in range(n_variants):
        out.append(describe_finding(plain, rng=rng))
    out.append(describe_finding(plain))
    return out


def load_case_data(
    folder: Path, config: dict[str, Any], *, seed: int = 0, n_variants: int = 4
) -> _CaseData:
    """Read one case folder and put it on the model grid."""
    from ..io.case import read_case

    case = read_case(folder)
    vol = case.load_volume()
    return case_data(
        case, vol, case.load_labels(vol), config, name=str(folder), seed=seed, n_variants=n_variants
    )


@dataclass(frozen=True)
class GeneratedCases:
    """Training cases made in memory rather than read from case folders: ``make(i)`` gives case
    ``i``'s record (findings, report, provenance), CT and label map, for ``i`` in
    ``range(count)``. ``make`` must be picklable (a module-level function or a
    ``functools.partial`` of one) when cases load in several processes. ``about`` goes into the
    model's config and card (where the cases came from).

    For the synthetic generator's cases, ``make =
    functools.partial(napari_ctreport.synth.generate.training_case, seed=S)``: case ``i`` is
    the one ``write_dataset(dir, cases=..., seed=S, real_fraction=0)`` would write, and no file
    is written or read (a machine without SimpleITK can train on it)."""

    count: int
    make: Callable[[int], tuple[Any, CTVolume, np.ndarray]]
    about: dict[str, Any] = field(default_factory=dict)


def case_data(
    case: Any,
    vol: CTVolume,
    labels: np.ndarray,
    config: dict[str, Any],
    *,
    name: str,
    seed: int = 0,
    n_variants: int = 4,
) -> _CaseData:
    """A case (its record: findings, report, provenance; its CT and label map) on the model
    grid."""
    from .text import template

    prep = prepare(vol, config)
    # nearest-neighbour labels on the model grid (separable index maps)
    shape = prep.valid_shape
    idx = [
        np.clip(
            np.round(prep.crop_lo[a] + np.arange(shape[a]) * prep.step[a]).astype(int),
            0,
            vol.shape[a] - 1,
        )
        for a in range(3)
    ]
    lab_m = labels[np.ix_(*idx)]
    out_lab = np.zeros(prep.array.shape, dtype=np.uint16)
    rng = np.random.default_rng(seed)
    targets: list[_Target] = []
    negatives: list[np.ndarray] = []
    for f in case.findings:
        if f.status == "rejected":
            negatives.append(prep.ct_to_model(vol.lps_to_index(f.center_lps_mm)))
            continue
        if f.label <= 0 or f.kind not in KINDS:
            continue
        region = lab_m == f.label
        if region.any():
            pts = np.argwhere(region)
            lo, hi = pts.min(0), pts.max(0) + 1
            centre = pts.mean(0)
            size = (hi - lo).astype(float)
            out_lab[: shape[0], : shape[1], : shape[2]][region] = f.label
        else:
            centre = prep.ct_to_model(vol.lps_to_index(f.center_lps_mm))
            lo_c = prep.ct_to_model(vol.lps_to_index(f.bbox_lps_mm[0]))
            hi_c = prep.ct_to_model(vol.lps_to_index(f.bbox_lps_mm[1]))
            size = np.maximum(np.abs(hi_c - lo_c), 1.0)
        sents = [
            template(s, f)[0] for s in _case_sentences(case, f, rng=rng, n_variants=n_variants)
        ]
        targets.append(
            _Target(
                kind=kind_id(f.kind) - 1,
                side=SIDES.index(f.side),
                zone=ZONES.index(f.zone),
                size_bin=size_bin(f.diameter_mm),
                centre=np.asarray(centre, dtype=float),
                size=np.maximum(size, 1.0),
                label=int(f.label),
                sentences=sents,
            )
        )
    return _CaseData(
        name=name,
        image=prep.array.astype(np.float16),
        labels=out_lab if out_lab.max() > 255 else out_lab.astype(np.uint8),
        valid=prep.valid_shape,
        targets=targets,
        spacing=prep.spacing,
        negatives=[np.asarray(c, dtype=float) for c in negatives],
        info=_case_info(case, n_targets=len(targets), n_negatives=len(negatives)),
    )


def _reader_edits(edit_log: Sequence[Mapping[str, Any]] | None) -> int:
    """How many of an edit log's records are the reader's edits.

    Parameters
    ----------
    edit_log
        A case's ``provenance["edit_log"]`` (``[{time, action, finding_id, before, after}]``).

    Returns
    -------
    int
        The records whose ``action`` is not one of :data:`~napari_ctreport.io.case.NOT_EDITS`.
    """
    from ..io.case import NOT_EDITS

    return sum(
        not (isinstance(e, Mapping) and e.get("action") in NOT_EDITS) for e in edit_log or []
    )


def _case_info(case, *, n_targets: int, n_negatives: int) -> dict[str, Any]:
    """What a model card says about one training case."""
    prov = case.provenance or {}
    export = prov.get("export") or {}
    return {
        "case_id": case.case_id,
        "folder": str(case.folder) if case.folder else "",
        "source": prov.get("source") or "",
        "version": export.get("version"),
        "reviewer": prov.get("reviewer") or "",
        "edits": _reader_edits(prov.get("edit_log")),
        "findings": n_targets,
        "rejected": n_negatives,
    }


# ------------------------------------------------------------------------------------- sampling
def _crop(arr: np.ndarray, lo: np.ndarray, size: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(tuple(int(s) for s in size), fill, dtype=arr.dtype)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(lo + size, arr.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - lo
    dst_hi = dst_lo + (src_hi - src_lo)
    out[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = arr[
        src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
    ]
    return out


def sample_patch(
    case: _CaseData,
    patch: np.ndarray,
    rng: np.random.Generator,
    *,
    lesion_prob: float,
    augment: bool,
    pad_value: float,
    negative_prob: float = 0.5,
    rotate_deg: float = 0.0,
    kind_weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One training patch: image, mask target and the findings whose centres lie inside.

    With probability ``lesion_prob`` the patch is centred (with jitter) on a finding; otherwise,
    when the case has findings rejected on review, with probability ``negative_prob`` on one of
    those (a hard negative: background in every target), else anywhere in the volume.
    With ``augment`` and ``rotate_deg`` > 0, half the patches are turned in the axial plane by an
    angle drawn from [-rotate_deg, rotate_deg] (a patient lying turned on the table); the
    image is sampled from a region large enough that no corner is padding, the labels by nearest
    neighbour, finding centres are turned with it and their in-plane extents are those of the
    turned ellipse. With ``rotate_deg`` = 0 no random number is drawn for it (the same patches
    as before for a seed). ``kind_weights`` (one per :data:`~..report.lexicon.KINDS`) draws the
    finding a patch is centred on in proportion to its kind's weight rather than uniformly:
    more patches on the kinds the model finds least.
    """
    zoom = (
        float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        if augment and rng.random() < 0.5
        else 1.0
    )
    src = np.maximum(np.round(patch * zoom).astype(int), 8)
    angle = (
        float(rng.uniform(-rotate_deg, rotate_deg))
        if augment and rotate_deg > 0 and rng.random() < 0.5
        else 0.0
    )
    valid = np.asarray(case.valid)
    anchor = None
    if case.targets and rng.random() < lesion_prob:
        if kind_weights is None:
            anchor = case.targets[rng.integers(len(case.targets))].centre
        else:
            w = np.array([kind_weights[t.kind] for t in case.targets], dtype=float)
            anchor = case.targets[rng.choice(len(w), p=w / w.sum())].centre
    elif case.negatives and rng.random() < negative_prob:
        anchor = case.negatives[rng.integers(len(case.negatives))]
    if anchor is not None:
        centre = anchor + rng.uniform(-0.3, 0.3, 3) * src  # jittered around the finding
    else:
        centre = rng.uniform(0, 1, 3) * valid
    lo = np.round(centre - src / 2.0).astype(int)
    lo = np.clip(lo, -src // 4, np.maximum(valid - src + src // 4, -src // 4))
    if angle:
        return _turned_patch(case, patch, src, lo, angle, rng, augment=augment, pad=pad_value)
    img = _crop(case.image, lo, src, np.float16(pad_value)).astype(np.float32)
    lab = _crop(case.labels, lo, src, 0)
    if zoom != 1.0:
        ti = torch.from_numpy(img)[None, None]
        img = F.interpolate(
            ti, size=tuple(int(p) for p in patch), mode="trilinear", align_corners=False
        )[0, 0].numpy()
        tl = torch.from_numpy(lab.astype(np.float32))[None, None]
        lab = (
            F.interpolate(tl, size=tuple(int(p) for p in patch), mode="nearest")[0, 0]
            .numpy()
            .astype(lab.dtype)
        )
    scale = patch / src
    inside = []
    for t in case.targets:
        c = (t.centre - lo) * scale
        if np.all(c >= 0) and np.all(c < patch):
            inside.append((t, c, t.size * scale))
    return _patch_dict(img, lab, inside, lo, src, rng, augment)


def _patch_dict(img, lab, inside, lo, src, rng, augment: bool) -> dict[str, Any]:
    if augment:
        img = img * rng.uniform(0.95, 1.05) + rng.uniform(-0.03, 0.03)
        img = img + rng.normal(0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)
    return {
        "image": img.astype(np.float32),
        "labels": lab,
        "findings": inside,
        "origin": lo,  # model-grid index of the patch corner, before zoom
        "extent": src,  # model-grid extent of the patch, before zoom
    }


def _turned_patch(
    case: _CaseData,
    patch: np.ndarray,
    src: np.ndarray,
    lo: np.ndarray,
    angle_deg: float,
    rng: np.random.Generator,
    *,
    augment: bool,
    pad: float,
) -> dict[str, Any]:
    """:func:`sample_patch`'s patch at ``lo`` + ``src``, turned by ``angle_deg`` in (y, x)."""
    th = np.deg2rad(angle_deg)
    c, s = abs(np.cos(th)), abs(np.sin(th))
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    centre = lo + src / 2.0
    big = src.copy()
    big[1] = int(np.ceil(c * src[1] + s * src[2])) + 2
    big[2] = int(np.ceil(s * src[1] + c * src[2])) + 2
    blo = np.floor(centre - big / 2.0).astype(int)
    img = torch.from_numpy(_crop(case.image, blo, big, np.float16(pad)).astype(np.float32))
    lab = torch.from_numpy(_crop(case.labels, blo, big, 0).astype(np.float32))
    # output voxel o (patch index) <- offset d = o / scale - src / 2 from the centre, turned
    scale = patch / src
    axes = [
        (np.arange(int(n)) + 0.5) / sc - h for n, sc, h in zip(patch, scale, src / 2.0, strict=True)
    ]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij")
    sy = rot[0, 0] * dy + rot[0, 1] * dx
    sx = rot[1, 0] * dy + rot[1, 1] * dx
    src_idx = [centre[0] - blo[0] + dz, centre[1] - blo[1] + sy, centre[2] - blo[2] + sx]
    norm = [2.0 * i / n - 1.0 for i, n in zip(src_idx, big, strict=True)]  # align_corners=False
    grid = torch.from_numpy(np.stack([norm[2], norm[1], norm[0]], -1).astype(np.float32))[None]
    out_img = F.grid_sample(
        img[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0, 0].numpy()
    out_lab = (
        F.grid_sample(lab[None, None], grid, mode="nearest", align_corners=False)[0, 0]
        .numpy()
        .astype(case.labels.dtype)
    )
    inside = []
    for t in case.targets:
        q = t.centre - centre
        d = np.array([q[0], *(rot.T @ q[1:])])
        o = (d + src / 2.0) * scale
        if np.all(o >= 0) and np.all(o < patch):
            ey = np.hypot(c * t.size[1], s * t.size[2])
            ex = np.hypot(s * t.size[1], c * t.size[2])
            inside.append((t, o, np.array([t.size[0], ey, ex]) * scale))
    return _patch_dict(out_img, out_lab, inside, lo, src, rng, augment)


def _gaussian_heat(shape: Sequence[int], centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    g = [
        np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2)
        for n, c, s in zip(shape, centre, sigma, strict=True)
    ]
    return g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]


def build_targets(
    samples: Sequence[dict[str, Any]], patch: np.ndarray, num_kinds: int
) -> dict[str, torch.Tensor]:
    """Dense heatmap / size / offset / mask targets for a batch of patches."""
    b = len(samples)
    s4 = tuple(int(p) // 4 for p in patch)
    heat = np.zeros((b, num_kinds, *s4), dtype=np.float32)
    size = np.zeros((b, 3, *s4), dtype=np.float32)
    off = np.zeros((b, 3, *s4), dtype=np.float32)
    reg = np.zeros((b, 1, *s4), dtype=np.float32)
    for i, s in enumerate(samples):
        for t, c, sz in s["findings"]:
            c4 = c / 4.0
            cell = np.minimum(np.floor(c4).astype(int), np.array(s4) - 1)
            sigma = np.maximum(sz / 4.0 / 6.0, 0.6)
            g = _gaussian_heat(s4, cell.astype(float), sigma)
            heat[i, t.kind] = np.maximum(heat[i, t.kind], g)
            heat[i, t.kind][tuple(cell)] = 1.0
            size[i, :, cell[0], cell[1], cell[2]] = np.log(np.maximum(sz, 1.0))
            off[i, :, cell[0], cell[1], cell[2]] = c4 - cell
            reg[i, 0, cell[0], cell[1], cell[2]] = 1.0
    mask = np.stack([(s["labels"] > 0).astype(np.float32) for s in samples])[:, None]
    return {
        "heat": torch.from_numpy(heat),
        "size": torch.from_numpy(size),
        "offset": torch.from_numpy(off),
        "reg": torch.from_numpy(reg),
        "mask": torch.from_numpy(mask),
    }


def focal_loss(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on sigmoid heatmaps."""
    p = torch.sigmoid(pred_logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp_min(1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on the lesion mask."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice


def finding_losses(
    net,
    out: dict[str, torch.Tensor],
    samples: Sequence[dict[str, Any]],
    tokenizer,
    spacing: Sequence[np.ndarray],
    rng: np.random.Generator,
    max_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention (kind CE + KL to mask) and decoder LM losses for the findings in the batch."""
    from .text import encode_words

    feat4, tokens = out["feat4"], out["tokens"]
    td, th, tw = tokens.shape[2:]
    grid = torch.stack(
        torch.meshgrid(
            *(torch.arange(n, dtype=torch.float32) for n in (td, th, tw)), indexing="ij"
        ),
        -1,
    )
    grid = grid.reshape(-1, 3) * 8.0 + 3.5
    peaks, kinds, toks, rels, att_t, meta, seqs = [], [], [], [], [], [], []
    for i, s in enumerate(samples):
        lab = torch.from_numpy((s["labels"] > 0).astype(np.float32))
        for t, c, _sz in s["findings"]:
            cell = np.minimum(np.floor(c / 4.0).astype(int), np.array(feat4.shape[2:]) - 1)
            peaks.append(feat4[i, :, cell[0], cell[1], cell[2]])
            kinds.append(t.kind)
            toks.append(tokens[i].flatten(1).T)
            rels.append((grid - torch.from_numpy(c).float()) * torch.from_numpy(spacing[i]).float())
            own = torch.from_numpy((s["labels"] == t.label).astype(np.float32)) if t.label else lab
            tgt = F.avg_pool3d(own[None, None], 8)[0, 0].flatten()
            att_t.append(tgt / tgt.sum() if tgt.sum() > 0 else None)
            meta.append((t.kind, t.side, t.zone, t.size_bin))
            sent = t.sentences[rng.integers(len(t.sentences))] if t.sentences else []
            seqs.append(encode_words(tokenizer, sent, max_len))
    zero = feat4.sum() * 0.0
    if not peaks:
        return zero, zero, zero
    peak = torch.stack(peaks)
    kind_t = torch.tensor(kinds)
    attended, weights, logits = net.attend(peak, kind_t, torch.stack(toks), torch.stack(rels))
    cls_loss = F.cross_entropy(logits, kind_t)
    kl = []
    for w, tgt in zip(weights, att_t, strict=True):
        if tgt is not None:
            kl.append(
                -(tgt * torch.log(w.clamp_min(1e-8))).sum()
                + (tgt * torch.log(tgt.clamp_min(1e-8))).sum()
            )
    att_loss = torch.stack(kl).mean() if kl else zero
    m = torch.tensor(meta)
    memory = net.memory(attended, peak, m[:, 0], m[:, 1], m[:, 2], m[:, 3])
    length = max(len(q) for q in seqs)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    for j, q in enumerate(seqs):
        ids[j, : len(q)] = torch.tensor(q)
    labels = ids.clone()
    labels[labels == pad] = -100
    attn = (ids != pad).long()
    lm = net.decoder(
        input_ids=ids, attention_mask=attn, encoder_hidden_states=memory, labels=labels
    ).loss
    return cls_loss, att_loss, lm


# ------------------------------------------------------------------------------------- training
def _load_source(
    src: Path | int, config: dict[str, Any], seed: int, make: Callable | None
) -> tuple[_CaseData | None, str]:
    """One training case from a case folder, or (an ``int``) the generated case of that index
    (:class:`GeneratedCases`); ``(None, why)`` for a case that cannot be read."""
    try:
        if isinstance(src, int):
            assert make is not None
            record, vol, labels = make(src)
            name = f"generated:{record.case_id}"
            data = case_data(record, vol, labels, config, name=name, seed=seed)
        else:
            data = load_case_data(src, config, seed=seed)
    except Exception as exc:  # noqa: BLE001 - a broken case must not stop training
        return None, f"{src}: {exc}"
    return data, ""


class _PatchBatches:
    """Training step ``i``'s batch: the cases picked and their patches (:func:`sample_patch`),
    all drawn from a generator seeded by ``(seed, i)``, so a batch is the same whichever
    process cuts it and in whatever order the processes finish."""

    def __init__(
        self,
        cases: Sequence[_CaseData],
        patch: np.ndarray,
        *,
        seed: int,
        steps: int,
        batch_size: int,
        lesion_prob: float,
        rotate_deg: float,
        pad_value: float,
        kind_weights: Sequence[float] | None = None,
    ) -> None:
        self.cases = cases
        self.kind_weights = kind_weights
        self.patch = patch
        self.seed = int(seed)
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lesion_prob = lesion_prob
        self.rotate_deg = rotate_deg
        self.pad_value = pad_value

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[list[int], list[dict[str, Any]]]:
        rng = np.random.default_rng([self.seed, int(step)])
        picks = [int(j) for j in rng.integers(len(self.cases), size=self.batch_size)]
        samples = [
            sample_patch(
                self.cases[j],
                self.patch,
                rng,
                lesion_prob=self.lesion_prob,
                augment=True,
                rotate_deg=self.rotate_deg,
                pad_value=self.pad_value,
                kind_weights=self.kind_weights,
            )
            for j in picks
        ]
        return picks, samples


def auto_patch_workers(device: torch.device | str) -> int:
    """Patch workers :func:`train` uses unless told: on CUDA all but two of the CPU cores, at
    most 8 (a GPU steps faster than one process cuts patches); elsewhere none (the CPU step
    itself is the slow part, and a forked worker on macOS is not safe)."""
    import os

    if torch.device(device).type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 2))


def _kind_weights(weights: dict[str, float] | None) -> list[float] | None:
    """``train``'s ``kind_weights`` as one weight per lexicon kind (1 where not given); a kind
    outside the lexicon or a weight that is not positive is refused."""
    if not weights:
        return None
    checked = dict(kind_weight(kind, w) for kind, w in weights.items())
    return [checked.get(k, 1.0) for k in KINDS]


def _as_is(batch: Any) -> Any:
    return batch


#: Seconds :func:`_iter_batches` waits for one batch from its workers before it takes them for
#: hung (a batch of 32 turned patches takes about 0.2 s to cut).
PATCH_WORKER_TIMEOUT_S = 120.0


def _iter_batches(
    source: _PatchBatches, workers: int
) -> Generator[tuple[list[int], list[dict[str, Any]]], None, None]:
    """``source``'s batches in step order, cut in ``workers`` processes ahead of the training
    step (a ``torch`` ``DataLoader``), or here when ``workers`` is 0.

    The workers are forked where the platform can (Linux): they share the cases' arrays with
    this process instead of each receiving a copy, and they only cut patches on the CPU (one
    thread each, as the ``DataLoader`` sets), never touching the GPU. The patches come back as
    pickled NumPy arrays through a pipe, not through shared memory, which a container may keep
    small. Should the workers fail (a worker killed, or no batch within
    :data:`PATCH_WORKER_TIMEOUT_S`), the rest of the batches are cut here, the same batches, and
    a warning says so: a long run on a lent machine is not lost to them. Closing the generator
    stops the workers."""
    done = 0
    if workers >= 1:
        import multiprocessing

        from torch.utils.data import DataLoader

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        it = iter(
            DataLoader(
                source,  # type: ignore[arg-type]
                batch_size=None,
                shuffle=False,
                num_workers=int(workers),
                collate_fn=_as_is,
                multiprocessing_context=multiprocessing.get_context(method),
                prefetch_factor=4,
                timeout=PATCH_WORKER_TIMEOUT_S,
                # its own generator for the workers' seeds: drawing them from torch's global one
                # would change the training step's random numbers (dropout) with the worker count
                generator=torch.Generator().manual_seed(source.seed),
            )
        )
        try:
            for batch in it:
                yield batch
                done += 1
        except Exception as exc:  # noqa: BLE001 - fall back to cutting the patches here
            log.warning(
                "the %d patch workers failed at step %d (%s); cutting the patches in the"
                " training process from here on",
                workers,
                done,
                exc,
            )
        finally:
            del it  # the DataLoader's iterator shuts its workers down when it goes
    for i in range(done, len(source)):
        yield source[i]


class NoTrainingCases(ValueError):
    """:func:`train` found nothing to train on: no case folder under the data folders, only
    model drafts, or no case it could read (bad input, not a fault of the trainer)."""


def _export_version(folder: Path, doc: Mapping[str, Any]) -> int | None:
    """The export version of a case folder (``<case_id>/vNNN``, or ``provenance.export.version``),
    ``None`` for a case folder that is not an export."""
    if re.fullmatch(r"v\d{3,}", folder.name):
        return int(folder.name[1:])
    export = (doc.get("provenance") or {}).get("export") or {}
    version = export.get("version") if isinstance(export, Mapping) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _created(doc: Mapping[str, Any]) -> datetime | None:
    """``provenance.created`` of a case record as an aware time (UTC when it names no zone)."""
    text = (doc.get("provenance") or {}).get("created")
    try:
        when = datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def _newer(a: tuple[int, datetime | None], b: tuple[int, datetime | None]) -> bool:
    """Whether export ``(version, created)`` ``a`` supersedes ``b``: a higher version, or the
    same version created later (a copy that does not say when it was made supersedes none)."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] is not None and b[1] is not None and a[1] > b[1]


def _find_training_cases(
    data_dirs: Sequence[str | Path], *, include_drafts: bool
) -> tuple[list[Path], list[Path], list[Path]]:
    """:func:`training_case_folders`' folders and drafts, and the superseded export versions
    left out (older copies of a case exported under several of ``data_dirs``)."""
    from ..io.case import CASE_JSON, iter_cases

    found: list[tuple[Path, str | None]] = []  # (folder, provenance.source)
    newest: dict[str, tuple[int, tuple[int, datetime | None]]] = {}  # case_id -> (index, key)
    superseded: set[int] = set()
    for d in data_dirs:
        for folder in iter_cases(Path(d)):
            try:
                doc = json.loads((folder / CASE_JSON).read_text(encoding="utf-8"))
                source = (doc.get("provenance") or {}).get("source")
                case_id = doc.get("case_id")
                version = _export_version(folder, doc)
                key = (version, _created(doc)) if version is not None else None
            except (OSError, ValueError, AttributeError):
                source = case_id = key = None  # unreadable: loading it later says why it is skipped
            index = len(found)
            found.append((folder, source))
            if key is None or not isinstance(case_id, str) or not case_id:
                continue  # not an export (e.g. a synthetic dataset's case_0000): never a copy
            if case_id not in newest:
                newest[case_id] = (index, key)
            elif _newer(key, newest[case_id][1]):
                superseded.add(newest[case_id][0])
                newest[case_id] = (index, key)
            else:
                superseded.add(index)
    out: list[Path] = []
    drafts: list[Path] = []
    for i, (folder, source) in enumerate(found):
        if i in superseded:
            continue
        if source == "model draft" and not include_drafts:
            drafts.append(folder)
        else:
            out.append(folder)
    return out, drafts, [found[i][0] for i in sorted(superseded)]


def training_case_folders(
    data_dirs: Sequence[str | Path], *, include_drafts: bool = False
) -> tuple[list[Path], list[Path]]:
    """The case folders under ``data_dirs`` to train on (the newest version of each export), and
    the model drafts among them that are left out.

    An export is kept once: of the versions of a case (``case_id``) under all of ``data_dirs``
    (``OUT/<case_id>/vNNN``, also when one case was exported under several of them) only the
    newest, the highest version number and, between equal numbers, the one whose
    ``provenance.created`` is the latest (the first found when either does not say). Case
    folders that are not exports (no version, e.g. a synthetic dataset's ``case_0000``) are all
    kept, whatever their ``case_id``.

    A model draft (``provenance.source`` ``"model draft"``: ``ctreport analyze --export``, the
    model's own findings that nobody reviewed) would teach the model its own mistakes; it is
    trained on only with ``include_drafts``. Once a reader has corrected and exported it, the
    newer version is a corrected case and is trained on.

    Parameters
    ----------
    data_dirs
        Folders holding case folders (searched with :func:`~napari_ctreport.io.case.iter_cases`).
    include_drafts
        Also return the model drafts among the folders to train on.

    Returns
    -------
    folders, drafts
        The folders to train on, and the drafts left out (empty with ``include_drafts``).
    """
    out, drafts, _ = _find_training_cases(data_dirs, include_drafts=include_drafts)
    return out, drafts


def train(
    *,
    data_dirs: Sequence[str | Path],
    out_dir: str | Path,
    init: str | Path | None = None,
    epochs: int = 8,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    val_fraction: float = 0.1,
    architecture: str = "ctreport-small",
    batch_size: int = 8,
    patches_per_case: int = 8,
    patch_zyx: Sequence[int] = (32, 64, 64),
    lr: float = 2e-3,
    lesion_prob: float = 0.7,
    rotate_deg: float = 0.0,
    name: str | None = None,
    version: str | None = None,
    threads: int | None = None,
    max_minutes: float | None = None,
    generated: GeneratedCases | None = None,
    workers: int = 1,
    patch_workers: int | None = None,
    kind_weights: dict[str, float] | None = None,
    include_drafts: bool = False,
) -> Path:
    """Train (or fine-tune from ``init``) a model on case folders and write the model folder.

    Parameters
    ----------
    data_dirs
        Folders holding case folders (``case.json`` + image + labels); of a case exported more
        than once, under one or several of them, only the newest version is trained on
        (:func:`training_case_folders`; a warning says how many copies were skipped).
    out_dir
        Where the final model folder goes; ``out_dir/checkpoints/epoch_NNN`` get one per epoch.
    init
        A model folder (or ``"default"``) to start from; its tokenizer is kept, not its records
        of how it was made (its config's ``training`` and ``interpolation``): the new model's
        ``config.json["training"]`` names it (``init``, and ``init_model``: name, version,
        sha256).
    epochs
        Passes over the training cases (each case gives ``patches_per_case`` patches).
    device, seed
        Device (``"auto"``: CUDA, MPS, CPU) and the seed of every random choice.
    progress
        ``progress(fraction, message)`` after every step.
    val_fraction
        Share of the cases held out (by a seeded shuffle) for the per-epoch validation loss.
    rotate_deg
        Turn half the training patches in the axial plane by up to this many degrees
        (:func:`sample_patch`); 0 (the default) turns none.
    max_minutes
        Stop after this much wall time (the model of the last finished step is written).
    generated
        Cases made in memory (:class:`GeneratedCases`), trained on beside the folders' (and
        held out for validation by the same seeded shuffle).
    workers
        Processes that load (or generate) the cases; the cases and the model do not depend on it.
    patch_workers
        Processes that cut the training patches ahead of the step; 0: this process cuts them
        between steps; ``None`` (the default): :func:`auto_patch_workers` for the device. Step
        ``i``'s patches are drawn from a generator seeded by ``(seed, i)``, so the model does
        not depend on it either. On a GPU the patches, not the step, are what limit the pace
        without them; ``config.json["training"]["patch_wait_share"]`` says what share of the
        training time went on waiting for patches.
    kind_weights
        Weights of finding kinds (lexicon names; 1 for a kind not named) by which a
        lesion-centred patch picks the finding it is centred on (:func:`sample_patch`), e.g.
        ``{"ground-glass nodule": 2.0, "part-solid nodule": 2.0}`` for twice the patches on the
        subsolid nodules a model misses most; ``None``: every finding alike.
    include_drafts
        Also train on model drafts (:func:`training_case_folders`; left out by default, and
        counted in ``config.json["training"]["drafts_left_out"]``).
    name, version
        Identity written into the model (and every result it produces). Defaults: a new model is
        ``ctreport-model`` 1.0.0; a fine-tuned one is ``<init name>-ft`` with version
        ``<init version>+ft.<date>``.

    The model folder also gets ``MODEL_CARD.md``: the starting model (name, version, sha256),
    data folders, seed, epochs, the cases that trained it (id, source, export version, reviewer,
    findings, rejected findings) and the per-epoch losses; ``config.json["training"]`` holds the
    same as data.

    Returns
    -------
    Path
        ``out_dir``, a model folder loadable with :func:`~.registry.from_pretrained`.

    Raises
    ------
    NoTrainingCases
        When there is nothing to train on: no case folder (or only model drafts) under
        ``data_dirs`` and no ``generated`` case, or no training case that could be read (each
        case skipped is logged as a warning, with why).
    ValueError
        When a ``kind_weights`` kind or weight is refused.
    """
    from .registry import create_model, from_pretrained, save_pretrained
    from .text import build_tokenizer

    t_start = time.time()
    target_weights = _kind_weights(kind_weights)  # a bad weight is refused before loading
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = pick_device(device)
    out_dir = Path(out_dir)
    found, drafts, superseded = _find_training_cases(data_dirs, include_drafts=include_drafts)
    folders: list[Path | int] = [*found]
    folders += list(range(generated.count if generated is not None else 0))
    where = ", ".join(str(d) for d in data_dirs)
    if not folders:
        if drafts:
            raise NoTrainingCases(
                f"no case folders to train on under {where}: its {len(drafts)} case(s) are model "
                "drafts nobody reviewed (review and export them, or include the drafts)"
            )
        raise NoTrainingCases(f"no case folders under {where}")
    if drafts:
        log.warning("left out %d model draft(s) nobody reviewed", len(drafts))
    if superseded:
        log.warning(
            "skipped %d superseded copy(ies) of case(s) exported more than once under %s (e.g. "
            "%s): trained on the newest version of each",
            len(superseded),
            where,
            superseded[0],
        )
    order = rng.permutation(len(folders))
    n_val = int(round(len(folders) * val_fraction)) if len(folders) > 2 else 0
    val_f = [folders[i] for i in order[:n_val]]
    train_f = [folders[i] for i in order[n_val:]]

    init_info: dict[str, str] | None = None
    if init is not None:
        loaded = from_pretrained(init)
        cfg = dict(loaded.config)
        init_info = dict(loaded.info)
        if name is None:
            base = str(loaded.info.get("name") or "ctreport-model")
            name = base if base.endswith("-ft") else f"{base}-ft"
        if version is None:
            version = f"{loaded.info.get('version') or '1.0.0'}+ft.{time.strftime('%Y%m%d')}"
    else:
        from .registry import model_config

        cfg = model_config(architecture)
    name = name or "ctreport-model"
    version = version or "1.0.0"
    cfg["patch_zyx"] = [int(p) for p in patch_zyx]
    cases: list[_CaseData | None] = []
    sources = train_f + val_f
    make = generated.make if generated is not None else None
    args = [(f, cfg, seed + i, make) for i, f in enumerate(sources)]
    if workers > 1 and len(sources) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: a fork of a process whose torch threads are running can hang
        pool = ProcessPoolExecutor(
            max_workers=int(workers), mp_context=multiprocessing.get_context("spawn")
        )
        loaded_cases = pool.map(_load_source, *zip(*args, strict=True))
    else:
        pool = None
        loaded_cases = (_load_source(*a) for a in args)
    try:
        for i, (data, why) in enumerate(loaded_cases):
            if data is None:
                log.warning("skipping case %s", why)
            cases.append(data)
            if progress:
                progress(0.05 * (i + 1) / len(folders), f"loaded case {i + 1}/{len(folders)}")
    finally:
        if pool is not None:
            pool.shutdown()
    train_c = [c for c in cases[: len(train_f)] if c is not None]
    val_c = [c for c in cases[len(train_f) :] if c is not None]
    if not train_c:
        sources = [str(d) for d in data_dirs]
        if generated is not None:
            sources.append(f"{generated.count} generated case(s)")
        n_skipped = sum(c is None for c in cases)
        why = (
            "every case was skipped (see above)"
            if n_skipped == len(cases)
            else f"{n_skipped} of {len(cases)} case(s) were skipped (see above) and the rest are "
            "held out for validation"
        )
        raise NoTrainingCases(f"no readable training case in {', '.join(sources)}: {why}")

    if init is not None:
        net, tokenizer = loaded.net, loaded.tokenizer
        # how the starting model was made (its training, or the models it interpolates) is not
        # how this one is: config["training"]["init_model"] names the model it started from
        net.config = {k: v for k, v in net.config.items() if k not in _INIT_RECORDS}
        net.config.update(patch_zyx=cfg["patch_zyx"])
    else:
        tokenizer = build_tokenizer(s for c in train_c for t in c.targets for s in t.sentences)
        net = create_model(
            architecture,
            tokenizer=tokenizer,
            patch_zyx=cfg["patch_zyx"],
            name=name,
            version=version,
        )
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    patch = np.asarray(cfg["patch_zyx"], dtype=int)
    pad_value = -1.0
    steps_per_epoch = max(1, len(train_c) * patches_per_case // batch_size)
    total = steps_per_epoch * epochs
    warm = max(1, total // 20)
    t_train = time.time()
    budget_s = None if max_minutes is None else max(60.0, 60.0 * max_minutes - (t_train - t_start))

    def lr_at(i: int) -> float:  # linear warm-up, then cosine decay to 5 % over steps or wall time
        if i < warm:
            return (i + 1) / warm
        t = (i - warm) / max(1, total - warm)
        if budget_s is not None:
            t = max(t, (time.time() - t_train) / budget_s)
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(t, 1.0)))

    max_len = int(cfg.get("max_sentence_tokens", 64))
    history: list[dict[str, float]] = []
    step = 0
    stop = False
    source = _PatchBatches(
        train_c,
        patch,
        seed=seed,
        steps=total,
        batch_size=batch_size,
        lesion_prob=lesion_prob,
        rotate_deg=rotate_deg,
        pad_value=pad_value,
        kind_weights=target_weights,
    )
    if patch_workers is None:
        patch_workers = auto_patch_workers(dev)
    batches = _iter_batches(source, patch_workers)
    waited = 0.0  # seconds the training step waited for its patches
    try:
        for epoch in range(epochs):
            sums: dict[str, float] = {}
            for _ in range(steps_per_epoch):
                t_wait = time.perf_counter()
                picks, samples = next(batches)
                waited += time.perf_counter() - t_wait
                losses = _step_losses(
                    net, samples, [train_c[j].spacing for j in picks], tokenizer, rng, max_len, dev
                )
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                for g in opt.param_groups:
                    g["lr"] = lr * lr_at(step)
                opt.step()
                step += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if progress:
                    progress(
                        0.05 + 0.95 * step / total,
                        f"epoch {epoch + 1}/{epochs} step {step}/{total} loss {float(loss.detach()):.3f}",
                    )
                if budget_s is not None and time.time() - t_train > budget_s:
                    stop = True
                    break
            n_done = max(1, step - epoch * steps_per_epoch)
            row = {f"train_{k}": v / n_done for k, v in sums.items()}
            row["epoch"] = epoch + 1
            if val_c:
                row.update(_validate(net, val_c, patch, tokenizer, max_len, dev, seed))
            history.append(row)
            log.info("epoch %d: %s", epoch + 1, row)
            save_pretrained(
                net,
                tokenizer,
                out_dir / "checkpoints" / f"epoch_{epoch + 1:03d}",
                name=name,
                version=version,
            )
            if stop:
                break
    finally:
        batches.close()  # stops the patch workers
    net.eval()
    training = {
        "data_dirs": [str(d) for d in data_dirs],
        "generated": (
            {"cases": generated.count, **generated.about} if generated is not None else None
        ),
        "n_train_cases": len(train_c),
        "n_val_cases": len(val_c),
        "drafts_left_out": len(drafts),
        "epochs": len(history),
        "steps": step,
        "seed": seed,
        "rotate_deg": rotate_deg,
        "kind_weights": dict(kind_weights) if kind_weights else None,
        "init": str(init) if init is not None else None,
        "init_model": init_info,
        "minutes": round((time.time() - t_start) / 60.0, 1),
        "patch_workers": int(patch_workers),
        "patch_wait_share": round(waited / max(time.time() - t_train, 1e-9), 3),
        "train_cases": [c.info for c in train_c],
        "val_cases": [c.info for c in val_c],
    }
    save_pretrained(net, tokenizer, out_dir, name=name, version=version, training=training)
    (out_dir / "training_log.json").write_text(json.dumps(history, indent=1) + "\n")
    (out_dir / MODEL_CARD).write_text(
        model_card(name=name, version=version, training=training, history=history),
        encoding="utf-8",
    )
    return out_dir


#: Config records of a starting model that say how it was made, not carried into a model
#: trained from it (:func:`train` with ``init``).
_INIT_RECORDS = frozenset({"training", "interpolation"})

#: File name of the model card written into every trained model folder.
MODEL_CARD = "MODEL_CARD.md"


def _turns_text(rotate_deg: float) -> str:
    """How the training patches were turned, in words for the model card."""
    if not rotate_deg:
        return "patches not turned"
    return f"axial turns up to {rotate_deg:g} degrees"


def _generated_lines(generated: dict[str, Any] | None) -> list[str]:
    """The model card's line on the cases made in memory (:class:`GeneratedCases`), if any."""
    if not generated:
        return []
    about = ", ".join(f"{k} {v}" for k, v in generated.items() if k != "cases")
    return [f"- {generated['cases']} case(s) made in memory" + (f" ({about})" if about else "")]


def model_card(
    *, name: str, version: str, training: dict[str, Any], history: Sequence[dict[str, float]]
) -> str:
    """Markdown model card of a trained model: where it started, what trained it, its losses."""
    init = training.get("init_model")
    lines = [
        f"# {name} {version}",
        "",
        "Trained with `napari_ctreport.model.train` (`ctreport train`). Not for clinical use: check",
        "every finding and sentence.",
        "",
        f"- started from: {init['name']} {init['version']} (sha256 {init['sha256']})"
        if init
        else "- started from: random initialisation",
        f"- data folders: {', '.join(training['data_dirs']) or 'none'}",
        *_generated_lines(training.get("generated")),
        f"- seed {training['seed']}; {training['epochs']} epoch(s), {training['steps']} steps, "
        f"{training['minutes']} min; {_turns_text(training.get('rotate_deg', 0.0))}",
        f"- {training['n_train_cases']} training case(s), {training['n_val_cases']} held out for the "
        "validation loss",
        *(
            [f"- {training['drafts_left_out']} model draft(s) nobody reviewed left out"]
            if training.get("drafts_left_out")
            else []
        ),
        *(
            [
                "- lesion-centred patches weighted by kind: "
                + ", ".join(f"{k} x{w:g}" for k, w in training["kind_weights"].items())
            ]
            if training.get("kind_weights")
            else []
        ),
        "",
        "## Cases that trained it",
        "",
        "| case | source | export version | reviewer | edits | findings | rejected (negatives) |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, cases in (("", training["train_cases"]), (" (validation)", training["val_cases"])):
        for c in cases:
            ver = f"v{int(c['version']):03d}" if c.get("version") else "-"
            lines.append(
                f"| {c['case_id']}{role} | {c['source'] or '-'} | {ver} | "
                f"{c['reviewer'] or '-'} | {c['edits']} | {c['findings']} | {c['rejected']} |"
            )
    if history:
        keys = [k for k in history[-1] if k != "epoch"]
        lines += ["", "## Losses per epoch", "", "| epoch | " + " | ".join(keys) + " |"]
        lines.append("|---" * (len(keys) + 1) + "|")
        for row in history:
            vals = " | ".join(f"{row.get(k, float('nan')):.4f}" for k in keys)
            lines.append(f"| {int(row['epoch'])} | {vals} |")
    return "\n".join(lines) + "\n"


def _step_losses(net, samples, spacings, tokenizer, rng, max_len, dev) -> dict[str, torch.Tensor]:
    patch = np.asarray(samples[0]["image"].shape)
    x = torch.from_numpy(np.stack([s["image"] for s in samples]))[:, None].to(dev)
    tg = {k: v.to(dev) for k, v in build_targets(samples, patch, len(KINDS)).items()}
    out = net.encode(x)
    reg = tg["reg"]
    n_reg = reg.sum().clamp_min(1.0)
    losses = {
        "heat": focal_loss(out["heat"], tg["heat"]),
        "size": 0.5 * (torch.abs(out["size"] - tg["size"]) * reg).sum() / n_reg / 3,
        "offset": (torch.abs(out["offset"] - tg["offset"]) * reg).sum() / n_reg / 3,
        "mask": dice_bce(out["mask"], tg["mask"]),
    }
    cls, att, lm = finding_losses(net, out, samples, tokenizer, spacings, rng, max_len)
    losses.update(cls=0.5 * cls, att=0.3 * att, lm=0.5 * lm)
    return losses


def _validate(net, val_c, patch, tokenizer, max_len, dev, seed) -> dict[str, float]:
    rng = np.random.default_rng(seed + 12345)
    net.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for c in val_c:
            samples = [
                sample_patch(c, patch, rng, lesion_prob=0.7, augment=False, pad_value=-1.0)
                for _ in range(2)
            ]
            losses = _step_losses(net, samples, [c.spacing] * 2, tokenizer, rng, max_len, dev)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
    net.train()
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}


#: Config keys that may differ between two models whose weights are interpolated.
_INTERPOLATION_FREE_KEYS = frozenset(
    {"name", "version", "training", "interpolation", "score_threshold"}
)


def interpolate_models(
    *,
    base: str | Path,
    tuned: str | Path,
    alpha: float,
    out_dir: str | Path,
    name: str | None = None,
    version: str | None = None,
) -> Path:
    """Write a model whose weights are ``(1 - alpha) * base + alpha * tuned``.

    Weight-space interpolation between a model and a fine-tune of it ("WiSE-FT", Wortsman et
    al., CVPR 2022) keeps much of what the fine-tune learned while staying close to the model
    it started from, which holds up better on data unlike the fine-tuning cases.

    Parameters
    ----------
    base
        The model the fine-tune started from (a folder, or ``"default"``).
    tuned
        The fine-tuned model (same architecture and tokenizer).
    alpha
        Weight of ``tuned``, in [0, 1]: 0 gives ``base``'s weights, 1 ``tuned``'s.
    out_dir
        The new model folder; its config is ``tuned``'s with ``interpolation`` (both models'
        name, version and sha256, and ``alpha``) added.
    name, version
        Name and version of the new model (default: ``tuned``'s).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        When ``alpha`` is outside [0, 1] or the two models differ in architecture, tokenizer
        or weight shapes.
    """
    from .registry import from_pretrained, save_pretrained

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    a = from_pretrained(base)
    b = from_pretrained(tuned)
    diff = sorted(
        k
        for k in set(a.config) | set(b.config)
        if k not in _INTERPOLATION_FREE_KEYS and a.config.get(k) != b.config.get(k)
    )
    if diff:
        raise ValueError(f"{tuned}: not a fine-tune of {base} (config differs in {diff})")
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise ValueError(f"{tuned}: its tokenizer differs from {base}'s")
    sa, sb = a.net.state_dict(), b.net.state_dict()
    mixed = {}
    for k, vb in sb.items():
        va = sa[k]
        if va.shape != vb.shape:
            raise ValueError(
                f"{tuned}: weight {k} has shape {tuple(vb.shape)}, not {tuple(va.shape)}"
            )
        if vb.is_floating_point():
            mixed[k] = ((1.0 - alpha) * va.double() + alpha * vb.double()).to(vb.dtype)
        else:
            mixed[k] = vb.clone()
    b.net.load_state_dict(mixed)
    interpolation = {"alpha": float(alpha), "base": a.info, "tuned": b.info}
    return save_pretrained(
        b.net,
        b.tokenizer,
        out_dir,
        name=name or b.config.get("name"),
        version=version or b.config.get("version"),
        interpolation=interpolation,
    )
