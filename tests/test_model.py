"""The network, model folders, sliding windows, cancellation and constrained decoding."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
import torch

from napari_ctreport.model.inference import (
    Cancelled,
    check_cancel,
    greedy_decode,
    pick_device,
    shifted_grid_inference,
    sliding_window_inference,
    window_starts,
)
from napari_ctreport.model.registry import (
    LoadedModel,
    create_model,
    file_sha256,
    from_pretrained,
    list_models,
    save_pretrained,
)
from napari_ctreport.model.text import (
    NUM,
    SLOTS,
    TERM_WORDS,
    TermConstraint,
    build_tokenizer,
    constraints_for,
    fill,
    template,
)
from napari_ctreport.report.findings import Finding
from napari_ctreport.report.lexicon import KINDS, SIDES, ZONES
from napari_ctreport.report.writer import describe_finding

torch.set_num_threads(1)


def _finding(kind="solid nodule", side="right", zone="upper", d=12.3, short=9.1, vol=0.8, **attrs):
    return Finding(
        id="F1",
        kind=kind,
        side=side,
        zone=zone,
        center_lps_mm=(-80.0, 10.0, -40.0),
        bbox_lps_mm=((-86.0, 4.0, -46.0), (-74.0, 16.0, -34.0)),
        diameter_mm=d,
        short_axis_mm=short,
        volume_ml=vol,
        mean_hu=30.0,
        attributes=dict(attrs),
    )


def _all_findings() -> list[Finding]:
    out = []
    for k in KINDS:
        for s in ("right", "left"):
            for z in ZONES:
                extra = {"solid_diameter_mm": 4.2} if k == "part-solid nodule" else {}
                out.append(
                    _finding(
                        k,
                        s,
                        z,
                        d=7.4 if k != "mass" else 41.0,
                        vol=350.0 if k == "pleural effusion" else 0.5,
                        **extra,
                    )
                )
    return out


@pytest.fixture(scope="module")
def corpus_tokenizer():
    sents = []
    rng = np.random.default_rng(0)
    for f in _all_findings():
        for _ in range(6):
            sents.append(template(describe_finding(f, rng=rng), f)[0])
    return build_tokenizer(sents)


@pytest.mark.parametrize("name", list_models())
def test_registry_builds_every_model(name):
    net = create_model(name)
    x = torch.zeros(1, 1, 32, 64, 64)
    with torch.no_grad():
        out = net.encode(x)
    assert out["heat"].shape == (1, len(KINDS), 8, 16, 16)
    assert out["mask"].shape == (1, 1, 32, 64, 64)
    assert out["tokens"].shape[2:] == (4, 8, 8)
    assert net.config["architecture"] == name


def test_registry_rejects_unknown_name():
    with pytest.raises(KeyError, match="unknown model"):
        create_model("no-such-model")


def test_save_load_roundtrip_gives_identical_outputs(tmp_path, corpus_tokenizer):
    torch.manual_seed(0)
    net = create_model("ctreport-tiny", tokenizer=corpus_tokenizer).eval()
    folder = save_pretrained(net, corpus_tokenizer, tmp_path / "m", name="tiny-test", version="9.9")
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    loaded = from_pretrained(folder)
    assert isinstance(loaded, LoadedModel)
    assert loaded.info == {
        "name": "tiny-test",
        "version": "9.9",
        "sha256": file_sha256(folder / "model.safetensors"),
    }
    assert loaded.tokenizer.get_vocab() == corpus_tokenizer.get_vocab()
    x = torch.randn(1, 1, 32, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = net.encode(x), loaded.net.encode(x)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        ids = torch.tensor([[corpus_tokenizer.bos_token_id, 5, 6, 7]])
        mem = torch.randn(1, 5, net.config["decoder"]["n_embd"])
        la = net.decoder(input_ids=ids, encoder_hidden_states=mem).logits
        lb = loaded.net.decoder(input_ids=ids, encoder_hidden_states=mem).logits
    torch.testing.assert_close(la, lb, rtol=0, atol=0)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["vocab_size"] == len(corpus_tokenizer.get_vocab())


def test_from_pretrained_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)


def test_window_starts_cover_and_align():
    for length in (64, 65, 100, 200, 333):
        starts = window_starts(length, 64, 0.25)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 64] = True
        assert (
            covered.all()
            and starts[0] == 0
            and starts[-1] + 64 == max(length, 64)
            or starts[-1] + 64 >= length
        )


def test_sliding_window_equals_full_volume_for_conv_predictor():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 1)

    def predictor(x):
        y = conv(x)
        return {"full": y, "coarse": torch.nn.functional.avg_pool3d(y, 4)}

    arr = np.random.default_rng(0).normal(size=(40, 72, 88)).astype(np.float32)
    out = sliding_window_inference(arr, predictor, patch=(16, 32, 32), overlap=0.5, batch_size=3)
    with torch.no_grad():
        ref = predictor(torch.from_numpy(arr)[None, None])
    np.testing.assert_allclose(out["full"], ref["full"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["coarse"], ref["coarse"][0].numpy(), atol=1e-5)


def test_shifted_grid_passes_line_up_with_the_plain_pass():
    """A shift-equivariant predictor gives the plain pass back exactly (no off-by-one in the
    un-shift); a window-dependent one is combined by max / mean, and an output whose stride the
    shift does not divide is the plain pass's."""
    arr = np.random.default_rng(1).normal(size=(32, 48, 56)).astype(np.float32)
    kw = dict(patch=(16, 32, 32), overlap=0.25, batch_size=2)

    def equivariant(x):
        return {"full": x * 3, "coarse": torch.nn.functional.avg_pool3d(x, 4)}

    plain = sliding_window_inference(arr, equivariant, **kw)
    both = shifted_grid_inference(
        arr, equivariant, shifts=[4, 8], pad_value=-1.0, max_outputs=("coarse",), **kw
    )
    for name in plain:
        np.testing.assert_allclose(both[name], plain[name], atol=1e-5)

    ramp = torch.linspace(0.0, 1.0, 32)  # weights that depend on where a voxel sits in its window

    def windowed(x):
        y = x * ramp
        return {
            "heat": torch.nn.functional.avg_pool3d(y, 4),
            "mask": y,
            "tokens": torch.nn.functional.avg_pool3d(y, 8),
        }

    plain = sliding_window_inference(arr, windowed, **kw)
    padded = np.full((40, 56, 64), -1.0, np.float32)
    padded[4:36, 4:52, 4:60] = arr
    moved = sliding_window_inference(padded, windowed, **kw)
    out = shifted_grid_inference(
        arr, windowed, shifts=[4], pad_value=-1.0, max_outputs=("heat",), **kw
    )
    np.testing.assert_allclose(
        out["heat"], np.maximum(plain["heat"], moved["heat"][:, 1:9, 1:13, 1:15]), atol=1e-6
    )
    np.testing.assert_allclose(
        out["mask"], (plain["mask"] + moved["mask"][:, 4:36, 4:52, 4:60]) / 2, atol=1e-6
    )
    np.testing.assert_array_equal(out["tokens"], plain["tokens"])
    assert not np.allclose(out["mask"], plain["mask"]) and (out["heat"] > plain["heat"]).any()
    only_heat = shifted_grid_inference(
        arr, windowed, shifts=[4], pad_value=-1.0, max_outputs=("heat",), combine=("heat",), **kw
    )
    np.testing.assert_array_equal(only_heat["mask"], plain["mask"])
    np.testing.assert_array_equal(only_heat["heat"], out["heat"])
    with pytest.raises(ValueError, match="positive"):
        shifted_grid_inference(arr, windowed, shifts=[0], pad_value=-1.0, **kw)


