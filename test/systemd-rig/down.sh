#!/bin/bash
# Stop the guest and remove everything up.sh created on the host. Safe to
# run twice and after a failed up.sh.
: "${STATE:?}"
[ -d "$STATE" ] || exit 0
SPID=$(cat "$STATE/script.pid" 2>/dev/null); UPID=$(cat "$STATE/unshare.pid" 2>/dev/null); G=$(cat "$STATE/guest.pid" 2>/dev/null)
# No graceful poweroff: the guest holds nothing worth saving, and SIGKILL to
# unshare makes the kernel SIGKILL guest PID 1 (--kill-child), which kills
# the whole pid namespace at once.
if [ -n "$UPID" ] && kill -0 "$UPID" 2>/dev/null; then kill -KILL "$UPID"; fi
if [ -n "$G" ] && kill -0 "$G" 2>/dev/null; then kill -KILL "$G"; fi
for i in $(seq 100); do [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
CG=$(cat "$STATE/cgroup" 2>/dev/null)
if [ -n "$CG" ] && [ -d "$CG" ]; then
  [ -e "$CG/cgroup.kill" ] && echo 1 > "$CG/cgroup.kill"   # only our subtree
  for i in $(seq 100); do find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null; [ -d "$CG" ] || break; sleep 0.05; done
  [ -d "$CG" ] && { echo "rig: WARNING: $CG still exists" >&2; exit 1; }
fi
[ -n "${KEEP_LOG:-}" ] && cp "$STATE/console.log" "$KEEP_LOG"
rm -rf "$STATE"
true
