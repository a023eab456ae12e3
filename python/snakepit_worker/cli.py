"""Drive the `snakepit` CLI from Python (the supervisor side). Stdlib only.

Used by the pytest plugin (pytest_snakepit) and the examples. It speaks only
the command-line contract:

    snakepit create [--run-id ID] [--owner-pid PID] [--grace DUR]   -> prints ID
    snakepit exec RUNID -- CMD ARGS...     (joins the run's cgroup, then execve)
    snakepit ps --json --tree              -> JSON array of runs
    snakepit kill [--grace DUR] RUNID...
    snakepit run [--run-id ID] [--grace DUR] [...] -- CMD ARGS...

plus read-only peeks at cgroupfs and /proc for process listings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import validate_run_id
from .client import _grace_seconds

__all__ = [
    "SnakepitError",
    "SnakepitUnavailable",
    "Snakepit",
    "ProcInfo",
    "find_binary",
    "cgroup2_mount",
    "format_duration",
    "cgroup_pids",
    "live_processes",
    "proc_cmdline",
    "proc_state",
]


class SnakepitError(RuntimeError):
    """A snakepit command failed; `returncode` is its exit status (None when
    it did not exit: not started, timed out)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class SnakepitUnavailable(SnakepitError):
    """The snakepit binary (or a prerequisite such as cgroup2) is missing."""


def find_binary(explicit: str | None = None) -> str:
    """Locate the snakepit binary: `explicit`, then $SNAKEPIT_BIN, then PATH."""
    for cand, origin in ((explicit, "argument"), (os.environ.get("SNAKEPIT_BIN"), "SNAKEPIT_BIN")):
        if cand:
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return os.path.abspath(cand)
            raise SnakepitUnavailable(f"snakepit binary from {origin} not executable: {cand}")
    found = shutil.which("snakepit")
    if not found:
        raise SnakepitUnavailable("snakepit binary not found (set SNAKEPIT_BIN or put it on PATH)")
    return found


def cgroup2_mount() -> str | None:
    """Mount point of the cgroup2 hierarchy (pure v2 or hybrid), or None."""
    mounts = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    mounts.append(pre.split()[4].replace("\\040", " "))
    except OSError:
        return None
    for pref in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if pref in mounts:
            return pref
    return mounts[0] if mounts else None


def format_duration(seconds: float | str | None) -> str | None:
    """Render seconds as a Go duration string ("250ms"); strings pass through."""
    if seconds is None or isinstance(seconds, str):
        return seconds
    ms = round(float(seconds) * 1000)
    return f"{ms}ms"


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    cmdline: str
    state: str = "?"


def proc_cmdline(pid: int) -> str:
    """Command line of pid, NULs as spaces; "[comm]" for kernel-style empty ones."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    raw = raw.rstrip(b"\0")
    if not raw:
        try:
            with open(f"/proc/{pid}/comm") as f:
                return "[" + f.read().strip() + "]"
        except OSError:
            return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def proc_state(pid: int) -> str:
    """One-letter state from /proc/PID/stat ("" when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()


def cgroup_pids(cgroup: str) -> list[int]:
    """PIDs listed in <cgroup>/cgroup.procs, recursively (empty when gone)."""
    pids: list[int] = []
    for root, _dirs, files in os.walk(cgroup):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids.extend(int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        except OSError:
            continue
    return pids


def live_processes(pids: Iterable[int]) -> list[ProcInfo]:
    """ProcInfo for each pid that still exists and is not a zombie."""
    out = []
    for pid in pids:
        st = proc_state(pid)
        if st in ("", "Z", "X"):
            continue
        out.append(ProcInfo(pid, proc_cmdline(pid), st))
    return out


class Snakepit:
    """Thin wrapper around the snakepit binary."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        self.binary = find_binary(binary)
        self.timeout = timeout

    def _run(self, args: Sequence[str], timeout: float | None = None) -> str:
        cmd = [self.binary, *args]
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise SnakepitError(f"{' '.join(cmd)}: timed out after {exc.timeout}s") from exc
        if res.returncode != 0:
            raise SnakepitError(
                f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip() or res.stdout.strip()}",
                res.returncode)
        return res.stdout

    def create(self, run_id: str | None = None, owner_pid: int | None = None,
               grace: float | str | None = None) -> str:
        """Create a run owned by `owner_pid` (default: this process); return its ID."""
        args = ["create"]
        if run_id is not None:
            args += ["--run-id", validate_run_id(run_id)]
        args += ["--owner-pid", str(os.getpid() if owner_pid is None else int(owner_pid))]
        if grace is not None:
            args += ["--grace", format_duration(grace)]
        out = self._run(args).strip()
        lines = out.splitlines()
        if not lines:
            raise SnakepitError("snakepit create printed no run ID")
        try:
            return validate_run_id(lines[-1].strip())
        except ValueError as exc:
            raise SnakepitError(f"snakepit create printed {out!r}: {exc}") from exc

    def exec_argv(self, run_id: str, argv: Sequence[str]) -> list[str]:
        """argv that runs `argv` inside the run (the pid you get is the command's)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of strings, not a string")
        return [self.binary, "exec", validate_run_id(run_id), "--", *map(os.fspath, argv)]

    def run_argv(self, argv: Sequence[str], *, run_id: str | None = None,
                 grace: float | str | None = None, ready: str | None = None,
                 ready_line: str | None = None, ready_timeout: float | str | None = None,
                 ready_fd: int | None = None) -> list[str]:
        """argv for `snakepit run [flags] -- argv`."""
        args = [self.binary, "run"]
        if run_id is not None:
            args += ["--run-id", validate_run_id(run_id)]
        if grace is not None:
            args += ["--grace", format_duration(grace)]
        if ready is not None:
            args += ["--ready", ready]
        if ready_line is not None:
            args += ["--ready-line", ready_line]
        if ready_timeout is not None:
            args += ["--ready-timeout", format_duration(ready_timeout)]
        if ready_fd is not None:
            args += ["--ready-fd", str(ready_fd)]
        return [*args, "--", *map(os.fspath, argv)]

    def ps(self) -> list[dict]:
        """All runs, as `snakepit ps --json --tree` reports them."""
        out = self._run(["ps", "--json", "--tree"]).strip()
        data = json.loads(out) if out else []
        if data is None:
            return []
        if not isinstance(data, list):
            raise SnakepitError(f"snakepit ps --json: expected a list, got {type(data).__name__}")
        return data

    def info(self, run_id: str) -> dict | None:
        for run in self.ps():
            if run.get("id") == run_id:
                return run
        return None

    def kill(self, *run_ids: str, grace: float | str | None = None,
             timeout: float | None = None) -> None:
        """`snakepit kill`; waits `timeout` (default self.timeout) plus the
        grace (None: the run's recorded grace, counted as up to 5 min), so
        a slow teardown is never cut short."""
        if not run_ids:
            return
        args = ["kill"]
        if grace is not None:
            args += ["--grace", format_duration(grace)]
        args += [validate_run_id(r) for r in run_ids]
        self._run(args, timeout=(timeout or self.timeout) + _grace_seconds(grace))

    def processes(self, run_id: str, cgroup: str | None = None) -> list[ProcInfo]:
        """Live (non-zombie) processes of a run, read from cgroupfs when the
        cgroup path is known, else from `snakepit ps --json --tree`."""
        if cgroup:
            return live_processes(cgroup_pids(cgroup))
        run = self.info(run_id)
        if not run:
            return []
        if run.get("cgroup"):
            return live_processes(cgroup_pids(run["cgroup"]))
        return live_processes(int(p["pid"]) for p in run.get("processes") or [])
