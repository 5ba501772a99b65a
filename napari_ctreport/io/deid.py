"""De-identification of exported DICOM objects, metadata and text (DICOM PS3.15 basic profile).

:class:`Deidentifier` applies the PS3.15 Annex E *Basic Application Level Confidentiality
Profile* with the *Retain Longitudinal Temporal Information with Modified Dates*, *Retain Patient
Characteristics* (sex, age, size, weight) and *Retain Device Identity* (manufacturer, model)
options:

* patient name and ID are replaced by a keyed pseudonym (the same patient always gets the same
  pseudonym under one key); birth date/time, other IDs and names, addresses, telephone numbers,
  accession number, study ID, institution, department, station, every person name (physicians,
  operators, observers), comments, descriptions, protocol names, request and order details,
  private elements, overlays and curves are removed or emptied;
* dates are shifted by a keyed per-patient offset (between 365 and 3,649 days back), so
  intervals between one patient's studies are kept;
* every UID that is not a well-known DICOM UID (``1.2.840.10008.*``) is replaced by
  ``2.25.<int>``, the integer being the first 128 bits of HMAC-SHA256(key, uid): the same input
  UID maps to the same output UID under one key, so references between exported objects (and
  re-exports of the same study) stay consistent;
* any remaining text element that contains one of the identifiers seen (name parts, IDs,
  accession number) is emptied;
* in free text (the report, :meth:`Deidentifier.scrub_text`) the identifiers seen are replaced
  as whole words only: a person name in its natural forms (``Doe^Jane`` also as ``Jane Doe``,
  ``Doe, Jane``, ``DOE JANE``), its parts of 3+ letters, IDs as whole tokens. A number with fewer
  than 5 digits (an ID such as ``58``) is never replaced: it cannot identify anyone by itself
  and would hit sizes, volumes and dates. Words the caller protects (the export passes the
  report's own vocabulary: ``small``, ``mass``, ``left``, ...) are not replaced when a name part
  is one of them, so a patient called *Small* keeps "Small right pleural effusion" intact; the
  trade-off is that such a name part typed alone into the text is not removed.

The key comes from the ``key`` argument, else the environment variable ``CTREPORT_DEID_KEY``, else
a random per-installation key stored in ``~/.config/napari-ctreport/deid.key`` (created with mode
0600). Keep the key secret: with it, anyone holding an original UID can check whether a
de-identified object derives from it.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "DEID_KEY_ENV",
    "METHOD",
    "Deidentifier",
    "default_key_path",
    "hash_uid",
    "load_key",
]

#: Environment variable holding the de-identification key (text; hex, base64 or any string).
DEID_KEY_ENV = "CTREPORT_DEID_KEY"
#: Description of the method, written into provenance and (as DeidentificationMethod) into DICOM.
METHOD = (
    "DICOM PS3.15 basic profile; retain longitudinal temporal information with modified dates, "
    "patient characteristics and device identity options; keyed HMAC-SHA256 UIDs"
)
#: PS3.16 CID 7050 codes of the profile and the options applied.
METHOD_CODES: tuple[tuple[str, str], ...] = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113109", "Retain Device Identity Option"),
)

# Elements removed outright (PS3.15 action X, or D/Z/X where emptying is not needed).
_REMOVE: frozenset[str] = frozenset(
    """
    PatientBirthTime OtherPatientIDs OtherPatientIDsSequence OtherPatientNames PatientBirthName
    PatientMotherBirthName PatientAddress PatientTelephoneNumbers PatientTelecomInformation
    MilitaryRank BranchOfService MedicalRecordLocator EthnicGroup Occupation AdditionalPatientHistory
    PatientComments ImageComments StudyComments PatientReligiousPreference CountryOfResidence
    RegionOfResidence CurrentPatientLocation PatientState PatientInstitutionResidence
    PatientInsurancePlanCodeSequence ResponsiblePerson ResponsiblePersonRole ResponsibleOrganization
    IssuerOfPatientID IssuerOfPatientIDQualifiersSequence PatientPrimaryLanguageCodeSequence
    MedicalAlerts Allergies SmokingStatus PregnancyStatus LastMenstrualDate SpecialNeeds
    InstitutionName InstitutionAddress InstitutionalDepartmentName InstitutionCodeSequence
    InstitutionalDepartmentTypeCodeSequence StationName DeviceSerialNumber DeviceUID
    ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers
    ReferringPhysicianIdentificationSequence PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
    PerformingPhysicianName PerformingPhysicianIdentificationSequence NameOfPhysiciansReadingStudy
    PhysiciansReadingStudyIdentificationSequence OperatorsName OperatorIdentificationSequence
    RequestingPhysician RequestingService ConsultingPhysicianName
    StudyDescription SeriesDescription ProtocolName DerivationDescription
    PerformedProcedureStepDescription PerformedProcedureStepID RequestedProcedureDescription
    RequestedProcedureID ScheduledProcedureStepDescription ScheduledProcedureStepID
    RequestAttributesSequence ReasonForStudy ReasonForTheRequestedProcedure
    AdmittingDiagnosesDescription AdmittingDiagnosesCodeSequence AdmissionID
    IssuerOfAdmissionIDSequence PlacerOrderNumberImagingServiceRequest
    FillerOrderNumberImagingServiceRequest ReferencedPatientSequence ReferencedPatientPhotoSequence
    PatientSexNeutered ProcedureCodeSequence PerformedLocation ScheduledStudyLocation
    ScheduledStudyLocationAETitle ScheduledStationName PerformedStationName
    PerformedStationAETitle StudyIDIssuer AcquisitionComments ContrastBolusAgent
    FrameComments ContentCreatorName VerifyingObserverSequence PersonIdentificationCodeSequence
    TextComments TextString ReviewerName InterpretationAuthor InterpretationRecorder
    InterpretationTranscriber PatientSize PatientWeight
    """.split()
) - {"PatientSize", "PatientWeight"}  # retained (patient characteristics option)

# Type 2 elements emptied (PS3.15 action Z).
_EMPTY: frozenset[str] = frozenset({"AccessionNumber", "StudyID", "ReferringPhysicianName"})

_WELL_KNOWN_UID = "1.2.840.10008."
_TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "AE"}


# Free-text matching (:meth:`Deidentifier.scrub_text`): an identifier is a whole token, not
# preceded or followed by a letter or digit (nor by a decimal point and a digit: "1.12345").
_LEFT = r"(?<![^\W_])(?<!\d[.,])"
_RIGHT = r"(?![^\W_])(?![.,]\d)"
# between the words of a name: spaces, a comma ("Doe, Jane") or DICOM's caret ("Doe^Jane")
_SEP = r"(?:\s*[,^]\s*|\s+)"
_WORD_SPLIT = re.compile(r"[\^\s,]+")
#: A token without letters needs this many digits to be scrubbed from free text.
MIN_NUMERIC_DIGITS = 5


def _name_forms(ident: str) -> list[tuple[str, ...]]:
    """The word sequences an identifier may be written as in free text.

    A DICOM person name ``Family^Given^Middle`` (each ``=`` group) gives family-first and
    given-first orders with and without the middle name; other text with several words gives its
    own and the reversed word order; every word (name part) also stands alone. An identifier
    without spaces, commas or carets (``MRN-0042-XYZ``) is one token.
    """
    ident = ident.strip()
    forms: list[tuple[str, ...]] = []
    if ident and not _WORD_SPLIT.search(ident.replace("=", " ")):
        return [(ident,)]
    for group in ident.split("="):
        if "^" in group:
            comps = [_WORD_SPLIT.split(c.strip()) for c in group.split("^")[:3]]
            comps = [[w for w in c if w] for c in comps]
            family, given, middle = [*comps, [], [], []][:3]
            orders = [
                family + given + middle,
                given + middle + family,
                given + family,
                family + given,
            ]
        else:
            words = [w for w in _WORD_SPLIT.split(group.strip()) if w]
            orders = [words, words[::-1]]
        forms += [tuple(o) for o in orders if o]
        forms += [(w,) for w in _WORD_SPLIT.split(group) if w]
    return list(dict.fromkeys(forms))


def _scrubbable(words: tuple[str, ...], keep: frozenset[str]) -> bool:
    """Whether free text loses this word sequence (see :meth:`Deidentifier.scrub_text`)."""
    if len(words) > 1:
        # a phrase made only of the caller's words ("Small Left") would eat ordinary text
        return not all(w.lower() in keep for w in words)
    (word,) = words
    if len(word) < 3:
        return False
    if not any(c.isalpha() for c in word):
        return sum(c.isdigit() for c in word) >= MIN_NUMERIC_DIGITS
    return word.lower() not in keep


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/napari-ctreport/deid.key`` (``~/.config/...`` without XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "napari-ctreport" / "deid.key"


def _key_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        if not value:
            raise ValueError("de-identification key is empty")
        return value
    text = value.strip()
    if not text:
        raise ValueError("de-identification key is empty")
    return text.encode("utf-8")


def load_key(key: str | bytes | None = None, *, create: bool = True) -> bytes:
    """The de-identification key.

    Parameters
    ----------
    key
        Used as is when given (bytes, or text encoded as UTF-8).
    create
        Create the per-installation key file (mode 0600) when neither ``key`` nor the environment
        variable :data:`DEID_KEY_ENV` gives one and the file does not exist yet.

    Returns
    -------
    bytes
        The key: ``key``, else ``$CTREPORT_DEID_KEY``, else the contents of
        :func:`default_key_path`.
    """
    if key is not None:
        return _key_bytes(key)
    env = os.environ.get(DEID_KEY_ENV)
    if env:
        return _key_bytes(env)
    path = default_key_path()
    if path.is_file():
        return _key_bytes(path.read_text(encoding="ascii"))
    if not create:
        raise FileNotFoundError(f"{path}: no de-identification key")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (text + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return _key_bytes(text)


def hash_uid(text: str, key: bytes | None = None) -> str:
    """A ``2.25.<int>`` UID from the first 128 bits of HMAC-SHA256(key, text) (SHA-256 without key)."""
    data = text.encode("utf-8")
    digest = hmac.new(key, data, hashlib.sha256).digest() if key else hashlib.sha256(data).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


class Deidentifier:
    """Keyed, consistent de-identification of DICOM datasets, CT metadata and text.

    One instance remembers the identifiers it has seen (patient name parts, IDs, accession
    numbers, ...), empties any dataset text element that contains them, and replaces them as
    whole words in free text (:meth:`scrub_text` / :meth:`scrub_json`).

    Parameters
    ----------
    key
        The secret key (see :func:`load_key`).
    """

    def __init__(self, key: bytes) -> None:
        self.key = _key_bytes(key)
        self._identifiers: set[str] = set()
        self._uids: dict[str, str] = {}
        # scrub_text's regex per set of protected words (cleared when an identifier is added)
        self._scrub_cache: dict[frozenset[str], re.Pattern[str] | None] = {}

    # -- primitives ------------------------------------------------------------------------------
    def _mac(self, text: str) -> bytes:
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """The replacement of ``uid`` (well-known DICOM UIDs and empty values are kept)."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid or uid.startswith(_WELL_KNOWN_UID):
            return uid
        out = hash_uid("uid:" + uid, self.key)
        self._uids[uid] = out
        return out

    def derived_uid(self, *parts: str) -> str:
        """A new, stable UID for something this package creates (e.g. a derived series)."""
        return hash_uid("derived:" + "/".join(parts), self.key)

    def pseudonym(self, value: str, *, prefix: str = "ANON") -> str:
        """A stable pseudonym ``PREFIX-XXXXXXXXXXXX`` for an identifier (patient ID, reviewer)."""
        value = str(value).strip()
        return f"{prefix}-{self._mac('pseudonym:' + prefix + ':' + value).hex()[:12].upper()}"

    def patient_pseudonym(self, patient_id: str, patient_name: str = "") -> str:
        """The pseudonymous patient ID (from the ID, or the name when there is no ID)."""
        basis = str(patient_id).strip() or str(patient_name).strip() or "unknown"
        return self.pseudonym(basis, prefix="CTR")

    def date_offset_days(self, patient_id: str) -> int:
        """The keyed date shift of one patient: between 365 and 3,649 days back."""
        d = self._mac("date:" + str(patient_id).strip())
        return 365 + int.from_bytes(d[:4], "big") % (3650 - 365)

    def shift_date(self, value: str, patient_id: str) -> str:
        """Shift a DICOM DA (``YYYYMMDD``) back by the patient's offset; ``""`` if unparseable."""
        value = str(value).strip()
        try:
            d = _dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:
            return ""
        return (d - _dt.timedelta(days=self.date_offset_days(patient_id))).strftime("%Y%m%d")

    def shift_datetime(self, value: str, patient_id: str) -> str:
        """Shift a DICOM DT: the date part shifted, the time part kept."""
        value = str(value).strip()
        if len(value) < 8:
            return ""
        day = self.shift_date(value[:8], patient_id)
        return day + value[8:] if day else ""

    # -- identifiers -----------------------------------------------------------------------------
    def remember(self, *values: Any) -> None:
        """Record identifier strings (and their name parts) to be scrubbed from any text."""
        for v in values:
            if v is None:
                continue
            text = str(v).strip()
            if not text:
                continue
            self._identifiers.add(text)
            self._scrub_cache.clear()
            for part in re.split(r"[\^\s,=]+", text):
                if len(part) >= 3:
                    self._identifiers.add(part)

    @property
    def identifiers(self) -> frozenset[str]:
        """The identifier strings seen so far."""
        return frozenset(self._identifiers)

    def _contains_identifier(self, text: str) -> bool:
        # DICOM header text: any substring empties the element (losing a header value is cheap)
        low = text.lower()
        return any(ident.lower() in low for ident in self._identifiers)

    def _scrub_pattern(self, keep: frozenset[str]) -> re.Pattern[str] | None:
        """One regex matching every remembered identifier that :meth:`scrub_text` replaces."""
        if keep not in self._scrub_cache:
            alts: set[str] = set()
            for ident in self._identifiers:
                for words in _name_forms(ident):
                    if _scrubbable(words, keep):
                        alts.add(_SEP.join(re.escape(w) for w in words))
            pattern = None
            if alts:
                body = "|".join(sorted(alts, key=lambda a: (-len(a), a)))
                pattern = re.compile(rf"{_LEFT}(?:{body}){_RIGHT}", re.IGNORECASE)
            self._scrub_cache[keep] = pattern
        return self._scrub_cache[keep]

    def scrub_text(
        self, text: str, *, replacement: str = "[removed]", keep: Iterable[str] = ()
    ) -> str:
        """``text`` with the remembered identifiers replaced, as whole words (case-insensitive).

        Replaced: a person name in its natural forms (``Doe^Jane`` as ``Doe^Jane``, ``Jane Doe``,
        ``Doe, Jane``, ``DOE JANE``; a middle name in or out), each name part or other identifier
        of 3+ characters as a whole word or token (``MRN-0042-XYZ``, ``ACC778899``, ``12345678``),
        never inside a longer word (``Lowe`` leaves "lower" alone). Not replaced: a token without
        letters with fewer than 5 digits (the ID ``58`` is not taken out of "58 ml": it cannot
        identify anyone by itself and would hit sizes, volumes and dates), and a single word in
        ``keep`` (lower-case words the text legitimately uses, e.g. the report's vocabulary:
        ``"small"`` for a patient called Small): such a name part typed alone into the text stays
        -- the trade-off of not corrupting the report. A multi-word name is replaced even when
        some of its words are in ``keep`` ("Ed Small" goes, "Small right" stays).
        """
        pattern = self._scrub_pattern(frozenset(str(w).lower() for w in keep))
        out = str(text)
        return pattern.sub(lambda _m: replacement, out) if pattern is not None else out

    def scrub_json(self, obj: Any, *, keep: Iterable[str] = ()) -> Any:
        """A copy of a JSON-like object with :meth:`scrub_text` applied to every string (dict
        keys are kept)."""
        pattern = self._scrub_pattern(frozenset(str(w).lower() for w in keep))

        def walk(o: Any) -> Any:
            if isinstance(o, str):
                return pattern.sub("[removed]", o) if pattern is not None else o
            if isinstance(o, dict):
                return {k: walk(v) for k, v in o.items()}
            if isinstance(o, list | tuple):
                return [walk(v) for v in o]
            return o

        return walk(obj)

    # -- CT metadata -----------------------------------------------------------------------------
    def metadata(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A de-identified copy of a :class:`~napari_ctreport.io.volume.CTVolume` ``metadata``.

        Patient name/ID become the pseudonym, the birth date is emptied, the study date shifted,
        UIDs mapped, descriptions, paths and file lists dropped.
        """
        meta = dict(meta or {})
        pid = str(meta.get("patient_id") or "")
        self.remember(meta.get("patient_name"), pid, meta.get("accession_number"))
        pseudo = self.patient_pseudonym(pid, str(meta.get("patient_name") or ""))
        out = dict(meta)
        out["patient_id"] = pseudo
        out["patient_name"] = pseudo + "^"
        out["patient_birth_date"] = ""
        out["study_date"] = (
            self.shift_date(meta["study_date"], pid) if meta.get("study_date") else ""
        )
        for k in ("study_uid", "series_uid", "frame_of_reference_uid"):
            if meta.get(k):
                out[k] = self.uid(str(meta[k]))
        out["sop_instance_uids"] = [self.uid(u) for u in meta.get("sop_instance_uids") or []]
        for k in ("study_description", "series_description", "accession_number"):
            out[k] = ""
        for k in ("source_path", "source_name", "path", "source", "files"):
            out.pop(k, None)
        out["deidentified"] = True
        return out

    # -- DICOM -----------------------------------------------------------------------------------
    def collect(self, ds: Any) -> None:
        """Remember the identifiers of a dataset (call on every input before de-identifying)."""
        for kw in (
            "PatientName",
            "PatientID",
            "OtherPatientIDs",
            "OtherPatientNames",
            "PatientBirthName",
            "PatientMotherBirthName",
            "AccessionNumber",
            "ReferringPhysicianName",
            "PerformingPhysicianName",
            "OperatorsName",
            "NameOfPhysiciansReadingStudy",
            "InstitutionName",
            "PatientAddress",
            "PatientTelephoneNumbers",
            "StationName",
            "DeviceSerialNumber",
        ):
            if kw in ds:
                value = ds.data_element(kw).value
                if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
                    self.remember(*[str(v) for v in value])
                else:
                    self.remember(str(value))

    def dataset(self, ds: Any) -> Any:
        """De-identify a :class:`pydicom.Dataset` in place (and its file meta); returns it."""
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        self.collect(ds)
        pid = str(ds.get("PatientID", "") or "")
        pname = str(ds.get("PatientName", "") or "")
        pseudo = self.patient_pseudonym(pid, pname)

        def visit(d: Dataset) -> None:
            for elem in list(d):
                tag = elem.tag
                kw = elem.keyword
                if tag.is_private or 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:
                    del d[tag]
                    continue
                if kw in _REMOVE:
                    del d[tag]
                    continue
                if kw in _EMPTY:
                    elem.value = ""
                    continue
                if kw == "PatientID":
                    elem.value = pseudo
                    continue
                if kw == "PatientName":
                    elem.value = pseudo + "^"
                    continue
                if kw == "PatientBirthDate":
                    elem.value = ""
                    continue
                if kw == "PatientAge" and str(elem.value).strip():
                    age = str(elem.value).strip()
                    if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) > 89:
                        elem.value = "090Y"
                    continue
                vr = elem.VR
                if vr == "SQ":
                    seq = elem.value
                    for item in seq if isinstance(seq, Sequence | list) else []:
                        visit(item)
                    continue
                if vr == "UI":
                    elem.value = self._map_uid_value(elem.value)
                    continue
                if vr == "DA":
                    elem.value = self._map_values(elem.value, lambda v: self.shift_date(v, pid))
                    continue
                if vr == "DT":
                    elem.value = self._map_values(elem.value, lambda v: self.shift_datetime(v, pid))
                    continue
                if vr == "PN":
                    elem.value = ""
                    continue
                if vr in _TEXT_VRS and elem.value is not None:
                    if self._contains_identifier(str(elem.value)):
                        elem.value = ""
                    continue

        visit(ds)
        fm = getattr(ds, "file_meta", None)
        if fm is not None and "MediaStorageSOPInstanceUID" in fm:
            fm.MediaStorageSOPInstanceUID = self.uid(str(fm.MediaStorageSOPInstanceUID))
        self.mark(ds)
        return ds

    def mark(self, ds: Any) -> None:
        """Set PatientIdentityRemoved, DeidentificationMethod and its code sequence."""
        from pydicom.dataset import Dataset

        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = "napari-ctreport: PS3.15 basic profile"
        items = []
        for value, meaning in METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items

    def _map_uid_value(self, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, str):
            return self.uid(value)
        return [self.uid(str(v)) for v in value]

    @staticmethod
    def _map_values(value: Any, fn: Any) -> Any:
        if value is None or value == "":
            return value
        if isinstance(value, str):
            return fn(value)
        return [fn(str(v)) for v in value]

    def copy_dataset(self, ds: Any) -> Any:
        """A de-identified deep copy of ``ds`` (the input is left unchanged)."""
        return self.dataset(copy.deepcopy(ds))

    def uid_map(self) -> dict[str, str]:
        """Original -> replacement for every UID mapped so far (keep it private: it re-identifies)."""
        return dict(self._uids)
