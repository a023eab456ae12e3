"""snakepit_worker: small helpers for Python workers that run under snakepit.

Standard library only (Python >= 3.11), Linux only for the prctl parts.

- run_id(argv=None, environ=None): the run ID this worker belongs to, taken
  from ``--snakepit-run-id X`` / ``--run-id X`` / ``--snakepit-run-id=X`` /
  ``--run-id=X`` (the first marker in argv wins) or else from the
  SNAKEPIT_RUN_ID environment variable. Validated exactly like the Go side
  (runid.Validate): exactly 7 characters of [0-9a-z]. A run ID becomes a
  cgroup path component, so anything else raises ValueError.
- die_with_parent(sig=SIGKILL, parent_pid=None): prctl(PR_SET_PDEATHSIG) via
  ctypes plus the getppid() re-check for a parent that died before the prctl.
- notify(ready=False, status=None, **extra): the sd_notify datagram protocol
  on NOTIFY_SOCKET (path or abstract "@name"); returns False when unset.
- install_graceful_shutdown(callback, timeout): SIGTERM/SIGINT run `callback`
  (in a thread by default) and a watchdog hard-exits the process if shutdown
  takes longer than `timeout` seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "RUN_ID_LEN",
    "FLAG",
    "SHORT_FLAG",
    "ENV_VAR",
    "validate_run_id",
    "generate_run_id",
    "extract_run_id",
    "run_id",
    "die_with_parent",
    "parent_death_signal",
    "notify",
    "install_graceful_shutdown",
    "GracefulShutdown",
]

RUN_ID_LEN = 7
FLAG = "--snakepit-run-id"
SHORT_FLAG = "--run-id"
ENV_VAR = "SNAKEPIT_RUN_ID"
_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


# --------------------------------------------------------------------------
# run IDs


def validate_run_id(value: object) -> str:
    """Return `value` if it is a well-formed run ID, else raise ValueError.

    Mirrors runid.Validate in Go: exactly 7 characters, each in [0-9a-z]
    (ASCII only: "ä" or a fullwidth digit is rejected, as are "/", ".", NUL).
    """
    if not isinstance(value, str):
        raise ValueError(f"invalid run ID {value!r}: not a string")
    if len(value) != RUN_ID_LEN or not all(c in _ALPHABET for c in value):
        shown = value if len(value) <= 32 else value[:32] + "..."
        raise ValueError(
            f"invalid run ID {shown!r}: want {RUN_ID_LEN} characters of [0-9a-z]"
        )
    return value


def generate_run_id() -> str:
    """A fresh random run ID (7 characters of [0-9a-z], from the OS CSPRNG)."""
    import secrets

    return "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(RUN_ID_LEN))


def extract_run_id(argv: Sequence[str]) -> str | None:
    """Find a run ID marker in argv (first marker wins); None when absent.

    A marker with a missing or invalid value raises ValueError, as in Go's
    runid.Extract (which returns ErrInvalid there).
    """
    argv = list(argv)
    for i, arg in enumerate(argv):
        for flag in (FLAG, SHORT_FLAG):
            if arg == flag:
                if i + 1 >= len(argv):
                    raise ValueError(f"invalid run ID: {flag} without a value")
                return validate_run_id(argv[i + 1])
            if arg.startswith(flag + "="):
                return validate_run_id(arg[len(flag) + 1 :])
    return None


def run_id(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The run ID of this worker, from argv markers or SNAKEPIT_RUN_ID.

    argv defaults to sys.argv, environ to os.environ. argv wins over the
    environment. Returns None when neither carries a run ID; raises
    ValueError when the one that does is malformed (including an empty
    SNAKEPIT_RUN_ID).
    """
    if argv is None:
        argv = sys.argv
    if environ is None:
        environ = os.environ
    found = extract_run_id(argv)
    if found is not None:
        return found
    if ENV_VAR in environ:
        return validate_run_id(environ[ENV_VAR])
    return None


# --------------------------------------------------------------------------
# die with parent

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2

_prctl_fn = None


