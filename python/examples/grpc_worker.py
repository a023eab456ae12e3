#!/usr/bin/python3
"""A real gRPC worker for snakepit demos and tests.

    /usr/bin/python3 grpc_worker.py [--port 0] [--host 127.0.0.1]
        [--snakepit-run-id ID] [--grace 1.0] [--shutdown-timeout 3.0]
        [--die-with-parent] [--ready-fd N]

Serves snakepit.demo.Worker (see worker_proto.py; messages are built at run
time, no generated code) with two unary methods:

- Ping(payload) -> payload, pid, run_id, port, uptime_s
- Compute(op, n) -> result (op: "fib" = n-th Fibonacci number mod 1e9+7,
  "primes" = number of primes below n, "sum_squares" = sum of i*i for
  i < n, "sleep" = sleep n milliseconds, result 0)

--port 0 picks a free port; the real one is reported. Readiness is reported
three ways once the server accepts connections:
  * sd_notify "READY=1\\nSTATUS=port=N" on $NOTIFY_SOCKET (if set),
  * the line "GRPC_READY:N" on stdout (flushed),
  * "READY=1\\nPORT=N\\n" written to --ready-fd N (if given), then closed.

SIGTERM/SIGINT stop the server gracefully (in-flight RPCs get --grace
seconds); if shutdown takes longer than --shutdown-timeout the process
hard-exits. The run ID (from --snakepit-run-id/--run-id or
SNAKEPIT_RUN_ID, validated) is echoed in Ping replies. The worker does NOT
arm a parent-death signal unless --die-with-parent is given: the pool demo
shows that the jail, not Pdeathsig, removes orphaned workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent import futures

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
if os.path.dirname(_HERE) not in sys.path:
    sys.path.append(os.path.dirname(_HERE))  # python/ for snakepit_worker

import grpc  # noqa: E402

import worker_proto as pb  # noqa: E402
from snakepit_worker import die_with_parent, install_graceful_shutdown, notify, run_id  # noqa: E402

_MOD = 1_000_000_007


def compute(op: str, n: int) -> int:
    if n < 0 or n > 50_000_000:
        raise ValueError(f"n out of range: {n}")
    if op == "fib":
        a, b = 0, 1
        for _ in range(n):
            a, b = b, (a + b) % _MOD
        return a
    if op == "primes":
        if n < 3:
            return 0
        sieve = bytearray([1]) * n
        sieve[0:2] = b"\0\0"
        for i in range(2, int(n ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
        return sum(sieve)
    if op == "sum_squares":
        return sum(i * i for i in range(n)) % (1 << 62)
    if op == "sleep":
        time.sleep(n / 1000.0)
        return 0
    raise ValueError(f"unknown op {op!r}")


class Worker:
    def __init__(self, rid: str | None) -> None:
        self.run_id = rid or ""
        self.port = 0
        self.started = time.monotonic()

    def ping(self, request, context):
        return pb.PingReply(payload=request.payload, pid=os.getpid(), run_id=self.run_id,
                            port=self.port, uptime_s=time.monotonic() - self.started)

    def compute(self, request, context):
        t0 = time.perf_counter()
        try:
            result = compute(request.op, request.n)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.ComputeReply(result=result, pid=os.getpid(),
                               elapsed_us=int((time.perf_counter() - t0) * 1e6))


def build_server(worker: Worker, host: str, port: int, threads: int = 4):
    handlers = {
        "Ping": grpc.unary_unary_rpc_method_handler(
            worker.ping, request_deserializer=pb.PingRequest.FromString,
            response_serializer=pb.PingReply.SerializeToString),
        "Compute": grpc.unary_unary_rpc_method_handler(
            worker.compute, request_deserializer=pb.ComputeRequest.FromString,
            response_serializer=pb.ComputeReply.SerializeToString),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         handlers=[grpc.method_handlers_generic_handler(pb.SERVICE, handlers)],
                         options=[("grpc.so_reuseport", 0)])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"grpc_worker: cannot bind {host}:{port}")
    return server, bound


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--snakepit-run-id", "--run-id", dest="run_id", default=None)
    ap.add_argument("--grace", type=float, default=1.0,
                    help="seconds in-flight RPCs get on SIGTERM")
    ap.add_argument("--shutdown-timeout", type=float, default=3.0,
                    help="hard exit if graceful shutdown takes longer")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--die-with-parent", action="store_true")
    ap.add_argument("--ready-fd", type=int, default=None)
    args = ap.parse_args(argv)

    if args.die_with_parent:
        die_with_parent()
    try:
        rid = run_id(["prog", *argv])
    except ValueError as exc:
        print(f"grpc_worker: {exc}", file=sys.stderr)
        return 2

    worker = Worker(rid)
    server, port = build_server(worker, args.host, args.port, args.threads)
    worker.port = port

    def stop() -> None:
        try:
            notify(stopping=1, status=f"stopping port={port}")
        except OSError:
            pass
        server.stop(args.grace).wait()

    install_graceful_shutdown(stop, args.shutdown_timeout)
    server.start()

    print(f"GRPC_READY:{port}", flush=True)
    try:
        notify(ready=True, status=f"port={port}")
    except OSError as exc:
        print(f"grpc_worker: notify failed: {exc}", file=sys.stderr)
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, f"READY=1\nPORT={port}\n".encode())
            os.close(args.ready_fd)
        except OSError as exc:
            print(f"grpc_worker: --ready-fd {args.ready_fd}: {exc}", file=sys.stderr)

    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
