"""snakepit_worker.client against a real daemon: `snakepit daemon` started by
the test with a private socket and cgroup parent (conftest.start_daemon),
stopped and checked empty at teardown, failure or not."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import PYROOT, PYTHON, pid_cgroup, wait_pidfd
from snakepit_worker import generate_run_id
from snakepit_worker.cli import cgroup_pids
from snakepit_worker.client import (
    APIError,
    BadRequest,
    Client,
    Conflict,
    DaemonError,
    DaemonTimeout,
    DaemonUnavailable,
    Forbidden,
    InvalidJSON,
    InvalidRunID,
    LimitReached,
    MethodNotAllowed,
    NoProgram,
    NotFound,
)


@pytest.fixture
def daemon(start_daemon):
    return start_daemon()


@pytest.fixture
def client(daemon):
    """A client of the test's daemon; tears down every run still there."""
    c = Client(daemon.socket, timeout=30)
    yield c
    try:
        for run in c.list_runs():
            c.teardown(run["id"], grace=0)
    finally:
        c.close()


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def events_until(stream, pred, timeout: float = 20.0) -> list[dict]:
    """Events read until one satisfies pred (included), within timeout."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        ev = stream.next(timeout=max(0.01, deadline - time.monotonic()))
        out.append(ev)
        if pred(ev):
            return out


def comms(pids):
    """The command names of pids, sorted ("?" for one gone)."""
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            out.append("?")
    return sorted(out)


def test_run_lifecycle(client, daemon):
    st = client.status()
    assert st["mode"] == "configured" and st["run_parent"] == daemon.parent, st
    assert st["pid"] == daemon.proc.pid
    with client.events(timeout=20) as events:
        rid = generate_run_id()
        run = client.create_run(id=rid)
        assert run["id"] == rid and run["state"] == "active" and run["workers"] == []
        cg = run["cgroup"]
        assert cg == os.path.join(daemon.parent, "snakepit-" + rid) and os.path.isdir(cg)
        assert [r["id"] for r in client.list_runs()] == [rid]

        # Worker 1 leaves a double-forked and a setsid'd child behind it.
        w1 = client.start_worker(rid, ["/bin/sh", "-c", "(sleep 1000 &); setsid sleep 1001 & exec sleep 1002"])
        w2 = client.start_worker(rid, ["sleep", "1003"])
        assert (w1["id"], w2["id"]) == (1, 2) and w1["state"] == "running"
        assert cg.endswith(pid_cgroup(w1["pid"])) and cg.endswith(pid_cgroup(w2["pid"]))
        # The settled tree: the forking shells gone, four sleeps left (the
        # teardown below must find all three of worker 1's to SIGTERM).
        wait_until(lambda: comms(cgroup_pids(cg)) == ["sleep"] * 4, 10, "the run's four sleeps, nothing else")
        procs = cgroup_pids(cg)
        fds = [os.pidfd_open(p) for p in procs]
        try:
            got = client.get_run(rid)
            assert [(w["id"], w["pid"], w["state"]) for w in got["workers"]] == \
                [(1, w1["pid"], "running"), (2, w2["pid"], "running")]

            # cpu.usage_usec comes from the cgroup core: always there (docs/API.md).
            st = client.run_stats(rid)
            assert st["id"] == rid and isinstance(st["stats"]["cpu_usage_usec"], int), st

            stopped = client.stop_worker(rid, 2, grace=1)
            assert stopped["state"] == "exited"
            assert stopped["exit"] == {"code": 143, "signal": 15, "signal_name": "SIGTERM"}

            td = client.teardown(rid, grace="1s")
            assert td["id"] == rid and td["terminated"] >= 3 and td["killed"] is False, td
            assert not os.path.exists(cg)
            for fd, pid in zip(fds, procs):
                assert wait_pidfd(fd, 0), f"pid {pid} of the run survived its teardown"
        finally:
            for fd in fds:
                os.close(fd)
        with pytest.raises(NotFound):
            client.get_run(rid)
        assert client.list_runs() == []

        evs = events_until(events, lambda e: e["type"] == "run_torn_down" and e["run"] == rid)
    types = [(e["type"], e.get("worker")) for e in evs if e.get("run") == rid]
    assert types[0] == ("run_created", None)
    assert types[1:3] == [("worker_started", 1), ("worker_started", 2)]
    assert types[3] == ("worker_exited", 2)
    assert types[-1] == ("run_torn_down", None)
    assert ("worker_exited", 1) in types
    exited2 = next(e for e in evs if e["type"] == "worker_exited" and e["worker"] == 2)
    assert exited2["pid"] == w2["pid"] and exited2["exit"]["signal_name"] == "SIGTERM"
    assert evs[-1]["teardown"]["terminated"] == td["terminated"]


def test_worker_settings(client, tmp_path):
    """env, dir, stdout/stderr reach the worker; SNAKEPIT_RUN_ID is set."""
    rid = client.create_run()["id"]
    os.chmod(tmp_path, 0o755)
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with client.events(timeout=20) as events:
        w = client.start_worker(rid, ["/bin/sh", "-c", 'echo "$SNAKEPIT_RUN_ID $FOO $(pwd)"; echo oops >&2; exit 3'],
                                env=["PATH=/usr/bin:/bin", "FOO=bar"], dir=str(tmp_path),
                                stdout=str(out), stderr=str(err))
        ev = events_until(events, lambda e: e["type"] == "worker_exited" and e["run"] == rid)[-1]
    assert ev["worker"] == w["id"] and ev["exit"] == {"code": 3}
    assert out.read_text() == f"{rid} bar {tmp_path}\n"
    assert err.read_text() == "oops\n"
    assert client.get_run(rid)["workers"][0]["exit"] == {"code": 3}
    assert client.teardown(rid, grace=0)["terminated"] == 0


def test_errors_carry_the_api_code(client):
    rid = client.create_run()["id"]
    missing = generate_run_id()
    cases = [
        (lambda: client.get_run("ABC"), InvalidRunID, "invalid_run_id", 400),
        (lambda: client.create_run(id="toolong1"), InvalidRunID, "invalid_run_id", 400),
        (lambda: client.get_run(missing), NotFound, "not_found", 404),
        (lambda: client.teardown(missing), NotFound, "not_found", 404),
        (lambda: client.stop_worker(rid, 99), NotFound, "not_found", 404),
        (lambda: client.create_run(id=rid), Conflict, "conflict", 409),
        (lambda: client.start_worker(rid, []), NoProgram, "no_program", 400),
        (lambda: client.start_worker(rid, ["/nonexistent/prog"]), BadRequest, "bad_request", 400),
        (lambda: client.start_worker(rid, ["true"], dir="relative"), BadRequest, "bad_request", 400),
        (lambda: client.teardown(rid, grace="forever"), BadRequest, "bad_request", 400),
        (lambda: client.request("PUT", "/v1/status"), MethodNotAllowed, "method_not_allowed", 405),
        (lambda: client.request("GET", "/v1/nothing"), NotFound, "not_found", 404),
    ]
    for call, cls, code, status in cases:
        with pytest.raises(cls) as ei:
            call()
        e = ei.value
        assert isinstance(e, APIError) and (e.code, e.status) == (code, status), (code, e)
        assert e.message and code in str(e)
    # The run is still there and usable after all that.
    assert client.get_run(rid)["state"] == "active"


def test_extra_fields_go_on_the_wire(client):
    """Keywords the client does not know are sent as JSON fields: a daemon
    that does not know them either refuses them by name (strict decoding)."""
    with pytest.raises(InvalidJSON) as ei:
        client.create_run(no_such_setting={"x": 1})
    assert ei.value.code == "invalid_json" and '"no_such_setting"' in ei.value.message
    # The run spec's own fields pass through the same way.
    spec_run = client.create_run(grace="2s", limits={"pids_max": 64}, best_effort_limits=True)
    client.teardown(spec_run["id"], grace=0)
    with pytest.raises(BadRequest) as ei:
        client.create_run(limits={"memory_max": "12Q"})
    assert ei.value.code == "invalid_limit" and 'size "12Q"' in ei.value.message
    rid = client.create_run()["id"]
    with pytest.raises(InvalidJSON) as ei:
        client.start_worker(rid, ["true"], no_such_worker_setting=True)
    assert '"no_such_worker_setting"' in ei.value.message
    assert client.get_run(rid)["workers"] == []


FORBIDDEN_PROBE = """
import sys
from snakepit_worker.client import Client, DaemonUnavailable, Forbidden
try:
    Client(sys.argv[1]).list_runs()
