#!/usr/bin/env bash
# Builds a Debian package of snakepit with dpkg-deb (no debhelper, no
# network): test/setup.sh --deb calls it after building bin/.
#
#   bash packaging/deb.sh [--bindir DIR] [--out DIR]
#
# --bindir: where snakepit and snakepitd are (default bin/, as test/setup.sh
# builds them); --out: where the .deb goes (default: the bindir). Prints the
# package's path on stdout, the rest on stderr.
#
# Contents:
#   /usr/bin/snakepit, /usr/bin/snakepitd      the two static binaries
#   /lib/systemd/system/snakepit.service       `snakepit daemon --print-unit`, ExecStart in /usr/bin
#   /usr/lib/python3/dist-packages/            snakepit_worker, pytest_snakepit and their
#                                              dist-info (the pytest11 entry point, as pip installs)
#   /usr/share/doc/snakepit/                   copyright (Apache-2.0), README, API, CHANGELOG
#   man pages and completions, when the build provides them:
#     DIR/*.1 ... DIR/*.8 (or docs/man/*.[1-8])  -> /usr/share/man/manN/, gzipped
#     `snakepit completion bash|zsh|fish`        -> bash-completion, zsh, fish directories
#                                                   (from the CLI's own table; test/setup.sh
#                                                   writes bin/snakepit.1 from it too)
# The service is not enabled or started by the package: `systemctl enable
# --now snakepit` (README.md). Package version: CHANGELOG.md's version and
# the source revision (packaging/version.sh), e.g. 0.1.0+git68160c8a1b2c.
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=bin
out=
while [ $# -gt 0 ]; do
  case $1 in
    --bindir) bindir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: deb.sh [--bindir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
done
out=${out:-$bindir}
log() { echo "deb.sh: $*" >&2; }
for b in snakepit snakepitd; do
  [ -x "$bindir/$b" ] || { log "$bindir/$b missing: build it first (bash test/setup.sh)"; exit 1; }
done
command -v dpkg-deb >/dev/null || { log "dpkg-deb missing (Debian package dpkg)"; exit 1; }

eval "$(bash packaging/version.sh)"
# Debian versions take [A-Za-z0-9.+~-]; '-' would start a Debian revision.
debversion="$version+git${revision//[^A-Za-z0-9.~]/.}"
arch=$(dpkg --print-architecture)
case "$(file -b "$bindir/snakepit" 2>/dev/null || true)" in
  *x86-64*) [ "$arch" = amd64 ] || log "warning: x86-64 binaries, host architecture $arch" ;;
esac

