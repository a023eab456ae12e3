#!/bin/bash
# Runs INSIDE the rig's guest (systemd is PID 1): checks the snakepit .deb
# that preboot.sh installed, drives the packaged daemon through its API (curl
# and the packaged Python client) and systemctl, and checks that nothing
# outlives it. $1 is the shared directory (the .deb's version, pidwait.py).
# Prints "ok: ..." per check; exits non-zero on the first failure.
set -euo pipefail
SHARE=$1
SOCK=/run/snakepit/snakepit.sock
SVC=/sys/fs/cgroup/system.slice/snakepit.service
PY=/usr/bin/python3

fail() { echo "FAIL: $*" >&2; systemctl status snakepit --no-pager -l >&2 || true; journalctl -u snakepit --no-pager -n 40 >&2 || true; exit 1; }
T0=$(date +%s%N)
ok() { echo "ok [$(( ($(date +%s%N) - T0) / 1000000 )) ms]: $*"; }
# api METHOD PATH [BODY] [SOCKET]: prints the body; fails unless 2xx.
api() {
  local out code
  out=$(mktemp)
  code=$(curl -s -o "$out" -w '%{http_code}' --unix-socket "${4:-$SOCK}" -X "$1" "http://snakepit$2" ${3:+-d "$3"}) || { rm -f "$out"; fail "curl $1 $2"; }
  case "$code" in 2??) cat "$out"; rm -f "$out";; *) cat "$out" >&2; rm -f "$out"; fail "$1 $2: HTTP $code";; esac
}
json() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# sc ARGS: systemctl, retried (at most 4 more times) only when the call
# failed on the bus transport itself. The verbs used here are idempotent
# (start, stop, kill, show), and a transport error says nothing about
# snakepit; any other failure is returned as is.
sc() {
  local out err rc i
  for i in 1 2 3 4 5; do
    out=$(systemctl "$@" 2>/tmp/sc.err) && { [ -z "$out" ] || printf '%s\n' "$out"; return 0; }
    rc=$?; err=$(cat /tmp/sc.err)
    case "$err" in
      *"Transport endpoint is not connected"*|*"Connection reset by peer"*|*"Connection timed out"*|*"Failed to connect to bus"*)
        echo "rig: systemctl $*: $err (attempt $i, retrying)" >&2; sleep 0.2;;
      *) break;;
    esac
  done
  [ -z "$out" ] || printf '%s\n' "$out"; [ -z "$err" ] || echo "$err" >&2
  return $rc
}
prop() { sc show -p "$2" --value "$1"; }
alive() { local n=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && n=$((n+1)); done; echo $n; }
survivors() { for p in "$@"; do kill -0 "$p" 2>/dev/null && ps -o pid=,stat=,args= -p "$p"; done; true; }
# pids_under DIR: every PID in the cgroup subtree DIR
pids_under() { find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# wait_for SECONDS 'SHELL CONDITION': re-evaluates the condition every 20 ms
wait_for() { local end=$(( $(now_ms) + $1*1000 )); until eval "$2"; do [ "$(now_ms)" -lt "$end" ] || return 1; sleep 0.02; done; }

# --- the .deb, installed before boot (preboot.sh) ----------------------------
want=$(cat "$SHARE/deb.version")
got=$(dpkg-query -W -f='${Status} ${Version}' snakepit 2>&1) || fail "dpkg-query: $got"
[ "$got" = "install ok installed $want" ] || fail "package snakepit: '$got', want 'install ok installed $want'"
for f in /usr/bin/snakepit /usr/bin/snakepitd /lib/systemd/system/snakepit.service \
         /usr/lib/python3/dist-packages/snakepit_worker/client.py /usr/lib/python3/dist-packages/pytest_snakepit/__init__.py; do
  dpkg -L snakepit | grep -qx "$f" || fail "$f not in the package"
  [ -e "$f" ] || fail "$f (of the package) missing"
done
[ "$(command -v snakepit)" = /usr/bin/snakepit ] || fail "snakepit on PATH is $(command -v snakepit), not the package's"
ls /usr/lib/python3/dist-packages/snakepit_worker/__pycache__/client.cpython-*.pyc >/dev/null 2>&1 ||
  fail "postinst did not byte-compile the Python modules (py3compile -p snakepit)"
ok "package snakepit $want installed (dpkg), binaries, unit and Python modules in place, byte-compiled"
[ "$(prop snakepit LoadState)" = loaded ] || fail "snakepit.service not loaded: $(prop snakepit LoadState)"
frag=$(prop snakepit FragmentPath)
case "$frag" in /lib/systemd/system/snakepit.service|/usr/lib/systemd/system/snakepit.service) ;; *) fail "unit loaded from $frag, not the package's";; esac
# The packaged unit is the binary's own (--print-unit), started from /usr/bin.
d=$(diff <(snakepit daemon --print-unit | sed 's|^ExecStart=/usr/local/bin/snakepit |ExecStart=/usr/bin/snakepit |') "$frag" | grep '^[<>]' | grep -v '^[<>] #' || true)
[ -z "$d" ] || fail "packaged unit differs from --print-unit beyond ExecStart and comments: $d"
grep -qx 'ExecStart=/usr/bin/snakepit daemon --grace 10s' "$frag" || fail "packaged unit's ExecStart: $(grep ExecStart "$frag")"
case "$(prop snakepit ExecStart)" in *"path=/usr/bin/snakepit ;"*) ;; *) fail "ExecStart: $(prop snakepit ExecStart)";; esac
ok "unit $frag: --print-unit with ExecStart=/usr/bin/snakepit (rig drop-in: --grace 1s)"
# Type=notify: start returns once the daemon sent READY=1.
sc start snakepit || fail "systemctl start"
[ "$(prop snakepit ActiveState)" = active ] || fail "not active after start"
MAIN=$(prop snakepit MainPID)
status=$(prop snakepit StatusText)
case "$status" in "runs: 0, workers: 0; stale runs removed at start: 0; runs under $SVC (delegated)") ;; *) fail "STATUS=$status";; esac
ok "Type=notify service READY; STATUS=$status"
[ "$(readlink /proc/$MAIN/exe)" = /usr/bin/snakepitd ] || fail "daemon $MAIN runs $(readlink /proc/$MAIN/exe), not the package's /usr/bin/snakepitd"
ok "the daemon is the package's: /usr/bin/snakepit exec'd /usr/bin/snakepitd (pid $MAIN)"
[ "$(prop snakepit Delegate)" = yes ] || fail "Delegate"
grep -qx "$MAIN" "$SVC/supervisor/cgroup.procs" || fail "daemon $MAIN not in $SVC/supervisor"
[ -z "$(cat "$SVC/cgroup.procs")" ] || fail "processes left in the delegated root: $(cat "$SVC/cgroup.procs")"
$PY -c "import os; assert os.getxattr('$SVC','trusted.delegate')==b'1'" || fail "no trusted.delegate xattr"
ok "delegated: daemon in $SVC/supervisor, root empty, trusted.delegate=1"
[ "$(prop snakepit NoNewPrivileges)" = yes ] && [ "$(prop snakepit ProtectSystem)" = full ] || fail "hardening not applied"
ok "hardening active (NoNewPrivileges, ProtectSystem=full, ...)"