def test_cancel_raises_between_windows_and_progress_is_monotone():
    ev = threading.Event()
    seen: list[float] = []

    def predictor(x):
        return {"y": x * 2}

    def progress(frac, msg):
        seen.append(frac)
        if len(seen) == 2:
            ev.set()

    arr = np.zeros((16, 64, 64), np.float32)
    with pytest.raises(Cancelled):
        sliding_window_inference(
            arr, predictor, patch=(8, 16, 16), overlap=0.0, progress=progress, cancel=ev
        )
    assert len(seen) == 2
    seen.clear()
    sliding_window_inference(
        arr, predictor, patch=(8, 16, 16), overlap=0.0, progress=lambda f, m: seen.append(f)
    )
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(Cancelled):
        check_cancel(lambda: True)
    check_cancel(lambda: False)


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda")


def test_template_and_fill_use_the_writers_numbers():
    f = _finding("mass", d=41.26, short=29.7)
    sent = describe_finding(f)
    toks, printed = template(sent, f)
    assert "<size>" in toks and "<size2>" in toks and NUM not in toks
    assert not any(re.fullmatch(r"\d+(\.\d+)?", t) for t in toks)
    assert fill(toks, f) == sent
    g = _finding("pleural effusion", d=80.0, short=30.0, vol=420.0)
    toks, _ = template(describe_finding(g), g)
    assert "<vol>" in toks
    # the article a decoder wrote before the size agrees with the number filled in
    n = _finding("ground-glass nodule", d=8.2, short=6.0)
    assert fill(["A", "<size>", "mm", "ground-glass", "nodule", "."], n).startswith("An 8.2 mm")
    assert fill(["in", "an", "<size>", "mm"], _finding(d=12.3)) == "in a 12 mm"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_never_invents_terms_or_numbers(corpus_tokenizer, seed):
    torch.manual_seed(seed)
    net = create_model("ctreport-tiny", tokenizer=corpus_tokenizer).eval()
    # bias the random decoder towards forbidden words so that the constraint has work to do
    vocab = corpus_tokenizer.get_vocab()
    bias = torch.zeros(len(vocab))
    for w in ("left", "mass", "calcified", "lower", "ground-glass", NUM, "<vol>", "right"):
        if w in vocab:
            bias[vocab[w]] = 50.0
    loaded = LoadedModel(
        net=net, tokenizer=corpus_tokenizer, config=net.config, path=None, sha256=""
    )
    findings = [
        _finding("solid nodule", "right", "upper"),
        _finding("mass", "left", "lower", d=45.0),
    ]
    cons = [constraints_for(f) for f in findings]
    proc = TermConstraint(corpus_tokenizer, [c[0] for c in cons], [c[1] for c in cons])
    mem = (
        torch.randn(
            2, 7, net.config["decoder"]["n_embd"], generator=torch.Generator().manual_seed(seed)
        )
        * 5
    )
    unconstrained = greedy_decode(
        loaded, mem, logits_processor=lambda ids, sc: sc + bias, max_len=12
    )
    assert any(
        t in {"left", "mass", "calcified", "lower", NUM} for row in unconstrained for t in row
    )
    decoded = greedy_decode(
        loaded, mem, logits_processor=lambda ids, sc: proc(ids, sc + bias), max_len=40
    )
    for toks, f, (terms, slots) in zip(decoded, findings, cons, strict=True):
        for t in toks:
            assert not re.search(r"\d", t), t
            assert t != NUM
            if t in SLOTS:
                assert t in slots
            if t.lower() in TERM_WORDS:
                assert t.lower() in terms, (t, f.kind, f.side, f.zone)
        other_sides = set(SIDES) - {f.side}
        assert not other_sides & {t.lower() for t in toks}
        wrong_kinds = {"mass", "calcified", "ground-glass", "part-solid", "effusion"} - set(
            f.kind.split()
        )
        assert not wrong_kinds & {t.lower() for t in toks}


