#!/usr/bin/env bash
# The static musl builds (scripts/cross-build.sh) run for real under qemu-user, each with a
# child shell of its own architecture: a subset of the integration tests per target, the whole
# suite on aarch64 and on big-endian mips (mips and mipsel are tier 3: nothing upstream tests
# them). binfmt is not mounted here, so the emulator is called directly: KEEPTY_RUNNER for the
# server, a wrapper script as the session shell (KEEPTY_SHELL) that runs busybox under qemu.
#   tests/cross.sh                     every target
#   CROSS_TARGETS="mips-unknown-linux-musl" tests/cross.sh
#   CROSS_FULL="" CROSS_TLS="" tests/cross.sh    the subset only, everywhere
# Shells: Debian's busybox-static for arm64, armhf and mipsel (downloaded, unpacked, not
# installed); bookworm has none for big-endian mips, so busybox 1.35 is built from Debian's
# source package with zig cc (sh and a few applets). Both are cached in $KEEPTY_CROSS_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ALL="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf mipsel-unknown-linux-musl mips-unknown-linux-musl x86_64-unknown-linux-musl"
TARGETS=${CROSS_TARGETS:-$ALL}
# The whole suite on aarch64 and big-endian mips, and tests/tls.rs against mips's `tls` build
# (ring's C and the handshakes on big-endian); the subset on the others. Set either to ""
# to leave it out.
FULL=${CROSS_FULL-aarch64-unknown-linux-musl mips-unknown-linux-musl}
TLS=${CROSS_TLS-mips-unknown-linux-musl}
CACHE=${KEEPTY_CROSS_CACHE:-$HOME/.cache/keepty-cross}
BB_VERSION=1.35.0

log() { echo "tests/cross.sh: $*" >&2; }
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

if ! command -v qemu-mips-static >/dev/null; then
    log "installing qemu-user-static"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

# shellcheck disable=SC2086
scripts/cross-build.sh $TARGETS
tls_targets=""
for target in $TLS; do
    [[ " $TARGETS " == *" $target "* ]] && tls_targets="$tls_targets $target"
done
if [ -n "$tls_targets" ]; then
    # shellcheck disable=SC2086
    FEATURES=tls scripts/cross-build.sh $tls_targets
fi

# apt with a private state under the cache: the foreign architectures and the deb-src line
# it needs never touch the machine's own apt configuration.
apt_dir=$CACHE/apt
apt_opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/none"
    -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
    -o "APT::Architectures::=armhf" -o "APT::Architectures::=mipsel"
    -o "APT::Sandbox::User=root")
apt_ready() {
    [ -e "$apt_dir/updated" ] && return
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/none"
    cat > "$apt_dir/sources.list" <<'LIST'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
LIST
    apt-get "${apt_opts[@]}" -qq update
    touch "$apt_dir/updated"
}

# Debian's busybox-static for a Debian architecture, unpacked under the cache.
debian_busybox() {
    local arch=$1 dir=$CACHE/busybox-$1
    if [ ! -x "$dir/bin/busybox" ]; then
        log "busybox-static:$arch from Debian"
        apt_ready
        rm -rf "$dir" "$apt_dir/deb-$arch"
        mkdir -p "$apt_dir/deb-$arch"
        (cd "$apt_dir/deb-$arch" && apt-get "${apt_opts[@]}" -qq download "busybox-static:$arch")
        dpkg-deb -x "$apt_dir/deb-$arch"/busybox-static_*.deb "$dir"
    fi
    echo "$dir/bin/busybox"
}

