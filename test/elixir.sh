#!/usr/bin/env bash
# BEAM side: builds the snakepit_jail Elixir library (elixir/) offline and
# runs its ExUnit tests on the real cgroupfs: bad input, the teardown paths,
# a restart storm, and the seed scenario (a separate BEAM node with a pool
# of Python gRPC workers that double-fork setsid grandchildren; kill -9,
# GenServer kill, Supervisor.stop, :init.stop), in cgroup and POSIX mode.
#
#   bash test/elixir.sh [MIX TEST ARGS...]
#
# Needs Debian's elixir and Erlang/OTP (test/setup.sh --for-tests installs
# them), python3-grpcio and python3-protobuf, root, and a cgroup2 mount.
# Also tests the daemon client against a daemon it starts (own socket, own
# cgroup parent), so it needs snakepitd next to snakepit (or $SNAKEPITD).
# With CI=true a missing prerequisite fails; otherwise the script skips,
# saying why. Builds cmd/snakepit into a temp dir unless SNAKEPIT_BIN is
# set. Mix never goes to the network: there are no dependencies, MIX_HOME
# and HEX_HOME are a fresh temp dir, and (as root, where unshare works) the
# compile runs in a network namespace without a network. Set
# SNAKEPIT_BEAM_REPORT=FILE to get the measured figures as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  if [ "${CI:-}" = true ]; then
    echo "elixir.sh: FAIL: $* (CI=true: a missing prerequisite is a failure)" >&2
    exit 1
  fi
  echo "elixir.sh: SKIP: $*" >&2
  exit 0
}
command -v elixir >/dev/null && command -v mix >/dev/null ||
  missing "no elixir/mix on PATH (bash test/setup.sh --for-tests installs Debian's elixir)"
[ "$(id -u)" = 0 ] || missing "not root (the tests create run cgroups and follow every process)"
awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/self/mounts ||
  missing "no cgroup2 filesystem mounted"
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null ||
  missing "/usr/bin/python3 lacks grpc/protobuf (python3-grpcio python3-protobuf)"

tmp=$(mktemp -d /tmp/snakepit-elixir.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
if [ -z "${SNAKEPIT_BIN:-}" ]; then
  echo "elixir.sh: building snakepit into $tmp"
  CGO_ENABLED=0 go build -o "$tmp/snakepit" ./cmd/snakepit
  export SNAKEPIT_BIN="$tmp/snakepit"
fi
SNAKEPIT_BIN=$(realpath "$SNAKEPIT_BIN")
export SNAKEPIT_BIN
# The daemon client's test starts a daemon of its own: `snakepit daemon`
# execs the full build, snakepitd, found next to snakepit or in $SNAKEPITD.
if [ -z "${SNAKEPITD:-}" ] && [ ! -x "$(dirname "$SNAKEPIT_BIN")/snakepitd" ]; then
  echo "elixir.sh: building snakepitd into $tmp"
  CGO_ENABLED=0 go build -tags snakepitd -o "$tmp/snakepitd" ./cmd/snakepit
  export SNAKEPITD="$tmp/snakepitd"
fi

export MIX_HOME="$tmp/mix" HEX_HOME="$tmp/hex" HEX_OFFLINE=1 MIX_ENV=test
cd elixir
elixir --version | tail -1
mix format --check-formatted
offline=()
if unshare --net true 2>/dev/null; then
  offline=(unshare --net)
  echo "elixir.sh: compiling without a network (unshare --net)"
fi
"${offline[@]}" mix compile --warnings-as-errors
mix test --warnings-as-errors "$@"
