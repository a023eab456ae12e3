"""Shared fixtures for the Python tests.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -p pytest_snakepit python/tests
(test/python.sh does that, after building the binary).

Prerequisites (root, cgroup2, the snakepit binary, grpcio) are checked per
test with `require`: missing -> skip with the reason, or FAIL when CI=true.
Benchmark figures are collected with `report(...)` and printed in a
"snakepit python report" section at the end of the run (and written as JSON
to $SNAKEPIT_PY_REPORT when set).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(PYROOT, "examples")
FIXTURES = os.path.join(PYROOT, "fixtures")
for _p in (PYROOT, EXAMPLES):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from pytest_snakepit import require  # noqa: E402
from snakepit_worker.cli import (  # noqa: E402
    Snakepit,
    SnakepitUnavailable,
    cgroup2_mount,
    find_binary,
)

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

_REPORT: list[tuple[str, str]] = []


def report(key: str, value: str) -> None:
    """Add one line to the end-of-run report (and echo it to the real stdout)."""
    _REPORT.append((key, value))
    sys.__stdout__.write(f"\n[report] {key}: {value}\n")
    sys.__stdout__.flush()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _REPORT:
        return
    terminalreporter.section("snakepit python report")
    for key, value in _REPORT:
        terminalreporter.write_line(f"{key}: {value}")
    path = os.environ.get("SNAKEPIT_PY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(_REPORT), f, indent=2)


# ---------------------------------------------------------------- prerequisites


def need_root() -> None:
    require(os.geteuid() == 0, "needs root (cgroup writes)")


def need_cgroup2() -> None:
    require(cgroup2_mount() is not None, "no cgroup2 hierarchy mounted")


def need_grpc() -> None:
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as exc:
        require(False, f"python3-grpcio/python3-protobuf missing: {exc}")


@pytest.fixture(scope="session")
def snakepit_bin(pytestconfig) -> str:
    try:
        return find_binary(pytestconfig.getoption("--snakepit-bin", None))
    except SnakepitUnavailable as exc:
        require(False, str(exc))
        raise


@pytest.fixture
def sp(snakepit_bin) -> Snakepit:
    """A Snakepit client; requires root and cgroup2 too."""
    need_root()
    need_cgroup2()
    return Snakepit(snakepit_bin)


class Cleanup:
    """Tracks everything a test makes; kills/removes it all at teardown."""

    def __init__(self, sp: Snakepit | None = None) -> None:
        self.sp = sp
        self.runs: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.pidfds: dict[int, int] = {}

    def run(self, run_id: str) -> str:
        self.runs.append(run_id)
        return run_id

    def popen(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def watch(self, pid: int) -> int:
        """pidfd for pid (kept open, SIGKILLed at teardown if still alive)."""
        if pid not in self.pidfds:
            self.pidfds[pid] = os.pidfd_open(pid)
        return self.pidfds[pid]

    def close(self) -> None:
        for rid in self.runs:
            if self.sp is None:
                continue
            try:
                if self.sp.info(rid) is not None:
                    self.sp.kill(rid, grace="0s")
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup: snakepit kill {rid}: {exc}", file=sys.stderr)
        for pid, fd in self.pidfds.items():
            if not pidfd_exited(fd):
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for s in (p.stdin, p.stdout, p.stderr):
                if s:
                    s.close()
        for pid, fd in self.pidfds.items():
            wait_pidfd(fd, 5)
            os.close(fd)
        self.pidfds.clear()


@pytest.fixture
def cleanup(request):
    sp = None
    try:
        sp = Snakepit(request.config.getoption("--snakepit-bin", None))
    except SnakepitUnavailable:
        pass
    c = Cleanup(sp)
    yield c
    c.close()


# ---------------------------------------------------------------- helpers


def pidfd_exited(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def wait_pidfd(fd: int, timeout: float) -> bool:
    """True once the process behind the pidfd has exited (within timeout)."""
    return bool(select.select([fd], [], [], timeout)[0])


def read_line(proc: subprocess.Popen, prefix: str, timeout: float = 20.0) -> str:
    """Read proc.stdout until a line starting with `prefix` (returned, stripped)."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {prefix!r} line within {timeout}s; got {seen!r}")
        r, _, _ = select.select([fd], [], [], remaining)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"EOF before {prefix!r} (exit {proc.poll()}); got {seen!r}")
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text.startswith(prefix):
                return text
            seen.append(text)


def parse_fields(line: str) -> dict[str, str]:
    """'X_READY a=1 b=2,3' -> {'a': '1', 'b': '2,3'}"""
    out = {}
    for part in line.split()[1:]:
        k, _, v = part.partition("=")
        out[k] = v
    return out


def pid_list(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x]


