#!/usr/bin/env bash
# Idempotent install of one supported mm stack into a venv, then mmpeft in editable mode.
#
#   bash scripts/setup.sh                        # pinned stack -> .venv (default)
#   MMPEFT_STACK=latest bash scripts/setup.sh    # latest stack -> .venv-latest
#
# Stacks (README "Support matrix"): pinned = requirements/stack.txt (mmcv 2.0.1,
# mmdet 3.1.0, mmseg 1.2.2, mmrotate 1.0.0rc1); latest = requirements/stack-latest.txt
# (mmcv 2.1.0, mmdet 3.3.0, mmseg 1.2.2, no mmrotate). MMPEFT_VENV overrides the venv.
#
# The only slow step is building mmcv with its ops from source (~10-20 min on 2
# cores). The built wheel is cached outside the repo, keyed by the stack's mmcv and
# torch pins, Python and device, so a machine pays for each stack's mmcv once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${MMPEFT_STACK:-pinned}
case $STACK in
  pinned) PIN_FILE=$ROOT/requirements/stack.txt; DEFAULT_VENV=$ROOT/.venv ;;
  latest) PIN_FILE=$ROOT/requirements/stack-latest.txt; DEFAULT_VENV=$ROOT/.venv-latest ;;
  *) echo "[setup] unknown MMPEFT_STACK=$STACK; use 'pinned' (default) or 'latest'" >&2; exit 2 ;;
esac
VENV=${MMPEFT_VENV:-$DEFAULT_VENV}
CACHE=${MMPEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmpeft}
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

# mmcv: build once per (mmcv, torch, python, cpu|cuda) and cache the wheel. The mmcv
# and torch versions come from the stack's pin file, so each stack has its own
# wheel (the pinned stack's path is unchanged, so an existing cache still hits).
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
  # mmcv 2.0.x / 2.1.0 hard-code -std=c++14 (2.1.0 only for old torch, so the sed is
  # a no-op there); torch >= 2.1 headers need C++17.
  sed -i 's/-std=c++14/-std=c++17/' "$BUILD/mmcv-$MMCV/setup.py"
  mkdir -p "$WHEELS.partial"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$WHEELS.partial" "$BUILD/mmcv-$MMCV"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"   # publish only a complete build
fi

"${PIP[@]}" install "$WHEELS"/mmcv-"$MMCV"-*.whl -r "$PIN_FILE" -r "$ROOT/requirements/runtime.txt"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
echo "$STAMP_KEY" > "$STAMP"
echo "[setup] $STACK stack ready: $VENV"
