#!/usr/bin/python3
"""Client for grpc_worker.py (no generated code: see worker_proto.py).

Library:
    with WorkerClient("127.0.0.1:50051") as c:
        reply = c.ping("hello")          # PingReply: payload, pid, run_id, port, uptime_s
        c.compute("fib", 90).result

Command line:
    /usr/bin/python3 grpc_client.py HOST:PORT ping [PAYLOAD]
    /usr/bin/python3 grpc_client.py HOST:PORT compute OP N
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import worker_proto as pb  # noqa: E402


class WorkerClient:
    def __init__(self, target: str, timeout: float = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target)
        self._ping = self.channel.unary_unary(
            pb.PING, request_serializer=pb.PingRequest.SerializeToString,
            response_deserializer=pb.PingReply.FromString)
        self._compute = self.channel.unary_unary(
            pb.COMPUTE, request_serializer=pb.ComputeRequest.SerializeToString,
            response_deserializer=pb.ComputeReply.FromString)

    def ping(self, payload: str = "ping", timeout: float | None = None,
             wait_for_ready: bool = True):
        return self._ping(pb.PingRequest(payload=payload), timeout=timeout or self.timeout,
                          wait_for_ready=wait_for_ready)

    def compute(self, op: str, n: int, timeout: float | None = None):
        return self._compute(pb.ComputeRequest(op=op, n=n), timeout=timeout or self.timeout,
                             wait_for_ready=True)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("ping", "compute"):
        print(__doc__, file=sys.stderr)
        return 2
    with WorkerClient(argv[0]) as c:
        if argv[1] == "ping":
            r = c.ping(argv[2] if len(argv) > 2 else "ping")
            print(f"payload={r.payload!r} pid={r.pid} run_id={r.run_id!r} port={r.port} "
                  f"uptime_s={r.uptime_s:.3f}")
        else:
            r = c.compute(argv[2], int(argv[3]))
            print(f"result={r.result} elapsed_us={r.elapsed_us} pid={r.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
