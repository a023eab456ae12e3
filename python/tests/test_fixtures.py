"""The adversarial fixtures misbehave as documented, and a snakepit run still
takes every one of them down completely (snakepit kill: nothing survives,
the cgroup is removed)."""

import os
import subprocess
import time

import pytest

from conftest import (
    FIXTURES,
    PYTHON,
    parse_fields,
    pid_cgroup,
    pid_list,
    read_line,
    report,
    wait_pidfd,
)
from snakepit_worker.cli import cgroup_pids, live_processes, proc_state

CASES = {
    "forker": (["forker.py", "-n", "5", "--grandchildren", "2"], "FORKER_READY", 1 + 5 + 10),
    "forker-orphan": (["forker.py", "-n", "5", "--orphan"], "FORKER_READY", 5),
    "daemonizer": (["daemonizer.py", "--count", "3", "--ignore-sigterm"], "DAEMONIZER_READY", 3),
    "sigterm_ignorer": (["sigterm_ignorer.py", "--children", "3"], "SIGTERM_IGNORER_READY", 4),
    "sigterm_ignorer-handler": (["sigterm_ignorer.py", "--children", "3", "--handler"],
                                "SIGTERM_IGNORER_READY", 4),
    "zombie_maker": (["zombie_maker.py", "-n", "5"], "ZOMBIE_MAKER_READY", 1),
    "argv_rewriter": (["argv_rewriter.py"], "ARGV_REWRITER_READY", 1),
    "fork_storm": (["fork_storm.py"], "FORK_STORM_READY", 200),
    "fork_storm-chain": (["fork_storm.py", "--chain", "-n", "100", "--setsid"], "FORK_STORM_READY", 100),
    "fork_storm-churn": (["fork_storm.py", "--churn", "-n", "200", "--setsid"], "FORK_STORM_READY", None),
}


def _start(sp, cleanup, args, prefix, grace="300ms"):
    rid = cleanup.run(sp.create(grace=grace))
    cg = sp.info(rid)["cgroup"]
    p = cleanup.popen(sp.exec_argv(rid, [PYTHON, os.path.join(FIXTURES, args[0]), *args[1:],
                                         "--snakepit-run-id", rid]),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = read_line(p, prefix, timeout=60)
    return rid, cg, p, parse_fields(line)


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_is_taken_down(sp, cleanup, name):
    args, prefix, expect = CASES[name]
    rid, cg, p, fields = _start(sp, cleanup, args, prefix)
    if name in ("forker-orphan", "daemonizer"):
        p.wait(timeout=10)  # these parents exit right after their readiness line
    procs = live_processes(cgroup_pids(cg))
    if expect is not None:
        assert len(procs) == expect, procs
    else:
        assert procs
    fds = {}
    for proc in procs:
        try:
            fds[proc.pid] = cleanup.watch(proc.pid)
        except ProcessLookupError:
            pass  # churn: already gone
    t0 = time.monotonic()
    sp.kill(rid, grace="300ms")
    took = (time.monotonic() - t0) * 1000
    alive = [pid for pid, fd in fds.items() if not wait_pidfd(fd, 0)]
    assert not alive, f"alive after snakepit kill returned: {alive}"
    assert not os.path.exists(cg), f"{cg} still exists"
    assert sp.info(rid) is None
    report(f"teardown {name} ({len(procs)} procs, grace 300ms)", f"{took:.1f} ms")


def test_daemonizer_escapes_session(sp, cleanup):
    rid, cg, p, f = _start(sp, cleanup, ["daemonizer.py", "--count", "2"], "DAEMONIZER_READY")
    p.wait(timeout=10)
    for d, sid in zip(pid_list(f["daemon"]), pid_list(f["sid"])):
        # Not a session leader (double fork), but in its own session and group.
        assert os.getsid(d) == sid != d and os.getpgid(d) == sid
        assert sid not in (os.getsid(0), os.getpgid(0))
        assert cg.endswith(pid_cgroup(d))


def test_zombie_maker_zombies_not_live(sp, cleanup):
    rid, cg, p, f = _start(sp, cleanup, ["zombie_maker.py", "-n", "4"], "ZOMBIE_MAKER_READY")
    zombies = pid_list(f["zombies"])
    assert all(proc_state(z) == "Z" for z in zombies)
    assert [x.pid for x in live_processes(cgroup_pids(cg))] == [p.pid]


def test_argv_rewriter_hides_markers(sp, cleanup):
    rid, cg, p, f = _start(sp, cleanup, ["argv_rewriter.py"], "ARGV_REWRITER_READY")
    pid = int(f["pid"])
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    with open(f"/proc/{pid}/environ", "rb") as fh:
        environ = fh.read()
    assert rid.encode() not in cmdline and b"--snakepit-run-id" not in cmdline
    assert b"SNAKEPIT_RUN_ID" not in environ and rid.encode() not in environ
    # Still in the run: the cgroup sees it, snakepit ps lists it.
    assert pid in cgroup_pids(cg)
    run = sp.info(rid)
    assert pid in [int(x["pid"]) for x in run.get("processes", [])]
    report("argv_rewriter method on this host", f["method"])


@pytest.mark.parametrize("method", ["inplace", "reexec"])
def test_argv_rewriter_methods(sp, cleanup, method):
    rid, cg, p, f = _start(sp, cleanup, ["argv_rewriter.py", "--method", method, "--title", "zz"],
                           "ARGV_REWRITER_READY")
    assert f["method"] == method
    assert f["environ_bytes"] == "0"
    with open(f"/proc/{f['pid']}/cmdline", "rb") as fh:
        assert fh.read().startswith(b"zz\0")
