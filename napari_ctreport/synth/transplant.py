"""Real lesions moved to other places of real lungs: an evaluation set with real lesion texture.

The synthetic lesions of :mod:`napari_ctreport.synth.generate` are smooth, drawn shapes. A model
tuned on them can miss real tumours, which are lobulated, spiculated and uneven inside. With
only a few real CTs with segmented lesions at hand, each of those lesions is cut out with its
segmentation, resized, and set into another place of a real lung: deep in the parenchyma, or
against the pleura (part of it sunk into the chest wall, as a juxtapleural nodule). The CT around
it is that background's own. The ground truth is the moved lesion plus the background's own
labelled lesions.

Test sets keep each lesion as it is (resized and mirrored only): a model evaluated on them must
not have been trained on their source lesions. Training sets (``augment=True``) also turn, flip
and stretch each lesion, so that one real tumour gives many shapes; keep their sources apart from
those of the test sets. No napari or Qt here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._version import __version__
from ..io.case import Case, new_provenance, read_case, write_case
from ..io.volume import CTVolume
from ..report.measure import finding_from_mask, tight_box
from ..report.writer import write_report

#: Name written into the provenance of every case.
TRANSPLANT_NAME = "napari-ctreport transplant"
#: Where a lesion is set: ``parenchyma`` (lung all round it) or ``pleura`` (against the wall).
PLACES: tuple[str, ...] = ("parenchyma", "pleura")
#: A lesion set in the parenchyma keeps at least this much lung (mm) beyond its radius.
PARENCHYMA_CLEARANCE_MM = 3.0
#: A lesion set against the pleura has its centre this many radii inside the lung (what lies
#: beyond the lung's edge is the wall's own tissue, which the lesion does not replace).
PLEURA_DEPTH_RADII = (0.6, 0.9)
#: A moved lesion keeps this far (mm, beyond its radius) from every lesion the background has.
KEEP_CLEAR_MM = 20.0
#: Blur (mm) of the lesion's edge as it is blended into the background.
EDGE_BLUR_MM = 0.7
#: Margin (voxels in-plane, slices) kept around a lesion when it is cut out.
CUT_MARGIN = (1, 4, 4)
#: With ``augment``, each axis of a moved lesion is stretched by a factor within 1 +- this.
AUGMENT_STRETCH = 0.15


@dataclass
class LesionSource:
    """A real lesion cut out of a case folder: its HU and mask on a box around it.

    ``kind`` and ``diameter_mm`` are the case's finding; ``name`` says where it came from.
    """

    hu: np.ndarray
    mask: np.ndarray
    spacing_zyx: tuple[float, float, float]
    kind: str
    diameter_mm: float
    name: str


def lesion_sources(case_folders: Sequence[str | os.PathLike[str]]) -> list[LesionSource]:
    """The nodules and masses of labelled case folders (e.g. ``ctreport import``), cut out.

    Parameters
    ----------
    case_folders
        Case folders with a label map; each non-rejected nodule or mass with a label region
        gives one source. Effusions are not moved (their shape belongs to their place).

    Returns
    -------
    list of LesionSource
    """
    out: list[LesionSource] = []
    for folder in case_folders:
        case = read_case(folder)
        volume = case.load_volume()
        labels = case.load_labels(volume)
        for f in case.findings:
            if f.status == "rejected" or not f.label or f.kind == "pleural effusion":
                continue
            mask = labels == f.label
            tight = tight_box(mask)
            if tight is None:
                continue
            box = tuple(
                slice(max(0, t.start - m), min(n, t.stop + m))
                for t, m, n in zip(tight, CUT_MARGIN, mask.shape, strict=True)
            )
            out.append(
                LesionSource(
                    hu=np.asarray(volume.array[box], dtype=np.float32),
                    mask=mask[box],
                    spacing_zyx=tuple(float(s) for s in volume.spacing_zyx),  # type: ignore[arg-type]
                    kind=f.kind,
                    diameter_mm=float(f.diameter_mm),
                    name=f"{case.case_id}/{f.id}",
                )
            )
    return out


def background_distances(
    *, lungs: np.ndarray, avoid: np.ndarray | None, spacing_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distances (mm) a placement needs, computed once per background.

    Parameters
    ----------
    lungs
        The background's lungs (non-zero inside).
    avoid
        Mask of its own lesions, or ``None``.
    spacing_zyx
        Voxel size (mm).

    Returns
    -------
    tuple
        ``(depth, clearance)``: each voxel's distance inside the lungs, and its distance from
        ``avoid`` (``None`` when there is nothing to avoid).
    """
    sp = np.asarray(spacing_zyx, dtype=float)
    depth = ndi.distance_transform_edt(np.asarray(lungs) > 0, sampling=sp)
    clearance = None
    if avoid is not None and np.any(avoid):
        clearance = ndi.distance_transform_edt(~np.asarray(avoid, bool), sampling=sp)
    return depth, clearance


