#!/usr/bin/env bash
# Runs every test keepty has, on a fresh clone: installs what the tests need first
# (the npm packages, Chromium for the browser test), then unit, integration and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    echo "tests/all.sh: installing Chromium for the browser test" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The fault tests inject syscall failures with strace, fake the wall clock with libfaketime
# and cut a client off in a network namespace (iproute2).
missing=""
command -v strace >/dev/null || missing="$missing strace"
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing="$missing faketime"
command -v ip >/dev/null || missing="$missing iproute2"
if [ -n "$missing" ]; then
    echo "tests/all.sh: installing$missing for the fault tests" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# npm ci installs exactly package-lock.json; it is needed again only when the lock changed.
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
    npm ci --no-audit --no-fund
fi

node --test tests/page/
cargo test "$@"
# HTTPS and wss:// are behind the `tls` feature (off by default): their tests need it on.
cargo test --features tls --test tls "$@"
# The OpenWrt init script against UCI/procd stand-ins, and the systemd unit (systemd-analyze).
tests/packaging.sh target/debug/keepty
# The static musl builds for routers and Pis, under qemu-user (KEEPTY_CROSS=0 leaves them out).
if [ "${KEEPTY_CROSS:-1}" != 0 ]; then
    tests/cross.sh
fi
