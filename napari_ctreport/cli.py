"""``ctreport``: the command line of napari-ctreport.

Argument parsing, progress and exit codes only; the work is done by the headless packages.
Exit status: 0 success, 2 bad input (one line on stderr naming the file and the problem),
1 an internal error (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._version import __version__
from .io import CTReadError
from .io.case import CaseFormatError

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A user error in arguments or files (exit status 2)."""


def _err(message: str) -> None:
    sys.stderr.write(f"ctreport: {message}\n")


def _check_output(path: Path, option: str, *, folder: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Missing folders on the way are fine (they are created when written); the nearest one that
    exists must be a folder this user may write in.

    Parameters
    ----------
    path
        The output path given on the command line.
    option
        The option it was given with (e.g. ``"--out"``), named in the message.
    folder
        Whether ``path`` is a folder to write into (else a file to write).

    Raises
    ------
    BadInput
        One line naming ``path``, the option and the problem (exit status 2).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise BadInput(f"{path}: {option}: is a file, not a folder")
    if not folder and path.is_dir():
        raise BadInput(f"{path}: {option}: is a folder; give a file name")
    if not folder and path.name in ("", ".", ".."):
        raise BadInput(f"{path}: {option}: not a file name")
    parent = (path if folder else path.parent).absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{path}: {option}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{path}: {option}: no permission to write in {parent}")


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or ``force``)."""

    def __init__(self, label: str, *, force: bool = False) -> None:
        self.label = label
        self.enabled = force or sys.stderr.isatty()
        self._last = -1

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.enabled:
            return
        pct = int(round(100 * max(0.0, min(1.0, float(fraction)))))
        if pct == self._last and not message:
            return
        self._last = pct
        bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
        sys.stderr.write(f"\r{self.label} [{bar}] {pct:3d}% {message[:40]:<40}")
        if pct >= 100:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End a bar left part-drawn (the work stopped early), so the next line starts clean."""
        if self.enabled and 0 <= self._last < 100:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._last = 100


