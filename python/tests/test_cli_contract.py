"""The parts of the snakepit CLI the Python side builds on, checked from Python:
create / exec / ps --json --tree / kill / run, and the owner guardian."""

import os
import signal
import subprocess
import time

import pytest

from conftest import FIXTURES, PYTHON, pid_cgroup, read_line, report, wait_pidfd
from snakepit_worker import generate_run_id, validate_run_id
from snakepit_worker.cli import Snakepit, SnakepitError, cgroup_pids


def _wait_exec(pid, prefix=b"sleep\0", timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(prefix):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    raise TimeoutError(f"pid {pid} never exec'd {prefix!r}")


def test_create_ps_exec_kill(sp, cleanup):
    rid = cleanup.run(sp.create(owner_pid=os.getpid(), grace="0s"))
    validate_run_id(rid)
    run = sp.info(rid)
    assert run is not None
    assert run["owner_pid"] == os.getpid() and run["owner_alive"] is True
    assert run["mechanism"] == "cgroup"
    cg = run["cgroup"]
    assert os.path.isdir(cg) and os.path.basename(cg) == f"snakepit-{rid}"
    assert run["procs"] == 0

    p = cleanup.popen(sp.exec_argv(rid, ["sleep", "300"]))
    _wait_exec(p.pid)
    # exec keeps the PID and the process is in the run's cgroup.
    assert cg.endswith(pid_cgroup(p.pid))
    assert cgroup_pids(cg) == [p.pid]
    run = sp.info(rid)
    assert run["procs"] == 1
    assert [(x["pid"], x["cmdline"]) for x in run["processes"]] == [(p.pid, "sleep 300")]

    fd = cleanup.watch(p.pid)
    sp.kill(rid, grace="0s")
    assert wait_pidfd(fd, 0), "process alive after snakepit kill returned"
    assert not os.path.exists(cg)
    assert sp.info(rid) is None
    p.wait(timeout=5)


def test_exec_sets_run_id_env(sp, cleanup):
    rid = cleanup.run(sp.create(grace="0s"))
    res = subprocess.run(sp.exec_argv(rid, [PYTHON, "-c",
                                            "import os; print(os.environ['SNAKEPIT_RUN_ID'])"]),
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == rid, res


def test_exec_overrides_inherited_run_id(sp, cleanup):
    """Nested use (e.g. this very suite run under `snakepit run`): the
    environment already carries SNAKEPIT_RUN_ID of the outer run. exec must
    replace it, not append a second entry: getenv()/Python's os.environ take
    the FIRST entry, so a duplicate makes the worker report the outer run."""
    rid = cleanup.run(sp.create(grace="0s"))
    env = dict(os.environ, SNAKEPIT_RUN_ID="outer00")
    res = subprocess.run(sp.exec_argv(rid, [PYTHON, "-c",
                                            "import os; print(os.environ['SNAKEPIT_RUN_ID']);"
                                            "print(open('/proc/self/environ','rb').read()"
                                            ".count(b'SNAKEPIT_RUN_ID='))"]),
                         env=env, capture_output=True, text=True, timeout=30)
    seen, count = res.stdout.split()
    assert (seen, count) == (rid, "1"), f"worker saw SNAKEPIT_RUN_ID={seen} ({count} entries), want {rid}"


def test_kill_unknown_and_invalid(sp):
    with pytest.raises(SnakepitError):
        sp.kill(generate_run_id(), grace="0s")
    res = subprocess.run([sp.binary, "kill", "../etc"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "invalid run ID" in res.stderr


def test_run_status_and_env(sp):
    rid = generate_run_id()
    res = subprocess.run(sp.run_argv(["sh", "-c", 'echo "$SNAKEPIT_RUN_ID"; exit 3'], run_id=rid,
                                     grace="0s"), capture_output=True, text=True, timeout=30)
    assert res.returncode == 3 and res.stdout.strip() == rid, res
    res = subprocess.run(sp.run_argv(["sh", "-c", "kill -TERM $$"], grace="0s"),
                         capture_output=True, timeout=30)
    assert res.returncode == 128 + signal.SIGTERM
    assert sp.info(rid) is None


def test_run_leaves_nothing(sp, cleanup, tmp_path):
    out = tmp_path / "pids"
    script = (f'sleep 300 & echo $! >> {out}; '
              f'setsid sh -c "sleep 301 & echo \\$! >> {out}"; exit 0')
    res = subprocess.run(sp.run_argv(["sh", "-c", script], grace="0s"), timeout=60)
    assert res.returncode == 0
    pids = [int(x) for x in out.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        try:
            fd = cleanup.watch(pid)
        except ProcessLookupError:
            continue
        assert wait_pidfd(fd, 0), f"pid {pid} outlived `snakepit run`"


def test_guardian_tears_down_when_owner_dies(sp, cleanup):
    owner = cleanup.popen(["sleep", "300"])
    rid = cleanup.run(sp.create(owner_pid=owner.pid, grace="0s"))
    cg = sp.info(rid)["cgroup"]
    w = cleanup.popen(sp.exec_argv(rid, [PYTHON, "-c", "import signal; print('UP', flush=True); signal.pause()"]),
                      stdout=subprocess.PIPE)
    read_line(w, "UP")
    fd = cleanup.watch(w.pid)
    t0 = time.monotonic()
    owner.kill()
    owner.wait()
    assert wait_pidfd(fd, 5), "worker survived its run owner's death"
    gone = (time.monotonic() - t0) * 1000
    deadline = time.monotonic() + 5
    while os.path.exists(cg) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not os.path.exists(cg)
    report("guardian (create --owner-pid): worker gone after owner SIGKILL", f"{gone:.1f} ms")


def test_kill_waits_out_a_grace_longer_than_its_timeout(sp, cleanup):
    """Snakepit.kill waits its timeout plus the grace: a `snakepit kill`
    cut short mid-grace would leave a SIGTERM-ignoring process alive."""
    short = Snakepit(sp.binary, timeout=1)
    rid = cleanup.run(sp.create(grace="0s"))
    w = cleanup.popen(sp.exec_argv(rid, [PYTHON, f"{FIXTURES}/sigterm_ignorer.py"]), stdout=subprocess.PIPE)
    pid = int(read_line(w, "SIGTERM_IGNORER_READY").split("pid=")[1].split()[0])
    fd = cleanup.watch(pid)
    t0 = time.monotonic()
    short.kill(rid, grace=2)
    took = time.monotonic() - t0
    assert wait_pidfd(fd, 0), "the SIGTERM-ignoring process outlived snakepit kill"
    assert took >= 1.9, f"kill returned after {took:.2f}s with a 2 s grace"
    assert sp.info(rid) is None
