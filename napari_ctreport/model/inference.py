"""Running the network over a whole CT: preprocessing, sliding windows, peaks, masks, attention.

Where a finding is born: :func:`detect` turns a :class:`~napari_ctreport.io.volume.CTVolume` into
:class:`Detection` s, each with its kind, score, mask on the CT grid and attention map. The
measurements and words are added later by ``report.measure`` and the report decoder.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..io.volume import CTVolume
from ..report.lexicon import KINDS
from ..report.measure import largest_component
from .blob import (
    BLOB_EXTENT_MARGIN_MM,
    BLOB_MAX_EXTENT_RADII,
    BLOB_SIGMAS_MM,
    BLOB_SOLID_HU,
    BlobMeasure,
    blob_measure,
    nodule_candidates,
    wall_bump_mask,
    wall_candidates,
)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool] | threading.Event


class Cancelled(Exception):
    """Raised between sliding windows when the caller asked to stop."""


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, then Apple MPS, then CPU; else the named device.

    Raises
    ------
    ValueError
        When a named accelerator is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but MPS is not available")
    return dev


def check_cancel(cancel: CancelCheck | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` (an Event or a callable) says so."""
    if cancel is None:
        return
    flag = cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())
    if flag:
        raise Cancelled("analysis cancelled")


# ---------------------------------------------------------------------------------- preprocessing
@dataclass
class Prepared:
    """A CT on the model grid.

    ``model index i`` along an axis sits at ``CT index crop_lo + i * step`` (``step`` = model
    spacing / CT spacing, per axis).
    """

    array: np.ndarray  # (D, H, W) float32, scaled, padded to multiples of 8
    valid_shape: tuple[int, int, int]  # part of array that holds the CT
    crop_lo: np.ndarray  # (3,) CT index of model voxel 0
    step: np.ndarray  # (3,) CT voxels per model voxel
    spacing: np.ndarray  # (3,) model spacing mm
    pad_value: float = -1.0  # input value of the padding (the clip's lowest HU, scaled)

    def model_to_ct(self, idx: np.ndarray) -> np.ndarray:
        """Model-grid (z, y, x) indices -> CT (z, y, x) indices."""
        return self.crop_lo + np.asarray(idx, dtype=float) * self.step

    def ct_to_model(self, idx: np.ndarray) -> np.ndarray:
        """CT (z, y, x) indices -> model-grid indices."""
        return (np.asarray(idx, dtype=float) - self.crop_lo) / self.step


def scale_hu(hu: np.ndarray | torch.Tensor, hu_clip: Sequence[float]):
    """Clip HU to ``hu_clip`` and scale to about [-1, 1]."""
    lo, hi = float(hu_clip[0]), float(hu_clip[1])
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    if isinstance(hu, torch.Tensor):
        return (hu.clamp(lo, hi) - mid) / half
    return (np.clip(hu, lo, hi) - mid) / half


