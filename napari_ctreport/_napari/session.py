"""The review state of one study: findings, masks, report text, edit log and autosave.

No Qt and no napari here: :class:`ReviewSession` is plain Python + numpy, so the dock stays a thin
view over it and the whole review loop can be tested (and killed and restored) without a GUI.

Every change goes through a method that

1. updates the findings / label map / sentences (measurements always come from
   :func:`~napari_ctreport.report.measure.finding_from_mask`, sentences from
   :func:`~napari_ctreport.report.writer.describe_finding`),
2. appends an :class:`EditRecord` to the edit log,
3. autosaves atomically (``tmp`` file + :func:`os.replace`) to the study's folder under the
   autosave root: ``session.json`` (findings, report text, draft, edit log), ``labels.npz``
   (the label map as its non-zero voxels, so saving stays a few milliseconds) and
   ``attention.npz`` (the model's attention maps, written once per run: the map on the CT grid
   cropped to its non-zero box and quantised to uint8, the per-finding maps as float16) and
   ``redrawn.npz`` (the regions drawn boxes marked, for a kind changed back after a restore,
   and the voxels drawn boxes took from rejected findings, theirs again if the box is deleted).

Sentences: one per finding in the findings section. A sentence the reader typed over is
*hand-edited* and survives later changes of that or any other finding; only
:meth:`ReviewSession.regenerate_sentence` replaces it. The impression is regenerated from the
findings until the reader edits it by hand.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.volume import CTVolume
from ..io.write import write_atomically
from ..report.findings import Finding
from ..report.lexicon import KINDS, SIDES, ZONES
from ..report.writer import Report, Sentence, describe_finding, write_report
from .layers import finding_box_index, rectangle_plane, voxel_range

log = logging.getLogger(__name__)

SESSION_SCHEMA = "ctreport.session/1"
SESSION_FILE = "session.json"
LABELS_FILE = "labels.npz"
ATTENTION_FILE = "attention.npz"
#: The regions drawn boxes marked and the masks drawn from them (``ReviewSession._redrawn``).
REDRAWN_FILE = "redrawn.npz"
#: Subfolder prefix of a run kept beside the first ("Keep both"): ``run2``, ``run3``, ...
RUN_PREFIX = "run"
#: Levels of the uint8 quantisation of the autosaved attention map (values in [0, 1]).
ATTENTION_LEVELS = 255

#: HU above which voxels inside a drawn box count as lesion (soft tissue and ground glass).
ADDED_LESION_MIN_HU = -650.0


def default_autosave_root() -> Path:
    """``$XDG_DATA_HOME/napari-ctreport/autosave`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "napari-ctreport" / "autosave"


def study_key(volume: CTVolume) -> str:
    """A stable folder name for a study: hash of its UIDs, else its source path and grid, else
    its grid and a strided sample of its voxels (synthetic or UID-less volumes)."""
    md = volume.metadata or {}
    parts: list[str] = []
    uid = md.get("series_uid") or md.get("SeriesInstanceUID") or ""
    study = md.get("study_uid") or md.get("StudyInstanceUID") or ""
    if uid or study:
        parts += ["uid", str(study), str(uid)]
    else:
        src = md.get("path") or md.get("source_path") or ""
        if src and str(src) not in ("synthetic",):
            parts += ["path", str(Path(str(src)).expanduser().resolve())]
    parts += [
        "grid",
        repr(tuple(volume.shape)),
        repr(tuple(round(s, 4) for s in volume.spacing_zyx)),
        repr(tuple(round(o, 3) for o in volume.origin_lps)),
    ]
    h = hashlib.sha256("|".join(parts).encode())
    if not (uid or study):
        step = tuple(max(1, n // 32) for n in volume.shape)
        sample = np.ascontiguousarray(volume.array[:: step[0], :: step[1], :: step[2]])
        h.update(sample.tobytes())
    return h.hexdigest()[:24]


def autosave_dir(volume: CTVolume, *, root: str | Path | None = None, run: int = 1) -> Path:
    """The autosave folder of a study's review (not created): run 1 (the usual single review)
    in the study's folder, a run kept beside it ("Keep both") in its ``run<N>`` subfolder."""
    folder = Path(root if root is not None else default_autosave_root()) / study_key(volume)
    return folder if run <= 1 else folder / f"{RUN_PREFIX}{int(run)}"


def _run_of(folder: Path) -> int:
    name = folder.name
    if name.startswith(RUN_PREFIX) and name[len(RUN_PREFIX) :].isdigit():
        return int(name[len(RUN_PREFIX) :])
    return 1


def _labels_bytes(labels: np.ndarray, seq: int) -> bytes:
    import io

    flat = np.flatnonzero(labels)
    buf = io.BytesIO()
    np.savez(
        buf,
        shape=np.asarray(labels.shape, dtype=np.int64),
        index=flat.astype(np.int64),
        values=labels.ravel()[flat].astype(np.uint16),
        seq=np.asarray([seq], dtype=np.int64),
    )
    return buf.getvalue()


def _nonzero_box(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of the smallest box ``[lo, hi)`` that holds every non-zero voxel of a 3-D
    array (an empty box at 0 when there is none); a few ms for a 160x512x512 float16 map."""
    m = a.view(np.uint16) != 0 if a.dtype == np.float16 else a != 0  # float16: compare bits
    z = np.flatnonzero(m.any(axis=(1, 2)))
    if not len(z):
        return np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64)
    sub = m[z[0] : z[-1] + 1]
    y = np.flatnonzero(sub.any(axis=(0, 2)))
    x = np.flatnonzero(sub.any(axis=(0, 1)))
    return np.array([z[0], y[0], x[0]]), np.array([z[-1], y[-1], x[-1]]) + 1


def _attention_bytes(attention: np.ndarray | None, per_finding: dict[str, Any], seq: int) -> bytes:
    """The attention maps as a compressed ``.npz``: the CT-grid map cropped to its non-zero box
    and quantised to uint8 (``round(255 * a)``), each finding's coarse map as float16 with its
    placement."""
    import io

    arrays: dict[str, np.ndarray] = {"seq": np.asarray([seq], dtype=np.int64)}
    if attention is not None:
        a = np.asarray(attention)
        arrays["shape"] = np.asarray(a.shape, dtype=np.int64)
        lo, hi = _nonzero_box(a)
        crop = a[tuple(slice(int(i), int(j)) for i, j in zip(lo, hi, strict=True))]
        q = np.rint(np.clip(crop.astype(np.float32), 0.0, 1.0) * ATTENTION_LEVELS)
        arrays["offset"] = lo.astype(np.int64)
        arrays["quantised"] = q.astype(np.uint8)
    ids = list(per_finding)
    arrays["finding_ids"] = np.asarray(ids, dtype=str)
    for i, fid in enumerate(ids):
        fa = per_finding[fid]
        arrays[f"weights_{i}"] = np.asarray(fa.weights, dtype=np.float16)
        arrays[f"place_{i}"] = np.asarray(
            [fa.index_lo_zyx, fa.index_hi_zyx, fa.scale_zyx_mm, fa.translate_zyx_mm], dtype=float
        )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _attention_from_file(path: Path) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Read :func:`_attention_bytes`: ``(float16 map on the CT grid or None, per-finding)``."""
    from ..analysis import FindingAttention

    with np.load(path) as z:
        attention = None
        if "quantised" in z:
            attention = np.zeros(tuple(int(v) for v in z["shape"]), dtype=np.float16)
            q = z["quantised"]
            box = tuple(
                slice(int(o), int(o) + n) for o, n in zip(z["offset"], q.shape, strict=True)
            )
            attention[box] = q.astype(np.float32) / ATTENTION_LEVELS
        per: dict[str, Any] = {}
        for i, fid in enumerate(z["finding_ids"].tolist()):
            lo, hi, scale, translate = (tuple(float(v) for v in row) for row in z[f"place_{i}"])
            per[str(fid)] = FindingAttention(
                weights=z[f"weights_{i}"].astype(np.float32),
                index_lo_zyx=lo,
                index_hi_zyx=hi,
                scale_zyx_mm=scale,
                translate_zyx_mm=translate,
            )
    return attention, per


def _redrawn_bytes(
    redrawn: dict[str, tuple[np.ndarray, np.ndarray, bool]], took: dict[str, dict[int, np.ndarray]]
) -> bytes:
    """``redrawn.npz``: :attr:`ReviewSession._redrawn` and :attr:`ReviewSession._took`."""
    import io

    arrays: dict[str, np.ndarray] = {}
    for i, (fid, (marked, region, drawn)) in enumerate(redrawn.items()):
        arrays[f"id{i}"] = np.asarray([fid])
        arrays[f"marked{i}"] = np.asarray(marked, dtype=np.int64)
        arrays[f"region{i}"] = np.asarray(region, dtype=np.int64)
        arrays[f"drawn{i}"] = np.asarray([bool(drawn)])
    pieces = [(fid, v, idx) for fid, by in took.items() for v, idx in by.items()]
    for i, (fid, v, idx) in enumerate(pieces):
        arrays[f"took_id{i}"] = np.asarray([fid])
        arrays[f"took_label{i}"] = np.asarray([int(v)])
        arrays[f"took{i}"] = np.asarray(idx, dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, n=np.asarray([len(redrawn)]), n_took=np.asarray([len(pieces)]), **arrays
    )
    return buf.getvalue()


def _redrawn_from_file(
    path: Path,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, bool]], dict[str, dict[int, np.ndarray]]]:
    """What :func:`_redrawn_bytes` wrote (a file from before session 47 holds no ``took``)."""
    with np.load(path) as z:
        redrawn = {
            str(z[f"id{i}"][0]): (z[f"marked{i}"], z[f"region{i}"], bool(z[f"drawn{i}"][0]))
            for i in range(int(z["n"][0]))
        }
        took: dict[str, dict[int, np.ndarray]] = {}
        for i in range(int(z["n_took"][0]) if "n_took" in z.files else 0):
            took.setdefault(str(z[f"took_id{i}"][0]), {})[int(z[f"took_label{i}"][0])] = z[
                f"took{i}"
            ]
    return redrawn, took


def _labels_from_file(path: Path) -> tuple[np.ndarray, int]:
    with np.load(path) as z:
        shape = tuple(int(v) for v in z["shape"])
        out = np.zeros(shape, dtype=np.uint16)
        out.ravel()[z["index"]] = z["values"]
        return out, int(z["seq"][0])


@dataclass
class EditRecord:
    """One change made by the reader."""

    time: float
    action: str
    finding_id: str | None
    before: Any = None
    after: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``time`` in seconds since the epoch, as autosaved)."""
        return asdict(self)

    def to_case_dict(self) -> dict[str, Any]:
        """As the case format's ``provenance.edit_log`` has it: ``time`` an ISO 8601 UTC string."""
        import datetime as dt

        when = dt.datetime.fromtimestamp(self.time, dt.timezone.utc)
        return {**asdict(self), "time": when.isoformat(timespec="milliseconds")}

    @classmethod
    def from_case_dict(cls, d: dict[str, Any]) -> EditRecord:
        """The inverse of :meth:`to_case_dict` (``KeyError``, ``TypeError`` or ``ValueError``
        for an entry that is not one)."""
        import datetime as dt

        when = dt.datetime.fromisoformat(str(d["time"])).timestamp()
        return cls(when, str(d["action"]), d.get("finding_id"), d.get("before"), d.get("after"))


@dataclass(eq=False)
class ReviewSession:
    """Review state of one study (see the module docstring).

    Attributes
    ----------
    volume
        The CT volume (not saved; the study is reopened from its file).
    findings
        All findings, rejected ones included (they are kept as negatives for retraining).
    labels
        uint16 label map on the CT grid; finding ``f`` owns the voxels ``labels == f.label``.
    draft
        The model's report as first drafted (what the "Changes" view compares with).
    sentences
        Finding id -> current findings-section sentence.
    hand_edited
        Ids of findings whose sentence the reader typed.
    extra_lines
        Findings-section lines the reader added that belong to no finding.
    impression_override
        The impression as typed by the reader, or ``None`` while it is generated.
    edit_log
        Every change, oldest first.
    model_info
        Name, version and checksum of the model that drafted the findings.
    autosave_root
        Root folder of autosaves; ``None`` disables autosave.
    run
        Which of the study's reviews this is: 1, or 2, 3, ... for runs kept beside the first
        ("Keep both"); each has its own autosave folder (:func:`autosave_dir`).
    attention
        The model's attention map on the CT grid (float16, max 1), or ``None``; autosaved once
        (uint8-quantised) so that a restored review shows it again.
    attention_per_finding
        Finding id -> :class:`~napari_ctreport.analysis.FindingAttention` (autosaved as float16).
    lung_ml
        Segmented lung in the scan (ml, from the analysis); under
        :data:`~napari_ctreport.report.writer.PARTIAL_LUNG_ML` the report says that only part
        of the lungs was scanned. ``None`` when not known (nothing is said).
    set_aside
        Candidates the model proposed, measured and then set aside by a plausibility rule
        (:attr:`~napari_ctreport.analysis.Analysis.dropped`: ids ``"D1"``, ``"D2"``, ...,
        ``attributes["dropped_by"]`` naming the rule), not in the report. The reader can look
        at them and add one as a finding (:meth:`add_set_aside`); it then leaves this list.
    """

    volume: CTVolume
    findings: list[Finding]
    labels: np.ndarray
    draft: Report
    sentences: dict[str, str] = field(default_factory=dict)
    hand_edited: set[str] = field(default_factory=set)
    extra_lines: list[str] = field(default_factory=list)
    impression_override: str | None = None
    edit_log: list[EditRecord] = field(default_factory=list)
    model_info: dict[str, str] = field(default_factory=dict)
    draft_findings: list[dict[str, Any]] = field(default_factory=list)
    autosave_root: Path | None = None
    run: int = 1
    lungs: np.ndarray | None = None
    on_change: Callable[[str, str | None], None] | None = None
    attention: np.ndarray | None = None
    attention_per_finding: dict[str, Any] = field(default_factory=dict)
    set_aside: list[Finding] = field(default_factory=list)
    lung_ml: float | None = None
    _attention_dirty: bool = False
    _seq: int = 0
    _labels_seq_saved: int = -1
    _labels_dirty: bool = True
    #: How many times the session itself has written :attr:`labels` (a box moved or drawn, a
    #: mask redrawn for its kind), not the reader's paint: a viewer's undo history of the label
    #: map, which knows only the strokes, is stale after each (:meth:`ReviewDock._session_changed`).
    labels_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: finding id -> (the region the reader marked, the region drawn from it for its kind,
    #: whether a drawn box marked it), flat indices: a finding redrawn as an effusion, or a
    #: drawn box's region cut back to a solid lesion's edge. A kind change starts again from
    #: the marked region while the mask is still the one drawn from it (:meth:`_redraw_for`).
    _redrawn: dict[str, tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=dict)
    _redrawn_dirty: bool = False
    #: label -> (finding dict, sentence, whether typed) of the reader's findings erased whole
    #: (:meth:`_remove`), for :meth:`add_painted` to bring back when the erase is undone.
    _removed: dict[int, tuple[dict[str, Any], str, bool]] = field(default_factory=dict)
    #: finding id -> {label of a rejected finding: flat indices of its voxels the finding took}
    #: (autosaved in ``redrawn.npz``: :attr:`_redrawn_dirty` marks either changed)
    _took: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_analysis(
        cls,
        analysis: Any,
        volume: CTVolume,
        *,
        autosave_root: str | Path | None = None,
        lungs: np.ndarray | None = None,
        run: int = 1,
    ) -> ReviewSession:
        """Start reviewing an :class:`~napari_ctreport.analysis.Analysis` of ``volume`` (``run``:
        see the class attributes)."""
        sentences = {
            s.finding_id: s.text
            for s in analysis.report.sentences
            if s.section == "findings" and s.finding_id
        }
        for f in analysis.findings:
            sentences.setdefault(f.id, describe_finding(f))
        session = cls(
            volume=volume,
            findings=[Finding.from_dict(f.to_dict()) for f in analysis.findings],
            labels=np.asarray(analysis.labels, dtype=np.uint16).copy(),
            draft=analysis.report,
            sentences=sentences,
            model_info=dict(analysis.model_info),
            draft_findings=[f.to_dict() for f in analysis.findings],
            autosave_root=Path(autosave_root) if autosave_root is not None else None,
            run=int(run),
            lungs=lungs,
            attention=getattr(analysis, "attention", None),
            attention_per_finding=dict(getattr(analysis, "attention_per_finding", None) or {}),
            set_aside=[
                Finding.from_dict(f.to_dict()) for f in (getattr(analysis, "dropped", None) or [])
            ],
            lung_ml=(getattr(analysis, "volume_info", None) or {}).get("lung_ml"),
        )
        session._attention_dirty = session.attention is not None or bool(
            session.attention_per_finding
        )
        session._log("analysis", None, None, {"model": dict(analysis.model_info)})
        session.save()
        return session

    @classmethod
    def from_case(
        cls,
        case: Any,
        volume: CTVolume,
        *,
        autosave_root: str | Path | None = None,
        run: int = 1,
    ) -> ReviewSession:
        """Review the findings of a case folder (:class:`~napari_ctreport.io.case.Case`: a
        synthetic case, an exported draft or a corrected case) on its CT ``volume``.

        The case's findings, label map and report are taken as they stand. What the case's
        edit log says the reader typed (:func:`_typed_in_log`: a finding's sentence, lines of
        no finding, the impression) is the reader's own and survives later edits; the rest is
        a writer's (this one's, an older one's, the model's) and is written again when its
        finding changes, and the impression is generated. An older writer's impression was
        taken for a typed one and kept describing a mass the reader had rejected. The
        "Changes" view compares with the model's draft when the case keeps it (``original``),
        else with the case as opened. The case's edit log is carried on, followed by a "case
        opened" record.
        """
        labels = np.asarray(case.load_labels(volume), dtype=np.uint16)
        findings = [Finding.from_dict(f.to_dict()) for f in case.findings]
        report = Report.from_dict(case.report)
        original = case.original or {}
        prov = case.provenance or {}
        typed_ids, typed_lines, typed_impression = _typed_in_log(prov.get("edit_log") or [])
        sentences = {f.id: describe_finding(f) for f in findings}
        hand_edited: set[str] = set()
        own_lines: list[str] = []
        for sent in report.sentences:
            if sent.section != "findings":
                continue
            if sent.finding_id in sentences:
                sentences[sent.finding_id] = sent.text  # rewritten on an edit unless typed
                if sent.finding_id in typed_ids:
                    hand_edited.add(sent.finding_id)
            elif not sent.finding_id and typed_lines:
                own_lines.append(sent.text)
        session = cls(
            volume=volume,
            findings=findings,
            labels=labels,
            draft=Report.from_dict(original.get("report") or case.report),
            sentences=sentences,
            hand_edited=hand_edited,
            model_info=dict(prov.get("model") or {}),
            draft_findings=list(  # a draft with no finding is one ([]), not a missing draft
                [f.to_dict() for f in findings]
                if original.get("findings") is None
                else original["findings"]
            ),
            edit_log=_case_edit_log(prov.get("edit_log") or []),
            autosave_root=Path(autosave_root) if autosave_root is not None else None,
            run=int(run),
            lung_ml=case.lung_ml,  # before the report is compared: its coverage note needs it
        )
        # lines of no finding are the writer's ("No pleural effusion.") or the reader's own
        generated = {t for fid, t in session.findings_lines() if fid is None}
        session.extra_lines = [t for t in own_lines if t not in generated]
        if (
            typed_impression
            and report.impression.strip()
            and session.report().impression != report.impression
        ):
            session.impression_override = report.impression
        session._log(
            "case opened",
            None,
            None,
            {"case_id": case.case_id, "source": prov.get("source"), "folder": str(case.folder)},
        )
        session.save()
        return session

    # -- lookup --------------------------------------------------------------------------
    def finding(self, finding_id: str) -> Finding:
        """The finding with id ``finding_id`` (``KeyError`` if none)."""
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(finding_id)

    def by_label(self, label: int) -> Finding | None:
        """The finding owning label value ``label``."""
        return next((f for f in self.findings if f.label == label), None)

    def mask(self, finding_id: str) -> np.ndarray:
        """Boolean mask of a finding's voxels."""
        f = self.finding(finding_id)
        return self.labels == f.label if f.label else np.zeros(self.labels.shape, dtype=bool)

    @property
    def changes(self) -> int:
        """How many changes the reader made in this review (edit-log records other than the
        run's own and the opening of a case folder)."""
        from ..io.case import NOT_EDITS

        return sum(e.action not in NOT_EDITS for e in self.edit_log)

    def active_findings(self) -> list[Finding]:
        """Findings that go into the report (all but rejected)."""
        return [f for f in self.findings if f.status != "rejected"]

    def ensure_lungs(self) -> np.ndarray:
        """The lung mask used to locate findings (computed once, ~2 s on a 256² chest CT)."""
        if self.lungs is None:
            from ..report.anatomy import segment_lungs

            self.lungs = segment_lungs(self.volume)
        return self.lungs

    # -- edits ---------------------------------------------------------------------------
    def set_status(self, finding_id: str, status: str) -> Finding:
        """Accept (``"accepted"``), reject (``"rejected"``) or reset a finding.

        Raises
        ------
        ValueError
            For a status not in :data:`~napari_ctreport.report.findings.STATUSES`, or for any
            but ``"rejected"`` when the finding's mask was erased (its measurements are of a
            region that is gone, and an export would have no region for it); nothing changes.
        """
        from ..report.findings import STATUSES

        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        f = self.finding(finding_id)
        before = f.status
        if before == status:
            return f
        if status != "rejected" and f.label and not self.mask(finding_id).any():
            raise ValueError(
                f"{finding_id} has no region left (its mask was erased): "
                "paint it or draw its box again first"
            )
        f.status = status
        self._log("status", finding_id, before, status)
        return f

    def set_kind(self, finding_id: str, kind: str) -> Finding:
        """Change a finding's kind (one of the lexicon's kinds).

        A finding that becomes a pleural effusion is measured as the analysis measures one:
        its mask is redrawn on the fluid it holds (:func:`~napari_ctreport.analysis.
        effusion_in_region`: a box drawn around an effusion also holds chest wall and liver),
        unless the reader painted its mask (``attributes["mask_by_reader"]``). A part-solid
        nodule gets its solid component measured."""
        if kind not in KINDS:
            raise ValueError(f"unknown finding kind {kind!r}")
        f = self.finding(finding_id)
        if f.kind == kind:
            return f
        before = f.to_dict()
        f.kind = kind
        f.attributes.pop("kind_from_ct", None)  # the reader's own now
        self._redraw_for(f)
        self._measure_solid_component(f)
        self._mark_edited(f)
        self._refresh_sentence(f)
        self._log("kind", finding_id, before, f.to_dict())
        return f

    def set_location(self, finding_id: str, *, side: str, zone: str | None = None) -> Finding:
        """Overrule where a finding is (side, and optionally zone)."""
        if side not in SIDES or (zone is not None and zone not in ZONES):
            raise ValueError(f"unknown side/zone {side!r} {zone!r}")
        f = self.finding(finding_id)
        if f.side == side and (zone is None or f.zone == zone):
            return f
        before = f.to_dict()
        f.side = side
        if zone is not None:
            f.zone = zone
        f.attributes["location_by_reader"] = True
        self._mark_edited(f)
        self._refresh_sentence(f)
        self._log("location", finding_id, before, f.to_dict())
        return f

    def mask_changed(self, finding_ids: Iterable[str] | None = None) -> list[Finding]:
        """Re-measure findings after their voxels in :attr:`labels` were edited in place
        (painting). ``None`` re-measures every finding whose measurements changed. A finding
        whose voxels are all erased is rejected (the model's: kept as a negative for
        retraining) or, when the reader added it, removed (an undone stroke takes back the
        finding it painted: it stayed as a rejected finding with no voxel, exported so)."""
        self._labels_dirty = True
        ids = [f.id for f in self.findings] if finding_ids is None else list(finding_ids)
        drafted = self.model_finding_ids()
        changed = []
        for fid in ids:
            f = self.finding(fid)
            before = f.to_dict()
            m = self.mask(fid)
            if not m.any() and fid not in drafted:
                self._remove(f)
                self._log("removed", fid, before, None)
                changed.append(f)
                continue
            if not m.any():
                if f.status != "rejected":
                    f.status = "rejected"
                    self._log("mask erased", fid, before, f.to_dict())
                    changed.append(f)
                continue
            back = self._status_before_erase(fid) if f.status == "rejected" else None
            if back is not None:  # the erase undone (Ctrl+Z) or painted back: as it was
                f.status = back
                self._log("mask restored", fid, before, f.to_dict())
                before = f.to_dict()
                changed.append(f)
            self._remeasure(f, m)
            after = f.to_dict()
            if _measurements(before) != _measurements(after):
                f.attributes["mask_by_reader"] = True  # painted: never redrawn for the reader
                self._mark_edited(f)
                after = f.to_dict()
                self._refresh_sentence(f)
                self._log("mask", fid, before, after)
                if back is None:
                    changed.append(f)
        if not changed:
            self.save()
        return changed

    def _status_before_erase(self, finding_id: str) -> str | None:
        """The status a finding had before erasing its whole mask rejected it, or ``None`` when
        it was not so rejected (the reader rejected it, or set its status since)."""
        for e in reversed(self.edit_log):
            if e.finding_id != finding_id:
                continue
            if e.action == "mask erased":
                return str((e.before or {}).get("status") or "proposed")
            if e.action in ("status", "mask restored"):
                return None
        return None

    def _taken(self) -> np.ndarray:
        """Voxels a finding the reader adds or redraws may not take: every label but those of
        rejected findings (a box drawn again over a lesion whose finding the reader rejected
        takes its voxels; they blocked it: "the drawn box holds no free voxel")."""
        rejected = [f.label for f in self.findings if f.status == "rejected" and f.label]
        taken = self.labels > 0
        if rejected:
            taken &= ~np.isin(self.labels, rejected)
        return taken

    def model_finding_ids(self) -> set[str]:
        """Ids of the model's findings (its draft's): the others the reader added."""
        return {str(d.get("id")) for d in self.draft_findings}

    def _write_region(self, region: np.ndarray, f: Finding) -> None:
        """Label ``region`` as finding ``f``'s, counted in :attr:`labels_written` when that
        changes the label map. Voxels of rejected findings it takes (:meth:`_taken` lets it) are
        noted, to be given back if ``f`` is deleted, and each rejected finding that keeps some
        voxels is measured again on them (it kept its old size, and accepted again it reported
        it)."""
        label = int(f.label)
        if np.any(self.labels[region] != label):  # (a painted label may be there already)
            self.labels_written += 1
        self._labels_dirty = True
        owners = [int(v) for v in np.unique(self.labels[region]) if v and v != label]
        took = {v: np.flatnonzero(region & (self.labels == v)) for v in owners}
        self.labels[region] = label
        for v, idx in took.items():
            self._redrawn_dirty = True
            self._took.setdefault(f.id, {}).setdefault(v, np.zeros(0, dtype=np.int64))
            self._took[f.id][v] = np.union1d(self._took[f.id][v], idx)
            g = self.by_label(v)
            if g is not None and (self.labels == v).any():
                self._remeasure(g, self.labels == v)

    def delete_added(self, finding_id: str) -> None:
        """Take a finding the reader added out of the review, its voxels with it (its box
        deleted); a set-aside candidate the reader brought in is set aside again, and voxels it
        took from rejected findings are theirs again. A model finding cannot be deleted, only
        rejected (``ValueError``): it stays, with its mask, as a negative for retraining. A
        drawn box the reader deleted stayed as a rejected finding, exported as "rejected on
        review", its voxels blocking a box drawn again over the same lesion."""
        f = self.finding(finding_id)
        if finding_id in self.model_finding_ids():
            raise ValueError(f"{finding_id} is the model's finding: reject it instead")
        before = f.to_dict()
        if f.label:
            self.labels[self.labels == f.label] = 0
            gave = self._took.pop(finding_id, {})
            self._redrawn_dirty |= bool(gave)
            for v, idx in gave.items():  # back to their owners
                g = self.by_label(v)
                if g is not None:
                    free = idx[self.labels.flat[idx] == 0]
                    self.labels.flat[free] = v
                    self._remeasure(g, self.labels == v)
            self.labels_written += 1
            self._labels_dirty = True
        self._remove(f)
        self._removed.pop(int(f.label or 0), None)  # deleted on purpose: never brought back
        came_from = f.attributes.get("set_aside_id")
        if came_from:  # a set-aside candidate brought in: set aside again (it was lost)
            added = next(
                (e for e in reversed(self.edit_log) if e.action == "add" and e.finding_id == f.id),
                None,
            )
            if added is not None and isinstance(added.before, dict):
                self.set_aside.append(Finding.from_dict(added.before))
        self._log("removed", finding_id, before, None)

    def _remove(self, f: Finding) -> None:
        """Take a finding the reader added out of the review (no voxel of it is left); kept
        aside by its label, so that the stroke undone brings the same finding back."""
        if f.label:
            self._removed[int(f.label)] = (
                f.to_dict(),
                self.sentences.get(f.id, ""),
                f.id in self.hand_edited,
            )
        self.findings.remove(f)
        self.sentences.pop(f.id, None)
        self.hand_edited.discard(f.id)
        self._redrawn_dirty |= self._redrawn.pop(f.id, None) is not None

    def move_box(
        self,
        finding_id: str,
        lo_index_zyx: Sequence[float],
        hi_index_zyx: Sequence[float],
    ) -> Finding:
        """Move or resize a finding's box (CT index coordinates of its outer corners).

        The mask moves with the box centre (whole voxels); a resized box keeps the part of the
        moved mask inside it, and a box that no longer holds any of it is filled as a drawn box
        is (:meth:`add_box`).
        """
        f = self.finding(finding_id)
        before = f.to_dict()
        shape = np.asarray(self.labels.shape)
        lo_new, hi_new = _clip_box(lo_index_zyx, hi_index_zyx, shape)
        old = self.mask(finding_id)
        idx = np.argwhere(old)
        if idx.size:
            lo_old = idx.min(axis=0) - 0.5
            hi_old = idx.max(axis=0) + 0.5
            shift = np.round((lo_new + hi_new) / 2.0 - (lo_old + hi_old) / 2.0).astype(int)
        else:
            shift = np.zeros(3, dtype=int)
        new = _shift_mask(old, shift)
        box = _box_slices(lo_new, hi_new)
        inside = np.zeros_like(new)
        inside[box] = new[box]
        if not inside.any():
            inside = self._box_region(lo_new, hi_new)
        inside &= ~self._taken() | old  # not another (not rejected) finding's voxels
        if not inside.any():
            raise ValueError(f"the box of {finding_id} would hold none of its own voxels")
        self.labels[old] = 0
        self._write_region(inside, f)
        self._remeasure(f, self.labels == f.label)
        self._mark_edited(f)
        self._refresh_sentence(f)
        self._log("box", finding_id, before, f.to_dict())
        return f

    def add_box(
        self,
        lo_index_zyx: Sequence[float],
        hi_index_zyx: Sequence[float],
        *,
        kind: str | None = None,
    ) -> Finding:
        """Add a finding the model missed from a box drawn by the reader.

        Its mask is the largest connected region above :data:`ADDED_LESION_MIN_HU` inside the
        ellipsoid inscribed in the box (the ellipsoid itself when the box holds no such voxel);
        status ``"added"``, score 1. With no ``kind`` it is the kind the CT shows there
        (:func:`~napari_ctreport.analysis.kind_from_ct`), for the reader to check.
        """
        return self._add_region(lo_index_zyx, hi_index_zyx, kind=kind)

    def add_rectangle(
        self,
        z_index: int,
        lo_yx: Sequence[float],
        hi_yx: Sequence[float],
        *,
        kind: str | None = None,
    ) -> Finding:
        """Add a finding from a rectangle the reader drew on axial slice ``z_index`` (index
        coordinates of its outer corners): the box is as deep in mm as the rectangle is wide
        (the mean of its two sides), centred on that slice, and at least that slice
        (:meth:`add_box`)."""
        lo_yx = np.asarray(lo_yx, dtype=float)
        hi_yx = np.asarray(hi_yx, dtype=float)
        sp = np.asarray(self.volume.spacing_zyx, dtype=float)
        half_mm = float(np.mean(np.abs(hi_yx - lo_yx) * sp[1:])) / 2.0
        half_z = max(0.5, half_mm / sp[0])
        return self.add_box((z_index - half_z, *lo_yx), (z_index + half_z, *hi_yx), kind=kind)

    def add_drawn(self, vertices: np.ndarray, *, kind: str | None = None) -> Finding:
        """Add a finding from a rectangle the reader drew on a slice of any plane: axial,
        coronal or sagittal (CT index coordinates of its corners; the plane is the axis along
        which they do not vary). The box is as deep across that plane, in mm, as the rectangle
        is wide (the mean of its two sides), centred on the slice (:meth:`add_box`)."""
        axis, at, lo, hi = rectangle_plane(vertices)
        sp = np.asarray(self.volume.spacing_zyx, dtype=float)
        sides = [a for a in range(3) if a != axis]
        half_mm = float(np.mean([(hi[a] - lo[a]) * sp[a] for a in sides])) / 2.0
        half = max(0.5, half_mm / sp[axis])
        lo[axis], hi[axis] = at - half, at + half
        return self.add_box(lo, hi, kind=kind)

    def add_painted(self, label: int, *, kind: str | None = None) -> Finding:
        """Add a finding the model missed that the reader painted in :attr:`labels` with a label
        value no finding has (napari's "new label"): its mask is every voxel of that value,
        measured on the CT; status ``"added"``, score 1; with no ``kind``, the kind the CT shows
        there (:meth:`add_box`).

        Raises
        ------
        ValueError
            When a finding already has this label, or no voxel has it.
        """
        label = int(label)
        if label <= 0 or self.by_label(label) is not None:
            raise ValueError(f"label {label} is not a new one")
        region = self.labels == label
        if not region.any():
            raise ValueError(f"no voxel is painted with label {label}")
        gone = self._removed.pop(label, None)
        if kind is None and gone is not None and gone[0]["id"] not in {f.id for f in self.findings}:
            back = self._bring_back(gone, region)
            if back is not None:
                return back
        return self._add_finding(region, label, kind=kind, attributes={"mask_by_reader": True})

    def _bring_back(self, gone: tuple[Any, ...], region: np.ndarray) -> Finding | None:
        """A finding the reader added and then erased whole, its voxels back (the erase
        undone): the same finding, kind, status and typed sentence, measured on them (it came
        back as a new finding, its kind read from the CT again and its sentence lost).
        ``None`` when the voxels lie elsewhere (their centre outside its old box): a new lesion
        painted with the label value the erase had freed."""
        data, sentence, typed = gone
        f = Finding.from_dict(data)
        (lo, hi) = (np.asarray(c, dtype=float) for c in f.bbox_lps_mm)
        self._remeasure(f, region)
        centre = np.asarray(f.center_lps_mm, dtype=float)
        if not np.all((centre >= np.minimum(lo, hi) - 1.0) & (centre <= np.maximum(lo, hi) + 1.0)):
            return None
        self.findings.append(f)
        if typed:
            self.sentences[f.id] = sentence
            self.hand_edited.add(f.id)
        else:
            self.sentences[f.id] = describe_finding(f)
        self._labels_dirty = True
        self._log("add", f.id, None, f.to_dict())
        return f

    def _add_region(
        self,
        lo_index_zyx: Sequence[float],
        hi_index_zyx: Sequence[float],
        *,
        kind: str | None,
        attributes: dict[str, Any] | None = None,
        before: Any = None,
    ) -> Finding:
        shape = np.asarray(self.labels.shape)
        lo, hi = _clip_box(lo_index_zyx, hi_index_zyx, shape)
        region = self._box_region(lo, hi) & ~self._taken()
        if not region.any():
            raise ValueError("the drawn box holds no free voxel (it lies on other findings)")
        label = max([int(self.labels.max())] + [f.label for f in self.findings]) + 1
        return self._add_finding(
            region, label, kind=kind, attributes=attributes, before=before, drawn=True
        )

    def _add_finding(
        self,
        region: np.ndarray,
        label: int,
        *,
        kind: str | None,
        attributes: dict[str, Any] | None = None,
        before: Any = None,
        drawn: bool = False,
    ) -> Finding:
        """A finding the reader added on ``region`` (labelled ``label`` in :attr:`labels`),
        measured on the CT: id one past the highest ``F<n>``, status ``"added"``, score 1. With
        ``kind`` ``None`` its kind is read from the CT
        (:func:`~napari_ctreport.analysis.kind_from_ct`; ``attributes["kind_from_ct"]``). The
        region of a ``drawn`` box is cut back to a solid lesion's own edge
        (:func:`~napari_ctreport.report.refine.edge_of_marked_lesion`). A
        "solid nodule" larger than the lexicon's nodule (over
        :data:`~napari_ctreport.report.guidelines.MASS_THRESHOLD_MM`) is added as a mass; a
        part-solid nodule gets its solid component measured."""
        from ..analysis import kind_from_ct, name_by_size
        from ..report.measure import finding_from_mask

        guessed = kind is None
        marked = region
        found: dict[str, np.ndarray] = {}
        if kind is None:
            kind = kind_from_ct(
                mask=region, volume=self.volume, lungs=self.ensure_lungs(), record=found
            )
        region = self._region_for(
            kind,
            marked,
            drawn=drawn,
            painted=bool((attributes or {}).get("mask_by_reader")),
            taken=self._taken(),
            fluid=found.get("effusion"),
        )

        n = 1 + max([0] + [int(f.id[1:]) for f in self.findings if f.id[1:].isdigit()])
        # voxels taken by a finding erased whole, whose id this one reuses, are no one's now
        self._redrawn_dirty |= self._took.pop(f"F{n}", None) is not None
        f = finding_from_mask(
            region,
            volume=self.volume,
            id=f"F{n}",
            kind=kind,
            lungs=self.ensure_lungs(),
            score=1.0,
            label=label,
            status="added",
        )
        if guessed or f.kind == "solid nodule":  # the lexicon's name for its written size
            name_by_size(f)  # (a "mass" the reader named stays one)
        f.attributes.update(attributes or {})
        if guessed:
            f.attributes["kind_from_ct"] = True
        self._measure_solid_component(f, region)
        self._write_region(region, f)
        if drawn:  # a kind change starts again from the box's region
            self._redrawn[f.id] = (np.flatnonzero(marked), np.flatnonzero(region), True)
            self._redrawn_dirty = True
        self.findings.append(f)
        self.sentences[f.id] = describe_finding(f)
        self._log("add", f.id, before, f.to_dict())
        return f

    def set_aside_candidate(self, candidate_id: str) -> Finding:
        """The set-aside candidate with id ``candidate_id`` (``KeyError`` if none)."""
        for c in self.set_aside:
            if c.id == candidate_id:
                return c
        raise KeyError(candidate_id)

    def add_set_aside(self, candidate_id: str) -> Finding:
        """Add a candidate a rule set aside (:attr:`set_aside`) as a finding.

        It is added as a box the reader drew over the candidate's box would be (:meth:`add_box`,
        with the candidate's kind): measured afresh on the CT, status ``"added"``; its
        ``attributes`` keep where it came from (``set_aside_id``, ``dropped_by``, the network's
        ``model_score``). The candidate leaves :attr:`set_aside`; the edit log records the add
        with the candidate as ``before``.

        Raises
        ------
        KeyError
            When no set-aside candidate has this id.
        ValueError
            When the candidate's box holds no free voxel (it lies on other findings).
        """
        c = self.set_aside_candidate(candidate_id)
        lo, hi = finding_box_index(c, self.volume)
        kept = self.set_aside
        self.set_aside = [s for s in kept if s.id != candidate_id]  # before the add is saved
        try:
            return self._add_region(
                lo,
                hi,
                kind=c.kind,
                attributes={
                    "set_aside_id": c.id,
                    "dropped_by": c.attributes.get("dropped_by"),
                    "model_score": round(c.score, 3),
                },
                before=c.to_dict(),
            )
        except ValueError:
            self.set_aside = kept
            raise

    # -- report text ---------------------------------------------------------------------
    def set_sentence(self, finding_id: str, text: str) -> None:
        """The reader typed this sentence for a finding: it is kept until regenerated."""
        before = self.sentences.get(finding_id)
        if before == text:
            return
        self.sentences[finding_id] = text
        self.hand_edited.add(finding_id)
        self._log("sentence", finding_id, before, text)

    def regenerate_sentence(self, finding_id: str) -> str:
        """Replace a finding's sentence (hand-edited or not) by the writer's."""
        f = self.finding(finding_id)
        before = self.sentences.get(finding_id)
        self.hand_edited.discard(finding_id)
        text = describe_finding(f)
        self.sentences[finding_id] = text
        self._log("regenerate sentence", finding_id, before, text)
        return text

    def set_extra_lines(self, lines: Sequence[str]) -> None:
        """Findings-section lines of the reader's own that belong to no finding."""
        lines = [ln for ln in lines if ln.strip()]
        if lines == self.extra_lines:
            return
        before = list(self.extra_lines)
        self.extra_lines = list(lines)
        self._log("free text", None, before, list(lines))

    def set_impression(self, text: str | None) -> None:
        """Type the impression (``None`` returns to the generated impression)."""
        if text == self.impression_override:
            return
        before = self.impression_override
        self.impression_override = text
        self._log("impression", None, before, text)

    def apply_findings_text(self, sentences: dict[str, str], extra: Sequence[str]) -> None:
        """Take the reader's typing in the findings section (see ``report_editor.split_edit``)."""
        for fid, text in sentences.items():
            self.set_sentence(fid, text)
        self.set_extra_lines(extra)

    def findings_lines(self) -> list[tuple[str | None, str]]:
        """The findings section as ``(finding id, line)`` in report order; the id is ``None``
        for generated statements ("No pleural effusion.") and ``""`` for the reader's own lines."""
        base = write_report(self.active_findings(), lung_ml=self.lung_ml)
        out: list[tuple[str | None, str]] = []
        for s in base.sentences:
            if s.section != "findings":
                continue
            if s.finding_id is None:
                out.append((None, s.text))
            else:
                out.append((s.finding_id, self.sentences.get(s.finding_id, s.text)))
        out += [("", ln) for ln in self.extra_lines]
        return out

    def impression_lines(self) -> list[tuple[str | None, str]]:
        """The impression as ``(finding id or None, numbered line)``."""
        if self.impression_override is not None:
            return [(None, ln) for ln in self.impression_override.splitlines()]
        base = write_report(self.active_findings(), lung_ml=self.lung_ml)
        items = [s for s in base.sentences if s.section == "impression"]
        return [(s.finding_id, f"{i}. {s.text}") for i, s in enumerate(items, start=1)]

    def disagreements(self) -> list[str]:
        """Where the report and the findings as they stand disagree: each sentence stating what
        no finding is (kind, side, zone, size, volume, grade, count; a denial of a kind there
        is: :func:`~napari_ctreport.report.parse.consistency_details`), such as a sentence or
        impression the reader typed before changing or rejecting its finding, and a line
        ``"Not in the report: F3 solid nodule, right upper zone"`` for each finding the report
        does not describe (its sentence typed away). Empty when the two agree."""
        from ..report.parse import consistency_details

        details = consistency_details(self.report(), self.findings)
        wrong = [st.sentence or st.text for st, ok, _ in details["statements"] if not ok]
        covered = set(details["covered"])
        missing = [
            f"Not in the report: {f.id} {f.kind}, {f.side} {f.zone} zone"
            for f in self.active_findings()
            if f.id not in covered
        ]
        return [*dict.fromkeys(wrong), *missing]

    def report(self) -> Report:
        """The report as it stands (rejected findings left out)."""
        flines = self.findings_lines()
        ilines = self.impression_lines()
        sentences = [Sentence(t, fid or None, "findings") for fid, t in flines if t.strip()]
        sentences += [Sentence(t, fid, "impression") for fid, t in ilines if t.strip()]
        return Report(
            findings=" ".join(t for _, t in flines if t.strip()),
            impression="\n".join(t for _, t in ilines),
            sentences=sentences,
        )

    def original(self) -> dict[str, Any]:
        """The model's draft as ``{"findings": [...], "report": {...}}`` (for export)."""
        return {"findings": list(self.draft_findings), "report": self.draft.to_dict()}

    def diff(self) -> str:
        """Unified diff of the report against the model's draft (one sentence a line)."""
        return "".join(
            difflib.unified_diff(
                _report_lines(self.draft),
                _report_lines(self.report()),
                fromfile="model draft",
                tofile="reviewed",
            )
        )

    # -- internals -----------------------------------------------------------------------
    def _box_region(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        from ..report.measure import largest_component

        box = _box_slices(lo, hi)
        sub_shape = tuple(s.stop - s.start for s in box)
        c = (lo + hi) / 2.0 - np.array([s.start for s in box])
        r = np.maximum((hi - lo) / 2.0, 0.5)
        zz, yy, xx = np.ogrid[: sub_shape[0], : sub_shape[1], : sub_shape[2]]
        ell = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
        ell = ell <= 1.0
        if not ell.any():
            ell[tuple(min(int(v), n - 1) for v, n in zip(c, sub_shape, strict=True))] = True
        dense = ell & (self.volume.array[box] >= ADDED_LESION_MIN_HU)
        sub = ell
        if dense.any():
            sub = largest_component(dense)
        out = np.zeros(self.labels.shape, dtype=bool)
        out[box] = sub
        return out

    def _remeasure(self, f: Finding, mask: np.ndarray) -> None:
        from ..report.measure import finding_from_mask

        new = finding_from_mask(
            mask,
            volume=self.volume,
            id=f.id,
            kind=f.kind,
            lungs=self.ensure_lungs(),
            score=f.score,
            label=f.label,
            attributes=f.attributes,
            status=f.status,
        )
        if f.attributes.get("location_by_reader"):
            new.side, new.zone = f.side, f.zone
        for name in (
            "side",
            "zone",
            "center_lps_mm",
            "bbox_lps_mm",
            "diameter_mm",
            "short_axis_mm",
            "volume_ml",
            "mean_hu",
        ):
            setattr(f, name, getattr(new, name))
        self._measure_solid_component(f, mask)

    def _effusion_in(self, region: np.ndarray, *, taken: np.ndarray) -> np.ndarray:
        from ..analysis import effusion_in_region

        return effusion_in_region(
            region=region, volume=self.volume, lungs=self.ensure_lungs(), taken=taken
        )

    def _region_for(
        self,
        kind: str,
        marked: np.ndarray,
        *,
        drawn: bool,
        painted: bool,
        taken: np.ndarray,
        fluid: np.ndarray | None = None,
    ) -> np.ndarray:
        """The region a finding of ``kind`` is measured on, from the region the reader
        ``marked``: the fluid it holds for a pleural effusion (not when the reader ``painted``
        it; never ``taken`` voxels; ``fluid``, when the kind's guess followed it already and
        it holds no taken voxel), a solid lesion's edge when a ``drawn`` box marked it
        (:func:`~napari_ctreport.report.refine.edge_of_marked_lesion`), else ``marked``."""
        from ..report.refine import edge_of_marked_lesion

        if kind == "pleural effusion" and not painted:
            if fluid is not None and not (fluid & taken).any():
                return fluid  # followed as effusion_in_region would follow it here
            return self._effusion_in(marked, taken=taken)
        if drawn:
            return edge_of_marked_lesion(marked, volume=self.volume, kind=kind)
        return marked

    def _redraw_for(self, f: Finding) -> None:
        """``f``'s mask drawn again for its (new) kind from the region the reader marked: on
        the fluid it holds for a pleural effusion (unless the reader painted it:
        ``attributes["mask_by_reader"]``), cut back to the lesion's edge for a solid kind when
        a drawn box marked it (:func:`~napari_ctreport.report.refine.edge_of_marked_lesion`),
        else the marked region itself (a slip undone: named an effusion, then a mass again).
        The marked region is the mask as it is, unless an earlier redraw's result is still the
        mask (not painted or moved since): then the region it was drawn from, less the voxels
        other findings took since."""
        mask = self.mask(f.id)
        saved = self._redrawn.pop(f.id, None)
        self._redrawn_dirty |= saved is not None
        if saved is not None and not np.array_equal(np.flatnonzero(mask), saved[1]):
            saved = None  # painted or moved since: the reader's mask now
        drawn = saved is not None and saved[2]
        marked = mask
        if saved is not None:
            marked = np.zeros_like(mask)
            marked.flat[saved[0]] = True
            marked &= ~self._taken() | mask
        new = self._region_for(
            f.kind,
            marked,
            drawn=drawn,
            painted=bool(f.attributes.get("mask_by_reader")),
            taken=self._taken() & ~mask,
        )
        if not new.any():
            return
        if not np.array_equal(new, mask):
            self.labels[mask] = 0
            self._write_region(new, f)
            self._remeasure(f, new)
        if saved is not None or not np.array_equal(new, marked):
            self._redrawn[f.id] = (np.flatnonzero(marked), np.flatnonzero(new), drawn)
            self._redrawn_dirty = True

    def _measure_solid_component(self, f: Finding, mask: np.ndarray | None = None) -> None:
        """A part-solid nodule's ``attributes["solid_diameter_mm"]`` measured on ``mask`` (its
        voxels when ``None``; its follow-up depends on it: Fleischner 2017); any other kind has
        none. A finding with no voxel (a case without its mask) keeps what it had."""
        from ..analysis import solid_component_mm

        if f.kind != "part-solid nodule" and "solid_diameter_mm" not in f.attributes:
            return  # nothing to measure or to drop: no need to look at its voxels
        mask = self.mask(f.id) if mask is None else mask
        if not mask.any():
            return
        solid = None
        if f.kind == "part-solid nodule":
            solid = solid_component_mm(mask=mask, volume=self.volume)
        if solid is None:
            f.attributes.pop("solid_diameter_mm", None)
        else:
            f.attributes["solid_diameter_mm"] = solid

    @staticmethod
    def _mark_edited(f: Finding) -> None:
        if f.status in ("proposed", "accepted"):
            f.status = "edited"

    def _refresh_sentence(self, f: Finding) -> None:
        if f.id not in self.hand_edited:
            self.sentences[f.id] = describe_finding(f)

    def _log(self, action: str, finding_id: str | None, before: Any, after: Any) -> None:
        self.edit_log.append(EditRecord(time.time(), action, finding_id, before, after))
        self.save()
        if self.on_change is not None:
            self.on_change(action, finding_id)

    # -- autosave ------------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """This study's autosave folder, or ``None`` when autosave is off."""
        if self.autosave_root is None:
            return None
        return autosave_dir(self.volume, root=self.autosave_root, run=self.run)

    def to_json_dict(self) -> dict[str, Any]:
        """Everything but the volume and the label map, JSON-ready."""
        return {
            "schema": SESSION_SCHEMA,
            "study_key": study_key(self.volume),
            "shape_zyx": list(self.volume.shape),
            "saved_at": time.time(),
            "seq": self._seq,
            "run": self.run,
            "labels_seq": self._labels_seq_saved,
            "model": dict(self.model_info),
            "findings": [f.to_dict() for f in self.findings],
            "sentences": dict(self.sentences),
            "hand_edited": sorted(self.hand_edited),
            "extra_lines": list(self.extra_lines),
            "impression_override": self.impression_override,
            "draft": self.draft.to_dict(),
            "draft_findings": self.draft_findings,
            "report": self.report().to_dict(),
            "edit_log": [r.to_dict() for r in self.edit_log],
            "set_aside": [f.to_dict() for f in self.set_aside],
            "lung_ml": self.lung_ml,
        }

    def save(self) -> Path | None:
        """Write the autosave (atomically; labels and attention only when they changed)."""
        folder = self.folder
        if folder is None:
            return None
        with self._lock:
            self._seq += 1
            if self._attention_dirty:
                write_atomically(
                    folder / ATTENTION_FILE,
                    _attention_bytes(self.attention, self.attention_per_finding, self._seq),
                )
                self._attention_dirty = False
            if self._labels_dirty:
                write_atomically(folder / LABELS_FILE, _labels_bytes(self.labels, self._seq))
                self._labels_seq_saved = self._seq
                self._labels_dirty = False
            if self._redrawn_dirty:
                write_atomically(folder / REDRAWN_FILE, _redrawn_bytes(self._redrawn, self._took))
                self._redrawn_dirty = False
            data = json.dumps(self.to_json_dict(), indent=1, default=_json_default)
            write_atomically(folder / SESSION_FILE, data.encode())
        return folder

    @classmethod
    def find_autosave(cls, volume: CTVolume, *, root: str | Path | None = None) -> Path | None:
        """The autosave folder of ``volume``'s study if one with a session exists."""
        folder = autosave_dir(volume, root=root)
        return folder if (folder / SESSION_FILE).is_file() else None

    @classmethod
    def find_autosaves(cls, volume: CTVolume, *, root: str | Path | None = None) -> list[Path]:
        """Every autosaved review of ``volume``'s study, run 1 first, then kept runs by number
        (a run kept beside another is restored beside it)."""
        folder = autosave_dir(volume, root=root)
        found = [
            p
            for p in [folder, *(folder.glob(f"{RUN_PREFIX}*") if folder.is_dir() else [])]
            if p.is_dir() and (p / SESSION_FILE).is_file()
        ]
        return sorted(found, key=_run_of)

    @staticmethod
    def autosave_summary(folder: Path) -> dict[str, Any]:
        """``saved_at``, number of findings and of edits of an autosave (for the restore prompt)."""
        d = json.loads((folder / SESSION_FILE).read_text())
        return {
            "saved_at": d.get("saved_at"),
            "n_findings": len(d.get("findings", [])),
            "n_edits": max(0, len(d.get("edit_log", [])) - 1),
            "model": d.get("model", {}),
        }

    @classmethod
    def restore(
        cls,
        volume: CTVolume,
        *,
        root: str | Path | None = None,
        folder: str | Path | None = None,
    ) -> ReviewSession:
        """Reopen the autosaved review of ``volume``'s study.

        Raises
        ------
        FileNotFoundError
            When the study has no autosave.
        ValueError
            When the autosave belongs to another grid.
        """
        folder = Path(folder) if folder is not None else autosave_dir(volume, root=root)
        run = _run_of(folder)
        d = json.loads((folder / SESSION_FILE).read_text())
        if tuple(d["shape_zyx"]) != tuple(volume.shape):
            raise ValueError(
                f"{folder}: autosave is for a {d['shape_zyx']} grid, not {volume.shape}"
            )
        labels, labels_seq = _labels_from_file(folder / LABELS_FILE)
        if labels_seq != d.get("labels_seq"):
            log.info(
                "autosave %s: label map from save %s, session from %s",
                folder,
                labels_seq,
                d.get("seq"),
            )
        session = cls(
            volume=volume,
            findings=[Finding.from_dict(f) for f in d["findings"]],
            labels=labels,
            draft=Report.from_dict(d["draft"]),
            sentences=dict(d.get("sentences", {})),
            hand_edited=set(d.get("hand_edited", [])),
            extra_lines=list(d.get("extra_lines", [])),
            impression_override=d.get("impression_override"),
            edit_log=[EditRecord(**r) for r in d.get("edit_log", [])],
            model_info=dict(d.get("model", {})),
            draft_findings=list(d.get("draft_findings", [])),
            set_aside=[Finding.from_dict(f) for f in d.get("set_aside", [])],
            lung_ml=d.get("lung_ml"),
            autosave_root=(folder.parent if run == 1 else folder.parent.parent)
            if root is None
            else Path(root),
            run=run,
        )
        session._seq = int(d.get("seq", 0))
        session._labels_seq_saved = labels_seq
        session._labels_dirty = False
        if (folder / REDRAWN_FILE).is_file():
            try:  # a kind changed back starts again from what the drawn box marked
                session._redrawn, session._took = _redrawn_from_file(folder / REDRAWN_FILE)
            except (OSError, ValueError, KeyError) as e:
                log.warning("autosave %s: drawn regions unreadable (%s)", folder, e)
        if (folder / ATTENTION_FILE).is_file():
            try:
                attention, per = _attention_from_file(folder / ATTENTION_FILE)
            except (OSError, ValueError, KeyError) as e:  # a display aid: restore without it
                log.warning("autosave %s: attention maps unreadable (%s)", folder, e)
            else:
                if attention is not None and attention.shape != tuple(volume.shape):
                    log.warning("autosave %s: attention map is for another grid", folder)
                    attention = None
                session.attention, session.attention_per_finding = attention, per
        return session

    def discard_autosave(self) -> None:
        """Delete this study's autosave (after export, or when the reader starts over). An
        edit after it autosaves the whole review again (labels and attention included)."""
        folder = self.folder
        if folder is None:
            return
        with self._lock:
            for name in (SESSION_FILE, LABELS_FILE, ATTENTION_FILE, REDRAWN_FILE):
                try:
                    (folder / name).unlink()
                except FileNotFoundError:
                    pass
            self._labels_dirty = True
            self._redrawn_dirty = bool(self._redrawn or self._took)
            self._attention_dirty = self.attention is not None or bool(self.attention_per_finding)


def _typed_in_log(entries: Sequence[Any]) -> tuple[set[str], bool, bool]:
    """What a case's edit log says the reader typed and left typed: the ids of findings whose
    sentence was typed ("sentence", not "regenerate sentence" after it), whether lines of no
    finding were ("free text" with lines), whether the impression was ("impression" with a
    text; ``None`` went back to the generated one)."""
    ids: set[str] = set()
    lines = impression = False
    for e in entries:
        if not isinstance(e, dict):
            continue
        action, fid, after = e.get("action"), e.get("finding_id"), e.get("after")
        if action == "sentence" and fid:
            ids.add(str(fid))
        elif action == "regenerate sentence" and fid:
            ids.discard(str(fid))
        elif action == "free text":
            lines = bool(after)
        elif action == "impression":
            impression = isinstance(after, str) and bool(after.strip())
    return ids, lines, impression


def _case_edit_log(entries: Sequence[dict[str, Any]]) -> list[EditRecord]:
    """A case's ``provenance.edit_log`` as edit records, so that a case reviewed again keeps
    the edits made before it was exported; entries that cannot be read are left out."""
    out = []
    for e in entries:
        try:
            out.append(EditRecord.from_case_dict(e))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _measurements(d: dict[str, Any]) -> tuple:
    keys = ("side", "zone", "center_lps_mm", "bbox_lps_mm", "diameter_mm", "volume_ml", "mean_hu")
    solid = (d.get("attributes") or {}).get("solid_diameter_mm")
    return (*(json.dumps(d[k]) for k in keys), json.dumps(solid))


def _report_lines(report: Report) -> list[str]:
    lines = ["FINDINGS:\n"]
    lines += [s.text + "\n" for s in report.sentences if s.section == "findings"]
    if not any(s.section == "findings" for s in report.sentences) and report.findings:
        lines += [report.findings + "\n"]
    lines += ["\n", "IMPRESSION:\n"]
    lines += [ln + "\n" for ln in report.impression.splitlines()]
    return lines


def _clip_box(
    lo: Sequence[float], hi: Sequence[float], shape: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A box ``(lo, hi)`` (index coordinates of its corners) inside the volume of ``shape``,
    at least a voxel deep: a box beyond either end keeps the edge voxel (a box past the far end
    once kept none: it was cut to zero depth there and grown a voxel outwards)."""
    a = np.asarray(lo, dtype=float)
    b = np.asarray(hi, dtype=float)
    lo2 = np.clip(np.minimum(a, b), -0.5, shape - 1.5)
    hi2 = np.clip(np.maximum(a, b), -0.5, shape - 0.5)
    hi2 = np.maximum(hi2, lo2 + 1.0)
    return lo2, hi2


def _box_slices(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
    """Voxels whose centres lie inside the box, at least one per axis
    (:func:`~napari_ctreport._napari.layers.voxel_range`)."""
    start, stop = voxel_range(lo, hi)
    stop = np.maximum(stop, start + 1)
    return tuple(slice(int(s), int(e)) for s, e in zip(start, stop, strict=True))  # type: ignore[return-value]


def _shift_mask(mask: np.ndarray, shift: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    src = []
    dst = []
    for n, s in zip(mask.shape, shift, strict=True):
        s = int(s)
        if abs(s) >= n:
            return out
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# -- running the analysis away from the UI process ------------------------------------------------
class AnalysisCancelled(Exception):
    """:func:`run_analysis` stopped because it was cancelled. (Not the model's own ``Cancelled``:
    that lives next to torch, and importing torch in the viewer's process holds its GIL for
    half a second while the shared libraries load.)"""


def _analysis_child(volume, model, device, out_queue, stop) -> None:  # pragma: no cover - child
    """Body of the analysis process: analyse, locate the lungs, send everything back."""
    if stop.is_set():  # cancelled while this process started: before loading torch
        out_queue.put(("cancelled",))
        return
    from ..analysis import analyze
    from ..model.inference import Cancelled, check_cancel
    from ..report.anatomy import segment_lungs

    try:
        analysis = analyze(
            volume,
            model=model,
            device=device,
            progress=lambda f, m: out_queue.put(("progress", float(f), str(m))),
            cancel=stop.is_set,
        )
        check_cancel(stop.is_set)
        lungs = segment_lungs(volume)
        out_queue.put(("result", (analysis, lungs)))
    except Cancelled:
        out_queue.put(("cancelled",))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        out_queue.put(("error", f"{type(e).__name__}: {e}"))


@contextlib.contextmanager
def _main_module_hidden():
    """Start a ``spawn`` child without re-running the parent's ``__main__`` script in it (a
    script that starts napari without an ``if __name__ == "__main__"`` guard would otherwise
    open a second viewer in the child)."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


#: Seconds a running analysis process is given to stop by itself after a cancel before it is
#: killed (one that has not started analysing is killed at once).
CANCEL_GRACE_S = 3.0


def run_analysis(
    volume: CTVolume,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    cancel: threading.Event | None = None,
    isolate: bool = True,
) -> tuple[Any, np.ndarray]:
    """:func:`napari_ctreport.analysis.analyze` plus the lung mask, by default in a separate
    process (``spawn``), so that no step of the analysis can hold the calling process's GIL and
    stall a user interface. Returns ``(analysis, lungs)``.

    With ``isolate`` the calling process never imports torch (nor any other part of the model).

    Raises
    ------
    AnalysisCancelled
        When ``cancel`` is set (the child stops at its next check, or is killed after
        :data:`CANCEL_GRACE_S`; at once while it is still starting).
    RuntimeError
        When the analysis fails (message of the child's exception) or the child dies.
    """
    import multiprocessing as mp
    import queue

    if not isolate:
        from ..analysis import analyze
        from ..model.inference import Cancelled
        from ..report.anatomy import segment_lungs

        try:
            a = analyze(volume, model=model, device=device, progress=progress, cancel=cancel)
        except Cancelled as e:
            raise AnalysisCancelled() from e
        if cancel is not None and cancel.is_set():
            raise AnalysisCancelled()
        return a, segment_lungs(volume)
    ctx = mp.get_context("spawn")
    out_queue = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(
        target=_analysis_child,
        args=(volume, None if model is None else str(model), device, out_queue, stop),
        daemon=True,
        name="ctreport-analysis",
    )
    with _main_module_hidden():
        proc.start()
    cancelled_at: float | None = None
    started = False  # the child reported progress: its analysis checks ``stop``
    try:
        while True:
            if cancel is not None and cancel.is_set() and cancelled_at is None:
                stop.set()
                cancelled_at = time.monotonic()
            # a child still starting (importing torch: ~9 s here) cannot hear ``stop``, and
            # has nothing to finish: it goes at once; a running one gets a moment to stop
            grace = CANCEL_GRACE_S if started else 0.0
            if cancelled_at is not None and time.monotonic() - cancelled_at >= grace:
                proc.kill()
                raise AnalysisCancelled()
            try:
                msg = out_queue.get(timeout=0.05)
            except queue.Empty:
                if not proc.is_alive() and out_queue.empty():
                    raise RuntimeError(
                        f"the analysis process ended unexpectedly (exit code {proc.exitcode})"
                    ) from None
                continue
            if msg[0] == "progress":
                started = True
                if progress is not None:
                    progress(msg[1], msg[2])
            elif msg[0] == "result":
                return msg[1]
            elif msg[0] == "cancelled":
                raise AnalysisCancelled()
            else:
                raise RuntimeError(msg[1])
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
