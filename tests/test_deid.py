"""De-identification: keyed UIDs, pseudonyms, date shifts, keys, and no identifier in any exported byte."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_export import KEY, make_case, write_identified_series

from napari_ctreport.io.deid import DEID_KEY_ENV, Deidentifier, default_key_path, load_key


def _pdf_streams(data: bytes) -> list[bytes]:
    """The decoded content streams of a reportlab PDF (ASCII85 and/or Flate)."""
    out = []
    for m in re.finditer(rb"<<((?:(?!>>).)*?)>>\s*stream\r?\n(.*?)endstream", data, re.S):
        head, body = m.group(1), m.group(2).strip()
        try:
            if b"ASCII85Decode" in head:
                body = base64.a85decode(body.removeprefix(b"<~").removesuffix(b"~>"))
            if b"FlateDecode" in head:
                body = zlib.decompress(body)
        except (ValueError, zlib.error):
            continue
        out.append(body)
    return out


def _dicom_text(path: Path) -> str:
    """All string values of a DICOM file's elements, sequences included."""
    ds = pydicom.dcmread(path)
    out: list[str] = []

    def walk(d: pydicom.Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                out.append(str(elem.value))

    walk(ds.file_meta)
    walk(ds)
    return "\n".join(out)


def _json_text(obj: object) -> str:
    """All strings of a JSON object, with base64 attachments decoded."""
    if isinstance(obj, dict):
        parts = []
        for k, v in obj.items():
            if k == "data" and isinstance(v, str):
                parts.append(base64.b64decode(v).decode("utf-8"))
            else:
                parts.append(f"{k} {_json_text(v)}")
        return "\n".join(parts)
    if isinstance(obj, list):
        return "\n".join(_json_text(v) for v in obj)
    return str(obj)


def _scan(folder: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every exported file's bytes (plus gunzipped NIfTI and decoded PDF streams), and its text."""
    blobs: dict[str, bytes] = {}
    texts: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        blobs[str(p)] = data
        if p.name.endswith(".gz"):
            blobs[str(p) + " (gunzip)"] = gzip.decompress(data)
            texts[str(p) + " (gunzip)"] = gzip.decompress(data)[:348].decode("latin-1")  # header
        if p.suffix == ".pdf":
            for i, s in enumerate(_pdf_streams(data)):
                blobs[f"{p} (stream {i})"] = s
                texts[f"{p} (stream {i})"] = s.decode("latin-1")
            if shutil.which("pdftotext"):
                texts[str(p) + " (text)"] = subprocess.run(
                    ["pdftotext", str(p), "-"], capture_output=True, text=True, check=True
                ).stdout
        if p.suffix == ".dcm":
            texts[str(p)] = _dicom_text(p)
        if p.suffix in (".json", ".md"):
            text = data.decode("utf-8")
            texts[str(p)] = _json_text(json.loads(text)) if p.suffix == ".json" else text
    return blobs, texts


# identifiers long enough that a chance match in binary data is negligible: searched in every byte
LONG_NEEDLES = (
    "Doe^Jane", "MRN-0042-XYZ", "19580301", "ACC778899", "Elsewhere", "Gregory", "20190412",
    "OTHER-555-ID", "Smith^Anna", "Jane Doe",
)  # fmt: skip
# name parts: searched as whole words in all text (DICOM string values, JSON, Markdown, PDF text)
WORD_NEEDLES = ("Doe", "Jane", "House", "Smith", "Anna", "0042", "1958")


def _uids(dicom_folder: Path) -> list[str]:
    ds = pydicom.dcmread(sorted(dicom_folder.iterdir())[0])
    uids = {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}
    uids |= {pydicom.dcmread(p).SOPInstanceUID for p in dicom_folder.iterdir()}
    return sorted(uids)


@pytest.mark.parametrize("resampled", [False, True], ids=["source-referenced", "derived-series"])
def test_no_identifier_in_any_exported_byte(tmp_path: Path, resampled: bool) -> None:
    from napari_ctreport.io.ct import load_ct

    vol, labels, finds = make_case()
    folder = tmp_path / "dicom_in"
    write_identified_series(vol, folder)
    loaded = load_ct(folder)
    loaded.metadata["resampled"] = resampled
    # a reviewer who typed the patient's name into the report text
    from napari_ctreport.report.writer import write_report

    rep = write_report(finds).to_dict()
    rep["impression"] += "\nDiscussed with Jane Doe (MRN-0042-XYZ)."
    from napari_ctreport.export import export_case

    res = export_case(
        volume=loaded, findings=finds, labels=labels, report=rep, out_dir=tmp_path / "out",
        reviewer="Smith^Anna", model_info={"name": "m", "version": "1", "sha256": "0" * 64},
        key=KEY,
    )  # fmt: skip
    assert ("ct" in res.files) == resampled
    blobs, texts = _scan(res.folder)
    assert any(k.endswith("(gunzip)") for k in blobs)
    assert any("(stream" in k for k in blobs), "PDF streams were not decoded"
    found = []
    for needle in [*LONG_NEEDLES, *_uids(folder)]:
        pat = needle.encode("utf-8").lower()
        found += [f"{needle!r} in {name}" for name, data in blobs.items() if pat in data.lower()]
    for word in WORD_NEEDLES:
        rx = re.compile(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", re.IGNORECASE)
        found += [f"{word!r} in {name}" for name, text in texts.items() if rx.search(text)]
    assert found == []
    # the scans can see text: the report is in the PDF streams, the SR and the Markdown
    assert any(b"Impression" in v for k, v in blobs.items() if "(stream" in k)
    assert "[removed]" in res.files["markdown"].read_text(encoding="utf-8")
    assert any("Long Axis" in t for k, t in texts.items() if k.endswith("sr.dcm"))


def test_dataset_basic_profile() -> None:
    vol, _, _ = make_case()
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042-XYZ"
    ds.PatientBirthDate = "19580301"
    ds.PatientSex = "F"
    ds.PatientAge = "093Y"
    ds.AccessionNumber = "ACC778899"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.OperatorsName = "Tech^Tom"
    ds.StudyDate = "20190412"
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ImageComments = "patient Jane"
    ds.Manufacturer = "Acme"
    ds.SeriesDescription = "Doe chest"
    ds.BodyPartExamined = "CHEST"
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4.6"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ReferencedImageSequence = [item]
    ds.add_new(0x00291010, "LO", "secret")
    ds.add_new(0x60003000, "OW", b"\x00\x01")
    d = Deidentifier(KEY)
    out = d.dataset(ds)
    assert str(out.PatientName).startswith("CTR-") and out.PatientID.startswith("CTR-")
    assert out.PatientBirthDate == "" and out.AccessionNumber == ""
    assert "InstitutionName" not in out and "OperatorsName" not in out
    assert "ImageComments" not in out and "SeriesDescription" not in out
    assert out.PatientSex == "F" and out.PatientAge == "090Y" and out.Manufacturer == "Acme"
    assert out.BodyPartExamined == "CHEST"
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.StudyInstanceUID == d.uid("1.2.3.4.5") != "1.2.3.4.5"
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == d.uid("1.2.3.4.6")
    assert not any(e.tag.is_private for e in out) and 0x60003000 not in out
    assert out.PatientIdentityRemoved == "YES"
    shifted = out.StudyDate
    assert shifted != "20190412" and len(shifted) == 8
    delta = np.datetime64("2019-04-12") - np.datetime64(
        f"{shifted[:4]}-{shifted[4:6]}-{shifted[6:]}"
    )
    assert 365 <= delta.astype(int) < 3650
    # same patient, same shift: intervals between studies are kept
    assert d.shift_date("20190415", "MRN-0042-XYZ") == (
        np.datetime64(f"{shifted[:4]}-{shifted[4:6]}-{shifted[6:]}") + np.timedelta64(3, "D")
    ).astype(str).replace("-", "")


def test_uid_mapping_is_keyed_and_consistent() -> None:
    a, b, c = Deidentifier(KEY), Deidentifier(KEY), Deidentifier(b"another key")
    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert a.uid(uid) == b.uid(uid)
    assert a.uid(uid) != c.uid(uid)
    assert a.uid(uid) != a.uid(uid + "6")
    out = a.uid(uid)
    assert out.startswith("2.25.") and len(out) <= 64 and re.fullmatch(r"2\.25\.[1-9][0-9]*", out)
    assert a.uid("1.2.840.10008.5.1.4.1.1.66.4") == "1.2.840.10008.5.1.4.1.1.66.4"
    assert a.pseudonym("MRN-1") == b.pseudonym("MRN-1") != a.pseudonym("MRN-2")


def test_scrub_text() -> None:
    d = Deidentifier(KEY)
    d.remember("Doe^Jane", "MRN-0042-XYZ")
    text = d.scrub_text("Jane DOE, mrn-0042-xyz, has a nodule.")
    assert "Jane" not in text and "DOE" not in text and "0042" not in text
    assert text.endswith("has a nodule.")
    assert d.scrub_json({"a": ["Doe"], "b": 3}) == {"a": ["[removed]"], "b": 3}


def test_key_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv(DEID_KEY_ENV, raising=False)
    assert load_key(b"explicit") == b"explicit"
    with pytest.raises(FileNotFoundError):
        load_key(create=False)
    k1 = load_key()
    path = default_key_path()
    assert path == tmp_path / "cfg" / "napari-ctreport" / "deid.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key() == k1 and len(k1) >= 32
    monkeypatch.setenv(DEID_KEY_ENV, "from-the-environment")
    assert load_key() == b"from-the-environment"
    assert load_key("argument wins") == b"argument wins"
    with pytest.raises(ValueError):
        load_key("   ")


def test_scrub_text_replaces_whole_words_only() -> None:
    """A name part is not taken out of a longer word: "Lowe" leaves "lower" (and "Annabel")."""
    d = Deidentifier(KEY)
    d.remember("Lowe^Anna")
    text = "Nodule in the lower zone (Annabel's scan); discussed with Anna Lowe, then Lowe."
    assert d.scrub_text(text) == (
        "Nodule in the lower zone (Annabel's scan); discussed with [removed], then [removed]."
    )


def test_scrub_text_name_forms_and_ids() -> None:
    """A DICOM name in its natural forms is one replacement; IDs are whole tokens; a number
    under 5 digits is never an identifier in free text (it would hit sizes and volumes)."""
    d = Deidentifier(KEY)
    d.remember("Doe^Jane^Marie", "MRN-0042-XYZ", "12345678", "58", "AB12")
    for form in (
        "Jane Doe",
        "Doe, Jane",
        "DOE^JANE",
        "doe jane",
        "Jane Marie Doe",
        "Doe^Jane^Marie",
    ):
        assert d.scrub_text(f"seen by {form}.") == "seen by [removed].", form
    assert d.scrub_text("MRN-0042-XYZ, mrn-0042-xyz: ID 12345678") == (
        "[removed], [removed]: ID [removed]"
    )
    kept = "A 58 ml effusion, 5.8 mm, 1.12345678, 123456789, AB123, 0042, CT at 12-24 months."
    assert d.scrub_text(kept) == kept
    assert d.scrub_text("ref AB12") == "ref [removed]"


def test_scrub_text_keeps_protected_words() -> None:
    """A name part that is a word of the report (``keep``) stays in the text; the whole name
    still goes. Without ``keep`` the word is a name part like any other."""
    d = Deidentifier(KEY)
    d.remember("Small^Ed", "58")
    text = "Small right pleural effusion (58 ml). Discussed with Ed Small and SMALL, ED."
    assert d.scrub_text(text, keep={"Small", "right"}) == (
        "Small right pleural effusion (58 ml). Discussed with [removed] and [removed]."
    )
    assert d.scrub_json({"t": [text]}, keep={"small"}) == {
        "t": ["Small right pleural effusion (58 ml). Discussed with [removed] and [removed]."]
    }
    assert d.scrub_text("Small effusion.") == "[removed] effusion."
    # a two-word name made only of protected words would eat ordinary text: not replaced
    d2 = Deidentifier(KEY)
    d2.remember("Small^Right")
    assert (
        d2.scrub_text("Small right effusion.", keep={"small", "right"}) == "Small right effusion."
    )


def test_report_vocabulary_covers_the_writer() -> None:
    from napari_ctreport.export import report_vocabulary
    from napari_ctreport.report.lexicon import EFFUSION_GRADES, KINDS, SHAPES, SIDES, ZONES
    from napari_ctreport.report.writer import write_report

    vocab = report_vocabulary()
    terms = [*KINDS, *SIDES, *ZONES, *SHAPES, *(g for g, _ in EFFUSION_GRADES)]
    assert {w for t in terms for w in re.findall(r"[a-z]+", t)} <= vocab
    _, _, finds = make_case()
    text = write_report(finds).text
    assert set(re.findall(r"[a-z]+", text.lower())) <= vocab
    assert {"small", "large", "mass", "left", "lower", "long", "short", "wall", "fluid"} <= vocab
    assert not {"jane", "doe", "ed", "lowe", "anna", "smith"} & vocab