def _prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    global _prctl_fn
    if _prctl_fn is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc["prctl"]  # a private function pointer: argtypes not shared with other users
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        _prctl_fn = fn
    rc = _prctl_fn(option, arg2, arg3, arg4, arg5)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return rc


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies.

    Uses prctl(PR_SET_PDEATHSIG). Because the parent may already have died
    before the prctl took effect (then we were re-parented and no signal will
    ever come), getppid() is checked afterwards against `parent_pid`: the
    parent PID observed before (default: os.getppid() at call time; pass the
    PID you expect, e.g. one handed down by the supervisor, to also cover a
    parent that died before this function was even called). If it no longer
    matches, `sig` is sent to ourselves right away (and if that does not end
    us, e.g. the signal is caught or ignored, the process exits with status
    1 unless a handler decided otherwise).

    Caveats (see BRIEF field note 1): the signal fires when the *thread* that
    forked us exits, not the whole parent process; it is cleared in our own
    fork()ed children and on set-uid/set-gid exec. It covers only us.

    Returns True if the parent is alive and the death signal is armed.
    """
    if parent_pid is None:
        parent_pid = os.getppid()
    _prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent_pid:
        # The parent died before (or while) we armed the death signal.
        os.kill(os.getpid(), int(sig))  # SIGKILL ends us here
        # The signal did not kill us (caught or ignored): a handler may have
        # chosen to keep running; the default is to leave.
        if signal.getsignal(int(sig)) in (signal.SIG_DFL, signal.SIG_IGN, None):
            os._exit(1)
        return False
    return True


def parent_death_signal() -> int:
    """The currently armed parent-death signal (0 when none)."""
    out = ctypes.c_int(0)
    _prctl(PR_GET_PDEATHSIG, ctypes.addressof(out))
    return out.value


# --------------------------------------------------------------------------
# sd_notify


def _notify_address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        # Abstract namespace: leading NUL, no trailing NUL, exact length.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    raise ValueError(f"NOTIFY_SOCKET={raw!r}: want an absolute path or @abstract name")


def notify(ready: bool = False, status: str | None = None, *,
           environ: Mapping[str, str] | None = None, **extra: object) -> bool:
    """Send an sd_notify(3) message to $NOTIFY_SOCKET.

    notify(ready=True, status="port=50051") sends "READY=1\\nSTATUS=port=50051".
    Extra keyword arguments become further KEY=VALUE lines, with the key
    upper-cased (notify(mainpid=42, stopping=1) -> MAINPID=42, STOPPING=1).

    Returns False without doing anything when NOTIFY_SOCKET is unset or empty
    (or there is nothing to send), True once the datagram was sent. Socket
    errors (no listener, permission denied) raise OSError: a worker that was
    asked to report readiness and cannot should know.
    """
    env = os.environ if environ is None else environ
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return False
    lines = []
    if ready:
        lines.append("READY=1")
    if status is not None:
        lines.append(f"STATUS={status}")
    for key, value in extra.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        text = str(value)
        if "\n" in text:
            raise ValueError(f"notify: newline in value for {key}")
        lines.append(f"{key.upper()}={text}")
    if not lines:
        return False
    if status is not None and "\n" in status:
        raise ValueError("notify: newline in status")
    addr = _notify_address(raw)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto("\n".join(lines).encode(), addr)
    return True


# --------------------------------------------------------------------------
# graceful shutdown


class GracefulShutdown:
    """Handle returned by install_graceful_shutdown().

    - requested: threading.Event, set when the first signal arrived.
    - signum: the signal that started the shutdown (None before).
    - done: threading.Event, set when the callback returned.
    - error: the exception the callback raised, if any.
    - wait(timeout=None): block until a shutdown was requested.
    - uninstall(): restore the previous signal handlers (and disarm the
      watchdog if it is already running).
    """

    def __init__(self, callback: Callable[[], object], timeout: float,
                 signals: Iterable[int], in_thread: bool, exit_code: int | None,
                 on_repeat: str) -> None:
        self.callback = callback
        self.timeout = float(timeout)
        self.signals = tuple(signals)
        self.in_thread = in_thread
        self.exit_code = exit_code
        self.on_repeat = on_repeat
        self.requested = threading.Event()
        self.done = threading.Event()
        self.signum: int | None = None
        self.error: BaseException | None = None
        self._disarmed = threading.Event()
        self._previous: dict[int, object] = {}
        self._lock = threading.Lock()

    # signal handler (runs in the main thread, between bytecodes)
    def _handler(self, signum, frame) -> None:
        with self._lock:
            first = not self.requested.is_set()
            if first:
                self.signum = signum
                self.requested.set()
        if not first:
            if self.on_repeat == "exit":
                os._exit(128 + signum)
            return
        self._start_watchdog(signum)
        if self.in_thread:
            threading.Thread(target=self._run_callback, name="graceful-shutdown",
                             daemon=False).start()
        else:
            self._run_callback()

    def _run_callback(self) -> None:
        try:
            self.callback()
        except BaseException as exc:  # noqa: BLE001 - reported, then re-raised in thread
            self.error = exc
            print(f"snakepit_worker: shutdown callback failed: {exc!r}", file=sys.stderr)
        finally:
            self.done.set()

    def _start_watchdog(self, signum: int) -> None:
        code = self.exit_code if self.exit_code is not None else 128 + signum

        def watchdog() -> None:
            if self._disarmed.wait(self.timeout):
                return
            try:
                sys.stderr.write(
                    f"snakepit_worker: graceful shutdown exceeded {self.timeout:g}s, "
                    f"exiting with status {code}\n")
                sys.stderr.flush()
            finally:
                os._exit(code)

        threading.Thread(target=watchdog, name="graceful-shutdown-watchdog", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self.requested.wait(timeout)

    def uninstall(self) -> None:
        self._disarmed.set()
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()


def install_graceful_shutdown(
    callback: Callable[[], object],
    timeout: float,
    *,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    in_thread: bool = True,
    exit_code: int | None = None,
    on_repeat: str = "ignore",
) -> GracefulShutdown:
    """Run `callback` on SIGTERM/SIGINT; hard-exit if shutdown exceeds `timeout`.

    On the first signal a watchdog thread starts: if the process is still
    alive `timeout` seconds later it calls os._exit(exit_code) (default
    128+signum, what a shell reports for death by that signal). The
    callback runs in a new non-daemon thread (in_thread=True, the default,
    so the signal handler returns at once and a main loop such as
    grpc.Server.wait_for_termination() keeps running until the callback
    stops it) or directly inside the handler in the main thread
    (in_thread=False). The callback should make the main program finish;
    the process then exits normally.

    A repeated signal is ignored (on_repeat="ignore": supervisors and
    cgroup teardowns may well deliver SIGTERM twice) or exits at once
    (on_repeat="exit").

    Keep `timeout` below the supervisor's grace period (BRIEF field note 11).
    Must be called from the main thread (Python's rule for signal handlers).
    """
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    if on_repeat not in ("ignore", "exit"):
        raise ValueError("on_repeat must be 'ignore' or 'exit'")
    handle = GracefulShutdown(callback, timeout, signals, in_thread, exit_code, on_repeat)
    for sig in handle.signals:
        handle._previous[sig] = signal.signal(sig, handle._handler)
    return handle
