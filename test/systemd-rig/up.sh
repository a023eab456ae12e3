#!/bin/bash
# Boot a throw-away systemd (system instance) as PID 1 of new
# pid/mount/cgroup/net/uts/ipc namespaces, on an overlay of the host root
# (host files are never written). Adapted from the reference rig
# (../shared/reference/systemd-rig). Root only.
#   STATE=dir     pid files, console log, the guest's cgroup (required)
#   CGNAME=name   host sub-cgroup to create (required; must not exist)
#   BINDS="d ..." host dirs bind-mounted read-write at the same paths inside
#   PREBOOT=file  a script run (with R= the guest root) after the guest's
#                 root is assembled and before systemd starts: it installs
#                 units, so no daemon-reload is needed after boot
# The guest sees a pure cgroup2 hierarchy rooted at a fresh sub-cgroup of
# the host's cgroup2 mount (found by filesystem type, never assumed).
set -eu
: "${STATE:?}" "${CGNAME:?}"
export STATE BINDS=${BINDS:-} SYSD_ARGS=${SYSD_ARGS:-} PREBOOT=${PREBOOT:-}
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then CG2=/sys/fs/cgroup
elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then CG2=/sys/fs/cgroup/unified
else echo "rig: no cgroup2 mount" >&2; exit 1; fi
export CG=$CG2/$CGNAME
mkdir -p "$STATE/scratch"
echo "$CG" > "$STATE/cgroup"
mkdir "$CG"    # fails if a previous run was not cleaned up
cat > "$STATE/init.sh" <<'INIT'
#!/bin/bash
set -eu
if [ "${1:-}" != stage2 ]; then
  # PID 1 of the new pid ns: move into the (empty) guest cgroup, then make
  # it the root of a new cgroup namespace
  echo 0 > "$CG/cgroup.procs"
  exec unshare --cgroup "$0" stage2
fi
W=$STATE/scratch; R=$W/root
mount -t tmpfs -o size=4g,mode=755 sp-rig-scratch "$W"
mkdir -p "$W/upper" "$W/work" "$R"
mount -t overlay sp-rig-root -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$R"
mount -t proc proc "$R/proc"
# /proc/sys read-only: the guest must not change global (non-namespaced)
# sysctls (systemd would raise fs.file-max, sysctl units fs.protected_*)
mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,size=256m tmpfs "$R/run"
mount -t tmpfs -o mode=1777,size=1g tmpfs "$R/tmp"
mount -t tmpfs -o mode=755,size=64k sp-rig-dev "$R/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name ma mi <<<"$n"; mknod -m 666 "$R/dev/$name" c "$ma" "$mi"
done
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
mount -t mqueue mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"; mount --bind "$(tty)" "$R/dev/console"
for d in $BINDS; do mkdir -p "$R$d"; mount --bind "$d" "$R$d"; done
U=$R/etc/systemd/system
cat > "$U/sp-rig.target" <<'UNIT'
[Unit]
Description=minimal target for snakepit's systemd rig
Requires=basic.target
Wants=dbus.socket dbus.service
After=basic.target dbus.service
AllowIsolate=yes
UNIT
for u in systemd-sysctl.service systemd-modules-load.service systemd-binfmt.service \
         systemd-tmpfiles-clean.timer apt-daily.timer apt-daily-upgrade.timer \
         dpkg-db-backup.timer e2scrub_all.timer man-db.timer fstrim.timer logrotate.timer; do
  ln -sf /dev/null "$U/$u"
done
echo sp-rig > "$R/etc/hostname"
if [ -n "$PREBOOT" ]; then R=$R bash "$PREBOOT"; fi
cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot; umount -l /.oldroot; rmdir /.oldroot
exec env -i container=sp-rig PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=sp-rig.target --show-status=no $SYSD_ARGS
INIT
chmod +x "$STATE/init.sh"
# script runs its command through $SHELL -c: bash would exec it, dash (or no
# SHELL) forks it, which put a shell between script and unshare and made the
# search below take unshare for the guest's PID 1 (systemctl then ran outside
# the guest's PID namespace and systemd refused it: ENOTCONN, ENODATA). The
# explicit exec keeps script -> unshare -> systemd with any shell.
( exec setsid script -qfec "exec unshare --pid --fork --kill-child --mount --propagation private --net --uts --ipc $STATE/init.sh" \
    "$STATE/console.log" ) </dev/null >"$STATE/script.log" 2>&1 &
SPID=$!; echo $SPID > "$STATE/script.pid"
UPID=; G=
# The guest's processes appear in a few ms; poll their /proc entries.
for i in $(seq 400); do
  UPID=$(cut -d' ' -f1 /proc/$SPID/task/$SPID/children 2>/dev/null || true)
  [ -n "$UPID" ] && G=$(cut -d' ' -f1 /proc/$UPID/task/$UPID/children 2>/dev/null || true)
  [ -n "$G" ] && [ "$(cat /proc/$G/comm 2>/dev/null)" = systemd ] && break; sleep 0.025
done
[ -n "$G" ] && [ "$(cat /proc/$G/comm 2>/dev/null)" = systemd ] ||
  { echo "rig: guest PID 1 (systemd, a grandchild of script) did not appear"; cat "$STATE/console.log"; exit 1; }
echo "$UPID" > "$STATE/unshare.pid"; echo "$G" > "$STATE/guest.pid"
# 'is-system-running --wait' blocks until boot finished, once systemd
# answers at all (its socket appears a little after PID 1 does).
s=
for i in $(seq 300); do
  a0=$(date +%s%N)
  s=$(timeout 30 nsenter -t "$G" -a systemctl is-system-running --wait 2>"$STATE/isr.err" || true)
  case "$s" in running|degraded) break;; esac
  # A slow attempt is worth a line: on a loaded host one took 25 s
  ms=$(( ($(date +%s%N) - a0) / 1000000 ))
  [ "$ms" -lt 2000 ] || echo "rig: is-system-running took $ms ms: '$s' $(head -c 300 "$STATE/isr.err")" >&2
  kill -0 "$G" 2>/dev/null || { echo "rig: guest died"; cat "$STATE/console.log"; exit 1; }
  sleep 0.05
done
case "$s" in running|degraded) ;; *) echo "rig: guest systemd: '$s'"; cat "$STATE/console.log"; exit 1;; esac
echo "rig: guest systemd $s (host pid of guest PID 1: $G)"
[ "$s" = running ] || nsenter -t "$G" -a systemctl --failed --no-pager
