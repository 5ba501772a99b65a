"""Synthetic cases: phantom or real CT + lesions + ground-truth findings + reference report.

Every finding is measured from its mask by the product's own code
(:func:`napari_ctreport.report.measure.finding_from_mask`), located by
:func:`napari_ctreport.report.anatomy.locate` and described by
:func:`napari_ctreport.report.writer.write_report`, so ground truth and model output share one
measurement and one vocabulary. A case is deterministic for its seed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._version import __version__
from ..io.case import Case, new_provenance, write_case
from ..io.volume import CTVolume
from ..report.anatomy import segment_lungs
from ..report.findings import Finding
from ..report.guidelines import MASS_THRESHOLD_MM, over_mass_size
from ..report.measure import axial_diameters, finding_from_mask, touches_volume_edge
from ..report.writer import Report, write_report
from .lesions import KIND_WEIGHTS, Lesion, composite, effusion_mask, make_lesion, nodule_diameter
from .phantom import NOISE_PIXEL_MM, STYLES, Phantom, build_phantom, scanner

#: Name written into case provenance.
GENERATOR_NAME = "napari-ctreport synth"

#: On-disk orientations cases are written in (``LPI`` is a feet-first acquisition).
ORIENTATIONS: tuple[str, ...] = ("LPS", "RAS", "LPI")


class BackgroundError(ValueError):
    """A real CT that lesions cannot be inserted into (the message names it)."""


@dataclass
class SynthCase:
    """One synthetic case: image, label map (region ``i`` = ``findings[i-1].label``), ground truth."""

    volume: CTVolume
    labels: np.ndarray
    findings: list[Finding]
    report: Report
    meta: dict[str, Any] = field(default_factory=dict)

    def to_case(self, case_id: str) -> Case:
        """The case-folder record of this case (provenance ``synthetic``)."""
        gen = {
            "name": GENERATOR_NAME,
            "version": __version__,
            **{k: v for k, v in self.meta.items() if k in ("seed", "style", "background")},
        }
        return Case(
            case_id=case_id,
            findings=list(self.findings),
            report=self.report.to_dict(),
            provenance=new_provenance(source="synthetic", generator=gen),
        )


def _plan(rng: np.random.Generator, *, allow_effusion: bool = True) -> list[str]:
    """Kinds of the lesions of one case: 0-4 findings, about 12 % of cases normal."""
    n = int(rng.choice([0, 1, 2, 3, 4], p=[0.12, 0.36, 0.28, 0.16, 0.08]))
    kinds = list(KIND_WEIGHTS)
    p = np.array([KIND_WEIGHTS[k] for k in kinds])
    if not allow_effusion:
        p[kinds.index("pleural effusion")] = 0
    p /= p.sum()
    out: list[str] = []
    for _ in range(n):
        k = str(rng.choice(kinds, p=p))
        if k == "pleural effusion" and out.count(k) >= 2:
            continue
        if k == "mass" and "mass" in out:
            k = "solid nodule"
        out.append(k)
    # effusions last: they take lung space from the nodules' candidate positions
    return sorted(out, key=lambda k: k == "pleural effusion")


#: A mass set against the pleura (``wall_masses``) has its centre this many radii deep in the
#: lung: the lung's edge cuts a cap off it, as a lung cancer grows against the chest wall.
WALL_DEPTH = (0.6, 0.9)
#: A case with a mass against the pleura and no effusion gets one on the mass's side with this
#: probability (a lung cancer and its malignant effusion).
WALL_MASS_EFFUSION = 0.5


#: A lesion is placed in aerated lung: the median attenuation (HU) of its spot before it is drawn
#: must be under this. The lung label alone also holds the large hilar vessels the phantom draws
#: inside the lungs (a nodule once went wholly inside one, where no reader could see it).
PLACE_MAX_HU = -500.0
#: An effusion is not placed where it would wrap a lesion already placed: more than this share of
#: the 1-3 mm shell around the lesion would be fluid (a lung nodule then floats in the effusion).
EFFUSION_MAX_WRAP = 0.5


def _place_nodule(
    rng: np.random.Generator,
    kind: str,
    *,
    lungs: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    tries: int = 40,
    lung_index: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    hu: np.ndarray | None = None,
) -> Lesion | None:
    """Find a spot inside lung parenchyma, clear of other lesions, for a lesion of ``kind``.

    ``lung_index``: ``np.flatnonzero(lungs)`` if the caller has it (it is the same every call).
    ``depth``: the depth (mm) of each of those voxels in the lung; given, the lesion is set
    against the lung's edge (its centre :data:`WALL_DEPTH` radii deep), cut where the lung ends.
    ``hu``: the image so far; given, a spot must be aerated there (:data:`PLACE_MAX_HU`).
    """
    idx = np.flatnonzero(lungs.ravel()) if lung_index is None else lung_index
    if len(idx) == 0:
        return None
    min_mm = max(2.0 * max(spacing[1], spacing[2]), spacing[0])
    diameter = nodule_diameter(rng, kind, min_mm)
    need = 0.85 if kind == "mass" else 0.97
    where = idx
    for attempt in range(tries):
        if attempt and attempt % 10 == 0 and kind != "mass":
            diameter = max(diameter * 0.75, min_mm)
        if attempt and attempt % 10 == 0 and kind == "mass":
            diameter = max(diameter * 0.85, 34.0)
        if depth is not None and attempt % 10 == 0:
            r = diameter / 2.0
            where = idx[(depth >= WALL_DEPTH[0] * r) & (depth <= WALL_DEPTH[1] * r)]
            if len(where) == 0:
                return None
        c = np.array(np.unravel_index(int(rng.choice(where)), lungs.shape), dtype=float)
        c += rng.uniform(-0.5, 0.5, 3)
        les = make_lesion(
            rng, kind, center_idx=c, diameter_mm=diameter, spacing=spacing, shape=lungs.shape
        )
        m = les.mask
        n = int(m.sum())
        if n == 0:
            continue
        if les.core is not None and not les.core.any():
            continue
        inside = lungs[les.box][m] > 0
        if inside.mean() < need:
            continue
        if (labels[les.box][m] > 0).any():
            continue
        if touches_volume_edge(m, les.box, lungs.shape):
            continue
        if hu is not None and float(np.median(hu[les.box][m])) > PLACE_MAX_HU:
            continue  # a vessel or other soft tissue inside the lung label
        # keep the region to lung (a mass abutting the mediastinum stops at it)
        les.mask = m & (lungs[les.box] > 0)
        if les.occupancy is not None:  # nor does its partial volume reach past the lung
            les.occupancy = np.where(lungs[les.box] > 0, les.occupancy, 0.0).astype(np.float32)
        if les.core is not None:
            les.core &= les.mask
        return les
    return None


def _place_effusion(
    rng: np.random.Generator,
    *,
    lungs: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    side: int,
) -> Lesion | None:
    objs = ndi.find_objects(lungs, max_label=side)
    side_box = objs[side - 1] if len(objs) >= side else None
    if side_box is None:
        return None
    # the effusion of a side lies in that lung's box; effusion_mask on the box is the same mask
    space = (lungs[side_box] == side) & (labels[side_box] == 0)
    if not space.any():
        return None
    m = effusion_mask(rng, space, spacing=spacing)
    if int(m.sum()) < 20:
        return None
    zz, yy, xx = np.nonzero(m)
    sub = (
        slice(zz.min(), zz.max() + 1),
        slice(yy.min(), yy.max() + 1),
        slice(xx.min(), xx.max() + 1),
    )
    mb = m[sub]
    box = tuple(
        slice(b.start + s.start, b.start + s.stop) for b, s in zip(side_box, sub, strict=True)
    )
    if touches_volume_edge(mb, box, lungs.shape):
        return None  # cut by the field of view or the scan range
    if _wraps_lesion(mb, box, labels, spacing):
        return None
    hu = np.full(mb.shape, rng.uniform(4, 18), dtype=np.float32)
    hu += rng.normal(0, 3, mb.shape).astype(np.float32)
    return Lesion(kind="pleural effusion", box=box, mask=mb, hu=hu, blend="set")


def _wraps_lesion(
    mask: np.ndarray, box: tuple[slice, ...], labels: np.ndarray, spacing: Sequence[float]
) -> bool:
    """Whether the effusion ``mask`` (on ``box``) would wrap a nodule of ``labels`` already
    placed: more than :data:`EFFUSION_MAX_WRAP` of the 1-3 mm shell around it is fluid. Masses
    (over :data:`MASS_MIN_MM` across) are not asked: a cancer against the pleura has its effusion
    beside it (``wall_masses``)."""
    lab = labels[box]
    sp = np.asarray(spacing, dtype=float)
    for i, sub in enumerate(ndi.find_objects(lab), start=1):
        if sub is None:
            continue
        if max((s.stop - s.start) * d for s, d in zip(sub, sp, strict=True)) > MASS_MIN_MM:
            continue
        # the box grown by the shell's 3 mm (4 voxels fell short of it on sub-millimetre pixels)
        sub = tuple(
            slice(max(0, s.start - pad), min(n, s.stop + pad))
            for s, n, pad in zip(sub, lab.shape, np.ceil(3.0 / sp).astype(int) + 1, strict=True)
        )
        dist = ndi.distance_transform_edt(lab[sub] != i, sampling=spacing)
        shell = (dist > 1.0) & (dist <= 3.0)
        if shell.any() and float(mask[sub][shell].mean()) > EFFUSION_MAX_WRAP:
            return True
    return False


def _add_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    *,
    lungs: np.ndarray,
    spacing: tuple[float, float, float],
    kinds: Sequence[str],
    known: np.ndarray | None = None,
    wall_masses: float = 0.0,
) -> tuple[np.ndarray, list[Lesion]]:
    """Place and composite ``kinds`` into ``hu``; returns the label map and the lesions placed.

    ``known``: a label map of lesions already in ``hu`` (regions ``1..n``); the new lesions keep
    clear of them and are numbered from ``n + 1``. ``wall_masses``: the probability that a mass
    is set against the pleura (:data:`WALL_DEPTH`); an effusion then goes to its side, and one is
    added there with probability :data:`WALL_MASS_EFFUSION` if the case has none (0: the draws of
    earlier versions, case for case)."""
    if known is None:
        labels = np.zeros(hu.shape, dtype=np.uint8)
    else:  # room for the known regions and the lesions to insert (a case numbers them 1..n)
        small = int(known.max(initial=0)) + len(kinds) <= np.iinfo(np.uint8).max
        labels = known.astype(np.uint8 if small else np.uint16)
    first = int(labels.max())
    lung_index = np.flatnonzero(lungs.ravel())
    placed: list[Lesion] = []
    sides_used: set[int] = set()
    wall_side = 0  # the side of a mass set against the pleura
    # an effusion for such a mass, if the case has none (drawn only with wall_masses)
    extra = (
        wall_masses > 0
        and "mass" in kinds
        and "pleural effusion" not in kinds
        and rng.random() < WALL_MASS_EFFUSION
    )

    def add(les: Lesion | None) -> None:
        if les is None:
            return
        placed.append(les)
        region = labels[les.box]
        region[les.mask] = first + len(placed)
        composite(hu, les)

    def effusion(side: int) -> Lesion | None:
        les = _place_effusion(rng, lungs=lungs, labels=labels, spacing=spacing, side=side)
        if les is not None:
            sides_used.add(side)
        return les

    for kind in kinds:
        if kind == "pleural effusion":
            free = [s for s in (1, 2) if s not in sides_used]
            if wall_masses > 0 and wall_side in free:
                add(effusion(wall_side))  # beside the mass against the pleura
            elif free:
                add(effusion(int(rng.choice(free))))
            continue
        depth = None
        if kind == "mass" and wall_masses > 0 and rng.random() < wall_masses:
            depth = ndi.distance_transform_edt(lungs > 0, sampling=spacing).ravel()[lung_index]
        les = _place_nodule(
            rng,
            kind,
            lungs=lungs,
            labels=labels,
            spacing=spacing,
            lung_index=lung_index,
            depth=depth,
            hu=hu,
        )
        if les is not None and depth is not None:
            centre = np.argwhere(les.mask).mean(0).round().astype(int)
            at = tuple(int(b.start + c) for b, c in zip(les.box, centre, strict=True))
            wall_side = int(lungs[at]) or wall_side
        add(les)
    if extra and wall_side and wall_side not in sides_used:
        add(effusion(wall_side))
    return labels, placed


def _findings(
    volume: CTVolume,
    labels: np.ndarray,
    lesions: Sequence[Lesion],
    *,
    lungs: np.ndarray,
    known: Sequence[Finding] = (),
    first: int = 0,
) -> list[Finding]:
    """The findings of ``known`` (renumbered ``F1``...) followed by those of ``lesions``, whose
    regions in ``labels`` are numbered from ``first + 1``."""
    out: list[Finding] = [replace(f, id=f"F{n}") for n, f in enumerate(known, start=1)]
    objs = ndi.find_objects(labels)
    for i, les in enumerate(lesions, start=first + 1):
        attrs = dict(les.attributes)
        if les.core is not None and les.core.any():
            sub = _measure_diameter(les.core, volume)
            attrs["solid_diameter_mm"] = round(sub, 1)
        if i > len(objs) or objs[i - 1] is None:
            continue
        mask = labels == i
        kind = les.kind
        if kind != "pleural effusion":
            kind = kind_by_size(kind, _measure_diameter(mask[objs[i - 1]], volume))
        out.append(
            finding_from_mask(
                mask,
                volume=volume,
                id=f"F{len(out) + 1}",
                kind=kind,
                lungs=lungs,
                score=1.0,
                label=i,
                attributes=attrs,
                status="accepted",
            )
        )
    return out


#: Longest axial diameter (mm), as the report writes it, above which a lung lesion is a mass, at
#: or below it a nodule (the report's own threshold and reading, so ground truth and analysis
#: name a lesion by the same size: :func:`napari_ctreport.analysis.name_by_size`).
MASS_MIN_MM = MASS_THRESHOLD_MM


def kind_by_size(kind: str, diameter_mm: float) -> str:
    """``kind`` as the measured size makes it: a nodule over :data:`MASS_MIN_MM` as written
    (:func:`~napari_ctreport.report.guidelines.over_mass_size`: 30.3 mm is "30 mm", a nodule)
    is a mass, a "mass" not over it a solid nodule (effusions are not passed here)."""
    over = over_mass_size(diameter_mm)
    if kind == "mass" and not over:
        return "solid nodule"
    if kind != "mass" and over:
        return "mass"
    return kind


def _measure_diameter(mask: np.ndarray, volume: CTVolume) -> float:
    """Longest axial diameter (mm) of ``mask``, which may be a crop of the volume's grid
    (the diameter does not depend on where the mask lies)."""
    return float(axial_diameters(mask, spacing_zyx=volume.spacing_zyx)[0])


def _volume_meta(rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    return {
        "source": "synthetic",
        "modality": "CT",
        "series_description": "Synthetic chest CT",
        "windows": [[-600.0, 1500.0], [50.0, 350.0]],
        **extra,
    }


def _noise_corr_px(noise_corr: float, ph: Phantom) -> float:
    """Noise correlation length in pixels of the phantom's grid.

    ``noise_corr`` is drawn in pixels of :data:`~.phantom.NOISE_PIXEL_MM`; a clinical grid keeps
    the grain's size in mm (finer pixels, more pixels per grain). A fitted grid (``shape``
    alone) keeps it in pixels, as it always has.
    """
    if ph.grid is None or ph.grid.fitted:
        return float(noise_corr)
    return float(noise_corr) * NOISE_PIXEL_MM / min(ph.spacing_zyx[1], ph.spacing_zyx[2])


def generate_case(
    *,
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
    style: str = "default",
    background: CTVolume | None = None,
    known: tuple[np.ndarray, Sequence[Finding]] | None = None,
    wall_masses: float = 0.0,
    background_lungs: np.ndarray | None = None,
) -> SynthCase:
    """Generate one synthetic chest CT case with lesions, masks, findings and a reference report.

    Parameters
    ----------
    seed
        Everything (anatomy, grid, lesions, noise, report phrasing) follows from it: the same
        seed gives byte-identical arrays and findings.
    shape
        ``None`` (default) for a clinical grid: in-plane spacing drawn in 0.6-1.0 mm on a
        512 x 512 matrix that holds the body, slices of 1-5 mm, at most 160 of them. A
        ``(nz, ny, nx)`` alone resamples the whole chest onto that grid (the spacing follows,
        coarser than clinical for small shapes; fast, for tests); with ``spacing`` it is exactly
        that grid, a field of view that may crop the body.
    spacing
        In-plane spacing (mm), ``(sz, sxy)`` or ``(sz, sy, sx)`` instead of drawn ones.
    matrix
        In-plane matrix ``n``: an ``n x n`` targeted reconstruction at the (drawn 0.6-1.0 mm or
        given) spacing, whose field of view crops the body when ``n`` x spacing is smaller than
        it (``matrix=256`` gives 154-256 mm). Not with ``shape``.
    style
        One of :data:`~napari_ctreport.synth.phantom.STYLES`; ``"alt"`` (rounder body, thicker
        fat, sharper kernel, coarser noise, denser vessels) is held out of training.
    background
        Insert lesions into this real CT instead of a phantom (see :func:`insert_lesions`).
    known
        With ``background``: the lesions it already has, kept as ground truth (see
        :func:`insert_lesions`).
    wall_masses
        Probability that a mass is set against the pleura, with an effusion on its side (a lung
        cancer and its effusion; see :func:`insert_lesions`). 0 (default) draws every case as
        earlier versions did.
    background_lungs
        With ``background``: its lung labels, if already segmented (see :func:`insert_lesions`).

    Returns
    -------
    SynthCase
    """
    rng = np.random.default_rng(seed)
    if background is not None:
        case = insert_lesions(
            background, rng=rng, known=known, wall_masses=wall_masses, lungs=background_lungs
        )
        case.meta.update({"seed": int(seed), "style": "real background"})
        return case
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; expected one of {', '.join(STYLES)}")
    ph = build_phantom(rng, style=style, shape=shape, spacing=spacing, matrix=matrix)
    kinds = _plan(rng)
    labels, lesions = _add_lesions(
        rng, ph.hu, lungs=ph.lungs, spacing=ph.spacing_zyx, kinds=kinds, wall_masses=wall_masses
    )
    an = ph.anatomy
    arr = scanner(
        ph.hu,
        rng,
        spacing_zyx=ph.spacing_zyx,
        psf_mm=an.psf_mm,
        noise_sd=an.noise_sd,
        noise_corr=_noise_corr_px(an.noise_corr, ph),
        body=ph.body,
        box=ph.box,
    )
    volume = CTVolume(
        array=arr,
        spacing_zyx=ph.spacing_zyx,
        origin_lps=ph.origin_lps,
        metadata=_volume_meta(rng, contrast=an.contrast, style=style),
    )
    findings = _findings(volume, labels, lesions, lungs=ph.lungs)
    report = write_report(findings, rng=rng)
    meta = {
        "seed": int(seed),
        "style": style,
        "orientation": str(rng.choice(ORIENTATIONS)),
        "image_format": str(rng.choice(["nifti", "dicom"], p=[0.7, 0.3])),
        "contrast": bool(an.contrast),
        "noise_sd": round(float(an.noise_sd), 2),
        "psf_mm": round(float(an.psf_mm), 3),
        "spacing_zyx": [float(s) for s in ph.spacing_zyx],
        "shape": [int(s) for s in arr.shape],
    }
    return SynthCase(volume=volume, labels=labels, findings=findings, report=report, meta=meta)


def insert_lesions(
    background: CTVolume,
    *,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    noise_sd: float = 12.0,
    psf_mm: float = 0.7,
    known: tuple[np.ndarray, Sequence[Finding]] | None = None,
    wall_masses: float = 0.0,
    lungs: np.ndarray | None = None,
) -> SynthCase:
    """Insert synthetic lesions into the lung parenchyma of a real CT.

    Lung is found by :func:`~napari_ctreport.report.anatomy.segment_lungs`. Each lesion is
    blended in with its own blur (``psf_mm``) and noise (``noise_sd`` HU) so it does not look
    pasted; the background outside the lesions is left untouched.

    Parameters
    ----------
    background
        A chest CT (only its lungs are modified).
    rng
        Random generator (the whole case follows from it).
    kinds
        Finding kinds to insert; ``None`` draws 1-3 lesions.
    known
        The lesions the CT already has: their label map on its grid (region ``n`` is the
        finding whose ``label`` is ``n``) and their findings (a corrected case, or a CT with a
        lesion segmentation). They stay ground truth, untouched; the inserted lesions keep
        clear of them.
    wall_masses
        Probability that a mass is set against the pleura (its centre :data:`WALL_DEPTH` radii
        deep in the lung, cut where the lung ends); an effusion then goes to its side, and is
        added there with probability :data:`WALL_MASS_EFFUSION` when the case has none.
    lungs
        The background's lung labels (:func:`~napari_ctreport.report.anatomy.segment_lungs` of
        it, on its grid; not modified), when the caller has them already: a dataset inserts
        into the same few CTs many times. ``None`` (default) segments them here.

    Returns
    -------
    SynthCase
    """
    if lungs is None:
        lungs = segment_lungs(background)
    elif lungs.shape != background.shape:
        raise ValueError(
            f"insert_lesions: the lung labels are {lungs.shape}, the CT {background.shape}"
        )
    if not lungs.any():
        where = background.metadata.get("source_path") or "the background CT"
        raise BackgroundError(f"{where}: no lung found to insert lesions into")
    if kinds is None:
        kinds = _plan(rng) or ["solid nodule"]
    spacing = background.spacing_zyx
    bg = background.array.astype(np.float32)
    hu = bg.copy()
    known_labels, known_findings = known if known is not None else (None, ())
    if known_labels is not None and known_labels.shape != bg.shape:
        raise ValueError(
            f"insert_lesions: the known lesions' label map is {known_labels.shape}, "
            f"the CT {bg.shape}"
        )
    labels, lesions = _add_lesions(
        rng,
        hu,
        lungs=lungs,
        spacing=spacing,
        kinds=kinds,
        known=known_labels,
        wall_masses=wall_masses,
    )
    first = 0 if known_labels is None else int(known_labels.max())
    if lesions:
        new = labels > first
        sig = (0.45, psf_mm / spacing[1], psf_mm / spacing[2])
        diff = ndi.gaussian_filter(hu - bg, sig, mode="nearest")
        touched = ndi.binary_dilation(new, iterations=2)
        noise = rng.standard_normal(hu.shape).astype(np.float32) * noise_sd
        hu = np.where(touched, bg + diff + noise * new, bg)
    else:
        touched = np.zeros(bg.shape, dtype=bool)
    # the background keeps its own values; only the lesions' neighbourhood is rewritten
    arr = background.array.astype(np.int16, copy=True)
    arr[touched] = np.clip(np.rint(hu[touched]), -1024, 3071).astype(np.int16)
    volume = CTVolume(
        array=arr,
        spacing_zyx=spacing,
        origin_lps=background.origin_lps,
        metadata=_volume_meta(rng, background=str(background.metadata.get("source_path", ""))),
    )
    findings = _findings(volume, labels, lesions, lungs=lungs, known=known_findings, first=first)
    report = write_report(findings, rng=rng)
    meta = {
        "background": str(background.metadata.get("source_path", "")),
        "orientation": str(rng.choice(ORIENTATIONS)),
        "image_format": "nifti",
        "spacing_zyx": [float(s) for s in spacing],
        "shape": [int(s) for s in arr.shape],
    }
    return SynthCase(volume=volume, labels=labels, findings=findings, report=report, meta=meta)


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _backgrounds(paths: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    """The background paths with every folder of case folders (an export: the newest version
    of each case) replaced by its cases, in order."""
    from ..io.case import iter_cases

    out: list[str] = []
    for p in paths:
        cases = list(iter_cases(p)) if Path(p).is_dir() else []
        if cases:
            out.extend(str(c) for c in cases)
        else:
            out.append(str(p))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _backgrounds_once(paths: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`_backgrounds`, expanded once per process: :func:`training_case` runs once per
    case, and a folder of exports would be walked again for each."""
    return _backgrounds(paths)