# busybox for big-endian MIPS32 (soft float, as the Rust target), from Debian's source
# package, compiled with the same zig as the cross builds.
mips_busybox() {
    local dir=$CACHE/busybox-mips out=$CACHE/busybox-mips/busybox
    if [ ! -x "$out" ]; then
        log "building busybox $BB_VERSION for mips with zig cc"
        apt_ready
        rm -rf "$dir"
        mkdir -p "$dir/src" "$apt_dir/src"
        [ -e "$apt_dir/src/busybox_$BB_VERSION.orig.tar.bz2" ] \
            || (cd "$apt_dir/src" && apt-get "${apt_opts[@]}" -qq source --download-only busybox)
        tar -xjf "$apt_dir/src/busybox_$BB_VERSION.orig.tar.bz2" -C "$dir/src" --strip-components=1
        # zig's linker takes none of the GNU ld extras busybox's final link asks for.
        cat > "$dir/cc" <<CC
#!/bin/sh
for a in "\$@"; do
    shift
    case "\$a" in
        -Wl,--warn-common|-Wl,-Map,*|-Wl,--verbose|-Wl,--sort-common|-Wl,--sort-section,*) ;;
        *) set -- "\$@" "\$a" ;;
    esac
done
exec "$CACHE/venv/bin/python3" -m ziglang cc -target mips-linux-musleabi "\$@"
CC
        chmod +x "$dir/cc"
        (
            cd "$dir/src"
            make allnoconfig >/dev/null
            for o in STATIC LFS ASH SH_IS_ASH ASH_OPTIMIZE_FOR_SIZE ASH_INTERNAL_GLOB \
                ASH_BASH_COMPAT ASH_JOB_CONTROL ASH_ALIAS ASH_ECHO ASH_PRINTF ASH_TEST \
                ASH_GETOPTS ASH_CMDCMD FEATURE_SH_MATH FEATURE_EDITING ECHO PRINTF TEST CAT \
                HEAD TAIL SLEEP TRUE FALSE SEQ YES DD STTY TR WC ENV KILL BASE64 OD LS RM \
                MKDIR TOUCH EXPR FEATURE_FANCY_ECHO FEATURE_FANCY_SLEEP FEATURE_FANCY_HEAD; do
                sed -i "s/^# CONFIG_$o is not set/CONFIG_$o=y/" .config
            done
            yes '' | make oldconfig >/dev/null
            # NOSTDINC_FLAGS: busybox would hide zig's musl headers behind -nostdinc.
            make -j2 CC="$dir/cc" HOSTCC=gcc NOSTDINC_FLAGS= STRIP=true busybox >"$dir/build.log" 2>&1 \
                || { tail -20 "$dir/build.log" >&2; exit 1; }
        )
        cp "$dir/src/busybox_unstripped" "$out"
    fi
    echo "$out"
}

# A runner's words with its program as an absolute path.
abs_runner() {
    local prog
    prog=$(command -v "$1") || { log "$1 not found"; exit 1; }
    shift
    echo "$prog${*:+ $*}"
}

# qemu for the server, and the qemu and busybox for the session shell, per target.
setup_target() {
    local target=$1 bb=""
    runner="" shell_qemu=""
    case "$target" in
        aarch64-*) runner=qemu-aarch64-static; bb=$(debian_busybox arm64) ;;
        armv7-*) runner=qemu-arm-static; bb=$(debian_busybox armhf) ;;
        # ARMv6 (Pi 1/Zero): the emulated CPU is an ARM1176, so an ARMv7 instruction in the
        # server traps. Debian's armhf busybox is ARMv7: its shell runs on qemu's default CPU.
        arm-*) runner="qemu-arm-static -cpu arm1176"; shell_qemu=qemu-arm-static; bb=$(debian_busybox armhf) ;;
        mipsel-*) runner=qemu-mipsel-static; bb=$(debian_busybox mipsel) ;;
        mips-*) runner=qemu-mips-static; bb=$(mips_busybox) ;;
        x86_64-*) ;;
        *) log "no runner known for $target"; exit 1 ;;
    esac
    # The emulators by absolute path: a test that runs the server with another PATH (the
    # startup check's "not found on PATH") must still find its runner.
    # shellcheck disable=SC2086
    [ -z "$runner" ] || runner="$(abs_runner $runner)"
    [ -z "$shell_qemu" ] || shell_qemu=$(command -v "$shell_qemu")
    shell=/bin/sh
    if [ -n "$bb" ]; then
        shell=$root/target/cross/shells/sh-$target
        mkdir -p "$(dirname "$shell")"
        printf '#!/bin/sh\nexec %s %s sh "$@"\n' "${shell_qemu:-$runner}" "$bb" > "$shell"
        chmod +x "$shell"
    fi
}

