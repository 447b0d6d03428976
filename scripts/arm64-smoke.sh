#!/usr/bin/env bash
# arm64-smoke.sh - run the memory and router unit tests on emulated arm64 (Pi readiness).
#
# Why: ruvllm-edge targets Raspberry Pi-class boards, but CI and development run on
# x86_64. This script proves that every runtime dependency except llama-cpp-python
# installs from aarch64/cp311 wheels alone (no compiler), and that the memory and
# router code (numba kernels, int8 ONNX embedder, sqlean + sqlite-vec) passes its unit
# tests on aarch64, under qemu-user emulation in a Debian bookworm root (Python 3.11,
# the Python of Raspberry Pi OS bookworm).
#
# Steps (each one cached and skipped when already done):
#   1. host: debootstrap + qemu-user-static (+ binfmt-support) from Debian's apt;
#      the qemu-aarch64 binfmt handler is enabled for the run and disabled again after
#      if this script enabled it.
#   2. debootstrap an arm64 bookworm root (minbase + python3-venv) from the Debian
#      mirror apt is configured with; a stamp file marks it complete.
#   3. host: pip download the project's runtime wheels for manylinux aarch64 / cp311
#      (only binary wheels; llama-cpp-python is left out: it has no wheel and compiles
#      from source) plus the test tools, into the root's /opt/wheelhouse.
#   4. root: python3 -m venv + pip install --no-index from that wheelhouse (offline).
#   5. root: copy the project's tracked files and the required models, then run the
#      selected tests as an unprivileged user. The exit code is pytest's.
#
# Every mount the chroot needs (a fresh proc, a small tmpfs /dev, /dev/shm) is made in a
# private mount namespace (unshare -m) and unmounted on exit; nothing of the host's
# /tmp, /run, /proc or /dev is bound into the root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ROOT=${ARM64_ROOT:-/var/tmp/arm64-root}
SUITE=bookworm
MIRROR=""
REBUILD=0
INSTALL_HOST_DEPS=0
CONSTRAINTS=""
MODELS_SRC=${RUVLLM_EDGE_MODELS:-$REPO/models}
HOST_PYTHON=${PYTHON:-python3}
NICE=(nice -n 15)
SMOKE_USER=smoke
VENV=/opt/smoke-venv
WHEELHOUSE=/opt/wheelhouse
PROJECT=/opt/ruvllm-edge
MODELS=/opt/models
# Memory + router tests that need neither llama_cpp nor a daemon (tests/conftest.py
# imports llama_cpp only lazily, inside ruvllm_edge.inference, so it loads without it).
DEFAULT_TESTS=(
    tests/test_memory_bitindex.py
    tests/test_memory_store.py
    tests/test_memory_retrieval.py
    tests/test_memory_index_sync.py
    tests/test_db.py
    tests/test_embedding.py
    tests/test_router_fastgrnn.py
    tests/test_router_features.py
    tests/test_router_policy.py
)
TESTS=()
PYTEST_EXTRA=()

usage() {
    cat <<EOF
Usage: sudo scripts/arm64-smoke.sh [options] [-- extra pytest args]

Builds (once, cached) an arm64 Debian $SUITE root with debootstrap and qemu-user-static,
installs ruvllm-edge's runtime dependencies from aarch64/cp311 wheels only (without
llama-cpp-python, which has no wheel), and runs the memory and router unit tests in it.
Exit code: pytest's (0 = all passed); 2 = setup error.

Options:
  --root DIR             root directory (default: \$ARM64_ROOT or /var/tmp/arm64-root;
                         must not be under /tmp or inside the repository)
  --mirror URL           Debian mirror (default: the one apt uses, from /etc/apt/sources.list*)
  --rebuild              delete the root and start over (debootstrap, wheels, venv)
  --install-host-deps    apt-get install debootstrap qemu-user-static binfmt-support if missing
  --constraints FILE     pip constraints for the wheel download (e.g. a host 'pip freeze'),
                         to test the exact versions the host runs; default: newest wheels
  --models DIR           models directory (default: \$RUVLLM_EDGE_MODELS or <repo>/models)
  --tests "FILES"        test files to run, relative to the repo (default: ${DEFAULT_TESTS[*]})
  -h, --help             this help

Needs root (debootstrap, chroot, mounts), the Debian mirror and PyPI; nothing else from
the network. Heavy steps run under 'nice -n 15'. First run: debootstrap + wheel download
+ venv install; later runs only copy the project and run the tests.
EOF
}

log() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'arm64-smoke: error: %s\n' "$*" >&2; exit 2; }

