"""Detection and report metrics.

Inputs are per-scan lists: ``preds[i]`` and ``gts[i]`` are the predicted and ground-truth
:class:`~napari_ctreport.report.findings.Finding` lists of scan ``i``. Findings with status
``"rejected"`` are ignored on both sides.

Detection
    A prediction *hits* a ground-truth finding when its centre lies inside the ground-truth box
    (LUNA16 style, boundary included) or their 3-D box IoU is at least ``iou`` (0.1 by default).

    * :func:`froc`: LUNA16-style FROC, class-agnostic. Each ground truth is detected at the
      highest score of the predictions that hit it; a prediction that hits nothing is a false
      positive; a prediction that hits only ground truths excluded by ``gt_filter`` counts as
      neither. The sensitivity at a rate r is the highest sensitivity reached at a score
      threshold with at most r false positives per scan (a step curve, no interpolation); CPM is
      the mean over the rates.
    * :func:`average_precision`: class-agnostic AP at a 3-D box IoU threshold, predictions matched
      greedily in decreasing score to the unmatched ground truth of highest IoU; the area under
      the precision envelope (all-point interpolation, as in PASCAL VOC 2010+).
    * :func:`finding_f1`: predictions with score >= threshold, matched one-to-one to ground truth
      they hit with the same kind and side.
    * :func:`median_size_error`: median of ``|d_pred - d_gt| / d_gt`` over one-to-one location
      matches (kind not required).

Report
    BLEU-4, ROUGE-L and CIDEr-D from pycocoevalcap at corpus level, on lower-cased text split
    into words and punctuation (no Java tokenizer). CIDEr-D uses document frequencies of the
    reference corpus, so it is 0 for a single case or identical references, and up to 10 for
    identical texts over a varied corpus. Clinical consistency is
    :func:`~napari_ctreport.report.parse.clinical_consistency` averaged over cases: strictly
    (sizes within 0.6 mm of the ground truth's, so a report whose nodule was measured 1 mm
    longer than the annotation fails), and with sizes within :data:`CONSISTENCY_SIZE_TOL_REL`.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .report.findings import Finding
from .report.lexicon import KINDS, NODULE_KINDS
from .report.parse import clinical_consistency
from .report.writer import Report

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: Relative size tolerance of ``clinical_consistency_15pct`` in :func:`evaluate`: the project's
#: median size-error target (15 %).
CONSISTENCY_SIZE_TOL_REL = 0.15
#: Size tolerance (mm) of ``clinical_consistency`` against ground truth in :func:`evaluate`: a
#: report's sizes are measured on the predicted mask, not the true one.
CONSISTENCY_SIZE_TOL_MM = 0.6

Scans = Sequence[Sequence[Finding]]


def _active(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.status != "rejected"]


def box_iou(a: Finding, b: Finding) -> float:
    """3-D IoU of two findings' LPS boxes."""
    alo, ahi = np.asarray(a.bbox_lps_mm[0]), np.asarray(a.bbox_lps_mm[1])
    blo, bhi = np.asarray(b.bbox_lps_mm[0]), np.asarray(b.bbox_lps_mm[1])
    inter = np.prod(np.clip(np.minimum(ahi, bhi) - np.maximum(alo, blo), 0, None))
    va = np.prod(np.clip(ahi - alo, 0, None))
    vb = np.prod(np.clip(bhi - blo, 0, None))
    union = va + vb - inter
    return float(inter / union) if union > 0 else 0.0


def centre_in_box(pred: Finding, gt: Finding) -> bool:
    """Whether the prediction's centre lies inside the ground-truth box (boundary included)."""
    c = np.asarray(pred.center_lps_mm)
    lo, hi = np.asarray(gt.bbox_lps_mm[0]), np.asarray(gt.bbox_lps_mm[1])
    return bool(np.all(c >= lo) and np.all(c <= hi))


