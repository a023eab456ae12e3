#!/usr/bin/python3
"""Pool demo: 4 gRPC workers in one snakepit run; SIGKILL the supervisor; count survivors.

    /usr/bin/python3 python/examples/pool_demo.py --snakepit-bin ./bin/snakepit
        [--workers 4] [--mode run|create] [--kill supervisor|wrapper]
        [--grace 0s] [--json]

What happens:
 1. A supervisor (this file, --role supervisor) is started
    - mode "run" (default): as ``snakepit run --run-id ID --grace G -- python3
      pool_demo.py --role supervisor``; the supervisor is the wrapped command
      and forks its workers directly (they inherit the run's cgroup);
    - mode "create": as a plain child; it calls ``snakepit create
      --owner-pid <itself>`` and starts each worker with ``snakepit exec``, so
      the run's guardian is what must clean up when it dies.
 2. The supervisor starts N grpc_worker.py processes with NOTIFY_SOCKET
    pointing at its own datagram socket, collects READY=1/STATUS=port=N
    from each (sender PID via SCM_CREDENTIALS), and prints one line
    ``POOL_READY {json}`` with its PID, the run ID and the workers' PIDs and
    ports. Workers do not arm Pdeathsig: only the jail can clean them up.
 3. The demo Pings every worker over gRPC (and checks that each reply's PID
    and run ID match and that each worker sits in the run's cgroup).
 4. It SIGKILLs the supervisor (--kill supervisor, default) or the
    ``snakepit run`` wrapper itself (--kill wrapper, mode run only), then
    watches every worker through a pidfd and reports how long after the
    SIGKILL the last one was gone, and whether the run's cgroup was removed.
 5. Exit status 0 only when zero workers survive (within --deadline,
    default 5 s) and the run is gone; 1 otherwise; 2 on setup errors.

Everything it starts is cleaned up on every path (snakepit kill, then
pidfd_send_signal on any leftover PID).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
_PYROOT = os.path.dirname(_HERE)
for _p in (_HERE, _PYROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from snakepit_worker import generate_run_id, run_id as worker_run_id  # noqa: E402
from snakepit_worker.cli import Snakepit, SnakepitError, cgroup_pids  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
WORKER = os.path.join(_HERE, "grpc_worker.py")
READY_PREFIX = "POOL_READY "


# ----------------------------------------------------------------------------
# supervisor side


def _recv_notify(sock: socket.socket, deadline: float):
    """One sd_notify datagram: (sender pid or None, {KEY: VALUE}); (None, {})
    after 0.2 s without one, so that the caller notices a worker that died
    before READY instead of waiting out the whole deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out waiting for worker readiness")
    sock.settimeout(min(remaining, 0.2))
    try:
        data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    except TimeoutError:
        return None, {}
    pid = None
    for level, ctype, cdata in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = struct.unpack("3i", cdata[: struct.calcsize("3i")])
    fields = {}
    for line in data.decode(errors="replace").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            fields[k] = v
    return pid, fields


