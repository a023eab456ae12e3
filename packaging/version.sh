#!/usr/bin/env bash
# Prints the version and source revision that builds are stamped with, as
# two shell assignments (eval them):
#   version=0.1.0                  the newest released version in CHANGELOG.md
#   revision=68160c8a1b2c-dirty    git describe --always --dirty --abbrev=12
# Outside a git checkout (a source tarball) the revision is
# $SNAKEPIT_REVISION, else "unknown". Used by test/setup.sh (-ldflags -X)
# and packaging/deb.sh (the package version).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^## \[\([0-9][0-9.]*[0-9A-Za-z.~+-]*\)\].*/\1/p' CHANGELOG.md 2>/dev/null | head -n1)
version=${version:-0.0.0}
revision=
if command -v git >/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  revision=$(git describe --always --dirty --abbrev=12 2>/dev/null || true)
fi
revision=${revision:-${SNAKEPIT_REVISION:-unknown}}
# Only characters that need no quoting (they end up in -ldflags and a
# Debian version).
case "$version$revision" in *[!0-9A-Za-z.~+_-]*) echo "version.sh: bad version/revision: $version $revision" >&2; exit 1;; esac
echo "version=$version"
echo "revision=$revision"
