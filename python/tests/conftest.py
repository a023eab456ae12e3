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