def _fake_heat_model(monkeypatch, peak: float, heads=None):
    """The default model with its heat replaced: ``peak`` on the dense voxels (of kind 0, solid
    nodule) and a mask head that sees nothing; ``heads(x, out)``, if given, returns further
    outputs to replace."""
    import copy

    from napari_ctreport.model.registry import from_pretrained

    loaded = copy.copy(from_pretrained(None))
    net = copy.deepcopy(loaded.net)
    real = net.encode
    logit = float(np.log(peak / (1 - peak)))

    def encode(x):
        out = real(x)
        dense = torch.nn.functional.avg_pool3d((x > -0.5).float(), 4)  # lesion (> -700 HU)
        heat = torch.full_like(out["heat"], -12.0)
        heat[:, 0] = torch.where(dense[:, 0] > 0.2, logit * dense[:, 0] / dense.amax(), -12.0)
        out = {**out, "heat": heat, "mask": torch.full_like(out["mask"], -12.0)}
        return {**out, **(heads(x, out) if heads else {})}

    monkeypatch.setattr(net, "encode", encode)
    loaded.net = net
    return loaded


def _lesion_volume(lesion: str):
    """Aerated lung (-850 HU) with one lesion at index (24, 48, 40): a solid ball (radius 4 mm,
    40 HU), a ground-glass ball (-550 HU), a vessel (a solid tube of radius 2.5 mm along y), a
    solid ball with a vessel (radius 2 mm, or a thin one of 1.2 mm) leaving it."""
    from napari_ctreport.io import CTVolume

    arr = np.full((48, 96, 96), -850, dtype=np.int16)
    zz, yy, xx = np.indices(arr.shape)
    dz, dy, dx = (zz - 24) * 2.0, (yy - 48) * 1.5, (xx - 40) * 1.5
    if lesion in ("tube", "ground-glass tube"):
        region = dz**2 + dx**2 <= 2.5**2
    elif lesion in ("ball on a vessel", "ball on a thin vessel"):
        region = dz**2 + dy**2 + dx**2 <= 4.0**2
        r = 2.0 if lesion == "ball on a vessel" else 1.2
        region |= (dz**2 + (dx - 3.0) ** 2 <= r**2) & (dy > 0)
    else:
        region = dz**2 + dy**2 + dx**2 <= 4.0**2
    arr[region] = -550 if lesion.startswith("ground-glass") else 40
    vol = CTVolume(array=arr, spacing_zyx=(2.0, 1.5, 1.5), origin_lps=(0.0, 0.0, 0.0))
    return vol, region


