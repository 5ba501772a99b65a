"""Save real CTs as training backgrounds that NumPy alone reads (``synth.save_background``).

The lent GPU machine has no SimpleITK or pydicom, so ``scripts/gpu_train.sh`` cannot read the
lesion-free real CTs it inserts lesions into; saved here as ``.npz`` (about 2 MB each), they
travel with the device tool's ``carry``::

    .venv/bin/python scripts/save_backgrounds.py            # -> .cache/backgrounds/*.npz
    run(command="bash scripts/gpu_train.sh", carry=[".cache/backgrounds"], timeout_s=560)

With no CT named, the two lesion-free real CTs the shipped model's training sets used
(``../shared/data/real/totalsegmentator``: ``example_ct``, ``pulmonary_report/ct_cropped``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_ctreport.synth import save_background

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator"
DEFAULT = (REAL / "example_ct.nii.gz", REAL / "pulmonary_report" / "ct_cropped.nii.gz")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ct", nargs="*", type=Path, help="CTs to save (default: the two above)")
    p.add_argument("--out", type=Path, default=ROOT / ".cache" / "backgrounds")
    args = p.parse_args(argv)
    for ct in args.ct or DEFAULT:
        name = ct.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".nrrd")
        saved = save_background(ct, args.out / name)
        sys.stdout.write(f"{ct} -> {saved} ({saved.stat().st_size / 1e6:.1f} MB)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
