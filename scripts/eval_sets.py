"""The model's evaluation sets, made again from their seeds, and one table over all of them.

    .venv/bin/python scripts/eval_sets.py make DEST            # write the sets (skips those present)
    .venv/bin/python scripts/eval_sets.py run DEST [--model M] [--jobs 2] [--sets val realtx ...]
    .venv/bin/python scripts/eval_sets.py variants [--model M] [--jobs 2]   # acquisition variants
    .venv/bin/python scripts/eval_sets.py drops DEST [--model M] [--jobs 2] [--sets ...]  # rule audit
    .venv/bin/python scripts/eval_sets.py compare DEST --against REV [--jobs 2] [--sets ...]
    .venv/bin/python scripts/eval_sets.py misses DEST [--min-mm 6] [--jobs 2] [--sets ...]

The sets are the ones docs/MODEL_CARD.md reports (none was trained on):

* ``lung1case``, ``lung2case``: pyradiomics' two real lung cancers as case folders
  (``scripts/fetch_real_lesions.sh`` fetches the CTs and labels into ``.cache/real_lesions``);
* ``val``, ``val_alt``: synthetic phantoms, the default and the held-out style;
* ``realbg``, ``realbg2``: synthetic lesions in the two lesion-free real CTs of ``../shared``;
* ``realchest``: synthetic lesions in the two real chest CTs, whose real cancers stay ground truth;
* ``realtx``, ``realtx2``: ``lung1``'s nodule / ``lung2``'s cancer, resized and moved to other
  places of the two real chest CTs (``synth.transplant``; both CTs have 5 mm slices);
* ``realtx3``, ``realtx4``: the same two, moved into the thin-slice (1.5 mm) contrast chest CT
  of ``../shared`` (``ct_cropped``): real lesions on another scanner, dose and slice thickness.

Each set depends only on its seed and the generator's code, so a new machine gets the same cases
(the ``created`` time in ``case.json`` aside). ``run`` evaluates each set in its own process
(``--jobs`` at a time, one torch thread each) and prints a Markdown table.

``variants`` analyses ``lung1`` and ``lung2`` as acquired and in 13 variants of the acquisition
(in-plane pixels 0.5 / 0.8 / 1.0 mm, slices 1.25 / 2.5 mm, a soft and a sharp kernel, turned
6 and 12 degrees either way in the axial plane, and two low-dose scans: 40 HU of noise added, and
60 HU on 1.25 mm slices) and prints each one's findings: whether one of them hits the real cancer
with its kind, and how many others there are. It shows how much the findings depend on the grid,
the dose and the patient's pose.

``drops`` audits the plausibility rules: every nodule or mass candidate the analysis measured and
then did not report (``Analysis.dropped``), by the rule that dropped it, counted as false (it hits
no lesion), as a lesion found anyway (by another finding), or as a lesion lost, with the network's
scores; then each lost lesion. Run it again after training a new network: the rules' levels were
measured on the shipped one's scores.

``misses`` traces each lesion of ``--min-mm`` (6) or more that no finding hits
(``analysis.trace_lesions``): a candidate on it dropped by a plausibility rule (which one),
seen by the network (a nodule or mass peak of at least the 0.15 at which a peak is checked on the
CT, within its radius plus 4 mm) but not confirmed on the CT, or not seen; with the network's
strongest heat within two heatmap cells and the nearest such peak, the CT's blob
measure at its centre (strength, roundness, scale, shell, extent) and whether one of the CT's own
nodule candidates or lung-surface bumps lies on it. A count per set and reason, then one line per
lesion.

``compare`` runs the working tree's code and that of git revision ``REV`` (checked out in a
temporary worktree, imported first through ``PYTHONPATH``) on the sets, case by case, and lists
the cases whose findings differ: the truth, then each version's findings, each marked with the
lesion it hits or as false. A change to the post-processing is judged by what it finds and
loses, not only by the table's totals.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator"
LESIONS = ROOT / ".cache" / "real_lesions"
#: pyradiomics' two real lung cancers in ``LESIONS`` and the kind each is labelled as.
REAL_CANCERS = (("lung1", "solid nodule"), ("lung2", "mass"))
SETS = (
    "val",
    "val_alt",
    "realbg",
    "realbg2",
    "realchest",
    "realtx",
    "realtx2",
    "realtx3",
    "realtx4",
)
COLUMNS = (
    ("cases", "n_cases", "{:d}"),
    ("GT", "n_gt", "{:d}"),
    ("CPM", "cpm", "{:.3f}"),
    ("sens@1FP >=6mm", "sens_1fp_nodules_6mm", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("F1", "f1", "{:.3f}"),
    ("size err", "size_error_median", "{:.3f}"),
    ("effusion vol", "effusion_volume_ratio", "{:.2f}"),
    ("BLEU-4", "bleu4", "{:.3f}"),
    ("ROUGE-L", "rouge_l", "{:.3f}"),
    ("consistency", "clinical_consistency", "{:.3f}"),
    ("consistency 15%", "clinical_consistency_15pct", "{:.3f}"),
    ("s/case", "mean_total_s", "{:.1f}"),
)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _cancer_files(name: str) -> tuple[Path, Path]:
    """The CT and label map of the real cancer ``name``; exits when they were not fetched."""
    image, labels = LESIONS / f"{name}_image.nrrd", LESIONS / f"{name}_label.nrrd"
    if not image.is_file():
        sys.exit(f"{image} is missing: run scripts/fetch_real_lesions.sh first")
    return image, labels


def _import_real(dest: Path) -> None:
    """``lung1case`` and ``lung2case``: the real cancers as case folders (``ctreport import``)."""
    from napari_ctreport import cli

    for name, kind in REAL_CANCERS:
        out = dest / f"{name}case"
        if out.exists():
            continue
        image, labels = _cancer_files(name)
        args = ["import", str(image), str(labels), "--out", str(out), "--kind", kind]
        if cli.main([*args, "--case-id", name]) != 0:
            sys.exit(f"ctreport import of {image} failed")


def make(dest: Path, *, workers: int) -> None:
    """Write every set under ``dest`` that is not there yet."""
    from napari_ctreport.synth import write_dataset
    from napari_ctreport.synth.transplant import write_transplant_dataset

    dest.mkdir(parents=True, exist_ok=True)
    _import_real(dest)
    lesion_free = [REAL / "pulmonary_report" / "ct_cropped.nii.gz", REAL / "example_ct.nii.gz"]
    chests = [dest / "lung1case", dest / "lung2case"]
    plans = {
        "val": lambda out: write_dataset(out, cases=30, seed=900000, workers=workers),
        "val_alt": lambda out: write_dataset(
            out, cases=15, seed=910000, style="alt", workers=workers
        ),
        "realbg": lambda out: write_dataset(
            out, cases=6, seed=990000, real_backgrounds=lesion_free, real_fraction=1.0
        ),
        "realbg2": lambda out: write_dataset(
            out, cases=24, seed=995000, real_backgrounds=lesion_free, real_fraction=1.0
        ),
        "realchest": lambda out: write_dataset(
            out, cases=20, seed=997000, real_backgrounds=chests, real_fraction=1.0
        ),
        "realtx": lambda out: write_transplant_dataset(
            out, sources=[chests[0]], backgrounds=chests, cases=40, seed=4242
        ),
        "realtx2": lambda out: write_transplant_dataset(
            out, sources=[chests[1]], backgrounds=chests, cases=20, seed=4343, scale=(0.25, 0.6)
        ),
        "realtx3": lambda out: write_transplant_dataset(
            out, sources=[chests[0]], backgrounds=lesion_free[:1], cases=20, seed=4545
        ),
        "realtx4": lambda out: write_transplant_dataset(
            out,
            sources=[chests[1]],
            backgrounds=lesion_free[:1],
            cases=12,
            seed=4646,
            scale=(0.15, 0.45),
        ),
    }
    for name, plan in plans.items():
        out = dest / name
        if out.exists():
            _say(f"{name}: present, kept")
            continue
        t0 = time.time()
        plan(out)
        _say(f"{name}: written in {time.time() - t0:.0f} s")


def _evaluate(folder: str, model: str | None) -> dict:
    import torch

    torch.set_num_threads(1)
    from napari_ctreport.analysis import evaluate_model

    res = evaluate_model(folder, model=model, device="cpu")
    out = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    out["by_kind"] = res["by_kind"]
    return out


def _check_sets(dest: Path, sets: list[str]) -> None:
    """Exit naming the sets that are not under ``dest``."""
    missing = [s for s in sets if not (dest / s).is_dir()]
    if missing:
        sys.exit(f"missing under {dest}: {', '.join(missing)} (run `make` first)")


def run(dest: Path, *, sets: list[str], model: str | None, jobs: int) -> str:
    """Evaluate ``model`` on each set under ``dest``; the Markdown table."""
    _check_sets(dest, sets)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {s: pool.submit(_evaluate, str(dest / s), model) for s in sets}
        results = {s: f.result() for s, f in futures.items()}
    head = "| set | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for s in sets:
        r = results[s]
        cells = []
        for _, key, fmt in COLUMNS:
            v = r.get(key)
            cells.append("n/a" if v is None or v != v else fmt.format(v))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _kinds_table(results, sets)


def _kinds_table(results: dict[str, dict], sets: list[str]) -> str:
    """Found / named right / count per ground-truth kind and set, at the operating threshold."""
    from napari_ctreport.report.lexicon import KINDS

    kinds = [k for k in KINDS if any(k in results[s]["by_kind"] for s in sets)]
    lines = [
        "Per ground-truth kind: found (any kind) / named right, of n",
        "",
        "| set | " + " | ".join(kinds) + " |",
        "|" + "---|" * (len(kinds) + 1),
    ]
    for s in sets:
        by_kind = results[s]["by_kind"]
        cells = [
            f"{v['found']:.2f} / {v['kind_right']:.2f} of {v['n']}"
            if (v := by_kind.get(k))
            else "-"
            for k in kinds
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Acquisition variants of a real CT (``variants``): name -> (in-plane pixel mm, slice mm,
#: in-plane Gaussian sigma in pixels (negative: unsharp mask), axial turn in degrees, added
#: noise in HU (standard deviation; grain correlated in-plane, as a low-dose scan's)).
VARIANTS: dict[str, tuple[float | None, float | None, float, float, float]] = {
    "as acquired": (None, None, 0.0, 0.0, 0.0),
    "pixels 0.5 mm": (0.5, None, 0.0, 0.0, 0.0),
    "pixels 0.8 mm": (0.8, None, 0.0, 0.0, 0.0),
    "pixels 1.0 mm": (1.0, None, 0.0, 0.0, 0.0),
    "slices 1.25 mm": (None, 1.25, 0.0, 0.0, 0.0),
    "slices 2.5 mm": (None, 2.5, 0.0, 0.0, 0.0),
    "soft kernel": (None, None, 1.0, 0.0, 0.0),
    "sharp kernel": (None, None, -1.0, 0.0, 0.0),
    "turned +6": (None, None, 0.0, 6.0, 0.0),
    "turned -6": (None, None, 0.0, -6.0, 0.0),
    "turned +12": (None, None, 0.0, 12.0, 0.0),
    "turned -12": (None, None, 0.0, -12.0, 0.0),
    "low dose (+40 HU noise)": (None, None, 0.0, 0.0, 40.0),
    "thin low dose (1.25 mm, +60 HU)": (None, 1.25, 0.0, 0.0, 60.0),
}

#: Seed of the noise of the low-dose :data:`VARIANTS` (the same noise on every run).
NOISE_SEED = 7


def _variant(image, labels, how):
    """``image`` and ``labels`` (CTVolumes) acquired another way (:data:`VARIANTS`)."""
    import numpy as np
    from scipy import ndimage as ndi

    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.synth.acquisition import add_low_dose_noise

    px, sz, sigma, turn, noise = how
    sp = np.asarray(image.spacing_zyx, dtype=float)
    new = sp.copy()
    arr = image.array.astype(np.float32)
    lab = labels.array > 0
    if px or sz:
        new[1:] = px or new[1:]
        new[0] = sz or new[0]
        arr = ndi.zoom(arr, sp / new, order=1)
        lab = ndi.zoom(lab.astype(np.float32), sp / new, order=1) >= 0.5
    if sigma > 0:
        arr = ndi.gaussian_filter(arr, (0, sigma, sigma))
    elif sigma < 0:
        arr = np.clip(
            arr + 0.8 * (arr - ndi.gaussian_filter(arr, (0, -sigma, -sigma))), -1024, 3071
        )
    if turn:
        arr = ndi.rotate(arr, turn, axes=(1, 2), reshape=False, order=1, cval=-1024)
        lab = ndi.rotate(lab.astype(np.float32), turn, axes=(1, 2), reshape=False, order=1) >= 0.5
    if noise:
        arr = add_low_dose_noise(arr, noise_hu=noise, seed=NOISE_SEED)

    def vol(a):
        return CTVolume(
            array=a, spacing_zyx=tuple(float(v) for v in new), origin_lps=image.origin_lps
        )

    return vol(np.rint(arr).astype(np.int16)), vol(lab.astype(np.uint8))


def _analyse_variant(name: str, kind: str, variant: str, model: str | None) -> str:
    import torch

    torch.set_num_threads(1)
    from napari_ctreport.analysis import analyze
    from napari_ctreport.io.ct import load_ct
    from napari_ctreport.metrics import hits
    from napari_ctreport.report.measure import finding_from_mask

    image_path, labels_path = _cancer_files(name)
    image, labels = load_ct(image_path), load_ct(labels_path, label_map=True)
    image, labels = _variant(image, labels, VARIANTS[variant])
    truth = finding_from_mask(labels.array > 0, volume=labels, id="T", kind=kind)
    a = analyze(image, model=model, device="cpu")
    hit = [f for f in a.findings if hits(f, truth)]
    if any(f.kind == kind for f in hit):
        found = "yes"
    else:
        found = f"**as {hit[0].kind}**" if hit else "**no**"
    others = len(a.findings) - len(hit)
    listed = "; ".join(f"{f.kind} {f.diameter_mm:.1f} mm {f.side}" for f in a.findings) or "none"
    return f"| {name} | {variant} | {truth.diameter_mm:.1f} | {found} | {others} | {listed} |"


def variants(*, model: str | None, jobs: int) -> str:
    """Findings on ``lung1`` and ``lung2`` in each acquisition variant; the Markdown table."""
    for name, _ in REAL_CANCERS:
        _cancer_files(name)  # before any work
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        rows = [
            pool.submit(_analyse_variant, name, kind, v, model)
            for name, kind in REAL_CANCERS
            for v in VARIANTS
        ]
        lines = [f.result() for f in rows]
    head = "| CT | acquisition | truth mm | found | others | findings |\n|---|---|---|---|---|---|"
    return "\n".join([head, *lines])


def _analysed(folder: str, model: str | None, *, record: bool = False):
    """Yield ``(path, truth, analysis, record)`` for each case under ``folder``, analysed on one
    CPU thread (the truth: its findings less the rejected ones; with ``record``, what the network
    saw, as :func:`~napari_ctreport.analysis.analyze` fills it, else an empty dict: ``compare``
    runs this on revisions older than ``analyze``'s ``record``)."""
    import torch

    torch.set_num_threads(1)
    from napari_ctreport.analysis import analyze
    from napari_ctreport.io.case import iter_cases, read_case

    for path in iter_cases(Path(folder)):
        case = read_case(path)
        gts = [g for g in case.findings if g.status != "rejected"]
        seen: dict = {}
        extra = {"record": seen} if record else {}
        yield path, gts, analyze(case.load_volume(), model=model, device="cpu", **extra), seen


def _audit_set(folder: str, model: str | None) -> list[dict]:
    """Each rule drop on the cases under ``folder``: rule, score, and what it hit."""
    from napari_ctreport.metrics import hits

    rows = []
    for path, gts, a, _ in _analysed(folder, model):
        found = {g.id for g in gts if any(hits(f, g) for f in a.findings)}
        for f in a.dropped:
            hit = [g for g in gts if hits(f, g)]
            lost = [g for g in hit if g.id not in found]
            rows.append(
                {
                    "rule": f.attributes["dropped_by"],
                    "score": f.score,
                    "case": f"{Path(folder).name}/{path.name}",
                    "what": f"{f.kind} {f.diameter_mm:.1f} mm",
                    "hit": bool(hit),
                    "lost": [f"{g.id} {g.kind} {g.diameter_mm:.1f} mm" for g in lost],
                }
            )
    return rows


def _scores(rows: list[dict]) -> str:
    if not rows:
        return "0"
    lo, hi = min(r["score"] for r in rows), max(r["score"] for r in rows)
    return f"{len(rows)} ({lo:.2f}-{hi:.2f})"


def drops(dest: Path, *, sets: list[str], model: str | None, jobs: int) -> str:
    """The rule audit of ``model`` on each set under ``dest`` (see the module docstring)."""
    _check_sets(dest, sets)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_audit_set, str(dest / s), model) for s in sets]
        rows = [r for f in futures for r in f.result()]
    lines = [
        "| rule | false (scores) | lesion found anyway | lesion lost (scores) |",
        "|---|---|---|---|",
    ]
    for rule in sorted({r["rule"] for r in rows}):
        mine = [r for r in rows if r["rule"] == rule]
        false = [r for r in mine if not r["hit"]]
        lost = [r for r in mine if r["lost"]]
        anyway = [r for r in mine if r["hit"] and not r["lost"]]
        lines.append(f"| {rule} | {_scores(false)} | {_scores(anyway)} | {_scores(lost)} |")
    lines += ["", "Lesions lost:"] + [
        f"- {r['case']}: {', '.join(r['lost'])}; dropped as {r['rule']}: {r['what']}, "
        f"score {r['score']:.2f}"
        for r in rows
        if r["lost"]
    ]
    return "\n".join(lines)


