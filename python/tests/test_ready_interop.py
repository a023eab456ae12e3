"""grpc_worker.py's readiness reporting against `snakepit run --ready ...`:
notify() must speak the wrapper's NOTIFY_SOCKET, and the GRPC_READY:<port>
line must satisfy --ready-line (and still be passed through)."""

import os
import select
import signal
import subprocess
import time

import pytest

from conftest import EXAMPLES, PYTHON, need_grpc, read_line, report, wait_pidfd
from snakepit_worker import generate_run_id

WORKER = os.path.join(EXAMPLES, "grpc_worker.py")


@pytest.fixture
def ready_sp(sp):
    # The --ready* flags are part of the CLI: a build without them fails
    # these tests rather than skipping them.
    need_grpc()
    return sp


def _read_fd_line(fd, timeout):
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError(f"no readiness line on fd within {timeout}s (got {buf!r})")
        chunk = os.read(fd, 256)
        if not chunk:
            break
        buf += chunk
    return buf.decode().strip()


@pytest.mark.parametrize("how", ["notify", "line"])
def test_worker_readiness_through_wrapper(ready_sp, cleanup, how):
    from grpc_client import WorkerClient

    sp = ready_sp
    rid = generate_run_id()
    r, w = os.pipe()
    flags = (dict(ready="notify") if how == "notify"
             else dict(ready_line=r"^GRPC_READY:[0-9]+$"))
    argv = sp.run_argv([PYTHON, WORKER, "--port", "0"], run_id=rid, grace="2s",
                       ready_timeout="30s", ready_fd=w, **flags)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    t0 = time.perf_counter()
    p = cleanup.popen(argv, pass_fds=(w,), stdout=subprocess.PIPE, env=env)
    os.close(w)
    cleanup.run(rid)
    try:
        line = _read_fd_line(r, 30)
    finally:
        os.close(r)
    took = (time.perf_counter() - t0) * 1000
    word, got_rid, pid = line.split()
    assert (word, got_rid) == ("READY", rid), line
    port = int(read_line(p, "GRPC_READY:").split(":")[1])  # passed through to our stdout
    with WorkerClient(f"127.0.0.1:{port}") as c:
        reply = c.ping("x")
    assert reply.pid == int(pid) and reply.run_id == rid
    report(f"snakepit run {'--ready notify' if how == 'notify' else '--ready-line'}: start to READY on --ready-fd",
           f"{took:.1f} ms")
    p.send_signal(signal.SIGTERM)  # forwarded; the worker shuts down gracefully
    assert p.wait(timeout=15) == 0
    assert sp.info(rid) is None


def test_ready_timeout_tears_down(ready_sp, cleanup, tmp_path):
    sp = ready_sp
    rid = generate_run_id()
    pidfile = tmp_path / "pid"
    argv = sp.run_argv(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; exec sleep 301"],
                       run_id=rid, grace="0s", ready="notify", ready_timeout="500ms")
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == 119, res
    assert 0.4 < took < 10, took
    pid = int(pidfile.read_text())
    try:
        fd = cleanup.watch(pid)
        assert wait_pidfd(fd, 0), "background sleep survived the readiness timeout"
    except ProcessLookupError:
        pass
    assert sp.info(rid) is None
