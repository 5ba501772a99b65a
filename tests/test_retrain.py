"""The correction loop: export two corrected cases, fine-tune one epoch on them, reload, analyse.

The corrections are made the way a reviewer makes them in the dock: draft findings that match
the truth are accepted (with the true kind), the others rejected, missed lesions added with
their masks, one sentence rewritten by hand; the export is the dock's (de-identified) export.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_ctreport.analysis import analyze
from napari_ctreport.export import export_case
from napari_ctreport.io.case import iter_cases, read_case
from napari_ctreport.metrics import hits
from napari_ctreport.model.registry import DEFAULT_MODEL_DIR, file_sha256, from_pretrained
from napari_ctreport.report.writer import write_report
from napari_ctreport.synth import generate_case

torch.set_num_threads(1)

CASE_SEEDS = (900129, 900131)
CASE_SHAPE = (80, 176, 176)
NOW = "2026-11-23T10:00:00"
MY_SENTENCE = "Reviewer wording: a nodule the reviewer described in their own words."


def _corrected(seed: int, reject_first: bool):
    """A synthetic case, the default model's draft on it, and a reviewer's correction of it."""
    c = generate_case(seed=seed, shape=CASE_SHAPE)
    draft = analyze(c.volume, device="cpu")
    labels = np.zeros(c.volume.shape, dtype=np.uint16)
    out, edits, matched = [], [], set()
    for f in draft.findings:
        gt = next((g for g in c.findings if hits(f, g)), None)
        if gt is None or (reject_first and not any(x.status == "rejected" for x in out)):
            out.append(dataclasses.replace(f, status="rejected"))
            edits.append({"time": NOW, "action": "reject", "finding_id": f.id})
            continue
        matched.add(gt.id)
        n = len(out) + 1
        labels[(draft.labels == f.label) & (labels == 0)] = n
        status = "accepted" if f.kind == gt.kind else "edited"
        out.append(dataclasses.replace(f, kind=gt.kind, label=n, status=status))
        edits.append({"time": NOW, "action": status, "finding_id": f.id, "after": gt.kind})
    for g in c.findings:  # lesions the model missed: the reviewer adds them
        if g.id in matched:
            continue
        n = len(out) + 1
        labels[(c.labels == g.label) & (labels == 0)] = n
        out.append(dataclasses.replace(g, id=f"A{n}", label=n, status="added"))
        edits.append({"time": NOW, "action": "add", "finding_id": f"A{n}"})
    report = write_report(out)
    own = next(s for s in report.sentences if s.finding_id and s.section == "findings")
    own.text = MY_SENTENCE
    report.findings = " ".join(s.text for s in report.sentences if s.section == "findings")
    c.volume.metadata.update(patient_name="Doe^Jane", patient_id=f"PID-{seed}")
    return c, draft, out, labels, report, edits


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exports")
    for i, seed in enumerate(CASE_SEEDS):
        c, draft, findings, labels, report, edits = _corrected(seed, reject_first=i == 0)
        kw = dict(
            volume=c.volume,
            findings=findings,
            labels=labels,
            report=report,
            out_dir=root,
            original={"findings": draft.findings, "report": draft.report},
            edit_log=edits,
            model_info=draft.model_info,
            reviewer="Smith^Anna",
            formats=("case",),
        )
        export_case(**kw)
        if i == 0:  # a second correction of the same study: v002 supersedes v001
            export_case(**kw)
    return root


def test_export_holds_corrections_and_negatives(export_dir):
    every = list(iter_cases(export_dir, all_versions=True))
    latest = list(iter_cases(export_dir))
    assert len(every) == 3 and len(latest) == 2
    assert sorted(p.name for p in latest) == ["v001", "v002"]
    statuses = [f.status for p in latest for f in read_case(p).findings]
    assert "rejected" in statuses and ("added" in statuses or "accepted" in statuses)


def test_training_data_uses_corrections(export_dir):
    """Corrected boxes/masks are targets, rejected findings negatives, the reviewer's text a target."""
    from napari_ctreport.model.train import _case_sentences, load_case_data

    cfg = dict(from_pretrained(None).config)
    for folder in iter_cases(export_dir):
        case = read_case(folder)
        data = load_case_data(folder, cfg)
        active = [f for f in case.findings if f.status != "rejected"]
        rejected = [f for f in case.findings if f.status == "rejected"]
        assert len(data.targets) == len(active)
        assert len(data.negatives) == len(rejected)
        assert sorted(t.label for t in data.targets) == sorted(f.label for f in active)
        assert data.info["source"] == "radiologist corrected"
        assert data.info["rejected"] == len(rejected)
        # the mask target holds exactly the corrected findings' regions
        assert set(np.unique(data.labels)) - {0} == {f.label for f in active}
        sents = {
            s
            for f in active
            for s in _case_sentences(case, f, rng=np.random.default_rng(0), n_variants=0)
        }
        assert MY_SENTENCE in sents or not any(
            s["text"] == MY_SENTENCE for s in case.report["sentences"]
        )
    texts = [s["text"] for p in iter_cases(export_dir) for s in read_case(p).report["sentences"]]
    assert MY_SENTENCE in texts