#: The reasons of :class:`~napari_ctreport.analysis.LesionTrace` a ``misses`` table counts
#: (after those, each rule that dropped a lesion gets its own column).
MISS_REASONS = ("not seen", "seen, not confirmed")


def _trace_set(folder: str, model: str | None, min_mm: float) -> list[dict]:
    """Each nodule or mass of at least ``min_mm`` under ``folder`` that no finding hits, traced
    (:func:`~napari_ctreport.analysis.trace_lesions`)."""
    from napari_ctreport.analysis import trace_lesions

    rows = []
    for path, gts, a, record in _analysed(folder, model, record=True):
        for t in trace_lesions(gts, analysis=a, record=record):
            g, b = t.lesion, t.blob
            if t.reason == "found" or g.diameter_mm < min_mm:
                continue
            on = [
                n
                for n, yes in (("CT candidate", t.ct_candidate), ("wall bump", t.wall_bump))
                if yes
            ]
            rows.append(
                {
                    "set": Path(folder).name,
                    "reason": t.reason,
                    "line": f"{Path(folder).name}/{path.name}: {g.kind} {g.diameter_mm:.1f} mm "
                    f"{g.side} {g.zone}, {g.mean_hu:.0f} HU: **{t.reason}**; heat {t.heat:.2f} "
                    f"({t.heat_kind}) within 2 cells, nearest peak {t.peak_mm:.1f} mm; CT blob strength "
                    f"{b.strength:.0f}, ratio {b.ratio:.2f}, scale {b.sigma_mm:g} mm, shell "
                    f"{b.shell_solid:.2f}, extent {b.extent_mm:.1f} mm; "
                    + (", ".join(on) or "no CT candidate or wall bump"),
                }
            )
    return rows


