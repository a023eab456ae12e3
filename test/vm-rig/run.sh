#!/usr/bin/env bash
# The VM rig: runs the tests this host cannot (memory.max, pids.max and
# cpu.max need the memory, pids and cpu controllers on cgroup2; a hybrid
# host binds them to cgroup v1) in a Debian guest with systemd as PID 1 on
# pure cgroup v2, under qemu, in one boot.
#
#   bash test/vm-rig/run.sh            # from test/all.sh; root
#
# The image is built by build.sh and cached in $SNAKEPIT_VM_CACHE (default
# /var/cache/snakepit/vm-rig) under a directory named after build.sh's hash:
# it is rebuilt when missing or when build.sh changes (~90 s), otherwise a
# run is one boot (~20 s plus the tests under software emulation).
#
# The tests are static test binaries (CGO_ENABLED=0 go test -c) plus the
# snakepit binary, shared with the guest over virtio-9p and copied onto the
# guest's own disk before they run. The guest runs them with
# SNAKEPIT_VM_RIG=1 (a missing controller fails the tests there instead of
# skipping them) and CI=true; their output and exit status come back here.
#
# A guest that stops running is told apart from slow tests: the guest writes
# a heartbeat on its serial console every 10 s, next to the tests' output.
# When the console stays silent for STALL seconds the guest has stopped (one
# CI run sat silent for 30 min: no kernel message, no Go test timeout). The
# rig then asks qemu's monitor where the vCPUs are (monitor.py), prints it,
# and boots once more; a second stall fails. Failed tests, and a guest that
# is still running, are never retried. Inside the guest a watchdog dumps
# every task's state (ps, kernel stacks, sysrq-w) and makes the Go processes
# dump their goroutines if the tests outlive their own timeout.
# Exit status: the tests' status; 125 when the guest gave none.
#
# Environment: ACCEL (tcg|kvm; default kvm only where /dev/kvm works and is
# not kvm_pvm), MEM (MiB, 2048), SMP (2), TIMEOUT (s per boot; the guest watchdog + 300: 900),
# STALL (s, 180), TEST_TIMEOUT (the tests' -test.timeout, 8m),
# SNAKEPIT_BIN (copy this snakepit binary instead of building one),
# SNAKEPIT_VM_TESTS (-test.run pattern, default: all of test/jail).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="$(go env GOPATH)/bin:$PATH"

skip_or_fail() {
  if [ "${CI:-}" = true ]; then echo "vm-rig: FAIL: $*" >&2; exit 1; fi
  echo "vm-rig: SKIP: $*" >&2; exit 0
}

[ "$(id -u)" = 0 ] || skip_or_fail "needs root (mmdebstrap, chroot, mke2fs -d)"

need=()
for tool in qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap cpio:cpio mke2fs:e2fsprogs; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "vm-rig: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || skip_or_fail "cannot install ${need[*]}"
fi

CACHE=${SNAKEPIT_VM_CACHE:-/var/cache/snakepit/vm-rig}
HASH=$(sha256sum test/vm-rig/build.sh | cut -c1-16)
IMG=$CACHE/$HASH
mkdir -p "$CACHE"
(
  # One builder at a time; others wait and then use its image.
  flock 9
  if [ ! -f "$IMG/complete" ]; then
    echo "vm-rig: building the guest image into $IMG (build.sh changed or no image)"
    t0=$(date +%s)
    rm -rf "$IMG.tmp"
    bash test/vm-rig/build.sh "$IMG.tmp" > "$CACHE/build.log" 2>&1 || { tail -30 "$CACHE/build.log" >&2; exit 1; }
    touch "$IMG.tmp/complete"
    rm -rf "$IMG" && mv "$IMG.tmp" "$IMG"
    # Images of older build.sh versions are of no use any more.
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$HASH" -exec rm -rf {} +
    echo "vm-rig: image built in $(( $(date +%s) - t0 )) s"
  fi
) 9>"$CACHE/.lock"

