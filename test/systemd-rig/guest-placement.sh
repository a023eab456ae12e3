#!/bin/bash
# Runs INSIDE the rig's guest (systemd is PID 1), before guest.sh: where
# `snakepit run` and a Go program calling snakepit.Create put their runs
# under systemd (package placement), and that nothing outlives a unit that
# is stopped or SIGKILLed:
#   - a Delegate=yes service and a Delegate=yes scope: the run below the unit;
#   - a service without Delegate=: the run in its own snakepit-<id>.scope;
#   - the same through the Go library as a unit's main process;
#   - no cgroup outside a systemd unit after each scenario;
#   - the cost of `snakepit run -- /bin/true` beside `systemd-run --scope`.
# $1 is the shared directory (pidwait.py, fmsupervisor, stray.py).
set -euo pipefail
SHARE=$1
CG=/sys/fs/cgroup
PY=/usr/bin/python3

T0=$(date +%s%N)
ok() { echo "ok [$(( ($(date +%s%N) - T0) / 1000000 )) ms]: $*"; }
fail() { echo "FAIL: $*" >&2; systemd-cgls --no-pager >&2 || true; journalctl --no-pager -n 30 >&2 || true; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { local end=$(( $(now_ms) + $1*1000 )); until eval "$2"; do [ "$(now_ms)" -lt "$end" ] || return 1; sleep 0.02; done; }
pids_under() { find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }
prop() { systemctl show -p "$2" --value "$1"; }
# stray: every cgroup that is neither a systemd unit nor inside a unit with
# Delegate=yes (its delegatee's own) must not exist.
stray() {
  local s
  s=$($PY "$SHARE/stray.py" "$CG") || fail "stray cgroups after $1: $s"
  ok "$1: no cgroup outside a systemd unit"
}
# gone_after WHAT PIDS...: pidfds are opened now; WHAT runs; every PID must
# exit within 5 s.
gone_after() {
  local what=$1; shift
  coproc W { $PY "$SHARE/pidwait.py" "$@"; }
  local line res
  read -r line <&"${W[0]}"; [ "$line" = ready ] || fail "pidwait: $line"
  local err
  # systemd's kill walks the unit's cgroups while the guardian removes the
  # run's: it then reports "No such device" for a cgroup that went away
  # mid-walk, after killing everything. The outcome is checked below.
  err=$(eval "$what" 2>&1) || case "$err" in *"No such device"*) ;; *) fail "$what: $err";; esac
  echo go >&"${W[1]}"
  read -r res <&"${W[0]}" || fail "pidwait died"
  wait "$W_PID" 2>/dev/null || true
  case "$res" in all-gone*) echo "${res#all-gone }";; *) fail "$what: $res";; esac
}
GUARD_SOCK_DIR=/run/snakepit
WORK='setsid sleep 4001 & exec sleep 4002'

# run_cgroup_below DIR: waits for a run cgroup in DIR holding its two
# sleeps and prints it.
run_cgroup_below() {
  BELOW=$1  # a global: wait_for's eval sees its own $1
  wait_for 10 'ls -d "$BELOW"/snakepit-* >/dev/null 2>&1 && test "$(pids_under "$(ls -d "$BELOW"/snakepit-* | head -1)" | wc -l)" -ge 2' || return 1
  ls -d "$BELOW"/snakepit-* | head -1
}

guardian_outside() {
  local g
  g=$(cat $GUARD_SOCK_DIR/guardian.pid 2>/dev/null) || fail "no guardian pid file"
  case "$(grep '^0::' /proc/$g/cgroup)" in
    "0::/system.slice/snakepit-guardian-$g.scope") ;;
    *) fail "guardian $g lives in $(grep '^0::' /proc/$g/cgroup), not its own scope";;
  esac
  echo "$g"
}