def supervise(args) -> int:
    sock_path = os.path.join(args.notify_dir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(sock_path)

    if args.mode == "create":
        sp = Snakepit(args.snakepit_bin)
        rid = sp.create(owner_pid=os.getpid(), grace=args.grace)
        prefix = lambda argv: sp.exec_argv(rid, argv)  # noqa: E731
    else:
        rid = worker_run_id([])  # from SNAKEPIT_RUN_ID, set by `snakepit run`
        prefix = lambda argv: list(argv)  # noqa: E731

    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    if rid:
        env["SNAKEPIT_RUN_ID"] = rid
    workers = []
    for _ in range(args.workers):
        argv = [PYTHON, WORKER, "--port", "0", "--shutdown-timeout", "2"]
        if rid:
            argv += ["--snakepit-run-id", rid]
        workers.append(subprocess.Popen(prefix(argv), env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL))
    by_pid = {p.pid: p for p in workers}
    ports: dict[int, int] = {}
    deadline = time.monotonic() + args.ready_timeout
    try:
        while len(ports) < len(workers):
            pid, fields = _recv_notify(sock, deadline)
            if fields.get("READY") == "1" and pid in by_pid:
                status = fields.get("STATUS", "")
                if status.startswith("port="):
                    ports[pid] = int(status[5:])
            for p in workers:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {p.pid} exited early with {p.returncode}")
    except Exception as exc:
        print(f"supervisor: {exc}", file=sys.stderr, flush=True)
        for p in workers:
            p.kill()
        for p in workers:
            p.wait()
        return 2
    report = {"supervisor_pid": os.getpid(), "run_id": rid,
              "workers": [{"pid": p.pid, "port": ports[p.pid]} for p in workers]}
    print(READY_PREFIX + json.dumps(report), flush=True)

    # Idle until killed. A polite SIGTERM stops the workers gracefully.
    def on_term(signum, frame):
        for p in workers:
            if p.poll() is None:
                p.terminate()
        for p in workers:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        signal.pause()


# ----------------------------------------------------------------------------
# driver side


@dataclass
class WorkerResult:
    pid: int
    port: int
    ping_ok: bool = False
    ping_ms: float = 0.0
    in_run_cgroup: bool | None = None
    gone_after_ms: float | None = None  # None: still alive at the deadline
    cmdline: str = ""


@dataclass
class DemoResult:
    mode: str
    killed: str
    run_id: str = ""
    cgroup: str = ""
    supervisor_pid: int = 0
    wrapper_pid: int = 0
    wrapper_status: int | None = None
    ready_s: float = 0.0
    workers: list[WorkerResult] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    all_gone_ms: float | None = None
    run_removed: bool = False
    run_removed_ms: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return (not self.error and not self.survivors and self.run_removed
                and bool(self.workers) and all(w.ping_ok for w in self.workers))


def _pid_cgroup(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_ready_line(proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {READY_PREFIX.strip()} line within {timeout}s")
        r, _, _ = select.select([fd], [], [], remaining)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"supervisor exited before {READY_PREFIX.strip()} "
                               f"(status {proc.wait()})")
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            if text.startswith(READY_PREFIX):
                return json.loads(text[len(READY_PREFIX):])
            print(f"  supervisor: {text}", file=sys.stderr)


def run_demo(binary: str | None = None, workers: int = 4, mode: str = "run",
             kill: str = "supervisor", grace: str = "0s", deadline: float = 5.0,
             ready_timeout: float = 30.0, verbose: bool = False) -> DemoResult:
    """Run the whole demo once and return what happened (never leaves processes)."""
    if mode not in ("run", "create"):
        raise ValueError("mode must be 'run' or 'create'")
    if kill not in ("supervisor", "wrapper"):
        raise ValueError("kill must be 'supervisor' or 'wrapper'")
    if kill == "wrapper" and mode != "run":
        raise ValueError("--kill wrapper needs --mode run")
    from grpc_client import WorkerClient  # imported late: the supervisor never loads grpc

    sp = Snakepit(binary)
    res = DemoResult(mode=mode, killed=kill)
    tmp = tempfile.mkdtemp(prefix="snakepit-pool-")
    sup_argv = [PYTHON, os.path.abspath(__file__), "--role", "supervisor", "--mode", mode,
                "--workers", str(workers), "--notify-dir", tmp, "--grace", grace,
                "--ready-timeout", str(ready_timeout), "--snakepit-bin", sp.binary]
    if mode == "run":
        res.run_id = generate_run_id()
        argv = sp.run_argv(sup_argv, run_id=res.run_id, grace=grace)
    else:
        argv = sup_argv
    pidfds: dict[int, int] = {}
    proc = None
    t_start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        res.wrapper_pid = proc.pid if mode == "run" else 0
        ready = _read_ready_line(proc, ready_timeout + 5)
        res.ready_s = time.monotonic() - t_start
        res.supervisor_pid = ready["supervisor_pid"]
        res.run_id = ready["run_id"] or res.run_id
        info = sp.info(res.run_id) or {}
        res.cgroup = info.get("cgroup", "")
        for w in ready["workers"]:
            wr = WorkerResult(pid=w["pid"], port=w["port"], cmdline=_cmdline(w["pid"]))
            pidfds[wr.pid] = os.pidfd_open(wr.pid)
            res.workers.append(wr)
        # Where the supervisor and workers live.
        rel = "/" + os.path.relpath(res.cgroup, _mount_of(res.cgroup)) if res.cgroup else None
        for wr in res.workers:
            cg = _pid_cgroup(wr.pid)
            wr.in_run_cgroup = (cg == rel or (cg or "").startswith(rel + "/")) if rel else None
            t0 = time.perf_counter()
            with WorkerClient(f"127.0.0.1:{wr.port}", timeout=10) as c:
                reply = c.ping(f"hello {wr.pid}")
            wr.ping_ms = (time.perf_counter() - t0) * 1000
            wr.ping_ok = (reply.pid == wr.pid and reply.payload == f"hello {wr.pid}"
                          and reply.run_id == res.run_id)
        # The moment of truth.
        victim = res.supervisor_pid if kill == "supervisor" else proc.pid
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        pending = dict(pidfds)
        poller = select.poll()
        for fd in pending.values():
            poller.register(fd, select.POLLIN)
        fd_to_pid = {fd: pid for pid, fd in pending.items()}
        while pending:
            remaining = t_kill + deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ev in poller.poll(remaining * 1000):
                pid = fd_to_pid[fd]
                if pid in pending:
                    now = time.monotonic()
                    next(w for w in res.workers if w.pid == pid).gone_after_ms = (now - t_kill) * 1000
                    poller.unregister(fd)
                    del pending[pid]
        res.survivors = sorted(pending)
        if not pending:
            res.all_gone_ms = max(w.gone_after_ms for w in res.workers)
        # Is the run itself gone (cgroup removed)?
        while time.monotonic() < t_kill + deadline:
            if res.cgroup and not os.path.exists(res.cgroup):
                res.run_removed = True
            elif not res.cgroup:
                res.run_removed = sp.info(res.run_id) is None
            if res.run_removed:
                res.run_removed_ms = (time.monotonic() - t_kill) * 1000
                break
            time.sleep(0.001)
        if proc is not None and mode == "run":
            try:
                res.wrapper_status = proc.wait(timeout=max(0.1, t_kill + deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                res.wrapper_status = None
    except Exception as exc:  # report, then clean up
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        _cleanup(sp, res, proc, pidfds, tmp, verbose)
    return res


def _mount_of(path: str) -> str:
    for m in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if path == m or path.startswith(m + "/"):
            return m
    return "/sys/fs/cgroup"


def _cleanup(sp: Snakepit, res: DemoResult, proc, pidfds: dict, tmp: str, verbose: bool) -> None:
    if res.run_id:
        try:
            if sp.info(res.run_id) is not None:
                sp.kill(res.run_id, grace="0s")
        except SnakepitError as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
    for pid, fd in pidfds.items():
        exited = bool(select.select([fd], [], [], 0)[0])  # a pidfd is readable once its process exited
        if not exited:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                if verbose:
                    print(f"cleanup: SIGKILLed leftover worker {pid}", file=sys.stderr)
            except ProcessLookupError:
                pass
        os.close(fd)
    if res.supervisor_pid and res.mode == "create":
        try:
            os.kill(res.supervisor_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    if res.cgroup and os.path.isdir(res.cgroup) and not cgroup_pids(res.cgroup):
        try:
            os.rmdir(res.cgroup)
        except OSError:
            pass
    try:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    except OSError:
        pass


def print_report(res: DemoResult, out=sys.stdout) -> None:
    w = out.write
    w(f"snakepit pool demo: mode={res.mode} killed={res.killed} run={res.run_id} "
      f"cgroup={res.cgroup or '?'}\n")
    w(f"  supervisor pid {res.supervisor_pid}"
      + (f", wrapper pid {res.wrapper_pid}" if res.wrapper_pid else "")
      + f"; pool ready after {res.ready_s * 1000:.0f} ms\n")
    for wr in res.workers:
        gone = f"{wr.gone_after_ms:.1f} ms" if wr.gone_after_ms is not None else "STILL ALIVE"
        w(f"  worker pid {wr.pid} port {wr.port}: ping {'ok' if wr.ping_ok else 'FAILED'} "
          f"({wr.ping_ms:.1f} ms), in run cgroup: {wr.in_run_cgroup}, gone after SIGKILL: {gone}\n")
    if res.error:
        w(f"  ERROR: {res.error}\n")
    if res.workers:
        w(f"  survivors: {len(res.survivors)}"
          + (f" {res.survivors}" if res.survivors else "")
          + (f"; last worker gone {res.all_gone_ms:.1f} ms after SIGKILL" if res.all_gone_ms is not None else "")
          + "\n")
        w(f"  run removed: {res.run_removed}"
          + (f" ({res.run_removed_ms:.1f} ms after SIGKILL)" if res.run_removed_ms is not None else "")
          + (f"; wrapper exit status {res.wrapper_status}" if res.wrapper_pid else "") + "\n")
    w(f"RESULT: {'PASS' if res.ok else 'FAIL'}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="snakepit gRPC pool demo")
    ap.add_argument("--snakepit-bin", default=None)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--mode", choices=("run", "create"), default="run")
    ap.add_argument("--kill", choices=("supervisor", "wrapper"), default="supervisor")
    ap.add_argument("--grace", default="0s",
                    help="grace period (Go duration) of the run's teardown")
    ap.add_argument("--deadline", type=float, default=5.0,
                    help="seconds after the SIGKILL within which all workers must be gone")
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON too")
    ap.add_argument("--role", choices=("driver", "supervisor"), default="driver",
                    help=argparse.SUPPRESS)
    ap.add_argument("--notify-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "supervisor":
        return supervise(args)
    try:
        res = run_demo(args.snakepit_bin, args.workers, args.mode, args.kill, args.grace,
                       args.deadline, args.ready_timeout, verbose=True)
    except (SnakepitError, ValueError) as exc:
        print(f"pool_demo: {exc}", file=sys.stderr)
        return 2
    print_report(res)
    if args.json:
        print(json.dumps(asdict(res)))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