# --- the package's Python client drives the packaged daemon --------------------
# From /, without PYTHONPATH: the modules dpkg put in dist-packages.
out=$(cd / && env -u PYTHONPATH $PY - "$MAIN" <<'PYEOF' 2>&1
import importlib.metadata as md, os, sys, time
import snakepit_worker.client as sc
assert sc.__file__ == "/usr/lib/python3/dist-packages/snakepit_worker/client.py", sc.__file__
assert [e.value for e in md.entry_points(group="pytest11") if e.name == "pytest_snakepit"] == ["pytest_snakepit"]
c = sc.Client()  # the default socket, /run/snakepit/snakepit.sock
st = c.status()
assert st["pid"] == int(sys.argv[1]) and st["mode"] == "delegated", st
with c.events(timeout=20) as ev:
    run = c.create_run()
    w = c.start_worker(run["id"], ["/bin/sh", "-c", "setsid sleep 1000 & exec sleep 1001"])
    deadline = time.monotonic() + 10
    while len(open(run["cgroup"] + "/cgroup.procs").read().split()) < 2:
        assert time.monotonic() < deadline, "worker and its setsid child not both in the run"
        time.sleep(0.01)
    td = c.teardown(run["id"], grace="1s")
    assert td["terminated"] >= 2 and not os.path.exists(run["cgroup"]), td
    seen = []
    while not seen or seen[-1] != "run_torn_down":
        e = ev.next()
        if e.get("run") == run["id"]:
            seen.append(e["type"])
try:
    c.get_run(run["id"])
    raise AssertionError("run still there")
except sc.NotFound as e:
    assert e.code == "not_found"
print(f"run {run['id']}: worker {w['pid']}, teardown terminated {td['terminated']}, events {seen}")
PYEOF
) || fail "Python client against the packaged daemon: $out"
ok "installed Python client (dist-packages, pytest11 entry point): $out"
# Man page and completions: in the package only when the build made them.
for f in $(dpkg -L snakepit | grep -E '^/usr/share/bash-completion/completions/'); do
  bash -c "source $f" || fail "completion $f does not load in bash"
  ok "bash completion $f loads"
