"""Findings and analyses: the structured record that boxes, masks and sentences all derive from.

Coordinates are patient LPS millimetres ``(x, y, z)`` (see ``shared/docs/interfaces.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .lexicon import KINDS, SIDES, ZONES, check_term

#: Review states of a finding.
STATUSES: tuple[str, ...] = ("proposed", "accepted", "rejected", "edited", "added")
#: Decimals a finding's lengths (mm) and mean HU, and its volume (ml), are held and stored to.
MEASURE_DECIMALS, VOLUME_DECIMALS = 1, 3


@dataclass
class Finding:
    """One abnormality: what it is, where it is, how big it is.

    Attributes
    ----------
    id
        Stable identifier within a case, e.g. ``"F1"``.
    kind
        One of :data:`~napari_ctreport.report.lexicon.KINDS`.
    side, zone
        Patient side and lung zone (see the lexicon).
    center_lps_mm
        Centre ``(x, y, z)`` in LPS mm.
    bbox_lps_mm
        ``[min corner, max corner]``, each ``(x, y, z)`` LPS mm.
    diameter_mm, short_axis_mm
        Longest axial diameter and the longest diameter perpendicular to it, in the same slice.
    volume_ml, mean_hu
        Volume of the mask and its mean attenuation.
    score
        Model confidence in [0, 1]; 1.0 for ground truth and findings added by a reader.
    label
        Value of this finding's region in the case label map (0 when it has no mask).
    status
        Review state, one of :data:`STATUSES`.
    attributes
        Further descriptors (``shape``: round/lobulated/spiculated, ``solid_diameter_mm``, ...).
    """

    id: str
    kind: str
    side: str
    zone: str
    center_lps_mm: tuple[float, float, float]
    bbox_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    diameter_mm: float
    short_axis_mm: float = 0.0
    volume_ml: float = 0.0
    mean_hu: float = 0.0
    score: float = 1.0
    label: int = 0
    status: str = "proposed"
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_term(self.kind, KINDS, "finding kind")
        check_term(self.side, SIDES, "side")
        check_term(self.zone, ZONES, "zone")
        check_term(self.status, STATUSES, "status")
        self.center_lps_mm = tuple(float(v) for v in self.center_lps_mm)  # type: ignore[assignment]
        lo, hi = self.bbox_lps_mm
        self.bbox_lps_mm = (  # type: ignore[assignment]
            tuple(float(v) for v in lo),
            tuple(float(v) for v in hi),
        )
        for name in ("diameter_mm", "short_axis_mm", "volume_ml", "mean_hu", "score"):
            setattr(self, name, float(getattr(self, name)))
        # measurements held as they are stored (:meth:`to_dict`): a finding and its stored copy
        # (JSON, autosave, case file) then read the same in a report. 18.46 mm was "18 mm" in
        # the findings written from the measurement and, stored as 18.5, "19 mm" in the
        # impression the review wrote from the stored copy
        for name in ("diameter_mm", "short_axis_mm", "mean_hu"):
            setattr(self, name, round(getattr(self, name), MEASURE_DECIMALS))
        self.volume_ml = round(self.volume_ml, VOLUME_DECIMALS)
        self.label = int(self.label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the field names of the analysis schema."""
        d = asdict(self)
        d["center_lps_mm"] = [round(v, 2) for v in self.center_lps_mm]
        d["bbox_lps_mm"] = [[round(v, 2) for v in c] for c in self.bbox_lps_mm]
        for name in ("diameter_mm", "short_axis_mm", "mean_hu"):
            d[name] = round(d[name], MEASURE_DECIMALS)
        d["volume_ml"] = round(d["volume_ml"], VOLUME_DECIMALS)
        d["score"] = round(d["score"], 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        """Build a finding from :meth:`to_dict` output (unknown keys go into ``attributes``)."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        if extra:
            kwargs["attributes"] = {**kwargs.get("attributes", {}), **extra}
        return cls(**kwargs)