def hits(pred: Finding, gt: Finding, *, iou: float = 0.1) -> bool:
    """Whether a prediction hits a ground-truth finding (centre in box or IoU >= ``iou``)."""
    return centre_in_box(pred, gt) or box_iou(pred, gt) >= iou


def _check(preds: Scans, gts: Scans) -> None:
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} scans of predictions but {len(gts)} of ground truth")


def froc(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    fp_rates: Sequence[float] = FP_RATES,
    iou: float = 0.1,
    gt_filter: Callable[[Finding], bool] | None = None,
) -> dict[str, Any]:
    """FROC sensitivities at false-positive rates per scan, and their mean (CPM).

    Parameters
    ----------
    preds_per_scan, gts_per_scan
        One list of findings per scan.
    fp_rates
        False positives per scan at which to read the sensitivity.
    iou
        IoU alternative to the centre-in-box hit rule.
    gt_filter
        Which ground-truth findings count; predictions hitting only excluded ones are ignored.

    Returns
    -------
    dict
        ``sensitivity`` ({rate: value}), ``cpm``, ``n_gt``, ``n_scans``, ``curve_fps`` and
        ``curve_sens`` (the curve at every distinct score). Values are NaN with no ground truth.
    """
    _check(preds_per_scan, gts_per_scan)
    n_scans = len(preds_per_scan)
    gt_best: list[float] = []  # best hit score per counted GT (-inf: missed)
    fp_scores: list[float] = []
    for preds, gts in zip(preds_per_scan, gts_per_scan, strict=True):
        gts = _active(gts)
        counted = [gt_filter is None or gt_filter(g) for g in gts]
        best = [-math.inf] * len(gts)
        for p in _active(preds):
            hit_any = False
            for k, g in enumerate(gts):
                if hits(p, g, iou=iou):
                    hit_any = True
                    best[k] = max(best[k], p.score)
            if not hit_any:
                fp_scores.append(p.score)
        gt_best.extend(b for b, c in zip(best, counted, strict=True) if c)
    n_gt = len(gt_best)
    thresholds = sorted(set(fp_scores) | {b for b in gt_best if b > -math.inf}, reverse=True)
    fp_arr = np.asarray(fp_scores)
    gt_arr = np.asarray(gt_best)
    curve_fps = [0.0]
    curve_sens = [0.0]
    for t in thresholds:
        curve_fps.append(float((fp_arr >= t).sum()) / max(n_scans, 1))
        curve_sens.append(float((gt_arr >= t).sum()) / n_gt if n_gt else math.nan)
    sens: dict[float, float] = {}
    for r in fp_rates:
        ok = [s for f, s in zip(curve_fps, curve_sens, strict=True) if f <= r]
        sens[float(r)] = max(ok) if (ok and n_gt) else math.nan
    values = list(sens.values())
    return {
        "sensitivity": sens,
        "cpm": float(np.mean(values)) if n_gt else math.nan,
        "n_gt": n_gt,
        "n_scans": n_scans,
        "curve_fps": curve_fps,
        "curve_sens": curve_sens,
    }


def sensitivity_at_fp(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    fp_rate: float = 1.0,
    min_diameter_mm: float = 6.0,
    kinds: frozenset[str] = NODULE_KINDS,
    iou: float = 0.1,
) -> float:
    """FROC sensitivity at ``fp_rate`` FP/scan for ground truth of ``kinds`` >= ``min_diameter_mm``."""
    res = froc(
        preds_per_scan,
        gts_per_scan,
        fp_rates=(fp_rate,),
        iou=iou,
        gt_filter=lambda g: g.kind in kinds and g.diameter_mm >= min_diameter_mm,
    )
    return float(res["sensitivity"][float(fp_rate)])


