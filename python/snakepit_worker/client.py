"""Client of the snakepit daemon's HTTP+JSON API (docs/API.md). Stdlib only, sync.

Speaks HTTP/1.1 over the daemon's unix socket with ``http.client``; one
kept-alive connection per client (checked before each reuse, as the Go
client does), a fresh connection per event stream.

    from snakepit_worker.client import Client, NotFound

    with Client() as c:                                   # $SNAKEPIT_SOCKET or /run/snakepit/snakepit.sock
        run = c.create_run()                              # {"id": "k3v9x0q", "state": "active", ...}
        w = c.start_worker(run["id"], ["/usr/bin/python3", "worker.py"],
                           env=["PATH=/usr/bin:/bin"], stdout="/var/log/w.log")
        c.stop_worker(run["id"], w["id"], grace=1)        # -> the worker, "state": "exited"
        c.teardown(run["id"], grace="2s")                 # -> {"terminated": 1, "killed": false, ...}
        with c.events(timeout=30) as events:              # NDJSON stream as an iterator of dicts
            for ev in events:
                ...

Results are the API's JSON objects as plain dicts and lists, so fields the
daemon adds later come through untouched. Extra keyword arguments of
``create_run`` and ``start_worker`` are sent as JSON fields of the request
body as they are (run specs such as ``limits``, ``net``; worker settings such
as ``user``, ``ready``), so a newer daemon's settings can be used without a
newer client; a daemon that does not know a field refuses it (strict
decoding, ``invalid_json``).

Every API error raises an ``APIError`` subclass chosen by the response's
``code`` (``NotFound`` for ``not_found``, ...; an unknown code raises
``APIError`` itself); ``.code``, ``.status`` and ``.message`` carry what the
daemon said. A socket that is missing, refuses connections or may not be
opened by the caller raises ``DaemonUnavailable``; no answer within the
timeout raises ``DaemonTimeout`` (also a ``TimeoutError``). All derive from
``DaemonError``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import threading
import urllib.parse
from typing import Any, Iterator, Sequence

__all__ = [
    "DEFAULT_SOCKET",
    "SOCKET_ENV",
    "socket_path",
    "Client",
    "EventStream",
    "DaemonError",
    "DaemonUnavailable",
    "DaemonTimeout",
    "APIError",
    "BadRequest",
    "InvalidJSON",
    "InvalidRunID",
    "NoProgram",
    "TooLarge",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "LimitReached",
    "Unavailable",
    "InternalError",
]

DEFAULT_SOCKET = "/run/snakepit/snakepit.sock"  # api.DefaultSocket
SOCKET_ENV = "SNAKEPIT_SOCKET"  # api.SocketEnv


def socket_path() -> str:
    """The daemon's socket: $SNAKEPIT_SOCKET, else the default path."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


# ---------------------------------------------------------------- errors


class DaemonError(Exception):
    """Base of every error this client raises."""


class DaemonUnavailable(DaemonError):
    """No daemon behind the socket (missing, refused), or the connection broke."""


class DaemonTimeout(DaemonError, TimeoutError):
    """No answer from the daemon within the request's timeout (the
    connection is closed; the request may still have been acted on)."""


class APIError(DaemonError):
    """An error response of the API: {"error": message, "code": code}."""

    def __init__(self, status: int, code: str, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}{message} (HTTP {status}, {code or 'no code'})")


class BadRequest(APIError):
    """400: an invalid value (code bad_request; the subclasses name the rest)."""


class InvalidJSON(BadRequest):
    """400 invalid_json: malformed body, or a field this daemon does not know."""


class InvalidRunID(BadRequest):
    """400 invalid_run_id."""


class NoProgram(BadRequest):
    """400 no_program: argv missing or empty."""


class Unprocessable(APIError):
    """422: the spec is valid but cannot be had here (controller_unavailable:
    a limit's cgroup controller is missing) or the worker failed its
    readiness (not_ready, exited_before_ready; it was killed, the run stays)."""


class TooLarge(APIError):
    """413 too_large: request body over 64 KiB."""


class Forbidden(APIError):
    """403 forbidden: the caller may not use the daemon, or the run is another UID's."""


class NotFound(APIError):
    """404 not_found: no such run, worker or endpoint."""


class MethodNotAllowed(APIError):
    """405 method_not_allowed."""