def misses(dest: Path, *, sets: list[str], model: str | None, jobs: int, min_mm: float) -> str:
    """Why each lesion of at least ``min_mm`` went unreported, set by set (see the module
    docstring)."""
    _check_sets(dest, sets)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_trace_set, str(dest / s), model, min_mm) for s in sets]
        rows = [r for f in futures for r in f.result()]
    rules = sorted({r["reason"] for r in rows} - set(MISS_REASONS))
    cols = [*MISS_REASONS, *rules]
    lines = [
        f"Lesions of {min_mm:g} mm or more not reported:",
        "",
        "| set | missed | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for s in sets:
        mine = [r for r in rows if r["set"] == s]
        counts = [str(sum(r["reason"] == c for r in mine)) for c in cols]
        lines.append(f"| {s} | {len(mine)} | " + " | ".join(counts) + " |")
    return "\n".join([*lines, "", *(f"- {r['line']}" for r in rows)])


def _case_findings(folder: str, model: str | None) -> dict[str, dict]:
    """Each case under ``folder``: its truth and the findings, each with the lesion it hits."""
    from napari_ctreport.metrics import hits

    out = {}
    for path, gts, a, _ in _analysed(folder, model):
        out[f"{Path(folder).name}/{path.name}"] = {
            "truth": [f"{g.id} {g.kind} {g.diameter_mm:.1f} mm" for g in gts],
            "found": [
                f"{f.kind} {f.diameter_mm:.1f} mm ({f.score:.2f}) -> "
                + (next((g.id for g in gts if hits(f, g)), None) or "false")
                for f in sorted(a.findings, key=lambda f: -f.score)
            ],
        }
    return out


def findings(dest: Path, *, sets: list[str], model: str | None, jobs: int) -> dict[str, dict]:
    """:func:`_case_findings` of every case of the sets under ``dest``."""
    _check_sets(dest, sets)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_case_findings, str(dest / s), model) for s in sets]
        return {k: v for f in futures for k, v in f.result().items()}


