#!/bin/sh
# The packaging, tested as far as this machine allows:
# - packaging/openwrt/files/keepty.init against stand-ins for OpenWrt's UCI and procd shell
#   functions (a small UCI reader, procd calls recorded): the command line each config gives,
#   exactly, and the procd parameters (respawn, logs to logd, reload by SIGHUP);
# - that keepty accepts the options the init script writes: the real binary is started with
#   them (on 127.0.0.1:0) and must print its listening line;
# - packaging/systemd/keepty.service through `systemd-analyze verify`, any complaint failing
#   (skipped, saying so, where systemd-analyze is missing).
# Usage: tests/packaging.sh [KEEPTY_BINARY]   (default target/debug/keepty)
# POSIX sh on purpose: OpenWrt runs init scripts with busybox ash, close to dash.
set -eu
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/keepty}
INIT=packaging/openwrt/files/keepty.init
TMP=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
fails=0
fail() {
    echo "tests/packaging.sh: FAIL: $*" >&2
    fails=$((fails + 1))
}

# ---- stand-ins for /lib/functions.sh (UCI) and /lib/functions/procd.sh -------------------

# Reads an /etc/config file of the simple form OpenWrt's own files use: `config TYPE 'NAME'`,
# `option NAME 'VALUE'`, `list NAME 'VALUE'`, comments and blank lines. Sets the same
# CONFIG_section_option variables as the real config_load (lists: _LENGTH and _ITEMn).
config_load() {
    _section=""
    while IFS= read -r line || [ -n "$line" ]; do
        line=$(printf '%s' "$line" | sed 's/^[[:space:]]*//')
        case "$line" in
            "" | "#"*) continue ;;
        esac
        kw=${line%%[[:space:]]*}
        rest=${line#"$kw"}
        rest=$(printf '%s' "$rest" | sed 's/^[[:space:]]*//')
        name=${rest%%[[:space:]]*}
        value=${rest#"$name"}
        value=$(printf '%s' "$value" | sed "s/^[[:space:]]*//; s/^'\(.*\)'\$/\1/")
        name=$(printf '%s' "$name" | sed "s/^'\(.*\)'\$/\1/")
        case "$kw" in
            config) _section=$value ;;
            option) eval "CONFIG_${_section}_${name}=\$value" ;;
            list)
                eval "_len=\${CONFIG_${_section}_${name}_LENGTH:-0}"
                _len=$((_len + 1))
                eval "CONFIG_${_section}_${name}_LENGTH=\$_len"
                eval "CONFIG_${_section}_${name}_ITEM${_len}=\$value"
                eval "_all=\${CONFIG_${_section}_${name}:-}"
                eval "CONFIG_${_section}_${name}=\"\${_all:+\$_all }\$value\""
                ;;
            *) echo "config_load: cannot read: $line" >&2; return 1 ;;
        esac
    done < "$UCI_FILE"
}
config_get() {
    eval "_v=\${CONFIG_$2_$3-}"
    [ -n "$_v" ] || _v=${4-}
    eval "$1=\$_v"
}
config_get_bool() {
    config_get _b "$2" "$3" "${4-0}"
    case "$_b" in
        1 | on | true | yes | enabled) _b=1 ;;
        *) _b=0 ;;
    esac
    eval "$1=\$_b"
}
config_list_foreach() {
    _sec=$1 _opt=$2 _fn=$3
    shift 3
    config_get _n "$_sec" "${_opt}_LENGTH"
    [ -n "$_n" ] || return 0
    _i=1
    while [ "$_i" -le "$_n" ]; do
        config_get _item "$_sec" "${_opt}_ITEM$_i"
        "$_fn" "$_item" "$@"
        _i=$((_i + 1))
    done
}
procd_open_instance() { echo "open" >> "$OUT/calls"; : > "$OUT/argv"; }
procd_close_instance() { echo "close" >> "$OUT/calls"; }
procd_set_param() {
    _p=$1
    shift
    if [ "$_p" = command ]; then
        : > "$OUT/argv"
        for a in "$@"; do printf '%s\n' "$a" >> "$OUT/argv"; done
    else
        echo "$_p $*" >> "$OUT/calls"
    fi
}
procd_append_param() {
    _p=$1
    shift
    [ "$_p" = command ] || { echo "procd_append_param $_p: not expected" >&2; return 1; }
    for a in "$@"; do printf '%s\n' "$a" >> "$OUT/argv"; done
}
procd_add_reload_trigger() { echo "reload_trigger $*" >> "$OUT/calls"; }

# Runs the init script's start_service and service_triggers on config file $1, in a
# subshell, into directory $2 (argv: one argument a line; calls: everything else).
run_init() {
    OUT=$2
    mkdir -p "$OUT"
    : > "$OUT/calls"
    : > "$OUT/argv"
    (
        UCI_FILE=$1
        # shellcheck disable=SC1090
        . "./$INIT"
        start_service
        service_triggers
    )
}

expect_argv() { # NAME DIR ARG...
    _name=$1 _dir=$2
    shift 2
    : > "$TMP/want"
    for a in "$@"; do printf '%s\n' "$a" >> "$TMP/want"; done
    if ! cmp -s "$TMP/want" "$_dir/argv"; then
        fail "$_name: command line differs (want, got):"
        diff "$TMP/want" "$_dir/argv" >&2 || true
    fi
}
expect_call() { # NAME DIR LINE
    grep -qxF "$3" "$2/calls" || fail "$1: no '$3' among procd calls: $(tr '\n' ';' < "$2/calls")"
}

