#!/usr/bin/env bash
# Runs every fuzz target on stable (no sanitizer) for SECONDS each (default 10), starting
# from the committed seeds in fuzz/seeds/ plus whatever fuzz/corpus/ has grown locally.
#   fuzz/smoke.sh [SECONDS]
# CI runs it short; a real campaign runs it long (docs/reliability.md has the figures), or
# with ASan: `cargo +nightly fuzz run TARGET`.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo fuzz build -s none
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t" "seeds/$t"
    rm -rf "artifacts/$t"
    echo "fuzz/smoke.sh: $t for ${secs}s" >&2
    cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
        | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE|panicked|ERROR|SUMMARY' || true
    # libFuzzer exits non-zero on a finding; with the pipe above, check its artifacts instead.
    if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/leak-*" >/dev/null \
        || compgen -G "artifacts/$t/timeout-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null; then
        echo "fuzz/smoke.sh: $t found a failing input: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
