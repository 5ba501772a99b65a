#!/usr/bin/env bash
# One command to install napari-ctreport and open it:
#   bash scripts/setup.sh            system packages + .venv + napari with the plugin and the sample CT
#   bash scripts/setup.sh --no-launch   install only (what the test command uses)
# Idempotent: a second run checks what is there and installs nothing new (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

LAUNCH=1
for arg in "$@"; do
  case "$arg" in
    --no-launch) LAUNCH=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages: Xvfb and the X/GL libraries Qt 6 and napari's canvas need.
APT_PKGS=(xvfb xauth poppler-utils libgl1 libegl1 libglib2.0-0 libdbus-1-3 libfontconfig1 libxkbcommon-x11-0
          libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0
          libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0)
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then APT_PKGS+=(python3-venv); fi
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtual environment.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp_now=$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.ctreport-setup 2>/dev/null || true)" != "$stamp_now" ]; then
  $VPY -m pip install -q --upgrade pip
  # torch + torchvision must be a matched pair (timm imports torchvision). These releases run on
  # CPU everywhere and on CUDA GPUs; on aarch64 PyPI has CPU builds of an older matched pair.
  case "$(uname -m)" in
    aarch64|arm64) TORCH_PAIR=("torch==2.9.1" "torchvision==0.24.1") ;;
    *) TORCH_PAIR=("torch==2.14.1" "torchvision==0.29.1") ;;
  esac
  if [ -n "${CTREPORT_TORCH:-}" ]; then read -r -a TORCH_PAIR <<<"$CTREPORT_TORCH"; fi
  if ! $VPY -c 'import torch, torchvision' >/dev/null 2>&1; then
    # PyPI's x86_64 torch is a CUDA build: about 5.5 GB installed, plus its wheels while pip
    # unpacks them. Say so up front rather than fail half-way with "No space left on device".
    need_gb=1; case "${TORCH_PAIR[0]}" in torch==2.14*) need_gb=8 ;; esac
    free_gb=$(( $(df -Pk .venv | awk 'NR==2 {print $4}') / 1048576 ))
    if [ "$free_gb" -lt "$need_gb" ] && [ -z "${CTREPORT_SKIP_DISK_CHECK:-}" ]; then
      echo "setup.sh: ${TORCH_PAIR[*]} needs about $need_gb GB free on the disk of $(pwd)/.venv;" \
           "only $free_gb GB is free. Free some space (or set CTREPORT_SKIP_DISK_CHECK=1 to try anyway)." >&2
      exit 1
    fi
    say "installing ${TORCH_PAIR[*]}"
    $VPY -m pip install -q --no-cache-dir "${TORCH_PAIR[@]}"
  fi
  say "installing napari-ctreport and its dependencies (PyQt6 as the Qt binding)"
  $VPY -m pip install -q -e ".[testing,qt]"
  # triton comes with torch's Linux wheels but only serves torch.compile, which we do not use.
  # Its bundled LLVM segfaults when loaded into a process that already has Mesa's LLVM (software
  # or AMD OpenGL, Xvfb): napari first, then `import torch._dynamo` (transformers does) crashes.
  if $VPY -m pip show -q triton >/dev/null 2>&1; then
    say "removing triton (unused; crashes next to Mesa's LLVM)"
    $VPY -m pip uninstall -q -y triton
  fi
  echo "$stamp_now" > .venv/.ctreport-setup
else
  say ".venv is up to date"
fi

# 3. Open napari with the plugin docked and the sample chest CT loaded.
if [ "$LAUNCH" = 1 ]; then
  if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
    say "starting napari"
    exec .venv/bin/ctreport-viewer
  else
    say "no display here. On a desktop run: .venv/bin/ctreport-viewer [CT]"
    say "or take a screenshot headless: xvfb-run -a .venv/bin/ctreport-viewer --screenshot shot.png"
  fi
fi