@pytest.mark.parametrize(
    ("peak", "lesion", "blob_check", "factor"),
    [
        (0.6, "ball", True, "seed"),  # strong enough without the mask head
        (0.3, "ball", False, None),  # weak, and the CT is not consulted
        (0.3, "ball", True, 1.0),  # weak, confirmed by a solid blob on the CT
        (0.3, "tube", True, None),  # weak, and the CT shows a vessel
        (0.3, "ball on a vessel", True, None),  # weak, and the ball is not isolated
        (0.3, "ball on a thin vessel", True, 1.0),  # ... only a thin vessel touches it
        (0.3, "ground-glass", True, None),  # weak, and the CT blob is not solid
        (0.12, "ball", True, None),  # under BLOB_MIN_HEAT
    ],
)
def test_peak_without_mask_support(monkeypatch, peak, lesion, blob_check, factor):
    """A heatmap peak whose mask head stayed under its threshold (small, faint lesions) is
    reported when its heat reaches score_threshold / SEED_SCORE_FACTOR (score scaled down by that
    factor), or, for a nodule kind with heat >= BLOB_MIN_HEAT, when the CT there is an isolated
    solid ball (score = heat). Its mask is grown around the peak and covers the lesion."""
    from napari_ctreport.model import inference

    monkeypatch.setattr(inference, "BLOB_CHECK", blob_check)
    loaded = _fake_heat_model(monkeypatch, peak)
    vol, region = _lesion_volume(lesion)
    dets = inference.detect(loaded, vol, device="cpu")
    thr = float(loaded.config["score_threshold"])
    assert thr / inference.SEED_SCORE_FACTOR <= 0.6 and thr / inference.SEED_SCORE_FACTOR > 0.3
    if factor is None:
        assert dets == []
        return
    assert len(dets) == 1
    d = dets[0]
    expected = peak * (inference.SEED_SCORE_FACTOR if factor == "seed" else factor)
    assert d.score == pytest.approx(expected, rel=0.05)
    assert np.linalg.norm(d.center_index - np.array([24, 48, 40])) < 3
    full = d.full_mask(vol.shape)
    # the grown mask sits on the ball (the analysis then refines it on the CT's attenuation)
    zz, yy, xx = np.indices(vol.shape)
    ball = region & ((zz - 24) ** 2 * 4.0 + ((yy - 48) ** 2 + (xx - 40) ** 2) * 2.25 <= 16.0)
    assert full[24, 48, 40] and (full & ball).sum() >= 0.3 * ball.sum()


def _run_on_mask_model(monkeypatch):
    """:func:`_fake_heat_model` (heat 0.6) with a predicted size of 8 mm and a mask head that runs
    the lesion on along x for 63 model voxels (~95 mm), as the mask head ran a lung-base nodule
    on into the liver dome."""

    def heads(x, out):
        dense = (x > -0.5).float()
        rod = torch.nn.functional.max_pool3d(dense, (1, 1, 63), stride=1, padding=(0, 0, 31))
        size = torch.log(torch.tensor([4.0, 16 / 3, 16 / 3])).view(1, 3, 1, 1, 1)
        return {
            "size": size.expand_as(out["size"]).contiguous(),
            "mask": torch.where(rod > 0, 12.0, -12.0),
        }

    return _fake_heat_model(monkeypatch, 0.6, heads)


