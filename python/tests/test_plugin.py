"""The pytest plugin: in-process use of snakepit_run, and sub-pytest runs of a
deliberately leaky test (an ERROR at teardown, listing each leak) and a clean one."""

import os
import re
import signal
import subprocess
import textwrap
import time

import pytest

from conftest import FIXTURES, PYROOT, PYTHON, pid_cgroup, wait_pidfd
from snakepit_worker.cli import cgroup_pids


def test_popen_runs_inside_the_run(snakepit_run, tmp_path):
    need = [snakepit_run.id, snakepit_run.cgroup]
    assert all(need), need
    out = tmp_path / "env"
    p = snakepit_run.popen(["sh", "-c", f'echo "$SNAKEPIT_RUN_ID" > {out}; exec sleep 30'])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                if f.read().startswith(b"sleep\0"):
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    # exec keeps the PID: the Popen's pid is the command itself, in the run's cgroup.
    assert open(f"/proc/{p.pid}/cmdline", "rb").read() == b"sleep\x0030\x00"
    assert snakepit_run.cgroup.endswith(pid_cgroup(p.pid))
    assert out.read_text().strip() == snakepit_run.id
    assert [x.pid for x in snakepit_run.processes()] == [p.pid]
    p.terminate()
    p.wait()
    assert snakepit_run.processes() == []


def test_run_helper(snakepit_run):
    res = snakepit_run.run(["sh", "-c", "echo $SNAKEPIT_RUN_ID; cat /proc/self/cgroup"],
                           capture_output=True, text=True, check=True)
    rid, *cg = res.stdout.split("\n")
    assert rid == snakepit_run.id
    assert any(line.startswith("0::") and line.endswith("snakepit-" + rid) for line in cg)


@pytest.mark.snakepit(allow_leaks=True)
def test_allow_leaks_marker(snakepit_run):
    snakepit_run.popen(["sh", "-c", "sleep 300 & exit 0"]).wait()


INNER = textwrap.dedent('''
    import os, subprocess

    PY = {python!r}
    FIX = {fixtures!r}
    PIDS = os.environ["LEAK_PIDS_FILE"]

    def _ready(p, prefix):
        for line in p.stdout:
            if line.startswith(prefix):
                return dict(kv.split("=") for kv in line.split()[1:])
        raise AssertionError("no " + prefix)

    def test_clean(snakepit_run):
        with open(PIDS, "w") as out:
            out.write(snakepit_run.id)
        p = snakepit_run.popen([PY, FIX + "/forker.py", "-n", "3"], stdout=subprocess.PIPE, text=True)
        _ready(p, "FORKER_READY")
        # Stop the whole tree ourselves: the parent alone would orphan its children.
        for proc in snakepit_run.processes():
            os.kill(proc.pid, 9)
        p.wait()

    def test_leaky(snakepit_run):
        # 2 orphaned children of a forker, 2 double-forked setsid daemons.
        f = snakepit_run.popen([PY, FIX + "/forker.py", "-n", "2", "--orphan"],
                               stdout=subprocess.PIPE, text=True)
        kids = _ready(f, "FORKER_READY")["children"].split(",")
        f.wait()
        d = snakepit_run.popen([PY, FIX + "/daemonizer.py", "--count", "2", "--ignore-sigterm"],
                               stdout=subprocess.PIPE, text=True)
        daemons = _ready(d, "DAEMONIZER_READY")["daemon"].split(",")
        d.wait()
        with open(PIDS, "w") as out:
            out.write(" ".join([snakepit_run.id] + kids + daemons))
        assert f.returncode == 0 and d.returncode == 0  # the test body itself passes
''')


def _sub_pytest(tmp_path, snakepit_bin, *selectors, extra_env=None):
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER.format(python=PYTHON, fixtures=FIXTURES))
    pids_file = tmp_path / "pids"
    env = dict(os.environ, PYTHONPATH=PYROOT, LEAK_PIDS_FILE=str(pids_file))
    env.pop("PYTEST_ADDOPTS", None)
    env.update(extra_env or {})
    argv = [PYTHON, "-m", "pytest", "-p", "pytest_snakepit", "-p", "no:cacheprovider",
            "--snakepit-bin", snakepit_bin, "-rfE", "-v",
            *[f"{inner}::{s}" for s in selectors]]
    res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return res, pids_file


