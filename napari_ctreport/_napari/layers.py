"""Conversions between CT volumes and napari layers.

napari world axes are (LPS z, LPS y, LPS x) in mm: an image layer gets ``scale`` = voxel spacing
and ``translate`` = the LPS position of voxel 0, so every layer of a study shares the patient frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io import CTVolume, window_limits

#: Key under which a layer's metadata keeps the study record.
META_KEY = "ctreport"


def image_layer_data(volume: CTVolume, *, name: str | None = None) -> tuple[Any, dict, str]:
    """Return a napari ``(data, kwargs, "image")`` tuple that shows ``volume`` in patient space.

    Parameters
    ----------
    volume
        A CT volume on the canonical LPS grid.
    name
        Layer name; defaults to the series description, else the file's name without its
        suffix or the DICOM folder's name (``metadata["source_name"]``, set by the reader; a
        case folder: the case's id), else ``"CT"``.
    """
    meta = volume.metadata
    if name is None:
        name = meta.get("series_description") or meta.get("source_name") or "CT"
    level, width = volume.default_window()
    record = {
        **meta,
        "spacing_zyx": list(volume.spacing_zyx),
        "origin_lps": list(volume.origin_lps),
        "warnings": list(volume.warnings),
        "window": [level, width],
    }
    kwargs = {
        "name": name,
        "scale": volume.spacing_zyx,
        "translate": volume.translate_zyx,
        "contrast_limits": window_limits(level, width),
        "colormap": "gray",
        "interpolation2d": "linear",
        "metadata": {META_KEY: record},
    }
    return volume.array, kwargs, "image"


def volume_from_layer(layer: Any) -> CTVolume:
    """Rebuild a :class:`CTVolume` from an image layer (ours or any 3-D image in the LPS frame).

    A layer opened by another reader is taken as it is drawn: its ``scale`` is the spacing and
    its ``translate`` the LPS (z, y, x) of voxel 0.
    """
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise ValueError(f"layer {layer.name!r} is {data.ndim}-D; a CT volume is 3-D")
    record = dict(layer.metadata.get(META_KEY, {}))
    scale = tuple(float(s) for s in layer.scale[-3:])
    tz, ty, tx = (float(t) for t in layer.translate[-3:])
    warnings = list(record.pop("warnings", []))
    for key in ("spacing_zyx", "origin_lps", "window"):
        record.pop(key, None)
    return CTVolume(
        array=data,
        spacing_zyx=scale,
        origin_lps=(tx, ty, tz),
        metadata=record,
        warnings=warnings,
    )


def person_name(value: Any) -> str:
    """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``) as people write it:
    ``"Doe^Jane"`` -> ``"Doe, Jane"``, ``"CTR-1A2B^"`` -> ``"CTR-1A2B"``; ``""`` for none."""
    parts = [p.strip() for p in str(value or "").split("=")[0].split("^")]
    family, rest = (parts[0], [p for p in parts[1:4] if p]) if parts else ("", [])
    given = " ".join(rest)
    return f"{family}, {given}" if family and given else family or given


def dicom_date(value: Any) -> str:
    """A DICOM date (``YYYYMMDD``) as ``YYYY-MM-DD``; anything else as it is."""
    text = str(value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def study_summary(record: dict[str, Any], shape: tuple[int, ...]) -> str:
    """A few lines a radiologist checks before reading: who, which series, which grid."""
    sp = record.get("spacing_zyx") or []
    who = person_name(record.get("patient_name")) or "—"
    study = f"{record.get('study_description') or '—'}  {dicom_date(record.get('study_date'))}"
    lines = [
        f"Patient: {who}  ID: {record.get('patient_id') or '—'}",
        f"Study: {study}".rstrip(),
        f"Series: {record.get('series_description') or record.get('source_name') or '—'}",
        "Size (z, y, x): " + " × ".join(str(n) for n in shape),
        "Spacing (z, y, x): " + " × ".join(f"{s:.2f}" for s in sp) + " mm" if sp else "Spacing: —",
    ]
    if record.get("slice_thickness_mm"):
        lines.append(f"Slice thickness: {float(record['slice_thickness_mm']):.2f} mm")
    if record.get("kernel"):
        lines.append(f"Kernel: {record['kernel']}")
    if record.get("orientation_on_disk"):
        lines.append(f"On disk: {record['orientation_on_disk']} (shown in patient LPS)")
    return "\n".join(lines)


# -- findings <-> layers ------------------------------------------------------------------------
#: Edge colour of rejected findings' boxes.
REJECTED_COLOR = "#8c8c8c"
#: Colour of a mask label no finding has yet: the stroke of a lesion the reader paints, until
#: the dock adds it as a finding (it was transparent: nothing showed while painting).
NEW_LABEL_COLOR = "#ffffff"


def finding_box_index(finding: Any, volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """A finding's box as CT index coordinates of its outer corners ``(lo_zyx, hi_zyx)``."""
    a = volume.lps_to_index(np.asarray(finding.bbox_lps_mm[0], dtype=float))
    b = volume.lps_to_index(np.asarray(finding.bbox_lps_mm[1], dtype=float))
    return np.minimum(a, b), np.maximum(a, b)


