//! What each session costs (issue 18): `rss_bytes`, `cpu_ms`, `command` and `cwd` in the
//! session records follow a program that allocates 50 MB and one that spins, and fall back
//! when they end; the metrics carry the totals, without a label per session.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::http;
use common::spawn_server;
use common::ws::{self, WAIT};

/// Sampling runs every 2 s; give it a few sweeps on a busy machine.
const SAMPLED: Duration = Duration::from_secs(15);

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn memory_and_command_follow_the_foreground_program() {
    if common::skip_under_runner(
        "memory_and_command_follow_the_foreground_program",
        "the session's processes are the emulator running the shell, so their command is qemu's",
    ) {
        return;
    }
    let srv = spawn_server(&["--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=mem&new=1");
    c.expect_attached();
    let idle = srv.wait_session("mem", SAMPLED, "the shell sampled", |r| {
        r["command"] == "sh"
    });
    let base = u(&idle["rss_bytes"]);
    assert!(
        base > 0 && base < 20 << 20,
        "a shell's resident set: {idle}"
    );
    assert!(
        idle["cwd"].as_str().is_some_and(|d| d.starts_with('/')),
        "{idle}"
    );

    // Writing the bytes (a repeated bytes object) touches every page.
    c.send_input(
        b"cd /tmp && python3 -c \"import time; b = b'x' * (50 << 20); print('big-' + str(len(b) >> 20)); time.sleep(60)\"\r",
    );
    c.read_output_until(b"big-50", WAIT);
    let big = srv.wait_session("mem", SAMPLED, "50 MB counted", |r| {
        u(&r["rss_bytes"]) >= base + (50 << 20) && r["command"] == "python3"
    });
    assert_eq!(big["cwd"], "/tmp", "the foreground's directory: {big}");
    assert!(
        u(&big["rss_bytes"]) < base + (100 << 20),
        "about 50 MB more, not double: {big}"
    );

    // The session list a user sees carries the same fields.
    let own = http::get(&srv.addr(), "/api/sessions").json();
    let mine = &own["sessions"][0];
    assert_eq!(mine["command"], "python3", "{own}");
    assert!(u(&mine["rss_bytes"]) >= 50 << 20, "{own}");

    // The totals are in the metrics, with no per-session label.
    let metrics = http::get(&srv.addr(), "/admin/metrics").text();
    let total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keepty_sessions_rss_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no rss total in {metrics}"));
    assert!(total >= 50 << 20, "{total}");
    assert!(!metrics.contains("mem\""), "no label names a session");

    // Ctrl-C: the program ends and the shell is in front again.
    c.send_input(b"\x03");
    let after = srv.wait_session("mem", SAMPLED, "50 MB gone", |r| {
        u(&r["rss_bytes"]) < base + (10 << 20) && r["command"] == "sh"
    });
    assert_eq!(after["cwd"], "/tmp", "the shell's directory now: {after}");
}

#[test]
fn cpu_time_follows_a_spinning_program() {
    if common::skip_under_runner(
        "cpu_time_follows_a_spinning_program",
        "the session's processes are the emulator running the shell, so their command is qemu's",
    ) {
        return;
    }
    let srv = spawn_server(&["--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=spin&new=1");
    c.expect_attached();
    let idle = srv.wait_session("spin", SAMPLED, "the shell sampled", |r| {
        r["command"] == "sh"
    });
    assert!(u(&idle["cpu_ms"]) < 1000, "an idle shell: {idle}");

    c.send_input(b"python3 -c \"print('spin-' + 'go')\nwhile True: pass\"\r");
    c.read_output_until(b"spin-go", WAIT);
    let first = srv.wait_session("spin", SAMPLED, "the spinner in front", |r| {
        r["command"] == "python3" && u(&r["cpu_ms"]) > 0
    });
    let (t0, cpu0) = (Instant::now(), u(&first["cpu_ms"]));
    // Wait for a later sample at least 3 s on.
    std::thread::sleep(Duration::from_secs(3));
    let later = srv.wait_session("spin", SAMPLED, "more cpu", |r| {
        u(&r["cpu_ms"]) > cpu0 + 300
    });
    let wall_ms = t0.elapsed().as_millis() as u64;
    let grew = u(&later["cpu_ms"]) - cpu0;
    // One core at most (plus the sample's age on either side, 2 s each); at least a tenth of
    // one on a machine shared with other work.
    assert!(
        grew <= wall_ms + 4_000,
        "cpu grew {grew} ms in {wall_ms} ms of wall time: {later}"
    );

    // It ends; its time stays counted (the shell waited for it), and the shell is in front.
    c.send_input(b"\x03");
    let done = srv.wait_session("spin", SAMPLED, "the shell back", |r| r["command"] == "sh");
    let kept = u(&done["cpu_ms"]);
    assert!(kept >= u(&later["cpu_ms"]), "cumulative: {done}");
    std::thread::sleep(Duration::from_secs(3));
    let still = srv.wait_session("spin", SAMPLED, "sampled again", |_| true);
    assert!(
        u(&still["cpu_ms"]) < kept + 500,
        "no more growth once it ended: {kept} then {still}"
    );

    // An exited session costs nothing.
    c.send_input(b"exit 0\r");
    let _ = c.read_to_close(WAIT);
}