@pytest.mark.parametrize("split", [True, False])
def test_nodule_peak_whose_mask_runs_on(monkeypatch, split):
    """A nodule peak whose mask component reaches far beyond the peak's predicted size (over
    OVERSIZED_FACTOR times it, and over OVERSIZED_MIN_MM) gets its own mask around the peak,
    which the analysis measures as the 8 mm ball; with ``split_oversized`` off the detection
    takes the whole run-on component (~95 mm long), as before."""
    from napari_ctreport import analysis
    from napari_ctreport.model import inference

    loaded = _run_on_mask_model(monkeypatch)
    loaded.config = {**loaded.config, "split_oversized": split}
    vol, region = _lesion_volume("ball")
    lungs = np.zeros(vol.shape, dtype=np.uint8)
    lungs[4:-4, 8:-8, 8:-8] = 1
    dets = inference.detect(loaded, vol, device="cpu")
    assert len(dets) == 1
    d = dets[0]
    assert d.kind == "solid nodule"
    full = d.full_mask(vol.shape)
    assert full[24, 48, 40] and (full & region).sum() >= 0.5 * region.sum()
    reach_x = np.ptp(np.nonzero(full.any(axis=(0, 1)))[0]) * vol.spacing_zyx[2]
    if not split:
        assert reach_x > 60.0
        return
    assert reach_x < 20.0
    findings, _, _ = analysis._findings_from_detections(dets, vol, lungs, None)
    assert [f.kind for f in findings] == ["solid nodule"]
    assert findings[0].diameter_mm == pytest.approx(8.0, abs=1.6)


def _one_detection(loaded, vol, lungs, found: bool):
    """The one detection ``detect`` returns given the lungs when ``found``; else checks there is
    none and returns ``None``."""
    from napari_ctreport.model import inference

    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert len(dets) == int(found)
    return dets[0] if found else None


@pytest.mark.parametrize(
    ("lesion", "found"),
    [("ball", True), ("ball on a thin vessel", True), ("tube", False), ("ground-glass", False)],
)
def test_nodule_on_the_ct_where_the_heatmap_has_no_peak(monkeypatch, lesion, found):
    """Given the lungs, detect() also reports an isolated solid ball on the CT that no heatmap
    peak marked (heat 0.05, under the score threshold), at a score from its blob strength; not a
    vessel or a ground-glass ball, and nothing without the lungs or with CT_CANDIDATES off."""
    from napari_ctreport.model import inference

    loaded = _fake_heat_model(monkeypatch, 0.05)
    vol, region = _lesion_volume(lesion)
    lungs = np.zeros(vol.shape, dtype=np.uint8)
    lungs[4:-4, 8:-8, 8:-8] = 1
    thr = float(loaded.config["score_threshold"])
    assert inference.detect(loaded, vol, device="cpu") == []
    d = _one_detection(loaded, vol, lungs, found)
    if d is None:
        return
    assert d.kind == "solid nodule"  # what the CT shows; the analysis may call it calcified
    assert thr <= d.score <= inference.CT_CANDIDATE_MAX_SCORE
    assert np.linalg.norm((d.center_index - np.array([24, 48, 40])) * vol.spacing_zyx) < 3
    full = d.full_mask(vol.shape)
    assert full[24, 48, 40] and (full & region).sum() >= 0.3 * (region & ~_vessel(region)).sum()
    assert d.attention.sum() == pytest.approx(1.0, abs=1e-3)  # the network's own attention
    monkeypatch.setattr(inference, "CT_CANDIDATES", False)
    assert inference.detect(loaded, vol, device="cpu", lungs=lungs) == []


def _lungs_mask(shape, in_lungs: bool) -> np.ndarray:
    """A lung mask around :func:`_lesion_volume`'s lesion, or (not ``in_lungs``) one beside it."""
    lungs = np.zeros(shape, dtype=np.uint8)
    if in_lungs:
        lungs[4:-4, 8:-8, 8:-8] = 1
    else:
        lungs[4:-4, 8:-8, 60:-8] = 1
    return lungs


@pytest.mark.parametrize(
    ("lesion", "in_lungs", "found"),
    [
        ("ground-glass", True, True),
        ("ground-glass", False, False),  # not in the lung mask
        ("ground-glass tube", True, False),  # a vessel blurred to ground-glass attenuation
        ("tube", True, False),
    ],
)
def test_ground_glass_peak_confirmed_in_the_lungs(monkeypatch, lesion, in_lungs, found):
    """An unsupported nodule peak (heat 0.3, no mask) that the solid test turns down is kept when
    the CT there is an isolated, round ground-glass ball inside the lungs: reported as a
    ground-glass nodule at the peak's heat, and the analysis measures it as one (its mask refined
    at -750 HU covers the 8 mm ball). Not a tube, not outside the lungs, not with SUBSOLID_CHECK
    off."""
    from napari_ctreport import analysis
    from napari_ctreport.model import inference

    monkeypatch.setattr(inference, "CT_CANDIDATES", False)
    monkeypatch.setattr(inference, "WALL_NODULES", False)
    loaded = _fake_heat_model(monkeypatch, 0.3)
    vol, region = _lesion_volume(lesion)
    lungs = _lungs_mask(vol.shape, in_lungs)
    d = _one_detection(loaded, vol, lungs, found)
    if d is None:
        return
    assert d.kind == "ground-glass nodule"  # the peak was of kind 0 (solid nodule)
    assert d.score == pytest.approx(0.3, rel=0.05)
    assert np.linalg.norm((d.center_index - np.array([24, 48, 40])) * vol.spacing_zyx) < 3
    findings, _, _ = analysis._findings_from_detections([d], vol, lungs, None)
    assert [f.kind for f in findings] == ["ground-glass nodule"]
    assert findings[0].diameter_mm == pytest.approx(8.0, abs=1.6)
    monkeypatch.setattr(inference, "SUBSOLID_CHECK", False)
    assert inference.detect(loaded, vol, device="cpu", lungs=lungs) == []


