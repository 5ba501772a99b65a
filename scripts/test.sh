#!/usr/bin/env bash
# The whole test suite, headless (pytest-xvfb starts Xvfb for the viewer tests).
# Installs what is missing first (scripts/setup.sh --no-launch), then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-launch
bash scripts/fetch_real_lesions.sh  # real chest CT with labelled lung cancers (tests skip without)
unset QT_QPA_PLATFORM  # napari's canvas needs a real (virtual) X display, not "offscreen"
.venv/bin/ruff check napari_ctreport tests
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
