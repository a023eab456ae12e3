#!/usr/bin/env bash
# Python side: snakepit_worker unit tests, the pytest plugin (leaky and clean
# sub-pytests), the adversarial fixtures under the jail, and the gRPC pool
# end-to-end test with its startup benchmark.
#
#   bash test/python.sh [PYTEST ARGS...]
#
# Installs python3-grpcio python3-protobuf python3-pytest (and setuptools,
# pip, wheel for the offline install test) from Debian when missing; builds
# cmd/snakepit (and snakepitd, the daemon build, which must sit next to it)
# into a temp dir unless SNAKEPIT_BIN is set;
# runs /usr/bin/python3 -m pytest (never the `python3` on PATH, which may be a
# pyenv shim). Exits non-zero on any failure, including "no tests collected".
# With CI=true a missing prerequisite (root, cgroup2, binary) fails instead of
# skipping. Set SNAKEPIT_PY_REPORT=FILE to get the benchmark figures as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for p in python3-grpcio python3-protobuf python3-pytest python3-setuptools python3-pip python3-wheel; do
  have_deb "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "python.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
if [ -z "${SNAKEPIT_BIN:-}" ]; then
  tmp=$(mktemp -d /tmp/snakepit-python.XXXXXX)
  echo "python.sh: building snakepit and snakepitd into $tmp"
  CGO_ENABLED=0 go build -o "$tmp/snakepit" ./cmd/snakepit
  # The daemon client's tests start `snakepit daemon`, which execs the full
  # build next to it.
  CGO_ENABLED=0 go build -tags snakepitd -o "$tmp/snakepitd" ./cmd/snakepit
  export SNAKEPIT_BIN="$tmp/snakepit"
fi

export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
set +e
/usr/bin/python3 -m pytest -p pytest_snakepit -p no:cacheprovider -ra python/tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "python.sh: pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
