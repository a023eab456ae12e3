# Sourced by guest.sh while the packaged daemon runs (its helpers api, json,
# ok, fail, wait_for and SOCK are in scope): the daemon's observability.
# Runs come and go through the API; their lifecycle lines must be in the
# journal as native entries with SNAKEPIT_RUN, and GET /metrics (curl over
# the socket) must count them exactly.

# metric NAME [LABELS]: the value of one sample of the exposition on stdin
# ("" when absent). LABELS as in the text format: mechanism="cgroup".
metric() {
  local want=$1${2:+\{$2\}}
  awk -v w="$want" '$1 == w { print $2; found=1; exit } END { if (!found) print "" }'
}
scrape() { curl -sf --unix-socket "$SOCK" http://snakepit/metrics || fail "GET /metrics"; }
# num A: A as an integer (the exposition may write 3 as 3 or 3e+00).
num() { $PY -c "import sys; print(int(float(sys.argv[1] or 'nan')))" "$1"; }

M0=$(scrape)
c0=$(echo "$M0" | metric snakepit_runs_created_total 'mechanism="cgroup"')
t0=$(echo "$M0" | metric snakepit_runs_torn_down_total 'mechanism="cgroup"')
s0=$(echo "$M0" | metric snakepit_workers_started_total)
h0=$(echo "$M0" | metric snakepit_teardown_duration_seconds_count)
[ -n "$c0" ] && [ -n "$t0" ] && [ -n "$s0" ] && [ -n "$h0" ] || fail "GET /metrics lacks the run counters: $(echo "$M0" | grep '^snakepit_' | head -20)"

N=3
OBS_RUNS=()
for i in $(seq $N); do
  R=$(api POST /v1/runs '{}' | json 'd["id"]')
  OBS_RUNS+=("$R")
  api POST /v1/runs/$R/workers '{"argv":["/bin/sh","-c","exit 3"]}' >/dev/null
  api POST /v1/runs/$R/workers '{"argv":["sleep","1000"]}' >/dev/null
done
M1=$(scrape)
for R in "${OBS_RUNS[@]}"; do
  [ -n "$(echo "$M1" | metric snakepit_run_cpu_seconds_total "run=\"$R\"")" ] || fail "no per-run series of live run $R: $(echo "$M1" | grep '^snakepit_run_')"
done
for R in "${OBS_RUNS[@]}"; do api DELETE "/v1/runs/$R?grace=1s" >/dev/null; done

M2=$(scrape)
check() { # check NAME LABELS WANT
  local got; got=$(echo "$M2" | metric "$1" "$2")
  [ -n "$got" ] && [ "$(num "$got")" = "$3" ] || fail "/metrics: $1{$2} = '$got', want $3"
}
check snakepit_runs_created_total 'mechanism="cgroup"' $(( $(num "$c0") + N ))
check snakepit_runs_torn_down_total 'mechanism="cgroup"' $(( $(num "$t0") + N ))
check snakepit_workers_started_total '' $(( $(num "$s0") + 2*N ))
check snakepit_teardown_duration_seconds_count '' $(( $(num "$h0") + N ))
check snakepit_runs '' 0
check snakepit_workers '' 0
for R in "${OBS_RUNS[@]}"; do
  if echo "$M2" | grep -q "run=\"$R\""; then fail "/metrics still has series of torn-down run $R"; fi
done
ok "GET /metrics over the socket: +$N runs created and torn down, +$((2*N)) workers started, runs 0, workers 0, per-run series only while live"

# The journal: native entries (SNAKEPIT_RUN and friends as fields, PRIORITY
# from the level, MESSAGE without a timestamp of ours), one per lifecycle
# step of each run.
R=${OBS_RUNS[0]}
jq_run() {
  journalctl -u snakepit -o json --no-pager SNAKEPIT_RUN="$R" 2>/dev/null | $PY -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    print("%s;%s;%s;%s;%s" % (e.get("MESSAGE"), e.get("PRIORITY"), e.get("SNAKEPIT_WORKER", ""), e.get("SNAKEPIT_PID", ""), e.get("SNAKEPIT_UID", "")))'
}
wait_for 10 'jq_run | grep -q "^run torn down;6;"' || fail "journal: no native 'run torn down' entry with SNAKEPIT_RUN=$R: $(journalctl -u snakepit --no-pager -n 20 -o json | tail -5)"
J=$(jq_run)
for want in "^run created;6;;;0\$" "^worker started;6;1;[0-9]+;0\$" "^worker exited;6;1;[0-9]+;0\$" "^worker started;6;2;[0-9]+;0\$" "^run torn down;6;;;0\$"; do
  echo "$J" | grep -Eq "$want" || fail "journal entries of run $R lack /$want/: $J"
done
if echo "$J" | grep -q 'time='; then fail "journal MESSAGE carries a timestamp of its own: $J"; fi
code=$(journalctl -u snakepit -o json --no-pager SNAKEPIT_RUN="$R" | $PY -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    if e.get("MESSAGE") == "worker exited" and e.get("SNAKEPIT_WORKER") == "1":
        print(e.get("SNAKEPIT_CODE"))')
[ "$code" = 3 ] || fail "journal: worker 1 of $R exited with SNAKEPIT_CODE '$code', want 3"
ok "journalctl -u snakepit -o json SNAKEPIT_RUN=$R: $(echo "$J" | wc -l) native entries (run created, worker started/exited with SNAKEPIT_WORKER/PID/UID/CODE, run torn down)"
