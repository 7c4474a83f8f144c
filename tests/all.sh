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

# npm ci installs exactly package-lock.json; it is needed again only when the lock changed.
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
    npm ci --no-audit --no-fund
fi

cargo test "$@"
