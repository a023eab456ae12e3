"""pytest_snakepit: every test gets its own snakepit run; leaked processes are an error.

Enable with ``-p pytest_snakepit`` (PYTHONPATH must contain python/) or by
installing python/ (pyproject.toml declares the pytest11 entry point).

    def test_worker(snakepit_run):
        p = snakepit_run.popen(["/usr/bin/python3", "worker.py"])
        ...
        p.terminate(); p.wait()

`snakepit_run.popen(argv, **popen_kwargs)` starts ``snakepit exec RUNID --
argv`` (exec joins the run's cgroup, sets SNAKEPIT_RUN_ID and execve's argv,
so the Popen's pid is the command's pid). Everything the command forks,
including daemons that setsid() away, stays in the run's cgroup.

At teardown the plugin lists every live process of the run, tears the run
down with ``snakepit kill`` (nothing survives, the cgroup is removed) and,
if any process was still alive, raises an error listing PID and command line
of each leak (a process that is already exiting, e.g. SIGKILLed by the test
just before, gets 100 ms to disappear and is not a leak). The error happens
in the fixture's teardown (after every fixture that depends on snakepit_run
has been torn down, so fixtures may stop their own workers), and pytest
reports it as such: ``ERROR at teardown of test_x``, counted as ``1 error``
in the summary, next to the test body's own outcome (pytest's convention
for any fixture whose teardown fails; the body's assertions are FAILED).

The binary: ``--snakepit-bin``, else $SNAKEPIT_BIN, else ``snakepit`` on
PATH. When it or its prerequisites (root, cgroup2) are missing the test is
skipped with the reason, unless CI=true, where that is a failure. Any
other failure of ``snakepit create`` (a bad ``grace``, a ``run_id`` in use)
fails the test.

Marker: ``@pytest.mark.snakepit(allow_leaks=True, grace=0.5, run_id="abc1234")``
- allow_leaks: kill leftovers without failing the test.
- grace: --grace for ``snakepit create``/``kill`` (default 0: leaks are bugs,
  kill them at once).
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from typing import Sequence

import pytest

from snakepit_worker import validate_run_id
from snakepit_worker.cli import (
    ProcInfo,
    Snakepit,
    SnakepitError,
    SnakepitUnavailable,
    cgroup_pids,
    live_processes,
)

__all__ = ["SnakepitRun", "SnakepitLeak", "snakepit_run", "require", "ci_strict"]


def ci_strict() -> bool:
    """True when a missing prerequisite must fail instead of skip (CI=true)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) the current test unless `condition`."""
    if condition:
        return
    if ci_strict():
        pytest.fail(f"prerequisite missing (CI=true makes this a failure): {reason}", pytrace=False)
    pytest.skip(reason)


class SnakepitLeak(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """Raised at teardown when a test left live processes in its run."""


class SnakepitRun:
    """One run for one test. Attributes: id, cgroup, binary, snakepit."""

    def __init__(self, sp: Snakepit, run_id: str, cgroup: str | None, mechanism: str | None) -> None:
        self.snakepit = sp
        self.binary = sp.binary
        self.id = run_id
        self.cgroup = cgroup
        self.mechanism = mechanism
        self.popens: list[subprocess.Popen] = []
        self.closed = False

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside this run."""
        return self.snakepit.exec_argv(self.id, argv)

    @staticmethod
    def _env(kwargs: dict) -> dict:
        # An inherited SNAKEPIT_RUN_ID (pytest itself running inside a run)
        # must not shadow the one `snakepit exec` sets for this run.
        env = dict(kwargs.get("env") if kwargs.get("env") is not None else os.environ)
        env.pop("SNAKEPIT_RUN_ID", None)
        return {**kwargs, "env": env}

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen of `argv` inside this run (pid == the command's pid)."""
        if self.closed:
            raise RuntimeError(f"snakepit run {self.id} is already torn down")
        p = subprocess.Popen(self.argv(argv), **self._env(kwargs))
        self.popens.append(p)
        return p

    def run(self, argv: Sequence[str], *, timeout: float | None = 60, check: bool = False,
            input=None, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run() inside this run."""
        if self.closed:
            raise RuntimeError(f"snakepit run {self.id} is already torn down")
        return subprocess.run(self.argv(argv), timeout=timeout, check=check, input=input,
                              **self._env(kwargs))

    def pids(self) -> list[int]:
        """PIDs currently in the run (zombies included)."""
        if self.cgroup:
            return cgroup_pids(self.cgroup)
        return [p.pid for p in self.processes()]

    def processes(self) -> list[ProcInfo]:
        """Live (non-zombie) processes currently in the run."""
        return self.snakepit.processes(self.id, self.cgroup)

    def __repr__(self) -> str:
        return f"<SnakepitRun {self.id} cgroup={self.cgroup}>"


def _format_leaks(run: SnakepitRun, leaks: list[ProcInfo]) -> str:
    lines = [f"snakepit: test leaked {len(leaks)} process(es) in run {run.id} "
             f"(all killed at teardown):"]
    for p in sorted(leaks, key=lambda x: x.pid):
        lines.append(f"  pid {p.pid} [{p.state}]: {p.cmdline}")
    return "\n".join(lines)


def pytest_addoption(parser) -> None:
    group = parser.getgroup("snakepit")
    group.addoption("--snakepit-bin", default=None,
                    help="snakepit binary (default: $SNAKEPIT_BIN, then PATH)")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "snakepit(allow_leaks=False, grace=0, run_id=None): options for the snakepit_run fixture")


# Exit statuses of `snakepit create` that mean a missing prerequisite
# (README, "Exit statuses"): no cgroup.kill/freeze (Linux < 5.2),
# permission denied on cgroupfs (not root, not delegated), no cgroup2.
PREREQUISITE_EXITS = (117, 122, 123)


@pytest.fixture
def snakepit_run(request):
    """A fresh snakepit run for this test; leaked processes are an error at teardown."""
    marker = request.node.get_closest_marker("snakepit")
    opts = dict(marker.kwargs) if marker else {}
    allow_leaks = bool(opts.get("allow_leaks", False))
    grace = opts.get("grace", 0)
    wanted_id = opts.get("run_id")
    if wanted_id is not None:
        validate_run_id(wanted_id)

    try:
        sp = Snakepit(request.config.getoption("--snakepit-bin"))
    except SnakepitUnavailable as exc:
        require(False, str(exc))
        raise  # unreachable
    try:
        run_id = sp.create(run_id=wanted_id, owner_pid=os.getpid(), grace=grace)
    except SnakepitError as exc:
        if isinstance(exc, SnakepitUnavailable) or exc.returncode in PREREQUISITE_EXITS:
            require(False, f"snakepit create failed (needs root and cgroup2): {exc}")
        # Anything else (a bad marker value, a run ID in use, a snakepit
        # failure) is the test's or snakepit's fault: never a skip.
        pytest.fail(f"snakepit create failed: {exc}", pytrace=False)
        raise
    cgroup = mechanism = None
    try:
        info = sp.info(run_id)
        if info:
            cgroup = info.get("cgroup") or None
            mechanism = info.get("mechanism")
    except (SnakepitError, ValueError):
        pass
    run = SnakepitRun(sp, run_id, cgroup, mechanism)
    try:
        yield run
    finally:
        _teardown(run, allow_leaks, grace)


# A process the test has just SIGKILLed may still be exiting when teardown
# looks; it is not a leak. Leak candidates get this long to disappear.
LEAK_SETTLE_S = 0.1


def _settle(procs: list[ProcInfo]) -> list[ProcInfo]:
    if not procs:
        return procs
    fds = {}
    for p in procs:
        try:
            fds[p.pid] = os.pidfd_open(p.pid)
        except (ProcessLookupError, OSError):
            pass  # already gone
    try:
        deadline = time.monotonic() + LEAK_SETTLE_S
        # poll(), not select(): a test that leaked 1000+ processes has
        # pidfds numbered past select()'s FD_SETSIZE (1024).
        poller = select.poll()
        for fd in fds.values():
            poller.register(fd, select.POLLIN)
        pending = {fd: pid for pid, fd in fds.items()}
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                if pending.pop(fd, None) is not None:
                    poller.unregister(fd)
        waiting = set(pending.values())
        return [p for p in procs if p.pid in waiting and live_processes([p.pid])]
    finally:
        for fd in fds.values():
            os.close(fd)


def _teardown(run: SnakepitRun, allow_leaks: bool, grace) -> None:
    __tracebackhide__ = True
    leaks: list[ProcInfo] = []
    problems: list[str] = []
    try:
        leaks = _settle(run.processes())
    except Exception as exc:  # noqa: BLE001 - whatever it is, the kill below must run
        detail = exc if isinstance(exc, SnakepitError) else repr(exc)
        problems.append(f"listing processes of run {run.id}: {detail}")
    try:
        run.snakepit.kill(run.id, grace=grace)
    except SnakepitError as exc:
        problems.append(f"snakepit kill {run.id}: {exc}")
    run.closed = True
    # Reap our direct children (already killed by the teardown) so nothing
    # lingers as a zombie of the pytest process.
    for p in run.popens:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            problems.append(f"pid {p.pid} survived snakepit kill; killed directly")
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
    if run.cgroup and os.path.exists(run.cgroup):
        rest = cgroup_pids(run.cgroup)
        problems.append(f"cgroup {run.cgroup} still exists after snakepit kill (pids {rest})")
    msg = []
    if leaks and not allow_leaks:
        msg.append(_format_leaks(run, leaks))
    msg.extend("snakepit: " + p for p in problems)
    if msg:
        raise SnakepitLeak("\n".join(msg), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Marks the teardown report of a leak (report.snakepit_leak) for other
    # plugins; pytest itself reports it as an error at teardown.
    outcome = yield
    if call.when == "teardown" and call.excinfo is not None \
            and isinstance(call.excinfo.value, SnakepitLeak):
        rep = outcome.get_result()
        rep.snakepit_leak = True
