#!/bin/bash
# The systemd rig: boots a real systemd as PID 1 in fresh namespaces
# (up.sh) with the snakepit .deb installed (packaging/deb.sh, preboot.sh),
# then runs guest.sh inside it: the packaged unit as a Type=notify
# service with Delegate=yes, the API, systemctl stop / kill, a restart with
# gc, and a daemon started by hand that asks for its own transient scope.
# Always tears down (trap), leaving no cgroup and no process.
#   SNAKEPIT_BIN=path   use this binary instead of building one
# Root only: skipped elsewhere, a failure under CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."
RIG=test/systemd-rig
skip() { if [ "${CI:-}" = true ]; then echo "systemd rig: FAIL: $*" >&2; exit 1; fi; echo "systemd rig: skipped: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root"
# What the guest runs (systemd, dbus) and what guest.sh uses (curl, ps),
# from Debian's packages when missing; unshare/nsenter/script are in
# util-linux and bsdutils, which Debian always has.
need=()
[ -x /lib/systemd/systemd ] || need+=(systemd)
[ -x /usr/bin/dbus-daemon ] || need+=(dbus)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  echo "systemd rig: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || skip "cannot install ${need[*]}"
fi
for t in unshare nsenter script curl; do command -v $t >/dev/null || skip "needs $t"; done

start=$(date +%s%N)
export STATE CGNAME
STATE=$(mktemp -d /tmp/snakepit-rig.XXXXXX)
CGNAME=sp-rig-$$
SHARE=$STATE/share
mkdir -p "$SHARE"
trap 'bash "$RIG/down.sh"' EXIT
# snakepit (the default build) and snakepitd (-tags snakepitd: the daemon),
# side by side (`snakepit daemon` execs snakepitd), packaged as the .deb
# that the guest installs (packaging/deb.sh): the daemon runs from the
# package, so the package is proven, not just built.
if [ -n "${SNAKEPIT_BIN:-}" ]; then
  bindir=$(dirname "$SNAKEPIT_BIN")
  [ "$(basename "$SNAKEPIT_BIN")" = snakepit ] || { echo "systemd rig: SNAKEPIT_BIN must name a file called snakepit (deb.sh takes its directory)" >&2; exit 1; }
else
  bindir=$STATE/bin
  mkdir -p "$bindir"
  eval "$(bash packaging/version.sh)"
  ldflags="-X main.version=$version -X main.revision=$revision"
  CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$bindir/snakepit" ./cmd/snakepit
  CGO_ENABLED=0 go build -tags snakepitd -ldflags "$ldflags" -o "$bindir/snakepitd" ./cmd/snakepit
fi
DEB=$(bash packaging/deb.sh --bindir "$bindir" --out "$SHARE")
dpkg-deb -f "$DEB" Version > "$SHARE/deb.version"
cp "$RIG"/guest*.sh "$RIG/pidwait.py" "$RIG/stray.py" "$RIG/timeit.py" "$SHARE/"
# A Go program that uses the library (Create, guarded by default), for the
# library-as-a-unit's-main-process checks.
CGO_ENABLED=0 go build -o "$SHARE/fmsupervisor" ./test/faultmatrix/fmsupervisor
# The package (and so the unit) is installed before the guest boots
# (preboot.sh), so the guest never needs a daemon-reload: on a loaded CI
# host one failed with "Transport endpoint is not connected".
BINDS=$SHARE PREBOOT=$RIG/preboot.sh bash "$RIG/up.sh"
echo "systemd rig: guest up after $(( ($(date +%s%N) - start) / 1000000 )) ms"
# On failure, show what the guest's PID 1 said (the guest is still up: the
# EXIT trap tears it down afterwards).
if ! bash "$RIG/exec.sh" bash "$SHARE/guest-placement.sh" "$SHARE" || ! bash "$RIG/exec.sh" bash "$SHARE/guest.sh" "$SHARE"; then
  echo "systemd rig: FAIL; the guest's journal (system manager, last 60 lines):" >&2
  bash "$RIG/exec.sh" journalctl --no-pager -o short-monotonic -n 60 _PID=1 >&2 || true
  exit 1
fi
echo "systemd rig: passed in $(( ($(date +%s%N) - start) / 1000000 )) ms"