def test_leaky_test_errors_listing_each_leak(sp, snakepit_bin, tmp_path, cleanup):
    res, pids_file = _sub_pytest(tmp_path, snakepit_bin, "test_leaky")
    out = res.stdout + res.stderr
    print(out)
    assert res.returncode == 1, out
    rid, *leaked = pids_file.read_text().split()
    leaked = [int(x) for x in leaked]
    assert len(leaked) == 4
    assert "snakepit: test leaked 4 process(es)" in out
    for pid in leaked:
        assert f"pid {pid} " in out, f"leak {pid} not listed"
    assert out.count("forker.py -n 2 --orphan") >= 2
    assert out.count("daemonizer.py --count 2 --ignore-sigterm") >= 2
    # Reported as an error at teardown, not as a second outcome of the test:
    # the body passed, the snakepit_run fixture's teardown errored.
    assert "ERROR at teardown of test_leaky" in out
    assert "ERROR test_inner.py::test_leaky" in out
    assert "FAILED" not in out
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\b1 passed, 1 error\b", summary) and "failed" not in summary, summary
    # And the plugin killed them all: no leaked PID is still running.
    for pid in leaked:
        try:
            fd = cleanup.watch(pid)
        except ProcessLookupError:
            continue
        assert wait_pidfd(fd, 2), f"leaked pid {pid} survived the plugin's teardown"
    assert sp.info(rid) is None, "the sub-pytest left its run behind"


def test_clean_test_passes(snakepit_bin, sp, tmp_path):
    res, pids_file = _sub_pytest(tmp_path, snakepit_bin, "test_clean")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "1 passed" in out and "leaked" not in out
    assert sp.info(pids_file.read_text().strip()) is None


GUARDED = textwrap.dedent('''
    import os, time
    def test_sleeps(snakepit_run):
        p = snakepit_run.popen(["sleep", "300"])
        with open(os.environ["OUT"], "w") as f:
            f.write(f"{p.pid} {snakepit_run.id} {snakepit_run.cgroup}")
        time.sleep(300)
''')


def test_sigkilled_pytest_leaves_nothing(snakepit_bin, sp, tmp_path, cleanup):
    """pytest itself SIGKILLed mid-test: the run's guardian (snakepit create
    --owner-pid) must tear the run down."""
    inner = tmp_path / "test_guarded.py"
    inner.write_text(GUARDED)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=PYROOT, OUT=str(out))
    p = cleanup.popen([PYTHON, "-m", "pytest", "-p", "pytest_snakepit", "-p", "no:cacheprovider",
                       "--snakepit-bin", snakepit_bin, "-q", str(inner)],
                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text().count(" ") >= 2):
        assert time.monotonic() < deadline and p.poll() is None, p.stdout.read() if p.poll() is not None else "timeout"
        time.sleep(0.01)
    pid_s, rid, cgroup = out.read_text().split(" ", 2)
    cleanup.run(rid)
    fd = cleanup.watch(int(pid_s))
    t0 = time.monotonic()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert wait_pidfd(fd, 10), "worker of a SIGKILLed pytest survived"
    gone_ms = (time.monotonic() - t0) * 1000
    deadline = time.monotonic() + 10
    while os.path.exists(cgroup) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not os.path.exists(cgroup), f"{cgroup} left behind (pids {cgroup_pids(cgroup)})"
    print(f"guardian: worker gone {gone_ms:.1f} ms after pytest was SIGKILLed")


