"""End to end: real gRPC workers under the jail.

- 4 workers in one run answer Ping; the supervisor is SIGKILLed; zero
  workers survive, all gone within 100 ms of the SIGKILL (measured, printed).
- Worker startup-to-ready time, median of 10: bare /usr/bin/python3
  grpc_worker.py vs the same under the jail (snakepit exec into a run, and
  snakepit run), measured in the same test run. Reported, not asserted.
"""

import os
import signal
import statistics
import subprocess
import time

import pytest

from snakepit_worker import generate_run_id

from conftest import EXAMPLES, PYTHON, need_grpc, read_line, report

SURVIVOR_BOUND_MS = 100.0
WORKER = os.path.join(EXAMPLES, "grpc_worker.py")


@pytest.fixture(autouse=True)
def _grpc():
    need_grpc()


def _demo(sp, **kw):
    import pool_demo

    res = pool_demo.run_demo(sp.binary, **kw)
    import io

    buf = io.StringIO()
    pool_demo.print_report(res, buf)
    print(buf.getvalue())
    return res, buf.getvalue()


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@pytest.mark.parametrize("mode", ["run", "create"])
def test_pool_supervisor_sigkilled_zero_survivors(sp, mode):
    """Zero survivors is asserted on every attempt. The 100 ms bound is
    asserted on the best of up to 3 attempts: the test machines have 2 noisy
    cores shared with other suites, and one descheduled wrapper should not
    fail CI. Every attempt's time is printed in the report."""
    times = []
    for attempt in range(3):
        res, text = _demo(sp, workers=4, mode=mode, kill="supervisor", grace="0s")
        assert not res.error, text
        assert len(res.workers) == 4, text
        assert all(w.ping_ok for w in res.workers), text
        assert all(w.in_run_cgroup for w in res.workers), text
        assert res.survivors == [], text
        assert res.run_removed, text
        if mode == "run":
            assert res.wrapper_status == 128 + signal.SIGKILL, text
        times.append(res.all_gone_ms)
        if res.all_gone_ms <= SURVIVOR_BOUND_MS:
            break
    report(f"pool ({mode} mode, grace 0s): last worker gone after supervisor SIGKILL",
           " / ".join(f"{t:.1f} ms" for t in times)
           + f" (run cgroup removed after {res.run_removed_ms:.1f} ms; loadavg {_loadavg()})")
    assert min(times) <= SURVIVOR_BOUND_MS, f"all attempts over {SURVIVOR_BOUND_MS} ms: {times} (loadavg {_loadavg()})"


def test_pool_graceful_teardown_zero_survivors(sp):
    """Same, with a 2 s grace: the workers get SIGTERM and shut down
    gracefully. Zero survivors is asserted; the time is only reported."""
    res, text = _demo(sp, workers=4, mode="run", kill="supervisor", grace="2s")
    assert not res.error and res.survivors == [] and res.run_removed, text
    report("pool (run mode, grace 2s, graceful SIGTERM): last worker gone after supervisor SIGKILL",
           f"{res.all_gone_ms:.1f} ms")


def test_pool_wrapper_sigkilled_zero_survivors(sp):
    """SIGKILL `snakepit run` itself (not the supervisor it wraps): its
    child dies by Pdeathsig, but the workers are grandchildren; something
    (a guardian) must still kill them."""
    res, text = _demo(sp, workers=4, mode="run", kill="wrapper", grace="0s")
    assert not res.error, text
    assert res.survivors == [], text
    assert res.run_removed, text
    report("pool (run mode, `snakepit run` wrapper SIGKILLed): last worker gone",
           f"{res.all_gone_ms:.1f} ms")


# ------------------------------------------------------------------ startup


def _time_to_ready(argv, env=None):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        line = read_line(p, "GRPC_READY:", timeout=30)
        took = time.perf_counter() - t0
        assert int(line.split(":", 1)[1]) > 0
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    return took


def test_startup_to_ready_median_of_10(sp, cleanup):
    rid = cleanup.run(sp.create(grace="2s"))
    worker = [PYTHON, WORKER, "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    samples = {"bare": [], "exec": [], "run": []}
    run_ids = []
    _time_to_ready(worker, env)  # warm the page cache once
    for _ in range(10):
        samples["bare"].append(_time_to_ready(worker, env))
        samples["exec"].append(_time_to_ready(sp.exec_argv(rid, worker + ["--snakepit-run-id", rid]), env))
        run_ids.append(generate_run_id())
        samples["run"].append(_time_to_ready(sp.run_argv(worker, run_id=run_ids[-1], grace="2s"), env))
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    report("grpc_worker startup-to-ready, median of 10, bare /usr/bin/python3",
           f"{med['bare']:.1f} ms")
    report("grpc_worker startup-to-ready, median of 10, snakepit exec into a run",
           f"{med['exec']:.1f} ms ({med['exec'] - med['bare']:+.1f} ms)")
    report("grpc_worker startup-to-ready, median of 10, snakepit run (fresh run each)",
           f"{med['run']:.1f} ms ({med['run'] - med['bare']:+.1f} ms)")
    for k, v in samples.items():
        print(k, " ".join(f"{x * 1000:.1f}" for x in v))
    # No leftovers from `snakepit run` (each run removed when its command exited).
    leftover = [r["id"] for r in sp.ps() if r["id"] in run_ids]
    assert not leftover, leftover
