#!/usr/bin/env bash
# Builds the release binary and runs the end-to-end bench against it (see benches/e2e.rs).
# Honours CARGO_TARGET_DIR; KEEPTY_BIN overrides the binary (e.g. an older build to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin keepty
KEEPTY_BIN="${KEEPTY_BIN:-$target/release/keepty}" cargo bench --bench e2e