def _fill_fds_past(n: int) -> list[int]:
    """Open /dev/null until the next free fd is above n; the fds opened."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    fds = []
    try:
        while not fds or fds[-1] <= n:
            fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def test_settle_with_pidfds_past_fd_setsize(cleanup):
    """A test that leaked 1000+ processes: teardown's pidfds are numbered past
    select()'s 1024. The settle wait must still work (poll, not select)."""
    from pytest_snakepit import _settle
    from snakepit_worker.cli import ProcInfo

    live = cleanup.popen(["sleep", "300"])
    dying = cleanup.popen(["sleep", "301"])
    dying.kill()  # exiting (a zombie until reaped): not a leak
    fill = _fill_fds_past(1100)
    try:
        got = _settle([ProcInfo(live.pid, "sleep 300"), ProcInfo(dying.pid, "sleep 301")])
    finally:
        for fd in fill:
            os.close(fd)
    assert [p.pid for p in got] == [live.pid]


def test_teardown_kills_even_when_listing_fails():
    """Whatever the leak listing raises, `snakepit kill` still runs and the
    failure is reported as a problem of the teardown."""
    from pytest_snakepit import SnakepitLeak, _teardown

    killed = []

    class FakeSnakepit:
        def kill(self, *ids, grace=None):
            killed.append((ids, grace))

    class FakeRun:
        id, cgroup, popens, closed, snakepit = "abc1234", None, [], False, FakeSnakepit()

        def processes(self):
            raise ValueError("filedescriptor out of range in select()")

    run = FakeRun()
    with pytest.raises(SnakepitLeak) as ei:
        _teardown(run, False, 0)
    assert killed == [(("abc1234",), 0)]
    assert run.closed
    assert "listing processes of run abc1234" in str(ei.value)
    assert "filedescriptor out of range" in str(ei.value)


FAKE_SNAKEPIT = """#!/bin/sh
echo "snakepit: fake failure" >&2
exit {code}
"""

CREATE_FAILS = textwrap.dedent('''
    def test_needs_a_run(snakepit_run):
        pass
''')


@pytest.mark.parametrize("code,outcome", [
    (2, "error"),      # usage: e.g. --grace: invalid duration
    (121, "error"),    # run ID already in use
    (125, "error"),    # other snakepit failure
    (117, "skipped"),  # no cgroup.kill nor cgroup.freeze
    (122, "skipped"),  # permission denied on cgroupfs
    (123, "skipped"),  # no cgroup2 mounted
])
def test_create_failure_skips_only_for_a_missing_prerequisite(tmp_path, code, outcome):
    """Outside CI, a `snakepit create` that fails for want of root or cgroup2
    skips the test; any other failure is an error, never a skip."""
    fake = tmp_path / "snakepit"
    fake.write_text(FAKE_SNAKEPIT.format(code=code))
    fake.chmod(0o755)
    (tmp_path / "test_create_fails.py").write_text(CREATE_FAILS)
    env = dict(os.environ, PYTHONPATH=PYROOT, CI="")
    env.pop("PYTEST_ADDOPTS", None)
    res = subprocess.run([PYTHON, "-m", "pytest", "-p", "pytest_snakepit", "-p", "no:cacheprovider",
                          "--snakepit-bin", str(fake), "-rsE", "test_create_fails.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    summary = out.strip().splitlines()[-1]
    assert re.search(rf"\b1 {outcome}\b", summary), out
    assert f"exit {code}: snakepit: fake failure" in out, out


def test_bad_marker_grace_is_an_error_not_a_skip(snakepit_bin, sp, tmp_path):
    (tmp_path / "test_bad_grace.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.snakepit(grace="forever")
        def test_bad_grace(snakepit_run):
            pass
    '''))
    env = dict(os.environ, PYTHONPATH=PYROOT, CI="")
    env.pop("PYTEST_ADDOPTS", None)
    res = subprocess.run([PYTHON, "-m", "pytest", "-p", "pytest_snakepit", "-p", "no:cacheprovider",
                          "--snakepit-bin", snakepit_bin, "-rsE", "test_bad_grace.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "1 error" in out.strip().splitlines()[-1], out
    assert "--grace" in out and "exit 2" in out, out