def transplant_lesion(
    *,
    source: LesionSource,
    background: CTVolume,
    lungs: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    place: str,
    avoid: np.ndarray | None = None,
    augment: bool = False,
    depth: np.ndarray | None = None,
    clearance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Set ``source``, resized by ``scale``, into a lung of ``background``.

    Parameters
    ----------
    source
        The lesion (:func:`lesion_sources`).
    background
        The CT to set it into; only the lesion's voxels change.
    lungs
        The background's lungs (non-zero inside), e.g. from
        :func:`~napari_ctreport.report.anatomy.segment_lungs`.
    rng
        Draws the place and a left-right mirror of the lesion.
    scale
        Size factor (1: the lesion's own size).
    place
        ``"parenchyma"`` or ``"pleura"`` (:data:`PLACES`).
    avoid
        Mask of the background's own lesions; the moved one keeps :data:`KEEP_CLEAR_MM` from them.
    augment
        Also turn the lesion by a random angle in the axial plane, flip it head-to-foot at
        random and stretch each axis by up to :data:`AUGMENT_STRETCH` (for training sets made
        from few sources; off for test sets, whose draws stay as they were).
    depth, clearance
        The background's precomputed distances (mm) inside its lungs and from ``avoid``, as
        :func:`background_distances` gives them (``clearance`` ``None``: nothing to avoid);
        both are computed here when ``depth`` is not given.

    Returns
    -------
    tuple or None
        ``(hu, mask)`` on the background's grid (``float32`` HU, ``bool`` lesion), or ``None``
        when the lung has no room for it.
    """
    if place not in PLACES:
        raise ValueError(f"place must be one of {PLACES}, not {place!r}")
    sp = np.asarray(background.spacing_zyx, dtype=float)
    zoom = np.asarray(source.spacing_zyx, dtype=float) / sp * float(scale)
    if augment:
        zoom = zoom * rng.uniform(1.0 - AUGMENT_STRETCH, 1.0 + AUGMENT_STRETCH, size=3)
    hu = ndi.zoom(source.hu, zoom, order=1, mode="nearest")
    weight = ndi.zoom(source.mask.astype(np.float32), zoom, order=1, mode="nearest")
    if rng.random() < 0.5:
        hu, weight = hu[:, :, ::-1], weight[:, :, ::-1]
    if augment:
        angle = float(rng.uniform(0.0, 360.0))
        air = float(np.min(source.hu))
        hu = ndi.rotate(hu, angle, axes=(1, 2), order=1, mode="constant", cval=air)
        weight = ndi.rotate(weight, angle, axes=(1, 2), order=1, mode="constant", cval=0.0)
        if rng.random() < 0.5:
            hu, weight = hu[::-1], weight[::-1]
    mask = weight > 0.5
    if mask.sum() < 4:
        return None
    idx = np.nonzero(mask)
    radius = 0.5 * max(float(np.ptp(idx[a]) + 1) * sp[a] for a in (1, 2))
    if depth is None:
        depth, clearance = background_distances(lungs=lungs, avoid=avoid, spacing_zyx=sp)
    if place == "parenchyma":
        ok = depth > radius + PARENCHYMA_CLEARANCE_MM
    else:
        ok = (depth > PLEURA_DEPTH_RADII[0] * radius) & (depth < PLEURA_DEPTH_RADII[1] * radius)
    if clearance is not None:
        ok &= clearance > radius + KEEP_CLEAR_MM
    shape = np.array(mask.shape)
    lo_ok, hi_ok = shape // 2, np.array(background.shape) - (shape - shape // 2)
    cand = np.argwhere(ok)
    cand = cand[np.all((cand >= lo_ok) & (cand <= hi_ok), axis=1)]
    if len(cand) == 0:
        return None
    centre = cand[int(rng.integers(len(cand)))]
    lo = centre - shape // 2
    box = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(lo, shape, strict=True))
    blur = (0.3, EDGE_BLUR_MM / sp[1], EDGE_BLUR_MM / sp[2])
    w = np.clip(ndi.gaussian_filter(weight, blur), 0.0, 1.0)
    out = np.asarray(background.array, dtype=np.float32).copy()
    bg = out[box]
    # the lesion where it is, the background's own anatomy around it; denser background tissue
    # (the wall a juxtapleural lesion sinks into, a vessel crossing it) stays
    out[box] = np.where(w > 0.01, np.maximum(bg, w * hu + (1.0 - w) * bg), bg)
    full = np.zeros(background.shape, dtype=bool)
    full[box] = mask
    return out, full


def write_transplant_dataset(
    out_dir: str | os.PathLike[str],
    *,
    sources: Sequence[str | os.PathLike[str]],
    backgrounds: Sequence[str | os.PathLike[str]],
    cases: int,
    seed: int,
    scale: tuple[float, float] = (0.4, 1.0),
    pleura_fraction: float = 0.5,
    indices: Sequence[int] | None = None,
    augment: bool = False,
) -> list[Path]:
    """Write ``cases`` case folders, each one real lesion moved into a real lung.

    Parameters
    ----------
    out_dir
        Where ``case_0000`` ... go.
    sources
        Labelled case folders whose nodules and masses are moved (:func:`lesion_sources`).
    backgrounds
        CTs or case folders to move them into; a case folder's own lesions stay ground truth.
    cases, seed
        How many cases; every draw follows from ``seed`` and the case's index.
    scale
        Range of the size factor applied to the source lesion.
    pleura_fraction
        Share of the lesions set against the pleura; the rest go into the parenchyma.
    indices
        Write only these of the ``cases`` (each case depends only on ``seed`` and its index, so
        one case of a set can be made again alone).
    augment
        Turn, flip and stretch each moved lesion (:func:`transplant_lesion`); for training sets.

    Returns
    -------
    list of Path
        The case folders written (a case whose lung had no room for its lesion is skipped).
    """
    from .generate import _background, _measure_diameter, kind_by_size  # as the generator does

    srcs = lesion_sources(sources)
    if not srcs:
        raise ValueError(f"no nodule or mass with a label region in {', '.join(map(str, sources))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bgs = [str(b) for b in backgrounds]
    # each background is read, segmented and measured once; every case copies what it changes
    prepared: dict[str, tuple] = {}
    written: list[Path] = []
    for i in range(cases) if indices is None else sorted(set(indices)):
        rng = np.random.default_rng([int(seed), int(i)])
        bg_path = bgs[int(rng.integers(len(bgs)))]
        if bg_path not in prepared:
            volume, known, lungs = _background(bg_path)
            known_labels = known[0] if known is not None else np.zeros(volume.shape, np.uint16)
            known_findings = list(known[1]) if known is not None else []
            depth, clearance = background_distances(
                lungs=lungs, avoid=known_labels > 0, spacing_zyx=volume.spacing_zyx
            )
            prepared[bg_path] = (volume, lungs, known_labels, known_findings, depth, clearance)
        volume, lungs, known_labels, known_findings, depth, clearance = prepared[bg_path]
        src = srcs[int(rng.integers(len(srcs)))]
        factor = float(rng.uniform(*scale))
        place = PLACES[1] if rng.random() < pleura_fraction else PLACES[0]
        res = transplant_lesion(
            source=src,
            background=volume,
            lungs=lungs,
            rng=rng,
            scale=factor,
            place=place,
            augment=augment,
            depth=depth,
            clearance=clearance,
        )
        if res is None:
            continue
        hu, mask = res
        new_vol = CTVolume(
            array=np.clip(np.rint(hu), -1024, 3071).astype(np.int16),
            spacing_zyx=volume.spacing_zyx,
            origin_lps=volume.origin_lps,
        )
        label = int(known_labels.max()) + 1
        labels = known_labels.astype(np.uint16, copy=True)
        labels[mask] = label
        kind = kind_by_size(src.kind, _measure_diameter(mask[tight_box(mask)], new_vol))
        findings = [replace(f, id=f"F{n}") for n, f in enumerate(known_findings, start=1)]
        f = finding_from_mask(
            mask, volume=new_vol, id=f"F{len(findings) + 1}", kind=kind, lungs=lungs, label=label
        )
        f.status = "accepted"
        findings.append(f)
        case_id = f"case_{i:04d}"
        rec = Case(
            case_id=case_id,
            findings=findings,
            report=write_report(findings).to_dict(),
            provenance=new_provenance(
                source="synthetic",
                generator={
                    "name": TRANSPLANT_NAME,
                    "version": __version__,
                    "dataset_seed": int(seed),
                    "index": i,
                    "background": bg_path,
                    "lesion": src.name,
                    "scale": round(factor, 3),
                    "place": place,
                    "augmented": bool(augment),
                },
            ),
        )
        written.append(write_case(rec, out / case_id, volume=new_vol, labels=labels))
    return written