SHARE=$(mktemp -d /tmp/snakepit-vmrig.XXXXXX)
QPID=
cleanup() {
  if [ -n "$QPID" ]; then kill -KILL "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; fi
  rm -rf "$SHARE"
}
trap cleanup EXIT
if [ -n "${SNAKEPIT_BIN:-}" ]; then
  cp "$SNAKEPIT_BIN" "$SHARE/snakepit"   # test/all.sh: setup.sh's static build
  cp "$(dirname "$SNAKEPIT_BIN")/snakepitd" "$SHARE/snakepitd"
else
  CGO_ENABLED=0 go build -o "$SHARE/snakepit" ./cmd/snakepit
  CGO_ENABLED=0 go build -tags snakepitd -o "$SHARE/snakepitd" ./cmd/snakepit
fi
CGO_ENABLED=0 go test -c -o "$SHARE/jail.test" ./test/jail
TEST_TIMEOUT=${TEST_TIMEOUT:-8m}
# The guest watchdog fires 2 min after the Go test timeout should have.
case $TEST_TIMEOUT in
  *m) WATCHDOG=$(( ${TEST_TIMEOUT%m} * 60 + 120 )) ;;
  *s) WATCHDOG=$(( ${TEST_TIMEOUT%s} + 120 )) ;;
  *) echo "vm-rig: TEST_TIMEOUT must be Nm or Ns" >&2; exit 2 ;;
esac
cat > "$SHARE/run.sh" <<EOF
#!/bin/sh
# Runs in the guest as root (rig-run.service), cwd /mnt/host, stdout on the
# share's out.log. Everything also goes to the serial console, which the host
# watches: a guest whose 9p share stopped answering still shows where it was.
con=/dev/ttyS0
# The heartbeat first: the host counts silence from qemu's start.
( while :; do
    echo "vm-rig: heartbeat: up \$(cut -d' ' -f1 /proc/uptime) s, load \$(cut -d' ' -f1-3 /proc/loadavg)" > \$con
    sleep 10
  done ) 2>/dev/null &
hb=\$!
# Off the share: each CLI start would otherwise page its binary in over 9p.
mkdir -p /opt/rig && cp /mnt/host/snakepit /mnt/host/snakepitd /mnt/host/jail.test /opt/rig/ && chmod 755 /opt/rig /opt/rig/*
export SNAKEPIT_VM_RIG=1 CI=true SNAKEPIT_BIN=/opt/rig/snakepit
echo "guest: \$(uname -r); cgroup2 root controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); PID 1: \$(cat /proc/1/comm)" | tee \$con
( sleep $WATCHDOG
  echo "vm-rig: guest watchdog: the tests outlived -test.timeout=$TEST_TIMEOUT; every task:"
  ps -eo pid,ppid,stat,wchan:32,etime,cgroup:64,args
  for s in /proc/[0-9]*/stack; do
    case \$(cut -d' ' -f3 "\${s%stack}stat" 2>/dev/null) in D) echo "== \$s"; cat "\$s";; esac
  done
  echo w > /proc/sysrq-trigger
  for p in \$(pidof jail.test snakepit); do kill -QUIT "\$p"; done
) > \$con 2>&1 &
wd=\$!
cd /tmp
{ /opt/rig/jail.test -test.v -test.count=1 -test.timeout=$TEST_TIMEOUT -test.run '${SNAKEPIT_VM_TESTS:-.}'; echo \$? > /opt/rig/rc; } 2>&1 | tee \$con
kill \$hb \$wd 2>/dev/null
exit \$(cat /opt/rig/rc 2>/dev/null || echo 125)
EOF
chmod +x "$SHARE/run.sh"

ACCEL=${ACCEL:-}
if [ -z "$ACCEL" ]; then
  ACCEL=tcg
  # kvm_pvm exposes /dev/kvm, but qemu -accel kvm hangs on it.
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; fi
fi
# The host waits past the guest watchdog, so its dumps always get out.
TIMEOUT=${TIMEOUT:-$(( WATCHDOG + 300 ))}
STALL=${STALL:-180}

