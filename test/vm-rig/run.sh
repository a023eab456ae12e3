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
# snakepit binary, shared with the guest over virtio-9p. The guest runs them
# with SNAKEPIT_VM_RIG=1 (a missing controller fails the tests there
# instead of skipping them) and CI=true; their output and exit status come
# back here. Exit status: the tests' status; 125 when the guest gave none.
#
# Environment: ACCEL (tcg|kvm; default kvm only where /dev/kvm works and is
# not kvm_pvm), MEM (MiB, 2048), SMP (2), TIMEOUT (s, 1800),
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
trap 'rm -rf "$SHARE"' EXIT
CGO_ENABLED=0 go build -o "$SHARE/snakepit" ./cmd/snakepit
CGO_ENABLED=0 go test -c -o "$SHARE/jail.test" ./test/jail
cat > "$SHARE/run.sh" <<EOF
#!/bin/sh
# Runs in the guest as root (rig-run.service), cwd /mnt/host.
export SNAKEPIT_VM_RIG=1 CI=true SNAKEPIT_BIN=/mnt/host/snakepit
echo "guest: \$(uname -r); cgroup2 root controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); PID 1: \$(cat /proc/1/comm)"
cd /tmp
/mnt/host/jail.test -test.v -test.count=1 -test.timeout=20m -test.run '${SNAKEPIT_VM_TESTS:-.}'
EOF
chmod +x "$SHARE/run.sh"

ACCEL=${ACCEL:-}
if [ -z "$ACCEL" ]; then
  ACCEL=tcg
  # kvm_pvm exposes /dev/kvm, but qemu -accel kvm hangs on it.
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; fi
fi
echo "vm-rig: booting ($ACCEL, ${MEM:-2048} MiB, ${SMP:-2} CPUs)"
t0=$(date +%s%N)
set +e
timeout "${TIMEOUT:-1800}" qemu-system-x86_64 -accel "$ACCEL" -m "${MEM:-2048}" -smp "${SMP:-2}" \
  -nographic -no-reboot -nic none \
  -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1 quiet rig.run=1" \
  -drive file="$IMG/rootfs.ext4",if=virtio,format=raw,cache=unsafe,snapshot=on \
  -virtfs local,path="$SHARE",mount_tag=host,security_model=none,id=host \
  > "$SHARE/console.log" 2>&1
qrc=$?
set -e
echo "vm-rig: qemu exit $qrc after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
cat "$SHARE/out.log" 2>/dev/null || true
if [ -f "$SHARE/exitcode" ]; then
  rc=$(cat "$SHARE/exitcode")
  echo "vm-rig: guest tests exit $rc"
  exit "$rc"
fi
echo "vm-rig: the guest gave no exit status; last console lines:" >&2
tail -40 "$SHARE/console.log" >&2
exit 125
