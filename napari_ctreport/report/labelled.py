"""Case folders from a CT and a lesion label map drawn elsewhere.

Public collections publish chest CT with lesion segmentations (for example the NSCLC-Radiomics
tumours that pyradiomics ships as test cases). :func:`case_from_labels` turns such an image and
its label map into a case folder record whose findings are measured from the labels exactly as
the model's findings are measured from its masks (:func:`~napari_ctreport.report.measure.
finding_from_mask`), with the writer's report, so that ``ctreport evaluate`` can score the model
on real lesions. Provenance ``source`` is ``"imported labels"``. No napari or Qt here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._version import __version__
from ..io.case import Case, CaseFormatError, new_provenance
from ..io.volume import CTVolume
from .findings import Finding
from .lexicon import KINDS

#: Largest difference (mm) between the image's and the label map's voxel spacing or origin.
GRID_TOLERANCE_MM = 0.01


def case_from_labels(
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    kinds: str | Mapping[int, str],
    case_id: str | None = None,
    split_components: bool = False,
) -> tuple[Case, CTVolume, np.ndarray]:
    """A case record (with its image and label map) from a CT and a lesion label map.

    Parameters
    ----------
    image
        The CT: anything :func:`~napari_ctreport.io.ct.load_ct` reads.
    labels
        A label map on the same grid (same size, spacing and origin, in any orientation the
        reader understands): 0 background, each other value one lesion.
    kinds
        The finding kind of every lesion (one of :data:`~napari_ctreport.report.lexicon.KINDS`),
        or a mapping from label value to kind; a value the mapping lacks is an error.
    case_id
        Identifier of the case; by default the image's file name without its extensions.
    split_components
        Make each connected component of a label value a finding of its own (a label map that
        marks all tumours with one value).

    Returns
    -------
    tuple
        ``(case, volume, label_map)``: the record (findings numbered ``F1``... in label order,
        status ``"accepted"``, the writer's report), the CT in LPS, and the renumbered label map
        in which region ``n`` is finding ``Fn``.

    Raises
    ------
    CaseFormatError
        Naming the label file, when its grid differs from the image's, it holds no lesion, or a
        value has no kind.
    """
    from scipy import ndimage as ndi

    from ..io.ct import DICOM_SUFFIXES, VOLUME_SUFFIXES, _suffix, load_ct
    from .anatomy import segment_lungs
    from .measure import finding_from_mask
    from .writer import write_report

    volume = load_ct(image)
    lab_vol = load_ct(labels, label_map=True)
    _check_grid(volume, lab_vol, labels)
    raw = np.rint(np.asarray(lab_vol.array)).astype(np.int64)
    values = [int(v) for v in np.unique(raw) if v > 0]
    if not values:
        raise CaseFormatError(labels, "the label map holds no lesion (no voxel above 0)")
    kind_of = _kinds(kinds, values, labels)
    regions: list[tuple[np.ndarray, str]] = []
    for v in values:
        mask = raw == v
        if split_components:
            comp, n = ndi.label(mask)
            regions.extend((comp == i, kind_of[v]) for i in range(1, n + 1))
        else:
            regions.append((mask, kind_of[v]))
    lungs = segment_lungs(volume)
    label_map = np.zeros(volume.shape, dtype=np.uint16)
    findings: list[Finding] = []
    for n, (mask, kind) in enumerate(regions, start=1):
        label_map[mask] = n
        f = finding_from_mask(
            mask, volume=volume, id=f"F{n}", kind=kind, lungs=lungs, score=1.0, label=n
        )
        f.status = "accepted"
        findings.append(f)
    report = write_report(findings)
    name = Path(image).name
    ext = _suffix(Path(image))
    if ext in VOLUME_SUFFIXES or ext in DICOM_SUFFIXES:
        name = name[: -len(ext)]
    case = Case(
        case_id=case_id or name or "case",
        findings=findings,
        report=report.to_dict(),
        provenance=new_provenance(
            source="imported labels",
            generator={
                "name": "ctreport import",
                "version": __version__,
                "image": str(image),
                "labels": str(labels),
                "split_components": bool(split_components),
            },
        ),
    )
    return case, volume, label_map


def _check_grid(volume: CTVolume, lab_vol: CTVolume, labels: str | os.PathLike[str]) -> None:
    if lab_vol.shape != volume.shape:
        raise CaseFormatError(
            labels, f"label map size {lab_vol.shape} differs from the image's {volume.shape}"
        )
    for what, a, b in (
        ("spacing", lab_vol.spacing_zyx, volume.spacing_zyx),
        ("origin", lab_vol.origin_lps, volume.origin_lps),
    ):
        if np.max(np.abs(np.subtract(a, b))) > GRID_TOLERANCE_MM:
            raise CaseFormatError(
                labels,
                f"label map {what} {tuple(round(float(x), 3) for x in a)} differs from the "
                f"image's {tuple(round(float(x), 3) for x in b)}",
            )


def _kinds(
    kinds: str | Mapping[int, str], values: list[int], labels: str | os.PathLike[str]
) -> dict[int, str]:
    out = {v: kinds for v in values} if isinstance(kinds, str) else dict(kinds)
    for v in values:
        if v not in out:
            raise CaseFormatError(labels, f"label value {v} has no kind (give one for every value)")
        if out[v] not in KINDS:
            raise CaseFormatError(
                labels, f"label value {v}: unknown kind {out[v]!r}; expected one of {KINDS}"
            )
    return out