# ---- the shipped config -----------------------------------------------------------------
run_init packaging/openwrt/files/keepty.config "$TMP/shipped"
expect_argv shipped "$TMP/shipped" /usr/bin/keepty --listen 127.0.0.1:7700
for c in open "respawn 3600 5 5" "stdout 1" "stderr 1" "reload_signal HUP" \
    "term_timeout 10" "env HOME=/root SHELL=/bin/ash" close "reload_trigger keepty"; do
    expect_call shipped "$TMP/shipped" "$c"
done

# ---- every option -----------------------------------------------------------------------
mkdir -p "$TMP/etc"
printf 'alice %s\n' "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$TMP/etc/tokens"
printf '%s\n' "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$TMP/etc/admin"
chmod 600 "$TMP/etc/tokens" "$TMP/etc/admin"
cat > "$TMP/full.config" <<EOF
# every option the init script maps
config keepty 'main'
	option enabled '1'
	option listen '127.0.0.1:0'
	option token_file '$TMP/etc/tokens'
	option admin_token_file '$TMP/etc/admin'
	option ttl '2h'
	option attach_policy 'multi'
	option scrollback '64K'
	option max_sessions '4'
	option max_clients '16'
	option max_memory '8M'
	option header_timeout '5s'
	option max_pending '8'
	option ping_interval '10s'
	option detached_output 'block'
	option insecure_no_auth '1'
	list allow_origin 'https://router.example'
	list allow_origin 'https://other.example'
	list allow_host 'router.example'
	list command '/bin/sh'
	list command '-c'
	list command 'echo hi there; exec sh'
EOF
run_init "$TMP/full.config" "$TMP/full"
expect_argv full "$TMP/full" /usr/bin/keepty --listen 127.0.0.1:0 --ttl 2h \
    --attach-policy multi --scrollback 64K --max-sessions 4 --max-clients 16 --max-memory 8M \
    --token-file "$TMP/etc/tokens" --admin-token-file "$TMP/etc/admin" --header-timeout 5s \
    --max-pending 8 --ping-interval 10s --detached-output block --insecure-no-auth \
    --allow-origin https://router.example --allow-origin https://other.example \
    --allow-host router.example -- /bin/sh -c 'echo hi there; exec sh'

# ---- TLS options, a command given as one option, disabled ------------------------------
cat > "$TMP/tls.config" <<EOF
config keepty 'main'
	option tls_self_signed 'yes'
	option tls_dir '/etc/keepty/tls'
	option command '/bin/ash -l'
EOF
run_init "$TMP/tls.config" "$TMP/tls"
expect_argv tls "$TMP/tls" /usr/bin/keepty --tls-dir /etc/keepty/tls --tls-self-signed \
    -- /bin/ash -l
printf "config keepty 'main'\n\toption enabled '0'\n" > "$TMP/off.config"
run_init "$TMP/off.config" "$TMP/off"
grep -qx open "$TMP/off/calls" && fail "disabled: an instance was opened"

# ---- keepty takes what the init script writes -------------------------------------------
# Starts the binary with the argv of DIR (the program replaced by BIN); it must print its
# listening line within 10 s. Then it is stopped.
starts() {
    _dir=$1
    set --
    while IFS= read -r a; do set -- "$@" "$a"; done < "$_dir/argv"
    shift
    : > "$_dir/stdout"
    "$BIN" "$@" > "$_dir/stdout" 2> "$_dir/stderr" &
    _pid=$!
    PIDS="$PIDS $_pid"
    _i=0
    while [ "$_i" -lt 100 ] && ! grep -q '^keepty listening on http://127.0.0.1:' "$_dir/stdout"; do
        sleep 0.1
        _i=$((_i + 1))
    done
    if grep -q '^keepty listening on' "$_dir/stdout"; then
        kill -TERM "$_pid"
        wait "$_pid" || true
    else
        fail "$_dir: keepty did not start with the init script's options: $(cat "$_dir/stderr")"
        kill "$_pid" 2>/dev/null || true
    fi
}
if [ -x "$BIN" ]; then
    starts "$TMP/full"
else
    fail "no keepty binary at $BIN (build it first: cargo build)"
fi

# ---- systemd ----------------------------------------------------------------------------
if command -v systemd-analyze > /dev/null; then
    mkdir -p "$TMP/systemd"
    # verify checks that ExecStart's program exists: point it at the binary under test.
    sed "s|/usr/local/bin/keepty|$(realpath "$BIN")|g" packaging/systemd/keepty.service \
        > "$TMP/systemd/keepty.service"
    # It exits 0 on unknown keys too, with a warning: any output at all is a failure.
    if ! systemd-analyze verify "$TMP/systemd/keepty.service" > "$TMP/verify" 2>&1 \
        || [ -s "$TMP/verify" ]; then
        fail "systemd-analyze verify keepty.service: $(cat "$TMP/verify")"
    fi
else
    echo "tests/packaging.sh: systemd-analyze not found: keepty.service not verified" >&2
fi

if [ "$fails" -gt 0 ]; then
    echo "tests/packaging.sh: $fails failure(s)" >&2
    exit 1
fi
echo "tests/packaging.sh: ok (init script: 4 configs; keepty started with every mapped option; unit $(command -v systemd-analyze > /dev/null && echo verified || echo not verified))"