# --- Delegate=yes: a service and a scope, each killed and stopped ------------
for kind in service scope; do
  for how in kill stop; do
    u=sp-del-$kind-$how
    if [ $kind = service ]; then
      systemd-run --quiet --unit "$u" -p Delegate=yes /usr/bin/snakepit run -- sh -c "$WORK" || fail "systemd-run $u"
      U=$CG/system.slice/$u.service; unit=$u.service
    else
      systemd-run --quiet --scope --unit "$u" -p Delegate=yes /usr/bin/snakepit run -- sh -c "$WORK" &
      bg=$!
      U=$CG/system.slice/$u.scope; unit=$u.scope
    fi
    R=$(run_cgroup_below "$U") || fail "$unit: no run with 2 workers below $U: $(find "$U" -type d)"
    wrapper=$(cat "$U/supervisor/cgroup.procs")
    [ -n "$wrapper" ] && [ -z "$(cat "$U/cgroup.procs")" ] || fail "$unit: wrapper not moved to supervisor/ ($(cat "$U/cgroup.procs"))"
    systemd-cgls --no-pager -u "$unit" | grep -q "sleep 4001" || fail "systemd-cgls -u $unit does not show the workers: $(systemd-cgls --no-pager -u "$unit")"
    g=$(guardian_outside)
    all="$wrapper $(pids_under "$R")"
    if [ $how = kill ]; then
      ms=$(gone_after "systemctl kill -s KILL $unit" $all)
    else
      ms=$(gone_after "systemctl stop $unit" $all)
      wait_for 10 '! systemctl is-active -q $unit' || fail "$unit still active after stop"
    fi
    if [ $kind = scope ]; then wait "$bg" 2>/dev/null || true; fi
    wait_for 10 'test ! -d "$R"' || fail "$unit: run cgroup $R left"
    systemctl reset-failed "$unit" 2>/dev/null || true
    ok "Delegate=yes $kind, systemctl $how: run $(basename "$R") below $unit with the wrapper in supervisor/ (systemd-cgls shows the workers), guardian $g in its own scope; $(echo $all | wc -w) processes gone in $ms ms"
    stray "Delegate=yes $kind, $how"
  done
done

# --- no Delegate=: a scope per run ------------------------------------------
for how in kill stop; do
  u=sp-plain-$how
  systemd-run --quiet --unit "$u" /usr/bin/snakepit run -- sh -c "$WORK" || fail "systemd-run $u"
  U=$CG/system.slice/$u.service
  wait_for 10 'ls -d $CG/system.slice/snakepit-???????.scope >/dev/null 2>&1' || fail "$u: no run scope: $(ls $CG/system.slice)"
  S=$(ls -d $CG/system.slice/snakepit-???????.scope | head -1)
  scope=$(basename "$S")
  R=$(run_cgroup_below "$S") || fail "$scope: no run with 2 workers"
  [ "$R" = "$S/${scope%.scope}" ] || fail "run cgroup $R in $S"
  systemctl list-units --no-legend --all "$scope" | grep -q "$scope" || fail "$scope not in systemctl list-units"
  [ "$(prop "$scope" Delegate)" = yes ] || fail "$scope: Delegate=$(prop "$scope" Delegate)"
  case " $(prop "$scope" BindsTo) " in *" $u.service "*) ;; *) fail "$scope: BindsTo=$(prop "$scope" BindsTo)";; esac
  [ -z "$(ls -d "$U"/snakepit-* 2>/dev/null)" ] || fail "a run cgroup inside the non-delegated $u.service"
  g=$(guardian_outside)
  all="$(cat "$U/cgroup.procs") $(pids_under "$S")"
  if [ $how = kill ]; then
    ms=$(gone_after "systemctl kill -s KILL $u.service" $all)
  else
    ms=$(gone_after "systemctl stop $u.service" $all)
  fi
  wait_for 10 '! systemctl is-active -q $scope && test ! -d $S' || fail "$scope still there: $(prop "$scope" ActiveState)"
  systemctl reset-failed "$u.service" 2>/dev/null || true
  ok "service without Delegate=, systemctl $how: run in $scope (list-units shows it, Delegate=yes, BindsTo=$u.service), guardian $g in its own scope; $(echo $all | wc -w) processes gone in $ms ms, scope gone"
  stray "service without Delegate=, $how"
done