class Conflict(APIError):
    """409 conflict: run ID in use, or the run is being torn down."""


class LimitReached(APIError):
    """429 limit_reached: --max-runs or --max-workers."""


class Unavailable(APIError):
    """503 unavailable: the daemon is shutting down."""


class InternalError(APIError):
    """500 internal: a bug in the daemon."""


_BY_CODE: dict[str, type[APIError]] = {
    "bad_request": BadRequest,
    "invalid_json": InvalidJSON,
    "invalid_run_id": InvalidRunID,
    "no_program": NoProgram,
    "too_large": TooLarge,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "limit_reached": LimitReached,
    "unavailable": Unavailable,
    "internal": InternalError,
    # A rejected run or worker spec: the CLI reports the same errors.
    "invalid_limit": BadRequest,
    "invalid_net": BadRequest,
    "no_such_netns": BadRequest,
    "invalid_duration": BadRequest,
    "invalid_ready": BadRequest,
    "unknown_user": BadRequest,
    "controller_unavailable": Unprocessable,
    "not_ready": Unprocessable,
    "exited_before_ready": Unprocessable,
}


def _api_error(status: int, data: bytes, method: str, path: str) -> APIError:
    code, message = "", ""
    try:
        body = json.loads(data)
        if isinstance(body, dict):
            code = str(body.get("code") or "")
            message = str(body.get("error") or "")
    except ValueError:
        pass
    if not message:
        message = data.decode(errors="replace").strip() or http.client.responses.get(status, "error")
    return _BY_CODE.get(code, APIError)(status, code, message, method, path)


# ---------------------------------------------------------------- transport


class _UnixConnection(http.client.HTTPConnection):
    """HTTPConnection to a unix socket (the Host header is ignored by the daemon)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("snakepit", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s

    def still_open(self) -> bool:
        """An idle connection is reusable only when a peek would block: EOF
        (the daemon closed it) or unasked bytes make it unusable."""
        if self.sock is None:
            return False
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not r


def _unavailable(path: str, exc: OSError) -> DaemonUnavailable:
    if isinstance(exc, PermissionError):
        # The socket file enforces the API's access rule before a byte is
        # read (root:root 0600, or root:<group> 0660 with --group).
        return DaemonUnavailable(f"permission denied on the snakepit daemon's socket {path} "
                                 f"(root and members of the daemon's --group only): {exc}")
    return DaemonUnavailable(f"no snakepit daemon at {path}: {exc}")


def _duration(grace: float | int | str | None) -> str | None:
    """grace as the API's query value: seconds (number) or a Go duration string."""
    if grace is None or isinstance(grace, str):
        return grace
    if isinstance(grace, bool) or grace < 0:
        raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
    return f"{round(float(grace) * 1000)}ms"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def _seconds(value: float | int | str | None, default: float) -> float:
    """A duration in seconds: a number is seconds, a string plain seconds or
    a Go duration ("1.5s", "1m30s"); `default` when None or unreadable."""
    if value is None or isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return default
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _grace_seconds(grace: float | int | str | None) -> float:
    """An upper bound on grace in seconds, to widen the read timeout."""
    # None: the daemon's default is its --grace; the API caps grace at 5 min.
    return _seconds(grace, 300.0)


# A worker start's own bounds on the daemon (docs/API.md): the start and
# the kill after a failed one (50 s), then the wait for readiness: its
# ready_timeout (at most 10 min), else the request's 30 s.
_WORKER_START_S = 50.0
_READY_DEFAULT_S = 30.0
_READY_MAX_S = 600.0
_MARGIN_S = 10.0


def _start_timeout(timeout: float, spec: dict) -> float:
    """Read timeout of a worker start: never shorter than the daemon's own
    bound on it, else the client gives up first (and the daemon, finding
    the connection gone, kills the worker it was starting)."""
    wait = _WORKER_START_S
    if spec.get("ready") or spec.get("ready_timeout"):
        ready = _seconds(spec.get("ready_timeout"), _READY_DEFAULT_S)
        wait += min(ready, _READY_MAX_S) if ready > 0 else _READY_DEFAULT_S
    return max(timeout, wait + _MARGIN_S)