def body_box(
    array: np.ndarray, spacing: Sequence[float], *, margin_mm: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Index box ``(lo, hi)`` (hi exclusive) of the body (HU > -500) with a margin."""
    steps = [max(1, int(round(4.0 / s))) for s in spacing]
    sub = array[:: steps[0], :: steps[1], :: steps[2]] > -500
    lo = np.zeros(3, dtype=int)
    hi = np.array(array.shape, dtype=int)
    if sub.sum() < 20:
        return lo, hi
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        prof = sub.sum(axis=other)
        thr = max(1, int(0.002 * sub.size / sub.shape[ax]))
        idx = np.nonzero(prof >= thr)[0]
        if idx.size == 0:
            continue
        m = int(math.ceil(margin_mm / spacing[ax]))
        lo[ax] = max(0, idx[0] * steps[ax] - m)
        hi[ax] = min(array.shape[ax], (idx[-1] + 1) * steps[ax] + m)
    return lo, hi


def prepare(volume: CTVolume, config: dict[str, Any], *, crop: bool = True) -> Prepared:
    """Crop ``volume`` to the body, resample to the model spacing, clip/scale HU and pad."""
    arr = volume.array
    spacing = np.asarray(volume.spacing_zyx, dtype=float)
    if crop:
        lo, hi = body_box(arr, spacing)
    else:
        lo, hi = np.zeros(3, dtype=int), np.array(arr.shape)
    sub = np.ascontiguousarray(arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    target = np.asarray(config["spacing_zyx"], dtype=float)
    in_shape = np.array(sub.shape)
    out_shape = np.maximum(1, np.round((in_shape - 1) * spacing / target).astype(int) + 1)
    t = torch.from_numpy(sub)
    t = scale_hu(t, config["hu_clip"])
    if tuple(out_shape) != tuple(in_shape):
        t = F.interpolate(
            t[None, None],
            size=tuple(int(s) for s in out_shape),
            mode="trilinear",
            align_corners=True,
        )[0, 0]
    step = np.where(out_shape > 1, (in_shape - 1) / np.maximum(out_shape - 1, 1), 1.0)
    patch = np.asarray(infer_patch(config), dtype=int)
    padded = np.maximum(patch, ((out_shape + 7) // 8) * 8)
    pad_val = float(scale_hu(np.float32(config["hu_clip"][0]), config["hu_clip"]))
    out = np.full(tuple(padded), pad_val, dtype=np.float32)
    out[: out_shape[0], : out_shape[1], : out_shape[2]] = t.numpy()
    return Prepared(
        array=out,
        valid_shape=tuple(int(s) for s in out_shape),
        crop_lo=lo.astype(float),
        step=step,
        spacing=step * spacing,
        pad_value=pad_val,
    )


def infer_patch(config: dict[str, Any]) -> list[int]:
    """Sliding-window size of a model: ``infer_patch_zyx`` if set, else the training ``patch_zyx``."""
    return [int(v) for v in (config.get("infer_patch_zyx") or config["patch_zyx"])]


# ---------------------------------------------------------------------------------- sliding window
def window_starts(length: int, patch: int, overlap: float, align: int = 8) -> list[int]:
    """Start indices of windows of size ``patch`` covering ``length`` with ``overlap``."""
    if length <= patch:
        return [0]
    step = max(align, int(patch * (1.0 - overlap)) // align * align)
    starts = list(range(0, length - patch + 1, step))
    last = (length - patch) // align * align
    if starts[-1] != last:
        starts.append(last)
    if starts[-1] + patch < length:  # length not aligned: one more flush window
        starts.append(length - patch)
    return sorted(set(starts))


def _importance(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Gaussian importance map (sigma = 1/8 of the window), as in MONAI's gaussian mode."""
    grids = []
    for n in shape:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        sigma = max(n * 0.125, 0.5)
        grids.append(torch.exp(-0.5 * (x / sigma) ** 2))
    w = grids[0][:, None, None] * grids[1][None, :, None] * grids[2][None, None, :]
    return (w / w.max()).clamp_min(1e-3)


def sliding_window_inference(
    array: np.ndarray,
    predictor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    *,
    patch: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    progress_range: tuple[float, float] = (0.0, 1.0),
) -> dict[str, np.ndarray]:
    """Run ``predictor`` over ``array`` window by window and stitch the outputs on the CPU.

    Parameters
    ----------
    array
        (D, H, W) input; each dimension at least the patch size.
    predictor
        Maps a (B, 1, *patch) tensor on ``device`` to a dict of (B, C, *patch/stride) tensors;
        the stride of each output is inferred from its shape.
    patch, overlap, batch_size
        Window size, fractional overlap between neighbours, windows per predictor call.
    progress
        ``progress(fraction, message)``, called after every batch (fractions within
        ``progress_range``, non-decreasing).
    cancel
        Checked before every batch; raises :class:`Cancelled`.

    Returns
    -------
    Name -> (C, D/stride, H/stride, W/stride) float32 array, importance-weighted average of the
    windows' predictions.
    """
    device = torch.device(device)
    shape = array.shape
    patch = tuple(int(p) for p in patch)
    starts = [window_starts(shape[a], patch[a], overlap) for a in range(3)]
    windows = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    acc: dict[str, torch.Tensor] = {}
    wsum: dict[int, torch.Tensor] = {}
    imp: dict[int, torch.Tensor] = {}
    strides: dict[str, int] = {}
    lo_p, hi_p = progress_range
    n_batches = math.ceil(len(windows) / batch_size)
    use_amp = device.type == "cuda"
    for bi in range(n_batches):
        check_cancel(cancel)
        batch = windows[bi * batch_size : (bi + 1) * batch_size]
        x = torch.stack(
            [src[z : z + patch[0], y : y + patch[1], x_ : x_ + patch[2]] for z, y, x_ in batch]
        )
        x = x[:, None].to(device, non_blocking=True)
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=use_amp):
            out = predictor(x)
        for name, t in out.items():
            t = t.float().cpu()
            s = patch[0] // t.shape[2]
            if name not in acc:
                strides[name] = s
                acc[name] = torch.zeros(
                    (t.shape[1], *(math.ceil(n / s) for n in shape)), dtype=torch.float32
                )
            if s not in wsum:
                wsum[s] = torch.zeros(tuple(math.ceil(n / s) for n in shape), dtype=torch.float32)
                imp[s] = _importance(t.shape[2:], torch.device("cpu"))
            first_of_stride = name == next(n for n in out if strides.get(n) == s)
            for j, (z, y, x_) in enumerate(batch):
                sl = (
                    slice(z // s, z // s + t.shape[2]),
                    slice(y // s, y // s + t.shape[3]),
                    slice(x_ // s, x_ // s + t.shape[4]),
                )
                acc[name][(slice(None), *sl)] += t[j] * imp[s]
                if first_of_stride:
                    wsum[s][sl] += imp[s]
        if progress is not None:
            progress(
                lo_p + (hi_p - lo_p) * (bi + 1) / n_batches, f"window batch {bi + 1}/{n_batches}"
            )
    return {name: (a / wsum[strides[name]].clamp_min(1e-8)).numpy() for name, a in acc.items()}


def shifted_grid_inference(
    array: np.ndarray,
    predictor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    *,
    shifts: Sequence[int],
    pad_value: float,
    max_outputs: Sequence[str] = (),
    combine: Sequence[str] | None = None,
    align: int = 8,
    progress: ProgressCallback | None = None,
    progress_range: tuple[float, float] = (0.0, 1.0),
    **window_kw: Any,
) -> dict[str, np.ndarray]:
    """:func:`sliding_window_inference` on ``array`` and on copies shifted along every axis.

    A small network's output depends on where the voxel grid and its windows fall on the anatomy
    (a crop or a resampling of the same CT moves them): a lesion it finds on one grid it can miss
    on another. Each shift ``s`` runs the windows once more over ``array`` moved by ``s`` voxels
    along z, y and x (padded with ``pad_value``), and its outputs are moved back and combined
    with the unshifted pass: the element-wise maximum for the names in ``max_outputs``, the mean
    for the others. Only the outputs named in ``combine`` whose stride divides every shift are
    combined (the extra passes compute no others); the rest come from the unshifted pass alone.

    Parameters
    ----------
    array, predictor
        As for :func:`sliding_window_inference`; each dimension of ``array`` a multiple of
        ``align``.
    shifts
        Shifts in voxels (positive; an empty sequence is one plain pass).
    pad_value
        Input value of the border the shift opens (the model's value for air).
    max_outputs
        Outputs combined by their maximum (a peak seen on any grid is kept).
    combine
        Outputs to combine (default: all).
    progress, progress_range
        As for :func:`sliding_window_inference`, spread over all passes.
    **window_kw
        ``patch``, ``overlap``, ``batch_size``, ``device``, ``cancel``.
    """
    shifts = [int(s) for s in shifts]
    if any(s <= 0 for s in shifts):
        raise ValueError(f"shifts must be positive voxel counts, got {shifts}")
    lo_p, hi_p = progress_range
    span = (hi_p - lo_p) / (len(shifts) + 1)
    out = sliding_window_inference(
        array, predictor, progress=progress, progress_range=(lo_p, lo_p + span), **window_kw
    )
    shape = np.array(array.shape)
    strides = {name: int(round(shape[0] / a.shape[1])) for name, a in out.items()}
    combined = [
        n
        for n, st in strides.items()
        if all(s % st == 0 for s in shifts) and (combine is None or n in combine)
    ]

    def some(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t for n, t in predictor(x).items() if n in combined}

    sums = {n: out[n].copy() for n in combined if n not in max_outputs}
    for i, s in enumerate(shifts, start=1):
        padded = np.full(tuple((shape + s + align - 1) // align * align), pad_value, np.float32)
        padded[s : s + shape[0], s : s + shape[1], s : s + shape[2]] = array
        more = sliding_window_inference(
            padded,
            some,
            progress=progress,
            progress_range=(lo_p + i * span, lo_p + (i + 1) * span),
            **window_kw,
        )
        for name in combined:
            base, o = out[name], s // strides[name]
            moved = more[name][
                :, o : o + base.shape[1], o : o + base.shape[2], o : o + base.shape[3]
            ]
            if name in sums:
                sums[name] += moved
            else:
                np.maximum(base, moved, out=base)
    for name, total in sums.items():
        out[name] = total / (1 + len(shifts))
    return out


# ---------------------------------------------------------------------------------- detections
@dataclass
class Detection:
    """One finding as the network sees it, before measurement.

    ``mask`` is boolean on the CT grid within ``mask_slices`` (CT index slices); attention is the
    finding's cross-attention weights on a token grid covering CT index box
    ``attention_box`` (lo, hi; continuous CT index coordinates of the box corners).
    ``extra["ct_mask"]`` is True when the mask was drawn on the CT itself (a nodule on the
    pleura, :func:`_wall_nodules`), not resampled from the network's: it is final and is not
    refined again.
    """

    kind: str
    kind_id: int
    score: float
    center_index: np.ndarray  # CT (z, y, x) index of the peak
    mask_slices: tuple[slice, slice, slice]
    mask: np.ndarray
    peak_feature: torch.Tensor
    attended: torch.Tensor
    attention: np.ndarray
    attention_box: tuple[np.ndarray, np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)

    def full_mask(self, shape: Sequence[int]) -> np.ndarray:
        """The mask as a boolean array of the whole CT grid ``shape``."""
        out = np.zeros(tuple(shape), dtype=bool)
        out[self.mask_slices] = self.mask
        return out


def find_peaks(
    heat: np.ndarray, *, threshold: float, max_peaks: int = 100
) -> list[tuple[int, float, tuple[int, int, int]]]:
    """Local maxima (3x3x3) of a (K, d, h, w) heatmap above ``threshold``: (kind, score, index)."""
    t = torch.from_numpy(heat)[None]
    pooled = F.max_pool3d(t, 3, stride=1, padding=1)[0].numpy()
    keep = (heat >= pooled) & (heat >= threshold)
    ks, zs, ys, xs = np.nonzero(keep)
    scores = heat[ks, zs, ys, xs]
    order = np.argsort(-scores)[:max_peaks]
    return [(int(ks[i]), float(scores[i]), (int(zs[i]), int(ys[i]), int(xs[i]))) for i in order]


def _resample_separable(a: np.ndarray, axes: Sequence[np.ndarray], *, order: int) -> np.ndarray:
    """``a`` sampled at the grid ``axes[0] x axes[1] x axes[2]`` (fractional indices per axis),
    linearly (``order=1``) or at the nearest voxel (``order=0``), zero outside ``[0, n - 1]``:
    the values of ``scipy.ndimage.map_coordinates(a, meshgrid(*axes), order=order,
    mode="constant")``, one axis at a time (an axis-aligned grid needs no 3-D coordinate array;
    several times faster on the large box of an effusion)."""
    out = np.asarray(a, dtype=np.float32)
    for ax, x in enumerate(axes):
        n = out.shape[ax]
        x = np.asarray(x, dtype=np.float64)
        shape = [1] * out.ndim
        shape[ax] = len(x)
        inside = ((x >= 0.0) & (x <= n - 1)).astype(np.float32).reshape(shape)
        xc = np.clip(x, 0.0, n - 1)
        if order == 0:
            out = np.take(out, np.minimum(np.floor(xc + 0.5).astype(int), n - 1), axis=ax)
        else:
            i0 = np.minimum(np.floor(xc).astype(int), max(n - 2, 0))
            w = (xc - i0).astype(np.float32).reshape(shape)
            lo = np.take(out, i0, axis=ax)
            hi = np.take(out, np.minimum(i0 + 1, n - 1), axis=ax)
            out = lo * (1.0 - w) + hi * w
        out = out * inside
    return out


def _component_mask_ct(
    prep: Prepared,
    prob: np.ndarray,
    comp: np.ndarray,
    comp_box: tuple[slice, slice, slice],
    ct_shape: Sequence[int],
    threshold: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Resample one component of the model-grid mask probability onto the CT grid."""
    from scipy import ndimage

    lo_m = np.array([s.start for s in comp_box], dtype=float) - 1.0
    hi_m = np.array([s.stop for s in comp_box], dtype=float)
    lo_c = np.maximum(0, np.floor(prep.model_to_ct(lo_m)).astype(int))
    hi_c = np.minimum(np.asarray(ct_shape), np.ceil(prep.model_to_ct(hi_m)).astype(int) + 1)
    if np.any(hi_c <= lo_c):
        return None
    grids = [np.arange(lo_c[a], hi_c[a], dtype=np.float32) for a in range(3)]
    # model-grid coordinates relative to the component's box (``prob`` and ``comp`` are cropped)
    axes = [(grids[a] - prep.crop_lo[a]) / prep.step[a] - comp_box[a].start for a in range(3)]
    # only this component (dilated by one model voxel) may contribute
    region = ndimage.binary_dilation(comp)
    p = np.where(region, prob, 0.0).astype(np.float32)
    m = _resample_separable(p, axes, order=1) >= threshold
    if not m.any():
        m = _resample_separable(comp.astype(np.float32), axes, order=0) > 0.5
    if not m.any():
        # a component thinner than the CT's slices falls between their centres (a small nodule
        # on 3-5 mm slices): each of its voxels marks the CT voxels within its footprint (half a
        # model voxel around it), or the one nearest to it along an axis where none is
        for v in np.argwhere(comp) + lo_m + 1.0:
            a = prep.model_to_ct(v - 0.5) - lo_c
            b = prep.model_to_ct(v + 0.5) - lo_c
            near = np.round(prep.model_to_ct(v) - lo_c).astype(int)
            i0 = np.where(np.ceil(a) <= np.floor(b), np.ceil(a), near).astype(int)
            i1 = np.where(np.ceil(a) <= np.floor(b), np.floor(b), near).astype(int) + 1
            i0, i1 = np.maximum(i0, 0), np.minimum(i1, m.shape)
            if np.all(i1 > i0):
                m[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]] = True
        if not m.any():
            return None
    m = largest_component(m)
    nz = np.nonzero(m)
    lo2 = np.array([a.min() for a in nz])
    hi2 = np.array([a.max() + 1 for a in nz])
    m = m[lo2[0] : hi2[0], lo2[1] : hi2[1], lo2[2] : hi2[2]]
    lo2 = lo2 + lo_c
    hi2 = hi2 + lo_c
    return tuple(slice(int(a), int(b)) for a, b in zip(lo2, hi2, strict=True)), m


#: Extra passes of the network over the CT moved by these many voxels (model grid) along every
#: axis (:func:`shifted_grid_inference`); a model's config may set its own ``grid_shifts``.
#: Off: measured in docs/model_history.md (session 17), a second pass added false findings on
#: real anatomy as often as it recovered a lesion.
GRID_SHIFTS: tuple[int, ...] = ()
#: Outputs combined over the passes by their maximum: a centre peak seen on any grid is a
#: candidate (then tested like any peak); the masks, sizes and offsets are averaged.
GRID_MAX_OUTPUTS = ("heat",)

#: Score factor of a heatmap peak with no mask component (``seed_score_factor`` in a model's
#: config overrides it): such a peak is reported only when its heat is at least the score
#: threshold divided by this. On the validation sets, peaks without mask support were 85-90 %
#: false positives at heat 0.1-0.3 and about half at 0.4 and above.
SEED_SCORE_FACTOR = 0.25


#: Give a nodule peak whose mask component reaches far beyond the peak's predicted size its own
#: mask around the peak (:func:`_seed_component`, as a peak without a component), not the whole
#: component: the mask head had run a nodule on into the soft tissue it abuts (a lung-base
#: nodule into the liver dome under the diaphragm), and the whole component, measured as one
#: lesion, was dropped as chest wall. ``split_oversized`` in a model's config overrides it.
SPLIT_OVERSIZED = True
#: "Far beyond": more than this many times the largest predicted size ...
OVERSIZED_FACTOR = 3.0
#: ... and more than this (mm; a nodule's component under the size of a mass is left whole).
OVERSIZED_MIN_MM = 30.0


#: Keep every effusion peak farther than the NMS radius from the peaks kept (of any kind, once
#: all peaks have been through), each with its own part of the mask component
#: (:func:`_seed_component`), not only the first peak of a component (``effusion_peaks`` in a
#: model's config overrides it). The analysis merges a side's effusion
#: detections into one finding, and splits off one that the CT shows is a ball of soft tissue
#: (``analysis.MASS_IN_EFFUSION``): a lung cancer beside its effusion.
EFFUSION_PEAKS = True
EFFUSION_KIND = KINDS.index("pleural effusion")


def _runs_on(box: tuple[slice, ...], size: np.ndarray, spacing: np.ndarray) -> bool:
    """Whether a mask component with bounding ``box`` (model grid) reaches farther than
    :data:`OVERSIZED_FACTOR` times the largest of a peak's predicted ``size`` (model voxels) and
    farther than :data:`OVERSIZED_MIN_MM`."""
    reach = max((b.stop - b.start) * sp for b, sp in zip(box, spacing, strict=True))
    return reach > max(OVERSIZED_FACTOR * float((size * spacing).max()), OVERSIZED_MIN_MM)


#: Confirm weak unsupported peaks on the CT (:func:`_ct_blob`); ``blob_check`` in a model's
#: config overrides it.
BLOB_CHECK = True
#: Kinds (indices into ``KINDS``) a CT blob can confirm: the nodules (not masses or effusions).
BLOB_KINDS = frozenset(i for i, k in enumerate(KINDS) if k.endswith("nodule"))
#: A peak confirmed on the CT needs at least this heat ...
BLOB_MIN_HEAT = 0.15
#: ... a Hessian blob strength (:class:`~.blob.BlobMeasure`) of solid tissue against aerated
#: lung ...
BLOB_MIN_STRENGTH = 150.0
#: ... or this much for a ball at a Hessian scale of :data:`BLOB_BROAD_SIGMA_MM` or more (7 mm
#: across or more): a real nodule is less dense than a phantom's (-100 to -200 HU on average for
#: the real nodule of ``lung1``) and thick slices blur it along z, so on 5 mm slices real
#: nodules of 8-16 mm measured 113-148; the isolated blobs under 150 that were no lesion
#: (phantom vessel ends and junctions) were almost all at 1.5 mm, the vessels' own scale. Only
#: for a ball with no solid tissue running on from it (the extent test, not the shell's), and
#: not for a peak of a subsolid kind (that one gets the ground-glass test first) ...
BLOB_MIN_STRENGTH_BROAD = 110.0
BLOB_BROAD_SIGMA_MM = 2.0
#: ... or this much for such a broad ball that is alone in aerated lung: no solid tissue runs on
#: from it (the extent test) *and* its shell is aerated (:data:`BLOB_MAX_SHELL_SOLID`), while
#: its solid tissue fills it (reaches at least the ball's radius, sigma * sqrt(3), from its
#: centre: not a speck in a faint haze). It is the strength of a ball of ground glass's contrast
#: (about 300 HU, the faintest lesion), so a nodule averaged with the lung around it by thick
#: slices or a coarse grid still passes. Measured on the nine evaluation sets (session 39): 4
#: lesions in real CT found more (strength 89-109: ``lung1``'s nodule twice on 1.5 mm slices; on
#: 5 mm slices of real chest CT a synthetic 12.3 mm part-solid nodule, found as its 9 mm solid
#: part, and a 5.4 mm solid one, measured 14.1 mm as ground glass) and 1 false one (a phantom's,
#: 108). Without the filling test and at every scale: 1 real nodule more (6.2 mm, at the
#: 1.5 mm scale) and 31 false ones more on the phantom sets (faint balls, mostly at 1.5 mm, whose
#: solid tissue reached 1.4-4 mm) ...
BLOB_MIN_STRENGTH_ALONE = 85.0
#: ... a roughly round shape (flattest / steepest curvature; a vessel is near 0) ...
BLOB_MIN_RATIO = 0.35
#: ... and no solid tissue connected to it farther than :data:`~.blob.BLOB_MAX_EXTENT_RADII`
#: blob radii (sigma * sqrt(3)) plus :data:`~.blob.BLOB_EXTENT_MARGIN_MM` from its centre: an
#: isolated ball, not the end of a vessel, a rib or the mediastinum ...
#: ... unless the shell half a radius beyond the ball's edge is almost all aerated lung
#: (:attr:`~.blob.BlobMeasure.shell_solid` at most this): then what the solid tissue runs on
#: through is a thin vessel touching the ball (1-3 % in unit tests). A nodule on the pleura or
#: the mediastinum (7-8 % for one just touching a flat wall, more for one set into it) is left
#: to the network.
BLOB_MAX_SHELL_SOLID = 0.05
#: A wide ball (Hessian scale :data:`BLOB_WIDE_SIGMA_MM` or more: 10 mm across or more) with a
#: clear response (strength :data:`BLOB_WIDE_MIN_STRENGTH` or more) counts as isolated with up to
#: :data:`BLOB_WIDE_MAX_SHELL` of solid tissue on its shell: real nodules of 10-15 mm have two or
#: three vessels running into them, and in thin-slice CT the solid tissue runs on through them
#: (the extent test fails) while each crosses the shell in its own spot. Measured over the
#: 6039 unsupported peaks and CT candidates of nine evaluation sets (session 34): at this scale
#: and strength, 4 real lesions had shell 0.05-0.10 and no false peak did (the nearest false
#: ones: strength 125 at shell 0.09, a phantom's vessel junction, and 135 at 0.12).
BLOB_WIDE_SIGMA_MM = 3.0
BLOB_WIDE_MIN_STRENGTH = 130.0
BLOB_WIDE_MAX_SHELL = 0.10
#: A peak the network is surer of (heat :data:`BLOB_SURE_HEAT` or more) needs less from the CT: a
#: round ball (curvature ratio :data:`BLOB_SURE_MIN_RATIO` or more; the analysis's vessel test
#: takes tubes under 0.5) with the wide test's clear response (:data:`BLOB_WIDE_MIN_STRENGTH`)
#: at any scale, and up to :data:`BLOB_SURE_MAX_SHELL` of solid tissue on its shell (the vessels
#: that run into a real nodule on thin slices). Measured over the 5,500 peaks the CT turned down
#: on the nine evaluation sets (session 37, 1.2.0): it confirms 3 real lesions lost before
#: (``lung2``'s cancer moved in real CT, twice on 5 mm slices and once on 1.5 mm slices, strength
#: 135-158) and one phantom nodule; at the broad bar (110) instead, 5 false peaks more, all at
#: phantom vessel junctions (strength 115-125).
BLOB_SURE_HEAT = 0.22
BLOB_SURE_MIN_RATIO = 0.5
BLOB_SURE_MAX_SHELL = 0.15
#: A peak within this distance (mm) of one the CT did not confirm is not checked again (the
#: heatmaps of several kinds often peak on the same spot).
BLOB_SAME_MM = 4.0

#: Confirm an unsupported nodule peak the solid test turned down as a ground-glass ball
#: (:func:`_ct_subsolid`); ``subsolid_check`` in a model's config overrides it.
SUBSOLID_CHECK = True
#: Ground glass starts here (HU): tissue above it counts for the ball's isolation (the
#: refinement's boundary of a subsolid nodule, ``report.refine.REFINE_HU``).
SUBSOLID_HU = -750.0
#: A ground-glass ball needs at least this Hessian strength (a 300 HU ball gives about 85; the
#: noise of aerated lung rarely 50 at these scales) ...
SUBSOLID_MIN_STRENGTH = 50.0
#: ... a rounder shape than a solid one (the curvature ratio of vessels blurred to ground-glass
#: attenuation reaches 0.5) ...
SUBSOLID_MIN_RATIO = 0.6
#: ... and almost only aerated lung (under :data:`SUBSOLID_HU`) on the shell half a radius
#: beyond its edge: not the partial volume of a vessel, the pleura or a fissure.
SUBSOLID_MAX_SHELL = 0.03
#: The subsolid kinds: a peak of another kind confirmed as a ground-glass ball is reported as the
#: one of these whose heat is higher at the peak, ground glass on a tie (a part-solid or
#: ground-glass peak keeps its kind).
SUBSOLID_KINDS = (KINDS.index("ground-glass nodule"), KINDS.index("part-solid nodule"))

#: Look for isolated solid nodules on the CT itself (:func:`~.blob.nodule_candidates`) where the
#: heatmap has no peak, when :func:`detect` is given the lungs; ``ct_candidates`` in a model's
#: config overrides it.
CT_CANDIDATES = True
#: A nodule found on the CT alone scores the score threshold times its blob strength over
#: :data:`BLOB_MIN_STRENGTH`, at least the threshold (so it is reported, also when it passed
#: :data:`BLOB_MIN_STRENGTH_BROAD`, and ranks by how clear it is), at most this.
CT_CANDIDATE_MAX_SCORE = 0.3
#: A candidate whose blob strength at the two scales nearest its size is under this share of
#: the lowest bar the full test sets (:data:`BLOB_MIN_STRENGTH_ALONE`) is not tested further.
CT_CANDIDATE_QUICK = 0.7
#: The kind a CT candidate is reported as: what the CT shows is a solid ball (the analysis then
#: calls it calcified when it holds calcium). On the validation sets the heatmap's strongest
#: nodule kind at the candidates' places named 2 of 5 found nodules right, this 3 of 5 (the other
#: two were part-solid).
CT_CANDIDATE_KIND = KINDS.index("solid nodule")


def _min_strength(m: BlobMeasure, *, broad: bool = True) -> float:
    """The blob strength a solid ball needs at its scale: :data:`BLOB_MIN_STRENGTH`, or with
    ``broad`` :data:`BLOB_MIN_STRENGTH_BROAD` at :data:`BLOB_BROAD_SIGMA_MM` or more."""
    if broad and m.sigma_mm >= BLOB_BROAD_SIGMA_MM:
        return BLOB_MIN_STRENGTH_BROAD
    return BLOB_MIN_STRENGTH


def _apart(m: BlobMeasure) -> bool:
    """Whether no solid tissue runs on from the ball: none connected to it farther than
    :data:`~.blob.BLOB_MAX_EXTENT_RADII` blob radii plus :data:`~.blob.BLOB_EXTENT_MARGIN_MM`."""
    reach = BLOB_MAX_EXTENT_RADII * m.sigma_mm * math.sqrt(3.0) + BLOB_EXTENT_MARGIN_MM
    return m.extent_mm <= reach


def alone_in_lung(m: BlobMeasure) -> bool:
    """Whether ``m`` is a broad ball alone in aerated lung, held to
    :data:`BLOB_MIN_STRENGTH_ALONE`: at a scale of :data:`BLOB_BROAD_SIGMA_MM` or more, apart
    (:func:`_apart`), its shell aerated (:data:`BLOB_MAX_SHELL_SOLID`) and its solid tissue
    reaching at least its radius (sigma * sqrt(3)) from its centre."""
    return (
        m.sigma_mm >= BLOB_BROAD_SIGMA_MM
        and _apart(m)
        and m.shell_solid <= BLOB_MAX_SHELL_SOLID
        and m.extent_mm >= m.sigma_mm * math.sqrt(3.0)
    )


def _ct_blob(
    volume: CTVolume, prep: Prepared, centre: np.ndarray, *, broad: bool = True, heat: float = 0.0
) -> BlobMeasure | None:
    """The isolated solid ball on the CT that confirms a heatmap peak with no mask support (see
    :class:`~.blob.BlobMeasure`), or ``None``.

    Measured on unsupported nodule-kind peaks with heat >= 0.15 (val, val_alt and two sets of
    synthetic lesions in real CT): the strength and ratio tests alone confirmed 12 missed lesions
    and 16 false peaks, 14 of them on the held-out phantom style, where contrast-dense vessels
    and the mediastinum made blobs; with the isolation test 9 missed lesions and 1 false peak.
    Letting a ball whose surrounding shell is aerated pass the isolation test though a vessel
    touches it (:data:`BLOB_MAX_SHELL_SOLID`) added one lesion in real lung and no false peak. A
    wide ball with vessels running into it passes with more of its shell solid
    (:data:`BLOB_WIDE_MAX_SHELL`), and so does a round ball at a peak whose ``heat`` (the
    network's, at the peak) reaches :data:`BLOB_SURE_HEAT`. A broad ball alone in aerated lung
    (apart, its shell aerated) and filled by its solid tissue needs only
    :data:`BLOB_MIN_STRENGTH_ALONE`."""
    # min_hu: a solid ball has solid voxels near its centre, so a peak in aerated lung or fat
    # needs no Hessian (on val this and BLOB_SAME_MM cut the Hessians per case 50 -> 31)
    m = blob_measure(
        volume.array,
        spacing_zyx=volume.spacing_zyx,
        centre_index=prep.model_to_ct(centre),
        min_hu=BLOB_SOLID_HU,
    )
    apart = _apart(m)
    isolated = apart or m.shell_solid <= BLOB_MAX_SHELL_SOLID
    bar = _min_strength(m, broad=broad and apart)
    if broad and alone_in_lung(m):
        bar = BLOB_MIN_STRENGTH_ALONE
    strong = m.strength >= bar
    wide = (
        m.sigma_mm >= BLOB_WIDE_SIGMA_MM
        and m.strength >= BLOB_WIDE_MIN_STRENGTH
        and m.shell_solid <= BLOB_WIDE_MAX_SHELL
    )
    sure = (
        heat >= BLOB_SURE_HEAT
        and m.strength >= BLOB_WIDE_MIN_STRENGTH
        and m.ratio >= BLOB_SURE_MIN_RATIO
        and m.shell_solid <= BLOB_SURE_MAX_SHELL
    )
    return m if (((strong and isolated) or wide) and m.ratio >= BLOB_MIN_RATIO) or sure else None


def _in_lungs(
    volume: CTVolume, prep: Prepared, centre: np.ndarray, lungs: np.ndarray | None
) -> bool:
    """Whether ``centre`` (model grid) lies inside the lung mask ``lungs`` (CT grid; ``False``
    without one)."""
    if lungs is None:
        return False
    at = np.clip(np.round(prep.model_to_ct(centre)).astype(int), 0, np.array(volume.shape) - 1)
    return bool(lungs[tuple(at)])


def _ct_subsolid(
    volume: CTVolume, prep: Prepared, centre: np.ndarray, lungs: np.ndarray | None
) -> BlobMeasure | None:
    """The isolated ground-glass ball in the lung that confirms a heatmap peak with no mask
    support and no solid ball (:func:`_ct_blob`), or ``None``: a blob whose surroundings are
    aerated lung (:data:`SUBSOLID_HU`, :data:`SUBSOLID_MAX_SHELL`), round
    (:data:`SUBSOLID_MIN_RATIO`) and clear (:data:`SUBSOLID_MIN_STRENGTH`), at a point inside
    the lung mask.

    Measured on unsupported nodule-kind peaks with heat >= 0.15 that the solid test turned down
    (val, val_alt and two sets of synthetic lesions in real CT, about 480 peaks): 3 missed
    subsolid nodules (a 5.3 mm and a 7.6 mm part-solid, an 8.2 mm ground-glass) and no false
    peak pass; with a shell limit of 0.05, 2 false peaks more (vessel crossings); ground-glass
    nodules touching a vessel or the pleura (shell 0.1-0.6) stay missed."""
    if not _in_lungs(volume, prep, centre, lungs):
        return None
    m = blob_measure(
        volume.array,
        spacing_zyx=volume.spacing_zyx,
        centre_index=prep.model_to_ct(centre),
        solid_hu=SUBSOLID_HU,
    )
    ok = (
        m.strength >= SUBSOLID_MIN_STRENGTH
        and m.ratio >= SUBSOLID_MIN_RATIO
        and m.shell_solid <= SUBSOLID_MAX_SHELL
    )
    return m if ok else None


#: An effusion peak inside the lung where the CT shows an isolated solid ball
#: (:func:`_effusion_ball`) is a nodule's peak; ``effusion_balls`` in a model's config overrides
#: it.
EFFUSION_BALLS = True


def _effusion_ball(
    volume: CTVolume, prep: Prepared, centre: np.ndarray, lungs: np.ndarray | None
) -> BlobMeasure | None:
    """The isolated solid ball that makes an effusion peak at ``centre`` (model grid) a nodule the
    network took for fluid, or ``None``: the point lies inside the lung mask (pleural fluid lies
    outside it) and the CT there is such a ball (:func:`_ct_blob`, the test a weak nodule peak
    passes).

    A nodule near the lung base or the pleura in a real CT can draw an effusion peak and no
    nodule peak; the effusion, a millilitre or so, was then too small to report and the nodule
    lost. On the nine evaluation sets (session 37) this found two such nodules (9.5 and 12.4 mm
    on the 3 mm grid of the lesion-free real CTs) and turned one false 99 mm "effusion" around a
    6.7 mm nodule into a nodule candidate (then dropped); no other finding changed, nor the
    findings on ``lung1`` and ``lung2`` in 14 acquisitions each."""
    return _ct_blob(volume, prep, centre) if _in_lungs(volume, prep, centre, lungs) else None


def _ct_candidates(
    volume: CTVolume,
    prep: Prepared,
    lungs: np.ndarray,
    kept: list[dict[str, Any]],
    maps: dict[str, np.ndarray],
    prob: np.ndarray,
    thr: float,
    mthr: float,
    nms_mm: float,
    cancel: CancelCheck | None,
) -> list[dict[str, Any]]:
    """Isolated solid nodules on the CT (:func:`~.blob.nodule_candidates` confirmed by
    :func:`_ct_blob`) farther than ``nms_mm`` from every kept peak but an effusion's, as entries
    of ``kept``. (An effusion peak holds no nodule's place, as in :func:`_wall_nodules`: on the
    3 mm grid of a lesion-free real CT a lung-base nodule's only peak was an effusion's 6 mm off,
    out of :func:`_effusion_ball`'s reach, and its millilitre of "effusion" was not reported.)

    On the phantom sets (val, val_alt; 45 cases) and two sets of synthetic lesions in real CT (30
    cases) this found 5 nodules the heatmap had missed (4.7-9 mm, heat there 0.06-0.10) and 2
    false ones (a phantom vessel junction and a vessel end, blob strength 151 and 153); nothing
    on the three unmodified real CTs."""
    sp_ct = np.asarray(volume.spacing_zyx, dtype=float)
    done = [prep.model_to_ct(d["centre"]) for d in kept if d["kind"] != EFFUSION_KIND]
    cells = np.array(maps["heat"].shape[1:]) - 1
    out: list[dict[str, Any]] = []
    for c_ct, radius in nodule_candidates(volume.array, spacing_zyx=sp_ct, lungs=lungs):
        check_cancel(cancel)
        if any(np.linalg.norm((c_ct - d) * sp_ct) < nms_mm for d in done):
            continue
        # a quick look at the two scales nearest the core's size first (most candidates are
        # short vessel pieces with a weak blob; the full test takes six scales)
        near = sorted(BLOB_SIGMAS_MM, key=lambda s: abs(s - radius / math.sqrt(3.0)))[:2]
        quick = blob_measure(
            volume.array,
            spacing_zyx=sp_ct,
            centre_index=c_ct,
            sigmas_mm=near,
            patch_mm=3.0 * max(near) + 4.0,
            min_hu=BLOB_SOLID_HU,
        )
        if quick.strength < CT_CANDIDATE_QUICK * BLOB_MIN_STRENGTH_ALONE:
            continue
        centre = prep.ct_to_model(c_ct)
        m = _ct_blob(volume, prep, centre)
        if m is None:
            continue
        cell = tuple(int(v) for v in np.clip(np.floor(centre / 4.0).astype(int), 0, cells))
        half = np.maximum(m.sigma_mm * math.sqrt(3.0) / prep.spacing, 1.0)
        seed = _seed_component(prob, centre, half, mthr)
        if seed is None:
            continue
        done.append(c_ct)
        score = min(CT_CANDIDATE_MAX_SCORE, thr * max(1.0, m.strength / BLOB_MIN_STRENGTH))
        out.append(
            {
                "kind": CT_CANDIDATE_KIND,
                "score": score,
                "centre": centre,
                "cell": cell,
                "comp": None,
                "seed": seed,
            }
        )
    return out


#: Look for nodules on the pleura (:func:`~.blob.wall_candidates`) when :func:`detect` is given
#: the lungs; ``wall_nodules`` in a model's config overrides it.
WALL_NODULES = True
#: A bump on the lung surface is a nodule when at least this share of its border is aerated lung
#: (it stands out into the lung; a rib's or a vessel's imprint is mostly wall) ...
WALL_MIN_LUNG_SHARE = 0.6
#: ... it is compact (a vessel entering the mediastinum is longer) ...
WALL_MAX_ELONGATION = 2.2
#: ... its core reaches at least this far (mm; specks on the pleura are not reported) ...
WALL_MIN_RADIUS_MM = 4.0
#: ... the CT shows a blob there (a ball half set into the wall scores lower than a free one:
#: 102-137 for the generator's true ones below; a real, lobulated nodule against the pleura of
#: a real 5 mm-slice chest CT 84-101, curvature ratio 0.32-0.39: session 19, pyradiomics'
#: lung1 nodule moved into two real lungs, where 100 / 0.4 had found 2 of 11; the five
#: evaluation sets and the real CTs' acquisition variants give the same findings at 80 / 0.3) ...
WALL_MIN_STRENGTH = 80.0
WALL_MIN_RATIO = 0.3
#: ... and the network's heat for a nodule or mass within two cells reaches this (it saw
#: something there, though it may have called the spot an effusion or drawn a poor mask).
WALL_MIN_HEAT = 0.15
#: ... and its mask on the CT grid holds, on some slice, a disk of at least this radius (mm): a
#: nodule is a ball, not a sheet. On pyradiomics' lung2 (5 mm slices) resampled or cropped, the
#: opening took a sliver 2 mm thick off the side of a vertebral body, reported as a 9-10 mm
#: "nodule" (in-plane inscribed radius 0.9-1.0 mm); the true nodules found this way hold 4-7 mm.
WALL_MIN_INSCRIBED_MM = 1.5
#: The bump's mask on the CT grid may span at most this many core radii plus this margin (mm);
#: beyond that the opening took off a larger structure there (a nodule over about 18 mm, which
#: the network's own mask serves better).
WALL_MAX_SPAN_RADII = 2.0
WALL_SPAN_MARGIN_MM = 6.0
#: A kept peak on a bump whose own mask component is under this share of the bump's volume (a
#: voxel or two: a 15 mm nodule on real CT got one) takes the bump's mask. A larger component
#: keeps its own: the bump's mask includes the partial-volume rim at -500 HU (a 10.6 mm nodule on
#: val: 12.8 mm from the bump, 10.3 mm from the network's mask).
WALL_MIN_OWN_MASK = 0.2
#: The kind a nodule found on the pleura is reported as (the density rules may call it
#: calcified or ground glass).
WALL_KIND = KINDS.index("solid nodule")


def heat_cell(
    heat: np.ndarray, centre: np.ndarray, *, cells: int = 2
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """The cell of the (K, d, h, w) heatmaps (4 model voxels each) nearest ``centre`` (model
    grid), and the window of ``cells`` cells on each side of it (cut at the volume's start)."""
    cell = np.clip(np.round(centre / 4.0).astype(int), 0, np.array(heat.shape[1:]) - 1)
    return cell, tuple(slice(max(int(c) - cells, 0), int(c) + cells + 1) for c in cell)


def _inscribed_mm(mask: np.ndarray, spacing_yx: Sequence[float]) -> float:
    """Radius (mm) of the largest disk inside ``mask`` on any of its slices (in-plane distance
    to the nearest voxel outside it, the box's edge counting as outside)."""
    from scipy import ndimage

    best = 0.0
    for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
        edt = ndimage.distance_transform_edt(np.pad(mask[z], 1), sampling=spacing_yx)
        best = max(best, float(edt.max()))
    return best


def _wall_nodules(
    volume: CTVolume,
    prep: Prepared,
    lungs: np.ndarray,
    kept: list[dict[str, Any]],
    maps: dict[str, np.ndarray],
    comp_voxels: Callable[[int], int],
    nms_mm: float,
    cancel: CancelCheck | None,
) -> list[dict[str, Any]]:
    """Nodules on the pleura: bumps on the lung surface (:func:`~.blob.wall_candidates`) that
    pass the tests above, with their own mask on the CT grid (the bump the opening takes off the
    wall, :func:`~.blob.wall_bump_mask`; the network's guessed mask of a small nodule on the wall
    runs into the wall). A kept nodule peak on the bump without a mask component of its own takes
    that mask; a bump no kept nodule or mass lies on becomes a new entry (returned), scored by
    the network's heat there.

    Measured on the phantom sets (val, val_alt; 45 cases), two sets of synthetic lesions in real
    CT (30 cases) and the unmodified real CTs: 5 true nodules pass (6.7-15.3 mm; four of them
    missed before: the network had called two of them an effusion and drawn a 1-voxel and a
    10.8 mm mask for the others), no false bump."""
    sp_ct = np.asarray(volume.spacing_zyx, dtype=float)
    heat = maps["heat"]
    lesion_kinds = [i for i, k in enumerate(KINDS) if k != "pleural effusion"]
    out: list[dict[str, Any]] = []
    for bump in wall_candidates(volume.array, spacing_zyx=sp_ct, lungs=lungs):
        check_cancel(cancel)
        if (
            bump.lung_share < WALL_MIN_LUNG_SHARE
            or bump.elongation > WALL_MAX_ELONGATION
            or bump.radius_mm < WALL_MIN_RADIUS_MM
        ):
            continue
        centre = prep.ct_to_model(bump.centre)
        cell, near = heat_cell(heat, centre)
        h = float(heat[(lesion_kinds, *near)].max())
        if h < WALL_MIN_HEAT:
            continue
        m = blob_measure(
            volume.array, spacing_zyx=sp_ct, centre_index=bump.centre, min_hu=BLOB_SOLID_HU
        )
        if m.strength < WALL_MIN_STRENGTH or m.ratio < WALL_MIN_RATIO:
            continue
        res = wall_bump_mask(
            volume.array, spacing_zyx=sp_ct, centre_index=bump.centre, radius_mm=bump.radius_mm
        )
        if res is None:
            continue
        slices, mask = res
        span = (np.array([s.stop - s.start for s in slices]) * sp_ct).max()
        if span > WALL_MAX_SPAN_RADII * bump.radius_mm + WALL_SPAN_MARGIN_MM:
            continue  # what came off the wall there is more than the bump (a larger structure)
        if _inscribed_mm(mask, sp_ct[1:]) < WALL_MIN_INSCRIBED_MM:
            continue  # a sliver off the wall's curve, not a ball
        lo = np.array([s.start for s in slices]) - 3.0 / sp_ct
        hi = np.array([s.stop for s in slices]) + 3.0 / sp_ct
        lesions = [
            (d, prep.model_to_ct(d["centre"]))
            for d in kept + out
            if KINDS[d["kind"]] != "pleural effusion"
        ]
        on = [d for d, c in lesions if np.all((c >= lo) & (c <= hi))]
        if any(KINDS[d["kind"]] == "mass" for d in on):
            continue  # part of a mass's surface
        if on:
            # a peak the mask head did not support (or barely: a component of a voxel or two)
            # has only a guessed mask, and the bump's is better; a peak with a mask of its own
            # keeps it (on fine grids it measured closer)
            bump_mm3 = float(mask.sum()) * float(np.prod(sp_ct))
            for d in on:
                if d.get("ct_mask") is not None:
                    continue  # measured on the CT already (a nodule an earlier bump found)
                own = 0.0 if d["seed"] is not None else comp_voxels(d["comp"])
                if own * float(np.prod(prep.spacing)) < WALL_MIN_OWN_MASK * bump_mm3:
                    d["ct_mask"] = res
            continue
        if any(np.linalg.norm((c - bump.centre) * sp_ct) < nms_mm for _, c in lesions):
            continue
        out.append(
            {
                "kind": WALL_KIND,
                "score": h,
                "centre": centre,
                "cell": tuple(int(v) for v in cell),
                "comp": None,
                "seed": None,
                "ct_mask": res,
            }
        )
    return out


def _seed_component(
    prob: np.ndarray, centre: np.ndarray, half: np.ndarray, threshold: float
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, float] | None:
    """A mask for a heatmap peak with no mask component: within the ellipsoid of the predicted
    size around the peak, the voxels above half the local mask maximum connected to it; where the
    mask head saw almost nothing there (local maximum under a fifth of ``threshold``), the
    ellipsoid itself (the analysis then refines it on the CT's attenuation).

    Returns ``(box, component, probability, threshold)`` on the model grid, as
    :func:`_component_mask_ct` takes them, or ``None`` outside the volume."""
    from scipy import ndimage

    shape = np.array(prob.shape)
    lo = np.maximum(0, np.floor(centre - half - 1).astype(int))
    hi = np.minimum(shape, np.ceil(centre + half + 2).astype(int))
    if np.any(hi <= lo):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    p = prob[box]
    grid = np.indices(p.shape, dtype=np.float32)
    r2 = sum(((grid[a] + lo[a] - centre[a]) / max(float(half[a]), 1.0)) ** 2 for a in range(3))
    ell = r2 <= 1.0
    if not ell.any():
        return None
    peak = float(p[ell].max())
    if peak < 0.2 * threshold:
        return box, ell, ell.astype(np.float32), 0.5
    comp = ell & (p >= 0.5 * peak)
    lab, _ = ndimage.label(comp)
    top = np.unravel_index(int(np.argmax(np.where(ell, p, -1.0))), p.shape)
    comp = lab == lab[top]
    return box, comp, np.where(comp, p, 0.0).astype(np.float32), 0.5 * peak


def detect(
    loaded,
    volume: CTVolume,
    *,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    batch_size: int | None = None,
    lungs: np.ndarray | None = None,
    record: dict[str, Any] | None = None,
) -> list[Detection]:
    """Find abnormalities in ``volume`` with a loaded model (:class:`~.registry.LoadedModel`).

    Findings come from the heatmap peaks (with ``lungs``, an effusion peak inside them on an
    isolated solid ball is a nodule's: :data:`EFFUSION_BALLS`); with ``lungs`` (lung labels on the
    CT grid) also from isolated solid nodules on the CT that no peak marked
    (:data:`CT_CANDIDATES`), each confirmed
    by :func:`_ct_blob` and then treated like a peak (the network's mask, attention and features
    at its place). A ``record`` dict, when given, receives what the network saw, for diagnostics:
    ``heat`` (the heatmaps, (K, d, h, w) in cells of 4 model voxels), ``prep`` (the
    :class:`Prepared` volume: the model grid) and ``peaks`` (:func:`find_peaks`' list)."""
    from scipy import ndimage

    cfg = loaded.config
    net = loaded.net
    device = torch.device(device)
    if progress:
        progress(0.0, "preparing volume")
    prep = prepare(volume, cfg)
    check_cancel(cancel)
    if batch_size is None:
        batch_size = 4 if device.type == "cuda" else 1

    def predictor(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = net.encode(x)
        return {
            "heat": torch.sigmoid(out["heat"]),
            "size": out["size"],
            "offset": out["offset"],
            "mask": torch.sigmoid(out["mask"]),
            "feat4": out["feat4"],
            "tokens": out["tokens"],
        }

    maps = shifted_grid_inference(
        prep.array,
        predictor,
        shifts=cfg.get("grid_shifts", GRID_SHIFTS),
        pad_value=prep.pad_value,
        max_outputs=GRID_MAX_OUTPUTS,
        combine=("heat", "size", "offset", "mask"),
        patch=infer_patch(cfg),
        overlap=float(cfg.get("overlap", 0.25)),
        batch_size=batch_size,
        device=device,
        progress=progress,
        cancel=cancel,
        progress_range=(0.05, 0.85),
    )
    check_cancel(cancel)
    vz, vy, vx = prep.valid_shape
    prob = maps["mask"][0]
    prob[vz:] = 0
    prob[:, vy:] = 0
    prob[:, :, vx:] = 0
    heat = maps["heat"]
    heat[:, (vz + 3) // 4 :] = 0
    heat[:, :, (vy + 3) // 4 :] = 0
    heat[:, :, :, (vx + 3) // 4 :] = 0
    thr = float(cfg.get("score_threshold", 0.3))
    mthr = float(cfg.get("mask_threshold", 0.5))
    peaks = find_peaks(heat, threshold=thr, max_peaks=200)
    if record is not None:
        record.update(heat=heat, prep=prep, peaks=peaks)
    fg = prob >= mthr
    lab, _n = ndimage.label(fg)
    objects = ndimage.find_objects(lab)
    claimed: set[int] = set()
    kept: list[dict[str, Any]] = []
    nms_mm = float(cfg.get("nms_radius_mm", 10.0))
    seed_factor = float(cfg.get("seed_score_factor", SEED_SCORE_FACTOR))
    blob_check = bool(cfg.get("blob_check", BLOB_CHECK))
    subsolid_check = bool(cfg.get("subsolid_check", SUBSOLID_CHECK))
    split = bool(cfg.get("split_oversized", SPLIT_OVERSIZED))
    fluid_peaks = bool(cfg.get("effusion_peaks", EFFUSION_PEAKS))
    fluid_balls = bool(cfg.get("effusion_balls", EFFUSION_BALLS))
    no_blob: list[np.ndarray] = []  # peaks the CT did not confirm
    later: list[tuple] = []  # effusion peaks along a claimed component (EFFUSION_PEAKS)
    for k, score, (cz, cy, cx) in peaks:
        off = maps["offset"][:, cz, cy, cx]
        centre = (np.array([cz, cy, cx], dtype=float) + np.clip(off, 0, 1)) * 4.0
        size = np.exp(np.clip(maps["size"][:, cz, cy, cx], -3, 6))
        ball = None  # the CT's ball under an effusion peak, when there is one
        if k == EFFUSION_KIND and fluid_balls:
            check_cancel(cancel)  # a Hessian for an effusion peak inside the lungs
            ball = _effusion_ball(volume, prep, centre, lungs)
            if ball is not None:
                # a nodule's peak, of the ball's size (not the fluid's the network predicted)
                k = CT_CANDIDATE_KIND
                size = np.full(3, 2.0 * math.sqrt(3.0) * ball.sigma_mm) / prep.spacing
        half = np.maximum(size / 2.0, 2.0)
        lo = np.maximum(0, np.floor(centre - half).astype(int))
        hi = np.minimum(np.array(prob.shape), np.ceil(centre + half).astype(int) + 1)
        window = lab[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        ids, counts = np.unique(window[window > 0], return_counts=True)
        near = [d for d in kept if np.linalg.norm((centre - d["centre"]) * prep.spacing) < nms_mm]
        seed = None
        run_on = None  # the component this peak's lesion ran on into (split off below)
        if ids.size == 0:
            # a peak whose mask stayed under the threshold (small or faint lesions): kept when
            # the peak is strong enough without the mask head's support (its score scaled down
            # by ``seed_score_factor``, so it ranks below supported peaks), or when the CT there
            # is an isolated solid ball (a nodule kind; the CT stands in for the mask head, so
            # the score stays the heat); its mask is grown from the peak
            if near:
                continue
            if score * seed_factor >= thr:
                score *= seed_factor
            elif not (blob_check and k in BLOB_KINDS and score >= BLOB_MIN_HEAT):
                continue
            elif any(np.linalg.norm((centre - c) * prep.spacing) < BLOB_SAME_MM for c in no_blob):
                continue  # the same spot was checked for another kind's peak
            else:
                check_cancel(cancel)  # a Hessian per peak: keep Cancel responsive
                solid = ball  # an effusion peak made a nodule's: its ball is confirmed
                if solid is None:
                    solid = _ct_blob(
                        volume, prep, centre, broad=k not in SUBSOLID_KINDS, heat=float(score)
                    )
                subsolid = False
                if solid is None or solid.strength < BLOB_MIN_STRENGTH:
                    # a ball only the broad bar let through may be a ground-glass one with a
                    # small solid part: measured as solid it would be a speck
                    subsolid = subsolid_check and bool(_ct_subsolid(volume, prep, centre, lungs))
                if solid is None and not subsolid:
                    no_blob.append(centre)
                    continue
                if subsolid:
                    # a subsolid ball: measured as one (a solid kind's -500 HU boundary would
                    # miss it), of the subsolid kind the network's heat favours there
                    if k not in SUBSOLID_KINDS:
                        k = max(SUBSOLID_KINDS, key=lambda i: float(heat[i, cz, cy, cx]))
        else:
            cid = int(
                lab[tuple(np.clip(np.round(centre).astype(int), 0, np.array(prob.shape) - 1))]
            )
            comp_id = cid if cid > 0 else int(ids[np.argmax(counts)])
            if comp_id in claimed:
                if fluid_peaks and k == EFFUSION_KIND and not near:
                    later.append((score, centre, half, (cz, cy, cx)))
                continue
            if split and k in BLOB_KINDS and _runs_on(objects[comp_id - 1], size, prep.spacing):
                # the peak's own lesion within a component that ran on beyond it (the component
                # stays claimed: a weaker peak in it is the same run-on)
                if near:
                    continue
                run_on = comp_id
        if ids.size == 0 or run_on is not None:
            seed = _seed_component(prob, centre, half, mthr)
            if seed is None:
                continue
            comp_id = -1 - len(kept)
            if run_on is not None:
                claimed.add(run_on)
        if any(d["kind"] != k for d in near):
            # a weaker peak of another kind on the same spot
            continue
        claimed.add(comp_id)
        kept.append(
            {
                "kind": k,
                "score": score,
                "centre": centre,
                "cell": (cz, cy, cx),
                "comp": comp_id,
                "seed": seed,
            }
        )
        if len(kept) >= int(cfg.get("max_findings", 20)):
            break
    for score, centre, half, cell in later:
        # a further effusion peak along a claimed component, farther than the NMS radius from
        # every peak kept (of any kind), gets its own part of it: a mass beside the fluid that
        # the network also took for fluid is then told apart on the CT by the analysis
        if len(kept) >= int(cfg.get("max_findings", 20)):
            break
        if any(np.linalg.norm((centre - d["centre"]) * prep.spacing) < nms_mm for d in kept):
            continue
        seed = _seed_component(prob, centre, half, mthr)
        if seed is not None:
            kept.append(
                {
                    "kind": EFFUSION_KIND,
                    "score": score,
                    "centre": centre,
                    "cell": cell,
                    "comp": -1 - len(kept),
                    "seed": seed,
                }
            )
    if lungs is not None and bool(cfg.get("ct_candidates", CT_CANDIDATES)):
        kept += _ct_candidates(volume, prep, lungs, kept, maps, prob, thr, mthr, nms_mm, cancel)
        kept = kept[: int(cfg.get("max_findings", 20))]
    if lungs is not None and bool(cfg.get("wall_nodules", WALL_NODULES)):
        kept += _wall_nodules(
            volume,
            prep,
            lungs,
            kept,
            maps,
            lambda cid: int((lab[objects[cid - 1]] == cid).sum()),
            nms_mm,
            cancel,
        )
        kept = kept[: int(cfg.get("max_findings", 20))]
    if progress:
        progress(0.9, f"{len(kept)} candidate findings")
    detections: list[Detection] = []
    tokens = torch.from_numpy(maps["tokens"])  # (C, td, th, tw)
    feat4 = torch.from_numpy(maps["feat4"])
    win = np.asarray(cfg.get("attention_window_tokens", [6, 12, 12]), dtype=int)
    for d in kept:
        check_cancel(cancel)
        if d.get("ct_mask") is not None:
            res = d["ct_mask"]
        elif d["seed"] is not None:
            box, comp, pbox, sthr = d["seed"]
            res = _component_mask_ct(prep, pbox, comp, box, volume.shape, sthr)
        else:
            box = objects[d["comp"] - 1]
            comp, pbox, sthr = lab[box] == d["comp"], prob[box], mthr
            res = _component_mask_ct(prep, pbox, comp, box, volume.shape, sthr)
        if res is None:
            continue
        slices, mask = res
        tcentre = d["centre"] / 8.0
        tshape = np.array(tokens.shape[1:])
        t_lo = np.clip(np.round(tcentre - win / 2.0).astype(int), 0, np.maximum(tshape - win, 0))
        t_hi = np.minimum(t_lo + win, tshape)
        tok = tokens[:, t_lo[0] : t_hi[0], t_lo[1] : t_hi[1], t_lo[2] : t_hi[2]]
        tz, ty, tx = tok.shape[1:]
        grid = np.stack(
            np.meshgrid(*(np.arange(t_lo[a], t_hi[a]) for a in range(3)), indexing="ij"), -1
        )
        rel = ((grid * 8.0 + 3.5) - d["centre"]) * prep.spacing
        peak = feat4[:, d["cell"][0], d["cell"][1], d["cell"][2]]
        with torch.no_grad():
            p = next(net.parameters())
            attended, weights, _ = net.attend(
                peak[None].to(p.device, p.dtype),
                torch.tensor([d["kind"]], device=p.device),
                tok.flatten(1).T[None].to(p.device, p.dtype),
                torch.from_numpy(rel.reshape(1, -1, 3)).to(p.device, p.dtype),
            )
        att = weights[0].float().cpu().numpy().reshape(tz, ty, tx)
        box_lo = prep.model_to_ct(t_lo * 8.0 - 0.5)
        box_hi = prep.model_to_ct(t_hi * 8.0 - 0.5)
        detections.append(
            Detection(
                kind=KINDS[d["kind"]],
                kind_id=d["kind"],
                score=float(d["score"]),
                center_index=prep.model_to_ct(d["centre"]),
                mask_slices=slices,
                mask=mask,
                peak_feature=peak.float().cpu(),
                attended=attended[0].float().cpu(),
                attention=att,
                attention_box=(box_lo, box_hi),
                extra={"ct_mask": True} if d.get("ct_mask") is not None else {},
            )
        )
    if progress:
        progress(0.95, f"{len(detections)} findings")
    return detections


def _interp_matrix(idx: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """Linear-interpolation weights (len(idx), n) from ``n`` cells spanning [lo, hi) to ``idx``."""
    u = (idx - lo) / max(hi - lo, 1e-9) * n - 0.5  # cell k has its centre at u = k
    u = np.clip(u, 0.0, n - 1.0)
    k0 = np.floor(u).astype(int)
    k1 = np.minimum(k0 + 1, n - 1)
    w1 = u - k0
    m = np.zeros((idx.size, n), dtype=np.float32)
    m[np.arange(idx.size), k0] += 1.0 - w1
    m[np.arange(idx.size), k1] += w1
    return m


def attention_on_grid(
    att: np.ndarray, box: tuple[np.ndarray, np.ndarray], shape: Sequence[int]
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Place a token-grid attention map (scaled to max 1) on the CT grid.

    ``box`` = (lo, hi): continuous CT index coordinates of the outer corners of the token grid.
    Returns the CT index slices (clipped to ``shape``) and the trilinearly interpolated values.
    """
    lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
    lo_i = np.maximum(0, np.ceil(lo - 0.5).astype(int))
    hi_i = np.minimum(np.asarray(shape), np.floor(hi - 0.5).astype(int) + 1)
    if np.any(hi_i <= lo_i):
        return None
    a = att.astype(np.float32)
    a = a / max(float(a.max()), 1e-12)
    mats = [
        _interp_matrix(np.arange(lo_i[k], hi_i[k], dtype=float), lo[k], hi[k], a.shape[k])
        for k in range(3)
    ]
    out = np.einsum("ia,abc->ibc", mats[0], a)
    out = np.einsum("jb,ibc->ijc", mats[1], out)
    out = np.einsum("kc,ijc->ijk", mats[2], out)
    return tuple(slice(int(a_), int(b_)) for a_, b_ in zip(lo_i, hi_i, strict=True)), out


# ---------------------------------------------------------------------------------- report decoder
def decoder_memory(
    loaded, detections: Sequence[Detection], findings: Sequence[Any]
) -> torch.Tensor:
    """The report decoder's cross-attention memory for each (detection, finding) pair."""
    from ..report.lexicon import SIDES, ZONES
    from .network import size_bin

    net = loaded.net
    p = next(net.parameters())
    att = torch.stack([d.attended for d in detections]).to(p.device, p.dtype)
    peak = torch.stack([d.peak_feature for d in detections]).to(p.device, p.dtype)
    kinds = torch.tensor([KINDS.index(f.kind) for f in findings], device=p.device)
    sides = torch.tensor([SIDES.index(f.side) for f in findings], device=p.device)
    zones = torch.tensor([ZONES.index(f.zone) for f in findings], device=p.device)
    bins = torch.tensor([size_bin(f.diameter_mm) for f in findings], device=p.device)
    return net.memory(att, peak, kinds, sides, zones, bins)


def greedy_decode(
    loaded,
    memory: torch.Tensor,
    *,
    logits_processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_len: int | None = None,
    violations: list[bool] | None = None,
    cancel: CancelCheck | None = None,
) -> list[list[str]]:
    """Greedy decoding of one sentence per memory row; returns word tokens (without BOS/EOS).
    ``cancel`` is checked before each token step (:func:`check_cancel`).

    With ``violations`` (a list), it receives one flag per row: True where the decoder's own
    first choice was forbidden by ``logits_processor`` at some step (the sentence then says less
    than the decoder meant, and callers fall back to the writer's sentence).
    """
    net, tok = loaded.net, loaded.tokenizer
    max_len = int(max_len or loaded.config.get("max_sentence_tokens", 64))
    n = memory.shape[0]
    ids = torch.full((n, 1), tok.bos_token_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(n, dtype=torch.bool, device=memory.device)
    violated = torch.zeros(n, dtype=torch.bool, device=memory.device)
    with torch.no_grad():
        for _ in range(max_len - 1):
            check_cancel(cancel)
            logits = (
                net.decoder(
                    input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=memory
                )
                .logits[:, -1]
                .float()
            )
            if logits_processor is not None:
                wanted = logits.argmax(-1)
                logits = logits_processor(ids, logits)
                hard = getattr(logits_processor, "hard_violation", None)
                if hard is not None:
                    blocked = hard(wanted)
                else:
                    blocked = torch.isinf(logits.gather(1, wanted[:, None])[:, 0])
                violated |= blocked & ~done
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == tok.eos_token_id
            if bool(done.all()):
                break
    out = []
    for row in ids[:, 1:].tolist():
        words_ = []
        for i in row:
            if i in (tok.eos_token_id, tok.pad_token_id):
                break
            words_.append(tok.convert_ids_to_tokens(i))
        out.append(words_)
    if violations is not None:
        violations[:] = [bool(v) for v in violated.tolist()]
    return out


def generate_sentences(
    loaded,
    detections: Sequence[Detection],
    findings: Sequence[Any],
    *,
    cancel: CancelCheck | None = None,
) -> list[tuple[str, bool]]:
    """One sentence per finding from the report decoder, terminology-constrained and grounded;
    ``cancel`` is checked at each decoding step.

    Returns ``(sentence, from_decoder)`` pairs: a decoded sentence that fails the grounding check
    (:func:`~napari_ctreport.report.parse.consistency_details` against its own finding) is
    replaced by the writer's grounded sentence, with ``from_decoder=False``.
    """
    import logging

    from ..report.parse import consistency_details
    from ..report.writer import describe_finding
    from .text import TermConstraint, constraints_for, fill

    if not detections:
        return []
    cons = [constraints_for(f) for f in findings]
    proc = TermConstraint(loaded.tokenizer, [c[0] for c in cons], [c[1] for c in cons])
    memory = decoder_memory(loaded, detections, findings)
    violated: list[bool] = []
    decoded = greedy_decode(
        loaded, memory, logits_processor=proc, violations=violated, cancel=cancel
    )
    out: list[tuple[str, bool]] = []
    for toks, f, bad, (_, slots) in zip(decoded, findings, violated, cons, strict=True):
        text = fill(toks, f) if toks and not bad else None
        ok = False
        if (
            text
            and ("<size>" in slots) == ("<size>" in toks)
            and text.endswith(".")
            and text.count("(") == text.count(")")
        ):
            det = consistency_details(text, [f])
            ok = det["n_checked"] >= 1 and det["consistency"] == 1.0 and f.id in det["covered"]
        if not ok:
            logging.getLogger(__name__).info(
                "decoder sentence for %s failed the grounding check (%r); using the writer's",
                f.id,
                text,
            )
            out.append((describe_finding(f), False))
        else:
            out.append((text, True))
    return out
