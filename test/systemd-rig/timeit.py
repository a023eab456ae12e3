"""Times a command (used by guest-placement.sh): argv: N NAME CMD...; runs
CMD N times (after one warm-up) and prints "NAME<TAB>median ms"."""
import statistics
import subprocess
import sys
import time

n, name, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
ts = []
for _ in range(n):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ts.append((time.perf_counter() - t0) * 1000)
print(f"{name}\t{statistics.median(ts):.3f}", flush=True)
