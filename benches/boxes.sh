#!/usr/bin/env bash
# The numbers of docs/performance.md, "On the boxes it is for (issue 14)":
# - stripped size of every cross build, default and tls, opt-level 3 (profile dist) and "s";
# - for the static musl x86_64 build and the glibc release build side by side: idle RSS, RSS
#   with 10 attached sessions, and server instructions per MiB of relayed output (callgrind).
#   benches/boxes.sh                 everything (builds what is missing; slow: 24 cross builds)
#   BOXES_SIZES=0 benches/boxes.sh   only RSS and callgrind (needs dist/keepty-x86_64-unknown-linux-musl)
#   BOXES_MIB=16                     output relayed in the callgrind run
set -euo pipefail
cd "$(dirname "$0")/.."

musl=dist/keepty-x86_64-unknown-linux-musl
if [ "${BOXES_SIZES:-1}" = 1 ]; then
    FEATURES="default tls" scripts/cross-build.sh
    CARGO_PROFILE_DIST_OPT_LEVEL=s DIST=target/dist-s CROSS_TARGET_DIR="${KEEPTY_CROSS_CACHE:-$HOME/.cache/keepty-cross}/target-s" \
        FEATURES="default tls" scripts/cross-build.sh
    echo "| target | default, opt 3 | default, opt s | tls, opt 3 | tls, opt s |"
    echo "|---|---|---|---|---|"
    for f in dist/keepty-*; do
        case "$f" in *-tls) continue ;; esac
        t=${f#dist/keepty-}
        row="| $t"
        for g in "dist/keepty-$t" "target/dist-s/keepty-$t" "dist/keepty-$t-tls" "target/dist-s/keepty-$t-tls"; do
            b=$(stat -c %s "$g")
            row="$row | $b B ($(awk "BEGIN { printf \"%.2f\", $b / 1048576 }") MiB)"
        done
        echo "$row |"
    done
fi
[ -x "$musl" ] || scripts/cross-build.sh x86_64-unknown-linux-musl
cargo build --release --bin keepty
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
python3 benches/boxes.py rss "$musl" target/release/keepty
python3 benches/boxes.py callgrind "$musl" target/release/keepty