# Attach and echo, resize, exit codes, reconnect with `since` exact, a wrapped ring with exact
# `lost`, TTL expiry, drop, the admin list, SIGTERM, and `keepty attach` on this terminal
# (raw mode, window size and SIGWINCH: termios and its ioctls differ on mips; the client's
# frame masks come from a thread-local with a destructor, which a MIPS static PIE broke).
subset_tests=(--test session --test replay --test lifecycle --test admin --test shutdown --test cli)
subset_filters=(attach_replays_types_resizes_detaches_and_exits_with_the_program
    echo_through_a_session resize_reaches_the_pty exit_code_is_reported
    reload_replays_missed_output_exactly_once drop_oldest_reports_lost_bytes
    ttl_reaps_a_detached_session_and_its_process_group
    drop_kills_the_process_group_and_tells_the_client
    session_list_as_json_and_as_an_aligned_text_table sigterm_tells_clients_and_ends_sessions)

# The host's test binaries drive the foreign server: build them once, before the clock.
cargo test --no-run --tests -q 2>/dev/null || cargo test --no-run --tests

# A MIPS static PIE reads every absent weak symbol as its load address (see the RUSTFLAGS in
# scripts/cross-build.sh): the mips builds must be plain static executables (ELF type EXEC).
elf_type() { od -An -j16 -N2 -tx1 "$1" | tr -d ' \n'; }
for target in $TARGETS; do
    case "$target" in
        mips-*) want=0002 ;;   # big-endian e_type ET_EXEC
        mipsel-*) want=0200 ;; # little-endian
        *) continue ;;
    esac
    bins=("dist/keepty-$target")
    [[ " $tls_targets " == *" $target "* ]] && bins+=("dist/keepty-$target-tls")
    for b in "${bins[@]}"; do
        if [ "$(elf_type "$b")" != "$want" ]; then
            log "$b is not a static executable (ELF type $(elf_type "$b")): a PIE on MIPS jumps to its load address for every absent weak symbol"
            exit 1
        fi
    done
done

failed=""
for target in $TARGETS; do
    setup_target "$target"
    bin=$root/dist/keepty-$target
    start=$SECONDS
    if [[ " $FULL " == *" $target "* ]]; then
        what="the whole suite"
        # Every integration test but tls.rs, which needs a `tls` build, and browser.rs: it
        # drives the page in Chromium through programs of the session shell (busybox's less
        # is not the one it expects), and what it needs of the server the others cover.
        set --
        for f in tests/*.rs; do
            name=$(basename "$f" .rs)
            case "$name" in tls | browser) ;; *) set -- "$@" --test "$name" ;; esac
        done
    else
        what="the subset"
        set -- "${subset_tests[@]}" -- "${subset_filters[@]}"
    fi
    log "$target: $what, server under '${runner:-native}', shell $shell"
    if KEEPTY_BIN=$bin KEEPTY_RUNNER=$runner KEEPTY_SHELL=$shell cargo test -q "$@"; then
        log "$target: passed in $((SECONDS - start)) s"
    else
        log "$target: FAILED after $((SECONDS - start)) s"
        failed="$failed $target"
    fi
    if [[ " $tls_targets " == *" $target "* ]]; then
        start=$SECONDS
        log "$target: tests/tls.rs against dist/keepty-$target-tls"
        if KEEPTY_BIN=$bin-tls KEEPTY_RUNNER=$runner KEEPTY_SHELL=$shell \
            cargo test -q --features tls --test tls; then
            log "$target (tls): passed in $((SECONDS - start)) s"
        else
            log "$target (tls): FAILED after $((SECONDS - start)) s"
            failed="$failed $target-tls"
        fi
    fi
done
if [ -n "$failed" ]; then
    log "failed on:$failed"
    exit 1
fi
