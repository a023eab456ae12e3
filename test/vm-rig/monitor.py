#!/usr/bin/env python3
"""Send one command to qemu's human monitor on a unix socket; print the answer.

    monitor.py SOCKET 'info registers -a'

Used by run.sh when the guest stops running, to say where its vCPUs are.
Exits non-zero (with the reason on stderr) when qemu does not answer, which
itself says that qemu, not only the guest, is stuck.
"""
import socket
import sys


def until_prompt(s):
    buf = b""
    while not buf.rstrip().endswith(b"(qemu)"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def main():
    path, cmd = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(8)
    s.connect(path)
    until_prompt(s)
    s.sendall(cmd.encode() + b"\n")
    out = until_prompt(s).decode(errors="replace").replace("\r", "")
    # Drop the echoed command, the prompt and the terminal escapes.
    lines = [l for l in out.splitlines()[1:] if l.strip() and "(qemu)" not in l]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