def _as_effusion_heat(x, out):
    """:func:`_fake_heat_model`'s heat moved from kind 0 (solid nodule) to pleural effusion."""
    from napari_ctreport.model.inference import EFFUSION_KIND

    heat = torch.full_like(out["heat"], -12.0)
    heat[:, EFFUSION_KIND] = out["heat"][:, 0]
    return {"heat": heat}


@pytest.mark.parametrize(
    ("lesion", "in_lungs", "kind"),
    [
        ("ball", True, "solid nodule"),
        ("ball", False, "pleural effusion"),  # outside the lung mask: fluid is left as fluid
        ("tube", True, "pleural effusion"),  # a vessel is no ball
        ("fluid", True, "pleural effusion"),  # a layer of fluid the lung mask overlaps
    ],
)
def test_an_effusion_peak_on_a_ball_in_the_lung_is_a_nodule(monkeypatch, lesion, in_lungs, kind):
    """The network's only peak is of kind pleural effusion (heat 0.6). Where it lies inside the
    lung mask and the CT is an isolated solid ball (a real CT's lung-base nodule drew such peaks,
    and the millilitre of "effusion" was then too small to report), it is a solid nodule's peak,
    measured as the 8 mm ball; not outside the lung mask, not on a vessel or on fluid, and not
    with EFFUSION_BALLS off."""
    from napari_ctreport import analysis
    from napari_ctreport.model import inference

    monkeypatch.setattr(inference, "CT_CANDIDATES", False)
    monkeypatch.setattr(inference, "WALL_NODULES", False)
    loaded = _fake_heat_model(monkeypatch, 0.6, _as_effusion_heat)
    if lesion == "fluid":
        vol, _ = _lesion_volume("ball")
        arr = np.array(vol.array)
        arr[arr > 0] = -850
        arr[:, 56:, :] = 10  # fluid behind the lung, 12 mm from the peak's place
        vol = type(vol)(array=arr, spacing_zyx=vol.spacing_zyx, origin_lps=vol.origin_lps)
    else:
        vol, _ = _lesion_volume(lesion)
    lungs = _lungs_mask(vol.shape, in_lungs)
    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert len(dets) >= 1
    assert {d.kind for d in dets} == {kind}
    if kind != "solid nodule":
        return
    d = dets[0]
    assert np.linalg.norm((d.center_index - np.array([24, 48, 40])) * vol.spacing_zyx) < 3
    findings, _, _ = analysis._findings_from_detections(dets, vol, lungs, None)
    assert [f.kind for f in findings] == ["solid nodule"]
    assert findings[0].diameter_mm == pytest.approx(8.0, abs=1.6)
    monkeypatch.setattr(inference, "EFFUSION_BALLS", False)
    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert {d.kind for d in dets} == {"pleural effusion"}


def test_an_effusion_peak_does_not_hide_the_ball_the_ct_shows(monkeypatch):
    """A nodule candidate on the CT is not skipped for an effusion peak near it (fluid's peak
    holds no nodule's place: on a real CT's 3 mm grid a lung-base nodule's only peak was an
    effusion's 6 mm off, out of the effusion-ball test's reach, and its tiny "effusion" was not
    reported). With EFFUSION_BALLS off, the effusion peak on the ball and the ball found on the
    CT are both detected; a nodule peak there holds its place (one detection)."""
    from napari_ctreport.model import inference

    monkeypatch.setattr(inference, "EFFUSION_BALLS", False)
    monkeypatch.setattr(inference, "WALL_NODULES", False)
    vol, _ = _lesion_volume("ball")
    lungs = _lungs_mask(vol.shape, True)
    loaded = _fake_heat_model(monkeypatch, 0.6, _as_effusion_heat)
    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert sorted(d.kind for d in dets) == ["pleural effusion", "solid nodule"]
    (ball,) = [d for d in dets if d.kind == "solid nodule"]
    assert ball.score <= inference.CT_CANDIDATE_MAX_SCORE  # the CT's candidate
    assert np.linalg.norm((ball.center_index - np.array([24, 48, 40])) * vol.spacing_zyx) < 3
    loaded = _fake_heat_model(monkeypatch, 0.6)
    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert [d.kind for d in dets] == ["solid nodule"]


