#!/usr/bin/env bash
# What sampling the sessions' cost (src/sessions/sample.rs) costs the server, with 32 idle
# sessions and no client, so the sampler is the only work left:
#   - system calls over WINDOW seconds, counted by `strace -c` on the release binary;
#   - instructions inside Sampler::tick, counted by callgrind on a release build with symbols.
# Usage: benches/sample_cost.sh [WINDOW_SECS]   (default 20; builds into target/prof)
set -uo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-20}
SESSIONS=32
BIN=target/prof/release/keepty
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
    cargo build --release --target-dir target/prof >/dev/null 2>&1
OUT=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT

# Opens SESSIONS sessions (a WebSocket handshake with new=1, then a close) on PORT.
open_sessions() {
    python3 - "$1" "$SESSIONS" <<'PY'
import base64, os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?session=cost-{i}&new=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: keepty.v1\r\n\r\n").encode())
    got = b""
    while b"attached" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"session {i}: closed before attached: {got[:200]!r}")
        got += chunk
    s.close()
PY
}

# Starts "$@" with its stdout in $OUT/line; sets PORT and PID.
start() {
    SHELL=/bin/sh "$@" --listen 127.0.0.1:0 -- /bin/sh >"$OUT/line" 2>"$OUT/log" &
    PID=$!
    for _ in $(seq 200); do
        grep -q listening "$OUT/line" 2>/dev/null && break
        sleep 0.1
    done
    PORT=$(sed -n 's|.*127.0.0.1:\([0-9]*\)/|\1|p' "$OUT/line")
}

procs=$(ls -d /proc/[0-9]* | wc -l)
echo "processes on the machine: $procs (+ $SESSIONS shells)"

start "$BIN"
open_sessions "$PORT"
sleep 3
timeout -s INT "$WINDOW" strace -c -p "$PID" -o "$OUT/strace" || true
kill -TERM "$PID"; wait "$PID" || true
echo "--- strace -c over $WINDOW s (sweeps every 2 s) ---"
cat "$OUT/strace"

start valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" \
    --toggle-collect='*Sampler*tick*' "$BIN"
open_sessions "$PORT"
sleep "$WINDOW"
kill -TERM "$PID"; wait "$PID" || true
echo "--- callgrind: instructions inside Sampler::tick over $WINDOW s ---"
total=$(sed -n 's/^summary: *//p' "$OUT/cg")
# Calls into tick: the `calls=` lines under its `cfn=` entries.
id=$(sed -n 's/^c\{0,1\}fn=(\([0-9]*\)) keepty::sessions::sample::Sampler::tick$/\1/p' "$OUT/cg" | head -1)
calls=$(grep -A1 "^cfn=($id)" "$OUT/cg" | sed -n 's/^calls=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
echo "Ir in tick: $total; ticks: ${calls:-?}"
if [ -n "${calls:-}" ] && [ "$calls" -gt 0 ]; then
    echo "Ir per tick: $((total / calls))"
fi
