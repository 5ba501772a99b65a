"""Case folders: round trip, atomic writes, validation, discovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_ctreport.io import case as case_mod
from napari_ctreport.io.case import (
    CASE_SCHEMA,
    Case,
    CaseFormatError,
    iter_cases,
    read_case,
    validate_case,
    write_case,
)
from napari_ctreport.io.volume import CTVolume
from napari_ctreport.report.findings import Finding


def _volume_and_labels() -> tuple[CTVolume, np.ndarray, list[Finding]]:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 200, size=(12, 20, 24)).astype(np.int16)
    vol = CTVolume(arr, spacing_zyx=(2.0, 0.8, 0.7), origin_lps=(-10.0, 5.0, -300.0))
    labels = np.zeros(arr.shape, dtype=np.uint8)
    labels[3:6, 4:9, 5:11] = 1
    labels[8:10, 12:15, 15:20] = 2
    findings = []
    for lab, kind in ((1, "solid nodule"), (2, "ground-glass nodule")):
        idx = np.argwhere(labels == lab)
        c = vol.index_to_lps(idx.mean(0))
        lo, hi = vol.index_to_lps(idx.min(0) - 0.5), vol.index_to_lps(idx.max(0) + 0.5)
        findings.append(
            Finding(
                id=f"F{lab}",
                kind=kind,
                side="right",
                zone="upper",
                center_lps_mm=tuple(c),
                bbox_lps_mm=(tuple(lo), tuple(hi)),
                diameter_mm=4.0,
                label=lab,
                attributes={"shape": "round"},
            )
        )
    return vol, labels, findings


def _case(findings: list[Finding]) -> Case:
    return Case(
        case_id="c1",
        findings=findings,
        report={"findings": "A nodule.", "impression": "1. Nodule.", "sentences": []},
        provenance={
            "source": "radiologist corrected",
            "model": {"name": "m", "version": "1", "sha256": "ab" * 32},
            "generator": None,
            "reviewer": "dr x",
            "created": "2026-01-01T00:00:00+00:00",
            "edit_log": [
                {
                    "time": "2026-01-01T00:00:01+00:00",
                    "action": "edit",
                    "finding_id": "F1",
                    "before": {"diameter_mm": 3.0},
                    "after": {"diameter_mm": 4.0},
                }
            ],
        },
        original={
            "findings": [findings[0].to_dict()],
            "report": {"findings": "x", "impression": "y"},
        },
    )


def test_round_trip(tmp_path: Path) -> None:
    vol, labels, findings = _volume_and_labels()
    case = _case(findings)
    folder = write_case(case, tmp_path / "c1", volume=vol, labels=labels, orientation="RAS")
    assert validate_case(folder) == []
    doc = json.loads((folder / "case.json").read_text())
    assert doc["schema"] == CASE_SCHEMA
    assert doc["image"] == {"file": "image.nii.gz", "orientation": "RAS"}
    back = read_case(folder)
    assert back.case_id == "c1"
    assert [f.to_dict() for f in back.findings] == [f.to_dict() for f in findings]
    assert back.report == case.report
    assert back.provenance == json.loads(json.dumps(case.provenance))
    assert back.original == case.original
    vol2 = back.load_volume()
    np.testing.assert_array_equal(vol2.array, vol.array)
    np.testing.assert_allclose(vol2.origin_lps, vol.origin_lps, atol=1e-3)
    np.testing.assert_array_equal(back.load_labels(vol2), labels)
    # re-export from the read case (copies files) gives the same record
    again = write_case(back, tmp_path / "c2")
    assert validate_case(again) == []
    assert json.loads((again / "case.json").read_text()) == doc


def test_overwrite_replaces_folder(tmp_path: Path) -> None:
    vol, labels, findings = _volume_and_labels()
    write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    write_case(_case(findings[:1]), tmp_path / "c", volume=vol, labels=labels)
    assert len(read_case(tmp_path / "c").findings) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    vol, labels, findings = _volume_and_labels()
    import napari_ctreport.io.write as write_mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(write_mod, "write_labels", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    assert list(tmp_path.iterdir()) == []
    # an existing case survives a failed overwrite untouched
    monkeypatch.undo()
    write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    before = (tmp_path / "c" / "case.json").read_text()
    monkeypatch.setattr(write_mod, "write_labels", boom)
    with pytest.raises(RuntimeError):
        write_case(_case(findings[:1]), tmp_path / "c", volume=vol, labels=labels)
    assert (tmp_path / "c" / "case.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_validate_reports_problems(tmp_path: Path) -> None:
    vol, labels, findings = _volume_and_labels()
    folder = write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    doc = json.loads((folder / "case.json").read_text())

    def check(mutate, needle: str) -> None:
        d = json.loads(json.dumps(doc))
        mutate(d)
        (folder / "case.json").write_text(json.dumps(d))
        problems = validate_case(folder)
        assert any(needle in p for p in problems), problems
        with pytest.raises(CaseFormatError, match="invalid case"):
            read_case(folder)

    check(lambda d: d["findings"][0].update(label=7), "no region for finding label")
    check(lambda d: d["findings"][0].update(kind="tumour"), "unknown finding kind")
    check(lambda d: d.update(schema="ctreport.case/9"), "schema")
    check(lambda d: d.update(image={"file": "/abs/image.nii.gz"}), "image")
    check(lambda d: d.update(image={"file": "nothere.nii.gz"}), "image missing")
    check(lambda d: d["findings"][1].update(id="F1"), "duplicate finding ids")
    check(lambda d: d["provenance"].update(source="guess"), "source")
    (folder / "case.json").write_text("{not json")
    assert "not valid JSON" in validate_case(folder)[0]
    assert "case.json" in validate_case(tmp_path / "nothing")[0] or validate_case(
        tmp_path / "nothing"
    )


def test_labels_must_match_volume(tmp_path: Path) -> None:
    vol, labels, findings = _volume_and_labels()
    with pytest.raises(ValueError, match="labels shape"):
        write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels[:-1])
    assert not (tmp_path / "c").exists()


def test_iter_cases(tmp_path: Path) -> None:
    vol, labels, findings = _volume_and_labels()
    for rel in ("a/c1", "a/c2", "b/deep/c3"):
        write_case(_case(findings), tmp_path / rel, volume=vol, labels=labels)
    (tmp_path / "a" / ".c9.partial-x").mkdir()
    (tmp_path / "a" / ".c9.partial-x" / "case.json").write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_cases(tmp_path)]
    assert found == ["a/c1", "a/c2", "b/deep/c3"]
    assert list(iter_cases(tmp_path / "a" / "c1")) == [tmp_path / "a" / "c1"]


def test_iter_cases_takes_the_newest_export_version(tmp_path: Path) -> None:
    """An export keeps v001, v002, ... of a case; training and evaluation see only the newest."""
    vol, labels, findings = _volume_and_labels()
    for rel in ("ct-a/v001", "ct-a/v002", "ct-a/v010", "ct-b/v001", "plain"):
        write_case(_case(findings), tmp_path / rel, volume=vol, labels=labels)
    found = [p.relative_to(tmp_path).as_posix() for p in iter_cases(tmp_path)]
    assert found == ["ct-a/v010", "ct-b/v001", "plain"]
    every = [p.relative_to(tmp_path).as_posix() for p in iter_cases(tmp_path, all_versions=True)]
    assert every == ["ct-a/v001", "ct-a/v002", "ct-a/v010", "ct-b/v001", "plain"]


def test_schema_file_is_valid_json_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(case_mod.load_schema())


def test_a_new_case_s_provenance_says_who_made_it_and_when() -> None:
    """``new_provenance``, which the synthetic generator, the transplant and the label import
    share: their source and generator, no model or reviewer yet, an empty edit log, and the
    creation time in UTC."""
    from datetime import datetime, timedelta, timezone

    from napari_ctreport.io.case import new_provenance

    gen = {"name": "x", "version": "1"}
    prov = new_provenance(source="imported labels", generator=gen)
    assert prov["source"] == "imported labels" and prov["generator"] == gen
    assert prov["model"] is None and prov["reviewer"] is None and prov["edit_log"] == []
    made = datetime.fromisoformat(prov["created"])
    assert made.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - made) < timedelta(minutes=1)


def test_lung_ml_round_trip(tmp_path: Path) -> None:
    """``Case.lung_ml`` is written as ``provenance.input.lung_ml`` (beside what ``input``
    already holds), validates, reads back, and survives a re-write of the read case."""
    vol, labels, findings = _volume_and_labels()
    case = _case(findings)
    case.provenance["input"] = {"format": "nifti", "size_zyx": list(vol.shape)}
    case.lung_ml = 498.2
    folder = write_case(case, tmp_path / "c1", volume=vol, labels=labels)
    assert validate_case(folder) == []
    doc = json.loads((folder / "case.json").read_text())
    assert doc["provenance"]["input"] == {
        "format": "nifti",
        "size_zyx": list(vol.shape),
        "lung_ml": 498.2,
    }
    back = read_case(folder)
    assert back.lung_ml == 498.2
    again = write_case(back, tmp_path / "c2")
    assert json.loads((again / "case.json").read_text()) == doc
    assert read_case(again).lung_ml == 498.2
    # no lung in the scan is a measurement too, not "unknown"
    case.lung_ml = 0.0
    assert read_case(write_case(case, tmp_path / "c3", volume=vol, labels=labels)).lung_ml == 0.0


def test_case_without_lung_ml_reads_none(tmp_path: Path) -> None:
    """Cases written before ``lung_ml`` was stored (no ``provenance.input``, or an ``input``
    without ``lung_ml``) and cases recording ``null`` validate and read with ``lung_ml=None``."""
    vol, labels, findings = _volume_and_labels()
    folder = write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    doc = json.loads((folder / "case.json").read_text())
    assert "input" not in doc["provenance"]
    assert validate_case(folder) == [] and read_case(folder).lung_ml is None
    for entry in ({"format": "dicom", "series_uid": "1.2.3"}, {"lung_ml": None}):
        doc["provenance"]["input"] = entry
        (folder / "case.json").write_text(json.dumps(doc))
        assert validate_case(folder) == []
        assert read_case(folder).lung_ml is None


@pytest.mark.parametrize("bad", [-5.0, "500 ml"])
def test_schema_refuses_a_bad_lung_ml(tmp_path: Path, bad: object) -> None:
    vol, labels, findings = _volume_and_labels()
    folder = write_case(_case(findings), tmp_path / "c", volume=vol, labels=labels)
    doc = json.loads((folder / "case.json").read_text())
    doc["provenance"]["input"] = {"lung_ml": bad}
    (folder / "case.json").write_text(json.dumps(doc))
    problems = validate_case(folder)
    assert len(problems) == 1 and "provenance/input/lung_ml" in problems[0]
    with pytest.raises(CaseFormatError, match="lung_ml"):
        read_case(folder)
    case = _case(findings)
    case.lung_ml = -5.0
    with pytest.raises(ValueError, match="lung_ml"):
        write_case(case, tmp_path / "d", volume=vol, labels=labels)
    assert not (tmp_path / "d").exists()