# --- internal: runs inside 'unshare -m' to mount what the chroot needs and enter it ----
if [[ ${1:-} == __enter ]]; then
    shift
    root=$1 userspec=$2
    shift 2
    mounted=()
    cleanup_mounts() {
        local i
        for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
            umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
        done
    }
    trap cleanup_mounts EXIT
    mount --make-rprivate / # belt and braces: nothing below propagates to the host
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mounted+=("$root/proc")
    mount -t tmpfs -o nosuid,mode=0755,size=1m tmpfs "$root/dev"
    mounted+=("$root/dev")
    for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r name major minor <<<"$node"
        mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
    done
    ln -s /proc/self/fd "$root/dev/fd"
    ln -s /proc/self/fd/0 "$root/dev/stdin"
    ln -s /proc/self/fd/1 "$root/dev/stdout"
    ln -s /proc/self/fd/2 "$root/dev/stderr"
    mkdir "$root/dev/shm" "$root/dev/pts"
    mount -t tmpfs -o nosuid,nodev,mode=1777,size=64m tmpfs "$root/dev/shm"
    mounted+=("$root/dev/shm")
    set +e
    chroot --userspec="$userspec" "$root" "$@"
    rc=$?
    exit "$rc"
fi

while [[ $# -gt 0 ]]; do
    case $1 in
        --root) ROOT=$2; shift 2 ;;
        --mirror) MIRROR=$2; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        --install-host-deps) INSTALL_HOST_DEPS=1; shift ;;
        --constraints) CONSTRAINTS=$(realpath "$2"); shift 2 ;;
        --models) MODELS_SRC=$2; shift 2 ;;
        --tests) read -r -a TESTS <<<"$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PYTEST_EXTRA=("$@"); break ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ ${#TESTS[@]} -gt 0 ]] || TESTS=("${DEFAULT_TESTS[@]}")

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot and mounts need it)"
ROOT=$(realpath -m "$ROOT")
case $ROOT/ in
    /tmp/*|/run/*|/proc/*|/dev/*|/sys/*|/) die "refusing root dir $ROOT (use /var/tmp/... or /work/...)" ;;
    "$REPO"/*) die "refusing root dir $ROOT inside the repository" ;;
esac
for t in "${TESTS[@]}"; do [[ -f $REPO/$t ]] || die "no such test file: $REPO/$t"; done
[[ -d $MODELS_SRC ]] || die "models directory $MODELS_SRC not found (run ./install.sh or pass --models)"

START_S=$(date +%s)
HOST_ARCH=$(uname -m)

# Anything mounted under the root (by a crashed run) must never be deleted through.
mounts_under_root() { awk -v r="$ROOT/" '{ if (index($5 "/", r) == 1) print $5 }' /proc/self/mountinfo; }

# --- 1. host tools and binfmt ------------------------------------------------------------
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
if [[ $HOST_ARCH != aarch64 ]]; then
    [[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P || -x /usr/bin/qemu-aarch64-static ]] \
        || need_pkgs+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need_pkgs+=(binfmt-support)
fi
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
    if [[ $INSTALL_HOST_DEPS -eq 1 ]]; then
        log "installing host packages: ${need_pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y --no-install-recommends "${need_pkgs[@]}"
    else
        die "missing host packages: ${need_pkgs[*]} (apt-get install ${need_pkgs[*]}, or pass --install-host-deps)"
    fi
fi

BINFMT_DIR=/proc/sys/fs/binfmt_misc
WE_MOUNTED_BINFMT=0
WE_ENABLED_QEMU=0
cleanup() {
    local rc=$?
    if [[ $WE_ENABLED_QEMU -eq 1 ]]; then
        update-binfmts --disable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    if [[ $WE_MOUNTED_BINFMT -eq 1 ]]; then
        umount "$BINFMT_DIR" 2>/dev/null || true
    fi
    local left
    left=$(mounts_under_root || true)
    [[ -z $left ]] || printf 'arm64-smoke: warning: still mounted under %s:\n%s\n' "$ROOT" "$left" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $HOST_ARCH != aarch64 ]]; then
    if [[ ! -e $BINFMT_DIR/status ]]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
        WE_MOUNTED_BINFMT=1
    fi
    if [[ ! -e $BINFMT_DIR/qemu-aarch64 ]]; then
        update-binfmts --enable qemu-aarch64
        WE_ENABLED_QEMU=1
    fi
    grep -q '^enabled' "$BINFMT_DIR/qemu-aarch64" || die "qemu-aarch64 binfmt handler is not enabled"
    # fix_binary (flag F) keeps the interpreter open, so the root needs no qemu copy.
    grep -q '^flags:.*F' "$BINFMT_DIR/qemu-aarch64" \
        || die "qemu-aarch64 binfmt handler lacks the F (fix binary) flag; re-register it with update-binfmts"
fi

# Run a command in the root, as $1 (a chroot --userspec), in a private mount namespace.
in_root() {
    local userspec=$1
    shift
    "${NICE[@]}" unshare --mount --propagation private -- "$SCRIPT_DIR/arm64-smoke.sh" __enter \
        "$ROOT" "$userspec" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
}

# --- 2. the arm64 root -------------------------------------------------------------------
STAMP=$ROOT/.arm64-smoke-root
remove_root() {
    [[ -z $(mounts_under_root) ]] || die "something is still mounted under $ROOT; unmount it first"
    log "removing $ROOT"
    rm -rf --one-file-system "$ROOT"
}
if [[ $REBUILD -eq 1 && -e $ROOT ]]; then remove_root; fi
if [[ -f $STAMP && $(cat "$STAMP") == "$SUITE arm64 ok" ]]; then
    log "arm64 $SUITE root $ROOT is complete (cached); skipping debootstrap"
else
    if [[ -e $ROOT ]]; then
        log "$ROOT exists but is incomplete (no stamp): rebuilding it"
        remove_root
    fi
    if [[ -z $MIRROR ]]; then
        # The deb822 or one-line source that carries the bookworm main suite.
        MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '/^URIs:/ { u=$2 } /^Suites:.*(^| )'"$SUITE"'( |$)/ && u ~ /debian\/?$/ { print u; exit }
                   /^deb / && $3 == "'"$SUITE"'" && $2 ~ /debian\/?$/ { print $2; exit }' || true)
        [[ -n $MIRROR ]] || die "no Debian $SUITE mirror found in /etc/apt/sources.list*; pass --mirror"
    fi
    log "debootstrap arm64 $SUITE from $MIRROR into $ROOT (one-off, several minutes under qemu)"
    mkdir -p "$ROOT"
    # debootstrap mounts proc/sys in the target itself: keep that in a private namespace.
    "${NICE[@]}" unshare --mount --propagation private -- \
        debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv \
        "$SUITE" "$ROOT" "$MIRROR" \
        || die "debootstrap failed (see $ROOT/debootstrap/debootstrap.log)"
    chroot "$ROOT" /usr/sbin/useradd --create-home --shell /bin/sh "$SMOKE_USER"
    echo "$SUITE arm64 ok" >"$STAMP"
fi
id_in_root() { awk -F: -v u="$SMOKE_USER" '$1 == u { print $3 ":" $4 }' "$ROOT/etc/passwd"; }
SMOKE_IDS=$(id_in_root)
[[ -n $SMOKE_IDS ]] || die "user $SMOKE_USER missing in $ROOT; rerun with --rebuild"
ROOT_PY=$(in_root 0:0 /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), "%d.%d" % sys.version_info[:2])')
[[ $ROOT_PY == "aarch64 3.11" ]] || die "root python is '$ROOT_PY', expected 'aarch64 3.11'"
log "root python: $ROOT_PY ($(in_root 0:0 /usr/bin/python3 -V))"

# --- 3. wheels for aarch64 / cp311, downloaded on the host ---------------------------------
WH=$ROOT$WHEELHOUSE
mkdir -p "$WH"
# Runtime deps from pyproject.toml minus llama-cpp-python, plus the test tools (dev extras
# minus matplotlib, which only draws benchmark charts).
"$HOST_PYTHON" - "$REPO/pyproject.toml" >"$WH/requirements.txt.new" <<'EOF'
import re, sys, tomllib
proj = tomllib.load(open(sys.argv[1], "rb"))["project"]
name = lambda r: re.split(r"[<>=!~\[; ]", r, 1)[0].lower().replace("_", "-")
reqs = [r for r in proj["dependencies"] if name(r) != "llama-cpp-python"]
reqs += [r for r in proj["optional-dependencies"]["dev"] if name(r) != "matplotlib"]
print("\n".join(reqs))
EOF
mv "$WH/requirements.txt.new" "$WH/requirements.txt"
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done # glibc 2.36
PIP_ARGS=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 "${PLATFORMS[@]}")
[[ -z $CONSTRAINTS ]] || cp "$CONSTRAINTS" "$WH/constraints.txt"
[[ -n $CONSTRAINTS ]] || : >"$WH/constraints.txt"
WH_KEY=$(cat "$WH/requirements.txt" "$WH/constraints.txt" <(echo "${PIP_ARGS[*]}") | sha256sum | cut -d' ' -f1)
if [[ -f $WH/.stamp && $(cat "$WH/.stamp") == "$WH_KEY" ]]; then
    log "wheelhouse is up to date (cached)"
else
    log "downloading aarch64/cp311 wheels (binary only) into $WH"
    find "$WH" -name '*.whl' -delete
    "${NICE[@]}" "$HOST_PYTHON" -m pip download --disable-pip-version-check --dest "$WH" \
        "${PIP_ARGS[@]}" -r "$WH/requirements.txt" -c "$WH/constraints.txt" \
        || die "pip download failed: some dependency has no aarch64 cp311 wheel (see above)"
    echo "$WH_KEY" >"$WH/.stamp"
fi

# --- 4. the venv in the root, installed offline ------------------------------------------
VENV_KEY=$WH_KEY
if [[ -f $ROOT$VENV/.stamp && $(cat "$ROOT$VENV/.stamp") == "$VENV_KEY" ]]; then
    log "venv $VENV is up to date (cached)"
else
    log "creating $VENV in the root and installing the wheels offline (slow under qemu)"
    rm -rf --one-file-system "${ROOT:?}$VENV"
    in_root 0:0 /usr/bin/python3 -m venv "$VENV"
    in_root 0:0 "$VENV/bin/pip" install --disable-pip-version-check --no-index \
        --find-links "$WHEELHOUSE" -r "$WHEELHOUSE/requirements.txt" -c "$WHEELHOUSE/constraints.txt" \
        || die "offline pip install in the root failed"
    echo "$VENV_KEY" >"$ROOT$VENV/.stamp"
fi

# --- 5. project, models, tests -------------------------------------------------------------
log "copying the project's tracked files into $PROJECT"
rm -rf --one-file-system "${ROOT:?}$PROJECT"
mkdir -p "$ROOT$PROJECT"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    # Tracked files as they are in the working tree (uncommitted edits included).
    (cd "$REPO" && git ls-files -z | tar --null --no-recursion -T - -cf - 2>/dev/null) | tar -xf - -C "$ROOT$PROJECT"
    COMMIT=$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- || echo "+dirty")
else
    tar -C "$REPO" --exclude=.git --exclude=models --exclude=.venv --exclude=__pycache__ -cf - . | tar -xf - -C "$ROOT$PROJECT"
    COMMIT=unknown
fi
# Some tests open <repo>/models directly, others honour RUVLLM_EDGE_MODELS: serve both.
rm -rf "${ROOT:?}$PROJECT/models"
chown -R "$SMOKE_IDS" "$ROOT$PROJECT"
ln -s "$MODELS" "$ROOT$PROJECT/models"

ROOT_ENV=(HOME=/home/$SMOKE_USER PYTHONPATH=$PROJECT RUVLLM_EDGE_MODELS=$MODELS
          NUMBA_CACHE_DIR=/home/$SMOKE_USER/.cache/numba PYTHONDONTWRITEBYTECODE=1)
# The required model files, named by the project's own catalogue.
REQUIRED=$(in_root "$SMOKE_IDS" /usr/bin/env "${ROOT_ENV[@]}" "$VENV/bin/python" -c '
from pathlib import Path
from ruvllm_edge import models as m
print(" ".join(m.path_of(n, Path(".")).name for n in m.REQUIRED))')
mkdir -p "$ROOT$MODELS"
for f in $REQUIRED; do
    src=$MODELS_SRC/$f dst=$ROOT$MODELS/$f
    [[ -f $src ]] || die "model file $src missing (run ./install.sh or pass --models)"
    if [[ ! -f $dst || $(stat -c %s "$src") != $(stat -c %s "$dst") || $src -nt $dst ]]; then
        # A hard link costs nothing when the root is on the same filesystem; else copy.
        ln -f "$(realpath "$src")" "$dst" 2>/dev/null || cp -f "$src" "$dst"
    fi
done
log "models: $REQUIRED"

log "environment in the root"
in_root "$SMOKE_IDS" /usr/bin/env "${ROOT_ENV[@]}" "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, importlib.util, platform, sys
print("machine", platform.machine(), "python", sys.version.split()[0])
for d in ("numpy", "numba", "llvmlite", "onnxruntime", "tokenizers", "sqlean.py", "sqlite-vec",
          "pyzmq", "msgpack", "psutil", "prometheus_client", "pytest", "hypothesis"):
    print(f"  {d:18} {md.version(d)}")
print("  llama_cpp          " + ("INSTALLED (unexpected)" if importlib.util.find_spec("llama_cpp")
                                 else "absent (no aarch64 wheel; not tested here)"))
EOF

log "running pytest on aarch64 (project $COMMIT): ${TESTS[*]}"
TEST_START_S=$(date +%s)
set +e
in_root "$SMOKE_IDS" /usr/bin/env "${ROOT_ENV[@]}" /bin/sh -c 'cd "$0" && exec "$@"' "$PROJECT" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=10 "${TESTS[@]}" "${PYTEST_EXTRA[@]}"
RC=$?
set -e
END_S=$(date +%s)
log "pytest exit code $RC; tests took $((END_S - TEST_START_S)) s, the whole run $((END_S - START_S)) s"
exit "$RC"
