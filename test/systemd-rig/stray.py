"""Lists cgroups that are neither a systemd unit nor inside a unit with
Delegate=yes (used by guest-placement.sh): snakepit must make no cgroup
outside a delegated subtree or a unit it asked for while systemd is PID 1.

argv: the cgroup2 mount. Prints the strays and exits 1 when there are any.
"""
import os
import sys

UNIT = (".slice", ".service", ".scope", ".socket", ".mount", ".swap")


def delegated(path):
    try:
        return os.getxattr(path, "trusted.delegate") == b"1"
    except OSError:
        return False


root = sys.argv[1]
strays = []
for dirpath, dirnames, _ in os.walk(root):
    keep = []
    for d in dirnames:
        p = os.path.join(dirpath, d)
        if d.endswith(UNIT):
            if delegated(p):
                continue  # below it is its delegatee's
            keep.append(d)
        else:
            strays.append(p)
    dirnames[:] = keep
if strays:
    print(" ".join(strays))
    sys.exit(1)
