"""notify(): sd_notify datagrams against real unixgram sockets."""

import os
import socket
import struct
import subprocess
import uuid

import pytest

from snakepit_worker import notify

from conftest import PYROOT, PYTHON


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield path, s
    s.close()


def test_unset_is_noop():
    assert notify(ready=True, status="x", environ={}) is False
    assert notify(ready=True, environ={"NOTIFY_SOCKET": ""}) is False


def test_unset_via_process_env(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify(ready=True) is False


def test_ready_and_status(listener, monkeypatch):
    path, s = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify(ready=True, status="port=50051") is True
    assert s.recv(4096) == b"READY=1\nSTATUS=port=50051"


def test_extra_fields(listener):
    path, s = listener
    assert notify(status="busy", mainpid=42, stopping=True, errno=None,
                  environ={"NOTIFY_SOCKET": path}) is True
    assert s.recv(4096).decode().split("\n") == ["STATUS=busy", "MAINPID=42", "STOPPING=1"]


def test_nothing_to_send(listener):
    path, s = listener
    assert notify(environ={"NOTIFY_SOCKET": path}) is False


def test_abstract_socket():
    name = f"snakepit-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        assert notify(ready=True, environ={"NOTIFY_SOCKET": "@" + name}) is True
        assert s.recv(4096) == b"READY=1"
    finally:
        s.close()


def test_sender_credentials_from_child(listener):
    """A worker process notifies; SCM_CREDENTIALS names its PID (what the
    pool supervisor relies on)."""
    path, s = listener
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = "from snakepit_worker import notify; notify(ready=True, status='port=7')"
    p = subprocess.run([PYTHON, "-c", code], env=dict(os.environ, NOTIFY_SOCKET=path,
                                                      PYTHONPATH=PYROOT),
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1\nSTATUS=port=7"
    creds = [struct.unpack("3i", d[:12]) for lvl, typ, d in anc
             if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS]
    assert creds and creds[0][0] > 0 and creds[0][0] != os.getpid()


def test_no_listener_raises(tmp_path):
    with pytest.raises(OSError):
        notify(ready=True, environ={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})


@pytest.mark.parametrize("bad", ["relative.sock", "vsock:2:1234"])
def test_bad_address(bad):
    with pytest.raises(ValueError):
        notify(ready=True, environ={"NOTIFY_SOCKET": bad})


def test_newline_rejected(listener):
    path, _s = listener
    with pytest.raises(ValueError):
        notify(status="a\nREADY=1", environ={"NOTIFY_SOCKET": path})
    with pytest.raises(ValueError):
        notify(ready=True, foo="x\ny", environ={"NOTIFY_SOCKET": path})
