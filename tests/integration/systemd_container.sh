#!/usr/bin/env bash
# A throwaway root for booting a real systemd (tests/integration/test_systemd_boot.py).
#
#   unshare --mount --pid --fork --uts --ipc --net --cgroup --propagation private \
#     systemd_container.sh BASE COMMAND...
#
# Runs as PID 1 of the new namespaces: mounts a tmpfs on BASE (a host directory),
# an overlay of / over it (all writes land in that tmpfs), fresh /proc, a
# read-only /sys with this cgroup namespace's cgroup2, a /dev with only the pseudo
# devices, and FRESH EMPTY tmpfs on /tmp, /run and /var/tmp; pivots into it,
# detaches the host's tree, masks $MASK units and execs COMMAND (systemd).
# Booting systemd over the host's own root would let systemd-tmpfiles empty the
# host's /tmp; here it only ever sees these tmpfs.
#
# Environment: MASK (units linked to /dev/null), CONSOLE (a file bound on
# /dev/console; default /dev/null).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BASE COMMAND..." >&2; exit 2; }
BASE=$1
shift
[ "$$" = 1 ] || { echo "$0: not PID 1 of a new pid namespace (run it under unshare --fork)" >&2; exit 90; }
# Nothing mounted from here on may propagate back to the host. (-n everywhere:
# mount(8) would otherwise keep notes in the host's /run/mount.)
mount -n --make-rprivate /

mount -n -t tmpfs -o mode=0755,size=2g throwaway "$BASE"
mkdir "$BASE/upper" "$BASE/work" "$BASE/root"
mount -n -t overlay overlay -o "lowerdir=/,upperdir=$BASE/upper,workdir=$BASE/work" "$BASE/root"
R=$BASE/root

# Kernel interfaces: this pid namespace's /proc with /proc/sys read-only (no sysctl
# reaches the host kernel), a read-only /sys (no udev triggers, no pstore), and
# the cgroup2 tree rooted at this cgroup namespace.
mount -n -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -n --bind "$R/proc/sys" "$R/proc/sys"
mount -n -o remount,bind,ro "$R/proc/sys"
[ ! -e "$R/proc/sysrq-trigger" ] || mount -n --bind /dev/null "$R/proc/sysrq-trigger"
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

# /dev: the pseudo devices only (no disks), a private devpts.
mount -n -t tmpfs -o mode=0755,nosuid dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"
  mount -n --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
mount -n -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
touch "$R/dev/console"
mount -n --bind "${CONSOLE:-/dev/null}" "$R/dev/console"

# What systemd-tmpfiles cleans: fresh and empty.
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
mount -n -t tmpfs -o mode=0755,nosuid,nodev run "$R/run"
mount -n -t tmpfs -o mode=1777,nosuid,nodev vartmp "$R/var/tmp"

# Switch root and detach the host's tree.
mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
cd /
umount -n -l /.oldroot
rmdir /.oldroot
# A container manager's job (systemd leaves propagation alone in a container):
# shared, so that a mount made later (the "USB stick") reaches running services.
mount -n --make-rshared /

for u in ${MASK:-}; do
  ln -sf /dev/null "/etc/systemd/system/$u"
done
exec "$@"
