#!/usr/bin/env bash
# snakepit's benchmarks: snakepit against the alternatives and against bare
# kernel interfaces, side by side, in one run on this machine.
#
#   bash test/bench/run.sh            full run; also updates docs/BENCHMARKS.md
#                                     and docs/benchmarks-teardown.png
#   bash test/bench/run.sh --quick    CI: fewer repetitions, smaller N (< 3 min);
#                                     writes only test/bench/out/
#   options: --no-docs (leave docs/ alone), --only GROUP,... (spawn, teardown,
#            gc, guardian, daemon, memory, systemd; implies --no-docs)
#
# Prints the table and the targets (PASS/FAIL), writes test/bench/out/
# results.json and results.md. Exit status 0 when it ran, FAILs included;
# non-zero only when it could not run. Root only. Everything it starts lives
# in its own cgroup, which is killed and removed at the end, also when it is
# interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0 docs=1 only="" args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 docs=0 args+=" --quick" ;;
    --no-docs) docs=0 args+=" --no-docs" ;;
    --only) [ $# -ge 2 ] || { echo "run.sh: --only needs a value" >&2; exit 2; }
            only=$2 docs=0 args+=" --only $2"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (it creates cgroups)" >&2; exit 1; }
export PATH="$(go env GOPATH)/bin:$PATH"
OUT=test/bench/out BIN=test/bench/out/bin
mkdir -p "$BIN"

# Debian packages the rows need: bubblewrap (a spawn row), perl (forks the
# process trees; Essential on Debian), gnuplot for the plot of a docs run.
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v perl >/dev/null || need+=(perl-base)
if [ $docs = 1 ] && ! command -v gnuplot >/dev/null; then need+=(gnuplot-nox); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "run.sh: installing ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    echo "run.sh: warning: could not install ${need[*]}; the rows that need them are reported as not measurable" >&2
fi

# Our own copies of the binaries: a rebuild of bin/snakepit by someone else
# mid-run must not change what is measured.
export CGO_ENABLED=0   # as test/setup.sh: static binaries
go build -o "$BIN/snakepit" ./cmd/snakepit
go build -tags snakepitd -o "$BIN/snakepitd" ./cmd/snakepit   # `snakepit daemon` execs it (found next to snakepit)
go build -o "$BIN/spbench" ./test/bench/cmd/spbench
go build -o "$BIN/spidle" ./test/bench/cmd/spidle

if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then CG2=/sys/fs/cgroup; else CG2=/sys/fs/cgroup/unified; fi
[ "$(stat -fc %T "$CG2" 2>/dev/null)" = cgroup2fs ] || { echo "run.sh: no cgroup2 mounted" >&2; exit 1; }
ROOT=$CG2/spbench.$$
TMPD=$(mktemp -d /tmp/spbench.XXXXXX)
SPB_PID="" RIG_STATE=""

# The systemd rig (test/systemd-rig/) boots a real systemd in fresh
# namespaces; `systemd-run --scope` is measured inside it when systemd is not
# PID 1 here.
RIG=test/systemd-rig
rig_script() { for f in "$@"; do [ -x "$RIG/$f" ] && { echo "$RIG/$f"; return 0; }; done; return 1; }
rig_down() {
  [ -n "$RIG_STATE" ] || return 0
  local down; down=$(rig_script down.sh sysd-ct-down.sh) && STATE=$RIG_STATE "$down" >/dev/null 2>&1 || true
  RIG_STATE=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$SPB_PID" ]; then
    kill -TERM "$SPB_PID" 2>/dev/null || true
    ( sleep 90; kill -KILL "$SPB_PID" 2>/dev/null ) & local killer=$!
    wait "$SPB_PID" 2>/dev/null || true
    kill "$killer" 2>/dev/null || true
  fi
  rig_down
  # Whatever is left of the harness's cgroup (it removes it itself unless it
  # was killed): kill everything in it and remove it.
  if [ -d "$ROOT" ]; then
    echo 1 > "$ROOT/cgroup.kill" 2>/dev/null || true
    for _ in $(seq 100); do grep -q 'populated 0' "$ROOT/cgroup.events" 2>/dev/null && break; sleep 0.1; done
    find "$ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$ROOT" ] && echo "run.sh: warning: could not remove $ROOT" >&2
  fi
  rm -rf "$TMPD"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

sysd=()
if want systemd || want spawn; then
  if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    :  # spbench measures systemd-run --scope on the host itself
  elif up=$(rig_script up.sh sysd-ct-up.sh) && ex=$(rig_script exec.sh sysd-ct-exec.sh); then
    echo "run.sh: booting the systemd rig for the systemd-run --scope row"
    RIG_STATE=$TMPD/rig
    if STATE=$RIG_STATE CGNAME=spbench-rig.$$ BINDS="$PWD/$BIN" "$up" >"$TMPD/rig-up.log" 2>&1 &&
       STATE=$RIG_STATE "$ex" "$PWD/$BIN/spbench" group systemd-spawn $([ $quick = 1 ] && echo --quick) \
         >"$TMPD/systemd.json" 2>"$TMPD/rig-run.log"; then
      sysd=(--systemd-json "$TMPD/systemd.json")
    else
      why=$(tail -n 3 "$TMPD/rig-up.log" "$TMPD/rig-run.log" 2>/dev/null | tr '\n' ' ')
      sysd=(--systemd-skip "the systemd rig failed: $why")
    fi
    rig_down
  else
    sysd=(--systemd-skip "systemd is not PID 1 here and the systemd rig ($RIG/) is not present")
  fi
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || true)
[ -n "$commit" ] && [ -n "$(git status --porcelain 2>/dev/null | head -1)" ] && commit+=" (uncommitted changes)"
rm -f "$OUT"/results.* "$OUT"/teardown.*
"$BIN/spbench" all --root "$ROOT" --tmp "$TMPD" --out "$OUT" \
  --snakepit "$BIN/snakepit" --spidle "$BIN/spidle" --perl "$(command -v perl)" \
  $([ $quick = 1 ] && echo --quick) ${only:+--only "$only"} \
  --command "bash test/bench/run.sh${args}" --commit "$commit" "${sysd[@]}" &
SPB_PID=$!
rc=0
wait "$SPB_PID" || rc=$?
SPB_PID=""
[ $rc = 0 ] || exit $rc

if [ -f "$OUT/teardown.gp" ] && command -v gnuplot >/dev/null; then
  (cd "$OUT" && gnuplot teardown.gp) && echo "plot: $OUT/teardown.png"
fi
if [ $docs = 1 ]; then
  img=""
  if [ -f "$OUT/teardown.png" ]; then cp "$OUT/teardown.png" docs/benchmarks-teardown.png; img=benchmarks-teardown.png; fi
  "$BIN/spbench" publish --results "$OUT/results.json" --docs docs/BENCHMARKS.md --img "$img"
  echo "docs: docs/BENCHMARKS.md${img:+ and docs/$img} updated"
fi
