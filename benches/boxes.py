#!/usr/bin/env python3
"""Memory and instruction counts of keepty binaries, for docs/performance.md ("On the boxes it
is for"). Driven by benches/boxes.sh; standard library only, so it runs anywhere python3 does.

  boxes.py rss BIN...        idle RSS, and RSS with 10 attached sessions (idle shells)
  boxes.py callgrind BIN...  server instructions per MiB of relayed output (valgrind)

Every server listens on 127.0.0.1:0 and is stopped with SIGTERM; every wait is bounded.
"""

import base64
import glob
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

TIMEOUT = 120  # seconds, for any one wait


def start(argv):
    """Starts a server (argv ends with the session COMMAND) and returns (proc, port)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, SHELL="/bin/sh"))
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on https?://[^ ]*:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"unexpected startup line: {line!r}")
    return proc, int(m.group(1))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Ws:
    """A minimal keepty.v1 WebSocket client: binary frames are output, text frames events."""

    def __init__(self, port, query):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: keepty.v1\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise SystemExit(f"handshake refused: {head!r}")

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def frame(self):
        """The next frame as (opcode, payload)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        op = b0 & 0x0F
        if op == 9:  # ping: answer with a masked pong
            mask = os.urandom(4)
            body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            self.s.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + body)
        return op, payload

    def event(self, kind):
        """Reads until a text event of `kind`; returns it (output bytes before it dropped)."""
        while True:
            op, payload = self.frame()
            if op == 1:
                ev = json.loads(payload)
                if ev.get("type") == kind:
                    return ev
            elif op == 8:
                raise EOFError

    def output_until_end(self):
        """Counts output bytes until the session's exit event, a Close or EOF."""
        total = 0
        try:
            while True:
                op, payload = self.frame()
                if op == 2:
                    total += len(payload)
                elif op == 1 and json.loads(payload).get("type") == "exited":
                    return total
                elif op == 8:
                    return total
        except EOFError:
            return total


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss(bins):
    print("| binary | idle RSS (anon) | 10 sessions attached (anon) |")
    print("|---|---|---|")
    for b in bins:
        proc, port = start([b, "--listen", "127.0.0.1:0", "--", "/bin/sh"])
        try:
            time.sleep(1)
            idle = (status_kib(proc.pid, "VmRSS"), status_kib(proc.pid, "RssAnon"))
            clients = []
            for i in range(10):
                c = Ws(port, f"session=rss{i}&new=1")
                c.event("attached")
                clients.append(c)
            time.sleep(2)  # the shells' prompts are in; nothing else moves
            busy = (status_kib(proc.pid, "VmRSS"), status_kib(proc.pid, "RssAnon"))
        finally:
            stop(proc)
        print(f"| {b} | {idle[0]} KiB ({idle[1]}) | {busy[0]} KiB ({busy[1]}) |")


def callgrind_ir(b, nbytes, workdir):
    """Server instructions (Ir) for one session relaying `head -c nbytes /dev/zero | base64`
    to one client reading as fast as it can, from startup to SIGTERM; and the bytes relayed."""
    for f in glob.glob(os.path.join(workdir, "cg.*")):
        os.unlink(f)
    script = f"head -c {nbytes} /dev/zero | base64"
    proc, port = start(["valgrind", "--tool=callgrind", "-q",
                        f"--callgrind-out-file={workdir}/cg.%p", b,
                        "--listen", "127.0.0.1:0", "--", "/bin/sh", "-c", script])
    try:
        c = Ws(port, "session=cg&new=1")
        c.event("attached")
        relayed = c.output_until_end()
        c.s.close()
    finally:
        stop(proc)
    out = os.path.join(workdir, f"cg.{proc.pid}")
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1]), relayed
    raise SystemExit(f"no totals in {out}")


def callgrind(bins):
    mib = int(os.environ.get("BOXES_MIB", "16"))
    print(f"| binary | Ir, empty session | Ir, {mib} MiB through base64 | relayed | Ir per relayed MiB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for b in bins:
            base, _ = callgrind_ir(b, 0, d)
            full, relayed = callgrind_ir(b, mib << 20, d)
            per = (full - base) / (relayed / (1 << 20))
            print(f"| {b} | {base:,} | {full:,} | {relayed:,} B | {per / 1e6:.2f} M |")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("rss", "callgrind"):
        raise SystemExit(__doc__)
    {"rss": rss, "callgrind": callgrind}[sys.argv[1]](sys.argv[2:])