#: How far (in voxels) a box's corner may lie outside a voxel centre for the voxel to count as
#: inside the box: boxes that went through LPS mm rounded to 0.01 mm land up to 0.025 voxel off
#: the half-voxel (at 0.2 mm spacing), and a drawn rectangle's edge is not that precise.
BOX_TOLERANCE_VOXELS = 0.05


def voxel_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)`` per axis of the voxels whose centres lie inside a box (``stop``
    exclusive; possibly empty). ``lo``, ``hi``: index coordinates of the box's outer corners,
    voxel ``i`` spanning ``[i - 0.5, i + 0.5]`` (napari's convention, and
    :func:`finding_box_index`'s); see :data:`BOX_TOLERANCE_VOXELS`."""
    start = np.ceil(np.asarray(lo, dtype=float) - BOX_TOLERANCE_VOXELS).astype(int)
    stop = np.floor(np.asarray(hi, dtype=float) + BOX_TOLERANCE_VOXELS).astype(int) + 1
    return start, stop


#: The planes a finding's box is drawn on: axial (0), coronal (1) and sagittal (2), as the axis
#: of the CT index (z, y, x) that is constant over the plane.
PLANES: tuple[int, ...] = (0, 1, 2)


def box_rectangles(
    lo: np.ndarray,
    hi: np.ndarray,
    shape: tuple[int, ...],
    *,
    planes: tuple[int, ...] = PLANES,
    outline: bool = False,
) -> list[np.ndarray]:
    """The rectangles ``(4, 3)`` (CT index z, y, x) a box is drawn with: for each plane in
    ``planes`` (:data:`PLANES`), one on each slice of that plane whose centre the box spans
    (:func:`voxel_range`; the nearest slice when it spans none), axial ones first. napari shows
    a shape only on the slice it lies in, so each view shows the box's outline on its plane.
    With ``outline``, only those on the first and last slice of each plane (the 3-D view
    draws the axial two of them, :func:`box_outline_3d`)."""
    start, stop = voxel_range(lo, hi)
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    out: list[np.ndarray] = []
    for axis in planes:
        first = max(0, int(start[axis]))
        last = min(int(shape[axis]) - 1, int(stop[axis]) - 1)
        if last < first:
            first = last = int(np.clip(np.round((lo[axis] + hi[axis]) / 2.0), 0, shape[axis] - 1))
        b, c = (a for a in range(3) if a != axis)
        corner = np.empty((4, 3), dtype=float)
        corner[:, b] = (lo[b], lo[b], hi[b], hi[b])
        corner[:, c] = (lo[c], hi[c], hi[c], lo[c])
        for i in sorted({first, last}) if outline else range(first, last + 1):
            v = corner.copy()
            v[:, axis] = i
            out.append(v)
    return out


def rectangle_plane(vertices: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(axis, index, lo, hi)`` of a drawn or edited rectangle (CT index coordinates): the plane
    it lies on (the axis its corners do not vary along; 0 axial, 1 coronal, 2 sagittal), the
    slice's index along that axis, and its corners' least and greatest coordinates per axis."""
    v = np.asarray(vertices, dtype=float).reshape(-1, 3)
    axis = int(np.argmin(np.ptp(v, axis=0)))
    return axis, int(np.round(v[:, axis].mean())), v.min(axis=0), v.max(axis=0)


#: A box rectangle's edge width in voxels (napari's units for a layer scaled like the CT), and
#: the least it is narrowed to on a coronal or sagittal slice (:func:`box_edge_widths`).
BOX_EDGE, BOX_EDGE_MIN = 2.0, 0.5


def box_edge_widths(rects: list[np.ndarray], volume: CTVolume) -> list[float]:
    """Each rectangle's edge width (voxels). napari draws an edge as wide in voxels along both
    axes of the plane, so on a coronal slice of 5 mm slices and 0.7 mm pixels a 2-voxel edge
    was 10 mm thick at the box's top and bottom and 1.4 mm at its sides, hiding the anatomy at
    the lesion's upper and lower edge. The width is narrowed by the plane's spacing ratio (the
    finer over the coarser), to no less than :data:`BOX_EDGE_MIN` so the sides stay visible;
    axial rectangles of square pixels keep :data:`BOX_EDGE`."""
    sp = np.asarray(volume.spacing_zyx, dtype=float)
    out = []
    for v in rects:
        axis = rectangle_plane(v)[0]
        b, c = (sp[a] for a in range(3) if a != axis)
        out.append(float(np.clip(BOX_EDGE * min(b, c) / max(b, c), BOX_EDGE_MIN, BOX_EDGE)))
    return out


#: The half-thickness (mm) the edges of a box's 3-D outline aim at (:func:`box_outline_3d`).
OUTLINE_EDGE_MM = 1.5
#: The least edge width (voxels) of a 3-D outline: an edge across 10 mm slices stays visible.
OUTLINE_EDGE_MIN = 0.1


def box_outline_3d(
    lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...], spacing_zyx: Sequence[float]
) -> list[tuple[np.ndarray, str, float]]:
    """The shapes that draw a box as a wire frame in a 3-D view, each ``(vertices, shape_type,
    edge_width)`` (CT index z, y, x; voxels): rectangles on its first and last axial slice
    (those of :func:`box_rectangles`) and its four edges along z as lines between them.

    napari draws a shape's edge in 3-D as a tube whose cross-section is stretched by the
    layer's scale, so an edge as wide in voxels as a 2-D one was a slab 10-20 mm thick across
    5 mm slices, and the six outer rectangles of :func:`box_rectangles` hid the lesion inside
    them. Each edge's width is :data:`OUTLINE_EDGE_MM` over the coarsest spacing across it
    (within :data:`OUTLINE_EDGE_MIN` and :data:`BOX_EDGE`): z and a pixel's side for the
    rectangles' edges, the pixel alone for the lines along z. A box of one slice is its
    rectangle."""
    sp = np.asarray(spacing_zyx, dtype=float)
    rects = box_rectangles(lo, hi, shape, planes=(0,), outline=True)
    z0, z1 = float(rects[0][0, 0]), float(rects[-1][0, 0])

    def width(across: Sequence[int]) -> float:
        return float(np.clip(OUTLINE_EDGE_MM / sp[list(across)].max(), OUTLINE_EDGE_MIN, BOX_EDGE))

    out = [(v, "rectangle", width((0, 1, 2))) for v in rects]
    if z1 == z0:  # a box of one slice: its rectangle is the whole frame
        return out
    for y in (float(lo[1]), float(hi[1])):
        for x in (float(lo[2]), float(hi[2])):
            out.append((np.array([[z0, y, x], [z1, y, x]]), "line", width((1, 2))))
    return out


def box_label(finding: Any) -> str:
    """Text on a finding's box, e.g. ``"F1 solid nodule 0.93"``."""
    if finding.status == "rejected":
        return f"{finding.id} {finding.kind} (rejected)"
    if finding.status == "added":
        return f"{finding.id} {finding.kind} (added)"
    return f"{finding.id} {finding.kind} {finding.score:.2f}"


#: Box label colours: dark text where the CT under the label is bright, light text elsewhere.
LABEL_DARK, LABEL_LIGHT = "#101010", "#ffffff"
#: Label height and width of one character, in CT voxels (in-plane), used to sample the CT under
#: a label (text is drawn in screen pixels; at the usual zoom of a chest CT this is close).
LABEL_HEIGHT_VOX, LABEL_CHAR_VOX = 9, 2.5


def label_text_colors(
    volume: CTVolume,
    rects: list[np.ndarray],
    texts: list[str],
    *,
    limits: tuple[float, float] | None = None,
) -> list[str]:
    """Per rectangle, the text colour that reads best over the CT where its label is drawn
    (at the rectangle's least corner on its plane: above its upper-left corner on an axial
    slice, inside its lower-left one on a coronal or sagittal slice turned head up): :data:`LABEL_DARK` where the CT there is mostly
    bright between the display ``limits`` (HU; default: the volume's opening window), else
    :data:`LABEL_LIGHT`. White labels over the mediastinum in a lung window are unreadable."""
    lo_hu, hi_hu = limits if limits is not None else window_limits(*volume.default_window())
    arr = volume.array
    out = []
    for v, text in zip(rects, texts, strict=True):
        axis, i, lo, _ = rectangle_plane(v)
        b, c = (a for a in range(3) if a != axis)
        row, col = int(round(lo[b])), int(round(lo[c]))
        at: list[Any] = [None, None, None]
        at[axis] = min(max(i, 0), arr.shape[axis] - 1)
        # axial: above the rectangle; coronal and sagittal (head up, the least z at the bottom):
        # inside its lower edge, where napari draws text anchored at the least corner
        first = row - 2 - LABEL_HEIGHT_VOX if axis == 0 else row + 1
        at[b] = slice(max(0, first), max(0, first + LABEL_HEIGHT_VOX))
        at[c] = slice(max(0, col), max(0, col + int(LABEL_CHAR_VOX * max(len(text), 1))))
        patch = np.asarray(arr[tuple(at)], dtype=np.float32)
        if patch.size == 0:
            at[b] = slice(max(0, row), row + 3)
            patch = np.asarray(arr[tuple(at)], dtype=np.float32)
        bright = (
            float(np.mean(np.clip((patch - lo_hu) / max(hi_hu - lo_hu, 1e-6), 0.0, 1.0)))
            if patch.size
            else 0.0
        )
        out.append(LABEL_DARK if bright > 0.5 else LABEL_LIGHT)
    return out


def boxes_layer_data(
    findings: list[Any],
    volume: CTVolume,
    *,
    name: str = "Findings",
    limits: tuple[float, float] | None = None,
    outline: bool = False,
) -> tuple[list[np.ndarray], dict, str]:
    """A napari Shapes layer tuple: the rectangles of every finding's 3-D box, one per slice on
    each plane (:func:`box_rectangles`), with edge colour per kind (grey when rejected) and text
    ``"F1 solid nodule 0.93"`` in a colour that reads over the CT under it shown between
    ``limits`` (:func:`label_text_colors`). With ``outline`` (for a 3-D view), each box's wire
    frame (:func:`box_outline_3d`: two rectangles and four lines, ``shape_type`` and
    ``edge_width`` one per shape), one of them labelled in the box's own colour."""
    from ..report.lexicon import KIND_COLORS

    data: list[np.ndarray] = []
    ids: list[str] = []
    labels: list[str] = []
    colors: list[str] = []
    types: list[str] = []
    widths: list[float] = []
    for f in findings:
        lo, hi = finding_box_index(f, volume)
        if outline:
            shapes = box_outline_3d(lo, hi, volume.shape, volume.spacing_zyx)
            rects = [v for v, _, _ in shapes]
            types += [t for _, t, _ in shapes]
            widths += [w for _, _, w in shapes]
        else:
            rects = box_rectangles(lo, hi, volume.shape)
        data += rects
        ids += [f.id] * len(rects)
        labels += [box_label(f)] + ["" if outline else box_label(f)] * (len(rects) - 1)
        colors += [REJECTED_COLOR if f.status == "rejected" else KIND_COLORS[f.kind]] * len(rects)
    # in 3-D a label floats over the rendered volume or the black behind it, not over the CT
    # slice its colour was picked for: the box's own (bright) colour reads on both
    text_colors = (
        list(colors) if outline else label_text_colors(volume, data, labels, limits=limits)
    )
    kwargs = {
        "name": name,
        "shape_type": types if outline else "rectangle",
        "scale": volume.spacing_zyx,
        "translate": volume.translate_zyx,
        "edge_width": widths if outline else (box_edge_widths(data, volume) if data else BOX_EDGE),
        "edge_color": colors if colors else "#ff4040",
        "face_color": "transparent",
        "features": {"finding_id": ids, "label": labels, "text_color": text_colors},
        "feature_defaults": {"finding_id": "", "label": "", "text_color": LABEL_LIGHT},
        "text": {
            "string": "{label}",
            "color": {"feature": "text_color", "fallback": LABEL_LIGHT},
            "size": 10,
            "anchor": "upper_left",
            "translation": [0, -3, 0],
        },
        "metadata": {META_KEY: {"role": "boxes"}},
    }
    return data, kwargs, "shapes"


def labels_layer_data(
    labels: np.ndarray, findings: list[Any], volume: CTVolume, *, name: str = "Finding masks"
) -> tuple[np.ndarray, dict, str]:
    """A napari Labels layer tuple: one label per finding (value ``finding.label``)."""
    from ..report.lexicon import KIND_COLORS

    # a label no finding has yet (a lesion the reader is painting) shows while it is painted
    colors: dict[Any, str] = {None: NEW_LABEL_COLOR, 0: "transparent"}
    for f in findings:
        if f.label:
            colors[int(f.label)] = REJECTED_COLOR if f.status == "rejected" else KIND_COLORS[f.kind]
    kwargs = {
        "name": name,
        "scale": volume.spacing_zyx,
        "translate": volume.translate_zyx,
        "opacity": 0.4,
        "colormap": colors,
        "metadata": {META_KEY: {"role": "masks"}},
    }
    return labels, kwargs, "labels"


def attention_layer_data(
    attention: np.ndarray, volume: CTVolume, *, name: str = "Attention"
) -> tuple[np.ndarray, dict, str]:
    """A napari Image layer tuple for an attention map on the CT grid (all findings)."""
    kwargs = {
        "name": name,
        "scale": volume.spacing_zyx,
        "translate": volume.translate_zyx,
        "colormap": "inferno",
        "blending": "additive",
        "opacity": 0.5,
        "contrast_limits": (0.0, 1.0),
        "interpolation2d": "linear",
        "metadata": {META_KEY: {"role": "attention"}},
    }
    return np.asarray(attention), kwargs, "image"


def warm_label_colormap(colors: dict[Any, str], dtype: Any) -> Any:
    """A napari ``DirectLabelColormap`` with its lookup tables for ``dtype`` already built (for
    uint16 a 65536-entry table, ~40 ms; napari would otherwise build it on the UI thread when the
    layer is added)."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = DirectLabelColormap(color_dict=colors)
    probe = np.zeros(1, dtype=dtype)
    cmap.map(probe)
    with contextlib.suppress(AttributeError):  # napari's private texture mapping, if it has one
        cmap._data_to_texture(probe)
    return cmap


def result_layers_data(
    findings: list[Any], labels: np.ndarray, attention: np.ndarray | None, volume: CTVolume
) -> dict[str, Any]:
    """Everything the dock needs to show a run, built off the UI thread (numpy; no Qt):
    ``"attention"`` (``(data, kwargs)`` or ``None``), ``"masks"`` and ``"boxes"`` (``(data,
    kwargs)`` as :func:`labels_layer_data` / :func:`boxes_layer_data` make them) and
    ``"glyphs"``, the characters of the boxes' text (their glyphs are rendered before the boxes
    are shown, a few at a time)."""
    out: dict[str, Any] = {"attention": None}
    if attention is not None:
        data, kw, _ = attention_layer_data(attention, volume)
        out["attention"] = (data, kw)
    data, kw, _ = labels_layer_data(labels, findings, volume)
    out["masks"] = (data, {**kw, "colormap": warm_label_colormap(kw["colormap"], labels.dtype)})
    rects, kw, _ = boxes_layer_data(findings, volume)
    out["boxes"] = (rects, kw)
    out["glyphs"] = "".join(sorted(set("".join(kw["features"]["label"]))))
    return out
