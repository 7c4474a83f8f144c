#!/usr/bin/env bash
# Static musl builds for the boxes keepty is for, without rustup targets or docker:
#   scripts/cross-build.sh [TARGET...]        -> dist/keepty-TARGET, dist/SHA256SUMS
#   FEATURES=tls scripts/cross-build.sh ...   -> dist/keepty-TARGET-tls
#   FEATURES="default tls" ...                -> both
#   PROFILE=release ...                       -> another Cargo profile (default: dist)
#   PANIC=abort ...                           -> std's own panic=abort, with panic messages
#                                                (default immediate-abort: see below)
#   DIST=dir CROSS_TARGET_DIR=dir ...         -> other output and build directories
#                                                (default dist/ and $KEEPTY_CROSS_CACHE/target)
# With no TARGET it builds every target below. It installs what it lacks itself:
# - Debian's rustc-web, rust-web-src and cargo-web (bookworm-security), whose std source sits
#   at the sysroot, for -Zbuild-std: rustc and the std it compiles must be the same release,
#   so /usr/bin goes ahead of rustup's shims in PATH.
# - ziglang 0.15.2 and cargo-zigbuild from PyPI, in a venv under $KEEPTY_CROSS_CACHE
#   (default ~/.cache/keepty-cross): zig links every target against its own musl, ring's C and
#   asm included. Pinned: zig 0.16 and later link zig's own malloc, whose calloc writes every
#   page, so each session's ring would be resident the moment it is created.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf mipsel-unknown-linux-musl mips-unknown-linux-musl x86_64-unknown-linux-musl"
ZIG_VERSION=0.15.2
ZIGBUILD_VERSION=0.24.1
CACHE=${KEEPTY_CROSS_CACHE:-$HOME/.cache/keepty-cross}
VENV=$CACHE/venv
PROFILE=${PROFILE:-dist}
PANIC=${PANIC:-immediate-abort}
FEATURES=${FEATURES:-default}
TARGETS=${*:-$ALL_TARGETS}

log() { echo "cross-build: $*" >&2; }

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust/library/std ]; then
    log "installing rustc-web, rust-web-src, cargo-web"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        rustc-web rust-web-src cargo-web >/dev/null
fi

if ! "$VENV/bin/python3" -c "import ziglang" 2>/dev/null \
    || [ "$("$VENV/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ] \
    || [ ! -x "$VENV/bin/cargo-zigbuild" ]; then
    log "installing ziglang==$ZIG_VERSION and cargo-zigbuild==$ZIGBUILD_VERSION in $VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
fi

# llvm-objcopy (Debian's llvm) takes the .pdr section out of the MIPS builds (below); binutils'
# objcopy reads only the host's formats.
OBJCOPY=$(command -v llvm-objcopy || ls /usr/bin/llvm-objcopy-* 2>/dev/null | sort -V | tail -n 1 || true)
case " $TARGETS " in
    *" mips"*)
        if [ -z "$OBJCOPY" ]; then
            log "installing llvm (llvm-objcopy)"
            $sudo_cmd apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends llvm >/dev/null
            OBJCOPY=$(command -v llvm-objcopy)
        fi
        ;;
esac

# Debian's cargo and rustc first, then the venv's cargo-zigbuild; zig is run through the
# venv's python (cargo-zigbuild's `python -m ziglang`), not whatever python3 PATH finds.
export PATH="/usr/bin:$VENV/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_ZIGBUILD_PYTHON_PATH="$VENV/bin/python3"
# The build directory lives beside the venv, not in this checkout's target/: std and every
# dependency, built once per target, are then reused by every clone on the machine (CI runs in
# a fresh one), and only keepty itself and its LTO link are built again (about a minute a
# target instead of two to six).
export CARGO_TARGET_DIR=${CROSS_TARGET_DIR:-$CACHE/target}
# zig supplies the C runtime objects: rustc's self-contained musl crt would clash with them.
# With --target, RUSTFLAGS reach only the target crates (std's too), not build.rs.
export RUSTFLAGS="-C link-self-contained=no"
# Size (issue 14: every target <= 1.2 MiB stripped). A panic aborts on the spot, std included
# (-Cpanic=immediate-abort, which needs the std built here): no message, no backtrace, so
# std's formatting of panics and its backtrace symbolizer (gimli, addr2line, the unwinder's
# callers) are left out, and with nothing to unwind no unwind tables are kept either. That
# saved 330 KB on x86_64 and 450 KB on mips. keepty does not panic on input (errors are
# answers or close codes); a panic would be a bug, and the process then dies of a trap
# signal (SIGILL or SIGTRAP, by architecture) instead of printing where. PANIC=abort keeps the
# messages. A glibc `cargo build --release` has them either way.
if [ "$PANIC" = immediate-abort ]; then
    RUSTFLAGS="$RUSTFLAGS -Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no"