def _wall_volume(on_wall: bool):
    """Aerated lung (-850 HU) with a chest wall (40 HU) from x index 64 on and, if ``on_wall``,
    a 9 mm solid ball resting on the wall (centre 4.5 mm in front of it, index (24, 48, 61)); the
    lung mask stops at the wall and the ball, as the lung segmentation draws them."""
    from napari_ctreport.io import CTVolume

    arr = np.full((48, 96, 96), -850, dtype=np.int16)
    arr[:, :, 64:] = 40
    zz, yy, xx = np.indices(arr.shape)
    ball = ((zz - 24) * 2.0) ** 2 + ((yy - 48) * 1.5) ** 2 + ((xx - 61.0) * 1.5) ** 2 <= 4.5**2
    if on_wall:
        arr[ball] = 40
    lungs = np.zeros(arr.shape, dtype=np.uint8)
    lungs[4:-4, 8:-8, 8:64] = 1
    lungs[arr > -500] = 0
    return CTVolume(array=arr, spacing_zyx=(2.0, 1.5, 1.5), origin_lps=(0.0, 0.0, 0.0)), lungs, ball


@pytest.mark.parametrize(("on_wall", "min_heat"), [(True, None), (False, None), (True, 0.6)])
def test_nodule_on_the_pleura(monkeypatch, on_wall, min_heat):
    """Given the lungs, detect() reports a ball on the chest wall that the network saw with
    nodule heat >= WALL_MIN_HEAT, with the bump's own mask drawn on the CT (``extra["ct_mask"]``; not into the wall); nothing
    on a flat wall, under that heat (here raised above the fake heat), or with WALL_NODULES off."""
    from napari_ctreport.model import inference

    monkeypatch.setattr(inference, "CT_CANDIDATES", False)
    if min_heat is not None:
        monkeypatch.setattr(inference, "WALL_MIN_HEAT", min_heat)
    heat = 0.3
    loaded = _fake_heat_model(monkeypatch, heat)
    vol, lungs, ball = _wall_volume(on_wall)
    dets = [d for d in inference.detect(loaded, vol, device="cpu", lungs=lungs) if d.score > 0]
    found = [d for d in dets if d.extra.get("ct_mask")]
    if not on_wall or min_heat is not None:
        assert found == []
        return
    assert len(found) == 1
    d = found[0]
    # a new entry scored by the nodule heat there, or a kept peak on the ball that takes the mask
    assert d.kind == "solid nodule"
    assert float(loaded.config["score_threshold"]) <= d.score <= heat
    full = d.full_mask(vol.shape)
    assert (full & ball).sum() >= 0.5 * (ball[:, :, :64]).sum()  # the part in front of the wall
    assert full[:, :, 64:].sum() <= 0.25 * full.sum()  # not the wall behind it
    assert d.attention.sum() == pytest.approx(1.0, abs=1e-3)
    monkeypatch.setattr(inference, "WALL_NODULES", False)
    dets = inference.detect(loaded, vol, device="cpu", lungs=lungs)
    assert not [d for d in dets if d.extra.get("ct_mask")]


def _vessel(region):
    """The part of ``region`` outside the 4 mm ball of :func:`_lesion_volume`."""
    zz, yy, xx = np.indices(region.shape)
    ball = (zz - 24) ** 2 * 4.0 + ((yy - 48) ** 2 + (xx - 40) ** 2) * 2.25 <= 16.0
    return region & ~ball


