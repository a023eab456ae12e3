"""Wait for processes to exit, through pidfds (used by guest.sh).

argv: PIDs. Opens a pidfd for each (a PID already gone counts as exited),
prints "ready", waits for a line on stdin (the kill was sent), then waits
until every pidfd is readable (the process exited) and prints
"all-gone <ms since the line>" or, after 5 s, "survivors <ms> <pids>".
"""
import os
import select
import sys
import time

fds = {}
for a in sys.argv[1:]:
    try:
        fds[os.pidfd_open(int(a))] = int(a)
    except ProcessLookupError:
        pass
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
p = select.poll()
for fd in fds:
    p.register(fd, select.POLLIN)
left = dict(fds)
while left:
    rem = 5000 - (time.monotonic() - t0) * 1000
    if rem <= 0:
        break
    for fd, _ in p.poll(rem):
        p.unregister(fd)
        left.pop(fd, None)
ms = (time.monotonic() - t0) * 1000
if left:
    print("survivors %.1f %s" % (ms, " ".join(str(v) for v in left.values())), flush=True)
else:
    print("all-gone %.1f" % ms, flush=True)