done
for f in $(dpkg -L snakepit | grep -E '^/usr/share/man/man[1-8]/.*\.gz$'); do
  if command -v man >/dev/null; then
    man -l "$f" >/dev/null 2>&1 || fail "man -l $f"
    ok "man page $f renders"
  fi
done

# --- drive the API ----------------------------------------------------------
ST=$(api GET /v1/status)
[ "$(echo "$ST" | json 'd["mode"]')" = delegated ] || fail "status: $ST"
RUN=$(api POST /v1/runs '{}' | json 'd["id"]')
RCG=$SVC/snakepit-$RUN
[ -d "$RCG" ] || fail "run cgroup $RCG missing"
W1=$(api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","(sleep 1000 &); setsid sleep 1001 & exec sleep 1002"]}' | json 'd["pid"]')
W2=$(api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","(sleep 1003 &); exec sleep 1004"]}' | json 'd["pid"]')
wait_for 5 'test "$(pids_under "$RCG" | wc -l)" -ge 5' || fail "double-forked workers: $(pids_under "$RCG" | wc -l) processes"
ok "run $RUN: 2 workers that double-fork, $(pids_under "$RCG" | wc -l) processes in $RCG"
snakepit ps | grep -q "^$RUN " || fail "snakepit ps does not show $RUN"
ok "snakepit ps lists the daemon's run"
W=$(api DELETE "/v1/runs/$RUN/workers/2?grace=1s")
[ "$(echo "$W" | json 'd["state"]')" = exited ] || fail "worker 2 not exited: $W"
wait_for 5 'test "$(alive "$W2")" = 0' || fail "worker 2 alive"
ok "worker 2 stopped: $(echo "$W" | json 'd["exit"]')"
before=$(pids_under "$RCG")
TD=$(api DELETE "/v1/runs/$RUN?grace=1s")
[ ! -d "$RCG" ] || fail "run cgroup left after DELETE"
[ "$(alive $before)" = 0 ] || fail "processes survived DELETE of the run"
ok "run torn down: $TD"
. "$SHARE/guest-observe.sh"   # logs in the journal, GET /metrics

# --- systemctl stop: nothing survives ---------------------------------------
RUN=$(api POST /v1/runs '{}' | json 'd["id"]')
for i in 1 2; do api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","trap \"\" TERM; (sleep 1000 &); setsid sleep 1001 & exec sleep 1002"]}' >/dev/null; done
wait_for 5 'test "$(pids_under "$SVC/snakepit-$RUN" | wc -l)" -ge 6' || fail "workers of $RUN"
all=$(pids_under "$SVC")
t0=$(now_ms)
sc stop snakepit || fail "systemctl stop"
t1=$(now_ms)
[ "$(alive $all)" = 0 ] || fail "survived systemctl stop: $(for p in $all; do kill -0 $p 2>/dev/null && ps -o pid=,args= -p $p; done)"
[ ! -d "$SVC" ] || [ -z "$(ls -d "$SVC"/snakepit-* 2>/dev/null)" ] || fail "run cgroup left after stop"
[ "$(prop snakepit Result)" = success ] && [ "$(prop snakepit ExecMainStatus)" = 0 ] || fail "stop: Result=$(prop snakepit Result) status=$(prop snakepit ExecMainStatus)"
ok "systemctl stop in $((t1-t0)) ms (workers ignoring SIGTERM: grace then kill): exit 0, $(echo $all | wc -w) processes gone, no run cgroup"