def test_a_component_between_thick_slices_still_reaches_the_ct():
    """A model-grid mask component one model voxel (2 mm) thick can fall between the centres of
    3 mm CT slices; it must still mark the CT voxels under it (a small nodule on thick slices was
    lost this way), not vanish."""
    from napari_ctreport.model.inference import Prepared, _component_mask_ct

    # CT: 3 mm slices, 1 mm pixels; model grid: 2 mm x 1.5 mm x 1.5 mm
    step = np.array([2.0 / 3.0, 1.5, 1.5])
    prep = Prepared(
        array=np.zeros((1, 1, 1), np.float32),
        valid_shape=(30, 40, 40),
        crop_lo=np.zeros(3),
        step=step,
        spacing=step * np.array([3.0, 1.0, 1.0]),
    )
    prob = np.zeros((30, 40, 40), np.float32)
    prob[7, 20:22, 20:22] = 0.6  # model z 7 lies at CT z 4.67: between slices 4 and 5
    box = (slice(6, 9), slice(19, 23), slice(19, 23))
    comp = prob[box] > 0.5
    res = _component_mask_ct(prep, prob[box], comp, box, (20, 60, 60), 0.5)
    assert res is not None
    slices, m = res
    full = np.zeros((20, 60, 60), bool)
    full[slices] = m
    zs, ys, xs = np.nonzero(full)
    assert set(zs) <= {4, 5}
    # in-plane it covers the component's footprint: model 19.5-21.5 -> CT 29.25-32.25
    assert ys.min() >= 29 and ys.max() <= 33 and xs.min() >= 29 and xs.max() <= 33
    assert full.sum() >= 4


@pytest.mark.parametrize("fluid_peaks", [True, False])
def test_every_effusion_peak_along_one_mask_component_is_kept(monkeypatch, fluid_peaks):
    """Two effusion peaks 72 mm apart whose masks join into one component (a cancer beside its
    effusion, both taken for fluid): the stronger peak takes the component, and the other gets a
    detection of its own with its own part of it, for the analysis to tell a mass from the fluid.
    With ``effusion_peaks`` off only the stronger peak is kept (as before)."""
    from napari_ctreport.io import CTVolume
    from napari_ctreport.model import inference

    arr = np.full((48, 96, 128), -850, dtype=np.int16)
    zz, yy, xx = np.indices(arr.shape)
    balls = [
        (zz - 24) ** 2 * 4.0 + ((yy - 48) ** 2 + (xx - c) ** 2) * 2.25 <= 16.0 for c in (28, 76)
    ]
    arr[balls[0] | balls[1]] = 40
    vol = CTVolume(array=arr, spacing_zyx=(2.0, 1.5, 1.5), origin_lps=(0.0, 0.0, 0.0))
    fluid = inference.EFFUSION_KIND

    def heads(x, out):
        dense = torch.nn.functional.avg_pool3d((x > -0.5).float(), 4)
        heat = torch.full_like(out["heat"], -12.0)
        heat[:, fluid] = torch.where(dense[:, 0] > 0.2, 0.4 * dense[:, 0] / dense.amax(), -12.0)
        rod = torch.nn.functional.max_pool3d(
            (x > -0.5).float(), (1, 1, 63), stride=1, padding=(0, 0, 31)
        )
        size = torch.log(torch.tensor([4.0, 16 / 3, 16 / 3])).view(1, 3, 1, 1, 1)
        return {
            "heat": heat,
            "size": size.expand_as(out["size"]).contiguous(),
            "mask": torch.where(rod > 0, 12.0, -12.0),
        }

    loaded = _fake_heat_model(monkeypatch, 0.6, heads)
    loaded.config = {**loaded.config, "effusion_peaks": fluid_peaks}
    dets = inference.detect(loaded, vol, device="cpu")
    assert all(d.kind == "pleural effusion" for d in dets)
    assert len(dets) == (2 if fluid_peaks else 1)
    masks = [d.full_mask(vol.shape) for d in dets]
    assert masks[0][24, 48, 28] and masks[0][24, 48, 76]  # the whole component, both balls
    if not fluid_peaks:
        return
    mine = [int(masks[1][24, 48, c]) for c in (28, 76)]
    assert sum(mine) == 1  # one ball's part only
    own = balls[mine.index(1)]
    assert (masks[1] & own).sum() >= 0.5 * own.sum()


def test_separable_resampling_equals_map_coordinates():
    """The component masks are resampled to the CT grid one axis at a time; the values are
    scipy's ``map_coordinates`` on the full coordinate grid (``mode="constant"``), inside,
    outside and on the edges of the array."""
    from scipy import ndimage

    from napari_ctreport.model.inference import _resample_separable

    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = rng.integers(1, 9, size=3)
        a = rng.random(shape).astype(np.float32)
        axes = [
            np.sort(
                np.concatenate(
                    [rng.uniform(-2.5, n + 1.5, size=rng.integers(1, 10)), np.arange(-1, n + 1)]
                )
            ).astype(np.float32)
            for n in shape
        ]
        coords = np.stack(np.meshgrid(*axes, indexing="ij"))
        for order in (0, 1):
            want = ndimage.map_coordinates(a, coords, order=order, mode="constant", cval=0.0)
            got = _resample_separable(a, axes, order=order)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