def average_precision(preds_per_scan: Scans, gts_per_scan: Scans, *, iou: float = 0.1) -> float:
    """Class-agnostic average precision at a 3-D box IoU threshold (NaN with no ground truth)."""
    _check(preds_per_scan, gts_per_scan)
    entries: list[tuple[float, int, Finding]] = []
    gts_list = [_active(g) for g in gts_per_scan]
    for i, preds in enumerate(preds_per_scan):
        entries.extend((p.score, i, p) for p in _active(preds))
    n_gt = sum(len(g) for g in gts_list)
    if n_gt == 0:
        return math.nan
    entries.sort(key=lambda e: -e[0])
    used = [[False] * len(g) for g in gts_list]
    tp = np.zeros(len(entries))
    for n, (_, i, p) in enumerate(entries):
        best, best_k = iou, -1
        for k, g in enumerate(gts_list[i]):
            if used[i][k]:
                continue
            v = box_iou(p, g)
            if v >= best:
                best, best_k = v, k
        if best_k >= 0:
            used[i][best_k] = True
            tp[n] = 1
    if not len(entries):
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(entries) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _match(
    preds: Sequence[Finding],
    gts: Sequence[Finding],
    *,
    iou: float,
    same_label: bool,
) -> list[tuple[Finding, Finding]]:
    """Greedy one-to-one matching in decreasing score; ties by IoU."""
    pairs = []
    used = [False] * len(gts)
    for p in sorted(preds, key=lambda f: -f.score):
        best_k, best_v = -1, -1.0
        for k, g in enumerate(gts):
            if used[k] or not hits(p, g, iou=iou):
                continue
            if same_label and (p.kind != g.kind or p.side != g.side):
                continue
            v = box_iou(p, g)
            if v > best_v:
                best_k, best_v = k, v
        if best_k >= 0:
            used[best_k] = True
            pairs.append((p, gts[best_k]))
    return pairs


def finding_f1(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    score_threshold: float = 0.5,
    iou: float = 0.1,
) -> dict[str, float]:
    """Precision, recall and F1 of findings whose location, kind and side are all right.

    Returns ``{"precision", "recall", "f1", "tp", "fp", "fn"}``; with nothing predicted and
    nothing to find all three scores are 1.0.
    """
    _check(preds_per_scan, gts_per_scan)
    tp = fp = fn = 0
    for preds, gts in zip(preds_per_scan, gts_per_scan, strict=True):
        kept = [p for p in _active(preds) if p.score >= score_threshold]
        g = _active(gts)
        n = len(_match(kept, g, iou=iou, same_label=True))
        tp += n
        fp += len(kept) - n
        fn += len(g) - n
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def found_by_kind(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    score_threshold: float = 0.5,
    iou: float = 0.1,
) -> dict[str, dict[str, float]]:
    """Per ground-truth kind: how many there are, the share found and the share named right.

    A ground-truth finding is found when a prediction at or above ``score_threshold`` hits it
    (:func:`hits`, whatever kind the prediction has, as in :func:`froc`), and named right when one
    of those predictions has its kind. Where the misses lie (ground glass, say) is what a retraining
    should aim at, which the totals do not tell.

    Returns
    -------
    dict
        ``{kind: {"n": count, "found": share, "kind_right": share}}`` for every kind the ground
        truth has, in lexicon order.
    """
    _check(preds_per_scan, gts_per_scan)
    counts: dict[str, list[int]] = {}
    for preds, gts in zip(preds_per_scan, gts_per_scan, strict=True):
        kept = [p for p in _active(preds) if p.score >= score_threshold]
        for g in _active(gts):
            hit = [p for p in kept if hits(p, g, iou=iou)]
            row = counts.setdefault(g.kind, [0, 0, 0])
            row[0] += 1
            row[1] += bool(hit)
            row[2] += any(p.kind == g.kind for p in hit)
    order = {k: i for i, k in enumerate(KINDS)}
    return {
        k: {"n": n, "found": found / n, "kind_right": right / n}
        for k, (n, found, right) in sorted(counts.items(), key=lambda kv: order.get(kv[0], 99))
    }