def compare(dest: Path, *, against: str, sets: list[str], model: str | None, jobs: int) -> str:
    """The cases whose findings differ between revision ``against`` and the working tree."""
    import json
    import subprocess
    import tempfile

    _check_sets(dest, sets)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), against], check=True)
        try:
            args = [sys.executable, str(Path(__file__).resolve()), "findings", str(dest)]
            args += ["--sets", *sets, "--jobs", str(jobs), "--out", str(Path(tmp) / "old.json")]
            if model is not None:
                args += ["--model", model]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            subprocess.run(args, check=True, env=env)
            old = json.loads((Path(tmp) / "old.json").read_text())
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)
    new = findings(dest, sets=sets, model=model, jobs=jobs)
    lines = [f"{len(new)} cases; findings differ in:"]
    for case in sorted(new):
        if old.get(case, {}).get("found") == new[case]["found"]:
            continue
        lines += [
            f"- {case}: truth {'; '.join(new[case]['truth']) or 'none'}",
            f"  - {against}: {'; '.join(old.get(case, {}).get('found', [])) or 'none'}",
            f"  - now: {'; '.join(new[case]['found']) or 'none'}",
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    # the options every command that analyses takes, and the set folder most of them read
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=None, help="model folder or name (default: shipped)")
    model.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    on_sets = argparse.ArgumentParser(add_help=False, parents=[model])
    on_sets.add_argument("dest", type=Path)
    on_sets.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    m = sub.add_parser("make", help="write the evaluation sets")
    m.add_argument("dest", type=Path)
    m.add_argument("--workers", type=int, default=2)
    sub.add_parser("run", parents=[on_sets], help="evaluate a model on the sets; print a table")
    sub.add_parser(
        "variants", parents=[model], help="findings on the real cancers acquired other ways"
    )
    sub.add_parser(
        "drops", parents=[on_sets], help="audit the plausibility rules: what each one dropped"
    )
    c = sub.add_parser(
        "compare", parents=[on_sets], help="cases whose findings differ from another revision's"
    )
    c.add_argument("--against", required=True, help="git revision to compare with (e.g. HEAD~1)")
    w = sub.add_parser("misses", parents=[on_sets], help="why each missed lesion was missed")
    w.add_argument("--min-mm", type=float, default=6.0, help="smallest lesion listed (mm)")
    f = sub.add_parser(
        "findings", parents=[on_sets], help="each case's findings as JSON (used by compare)"
    )
    f.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if a.cmd == "make":
        make(a.dest, workers=a.workers)
    elif a.cmd == "variants":
        _say(variants(model=a.model, jobs=a.jobs))
    elif a.cmd == "compare":
        _say(compare(a.dest, against=a.against, sets=a.sets, model=a.model, jobs=a.jobs))
    elif a.cmd == "findings":
        import json

        out = findings(a.dest, sets=a.sets, model=a.model, jobs=a.jobs)
        a.out.write_text(json.dumps(out, indent=1))
    elif a.cmd == "misses":
        _say(misses(a.dest, sets=a.sets, model=a.model, jobs=a.jobs, min_mm=a.min_mm))
    elif a.cmd == "drops":
        _say(drops(a.dest, sets=a.sets, model=a.model, jobs=a.jobs))
    else:
        _say(run(a.dest, sets=a.sets, model=a.model, jobs=a.jobs))


if __name__ == "__main__":
    main()
