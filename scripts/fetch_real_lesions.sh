#!/usr/bin/env bash
# Real chest CT with real, labelled lung cancers, for the tests and `ctreport evaluate`:
# pyradiomics' test cases lung1 and lung2 (two 5 mm chest CTs of the NSCLC-Radiomics collection,
# each with its tumour's segmentation), from the pyradiomics 3.0.1 source package on PyPI.
# Writes .cache/real_lesions/{lung1,lung2}_{image,label}.nrrd; nothing in the package needs them.
# Exits 0 with a warning when the package index cannot be reached (the tests that need the files
# then skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/real_lesions
FILES=(lung1_image.nrrd lung1_label.nrrd lung2_image.nrrd lung2_label.nrrd)
SUMS="379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed  lung1_image.nrrd
e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a  lung1_label.nrrd
aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651  lung2_image.nrrd
cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a  lung2_label.nrrd"
have=1
for f in "${FILES[@]}"; do [ -s "$DEST/$f" ] || have=0; done
[ "$have" = 1 ] && exit 0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# --no-build-isolation: pip reads the source package's metadata with the venv's numpy
if ! .venv/bin/python -m pip download -q --no-deps --no-build-isolation -d "$TMP" \
    pyradiomics==3.0.1 >"$TMP/log" 2>&1; then
  echo "[fetch_real_lesions] could not download pyradiomics 3.0.1; real-lesion tests will skip" >&2
  tail -n 3 "$TMP/log" >&2
  exit 0
fi
mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  tar -xzf "$TMP"/pyradiomics-3.0.1.tar.gz -O "pyradiomics-3.0.1/data/$f" >"$DEST/$f.part"
  mv "$DEST/$f.part" "$DEST/$f"
done
if ! (cd "$DEST" && sha256sum --quiet -c - <<<"$SUMS"); then
  echo "[fetch_real_lesions] checksum mismatch: files removed; real-lesion tests will skip" >&2
  rm -f "${FILES[@]/#/$DEST/}"
  exit 0
fi
echo "[fetch_real_lesions] wrote ${FILES[*]} to $DEST"
