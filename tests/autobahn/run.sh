#!/usr/bin/env bash
# WebSocket conformance: Autobahn|Testsuite's fuzzing client against keepty's frame path.
#   tests/autobahn/run.sh
# Builds keepty with the test-only `echo` feature (a /echo WebSocket that sends every message
# back, through the same read path, limits and close handling as /ws), runs every case but
# compression (12.*, 13.*), and checks each case against tests/autobahn/expected.txt
# (check.py): an unexpected result fails the script and names the case. The summary and the
# full HTML report land in target/autobahn/, not in the tree: OK and NON-STRICT counts vary
# from run to run. Needs Python 2.7 (pyenv: `pyenv install 2.7.18`, or PYTHON2=path) and
# python3; the virtualenv with autobahntestsuite is made in target/autobahn-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/autobahn
venv=target/autobahn-venv
py2="${PYTHON2:-$HOME/.pyenv/versions/2.7.18/bin/python}"
mkdir -p "$out"
[ -x "$py2" ] || { echo "tests/autobahn/run.sh: no Python 2.7 at $py2 (pyenv install 2.7.18, or set PYTHON2)" >&2; exit 1; }

if [ ! -x "$venv/bin/wstest" ]; then
    "$py2" -m pip install -q virtualenv
    "$py2" -m virtualenv -q "$venv"
    "$venv/bin/pip" install -q autobahntestsuite
fi

# Its own target dir, so the feature build does not churn the normal one.
CARGO_TARGET_DIR=target/echo cargo build -q --features echo
bin=target/echo/debug/keepty

"$bin" --listen 127.0.0.1:0 -- /bin/sh > "$out/keepty.out" 2> "$out/keepty.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    grep -q listening "$out/keepty.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's|.*http://\([^/]*\)/.*|ws://\1/echo|p' "$out/keepty.out")
[ -n "$url" ] || { echo "keepty did not start" >&2; exit 1; }

cat > "$out/fuzzingclient.json" <<JSON
{
  "outdir": "reports",
  "servers": [{ "agent": "keepty", "url": "$url" }],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
rm -rf "$out/reports"
(cd "$out" && "../../$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1)

tests/autobahn/check.py "$out/reports" tests/autobahn/expected.txt "$out/summary.txt"