def test_hard_negative_patches_centre_on_rejected_findings(export_dir):
    from napari_ctreport.model.train import load_case_data, sample_patch

    cfg = dict(from_pretrained(None).config)
    data = next(d for d in (load_case_data(p, cfg) for p in iter_cases(export_dir)) if d.negatives)
    patch = np.asarray(cfg["patch_zyx"], dtype=int)

    def share_holding_negative(negative_prob: float) -> float:
        rng = np.random.default_rng(0)
        n = 0
        for _ in range(60):
            s = sample_patch(
                data,
                patch,
                rng,
                lesion_prob=0.0,
                augment=True,
                pad_value=-1.0,
                negative_prob=negative_prob,
            )
            assert s["image"].shape == tuple(patch)
            lo, ext = s["origin"], s["extent"]
            n += any(np.all(c >= lo) and np.all(c < lo + ext) for c in data.negatives)
        return n / 60

    assert share_holding_negative(1.0) == 1.0
    assert share_holding_negative(0.0) < 0.5


@pytest.fixture(scope="module")
def new_model(export_dir, tmp_path_factory) -> tuple[Path, str]:
    """`ctreport train --data EXPORT_DIR --init default --out NEW`, one epoch, patches turned."""
    import contextlib
    import io

    from napari_ctreport.cli import main

    new = tmp_path_factory.mktemp("models") / "new_model"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            [
                "train",
                "--data",
                str(export_dir),
                "--init",
                "default",
                "--out",
                str(new),
                "--epochs",
                "1",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--seed",
                "3",
                "--rotate-deg",
                "12",
            ]
        )
    assert rc == 0
    return new, out.getvalue()


def _as_draft(src: Path, dest: Path) -> Path:
    """A copy of case folder ``src`` at ``dest`` (``OUT/<case_id>/vNNN``) whose source is a
    model draft, of case ``<case_id>`` (not a copy of ``src``'s case, which it would supersede
    or be superseded by)."""
    import shutil

    shutil.copytree(src, dest)
    doc = json.loads((dest / "case.json").read_text())
    doc["provenance"]["source"] = "model draft"
    doc["case_id"] = dest.parent.name
    (dest / "case.json").write_text(json.dumps(doc))
    return dest