# --- systemctl kill -s KILL: zero survivors within 100 ms, clean restart ------
sc start snakepit || fail "restart"
OLD=$(prop snakepit MainPID)
RUN=$(api POST /v1/runs '{}' | json 'd["id"]')
for i in 1 2; do api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","(sleep 1000 &); setsid sleep 1001 & exec sleep 1002"]}' >/dev/null; done
wait_for 5 'test "$(pids_under "$SVC/snakepit-$RUN" | wc -l)" -ge 6' || fail "workers of $RUN"
all=$(pids_under "$SVC")
# A pidfd waiter (pidfds opened before the kill, so no PID can be reused
# under it) measures from "systemctl kill returned" to the last exit.
coproc WAITER { $PY "$SHARE/pidwait.py" $all; }
read -r line <&"${WAITER[0]}"; [ "$line" = ready ] || fail "pidwait: $line"
t0=$(now_ms)
sc kill -s KILL snakepit || fail "systemctl kill"
echo go >&"${WAITER[1]}"
read -r res <&"${WAITER[0]}" || fail "pidwait died"
t1=$(now_ms)
case "$res" in all-gone*) ;; *) fail "systemctl kill -s KILL: $res";; esac
ms=$(echo "$res" | cut -d' ' -f2)
$PY -c "import sys; sys.exit(0 if float('$ms') <= 100 else 1)" || fail "zero survivors only $ms ms after systemctl kill returned (want <= 100)"
ok "systemctl kill -s KILL: all $(echo $all | wc -w) processes (daemon, guardian, workers) gone $ms ms after systemctl kill returned ($((t1-t0)) ms including systemctl and the handshake)"
# Restart=on-failure brings it back; READY again, with the gc count.
wait_for 15 '[ "$(systemctl show -p MainPID --value snakepit)" != 0 ] && [ "$(systemctl show -p MainPID --value snakepit)" != $OLD ] && systemctl is-active -q snakepit' || fail "no restart"
status=$(prop snakepit StatusText)
case "$status" in *"stale runs removed at start: "*) ;; *) fail "STATUS after restart: $status";; esac
[ "$(api GET /v1/runs)" = "[]" ] || fail "runs after restart"
[ -z "$(ls -d "$SVC"/snakepit-* 2>/dev/null)" ] || fail "run cgroups after restart: $(ls -d "$SVC"/snakepit-*)"
ok "restarted cleanly: STATUS=$status"

# --- gc at start: runs left by an instance whose kill spared them ------------
# SIGKILL the daemon alone (not the cgroup) with the guardian stopped first,
# so that its runs stay behind until the restarted daemon's gc.
RUN=$(api POST /v1/runs '{}' | json 'd["id"]')
api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","(sleep 1000 &); exec sleep 1002"]}' >/dev/null
wait_for 5 'test "$(pids_under "$SVC/snakepit-$RUN" | wc -l)" -ge 2' || fail "workers of $RUN"
left=$(pids_under "$SVC/snakepit-$RUN")
GUARD=$(api GET /v1/status | json 'd.get("guardian",0)')
OLD=$(prop snakepit MainPID)
kill -STOP "$GUARD"
sc kill -s KILL --kill-whom=main snakepit || fail "systemctl kill --kill-whom=main"
wait_for 15 '[ "$(systemctl show -p MainPID --value snakepit)" != 0 ] && [ "$(systemctl show -p MainPID --value snakepit)" != $OLD ] && systemctl is-active -q snakepit' || fail "no restart after killing the main process"
status=$(prop snakepit StatusText)
[ "$(alive $left)" = 0 ] || fail "stale run's processes survived the restart"
ok "daemon SIGKILLed alone, restarted: STATUS=$status"
kill -CONT "$GUARD" 2>/dev/null || true