# monitor CMD: qemu's answer to a human-monitor command, or why there is none
# (then qemu itself is stuck, not only the guest).
monitor() {
  timeout 10 python3 test/vm-rig/monitor.py "$SHARE/mon.sock" "$1" 2>&1 ||
    echo "(qemu's monitor gave no answer to '$1' within 10 s)"
}

# boot N: one boot of the guest. Sets RESULT: pass, fail (tests failed, RC
# is their status), stall (the guest stopped running) or noexit (qemu ended,
# or TIMEOUT passed, without an exit status).
boot() {
  rm -f "$SHARE/out.log" "$SHARE/exitcode" "$SHARE/console.log" "$SHARE/mon.sock"
  echo "vm-rig: booting ($ACCEL, ${MEM:-2048} MiB, ${SMP:-2} CPUs; attempt $1)"
  local t0 now last size=-1 s qrc done=
  t0=$(date +%s)
  qemu-system-x86_64 -accel "$ACCEL" -m "${MEM:-2048}" -smp "${SMP:-2}" \
    -nographic -no-reboot -nic none \
    -monitor "unix:$SHARE/mon.sock,server=on,wait=off" \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1 quiet sysrq_always_enabled=1 rig.run=1" \
    -drive file="$IMG/rootfs.ext4",if=virtio,format=raw,cache=unsafe,snapshot=on \
    -virtfs local,path="$SHARE",mount_tag=host,security_model=none,id=host \
    > "$SHARE/console.log" 2>&1 < /dev/null &
  QPID=$!
  last=$t0
  RESULT=
  # Polled: the question is how long the console has been silent, which no
  # event answers.
  while kill -0 "$QPID" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    s=$(stat -c %s "$SHARE/console.log" 2>/dev/null || echo 0)
    if [ "$s" != "$size" ]; then size=$s; last=$now; fi
    if [ -f "$SHARE/exitcode" ]; then
      # The tests are done; a guest that does not power off in time is
      # not waited for.
      [ -n "$done" ] || done=$now
      if [ $(( now - done )) -ge 60 ]; then
        echo "vm-rig: attempt $1: the guest did not power off within 60 s of the tests' end"
        break
      fi
      continue
    fi
    if [ $(( now - last )) -ge "$STALL" ]; then
      RESULT=stall
      echo "vm-rig: attempt $1: the guest's console has been silent for $STALL s (it writes a heartbeat every 10 s): the guest stopped running"
      echo "--- qemu monitor: info status, info cpus, registers"
      monitor "info status"
      monitor "info cpus"
      monitor "info registers -a" | grep -E '^(CPU#|RIP|RSI|CR0)|no answer|rror' || true
      break
    fi
    if [ $(( now - t0 )) -ge "$TIMEOUT" ]; then
      echo "vm-rig: attempt $1: no exit status after $TIMEOUT s, although the guest still writes to its console"
      break
    fi
  done
  kill -KILL "$QPID" 2>/dev/null || true
  qrc=0; wait "$QPID" 2>/dev/null || qrc=$?
  QPID=
  echo "vm-rig: qemu exit $qrc after $(( $(date +%s) - t0 )) s"
  if [ -f "$SHARE/exitcode" ]; then
    RC=$(cat "$SHARE/exitcode")
    cat "$SHARE/out.log" 2>/dev/null || true
    echo "vm-rig: guest tests exit $RC"
    if [ "$RC" = 0 ]; then RESULT=pass; else RESULT=fail; fi
    return 0
  fi
  RESULT=${RESULT:-noexit}
  echo "vm-rig: attempt $1: the guest gave no exit status; its console (test output, heartbeats, dumps), last 80 lines:" >&2
  tr -d '\r' < "$SHARE/console.log" | sed -E 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | grep -av '^$' | tail -80 >&2 || true
}

boot 1
if [ "$RESULT" = stall ]; then
  echo "vm-rig: WARNING: the guest stopped running on attempt 1 (above); booting once more" >&2
  boot 2
  if [ "$RESULT" = pass ]; then echo "vm-rig: WARNING: passed on attempt 2, after the guest stopped on attempt 1" >&2; fi
fi
case $RESULT in
  pass) exit 0 ;;
  fail) exit "$RC" ;;
  *) exit 125 ;;
esac
