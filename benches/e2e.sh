#!/usr/bin/env bash
# Builds the release binary and runs the end-to-end bench against it (see benches/e2e.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin keepty
KEEPTY_BIN="$PWD/target/release/keepty" cargo bench --bench e2e