def _matched(
    preds_per_scan: Scans, gts_per_scan: Scans, score_threshold: float, iou: float
) -> list[tuple[Finding, Finding]]:
    """Every scan's one-to-one (prediction, ground truth) pairs, of any kind, among the
    predictions at or above ``score_threshold`` (the pairs the size measures compare)."""
    _check(preds_per_scan, gts_per_scan)
    pairs: list[tuple[Finding, Finding]] = []
    for preds, gts in zip(preds_per_scan, gts_per_scan, strict=True):
        kept = [p for p in _active(preds) if p.score >= score_threshold]
        pairs += _match(kept, _active(gts), iou=iou, same_label=False)
    return pairs


def median_size_error(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    score_threshold: float = 0.5,
    iou: float = 0.1,
) -> float:
    """Median relative diameter error ``|d_pred - d_gt| / d_gt`` over matched pairs (NaN if none)."""
    errors = [
        abs(p.diameter_mm - g.diameter_mm) / g.diameter_mm
        for p, g in _matched(preds_per_scan, gts_per_scan, score_threshold, iou)
        if g.diameter_mm > 0
    ]
    return float(np.median(errors)) if errors else math.nan


def median_volume_ratio(
    preds_per_scan: Scans,
    gts_per_scan: Scans,
    *,
    kind: str = "pleural effusion",
    score_threshold: float = 0.5,
    iou: float = 0.1,
) -> float:
    """Median ``v_pred / v_gt`` of the volumes over matched pairs whose ground truth is ``kind``
    (NaN if none): 1 is unbiased, under 1 a volume reported short.

    An effusion's size in a report is its volume, which the long-axis error of
    :func:`median_size_error` does not show.
    """
    ratios = [
        p.volume_ml / g.volume_ml
        for p, g in _matched(preds_per_scan, gts_per_scan, score_threshold, iou)
        if g.kind == kind and g.volume_ml > 0
    ]
    return float(np.median(ratios)) if ratios else math.nan


# --- report text --------------------------------------------------------------------------

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:-[a-z]+)*|[^\sa-z\d]")


def tokenize(text: str) -> str:
    """Lower-case and split into words, numbers and punctuation, joined by single spaces."""
    return " ".join(_TOKEN.findall(text.lower()))


def _text(report: Any) -> str:
    if isinstance(report, Report):
        return f"{report.findings}\n{report.impression}"
    if isinstance(report, dict):
        return f"{report.get('findings', '')}\n{report.get('impression', '')}"
    return str(report)


