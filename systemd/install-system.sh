#!/usr/bin/env bash
# Install ruvllm-edge as a systemd service: the service user, /etc/ruvllm-edge/config.toml,
# the backup directory and the three units, then enable them. Run as root.
#
#   systemd/install-system.sh ROOT VENV                 install (./install.sh --system calls this)
#   systemd/install-system.sh ROOT VENV --render DIR    only write the rendered units to DIR
#
# Environment: RUVLLM_EDGE_USER (default ruvllm-edge), RUVLLM_EDGE_BACKUP_DIR
# (default /var/backups/ruvllm-edge), RUVLLM_EDGE_UNIT_DIR (default /etc/systemd/system).
# Idempotent: an existing config file and user are kept.
set -euo pipefail

die() { printf 'install-system.sh: FAILED: %s\n' "$*" >&2; exit 1; }
note() { printf '  %s\n' "$*"; }

[ $# -ge 2 ] || die "usage: $0 ROOT VENV [--render DIR]"
ROOT=$(cd "$1" && pwd) || die "no such directory: $1"
VENV=$(cd "$2" && pwd) || die "no such directory: $2"
MODE=install
OUT=""
if [ "${3:-}" = "--render" ]; then
  [ -n "${4:-}" ] || die "--render needs a directory"
  MODE=render
  OUT=$4
elif [ -n "${3:-}" ]; then
  die "unknown option $3"
fi

SERVICE_USER=${RUVLLM_EDGE_USER:-ruvllm-edge}
BACKUP_DIR=${RUVLLM_EDGE_BACKUP_DIR:-/var/backups/ruvllm-edge}
UNIT_DIR=${RUVLLM_EDGE_UNIT_DIR:-/etc/systemd/system}
CONF_DIR=/etc/ruvllm-edge
CONF=$CONF_DIR/config.toml
STATE_DIR=/var/lib/ruvllm-edge
PY=$VENV/bin/python
SRC=$ROOT/systemd
UNITS="ruvllm-edge.service ruvllm-edge-backup.service ruvllm-edge-backup.timer"

[ -x "$PY" ] || die "$PY not found; run ./install.sh first"
case "$BACKUP_DIR" in /*) ;; *) die "RUVLLM_EDGE_BACKUP_DIR must be absolute: $BACKUP_DIR" ;; esac
case "$SERVICE_USER" in *[!a-z0-9_-]*|"") die "bad RUVLLM_EDGE_USER: $SERVICE_USER" ;; esac

# The memory limits follow the budget of the config the service will run.
CONFIG_FOR_BUDGET=$ROOT/config/edge.toml
[ -f "$CONF" ] && [ "$MODE" = install ] && CONFIG_FOR_BUDGET=$CONF
BUDGET_MB=$(cd "$ROOT" && "$PY" -c '
import sys
from ruvllm_edge import config
print(config.load(sys.argv[1]).system.max_memory_mb)' "$CONFIG_FOR_BUDGET") \
  || die "cannot read system.max_memory_mb from $CONFIG_FOR_BUDGET"
MEMORY_HIGH="${BUDGET_MB}M"
MEMORY_MAX="$((BUDGET_MB + BUDGET_MB / 4))M"

render() {  # render SRC_FILE DEST_FILE
  sed -e "s|@ROOT@|$ROOT|g" -e "s|@VENV@|$VENV|g" -e "s|@USER@|$SERVICE_USER|g" \
      -e "s|@BACKUP_DIR@|$BACKUP_DIR|g" -e "s|@MEMORY_HIGH@|$MEMORY_HIGH|g" \
      -e "s|@MEMORY_MAX@|$MEMORY_MAX|g" -e "s|@BUDGET_MB@|$BUDGET_MB|g" "$1" > "$2"
  if grep -q '@[A-Z_]*@' "$2"; then die "unreplaced placeholder in $2"; fi
}

# ProtectHome=yes hides /home and /root. If the checkout, the venv or the Python it
# was made from lives there, a drop-in swaps in an empty /home with just those
# paths bound read-only.
home_paths() {
  local base real
  base=$("$PY" -c 'import sys; print(sys.base_prefix)')
  real=$(readlink -f "$PY")
  for p in "$ROOT" "$VENV" "$base" "$(dirname "$(dirname "$real")")"; do
    case "$p" in /home/*|/root|/root/*|/run/user/*) printf '%s\n' "$p" ;; esac
  done | sort -u
}

write_units() {  # write_units DIR
  local dir=$1 u binds
  mkdir -p "$dir"
  for u in $UNITS; do
    render "$SRC/$u" "$dir/$u"
  done
  binds=$(home_paths | paste -sd " " -)
  for u in ruvllm-edge.service ruvllm-edge-backup.service; do
    rm -f "$dir/$u.d/10-home.conf"
    if [ -n "$binds" ]; then
      mkdir -p "$dir/$u.d"
      printf '# Written by install-system.sh: the install lives under a home directory.\n[Service]\nProtectHome=tmpfs\nBindReadOnlyPaths=%s\n' \
        "$binds" > "$dir/$u.d/10-home.conf"
    fi
  done
}

if [ "$MODE" = render ]; then
  write_units "$OUT"
  echo "rendered $UNITS into $OUT (memory budget ${BUDGET_MB} MB: MemoryHigh=$MEMORY_HIGH MemoryMax=$MEMORY_MAX)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (sudo ./install.sh --system)"
command -v systemctl >/dev/null || die "systemctl not found: this system does not use systemd"

echo "service user: $SERVICE_USER"
if ! getent passwd "$SERVICE_USER" >/dev/null; then
  useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "ruvllm-edge daemon" "$SERVICE_USER" \
    || die "useradd $SERVICE_USER failed"
  note "created"
else
  note "exists"
fi

echo "config: $CONF"
install -d -m 0755 "$CONF_DIR"
if [ ! -f "$CONF" ]; then
  tmp=$(mktemp)
  sed -e "s|^dir = \"\"|dir = \"$BACKUP_DIR\"|" "$ROOT/config/edge.toml" > "$tmp"
  install -m 0640 -o root -g "$SERVICE_USER" "$tmp" "$CONF"
  rm -f "$tmp"
  note "written from config/edge.toml (backup.dir = $BACKUP_DIR)"
else
  note "kept (existing file)"
fi
(cd "$ROOT" && "$PY" -m ruvllm_edge.cli validate --config "$CONF" >/dev/null) \
  || die "$CONF does not validate: $PY -m ruvllm_edge.cli validate --config $CONF"

echo "backup dir: $BACKUP_DIR"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$BACKUP_DIR"

for f in smollm2-135m-instruct-q4_1.gguf minilm-l6-int8.onnx minilm-l6-int8.tokenizer.json; do
  [ -r "$ROOT/models/$f" ] || note "WARNING: $ROOT/models/$f is missing: run ./install.sh (it fetches the models)"
done

# The service's own start-up caches (the unit's CacheDirectory= and the same two
# variables): numba kernels and the first-start router for the installed config, so
# the service neither compiles nor trains on its first start. Run as root (the
# service user may not reach a Python under /root or /home outside the unit's
# bind mounts), then handed to the service user. Not fatal: without them the
# first start is slower, not broken.
CACHE_DIR=/var/cache/ruvllm-edge
echo "start-up caches: $CACHE_DIR"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$CACHE_DIR"
if warm_err=$(cd "$ROOT" && env NUMBA_CACHE_DIR="$CACHE_DIR/numba" RUVLLM_EDGE_CACHE="$CACHE_DIR" \
      "$PY" -m ruvllm_edge.cli warm --config "$CONF" --models-dir "$ROOT/models" 2>&1 >/dev/null) \
    && chown -R "$SERVICE_USER:$SERVICE_USER" "$CACHE_DIR"; then
  note "warmed (numba kernels and first-start router)"
else
  printf '%s\n' "$warm_err" | tail -n 5 | sed 's/^/    /'
  note "WARNING: warming failed; the first start compiles and trains instead (retry: sudo ./install.sh --system)"
fi

echo "units: $UNIT_DIR"
write_units "$UNIT_DIR"
if [ -n "$(home_paths)" ]; then
  note "the install is under a home directory: drop-ins bind it read-only ($(home_paths | tr '\n' ' '))"
fi

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now ruvllm-edge.service ruvllm-edge-backup.timer \
    || die "systemctl enable --now failed; see: journalctl -u ruvllm-edge -n 50"
  note "enabled and started: systemctl status ruvllm-edge"
else
  note "systemd is not running here; enable later with: systemctl enable --now ruvllm-edge.service ruvllm-edge-backup.timer"
fi

cat <<EOF

Done. The socket is ipc:///run/ruvllm-edge/ruvllm-edge.sock (mode 0660, group $SERVICE_USER).
Let a user's apps connect:   usermod -aG $SERVICE_USER USERNAME   (then log in again)
Talk to it from a shell:     export RUVLLM_EDGE_ENDPOINT=ipc:///run/ruvllm-edge/ruvllm-edge.sock
Logs:                        journalctl -u ruvllm-edge -f -o cat
EOF