# --- started by hand, outside any unit: its own transient scope --------------
sc stop snakepit || fail "systemctl stop"
HS=/run/snakepit-hand.sock
snakepit daemon --socket $HS --grace 1s >/run/snakepit-hand.log 2>&1 &
HPID=$!
wait_for 10 'test -S $HS' || { cat /run/snakepit-hand.log >&2; fail "hand-started daemon: no socket"; }
ST=$(api GET /v1/status "" $HS)
SCOPE=snakepit-daemon-$HPID.scope
[ "$(echo "$ST" | json 'd["mode"]')" = scope ] || fail "hand-started: $ST"
[ "$(echo "$ST" | json 'd["run_parent"]')" = "/sys/fs/cgroup/system.slice/$SCOPE" ] || fail "hand-started run parent: $ST"
[ "$(prop $SCOPE Delegate)" = yes ] && [ "$(prop $SCOPE ActiveState)" = active ] || fail "$SCOPE: Delegate=$(prop $SCOPE Delegate)"
grep -qx "$HPID" "/sys/fs/cgroup/system.slice/$SCOPE/supervisor/cgroup.procs" || fail "hand-started daemon not in its scope's supervisor/"
RUN=$(api POST /v1/runs '{}' $HS | json 'd["id"]')
api POST /v1/runs/$RUN/workers '{"argv":["/bin/sh","-c","(sleep 1000 &); exec sleep 1002"]}' $HS >/dev/null
[ -d "/sys/fs/cgroup/system.slice/$SCOPE/snakepit-$RUN" ] || fail "run not in the scope"
wait_for 5 'test "$(pids_under "/sys/fs/cgroup/system.slice/$SCOPE/snakepit-$RUN" | wc -l)" -ge 2' || fail "workers in the scope"
all=$(pids_under "/sys/fs/cgroup/system.slice/$SCOPE")
ok "hand-started daemon: transient $SCOPE with Delegate=yes, run $RUN inside it"
kill -TERM $HPID
wait $HPID || fail "hand-started daemon exit status $?"
wait_for 10 'test "$(alive $all)" = 0' || fail "survivors of the hand-started daemon: $(survivors $all)"
wait_for 5 '! systemctl is-active -q $SCOPE' || fail "$SCOPE still active"
wait_for 5 'test ! -d "/sys/fs/cgroup/system.slice/$SCOPE"' || fail "$SCOPE cgroup left"
ok "hand-started daemon: SIGTERM -> exit 0, nothing left, scope gone"

# --- the package comes off cleanly ------------------------------------------
files=$(dpkg -L snakepit | grep -v '^/\.$')
out=$(dpkg -r snakepit 2>&1) || fail "dpkg -r snakepit: $out"
case "$out" in *warning*) fail "dpkg -r snakepit warned: $out";; esac
[ "$(dpkg-query -W -f='${Status}' snakepit 2>/dev/null)" != "install ok installed" ] || fail "still installed"
for f in $files; do
  [ -f "$f" ] && fail "$f left after dpkg -r"
done
[ ! -e /usr/lib/python3/dist-packages/snakepit_worker ] || fail "dist-packages/snakepit_worker left (byte-code?): $(ls -R /usr/lib/python3/dist-packages/snakepit_worker)"
ok "dpkg -r snakepit: no file of the package left (byte-code removed by prerm)"
echo "guest: all checks passed"
