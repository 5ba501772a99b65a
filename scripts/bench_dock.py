"""GUI benchmark of the review dock: how long the UI thread stalls while a run analyses the CT and
while its result's layers are added (napari under Xvfb, the sample CT, the real dock).

A 10 ms QTimer heartbeat ticks on the UI thread; a stall is the gap between two ticks. The script
prints a table (it checks nothing): per phase its wall time, the number of ticks, the longest and
the 95th-percentile gap and how many gaps exceeded 100 ms.

Usage (headless; the window needs a screen, Xvfb is enough):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/bench_dock.py \\
        [--model DIR] [--device cpu] [--runs 2] [--interval-ms 10] [--top 5] [--stacks 5]

``--runs 2`` runs the model again and replaces the first result (what a reader does after
choosing another model). The autosave goes to a temporary folder. The analysis runs in a child
process as in the viewer; ``--in-process`` runs it in the worker thread instead (GIL contention).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path


def _percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else 0.0


def _wait(app, condition, timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            return False
        app.processEvents()
        time.sleep(0.002)
    return True


class _StackSampler:
    """A thread that looks at the UI thread every 20 ms and keeps its innermost frames whenever
    the heartbeat is more than 100 ms late (what held the UI thread: ours, napari's, or nothing
    in Python, i.e. waiting for the GIL or in C++)."""

    def __init__(self, last_tick: list[float]) -> None:
        self.ui = threading.get_ident()
        self.last_tick = last_tick
        self.samples: dict[tuple[str, ...], tuple[float, float]] = {}
        self.t0 = time.perf_counter()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(0.02)
            late = time.perf_counter() - self.last_tick[0]
            frame = sys._current_frames().get(self.ui)
            if late < 0.1 or frame is None:
                continue
            stack = tuple(
                f"{Path(f.filename).name}:{f.lineno} {f.name}"
                for f in traceback.extract_stack(frame)[-6:]
            )
            if late > self.samples.get(stack, (0.0, 0.0))[0]:
                self.samples[stack] = (late, time.perf_counter() - self.t0)


def _bench_edits(app, dock) -> list[tuple[str, list[float]]]:
    """Time review actions on every finding of the shown result: each call on the UI thread
    plus the events it queued (table, report, boxes, masks, repaint)."""
    from napari_ctreport.report.lexicon import KINDS

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        app.processEvents()
        return time.perf_counter() - t0

    s = dock.result.session
    rows: dict[str, list[float]] = {"select": [], "accept": [], "change kind": [], "reject": []}
    for f in list(s.findings):
        rows["select"].append(timed(lambda f=f: dock.select_finding(f.id)))
        rows["accept"].append(timed(lambda: dock.set_status("accepted")))
        other = next(k for k in KINDS if k != f.kind)
        rows["change kind"].append(timed(lambda f=f, k=other: s.set_kind(f.id, k)))
        rows["reject"].append(timed(lambda: dock.set_status("rejected")))
    return [(k, v) for k, v in rows.items() if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    parser.add_argument("--runs", type=int, default=1, help="runs; later ones replace the first")
    parser.add_argument("--interval-ms", type=int, default=10, help="heartbeat interval")
    parser.add_argument("--settle-s", type=float, default=1.0, help="ticks kept after the show")
    parser.add_argument("--top", type=int, default=0, help="also list the N longest stalls")
    parser.add_argument("--in-process", action="store_true", help="no child process")
    parser.add_argument("--size", default="1500x950", help="window size WxH")
    parser.add_argument(
        "--no-edits",
        dest="edits",
        action="store_false",
        help="skip timing review actions (select, accept, kind change, reject) after the runs",
    )
    parser.add_argument(
        "--stacks",
        type=int,
        default=0,
        help="sample the UI thread's Python stack when a tick is >100 ms late; show the N latest",
    )
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_ctreport._napari.review_dock import ReviewDock

    viewer = napari.Viewer(title="napari-ctreport bench")
    w, h = (int(v) for v in args.size.split("x"))
    viewer.window.resize(w, h)
    viewer.open_sample("napari-ctreport", "chest_ct")
    dock = ReviewDock(viewer)
    autosave = tempfile.TemporaryDirectory(prefix="ctreport-bench-")
    dock.autosave_root = Path(autosave.name)
    dock.isolate = not args.in_process
    dock.ask_replace_or_keep = lambda: "replace"
    viewer.window.add_dock_widget(dock, name="CT report", area="right")
    if args.model:
        dock.set_model(args.model)
    dock.device_combo.setCurrentText(args.device)
    app = QApplication.instance()
    _wait(app, lambda: False, 1.0)  # let the window come up and draw

    ticks: list[float] = []
    labels: list[str] = []

    last_tick = [time.perf_counter()]

    def tick() -> None:
        last_tick[0] = time.perf_counter()
        ticks.append(last_tick[0])
        labels.append(dock.status.text())

    timer = QTimer()
    timer.setInterval(args.interval_ms)
    timer.timeout.connect(tick)
    shown: list[float] = []
    if hasattr(dock, "result_shown"):
        dock.result_shown.connect(lambda _r: shown.append(time.perf_counter()))

    sampler = _StackSampler(last_tick) if args.stacks else None
    rows = []
    worst: list[tuple[float, float, str, int]] = []
    for run in range(1, args.runs + 1):
        ticks.clear()
        labels.clear()
        shown.clear()
        timer.start()
        tick()
        t_run = time.perf_counter()
        worker = dock.run()
        if worker is None:
            sys.stderr.write("the dock did not start a run\n")
            return 1
        ok = _wait(
            app,
            lambda: dock.worker is None and not getattr(dock, "busy", False),
            3600,
        )
        if not ok or dock.result is None:
            sys.stderr.write(f"run {run} failed: {dock.status.text()}\n")
            return 1
        t_shown = shown[0] if shown else time.perf_counter()
        settled = t_shown + args.settle_s
        _wait(app, lambda: time.perf_counter() > settled, args.settle_s + 5)  # noqa: B023
        timer.stop()
        t_ret = dock.timings.get("returned_at", t_shown)
        t = np.asarray(ticks)
        gaps, ends = np.diff(t), t[1:]
        phases = [
            ("analysis (Run -> worker result)", t_run, t_ret),
            ("adding layers (result -> shown)", t_ret, t_shown),
            (f"after shown (+{args.settle_s:g} s)", t_shown, t_shown + args.settle_s),
        ]
        for name, a, b in phases:
            sel = (
                (ends > a) & (ends <= b)
                if name.startswith("analysis")
                else (ends > a) & (t[:-1] < b)
            )
            g = gaps[sel] * 1000
            rows.append(
                (
                    run,
                    name,
                    b - a,
                    int(sel.sum()),
                    float(g.max()) if len(g) else 0.0,
                    _percentile(g, 95),
                    int((g > 100).sum()),
                )
            )
        rows.append((run, "total (Run -> shown)", t_shown - t_run, len(ticks), None, None, None))
        tm = dock.timings
        if "show_steps" in tm:
            rows.append(
                (
                    run,
                    f"  dock: {int(tm['show_steps'])} UI steps, longest",
                    tm["show_max_step_s"],
                    None,
                    None,
                    None,
                    None,
                )
            )
        order = np.argsort(gaps)[::-1][: args.top]
        worst += [(gaps[k], ends[k] - t_run, labels[k + 1], run) for k in order]

    edit_rows = _bench_edits(app, dock) if args.edits else []
    a = dock.result.analysis
    out = [
        "",
        f"napari {napari.__version__}, Qt platform {app.platformName()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}",
        f"sample CT {tuple(dock.result.volume.shape)}, model {a.model_info.get('name', '?')} "
        f"{a.model_info.get('version', '')}, device {a.device}, {len(a.findings)} findings, "
        f"{len(dock.result.boxes.data)} box rectangles, heartbeat {args.interval_ms} ms, "
        f"analysis {'in the worker thread' if args.in_process else 'in a child process'}, "
        f"torch imported in the viewer's process: {'torch' in sys.modules}",
        "",
    ]
    head = (
        f"{'run':>3}  {'phase':<36} {'time s':>7} {'ticks':>6} {'max ms':>7} {'p95 ms':>7} "
        f"{'>100ms':>6}"
    )
    out += [head, "-" * len(head)]
    for run, name, dur, n, mx, p95, over in rows:
        cells = [
            f"{dur:>7.2f}",
            f"{n:>6}" if n is not None else " " * 6,
            f"{mx:>7.0f}" if mx is not None else " " * 7,
            f"{p95:>7.0f}" if p95 is not None else " " * 7,
            f"{over:>6}" if over is not None else " " * 6,
        ]
        out.append(f"{run:>3}  {name:<36} " + " ".join(cells))
    if edit_rows:
        head = f"{'review action (UI thread, until idle)':<40} {'n':>3} {'median ms':>10} {'max ms':>8}"
        out += ["", head, "-" * len(head)]
        for name, times in edit_rows:
            ms = np.asarray(times) * 1000
            out.append(f"{name:<40} {len(ms):>3} {np.median(ms):>10.0f} {ms.max():>8.0f}")
    log = getattr(dock, "show_log", [])
    if log:
        out += ["", f"UI-thread steps of the last show (ms): {len(log)}"]
        out += [f"  {dt * 1000:6.0f}  {what}" for what, dt in log]
    if worst:
        out += ["", "longest stalls: ms, s after Run, dock status when it ended"]
        for g, at, label, run in sorted(worst, reverse=True)[: args.top]:
            out.append(f"  run {run}: {g * 1000:6.0f} ms at {at:7.2f} s  {label!r}")
    if sampler is not None and sampler.samples:
        out += ["", "UI thread's innermost Python frames during the longest late ticks:"]
        top = sorted(sampler.samples.items(), key=lambda kv: -kv[1][0])[: args.stacks]
        for stack, (late, at) in top:
            out.append(f"  {late * 1000:6.0f} ms late, {at:7.2f} s after start:")
            out += [f"      {line}" for line in stack]
    sys.stdout.write("\n".join(out) + "\n")
    viewer.close()
    autosave.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
