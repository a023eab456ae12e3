#!/bin/bash
# Runs on the host side of the guest's mount namespace, before the guest's
# systemd starts (up.sh PREBOOT); R is the guest root (an overlay: host
# files, the host's dpkg database included, are never written). Installs
# the snakepit .deb with dpkg (maintainer scripts run chrooted into R), so
# that the packaged unit is loaded at boot and no daemon-reload is needed.
# The shipped unit as is, plus a drop-in with a shorter grace and
# RestartSec to keep CI fast; the nesting grace < TimeoutStopSec is checked
# on the unit in systemd/unit_test.go.
set -eu
: "${R:?}" "${BINDS:?}"
SHARE=${BINDS%% *}
# Copies a host may have in /usr/local/bin (earlier in PATH) would shadow
# the package's: hidden in the guest (whiteouts in the overlay).
rm -f "$R/usr/local/bin/snakepit" "$R/usr/local/bin/snakepitd"
debs=("$SHARE"/snakepit_*.deb)
[ ${#debs[@]} = 1 ] && [ -f "${debs[0]}" ] || { echo "preboot: want one snakepit_*.deb in $SHARE: ${debs[*]}" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive dpkg --root="$R" -i "${debs[0]}" >"$SHARE/dpkg.log" 2>&1 ||
  { cat "$SHARE/dpkg.log" >&2; exit 1; }
mkdir -p "$R/etc/systemd/system/snakepit.service.d"
printf '[Service]\nExecStart=\nExecStart=/usr/bin/snakepit daemon --grace 1s\nRestartSec=100ms\n' > "$R/etc/systemd/system/snakepit.service.d/rig.conf"
