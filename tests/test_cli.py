"""`ctreport` command line: info on good CT, one clear line and exit 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.cli import main

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/real is not beside the repo")

BAD_FILES = [
    ("pydicom_testfiles/ct/no_meta.dcm", "no_meta.dcm"),
    ("dcm_qa_ct/Philips_localizer/I10.dcm", "I10.dcm"),
    ("pydicom_testfiles/transfer_syntax_mr/MR_small.dcm", "MR_small.dcm"),
    ("dcmqi_ct3slice/seg/liver.dcm", "liver.dcm"),
    ("monai_ct_dicom/CT_DICOM", "CT_DICOM"),
    ("README.md", "README.md"),
    ("does/not/exist.nii.gz", "exist.nii.gz"),
]


def test_info_nifti_table(capsys):
    path = REAL / "totalsegmentator" / "example_ct.nii.gz"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Size z×y×x" in out and "112 × 101 × 122" in out
    assert "RAS" in out  # the orientation on disk is reported, the data is shown in LPS


def test_info_dicom_json(capsys):
    path = REAL / "totalsegmentator" / "example_ct_dicom"
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_zyx"] == [20, 512, 512]
    assert info["spacing_zyx_mm"][0] == pytest.approx(2.0, abs=0.01)
    assert -1100 < info["hu_range"][0] < -900  # this anonymised export has empty UIDs


def test_info_keeps_uids(capsys):
    path = REAL / "dcmqi_ct3slice" / "ct-3slice"
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_zyx"] == [3, 512, 512]
    assert info["study_uid"].startswith("1.") and info["series_uid"].startswith("1.")


@pytest.mark.parametrize(("rel", "name"), BAD_FILES)
def test_info_bad_input_one_line_exit_2(rel, name, capsys):
    assert main(["info", str(REAL / rel)]) == 2
    captured = capsys.readouterr()
    err_lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err_lines) == 1, captured.err
    assert name in err_lines[0]
    assert "Traceback" not in captured.err


def test_info_keeps_library_warnings_off_stderr(capsys):
    """A DICOM file with odd headers (UIDs that are hashes): pydicom's UserWarnings about them
    are not the user's business, in process or from the console script."""
    import warnings

    path = REAL / "pydicom_testfiles" / "ct" / "bad_sequence.dcm"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["info", str(path)]) == 0
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err
    assert "UserWarning" not in err and "Traceback" not in err and "warn" not in err
    exe = Path(sys.executable).parent / "ctreport"
    proc = subprocess.run(
        [str(exe), "info", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "bad_sequence.dcm" in proc.stdout
    assert proc.stderr == ""


def test_console_script_bad_input_no_traceback():
    exe = Path(sys.executable).parent / "ctreport"
    path = REAL / "pydicom_testfiles" / "ct" / "no_meta.dcm"
    proc = subprocess.run(
        [str(exe), "info", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no_meta.dcm" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_synth_writes_valid_cases(tmp_path, capsys):
    from napari_ctreport.io.case import iter_cases, validate_case

    assert main(["synth", "--out", str(tmp_path), "--cases", "2", "--seed", "5"]) == 0
    folders = list(iter_cases(tmp_path))
    assert len(folders) == 2
    assert all(validate_case(f) == [] for f in folders)


def test_synth_on_a_corrected_case_keeps_its_findings(tmp_path, capsys):
    """`ctreport synth --background CASE` inserts lesions into a case folder's CT (a corrected
    export) and keeps that case's findings as ground truth; a missing background is exit 2."""
    from napari_ctreport.io.case import iter_cases, read_case, write_case
    from napari_ctreport.synth import generate_case

    src = generate_case(seed=900129, shape=(48, 128, 128))
    assert src.findings
    bg = write_case(src.to_case("bg"), tmp_path / "bg", volume=src.volume, labels=src.labels)
    out = tmp_path / "out"
    args = ["synth", "--out", str(out), "--cases", "1", "--workers", "1", "--background", str(bg)]
    assert main(args) == 0
    (folder,) = iter_cases(out)
    case = read_case(folder)
    n = len(src.findings)
    assert len(case.findings) > n
    assert [f.kind for f in case.findings[:n]] == [f.kind for f in src.findings]
    assert case.provenance["generator"]["style"] == "real background"
    missing = tmp_path / "nowhere"
    assert main(["synth", "--out", str(out), "--cases", "1", "--background", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "--background" in err
    # a CT with no lung to insert lesions into: one line naming it, exit 2, no traceback
    import numpy as np

    from napari_ctreport.io.volume import CTVolume
    from napari_ctreport.io.write import write_volume

    belly = tmp_path / "belly.nii.gz"
    tissue = np.full((20, 64, 64), 40, np.int16)
    tissue[:, :4] = -1000  # air in front of the belly (a volume of one value is no CT at all)
    write_volume(CTVolume(tissue, (2.0, 1.0, 1.0), (0, 0, 0)), belly)
    args = ["synth", "--out", str(tmp_path / "o2"), "--cases", "1", "--workers", "1"]
    assert main([*args, "--background", str(belly)]) == 2
    err = capsys.readouterr().err
    assert "belly.nii.gz" in err and "no lung" in err and "Traceback" not in err


def test_synth_rejects_zero_cases(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--cases", "0"]) == 2
    assert "--cases" in capsys.readouterr().err


def test_bench_table_and_scaling_exponent():
    from napari_ctreport.cli import format_benchmark

    rows = [
        {
            "size_zyx": (10, 10, 10),
            "device": "cpu",
            "load": 0.1,
            "model": 1.0,
            "report": 0.1,
            "total": 1.0,
            "peak_rss_mb": 100.0,
            "n_findings": 0,
        },
        {
            "size_zyx": (20, 20, 20),
            "device": "cpu",
            "load": 0.1,
            "model": 8.0,
            "report": 0.1,
            "total": 8.0,
            "peak_rss_mb": 200.0,
            "n_findings": 1,
        },
    ]
    table = format_benchmark(rows)
    assert "20×20×20" in table and "k = 1.00" in table


def test_analyze_json_and_export(tmp_path, capsys):
    from napari_ctreport.io.case import validate_case
    from napari_ctreport.io.write import write_volume
    from napari_ctreport.synth import generate_case

    case = generate_case(seed=900129, shape=(48, 128, 128))
    ct = write_volume(case.volume, tmp_path / "ct.nii.gz", orientation="RAS")
    out = tmp_path / "analysis.json"
    rc = main(
        ["analyze", str(ct), "--out", str(out), "--device", "cpu", "--export", str(tmp_path / "ex")]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["schema"] == "ctreport.analysis/1"
    assert doc["input"]["size_zyx"] == list(case.volume.shape)
    assert len(doc["model"]["sha256"]) == 64
    assert set(doc["timings_s"]) >= {"load", "model", "report", "total"}
    for f in doc["findings"]:
        lo, hi = np.array(f["bbox_lps_mm"])
        assert np.all(lo <= np.array(f["center_lps_mm"]) + 1e-6)
        assert np.all(np.array(f["center_lps_mm"]) <= hi + 1e-6)
        assert {"shape", "solid_diameter_mm"} <= set(f)
    # each sentence names its finding: a tool can check the text against the table
    ids = {f["id"] for f in doc["findings"]}
    sents = doc["report"]["sentences"]
    assert sents and {s["section"] for s in sents} <= {"findings", "impression"}
    assert ids <= {s["finding_id"] for s in sents if s["section"] == "findings"}
    assert " ".join(s["text"] for s in sents if s["section"] == "findings").split() == (
        doc["report"]["findings"].split()
    )
    versions = list((tmp_path / "ex").glob("*/v001"))
    assert len(versions) == 1 and validate_case(versions[0]) == []
    # readable as a plain file is (under the umask), not 0600 as its temporary file was
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_analyze_says_what_the_reader_corrected(tmp_path, capsys):
    """A head CT with a gantry tilt and uneven slices: the volume is resampled, and
    ``ctreport analyze`` says so on stderr and in the JSON's added ``warnings``; with no lung in
    it (the head rest behind it is not lung) the report says the lungs were not assessed, and
    nothing is set aside as a doubtful lung lesion. Outside the slab the resampled volume holds
    the scanner's own padding (-1500 here), as outside its field of view, not air."""
    out = tmp_path / "analysis.json"
    path = REAL / "dcm_qa_ct" / "GE_gantry_tilt_subset"
    assert main(["analyze", str(path), "--out", str(out), "--device", "cpu"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ctreport: warning")]
    doc = json.loads(out.read_text())
    assert len(doc["warnings"]) == 2 and len(err) == 2
    assert "gantry tilt 18.5 deg" in doc["warnings"][1] and "uneven slice spacing" in err[0]
    assert doc["lung_ml"] == 0.0 and doc["findings"] == [] and doc["set_aside"] == []
    assert doc["report"]["findings"].startswith("No lung is in the scanned volume")


def test_a_series_of_a_study_folder_is_listed_and_chosen(tmp_path, capsys):
    """A folder with two CT series: ``info`` lists both (the one it opened starred) with the
    numbers ``--series`` takes, and ``info``/``analyze --series`` open the one asked for."""
    from test_io_ct import _study_of_two_series

    _study_of_two_series(tmp_path / "study")
    study = str(tmp_path / "study")
    assert main(["info", study]) == 0
    out = capsys.readouterr().out
    assert "CT series in this folder (open one with --series NUMBER or UID)" in out
    assert "* 'thin' #2 (12 images)" in out and "  'thick' #5 (6 images)" in out
    assert main(["info", study, "--series", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["size_zyx"] == [6, 20, 24] and doc["series_description"] == "thick"
    assert [s["number"] for s in doc["series_in_folder"]] == ["2", "5"]
    out = tmp_path / "a.json"
    assert main(["analyze", study, "--series", "5", "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["input"]["series_uid"] == doc["series_uid"]
    assert main(["info", study, "--series", "9"]) == 2
    assert "no CT series has the number or UID '9'" in capsys.readouterr().err
    # one file of a series: the whole series, as the napari reader opens it, and a warning
    one = str(sorted((tmp_path / "study").glob("thick_*"))[3])
    assert main(["info", one, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["size_zyx"] == [6, 20, 24]
    assert any("is one image of 'thick' #5 (6 images)" in w for w in doc["warnings"])
    assert main(["analyze", one, "--out", str(out), "--device", "cpu"]) == 0
    assert "is one image of 'thick' #5" in capsys.readouterr().err
    cli_doc = json.loads(out.read_text())
    assert cli_doc["input"]["series_uid"] == doc["series_uid"]
    # and so does the Python API: its JSON is the command's (it analysed the file alone)
    from napari_ctreport import analyze

    api = analyze(one, device="cpu")
    assert api.volume_info["size_zyx"] == [6, 20, 24]
    assert any("is one image of 'thick' #5" in w for w in api.volume_info["warnings"])
    assert api.to_json_dict(input_path=one)["input"] == cli_doc["input"]


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """An --out that is a folder, or under a file, or an --export that is a file: one line
    naming it, exit 2, before the CT is read or the model run (not an internal error after the
    whole analysis). Missing folders on the way are made."""

    import napari_ctreport.analysis
    import napari_ctreport.io.ct
    from napari_ctreport import cli

    def no_work(*args, **kwargs):
        raise cli.BadInput("the work was started")

    monkeypatch.setattr(napari_ctreport.analysis, "analyze", no_work)
    monkeypatch.setattr(napari_ctreport.analysis, "evaluate_model", no_work)
    monkeypatch.setattr(napari_ctreport.io.ct, "load_study", no_work)
    monkeypatch.setattr(napari_ctreport.io.ct, "load_ct", no_work)
    ct = str(REAL / "totalsegmentator" / "example_ct.nii.gz")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")

    def refused(argv, *expected):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ctreport: "), err
        assert "the work was started" not in err and "internal error" not in err
        assert all(e in err for e in expected), err

    refused(["analyze", ct, "--out", str(tmp_path)], f"{tmp_path}: --out: is a folder")
    under = a_file / "out.json"
    refused(["analyze", ct, "--out", str(under)], f"{under}: --out: {a_file} is a file")
    refused(["analyze", ct, "--out", str(a_file / "x" / "y.json")], f"{a_file} is a file")
    refused(
        ["analyze", ct, "--out", str(tmp_path / "a.json"), "--export", str(a_file)],
        f"{a_file}: --export: is a file, not a folder",
    )
    refused(["analyze", ct, "--export", str(a_file / "ex")], f"{a_file} is a file")
    refused(["evaluate", "--data", str(tmp_path), "--json", str(tmp_path)], "--json: is a folder")
    refused(["train", "--synthetic", "1", "--out", str(a_file)], "--out: is a file")
    import torch

    if not torch.cuda.is_available():  # a device this machine lacks: bad input, not a crash
        refused(["analyze", ct, "--device", "cuda"], "--device cuda", "CUDA is not available")
        refused(["bench", "--device", "cuda", "--sizes", "8x8x8"], "--device cuda")
    # missing folders on the way are fine: the work starts
    deep = tmp_path / "new" / "deeper"
    assert main(["analyze", ct, "--out", str(deep / "a.json"), "--export", str(deep)]) == 2
    assert "the work was started" in capsys.readouterr().err
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root may write anywhere
            refused(["analyze", ct, "--out", str(ro / "a.json")], f"no permission to write in {ro}")
    finally:
        ro.chmod(0o700)


def test_analyze_bad_input_exit_2(tmp_path, capsys):
    assert main(["analyze", str(REAL / "dcm_qa_ct" / "Philips_localizer" / "I10.dcm")]) == 2
    assert "I10.dcm" in capsys.readouterr().err


def test_evaluate_prints_table_and_json(tmp_path, capsys):
    from napari_ctreport.synth import write_dataset

    write_dataset(
        tmp_path / "cases", cases=1, seed=900129, shape=(40, 112, 112), formats=("nifti",)
    )
    out = tmp_path / "metrics.json"
    rc = main(
        ["evaluate", "--data", str(tmp_path / "cases"), "--device", "cpu", "--json", str(out)]
    )
    assert rc == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "cpm" in table and "bleu4" in table
    assert table.endswith("\n") and not table.endswith("\n\n")  # the last row ends its line
    metrics = json.loads(out.read_text(), parse_constant=pytest.fail)  # no NaN: strict JSON
    assert metrics["n_cases"] == 1 and 0.0 <= metrics["cpm"] <= 1.0
    assert "by_kind." in table and ".found" in table  # where the misses lie, per kind
    assert sum(v["n"] for v in metrics["by_kind"].values()) == metrics["n_gt"]
    # a model draft's findings are a model's, not a truth: evaluating on one says so
    case_json = next((tmp_path / "cases").rglob("case.json"))
    doc = json.loads(case_json.read_text())
    doc["provenance"]["source"] = "model draft"
    case_json.write_text(json.dumps(doc))
    assert main(["evaluate", "--data", str(tmp_path / "cases"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 of the 1 case(s) are model drafts nobody reviewed" in err


def test_evaluate_missing_folder_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_a_folder_without_cases_exit_2(tmp_path, capsys):
    """``ctreport evaluate`` on a folder holding no case folder: one line naming it, exit 2
    (not a table of zero cases), as ``train`` says."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no case here")
    assert main(["evaluate", "--data", str(empty), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"ctreport: {empty}: no case folders (folders with case.json)\n"


def test_results_are_strict_json_and_a_failed_write_names_the_file(tmp_path, monkeypatch):
    """A metric with nothing to measure is ``null`` in the JSON, not ``NaN`` (which JSON readers
    refuse); a result that cannot be written is one line naming the file and the option (it
    was a bare OS error, or the hidden temporary file's name), and leaves no temporary file."""
    import tempfile

    from napari_ctreport import cli

    text = cli._json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}})
    assert json.loads(text, parse_constant=pytest.fail) == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": 2},
    }

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(cli.BadInput, match=r"a\.json: --json: No space left on device"):
        cli._atomic_write_text(tmp_path / "a.json", "{}", option="--json")
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(cli.BadInput, match=r"b\.json: --out: No space left on device"):
        cli._atomic_write_text(tmp_path / "b.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["analyze"], "ctreport analyze: the following arguments are required: path"),
        (["analyze", "ct.nii.gz", "--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
        (["frobnicate"], "ctreport: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_an_argument_error_is_one_line_exit_2(argv, expected, capsys):
    """A wrong or missing argument is bad input like any other: one line naming the command
    and where its help is, exit 2 (argparse printed its usage block over the message)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "--help')" in err, err