except Forbidden as e:
    print(e.code, e.status)
except DaemonUnavailable as e:
    print("unavailable", "permission denied" in str(e))
"""


def probe_as_nobody(socket_path: str) -> list[str]:
    # nobody may not be able to read the checkout (a CI checkout under
    # /root): it gets a world-readable copy of the package.
    lib = tempfile.mkdtemp(prefix="sp-pyprobe-")
    try:
        shutil.copytree(os.path.join(PYROOT, "snakepit_worker"), os.path.join(lib, "snakepit_worker"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dirpath, dirnames, filenames in os.walk(lib):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        res = subprocess.run([PYTHON, "-c", FORBIDDEN_PROBE, socket_path], cwd="/",
                             env=dict(os.environ, PYTHONPATH=lib, PYTHONDONTWRITEBYTECODE="1"),
                             user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(lib, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_forbidden_and_limit_reached(start_daemon):
    d = start_daemon("--max-runs", "1", "--socket-mode", "0666")
    with Client(d.socket) as c:
        rid = c.create_run()["id"]
        with pytest.raises(LimitReached) as ei:
            c.create_run()
        assert (ei.value.code, ei.value.status) == ("limit_reached", 429)
        assert [r["id"] for r in c.list_runs()] == [rid]
        c.teardown(rid, grace=0)
        # nobody (not root, not in --group) may connect (mode 0666) but not use it.
        assert probe_as_nobody(d.socket) == ["forbidden", "403"]


def test_socket_permission(daemon):
    """The default socket (root:root 0600) refuses others at connect(2)."""
    assert probe_as_nobody(daemon.socket) == ["unavailable", "True"]


def test_no_daemon(tmp_path):
    c = Client(str(tmp_path / "missing.sock"))
    with pytest.raises(DaemonUnavailable, match="no snakepit daemon"):
        c.status()
    with pytest.raises(DaemonUnavailable):
        c.events()


def test_restart_reconnects_and_ends_streams(start_daemon):
    """The kept-alive connection of a stopped daemon is noticed and replaced;
    an event stream ends (StopIteration) when its daemon stops."""
    a = start_daemon()
    c = Client(a.socket)
    try:
        assert c.status()["pid"] == a.proc.pid
        events = c.events(timeout=30)
        assert not a.stop(), "daemon a did not stop cleanly"
        with pytest.raises(StopIteration):
            events.next()
        b = start_daemon(socket_dir=a.dir)
        assert c.status()["pid"] == b.proc.pid
        assert c.status()["pid"] == b.proc.pid
    finally:
        c.close()


def test_event_timeout_closes_the_stream(client):
    with client.events(timeout=0.2) as events:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            next(events)
        assert time.monotonic() - t0 < 10
        assert events.closed
        with pytest.raises(StopIteration):
            next(events)


def test_one_client_many_threads(client):
    """Requests from many threads share one client (they take turns)."""
    rid = client.create_run()["id"]
    errors: list[BaseException] = []
    started: list[int] = []

    def work():
        try:
            for _ in range(5):
                started.append(client.start_worker(rid, ["true"])["id"])
                client.status()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(started) == list(range(1, 41))
    assert len(client.get_run(rid)["workers"]) == 40


def test_dead_kept_connection(start_daemon, monkeypatch):
    """A kept-alive connection that dies after the reuse check: a GET is
    sent again on a fresh connection, a POST (which may have been acted on)
    is not: it raises, and the next call connects afresh."""
    import snakepit_worker.client as sc

    monkeypatch.setattr(sc._UnixConnection, "still_open", lambda self: True)  # the check misses it
    a = start_daemon()
    c = Client(a.socket)
    try:
        assert c.status()["pid"] == a.proc.pid
        assert not a.stop()
        b = start_daemon(socket_dir=a.dir)
        assert c.status()["pid"] == b.proc.pid  # retried
        assert not b.stop()
        b2 = start_daemon(socket_dir=a.dir)
        with pytest.raises(DaemonUnavailable, match="connection failed"):
            c.create_run()
        assert c.list_runs() == []  # the POST was not resent
        rid = c.create_run()["id"]
        assert [r["id"] for r in c.list_runs()] == [rid]
        assert c.status()["pid"] == b2.proc.pid
    finally:
        c.close()


def test_no_answer_is_a_daemon_error(tmp_path):
    """A daemon that accepts but never answers: the timeout is a DaemonError
    (DaemonTimeout, also a TimeoutError), not a bare socket timeout."""
    import socket

    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        mute.bind(path)
        mute.listen(8)  # connections wait in the backlog, never answered
        c = Client(path, timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(DaemonError) as ei:
            c.status()
        assert isinstance(ei.value, DaemonTimeout) and isinstance(ei.value, TimeoutError)
        assert time.monotonic() - t0 < 10
        with pytest.raises(DaemonTimeout):
            c.events()
        c.close()
    finally:
        mute.close()


def test_worker_start_outwaits_the_client_timeout(daemon, client):
    """A worker start with readiness may take the daemon longer than the
    client's timeout: the client waits as long as the daemon may (a client
    that gave up would have the daemon kill the worker it had started)."""
    rid = client.create_run()["id"]
    short = Client(daemon.socket, timeout=1)
    try:
        t0 = time.monotonic()
        w = short.start_worker(rid, ["/bin/sh", "-c", "sleep 2; echo READY; exec sleep 600"],
                               ready={"line": "^READY$"}, ready_timeout="20s")
        took = time.monotonic() - t0
    finally:
        short.close()
    assert w["state"] == "running" and w["ready"]["line"] == "READY", w
    assert took >= 1.9, took
    assert [x["state"] for x in client.get_run(rid)["workers"]] == ["running"]
