#!/usr/bin/env bash
# Idempotent install of the pinned mm stack into .venv, then mmpeft in editable mode.
#
# The only slow step is building mmcv 2.0.1 with its ops from source (~9 min on 2
# cores). The built wheel is cached outside the repo, keyed by torch / Python / device,
# so a machine pays for it once. Versions are pinned in requirements/stack.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMPEFT_VENV:-$ROOT/.venv}
CACHE=${MMPEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmpeft}
PIN_FILE=$ROOT/requirements/stack.txt
pin() { sed -n "s/^$1==//p" "$PIN_FILE"; }

STAMP=$VENV/.mmpeft-setup
STAMP_KEY=$(cat "$PIN_FILE" "$ROOT/setup.py" "$0" | sha1sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$STAMP_KEY" ]]; then
  exit 0
fi

PYTHON=${PYTHON:-python3}
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check -q)

TORCH=$(pin torch)
MMCV=$(pin mmcv)
# setuptools: torch needs >=77, mmcv's setup.py needs pkg_resources (<81).
# opencv headless before the mmcv build: mmcv's setup.py picks the opencv flavour
# already installed for its wheel's requirements (no libGL on servers).
"${PIP[@]}" install "torch==$TORCH" "numpy==$(pin numpy)" "setuptools>=77.0.3,<81" wheel ninja \
  -r <(grep '^opencv' "$ROOT/requirements/runtime.txt")

# mmcv: build once per (mmcv, torch, python, cpu|cuda) and cache the wheel.
if "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    && command -v nvcc >/dev/null; then
  DEVICE=cuda; export FORCE_CUDA=1
else
  DEVICE=cpu
fi
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEELS=$CACHE/wheels/mmcv$MMCV-torch$TORCH-$PYTAG-$DEVICE
if ! ls "$WHEELS"/mmcv-"$MMCV"-*.whl >/dev/null 2>&1; then
  echo "[setup] building mmcv $MMCV with ops ($DEVICE) into $WHEELS; this happens once per machine"
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" "mmcv==$MMCV"
  tar xzf "$BUILD/mmcv-$MMCV.tar.gz" -C "$BUILD"
  # mmcv 2.0.1 hard-codes -std=c++14; torch >= 2.1 headers need C++17.
  sed -i 's/-std=c++14/-std=c++17/' "$BUILD/mmcv-$MMCV/setup.py"
  mkdir -p "$WHEELS.partial"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$WHEELS.partial" "$BUILD/mmcv-$MMCV"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"   # publish only a complete build
fi

"${PIP[@]}" install "$WHEELS"/mmcv-"$MMCV"-*.whl -r "$PIN_FILE" -r "$ROOT/requirements/runtime.txt"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
echo "$STAMP_KEY" > "$STAMP"
echo "[setup] environment ready: $VENV"