fi
# 64-bit time_t on the 32-bit musl targets (arm, armv7, mips, mipsel). The libc crate still
# declares musl's pre-1.2 ABI by default there: a 32-bit time_t, bound to musl's time32 compat
# symbols, whose clock_gettime fails with EOVERFLOW from 2038-01-19 on, and std's
# SystemTime::now() unwraps that (the server would abort on its first wall-clock read). zig's
# musl is 1.2.5: with this flag both std's libc and ours bind __clock_gettime64 & co. It reaches
# every build script, std's (-Zbuild-std) included. libc 0.2.191 (ours) reads it but does not
# ask cargo to rerun its build script when it changes, so a build directory from before this
# line keeps a 32-bit time_t: time64_or_rebuild below checks every libc's cfg and rebuilds.
export RUST_LIBC_UNSTABLE_MUSL_V1_2_3=1
unset RUSTC RUSTDOC CARGO 2>/dev/null || true

# A 32-bit target whose libc build scripts did not all turn on musl32_time64 (64-bit time_t)
# gets them run again, once; then it must have it.
time64_or_rebuild() {
    local target=$1 out_dir=$2 stale=()
    case "$target" in arm* | mips-* | mipsel-*) ;; *) return 1 ;; esac
    local dir=$CARGO_TARGET_DIR/$target/$out_dir
    for out in "$dir/build"/libc-*/output; do
        [ -e "$out" ] || continue
        grep -q 'rustc-cfg=musl32_time64' "$out" && continue
        # The run's output and its fingerprint: without the latter cargo thinks it current.
        stale+=("$(dirname "$out")" "$dir/.fingerprint/$(basename "$(dirname "$out")")")
    done
    [ ${#stale[@]} -eq 0 ] && return 1
    log "$target: libc built with a 32-bit time_t (${stale[*]}); building it again"
    rm -rf "${stale[@]}"
    return 0
}

DIST=${DIST:-dist}
mkdir -p "$DIST"
for target in $TARGETS; do
    for feat in $FEATURES; do
        suffix=""
        args=()
        if [ "$feat" != default ]; then
            suffix="-$feat"
            args=(--features "$feat")
        fi
        log "$target${suffix:+ ($feat)}, profile $PROFILE"
        out_dir=$PROFILE
        [ "$PROFILE" = dev ] && out_dir=debug
        # MIPS links as a static executable at a fixed address, not a static PIE: in a
        # static PIE, lld puts the undefined weak symbols std tests for null
        # (__cxa_thread_atexit_impl, gettid, pidfd_*) in MIPS's local GOT, whose every entry
        # musl's rcrt1 moves by the load address, so "absent" reads as the load address and
        # the first thread-local with a destructor jumps there (SIGSEGV; docs/performance.md,
        # "Under emulation"). Non-PIC MIPS code is smaller too.
        target_flags=()
        case "$target" in mips-* | mipsel-*) target_flags=(-C relocation-model=static) ;; esac
        for try in 1 2; do
            RUSTFLAGS="$RUSTFLAGS ${target_flags[*]}" cargo zigbuild --locked --profile "$PROFILE" --target "$target" \
                -Zbuild-std=std,panic_abort "${args[@]}" --bin keepty
            time64_or_rebuild "$target" "$out_dir" || break
            if [ "$try" = 2 ]; then
                log "$target: still a 32-bit time_t after a rebuild"
                exit 1
            fi
        done
        # A separate cargo features set rebuilds in the same target dir; copy each result out.
        cp "$CARGO_TARGET_DIR/$target/$out_dir/keepty" "$DIST/keepty-$target$suffix"
        case "$target" in
            # LLVM gives every MIPS function a .pdr entry (procedure descriptors, for old
            # debuggers; never loaded): 70-80 KB that the link's strip keeps.
            mips*) "$OBJCOPY" --remove-section=.pdr "$DIST/keepty-$target$suffix" ;;
        esac
    done
done

(cd "$DIST" && sha256sum keepty-* > SHA256SUMS)
ls -l "$DIST" >&2