# --- the owner alone SIGKILLed, its unit still active: the guardian alone ---
# The service keeps running (a sleep beside the wrapper), so BindsTo= does
# not fire: only the guardian, in a scope of its own, can end the run.
u=sp-owner-only
systemd-run --quiet --unit "$u" sh -c "/usr/bin/snakepit run -- sh -c '$WORK' & exec sleep 5000" || fail "systemd-run $u"
U=$CG/system.slice/$u.service
wait_for 10 'ls -d $CG/system.slice/snakepit-???????.scope >/dev/null 2>&1' || fail "$u: no run scope"
S=$(ls -d $CG/system.slice/snakepit-???????.scope | head -1)
R=$(run_cgroup_below "$S") || fail "no run in $S"
wrapper=$(for p in $(cat "$U/cgroup.procs"); do [ "$(readlink /proc/$p/exe)" = /usr/bin/snakepit ] && echo $p; done)
[ -n "$wrapper" ] || fail "$u: no wrapper among $(cat "$U/cgroup.procs")"
all="$wrapper $(pids_under "$S")"
ms=$(gone_after "kill -KILL $wrapper" $all)
wait_for 10 'test ! -d "$S"' || fail "$(basename "$S") left after its owner's SIGKILL"
systemctl is-active -q "$u" || fail "$u not active any more: the check did not isolate the guardian"
systemctl stop "$u"
ok "the owner alone SIGKILLed, its unit still active: the guardian ended $(basename "$S"), $(echo $all | wc -w) processes gone in $ms ms"
stray "owner alone SIGKILLed"

# --- the Go library as a unit's main process --------------------------------
for del in yes no; do
  u=sp-lib-$del
  systemd-run --quiet --unit "$u" -p Delegate=$del -E SNAKEPIT_BIN=/usr/bin/snakepit "$SHARE/fmsupervisor" "" "$WORK" || fail "systemd-run $u"
  U=$CG/system.slice/$u.service
  if [ $del = yes ]; then
    R=$(run_cgroup_below "$U") || fail "$u: no run below the unit"
    where="below $u.service"
  else
    wait_for 10 'ls -d $CG/system.slice/snakepit-???????.scope >/dev/null 2>&1' || fail "$u: no run scope"
    S=$(ls -d $CG/system.slice/snakepit-???????.scope | head -1)
    R=$(run_cgroup_below "$S") || fail "$u: no run in $S"
    where="in $(basename "$S")"
  fi
  all="$(pids_under "$U") $(pids_under "$R")"
  ms=$(gone_after "systemctl kill -s KILL $u.service" $all)
  wait_for 10 'test ! -d "$R"' || fail "$u: run cgroup $R left"
  systemctl reset-failed "$u.service" 2>/dev/null || true
  ok "Go library as the main process of a Delegate=$del service: run $where; systemctl kill -s KILL: $(echo $all | wc -w) processes gone in $ms ms"
  stray "library, Delegate=$del"
done

# --- what it costs: snakepit run -- /bin/true beside systemd-run --scope -----
if [ "${PLACEMENT_BENCH:-1}" = 1 ]; then
  n=${PLACEMENT_BENCH_N:-25}
  rounds=3
  out=$SHARE/placement-bench.txt
  : > "$out"
  for r in $(seq $rounds); do
    $PY "$SHARE/timeit.py" "$n" "systemd-run --scope" systemd-run --scope --quiet --collect /bin/true >> "$out"
    systemd-run --quiet --wait --pipe -p Delegate=yes $PY "$SHARE/timeit.py" "$n" "snakepit run, Delegate=yes unit" /usr/bin/snakepit run -- /bin/true >> "$out"
    systemd-run --quiet --wait --pipe $PY "$SHARE/timeit.py" "$n" "snakepit run, plain unit (scope per run)" /usr/bin/snakepit run -- /bin/true >> "$out"
    systemd-run --quiet --wait --pipe $PY "$SHARE/timeit.py" "$n" "/bin/true, plain unit" /bin/true >> "$out"
  done
  $PY - "$out" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, ms = line.rstrip("\n").rsplit("\t", 1)
    rows.setdefault(name, []).append(float(ms))
base = statistics.median(rows["systemd-run --scope"])
for name, v in rows.items():
    m = statistics.median(v)
    print(f"bench: {name}: median of round medians {m:.2f} ms, {m/base:.2f}x systemd-run --scope")
PYEOF
  ok "benchmark (same boot, $rounds alternating rounds of $n)"
fi
echo "guest-placement: all checks passed"