def _run_path(run_id: str) -> str:
    if not isinstance(run_id, str):
        raise TypeError(f"run ID must be a str, got {type(run_id).__name__}")
    return "/v1/runs/" + urllib.parse.quote(run_id, safe="")


# ---------------------------------------------------------------- client


class Client:
    """A client of one daemon socket. Thread-safe (requests take turns on one
    kept-alive connection; event streams have their own)."""

    def __init__(self, path: str | None = None, *, timeout: float = 30.0) -> None:
        self.socket = path or socket_path()
        self.timeout = timeout
        self._conn: _UnixConnection | None = None
        self._lock = threading.Lock()

    # context manager / lifetime
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection (a later request opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"<snakepit Client {self.socket}>"

    # the one request path
    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
                expect: tuple[int, ...] = (200,)) -> Any:
        """One API call: JSON body in (None: no body), decoded JSON out.
        Raises an APIError subclass for an error response."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        with self._lock:
            # A kept-alive connection the daemon closed just after the
            # still_open() check fails at once; a GET (which changes
            # nothing) is then sent again on a fresh connection.
            for attempt in (1, 2):
                conn = self._conn
                self._conn = None
                reused = conn is not None
                if conn is not None and not conn.still_open():
                    conn.close()
                    conn, reused = None, False
                if conn is None:
                    conn = _UnixConnection(self.socket, self.timeout)
                conn.timeout = self.timeout if timeout is None else timeout
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                try:
                    conn.request(method, path, body=data, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
                    conn.close()
                    raise _unavailable(self.socket, exc) from exc
                except (http.client.HTTPException, ConnectionError) as exc:
                    conn.close()
                    if reused and attempt == 1 and method == "GET":
                        continue
                    raise DaemonUnavailable(f"{method} {path} on {self.socket}: connection failed: {exc!r}") from exc
                except TimeoutError as exc:  # socket.timeout
                    conn.close()
                    raise DaemonTimeout(f"{method} {path} on {self.socket}: no answer within "
                                        f"{conn.timeout}s") from exc
                except OSError as exc:
                    conn.close()
                    raise DaemonUnavailable(f"{method} {path} on {self.socket}: connection failed: {exc!r}") from exc
                except BaseException:
                    conn.close()
                    raise
                if resp.will_close:
                    conn.close()
                else:
                    self._conn = conn
                break
        if resp.status not in expect:
            raise _api_error(resp.status, payload, method, path)
        try:
            return json.loads(payload) if payload.strip() else None
        except ValueError as exc:
            raise DaemonError(f"{method} {path}: response is not JSON: {payload[:200]!r}") from exc

    # runs
    def create_run(self, id: str | None = None, **spec: Any) -> dict:  # noqa: A002 - the API's name
        """POST /v1/runs. `id` chooses the run ID; every other keyword is a
        field of the request body, sent as is (run spec: limits, net, ...)."""
        body = dict(spec)
        if id is not None:
            body["id"] = id
        return self.request("POST", "/v1/runs", body, expect=(201,))

    def list_runs(self) -> list[dict]:
        """GET /v1/runs: the runs the caller may see, oldest first."""
        return self.request("GET", "/v1/runs")

    def get_run(self, run_id: str) -> dict:
        """GET /v1/runs/{id}: the run with its workers (NotFound if none)."""
        return self.request("GET", _run_path(run_id))

    def run_stats(self, run_id: str) -> dict:
        """GET /v1/runs/{id}/stats: {"id", "stats"}, the run cgroup's usage (the
        same stats object as `snakepit ps --json`; absent where the host lacks it)."""
        return self.request("GET", _run_path(run_id) + "/stats")

    def teardown(self, run_id: str, grace: float | str | None = None) -> dict:
        """DELETE /v1/runs/{id}: tear the run down (SIGTERM, grace, kill, remove);
        returns the teardown report once the run is gone. grace: seconds or a
        Go duration ("500ms"); None: the daemon's --grace."""
        path = _run_path(run_id)
        g = _duration(grace)
        if g is not None:
            path += "?grace=" + urllib.parse.quote(g)
        return self.request("DELETE", path, timeout=self.timeout + _grace_seconds(grace))

    delete_run = teardown

    # workers
    def start_worker(self, run_id: str, argv: Sequence[str], *, env: Sequence[str] | None = None,
                     dir: str | None = None, stdout: str | None = None,  # noqa: A002
                     stderr: str | None = None, **spec: Any) -> dict:
        """POST /v1/runs/{id}/workers. env is the whole environment as
        "K=V" strings (None: just PATH); dir absolute; stdout/stderr absolute
        paths opened for appending (None: /dev/null). Other keywords are
        fields of the request body, sent as is (user, ready, ...). The
        request waits as long as the daemon may take to answer it (50 s,
        plus the ready_timeout with readiness), never less."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of strings, not a string")
        body: dict[str, Any] = {"argv": list(argv)}
        for key, value in (("env", env), ("dir", dir), ("stdout", stdout), ("stderr", stderr)):
            if value is not None:
                body[key] = list(value) if key == "env" else value
        body.update(spec)
        return self.request("POST", _run_path(run_id) + "/workers", body, expect=(201,),
                            timeout=_start_timeout(self.timeout, spec))

    def stop_worker(self, run_id: str, worker_id: int, grace: float | str | None = None) -> dict:
        """DELETE /v1/runs/{id}/workers/{wid}: SIGTERM, SIGKILL after grace;
        returns the worker once it has exited (with its "exit")."""
        path = f"{_run_path(run_id)}/workers/{int(worker_id)}"
        g = _duration(grace)
        if g is not None:
            path += "?grace=" + urllib.parse.quote(g)
        return self.request("DELETE", path, timeout=self.timeout + _grace_seconds(grace))

    # daemon
    def status(self) -> dict:
        """GET /v1/status."""
        return self.request("GET", "/v1/status")

    def events(self, timeout: float | None = None) -> "EventStream":
        """GET /v1/events on a connection of its own. Returns once the daemon
        has subscribed the stream: every event after that is delivered.
        Iterating yields each event as a dict; a read waiting longer than
        `timeout` seconds raises DaemonTimeout (a TimeoutError) and closes
        the stream (None:
        wait forever). The
        iteration ends when the daemon closes the stream (shutdown, or after an
        {"type": "overflow"} event for a reader that fell behind)."""
        conn = _UnixConnection(self.socket, self.timeout)
        try:
            conn.request("GET", "/v1/events", headers={"Accept": "application/x-ndjson"})
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            conn.close()
            raise _unavailable(self.socket, exc) from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            conn.close()
            raise DaemonUnavailable(f"GET /v1/events on {self.socket}: connection failed: {exc!r}") from exc
        except TimeoutError as exc:  # socket.timeout
            conn.close()
            raise DaemonTimeout(f"GET /v1/events on {self.socket}: no answer within {conn.timeout}s") from exc
        except OSError as exc:
            conn.close()
            raise DaemonUnavailable(f"GET /v1/events on {self.socket}: connection failed: {exc!r}") from exc
        except BaseException:
            conn.close()
            raise
        if resp.status != 200:
            payload = resp.read()
            conn.close()
            raise _api_error(resp.status, payload, "GET", "/v1/events")
        conn.sock.settimeout(timeout)
        return EventStream(conn, resp)


class EventStream:
    """Iterator of the daemon's events (dicts). Close it (or use `with`) to
    disconnect; close() from another thread wakes a blocked reader."""

    def __init__(self, conn: _UnixConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self.closed = False

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        while True:
            if self.closed:
                raise StopIteration
            try:
                line = self._resp.readline()
            except socket.timeout as exc:
                # A timed-out socket file cannot be read again (and a chunk
                # may be half read): the stream ends here.
                self.close()
                raise DaemonTimeout("no event from the snakepit daemon in time (stream closed)") from exc
            except (http.client.HTTPException, OSError, ValueError) as exc:
                if self.closed:
                    raise StopIteration from None
                # http.client reports a stream cut mid-chunk as IncompleteRead.
                raise DaemonUnavailable(f"event stream broke: {exc!r}") from exc
            if not line:
                self.close()
                raise StopIteration
            if line.strip():
                return json.loads(line)

    def next(self, timeout: float | None = None) -> dict:
        """The next event, waiting at most `timeout` seconds (None: the
        stream's timeout). StopIteration at the end of the stream."""
        if timeout is not None and self._conn.sock is not None:
            old = self._conn.sock.gettimeout()
            self._conn.sock.settimeout(timeout)
            try:
                return next(self)
            finally:
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(old)
        return next(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