def test_model_drafts_are_left_out_of_training(export_dir, tmp_path, capsys):
    """A model draft (``ctreport analyze --export``: the model's own findings, not reviewed) is
    not trained on unless asked for; once a reader's correction of it is exported (a newer
    version), that version is. ``ctreport train`` on drafts alone says so and exits 2."""
    from napari_ctreport.cli import main
    from napari_ctreport.model.train import training_case_folders

    latest = list(iter_cases(export_dir))
    draft = _as_draft(latest[0], tmp_path / "drafts" / "ct-draft" / "v001")
    found, drafts = training_case_folders([export_dir, tmp_path / "drafts"])
    assert found == latest and drafts == [draft]
    found, drafts = training_case_folders([tmp_path / "drafts"], include_drafts=True)
    assert found == [draft] and drafts == []
    rc = main(["train", "--data", str(tmp_path / "drafts"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "1 model draft(s) nobody reviewed" in err and "--include-drafts" in err
    assert not (tmp_path / "m").exists()
    # corrected and exported again: the newer version is a corrected case
    import shutil

    shutil.copytree(latest[1], draft.parent / "v002")
    assert training_case_folders([tmp_path / "drafts"]) == ([draft.parent / "v002"], [])


def test_finetune_one_epoch_reload_and_analyse(export_dir, new_model):
    new, stdout = new_model
    assert f"model written to {new}" in stdout
    loaded = from_pretrained(new)
    assert loaded.info["name"] == "ctreport-default-ft"
    base_version = from_pretrained(None).info["version"]
    assert loaded.info["version"].startswith(f"{base_version}+ft.")
    assert loaded.sha256 != file_sha256(DEFAULT_MODEL_DIR / "model.safetensors")
    # the weights moved, from the default's
    base = from_pretrained(None)
    moved = [
        k
        for k, v in loaded.net.state_dict().items()
        if not torch.equal(v, base.net.state_dict()[k])
    ]
    assert moved
    training = loaded.config["training"]
    assert training["init_model"]["sha256"] == base.sha256
    assert training["rotate_deg"] == 12.0 and training["drafts_left_out"] == 0
    ids = sorted(read_case(p).case_id for p in iter_cases(export_dir))
    assert sorted(c["case_id"] for c in training["train_cases"]) == ids
    card = (new / "MODEL_CARD.md").read_text()
    assert all(i in card for i in ids) and "radiologist corrected" in card
    assert "sha256 " + base.sha256 in card and "axial turns up to 12 degrees" in card
    assert json.loads((new / "training_log.json").read_text())[0]["epoch"] == 1
    # no identifier of the input reached the model folder
    for f in new.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"Doe^Jane" not in data and b"PID-900129" not in data
    # reload and analyse a new case with it
    c = generate_case(seed=900133, shape=CASE_SHAPE)
    a = analyze(c.volume, model=new, device="cpu")
    assert a.model_info["name"] == "ctreport-default-ft"
    assert a.model_info["sha256"] == loaded.sha256
    assert a.labels.shape == c.volume.shape
    assert a.report.findings


def test_interpolate_between_the_default_and_its_fine_tune(new_model, tmp_path, capsys):
    """``ctreport interpolate``: weights (1 - alpha) * base + alpha * fine-tune, a loadable model."""
    from napari_ctreport.cli import main

    new, _ = new_model
    out = tmp_path / "mid"
    args = ["interpolate", "--base", "default", "--tuned", str(new), "--out", str(out)]
    rc = main([*args, "--alpha", "0.25", "--model-version", "9.9.9"])
    assert rc == 0 and f"model written to {out}" in capsys.readouterr().out
    base, tuned, mid = from_pretrained(None), from_pretrained(new), from_pretrained(out)
    sb, st, sm = base.net.state_dict(), tuned.net.state_dict(), mid.net.state_dict()
    moved = [k for k in sb if not torch.equal(sb[k], st[k])]
    assert moved
    for k in moved:
        assert torch.allclose(sm[k], 0.75 * sb[k] + 0.25 * st[k], atol=1e-6), k
    assert mid.info["version"] == "9.9.9"
    assert mid.config["interpolation"] == {"alpha": 0.25, "base": base.info, "tuned": tuned.info}
    assert mid.config["training"] == tuned.config["training"]
    a = analyze(generate_case(seed=900133, shape=CASE_SHAPE).volume, model=out, device="cpu")
    assert a.model_info["sha256"] == mid.sha256
    # alpha outside [0, 1], or a folder that is not a model: a clear error, exit status 2
    assert main([*args, "--alpha", "1.5"]) == 2
    assert "--alpha" in capsys.readouterr().err
    bad = [*args[:4], str(tmp_path), "--out", str(tmp_path / "x"), "--alpha", "0.5"]
    assert main(bad) == 2
    assert "not a model folder" in capsys.readouterr().err


@pytest.mark.gui
def test_dock_loads_the_new_model(sample_dock, qtbot, new_model, tmp_path, monkeypatch):
    """The review dock runs the fine-tuned model folder and shows its identity."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    new, _ = new_model
    viewer, dock = sample_dock(new)
    assert dock.model() == str(new)
    worker = dock.run()
    with qtbot.waitSignal(worker.finished, timeout=600_000):
        pass
    qtbot.waitUntil(lambda: "ctreport-default-ft" in dock.status.text(), timeout=60_000)
    info = dock.result.session.model_info
    assert info["name"] == "ctreport-default-ft"
    assert info["sha256"] == from_pretrained(new).sha256


def test_model_card_says_whether_patches_were_turned() -> None:
    """A model trained without turning must not read "axial turns up to 0 degrees"."""
    from napari_ctreport.model.train import model_card

    training = {
        "init_model": None,
        "data_dirs": ["/data/exports"],
        "seed": 3,
        "epochs": 1,
        "steps": 10,
        "minutes": 0.5,
        "n_train_cases": 0,
        "n_val_cases": 0,
        "train_cases": [],
        "val_cases": [],
    }
    flat = model_card(name="m", version="1", training={**training, "rotate_deg": 0.0}, history=[])
    assert "patches not turned" in flat and "turns up to" not in flat
    assert "random initialisation" in flat
    turned = model_card(name="m", version="1", training={**training, "rotate_deg": 7.5}, history=[])
    assert "axial turns up to 7.5 degrees" in turned
    assert "weighted by kind" not in turned
    weighted = {**training, "kind_weights": {"ground-glass nodule": 2.0, "part-solid nodule": 2.0}}
    card = model_card(name="m", version="1", training=weighted, history=[])
    assert "weighted by kind: ground-glass nodule x2, part-solid nodule x2" in card


def test_training_case_info_counts_only_the_readers_edits() -> None:
    """The dock exports the whole edit log: the model run's own "analysis" record and, for a
    case reviewed again, a "case opened" record are not edits of the reader's (4, not 6)."""
    from types import SimpleNamespace

    from napari_ctreport.model.train import _case_info

    def rec(action: str, fid: str | None = None) -> dict:
        return {"time": NOW, "action": action, "finding_id": fid, "before": None, "after": None}

    log = [rec("analysis"), rec("status", "F1"), rec("kind", "F2")]
    log += [rec("case opened"), rec("box", "F1"), rec("add", "A3")]
    prov = {"source": "radiologist corrected", "reviewer": "R", "edit_log": log}
    case = SimpleNamespace(case_id="c1", folder=None, provenance=prov)
    assert _case_info(case, n_targets=2, n_negatives=1)["edits"] == 4
    case.provenance = {**prov, "edit_log": log[:1]}  # a draft exported unchanged
    assert _case_info(case, n_targets=2, n_negatives=0)["edits"] == 0
    case.provenance = {}
    assert _case_info(case, n_targets=0, n_negatives=0)["edits"] == 0


GEN_SEED = 424242
GEN_SHAPE = (48, 96, 96)


def test_a_case_made_in_memory_is_the_written_case_on_the_model_grid(tmp_path):
    """``synth.generate.training_case(i)`` (no file) gives the trainer what the case folder
    ``write_dataset`` writes as ``case_i`` gives it, up to the NIfTI header's float32 spacing."""
    import functools

    from napari_ctreport.model.registry import from_pretrained
    from napari_ctreport.model.train import _load_source, load_case_data
    from napari_ctreport.synth import write_dataset
    from napari_ctreport.synth.generate import training_case

    cfg = dict(from_pretrained(None).config)
    folders = write_dataset(
        tmp_path, cases=2, seed=GEN_SEED, shape=GEN_SHAPE, formats=("nifti",), real_fraction=0.0
    )
    make = functools.partial(training_case, seed=GEN_SEED, shape=GEN_SHAPE)
    n_targets = 0
    for i, folder in enumerate(folders):
        mem, why = _load_source(i, cfg, 5, make)
        assert mem is not None, why
        disk = load_case_data(folder, cfg, seed=5)
        assert mem.name == f"generated:case_{i:04d}"
        assert mem.image.shape == disk.image.shape and mem.valid == disk.valid
        assert np.abs(mem.image.astype(float) - disk.image.astype(float)).max() < 1e-2
        assert np.mean(mem.labels != disk.labels) < 1e-3
        assert [(t.kind, t.side, t.zone, t.label) for t in mem.targets] == [
            (t.kind, t.side, t.zone, t.label) for t in disk.targets
        ]
        for a, b in zip(mem.targets, disk.targets, strict=True):
            assert np.allclose(a.centre, b.centre, atol=0.5)
            assert a.sentences == b.sentences
        assert mem.info["case_id"] == disk.info["case_id"] == f"case_{i:04d}"
        n_targets += len(mem.targets)
    assert n_targets  # the comparison covered findings


def test_train_on_cases_made_in_memory_in_two_processes(tmp_path):
    """``train(generated=...)`` with no case folder: the cases are generated in two worker
    processes, the model trains and loads, and its config and card say where the cases came
    from. The CLI trains on ``--synthetic`` cases alone (a clinical-grid case), and refuses a
    ``train`` given neither ``--data`` nor ``--synthetic``."""
    import functools

    from napari_ctreport.cli import main
    from napari_ctreport.model.train import GeneratedCases, train
    from napari_ctreport.synth.generate import training_case

    generated = GeneratedCases(
        count=3,
        make=functools.partial(training_case, seed=GEN_SEED, shape=GEN_SHAPE),
        about={"dataset seed": GEN_SEED},
    )
    out = train(
        data_dirs=[],
        generated=generated,
        out_dir=tmp_path / "m",
        init="default",
        epochs=1,
        device="cpu",
        seed=1,
        batch_size=2,
        patches_per_case=2,
        threads=1,
        workers=2,
    )
    loaded = from_pretrained(out)
    training = loaded.config["training"]
    assert training["generated"] == {"cases": 3, "dataset seed": GEN_SEED}
    ids = [c["case_id"] for c in training["train_cases"] + training["val_cases"]]
    assert sorted(ids) == ["case_0000", "case_0001", "case_0002"]
    assert "3 case(s) made in memory (dataset seed 424242)" in (out / "MODEL_CARD.md").read_text()
    assert main(["train", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    cli = tmp_path / "cli"
    args = ["train", "--synthetic", "1", "--synthetic-seed", "7", "--out", str(cli)]
    args += ["--init", "default", "--epochs", "1", "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    assert from_pretrained(cli).config["training"]["generated"]["dataset seed"] == 7


def test_a_saved_background_gives_the_same_cases_without_a_ct_reader(tmp_path, shared_data):
    """A real CT saved by ``synth.save_background`` (NumPy only) gives the very cases its
    NIfTI gives, and ``training_case`` makes them in a process where SimpleITK and pydicom
    cannot be imported (a lent GPU's image). ``ctreport train`` trains on such cases and says so
    in the model's config and card. A broken saved background is refused, naming the file, by
    the reader and by ``ctreport train``; a case folder cannot be saved as one."""
    import subprocess
    import sys

    from napari_ctreport.cli import main
    from napari_ctreport.synth import read_background, save_background, write_dataset
    from napari_ctreport.synth.generate import BackgroundError, dataset_case

    nifti = shared_data / "real" / "totalsegmentator" / "example_ct_sm.nii.gz"
    saved = save_background(nifti, tmp_path / "bg" / "example_ct_sm")
    assert saved.suffix == ".npz" and saved.is_file()
    back = read_background(saved)
    assert back.metadata["source_path"].endswith("example_ct_sm.nii.gz")
    kinds = []
    for i in range(3):
        a, rec_a = dataset_case(i, seed=GEN_SEED, real_backgrounds=[str(nifti)], real_fraction=1)
        b, rec_b = dataset_case(i, seed=GEN_SEED, real_backgrounds=[str(saved)], real_fraction=1)
        assert a.meta["style"] == "real background"
        assert np.array_equal(a.volume.array, b.volume.array)
        assert a.volume.spacing_zyx == b.volume.spacing_zyx
        assert np.array_equal(a.labels, b.labels)
        assert [f.to_dict() for f in rec_a.findings] == [f.to_dict() for f in rec_b.findings]
        assert rec_a.report == rec_b.report
        kinds += [f.kind for f in rec_a.findings]
    assert kinds  # lesions were inserted
    blocked = (
        "import sys\n"
        "for m in ('SimpleITK', 'pydicom', 'highdicom', 'napari', 'qtpy'):\n"
        "    sys.modules[m] = None\n"
        "from napari_ctreport.synth.generate import training_case\n"
        f"rec, vol, lab = training_case(1, seed={GEN_SEED}, real_backgrounds=[{str(saved)!r}],"
        " real_fraction=1.0)\n"
        "print(*vol.shape, len(rec.findings), int(lab.max()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert [int(v) for v in out[:3]] == [30, 101, 122] and int(out[3]) >= 1 and int(out[4]) >= 1
    cli = tmp_path / "cli"
    args = ["train", "--synthetic", "1", "--synthetic-seed", "7", "--out", str(cli)]
    args += ["--synthetic-background", str(saved), "--synthetic-real-fraction", "1"]
    args += ["--init", "default", "--epochs", "1", "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    generated = from_pretrained(cli).config["training"]["generated"]
    assert generated["real backgrounds"] == [str(saved)] and generated["real fraction"] == 1.0
    assert "real fraction 1.0" in (cli / "MODEL_CARD.md").read_text()
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(BackgroundError, match="broken.npz"):
        read_background(broken)
    args = ["train", "--synthetic", "1", "--synthetic-background", str(broken)]
    assert main([*args, "--out", str(tmp_path / "m"), "--device", "cpu"]) == 2
    assert not (tmp_path / "m").exists()
    case_dir = write_dataset(
        tmp_path / "cases", cases=1, seed=GEN_SEED, shape=GEN_SHAPE, formats=("nifti",)
    )[0]
    with pytest.raises(BackgroundError, match="case folder"):
        save_background(case_dir, tmp_path / "x")


def _export_batches(export_dir, *, seed: int, steps: int, batch_size: int, rotate_deg: float):
    """The training batches of the exported cases (``train``'s patch source)."""
    from napari_ctreport.model.train import _PatchBatches, load_case_data

    cfg = from_pretrained(None).config
    cases = [load_case_data(c, cfg) for c in iter_cases(export_dir)]
    return _PatchBatches(
        cases,
        np.array([32, 64, 64]),
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        lesion_prob=0.7,
        rotate_deg=rotate_deg,
        pad_value=-1.0,
    )


def test_patches_cut_in_worker_processes_train_the_same_model(export_dir, tmp_path, caplog):
    """``train(patch_workers=2)``: the patches are cut in two forked processes ahead of each
    step, after this process's torch has run its threads, and the trained weights are the
    same bytes as with the patches cut between steps here (step ``i``'s patches come from a
    generator seeded by ``(seed, i)``). The batches themselves are equal array for array, in
    step order, and the model's config says how many workers cut them and how much of the
    training time went on waiting for them."""
    from napari_ctreport.model.train import _iter_batches, train

    torch.ones(256, 256) @ torch.ones(256, 256)  # the parent's torch has worked before the fork
    source = _export_batches(export_dir, seed=4, steps=5, batch_size=3, rotate_deg=12.0)
    here = list(_iter_batches(source, 0))
    forked = list(_iter_batches(source, 2))
    assert len(here) == len(forked) == 5
    for (picks_a, a), (picks_b, b) in zip(here, forked, strict=True):
        assert picks_a == picks_b
        for sa, sb in zip(a, b, strict=True):
            assert np.array_equal(sa["image"], sb["image"])
            assert np.array_equal(sa["labels"], sb["labels"])
            assert [t.label for t, _, _ in sa["findings"]] == [
                t.label for t, _, _ in sb["findings"]
            ]
    assert len({h[1][0]["image"].tobytes() for h in here}) == 5  # five different batches

    shas = []
    for workers in (0, 2):
        out = train(
            data_dirs=[export_dir],
            out_dir=tmp_path / f"w{workers}",
            init="default",
            epochs=1,
            device="cpu",
            seed=2,
            batch_size=2,
            patches_per_case=2,
            threads=1,
            rotate_deg=12.0,
            patch_workers=workers,
        )
        training = from_pretrained(out).config["training"]
        assert training["patch_workers"] == workers
        assert 0.0 <= training["patch_wait_share"] <= 1.0
        shas.append(file_sha256(out / "model.safetensors"))
    assert shas[0] == shas[1]
    assert shas[0] != file_sha256(DEFAULT_MODEL_DIR / "model.safetensors")
    assert "patch workers failed" not in caplog.text  # the workers cut them, not the fallback


class _FailsInWorkers:
    """A batch source whose batches from step 2 on cannot be cut outside the test's process
    (standing in for a worker that died)."""

    def __init__(self, source, pid):
        self.source, self.pid, self.seed = source, pid, source.seed

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        import os

        if i >= 2 and os.getpid() != self.pid:
            raise RuntimeError("worker gone")
        return self.source[i]


def test_failed_patch_workers_hand_over_to_the_training_process(export_dir, caplog):
    """When the patch workers fail mid-run the training process cuts the rest itself: every
    step's batch still comes, in order and the same as ever, and a warning says from which
    step."""
    import logging
    import os

    from napari_ctreport.model.train import _iter_batches

    source = _export_batches(export_dir, seed=5, steps=6, batch_size=2, rotate_deg=0.0)
    with caplog.at_level(logging.WARNING, logger="napari_ctreport.model.train"):
        got = list(_iter_batches(_FailsInWorkers(source, os.getpid()), 2))
    assert [p for p, _ in got] == [source[i][0] for i in range(6)]
    for i, (_, samples) in enumerate(got):
        assert np.array_equal(samples[0]["image"], source[i][1][0]["image"])
    assert "failed at step 2" in caplog.text


def test_patch_workers_by_default_only_on_cuda(monkeypatch):
    """Unless told, ``train`` cuts patches in workers on CUDA only: all but two cores, at most
    eight, none on a two-core machine; on the CPU (and MPS) the training process cuts them."""
    import os

    from napari_ctreport.model.train import auto_patch_workers

    for cores, want in ((16, 8), (6, 4), (2, 0), (None, 0)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert auto_patch_workers("cuda") == want
        assert auto_patch_workers("cpu") == auto_patch_workers(torch.device("mps")) == 0


def test_kind_weights_centre_more_patches_on_a_kind(tmp_path, capsys):
    """``kind_weights``: with ground glass weighted 9 to 1, about nine in ten lesion-centred
    patches of a case holding one solid and one ground-glass nodule are centred on the ground
    glass (about half without weights). ``train`` refuses a kind outside the lexicon or a weight
    that is not positive before it loads anything, and so does ``ctreport train``."""
    from napari_ctreport.model.train import _CaseData, _kind_weights, _Target, sample_patch
    from napari_ctreport.report.lexicon import KINDS, kind_id

    def target(kind: str, centre) -> _Target:
        return _Target(
            kind=kind_id(kind) - 1,
            side=0,
            zone=0,
            size_bin=0,
            centre=np.array(centre, dtype=float),
            size=np.array([4.0, 4.0, 4.0]),
            label=1,
        )

    case = _CaseData(
        name="two",
        image=np.zeros((48, 160, 160), dtype=np.float16),
        labels=np.zeros((48, 160, 160), dtype=np.uint8),
        valid=(48, 160, 160),
        targets=[
            target("solid nodule", (24, 40, 40)),
            target("ground-glass nodule", (24, 120, 120)),
        ],
        spacing=np.array([2.0, 1.5, 1.5]),
    )
    patch = np.array([16, 32, 32])

    def share_on_ground_glass(weights) -> float:
        rng = np.random.default_rng(0)
        n = 0
        for _ in range(300):
            s = sample_patch(
                case, patch, rng, lesion_prob=1.0, augment=False, pad_value=-1.0,
                kind_weights=weights,
            )  # fmt: skip
            n += s["origin"][2] > 80
        return n / 300

    weights = _kind_weights({"ground-glass nodule": 9.0})
    assert len(weights) == len(KINDS) and sorted(set(weights)) == [1.0, 9.0]
    assert 0.4 < share_on_ground_glass(None) < 0.6
    assert 0.85 < share_on_ground_glass(weights) < 0.95

    from napari_ctreport.cli import main
    from napari_ctreport.model.train import train

    for bad in ({"tumour": 2.0}, {"mass": 0.0}, {"mass": float("nan")}):
        with pytest.raises(ValueError, match="tumour|positive"):
            train(data_dirs=[tmp_path / "none"], out_dir=tmp_path / "m", kind_weights=bad)
    for arg in ("tumour=2", "mass=-1", "mass", "mass=nan", "mass=x"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--synthetic", "1", "--out", str(tmp_path / "m"), "--kind-weight", arg])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "the kind must be one of" in err and "the weight must be a positive number" in err


def _fake_export(root: Path, case_id: str, version: int, created: str | None = None) -> Path:
    """An export version folder ``root/<case_id>/vNNN`` holding only a ``case.json`` record
    (enough for :func:`training_case_folders`; loading it for training fails)."""
    folder = root / case_id / f"v{version:03d}"
    folder.mkdir(parents=True)
    prov: dict = {"source": "radiologist corrected", "export": {"version": version}}
    if created is not None:
        prov["created"] = created
    (folder / "case.json").write_text(json.dumps({"case_id": case_id, "provenance": prov}))
    return folder


def test_train_keeps_the_newest_export_of_a_case_across_data_folders(tmp_path, caplog):
    """The same case exported under two ``--data`` folders is trained on once: the highest
    version, on a tie the one created last (the first given when neither says); case folders
    that are not exports (a synthetic dataset's ``case_0000``) are all kept. ``train`` says
    once how many superseded copies it skipped."""
    import logging

    from napari_ctreport.model.train import train, training_case_folders

    a, b = tmp_path / "a", tmp_path / "b"
    _fake_export(a, "ct-1", 1)
    _fake_export(a, "ct-1", 2)
    newest_1 = _fake_export(b, "ct-1", 3)
    _fake_export(a, "ct-2", 1, created="2026-01-01T10:00:00+00:00")
    newest_2 = _fake_export(b, "ct-2", 1, created="2026-01-02T09:00:00+00:00")
    first_3 = _fake_export(a, "ct-3", 1)
    _fake_export(b, "ct-3", 1)
    only_4 = _fake_export(b, "ct-4", 2)
    plain = []
    for root in (a, b):  # two synthetic datasets: different cases under the same ids
        (root / "case_0000").mkdir()
        (root / "case_0000" / "case.json").write_text(json.dumps({"case_id": "case_0000"}))
        plain.append(root / "case_0000")
    found, drafts = training_case_folders([a, b])
    assert sorted(found) == sorted([newest_1, newest_2, first_3, only_4, *plain])
    assert drafts == []
    with caplog.at_level(logging.WARNING, logger="napari_ctreport.model.train"):
        with pytest.raises(ValueError, match="no readable training case"):
            train(data_dirs=[a, b], out_dir=tmp_path / "m", device="cpu", epochs=1)
    said = [r.getMessage() for r in caplog.records if "superseded" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("skipped 3 superseded"), said


def test_train_with_no_readable_case_is_bad_input(tmp_path, capsys):
    """``ctreport train`` on case folders that all fail to load (a corrupt ``case.json``, a
    case without its image): exit 2 and one line naming the folder, not an internal error."""
    from napari_ctreport.cli import main

    data = tmp_path / "bad"
    (data / "corrupt").mkdir(parents=True)
    (data / "corrupt" / "case.json").write_text("{not json")
    (data / "no_image").mkdir()
    (data / "no_image" / "case.json").write_text(json.dumps({"case_id": "no_image"}))
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0] == (
        f"ctreport: no readable training case in {data}: every case was skipped (see above)"
    )
    assert not (tmp_path / "m" / "config.json").exists()


def test_train_refuses_an_out_folder_holding_a_model(tmp_path, capsys, monkeypatch):
    """``ctreport train --out DIR`` where DIR already holds a model: exit 2, one line, before
    any work; ``--overwrite`` lets it write there. An empty or model-less folder is fine."""
    import napari_ctreport.model.train as train_module
    from napari_ctreport.cli import main

    calls = []

    def fake_train(**kwargs):
        calls.append(kwargs["out_dir"])
        return Path(kwargs["out_dir"])

    def no_work(*args, **kwargs):
        raise AssertionError("the work was started")

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(train_module, "training_case_folders", no_work)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x")
    args = ["train", "--synthetic", "1", "--device", "cpu", "--out", str(model)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ctreport: {model} already holds a model; choose another --out or pass --overwrite\n"
    )
    assert calls == [] and (model / "model.safetensors").read_bytes() == b"x"
    (model / "config.json").unlink()  # only the weights left: still a model's
    assert main(args) == 2 and "already holds a model" in capsys.readouterr().err
    monkeypatch.setattr(train_module, "training_case_folders", lambda *a, **k: ([], []))
    assert main([*args, "--overwrite"]) == 0
    assert calls == [model]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:-1], str(empty)]) == 0
    assert calls == [model, empty]


def test_a_fine_tune_does_not_claim_its_starting_models_interpolation(tmp_path):
    """The shipped default was made by ``interpolate`` (its config's ``interpolation``); a model
    fine-tuned from it is not an interpolation: its config (and its checkpoints') has none, and
    its training record says what it started from. Nor do its checkpoints carry the starting
    model's training record."""
    import functools

    from napari_ctreport.model.train import GeneratedCases, train
    from napari_ctreport.synth.generate import training_case

    base = from_pretrained(None)
    assert "interpolation" in base.config  # what the fine-tune must not copy
    out = train(
        data_dirs=[],
        generated=GeneratedCases(
            count=1, make=functools.partial(training_case, seed=GEN_SEED, shape=GEN_SHAPE)
        ),
        out_dir=tmp_path / "ft",
        init="default",
        epochs=1,
        device="cpu",
        batch_size=1,
        patches_per_case=1,
        threads=1,
    )
    tuned = from_pretrained(out)
    assert "interpolation" not in tuned.config
    training = tuned.config["training"]
    assert training["init"] == "default" and training["init_model"] == base.info
    checkpoint = json.loads((out / "checkpoints" / "epoch_001" / "config.json").read_text())
    assert "interpolation" not in checkpoint
    assert "training" not in checkpoint  # the starting model's record is not this one's
