#!/bin/bash
# Runs on the host side of the guest's mount namespace, before the guest's
# systemd starts (up.sh PREBOOT); R is the guest root (an overlay: host
# files are never written). Installs snakepit and its unit, so that the
# unit is loaded at boot and no daemon-reload is needed.
# The shipped unit as is (rendered by `snakepit daemon --print-unit` into
# the share), plus a drop-in with a shorter grace and RestartSec to keep CI
# fast; the nesting grace < TimeoutStopSec is checked on the unit in
# systemd/unit_test.go.
set -eu
: "${R:?}" "${BINDS:?}"
SHARE=${BINDS%% *}
install -m 0755 "$SHARE/snakepit" "$R/usr/local/bin/snakepit"
install -m 0755 "$SHARE/snakepitd" "$R/usr/local/bin/snakepitd"
install -m 0644 "$SHARE/snakepit.service" "$R/etc/systemd/system/snakepit.service"
mkdir -p "$R/etc/systemd/system/snakepit.service.d"
printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/snakepit daemon --grace 1s\nRestartSec=100ms\n' > "$R/etc/systemd/system/snakepit.service.d/rig.conf"