# -- info -----------------------------------------------------------------------------------
#: ``--series`` of ``info`` and ``analyze``.
SERIES_HELP = (
    "in a DICOM folder with several CT series, the one to open: its SeriesNumber or "
    "SeriesInstanceUID (default: the one with the most images; 'ctreport info FOLDER' lists them)"
)


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .io.ct import ct_series, is_dicom_folder, load_study

    volume = load_study(args.path, series=args.series)
    meta = volume.metadata
    arr = volume.array
    series = ct_series(args.path) if is_dicom_folder(args.path) else []
    info: dict[str, Any] = {
        "path": str(args.path),
        "format": meta.get("format"),
        "study_uid": meta.get("study_uid"),
        "series_uid": meta.get("series_uid"),
        "study_description": meta.get("study_description"),
        "series_description": meta.get("series_description"),
        "modality": meta.get("modality"),
        "manufacturer": meta.get("manufacturer"),
        "size_zyx": list(volume.shape),
        "spacing_zyx_mm": [round(s, 4) for s in volume.spacing_zyx],
        "origin_lps_mm": [round(o, 3) for o in volume.origin_lps],
        "orientation_on_disk": meta.get("orientation_on_disk"),
        "slice_thickness_mm": meta.get("slice_thickness_mm"),
        "kernel": meta.get("kernel"),
        "hu_range": [float(np.min(arr)), float(np.max(arr))],
        "warnings": list(volume.warnings),
        "series_in_folder": [
            {"number": s.number, "description": s.description, "images": s.images, "uid": s.uid}
            for s in series
        ],
    }
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    rows = [
        ("File", info["path"]),
        ("Format", info["format"]),
        ("Study", f"{info['study_description'] or '—'}  (UID {info['study_uid'] or '—'})"),
        ("Series", f"{info['series_description'] or '—'}  (UID {info['series_uid'] or '—'})"),
        ("Modality", info["modality"] or "—"),
        ("Size z×y×x", " × ".join(map(str, info["size_zyx"]))),
        ("Spacing z×y×x", " × ".join(f"{s:g}" for s in info["spacing_zyx_mm"]) + " mm"),
        ("Origin LPS", ", ".join(f"{o:g}" for o in info["origin_lps_mm"]) + " mm"),
        ("On disk", f"{info['orientation_on_disk'] or '—'} (shown in patient LPS)"),
        (
            "Slice thickness",
            f"{info['slice_thickness_mm']} mm" if info["slice_thickness_mm"] else "—",
        ),
        ("Kernel", info["kernel"] or "—"),
        ("HU range", f"{info['hu_range'][0]:g} .. {info['hu_range'][1]:g}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    for line in volume.warnings:
        sys.stdout.write(f"{'Warning':<{width}}  {line}\n")
    if len(series) > 1:
        sys.stdout.write("\nCT series in this folder (open one with --series NUMBER or UID):\n")
        for s in series:
            mark = "*" if s.uid == info["series_uid"] else " "
            sys.stdout.write(f"{mark} {s.label}  UID {s.uid}\n")
    return 0


# -- synth ----------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_dataset
    from .synth.generate import BackgroundError

    if args.cases < 1:
        raise BadInput("--cases must be at least 1")
    shape = None
    if args.shape:
        try:
            shape = tuple(int(v) for v in args.shape.lower().replace("×", "x").split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise BadInput(f"--shape: {args.shape!r} is not ZxYxX, e.g. 120x256x256")
    spacing = None
    if args.spacing:
        try:
            spacing = tuple(float(v) for v in args.spacing.split(","))
        except ValueError:
            spacing = ()
        if len(spacing) not in (1, 2, 3) or min(spacing) <= 0:
            raise BadInput(f"--spacing: {args.spacing!r} is not SXY, SZ,SXY or SZ,SY,SX in mm")
        if len(spacing) == 1:
            spacing = spacing[0]
    if args.matrix is not None and (args.matrix < 16 or shape is not None):
        raise BadInput("--matrix must be at least 16, and not given with --shape")
    for bg in args.background:
        if not bg.exists():
            raise BadInput(f"{bg}: --background: no such file or folder")
    if not 0.0 <= args.real_fraction <= 1.0:
        raise BadInput(f"--real-fraction: {args.real_fraction} is not in [0, 1]")
    if not 0.0 <= args.wall_masses <= 1.0:
        raise BadInput(f"--wall-masses: {args.wall_masses} is not in [0, 1]")
    progress = _Progress("synth")
    try:
        paths = write_dataset(
            args.out,
            cases=args.cases,
            seed=args.seed,
            progress=lambda i, n: progress(i / n, f"case {i}/{n}"),
            workers=args.workers,
            shape=shape,
            spacing=spacing,
            matrix=args.matrix,
            real_backgrounds=args.background,
            real_fraction=args.real_fraction,
            wall_masses=args.wall_masses,
        )
    except BackgroundError as err:
        raise BadInput(f"--background {err}") from err
    sys.stdout.write(f"wrote {len(paths)} cases to {args.out}\n")
    return 0


# -- import ---------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from .io.case import write_case
    from .report.labelled import case_from_labels

    kinds: str | dict[int, str]
    if len(args.kind) == 1 and "=" not in args.kind[0]:
        kinds = args.kind[0]
    else:
        kinds = {}
        for item in args.kind:
            value, sep, kind = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise BadInput(f"--kind: {item!r} is not VALUE=KIND, e.g. 1=mass")
            kinds[int(value)] = kind.strip()
    case, volume, label_map = case_from_labels(
        args.image,
        args.labels,
        kinds=kinds,
        case_id=args.case_id or Path(args.out).name,
        split_components=args.components,
    )
    folder = write_case(case, args.out, volume=volume, labels=label_map)
    for f in case.findings:
        sys.stdout.write(
            f"{f.id}  {f.kind}, {f.side} {f.zone}, {f.diameter_mm:.1f} x {f.short_axis_mm:.1f} mm,"
            f" {f.volume_ml:.2f} ml\n"
        )
    sys.stdout.write(f"wrote {folder}\n")
    return 0


# -- analyze --------------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze

    if args.out:
        _check_output(args.out, "--out")
    if args.export:
        _check_output(args.export, "--export", folder=True)
    _check_device(args.device)
    # a path is loaded by analyze (its whole series for one DICOM file), with its progress
    source: Any = args.path
    if args.series:
        from .io.ct import load_ct

        source = load_ct(args.path, series=args.series)
    progress = _Progress("analyze")
    result = analyze(source, model=args.model, device=args.device, progress=progress)
    for line in result.volume_info.get("warnings", []):
        _err(f"warning: {line}")
    payload = _json_text(result.to_json_dict(input_path=str(args.path)))
    if args.out:
        _atomic_write_text(args.out, payload)
    else:
        sys.stdout.write(payload)
    if args.export:
        from .export import export_analysis

        exported = export_analysis(
            result, volume=result.volume, out_dir=args.export, deidentify=not args.keep_identifiers
        )
        for line in exported.warnings:
            _err(line)
        _err(f"case exported to {exported.folder}")
    return 0


def _atomic_write_text(path: Path, text: str, *, option: str = "--out") -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then renamed), with
    the permissions a plain file gets under the user's umask (a temporary file is 0600: a
    result another user's tool reads was unreadable to it).

    Raises
    ------
    BadInput
        One line naming ``path`` and ``option`` when it cannot be written.
    """
    from .io.write import write_atomically

    umask = os.umask(0)
    os.umask(umask)
    try:
        write_atomically(path, text.encode("utf-8"), mode=0o666 & ~umask)
    except OSError as err:
        raise BadInput(f"{path}: {option}: {err.strerror or err}") from err


def _json_text(data: Any) -> str:
    """``data`` as JSON text that any JSON reader takes: a float that is not finite (a metric
    with nothing to measure) is ``null``, not ``NaN``."""

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def _check_device(device: str) -> None:
    """Refuse a ``--device`` this machine does not have, before any work is done (it was an
    "internal error" after the CT had been read)."""
    from .model.inference import pick_device

    try:
        pick_device(device)
    except ValueError as err:
        raise BadInput(f"--device {device}: {err}") from err


# -- train / evaluate / bench ---------------------------------------------------------------
#: Files of a model folder (:func:`~napari_ctreport.model.registry.save_pretrained`): an
#: ``--out`` holding one of them holds a model.
MODEL_FILES = ("config.json", "model.safetensors")


def _check_model_out(path: Path, *, overwrite: bool) -> None:
    """Refuse a ``train --out`` folder that already holds a model, unless ``overwrite``.

    Parameters
    ----------
    path
        The ``--out`` folder (missing, or an existing folder: :func:`_check_output` checked it).
    overwrite
        Whether ``--overwrite`` was given.

    Raises
    ------
    BadInput
        One line naming ``path`` (exit status 2).
    """
    if not overwrite and any((Path(path) / name).exists() for name in MODEL_FILES):
        raise BadInput(f"{path} already holds a model; choose another --out or pass --overwrite")


def cmd_train(args: argparse.Namespace) -> int:
    from .model.train import GeneratedCases, NoTrainingCases, train

    _check_output(args.out, "--out", folder=True)
    _check_model_out(args.out, overwrite=args.overwrite)
    _check_device(args.device)
    for d in args.data:
        if not Path(d).is_dir():
            raise BadInput(f"{d}: not a folder of case folders")
    if not args.data and args.synthetic <= 0:
        raise BadInput("train needs --data (folders of cases) or --synthetic N")
    if not 0.0 <= args.synthetic_real_fraction <= 1.0:
        raise BadInput(
            f"--synthetic-real-fraction: {args.synthetic_real_fraction} is not in [0, 1]"
        )
    for bg in args.synthetic_background:
        if not bg.exists():
            raise BadInput(f"{bg}: --synthetic-background: no such file or folder")
        if bg.suffix == ".npz":  # checked here: a broken one would only skip cases later
            from .synth.generate import BackgroundError, read_background

            try:
                read_background(bg)
            except BackgroundError as err:
                raise BadInput(f"--synthetic-background {err}") from err
    generated = None
    if args.synthetic > 0:
        from .synth.generate import GENERATOR_NAME, training_case

        about: dict[str, object] = {
            "generator": GENERATOR_NAME,
            "dataset seed": args.synthetic_seed,
        }
        fraction = args.synthetic_real_fraction if args.synthetic_background else 0.0
        if fraction > 0:
            about["real backgrounds"] = [str(b) for b in args.synthetic_background]
            about["real fraction"] = fraction
        generated = GeneratedCases(
            count=args.synthetic,
            make=functools.partial(
                training_case,
                seed=args.synthetic_seed,
                real_backgrounds=tuple(str(b) for b in args.synthetic_background),
                real_fraction=fraction,
            ),
            about=about,
        )
    from .model.train import training_case_folders

    found, drafts = training_case_folders(args.data, include_drafts=args.include_drafts)
    if not found and args.synthetic <= 0:
        where = ", ".join(str(d) for d in args.data)
        raise BadInput(
            f"{where}: {len(drafts)} model draft(s) nobody reviewed and no other case: review and "
            "export them, or pass --include-drafts"
            if drafts
            else f"{where}: no case folders (folders with case.json)"
        )
    if drafts:
        sys.stderr.write(
            f"ctreport: warning: left out {len(drafts)} model draft(s) nobody reviewed (e.g. "
            f"{drafts[0]}); review and export them, or pass --include-drafts\n"
        )
    progress = _Progress("train")
    try:
        out = train(
            data_dirs=args.data,
            include_drafts=args.include_drafts,
            generated=generated,
            workers=args.workers,
            patch_workers=args.patch_workers,
            out_dir=args.out,
            init=args.init,
            epochs=args.epochs,
            device=args.device,
            seed=args.seed,
            progress=progress,
            name=args.name,
            version=args.model_version,
            threads=args.threads,
            max_minutes=args.max_minutes,
            rotate_deg=args.rotate_deg,
            kind_weights=dict(args.kind_weight) or None,
            **{
                k: v
                for k, v in (
                    ("batch_size", args.batch_size),
                    ("patches_per_case", args.patches_per_case),
                    ("lr", args.lr),
                )
                if v is not None
            },
        )
    except NoTrainingCases as err:  # nothing (readable) to train on: the input's fault
        progress.close()
        raise BadInput(str(err)) from None
    sys.stdout.write(f"model written to {out} (model card: {out / 'MODEL_CARD.md'})\n")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .model.train import interpolate_models

    # a folder that is not a model: from_pretrained's FileNotFoundError names it (exit 2)
    if not 0.0 <= args.alpha <= 1.0:
        raise BadInput(f"--alpha: {args.alpha} is not between 0 and 1")
    try:
        out = interpolate_models(
            base=args.base,
            tuned=args.tuned,
            alpha=args.alpha,
            out_dir=args.out,
            name=args.name,
            version=args.model_version,
        )
    except ValueError as e:
        raise BadInput(str(e)) from None
    sys.stdout.write(f"model written to {out}\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .analysis import evaluate_model
    from .metrics import format_table

    if not Path(args.data).is_dir():
        raise BadInput(f"{args.data}: not a folder of case folders")
    if args.json:
        _check_output(args.json, "--json")
    _check_device(args.device)
    from .model.train import training_case_folders

    cases, drafts = training_case_folders([args.data])
    if not cases and not drafts:
        raise BadInput(f"{args.data}: no case folders (folders with case.json)")
    if drafts:
        _err(
            f"warning: {len(drafts)} of the {len(cases) + len(drafts)} case(s) are model drafts "
            "nobody reviewed: their findings are a model's, not a reader's truth"
        )
    progress = _Progress("evaluate")
    results = evaluate_model(args.data, model=args.model, device=args.device, progress=progress)
    sys.stdout.write(format_table(results) + "\n")
    if args.json:
        _atomic_write_text(args.json, _json_text(results), option="--json")
    return 0


def _kind_weight(text: str) -> tuple[str, float]:
    """``--kind-weight KIND=W``: a lexicon kind and a positive weight
    (:func:`~napari_ctreport.report.lexicon.kind_weight`, which ``train`` also applies)."""
    from .report.lexicon import kind_weight

    kind, _, weight = text.rpartition("=")
    try:
        return kind_weight(kind.strip(), weight)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {exc} (KIND=W, e.g. 'ground-glass nodule=2')"
        ) from None


def _parse_size(text: str) -> tuple[int, int, int]:
    try:
        z, y, x = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise BadInput(f"--sizes: {text!r} is not ZxYxX, e.g. 300x512x512") from None
    return z, y, x


def format_benchmark(rows: list[dict[str, Any]]) -> str:
    """The benchmark table, with the scaling exponent of total time against voxel count."""
    import math

    head = f"{'size z×y×x':>14} {'device':>6} {'load s':>8} {'model s':>8} {'report s':>9} {'total s':>8} {'peak MB':>8} {'findings':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        size = "×".join(str(v) for v in r["size_zyx"])
        lines.append(
            f"{size:>14} {r['device']:>6} {r['load']:8.2f} {r['model']:8.2f} {r['report']:9.2f} "
            f"{r['total']:8.2f} {r['peak_rss_mb']:8.0f} {r['n_findings']:8d}"
        )
    pts = [
        (math.log(math.prod(r["size_zyx"])), math.log(r["total"])) for r in rows if r["total"] > 0
    ]
    if len(pts) >= 2:
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")
        lines.append(f"scaling exponent (total time ~ voxels^k): k = {slope:.2f}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from .analysis import benchmark

    sizes = [_parse_size(s) for s in args.sizes]
    _check_device(args.device)
    rows = benchmark(device=args.device, sizes=sizes, model=args.model)
    sys.stdout.write(format_benchmark(rows) + "\n")
    return 0


# -- parser ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse's parser, but an argument error is one line naming the command and where its
    help is, exit status 2 (argparse printed its whole usage block over it), as for other bad
    input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ctreport`` (all sub-commands)."""
    parser = _Parser(
        prog="ctreport",
        description="Find and report abnormalities in chest CT (napari-ctreport).",
    )
    parser.add_argument("--version", action="version", version=f"napari-ctreport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info", help="study, series, size, spacing, orientation and HU range of a CT"
    )
    p.add_argument("path", help="DICOM folder or file, NIfTI, NRRD, MHA/MHD")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--series", help=SERIES_HELP)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="write synthetic chest-CT cases with ground truth")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--cases", required=True, type=int, help="number of cases")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes to use (default: all cores; the cases do not depend on it)",
    )
    p.add_argument(
        "--matrix",
        type=int,
        help="in-plane matrix N: N x N at the clinical 0.6-1.0 mm spacing, a targeted field of"
        " view that may crop the body (default: 512, grown to hold the body)",
    )
    p.add_argument(
        "--shape",
        help="ZxYxX, e.g. 120x256x256: the whole chest resampled onto this grid (coarser than"
        " clinical spacing; fast); with --spacing exactly that grid",
    )
    p.add_argument(
        "--spacing",
        help="spacing in mm instead of drawn: SXY (in-plane), SZ,SXY or SZ,SY,SX",
    )
    p.add_argument(
        "--background",
        action="append",
        type=Path,
        default=[],
        help="a real CT to insert lesions into (repeat for several); a case folder (a corrected"
        " export, or `ctreport import`) keeps its own findings as ground truth",
    )
    p.add_argument(
        "--real-fraction",
        type=float,
        default=1.0,
        help="share of the cases drawn on a --background CT, the rest on phantoms (default 1)",
    )
    p.add_argument(
        "--wall-masses",
        type=float,
        default=0.0,
        help="probability that a mass is set against the pleura, with an effusion on its side"
        " (a lung cancer and its effusion; default 0)",
    )
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "import",
        help="a case folder from a CT and its lesion label map (for evaluate)",
        description="Measure each lesion of a label map drawn on a CT (0 background) like a "
        "finding and write a case folder that `ctreport evaluate` scores the model on.",
    )
    p.add_argument("image", help="the CT (DICOM folder or file, NIfTI, NRRD, MHA/MHD)")
    p.add_argument("labels", help="label map on the same grid: 0 background, >0 lesions")
    p.add_argument("--out", required=True, type=Path, help="case folder to write (replaced)")
    p.add_argument(
        "--kind",
        required=True,
        nargs="+",
        help="the kind of every lesion (e.g. mass), or VALUE=KIND per label value "
        "(e.g. 1=mass '2=solid nodule')",
    )
    p.add_argument(
        "--components", action="store_true", help="each connected component is one lesion"
    )
    p.add_argument("--case-id", help="case identifier (default: the --out folder's name)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("analyze", help="run the model on a CT; write the analysis JSON")
    p.add_argument("path", help="DICOM folder or file, NIfTI, NRRD, MHA/MHD")
    p.add_argument("--out", type=Path, help="JSON file to write (default: stdout)")
    p.add_argument("--model", help="model folder (default: the model shipped with the package)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument(
        "--export",
        type=Path,
        help="also write the case folder, a model draft (the record; `train` takes drafts only "
        "with --include-drafts: review and export them for retraining)",
    )
    p.add_argument("--series", help=SERIES_HELP)
    p.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="export without de-identification (for the clinical record only)",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("train", help="train or fine-tune a model from case folders")
    p.add_argument(
        "--data", action="append", type=Path, default=[], help="folder of cases (repeatable)"
    )
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="also train on this many synthetic cases generated in memory (no files)",
    )
    p.add_argument(
        "--synthetic-seed",
        type=int,
        default=0,
        help="dataset seed of the synthetic cases (case i as 'ctreport synth' writes it)",
    )
    p.add_argument(
        "--synthetic-background",
        action="append",
        type=Path,
        default=[],
        help="a real CT to insert some of the --synthetic cases' lesions into (repeatable); a"
        " background saved as .npz (synth.save_background) needs no CT reader",
    )
    p.add_argument(
        "--synthetic-real-fraction",
        type=float,
        default=0.25,
        help="share of the --synthetic cases drawn on a --synthetic-background (default 0.25)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes that load or generate the cases"
    )
    p.add_argument(
        "--patch-workers",
        type=int,
        help="processes that cut the training patches ahead of each step (default: on CUDA all"
        " but two CPU cores, at most 8; else 0, the training process cuts them); the model"
        " does not depend on it",
    )
    p.add_argument("--batch-size", type=int, help="patches per step (default 8)")
    p.add_argument(
        "--patches-per-case", type=int, help="patches drawn per case and epoch (default 8)"
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument("--init", help="model folder to fine-tune, or 'default'")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model name (default: ctreport-model, or <init name>-ft)")
    p.add_argument(
        "--model-version", help="model version (default: 1.0.0, or <init version>+ft.<date>)"
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    p.add_argument(
        "--rotate-deg",
        type=float,
        default=0.0,
        help="turn half the training patches in the axial plane by up to this many degrees",
    )
    p.add_argument(
        "--kind-weight",
        action="append",
        type=_kind_weight,
        default=[],
        metavar="KIND=W",
        help="centre W times the share of lesion patches on findings of KIND (a lexicon kind,"
        " e.g. 'ground-glass nodule=2'; repeatable; default 1 for every kind)",
    )
    p.add_argument(
        "--include-drafts",
        action="store_true",
        help="also train on model drafts (ctreport analyze --export: the model's own findings,"
        " not reviewed), which are left out by default",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write the model into an --out folder that already holds one (refused otherwise)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "interpolate",
        help="a model between a base model and its fine-tune: (1-alpha)*base + alpha*tuned",
    )
    p.add_argument("--base", required=True, help="the model fine-tuned from, or 'default'")
    p.add_argument("--tuned", required=True, help="the fine-tuned model folder")
    p.add_argument("--alpha", required=True, type=float, help="weight of the fine-tune, 0-1")
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument("--name", help="model name (default: the fine-tune's)")
    p.add_argument("--model-version", help="model version (default: the fine-tune's)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("evaluate", help="detection and report metrics on case folders")
    p.add_argument(
        "--data", required=True, type=Path, help="folder of case folders with ground truth"
    )
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", type=Path, help="also write the metrics as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="the performance table (load/model/report seconds, memory)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument(
        "--sizes",
        nargs="+",
        default=["128x128x128", "256x256x256", "300x512x512"],
        help="volume sizes z×y×x (default: 128^3, 256^3, 512×512×300)",
    )
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.set_defaults(func=cmd_bench)
    return parser


@contextlib.contextmanager
def _library_warnings_hidden(hidden: bool = True) -> Iterator[None]:
    """Keep the libraries' own warnings (pydicom on odd headers, ITK, torch, ...) off the
    user's terminal: what matters about the input is in our one-line warnings.

    Parameters
    ----------
    hidden
        Whether to hide them (``False`` with ``--debug``: shown as Python shows them).

    Yields
    ------
    None
        Python's warning filters and SimpleITK's global warning display are restored on exit.
    """
    if not hidden:
        yield
        return
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ctreport``; return the exit status.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 2 bad input, 1 an internal error, 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with _library_warnings_hidden(not args.debug):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command ``args``; one line on stderr for an error, and its exit status."""
    try:
        return int(args.func(args) or 0)
    except (CTReadError, CaseFormatError) as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    except (BadInput, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as err:  # one line for the user, the traceback only on request
        if args.debug:
            raise
        _err(f"internal error: {type(err).__name__}: {err} (run with --debug for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