#: Suffix of a real CT background saved by :func:`save_background`.
PACKED_SUFFIX = ".npz"


def save_background(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Save a real CT as a background that NumPy alone reads back (:func:`read_background`).

    A machine without SimpleITK or pydicom (a lent GPU's image) can then insert lesions into
    it: :func:`dataset_case` and :func:`training_case` take the saved file wherever they take
    a CT. The CT is saved as :func:`~napari_ctreport.io.ct.load_ct` reads it (HU, on its
    canonical LPS grid), with its spacing, origin and source path, compressed.

    Parameters
    ----------
    source
        A CT that :func:`~napari_ctreport.io.ct.load_ct` reads (not a case folder: a CT with
        known lesions needs its labels too, which this does not save).
    out
        The file to write; ``.npz`` is appended when it has another suffix.

    Returns
    -------
    Path
        The file written.
    """
    from ..io.case import CASE_JSON
    from ..io.ct import load_ct

    if (Path(source) / CASE_JSON).is_file():
        raise BackgroundError(
            f"{source}: a case folder; only a CT without known lesions can be saved as a background"
        )
    volume = load_ct(source)
    out = Path(out)
    if out.suffix != PACKED_SUFFIX:
        out = out.with_name(out.name + PACKED_SUFFIX)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        array=np.asarray(volume.array, dtype=np.int16),
        spacing_zyx=np.asarray(volume.spacing_zyx, dtype=np.float64),
        origin_lps=np.asarray(volume.origin_lps, dtype=np.float64),
        source_path=np.array(str(volume.metadata.get("source_path") or source)),
    )
    return out


def read_background(path: str | os.PathLike[str]) -> CTVolume:
    """A background CT saved by :func:`save_background` (NumPy only).

    Raises
    ------
    BackgroundError
        Naming the file, when it is not such a background.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            array = np.asarray(z["array"])
            spacing = tuple(float(v) for v in z["spacing_zyx"])
            origin = tuple(float(v) for v in z["origin_lps"])
            source = str(z["source_path"])
    except (OSError, ValueError, KeyError) as err:
        raise BackgroundError(f"{path}: not a saved background CT ({err})") from err
    if array.ndim != 3 or array.dtype != np.int16 or len(spacing) != 3 or len(origin) != 3:
        raise BackgroundError(
            f"{path}: not a saved background CT (an int16 volume with 3 spacings and an origin)"
        )
    return CTVolume(
        array=array,
        spacing_zyx=spacing,
        origin_lps=origin,
        metadata={"source_path": source, "saved_as": str(path)},
    )


@functools.lru_cache(maxsize=4)
def _background(
    path: str,
) -> tuple[CTVolume, tuple[np.ndarray, list[Finding]] | None, np.ndarray]:
    """A real CT background, read and segmented once per process: a CT (no lesion known), or a
    case folder (a corrected export, a CT with a lesion segmentation), whose non-rejected
    findings and label map come with it as the lesions it already has; then its lung labels
    (:func:`~napari_ctreport.report.anatomy.segment_lungs`). Callers must not modify them."""
    from ..io.case import CASE_JSON, read_case

    known = None
    if str(path).endswith(PACKED_SUFFIX):
        volume = read_background(path)
    elif not (Path(path) / CASE_JSON).is_file():
        from ..io.ct import load_ct

        volume = load_ct(path)
    else:
        case = read_case(path)
        volume = case.load_volume()
        volume.metadata.setdefault("source_path", str(path))
        labels = case.load_labels(volume)
        findings = [f for f in case.findings if f.status != "rejected"]
        keep = np.isin(labels, [f.label for f in findings if f.label])
        known = (np.where(keep, labels, 0), findings)
    return volume, known, segment_lungs(volume)


def dataset_case(
    i: int,
    *,
    seed: int,
    real_backgrounds: Sequence[str] = (),
    style: str = "default",
    shape: tuple[int, int, int] | None = None,
    real_fraction: float = 0.25,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
    wall_masses: float = 0.0,
) -> tuple[SynthCase, Case]:
    """Case ``i`` of the dataset :func:`write_dataset` writes with these arguments, in memory:
    the generated case and its case-folder record (``case_NNNN``). It depends only on its
    arguments, so a trainer can take the cases straight from here, as the folders would hold
    them (``real_backgrounds`` as :func:`write_dataset` expands them)."""
    s = case_seed(seed, i)
    pick = np.random.default_rng([int(seed), i, 7])
    bg = known = bg_lungs = None
    if real_backgrounds and pick.random() < real_fraction:
        bg, known, bg_lungs = _background(
            real_backgrounds[int(pick.integers(len(real_backgrounds)))]
        )
    case = generate_case(
        seed=s,
        shape=shape,
        spacing=spacing,
        matrix=matrix,
        style=style,
        background=bg,
        known=known,
        wall_masses=wall_masses,
        background_lungs=bg_lungs,
    )
    rec = case.to_case(f"case_{i:04d}")
    rec.provenance["generator"]["dataset_seed"] = int(seed)
    rec.provenance["generator"]["index"] = i
    return case, rec


def training_case(
    i: int,
    *,
    seed: int,
    shape: tuple[int, int, int] | None = None,
    real_backgrounds: Sequence[str | os.PathLike[str]] = (),
    real_fraction: float = 0.0,
) -> tuple[Case, CTVolume, np.ndarray]:
    """Case ``i`` of ``write_dataset(dir, cases=..., seed=seed, shape=shape,
    real_backgrounds=real_backgrounds, real_fraction=real_fraction)`` as a trainer takes it, in
    memory: its record, CT and label map (see
    :class:`napari_ctreport.model.train.GeneratedCases`). Backgrounds saved by
    :func:`save_background` need no CT reader."""
    case, rec = dataset_case(
        i,
        seed=seed,
        shape=shape,
        real_backgrounds=(
            _backgrounds_once(tuple(str(b) for b in real_backgrounds)) if real_fraction > 0 else ()
        ),
        real_fraction=real_fraction,
    )
    return rec, case.volume, case.labels


def _write_one(
    out: Path,
    i: int,
    seed: int,
    formats: tuple[str, ...],
    real_backgrounds: tuple[str, ...],
    style: str,
    shape: tuple[int, int, int] | None,
    real_fraction: float,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
    wall_masses: float = 0.0,
) -> Path:
    """Generate and write case ``i`` of a dataset (depends only on its arguments)."""
    case, rec = dataset_case(
        i,
        seed=seed,
        real_backgrounds=real_backgrounds,
        style=style,
        shape=shape,
        real_fraction=real_fraction,
        spacing=spacing,
        matrix=matrix,
        wall_masses=wall_masses,
    )
    fmt = case.meta.get("image_format", "nifti")
    if fmt not in formats:
        fmt = formats[i % len(formats)]
    case.meta["image_format"] = fmt
    return write_case(
        rec,
        out / rec.case_id,
        volume=case.volume,
        labels=case.labels,
        orientation=case.meta.get("orientation", "LPS"),
        image_format=fmt,
    )


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    cases: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    formats: Sequence[str] = ("nifti", "dicom"),
    real_backgrounds: Sequence[str | os.PathLike[str]] = (),
    style: str = "default",
    shape: tuple[int, int, int] | None = None,
    real_fraction: float = 0.25,
    workers: int = 1,
    spacing: float | tuple[float, ...] | None = None,
    matrix: int | None = None,
    wall_masses: float = 0.0,
) -> list[Path]:
    """Write ``cases`` synthetic case folders ``case_0000`` ... under ``out_dir``.

    On-disk orientation (LPS, RAS, feet-first LPI) and format (NIfTI or a DICOM series, among
    ``formats``) vary from case to case. With ``real_backgrounds``, about ``real_fraction`` of
    the cases are lesions inserted into those CTs (read with :func:`napari_ctreport.io.ct.load_ct`;
    a case folder's CT keeps its own findings as ground truth beside the inserted ones; a folder
    of case folders, such as an export, stands for all its cases, each at its newest version).
    Each case depends only on ``seed`` and its index, so ``workers`` processes write the same
    cases as one. ``shape``, ``spacing`` and ``matrix`` choose the grid as in
    :func:`generate_case` (default: clinical 0.6-1.0 mm pixels on a 512 x 512 matrix);
    ``wall_masses`` sets masses against the pleura, beside an effusion (:func:`generate_case`).

    Returns
    -------
    list of Path
        The case folders, in order.
    """
    formats = tuple(formats)
    for f in formats:
        if f not in ("nifti", "dicom"):
            raise ValueError(f"unknown image format {f!r}; expected 'nifti' or 'dicom'")
    if not formats:
        raise ValueError("write_dataset needs at least one image format")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spacing is not None and not np.isscalar(spacing):
        spacing = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    args = (
        seed,
        formats,
        _backgrounds(real_backgrounds),
        style,
        shape,
        real_fraction,
        spacing,
        matrix,
        wall_masses,
    )
    paths: list[Path | None] = [None] * cases
    if workers <= 1 or cases <= 1:
        for i in range(cases):
            paths[i] = _write_one(out, i, *args)
            if progress is not None:
                progress(i + 1, cases)
        return paths  # type: ignore[return-value]
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_write_one, out, i, *args): i for i in range(cases)}
        for done, fut in enumerate(as_completed(futures), start=1):
            paths[futures[fut]] = fut.result()
            if progress is not None:
                progress(done, cases)
    return paths  # type: ignore[return-value]