def pid_cgroup(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- a private daemon


class DaemonProc:
    """`snakepit daemon` with a private socket and cgroup parent, started by a
    test (as the Go daemon tests do: no systemd, --cgroup-parent). Ready on
    READY=1 through a NOTIFY_SOCKET of our own. stop() checks that it exits 0
    and that nothing is left under its cgroup parent; problems are returned
    as strings, never swallowed."""

    def __init__(self, snakepit_bin: str, *args: str, socket_dir: str | None = None,
                 parent: str | None = None) -> None:
        import socket as socketmod
        import tempfile

        from snakepit_worker import generate_run_id

        self.binary = snakepit_bin
        self.args = list(args)
        self.own_dir = socket_dir is None
        # Short: a unix socket path has at most 107 bytes.
        self.dir = socket_dir or tempfile.mkdtemp(prefix="sp-pyd-")
        os.chmod(self.dir, 0o755)  # other UIDs may need to reach the socket
        self.socket = os.path.join(self.dir, "s.sock")
        self.parent = parent or os.path.join(cgroup2_mount(), "sptest-pyclient-" + generate_run_id())
        self.log_path = os.path.join(self.dir, f"daemon-{time.monotonic_ns()}.log")
        self.proc: subprocess.Popen | None = None
        self.pidfd = -1
        self.guardian = 0
        ns_path = os.path.join(self.dir, f"notify-{time.monotonic_ns()}")
        self.notify = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM | socketmod.SOCK_CLOEXEC)
        self.notify.bind(ns_path)
        self.ns_path = ns_path

    def start(self, timeout: float = 30.0) -> "DaemonProc":
        argv = [self.binary, "daemon", "--socket", self.socket, "--cgroup-parent", self.parent,
                "--grace", "1s", *self.args]
        env = dict(os.environ, NOTIFY_SOCKET=self.ns_path)
        env.pop("SNAKEPIT_RUN_ID", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.pidfd = os.pidfd_open(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"daemon not READY within {timeout}s:\n{self.log()}")
            r, _, _ = select.select([self.notify, self.pidfd], [], [], remaining)
            if self.notify in r:
                msg = self.notify.recv(4096).decode(errors="replace")
                if "READY=1" in msg.split("\n"):
                    from snakepit_worker.client import Client

                    with Client(self.socket) as c:
                        self.guardian = int(c.status().get("guardian") or 0)
                    return self
            elif self.pidfd in r:
                raise RuntimeError(f"daemon exited ({self.proc.wait()}) before READY:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM, wait; then make sure nothing of it is left. Returns problems."""
        problems: list[str] = []
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                if not wait_pidfd(self.pidfd, timeout):
                    problems.append(f"daemon {self.proc.pid} still running {timeout}s after SIGTERM: killed")
                    self.proc.kill()
            rc = self.proc.wait()
            if rc != 0:
                problems.append(f"daemon exit status {rc}")
            os.close(self.pidfd)
            self.proc = None
        if self.guardian:
            try:
                fd = os.pidfd_open(self.guardian)
            except ProcessLookupError:
                fd = -1
            if fd >= 0:
                try:
                    if not wait_pidfd(fd, 10):
                        problems.append(f"guardian {self.guardian} outlived the daemon by 10s: killed")
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)
        problems.extend(remove_cgroup_tree(self.parent))
        return problems

    def close(self) -> list[str]:
        problems = self.stop()
        self.notify.close()
        for path in (self.ns_path, self.log_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.own_dir:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def remove_cgroup_tree(path: str) -> list[str]:
    """Remove a test's cgroup subtree; processes still in it are a problem
    (returned), killed through the subtree's own cgroup.kill."""
    from snakepit_worker.cli import cgroup_pids

    if not os.path.isdir(path):
        return []
    problems = []
    left = []
    for dirpath, _, _ in os.walk(path):
        left.extend(cgroup_pids(dirpath))
    if left:
        problems.append(f"processes left under {path}: {sorted(set(left))}")
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    deadline = time.monotonic() + 10
    while os.path.isdir(path):
        for dirpath, _, _ in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        if os.path.isdir(path):
            if time.monotonic() > deadline:
                problems.append(f"could not remove {path}")
                break
            # cgroup.kill is asynchronous: wait for the tree to empty.
            _wait_populated_clear(path, max(0.0, deadline - time.monotonic()))
    return problems


def _wait_populated_clear(path: str, timeout: float) -> None:
    """Wait (POLLPRI on cgroup.events) until the subtree has no process."""
    events = os.path.join(path, "cgroup.events")
    try:
        fd = os.open(events, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        deadline = time.monotonic() + timeout
        while True:
            os.lseek(fd, 0, os.SEEK_SET)
            if b"populated 0" in os.read(fd, 4096):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            poller.poll(remaining * 1000)
    finally:
        os.close(fd)


def snakepitd_for(snakepit_bin: str) -> str | None:
    """The full build `snakepit daemon` execs: $SNAKEPITD, else next to snakepit."""
    cand = os.environ.get("SNAKEPITD") or os.path.join(os.path.dirname(snakepit_bin), "snakepitd")
    return cand if os.path.isfile(cand) and os.access(cand, os.X_OK) else None


@pytest.fixture
def start_daemon(snakepit_bin):
    """Factory: start_daemon(*extra_args, socket_dir=None) -> a READY DaemonProc.
    Every daemon it started is stopped at teardown, and its cgroup parent
    checked empty and removed, even when the test failed; a problem there
    is an error of the test."""
    need_root()
    need_cgroup2()
    require(snakepitd_for(snakepit_bin) is not None,
            f"snakepitd (go build -tags snakepitd) not next to {snakepit_bin} nor in $SNAKEPITD")
    started: list[DaemonProc] = []

    def start(*args: str, socket_dir: str | None = None, parent: str | None = None) -> DaemonProc:
        d = DaemonProc(snakepit_bin, *args, socket_dir=socket_dir, parent=parent)
        started.append(d)
        d.start()
        return d

    yield start
    problems = []
    for d in reversed(started):
        problems.extend(d.close())
    if problems:
        pytest.fail("daemon cleanup: " + "; ".join(problems), pytrace=False)