def report_scores(pred_texts: Sequence[Any], ref_texts: Sequence[Any]) -> dict[str, float]:
    """Corpus-level BLEU-4, ROUGE-L and CIDEr-D of predicted against reference reports."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(pred_texts) != len(ref_texts):
        raise ValueError(f"{len(pred_texts)} predicted reports but {len(ref_texts)} references")
    if not pred_texts:
        return {"bleu4": math.nan, "rouge_l": math.nan, "cider": math.nan}
    # an empty text breaks the scorers; a lone full stop scores (next to) nothing instead
    res = {i: [tokenize(_text(t)) or "."] for i, t in enumerate(pred_texts)}
    gts = {i: [tokenize(_text(t)) or "."] for i, t in enumerate(ref_texts)}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print diagnostics
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "cider": float(cider)}


def evaluate(
    pred_cases: Sequence[tuple[Sequence[Finding], Any]],
    gt_cases: Sequence[tuple[Sequence[Finding], Any]],
    *,
    score_threshold: float = 0.5,
) -> dict[str, Any]:
    """All metrics for paired cases, each ``(findings, report)`` (report: text or Report).

    Returns
    -------
    dict
        ``n_scans``, ``n_gt``, ``froc`` ({rate: sensitivity}), ``cpm``, ``sens_1fp_nodules_6mm``,
        ``ap_iou0.1``, ``ap_iou0.25``, ``precision``, ``recall``, ``f1``, ``size_error_median``,
        ``effusion_volume_ratio`` (:func:`median_volume_ratio`),
        ``bleu4``, ``rouge_l``, ``cider``, ``clinical_consistency`` (predicted report against the
        ground-truth findings, mean over cases; sizes within :data:`CONSISTENCY_SIZE_TOL_MM`),
        ``clinical_consistency_15pct`` (the same with sizes within
        :data:`CONSISTENCY_SIZE_TOL_REL` of the ground truth's, as the size-error target
        allows), ``grounding`` (predicted report against the predicted findings, mean over
        cases; sizes to the rounding of the written figures), and ``by_kind``
        (:func:`found_by_kind`).
    """
    if len(pred_cases) != len(gt_cases):
        raise ValueError(
            f"{len(pred_cases)} predicted cases but {len(gt_cases)} ground-truth cases"
        )
    preds = [list(c[0]) for c in pred_cases]
    gts = [list(c[0]) for c in gt_cases]
    fr = froc(preds, gts)
    f1 = finding_f1(preds, gts, score_threshold=score_threshold)
    out: dict[str, Any] = {
        "n_scans": len(preds),
        "n_gt": fr["n_gt"],
        "froc": fr["sensitivity"],
        "cpm": fr["cpm"],
        "sens_1fp_nodules_6mm": sensitivity_at_fp(preds, gts),
        "ap_iou0.1": average_precision(preds, gts, iou=0.1),
        "ap_iou0.25": average_precision(preds, gts, iou=0.25),
        "precision": f1["precision"],
        "recall": f1["recall"],
        "f1": f1["f1"],
        "size_error_median": median_size_error(preds, gts, score_threshold=score_threshold),
        "effusion_volume_ratio": median_volume_ratio(preds, gts, score_threshold=score_threshold),
    }
    out["by_kind"] = found_by_kind(preds, gts, score_threshold=score_threshold)
    out.update(report_scores([c[1] for c in pred_cases], [c[1] for c in gt_cases]))
    out["clinical_consistency"] = (
        float(
            np.mean(
                [
                    clinical_consistency(_text(p[1]), g[0], size_tol_mm=CONSISTENCY_SIZE_TOL_MM)
                    for p, g in zip(pred_cases, gt_cases, strict=True)
                ]
            )
        )
        if pred_cases
        else math.nan
    )
    out["clinical_consistency_15pct"] = (
        float(
            np.mean(
                [
                    clinical_consistency(
                        _text(p[1]),
                        g[0],
                        size_tol_mm=CONSISTENCY_SIZE_TOL_MM,
                        size_tol_rel=CONSISTENCY_SIZE_TOL_REL,
                    )
                    for p, g in zip(pred_cases, gt_cases, strict=True)
                ]
            )
        )
        if pred_cases
        else math.nan
    )
    out["grounding"] = (
        float(np.mean([clinical_consistency(_text(p[1]), p[0]) for p in pred_cases]))
        if pred_cases
        else math.nan
    )
    return out


def _flatten(results: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in results.items():
        if isinstance(value, dict):
            for k, v in value.items():
                name = f"sens@{k:g}fp" if key == "froc" and isinstance(k, float) else f"{key}.{k}"
                if isinstance(v, dict):  # by_kind: kind -> {n, found, kind_right}
                    rows += [(f"{name}.{field}", x) for field, x in v.items()]
                else:
                    rows.append((name, v))
        elif isinstance(value, (list, tuple)):
            continue
        else:
            rows.append((key, value))
    return rows


def format_table(results: dict[str, Any]) -> str:
    """Aligned two-column plain-text table of :func:`evaluate` output (nested dicts flattened)."""
    rows = _flatten(results)

    def fmt(v: Any) -> str:
        if isinstance(v, bool) or isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "n/a" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    cells = [(name, fmt(v)) for name, v in rows]
    w1 = max([len("metric")] + [len(a) for a, _ in cells])
    w2 = max([len("value")] + [len(b) for _, b in cells])
    lines = [f"{'metric':<{w1}}  {'value':>{w2}}", f"{'-' * w1}  {'-' * w2}"]
    lines += [f"{a:<{w1}}  {b:>{w2}}" for a, b in cells]
    return "\n".join(lines)