root=$(mktemp -d /tmp/snakepit-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

# Binaries
install -d -m 0755 "$root/usr/bin"
install -m 0755 "$bindir/snakepit" "$bindir/snakepitd" "$root/usr/bin/"

# systemd unit: the one the binary prints, started from /usr/bin.
install -d -m 0755 "$root/lib/systemd/system"
unit=$root/lib/systemd/system/snakepit.service
SNAKEPITD=$bindir/snakepitd "$bindir/snakepit" daemon --print-unit > "$unit.in"
grep -q '^ExecStart=/usr/local/bin/snakepit daemon' "$unit.in" ||
  { log "the unit's ExecStart is not /usr/local/bin/snakepit daemon ...: update deb.sh"; grep -n ExecStart "$unit.in" >&2; exit 1; }
sed -e 's|^ExecStart=/usr/local/bin/snakepit |ExecStart=/usr/bin/snakepit |' \
    -e 's|^# snakepit host daemon. Install with$|# snakepit host daemon, from the snakepit package (override: systemctl edit snakepit). Enable with|' \
    -e '\|^#   snakepit daemon --print-unit > /etc/systemd/system/snakepit.service$|d' \
    "$unit.in" > "$unit"
rm "$unit.in"
chmod 0644 "$unit"

# Python modules, plus the dist-info pip would write (the pytest11 entry
# point makes the plugin load as it does after pip install).
py=$root/usr/lib/python3/dist-packages
pyversion=$(sed -n 's/^version *= *"\(.*\)"/\1/p' python/pyproject.toml | head -n1)
for pkg in snakepit_worker pytest_snakepit; do
  install -d -m 0755 "$py/$pkg"
  for f in python/$pkg/*.py; do install -m 0644 "$f" "$py/$pkg/"; done
done
di=$py/snakepit_python-$pyversion.dist-info
install -d -m 0755 "$di"
cat > "$di/METADATA" <<EOF
Metadata-Version: 2.1
Name: snakepit-python
Version: $pyversion
Summary: Worker helpers, a daemon client and a pytest plugin for the snakepit process jailer
License: Apache-2.0
Classifier: License :: OSI Approved :: Apache Software License
Requires-Python: >=3.11
EOF
printf '[pytest11]\npytest_snakepit = pytest_snakepit\n' > "$di/entry_points.txt"
printf 'pytest_snakepit\nsnakepit_worker\n' > "$di/top_level.txt"
echo debian > "$di/INSTALLER"
chmod 0644 "$di"/*

# Documentation
doc=$root/usr/share/doc/snakepit
install -d -m 0755 "$doc"
cat > "$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: snakepit
Source: https://github.com/snakepit/snakepit

Files: *
Copyright: the snakepit authors
License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
install -m 0644 README.md docs/API.md "$doc/"
gzip -9n < CHANGELOG.md > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

# Man pages, when built: files the CLI's build leaves in the bindir (or
# docs/man/ in the checkout), section from the file name.
nman=0
for f in "$bindir"/*.[1-8] docs/man/*.[1-8]; do
  [ -f "$f" ] || continue
  sec=${f##*.}
  install -d -m 0755 "$root/usr/share/man/man$sec"
  gzip -9n < "$f" > "$root/usr/share/man/man$sec/$(basename "$f").gz"
  chmod 0644 "$root/usr/share/man/man$sec/$(basename "$f").gz"
  nman=$((nman + 1))
done
# Completions, when the binary can generate them.
ncomp=0
completion() {  # completion SHELL DEST
  local tmp=$root/completion.tmp
  if "$bindir/snakepit" completion "$1" > "$tmp" 2>/dev/null && [ -s "$tmp" ]; then
    install -d -m 0755 "$(dirname "$root$2")"
    install -m 0644 "$tmp" "$root$2"
    ncomp=$((ncomp + 1))
  fi
  rm -f "$tmp"
}
completion bash /usr/share/bash-completion/completions/snakepit
completion zsh /usr/share/zsh/vendor-completions/_snakepit
completion fish /usr/share/fish/vendor_completions.d/snakepit.fish
[ "$nman" -gt 0 ] || log "no man page in $bindir or docs/man: left out"
[ "$ncomp" -gt 0 ] || log "'snakepit completion' not available: completions left out"

# Maintainer scripts: byte-compile the Python modules as dh_python3 would,
# tell a running systemd about the unit; nothing is enabled or started.
install -d -m 0755 "$root/DEBIAN"
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if command -v py3compile >/dev/null 2>&1; then py3compile -p snakepit; fi
  if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
fi
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if command -v py3clean >/dev/null 2>&1; then
  py3clean -p snakepit
else
  dpkg -L snakepit | sed -n 's|/[^/]*\.py$|/__pycache__|p' | sort -u | xargs -r rm -rf
fi
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: snakepit
Version: $debversion
Architecture: $arch
Maintainer: snakepit maintainers <maintainers@snakepit.invalid>
Installed-Size: $size
Section: admin
Priority: optional
Recommends: python3 (>= 3.11)
Suggests: python3-pytest
Homepage: https://github.com/snakepit/snakepit
Description: cgroup-v2 process jailer for supervisors of worker processes
 Every run gets its own cgroup; workers start inside it, and teardown is
 atomic (SIGTERM, grace, cgroup.kill): nothing a run starts outlives it.
 A guardian tears down the runs of a supervisor that died, even by SIGKILL.
 .
 This package holds the snakepit command (run, create, exec, ps, kill, gc,
 doctor), snakepitd (the same with the host daemon and its HTTP+JSON API on
 a unix socket), the daemon's systemd unit (not enabled by default), and
 the Python helpers: worker helpers, clients of the CLI and of the daemon,
 and a pytest plugin.
EOF
( cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum ) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/snakepit_${debversion}_$arch.deb
# One package in the output directory: older builds' would match
# `dpkg -i bin/snakepit_*.deb` too.
for old in "$out"/snakepit_*_"$arch".deb; do
  [ -e "$old" ] && [ "$old" != "$deb" ] && rm -f "$old"
done
# gzip, not dpkg-deb's default xz: 13 MB instead of 11, but 14 s instead of
# 48 s on a loaded 2-core CI host (24 MB of static binaries).
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
log "built $deb ($size KiB installed; $nman man page(s), $ncomp completion(s))"
echo "$deb"
