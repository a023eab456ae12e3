"""die_with_parent(): the child really dies when its parent is SIGKILLed.

No sleeps: processes report readiness on pipes and deaths are observed
through pidfds.
"""

import os
import signal
import subprocess
import time

import pytest

from snakepit_worker import die_with_parent, parent_death_signal

from conftest import PYROOT, PYTHON, read_line, wait_pidfd

# The "parent" starts the "child" and prints its PID; the child arms the
# death signal, then announces itself and sleeps.
CHILD = r"""
import os, signal, sys
from snakepit_worker import die_with_parent, parent_death_signal
sig = int(sys.argv[1])
ok = die_with_parent(sig)
print(f"CHILD_READY pid={os.getpid()} armed={parent_death_signal()} ok={ok}", flush=True)
while True:
    signal.pause()
"""
PARENT = r"""
import subprocess, sys
c = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
sys.stdout.flush()
while True:
    import signal; signal.pause()
"""


def _env():
    return dict(os.environ, PYTHONPATH=PYROOT)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_child_dies_with_sigkilled_parent(cleanup, sig):
    parent = cleanup.popen([PYTHON, "-c", PARENT, CHILD, str(int(sig))],
                           stdout=subprocess.PIPE, env=_env())
    line = read_line(parent, "CHILD_READY")
    fields = dict(kv.split("=") for kv in line.split()[1:])
    child = int(fields["pid"])
    assert int(fields["armed"]) == int(sig)
    assert fields["ok"] == "True"
    fd = cleanup.watch(child)
    t0 = time.monotonic()
    parent.kill()
    parent.wait()
    assert wait_pidfd(fd, 5.0), f"child {child} still alive 5 s after its parent was SIGKILLed"
    print(f"child gone {1000 * (time.monotonic() - t0):.1f} ms after parent SIGKILL")


def test_parent_already_dead_race():
    """parent_pid no longer our parent (it died before we armed the signal):
    die_with_parent sends the signal to ourselves at once."""
    code = ("from snakepit_worker import die_with_parent\n"
            "import signal\n"
            "die_with_parent(signal.SIGKILL, parent_pid=1 if __import__('os').getppid() != 1 else 2)\n"
            "print('STILL ALIVE', flush=True)\n")
    p = subprocess.run([PYTHON, "-c", code], env=_env(), capture_output=True, timeout=30)
    assert p.returncode == -signal.SIGKILL, p
    assert b"STILL ALIVE" not in p.stdout


def test_parent_already_dead_catchable_signal():
    code = ("from snakepit_worker import die_with_parent\n"
            "import signal\n"
            "die_with_parent(signal.SIGTERM, parent_pid=1)\n"
            "print('STILL ALIVE', flush=True)\n")
    p = subprocess.run([PYTHON, "-c", code], env=_env(), capture_output=True, timeout=30)
    assert p.returncode == -signal.SIGTERM, p
    assert b"STILL ALIVE" not in p.stdout


def test_parent_already_dead_handler_decides():
    code = ("import signal, sys\n"
            "from snakepit_worker import die_with_parent\n"
            "got = []\n"
            "signal.signal(signal.SIGTERM, lambda s, f: got.append(s))\n"
            "r = die_with_parent(signal.SIGTERM, parent_pid=1)\n"
            "print('RESULT', r, got, flush=True)\n")
    p = subprocess.run([PYTHON, "-c", code], env=_env(), capture_output=True, timeout=30)
    assert p.returncode == 0, p
    assert b"RESULT False [15]" in p.stdout


def test_arms_in_this_process_and_returns_true():
    # Run in a throwaway child so pytest itself is not left armed.
    code = ("import os, signal\n"
            "from snakepit_worker import die_with_parent, parent_death_signal\n"
            "assert parent_death_signal() == 0\n"
            "assert die_with_parent(signal.SIGUSR1, parent_pid=os.getppid()) is True\n"
            "print(parent_death_signal())\n")
    p = subprocess.run([PYTHON, "-c", code], env=_env(), capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(int(signal.SIGUSR1)).encode()


def test_in_process_reexports():
    assert callable(die_with_parent) and parent_death_signal() in range(0, 65)
