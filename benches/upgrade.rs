//! The pause a client sees across an upgrade in place, with 32 sessions whose 256 KiB rings
//! are full (8 MiB of state): from SIGUSR2 until the reconnected client has its `attached`
//! message, and the part of it from the 1012 close on. Prints the median and the spread of
//! `UPGRADE_RUNS` upgrades (default 15) of the same server.
//!
//! Run with `cargo bench --bench upgrade` (the bench profile's binary), or with `KEEPTY_BIN`
//! pointing at another. A measurement to print, not an assertion: the machine is shared.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::spawn_cmd;
use common::ws::{self, Msg, WAIT};

const SIGUSR2: i32 = 12;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let bin = std::env::var_os("KEEPTY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(common::bin()));
    let runs: usize = std::env::var("UPGRADE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", "127.0.0.1:0", "--max-sessions", "32"]);
    let srv = spawn_cmd(cmd);
    let port = srv.port;
    for i in 0..32 {
        let mut c = ws::connect(port, &format!("session=full{i}&new=1"));
        c.expect_attached();
        // ~340 KiB of output: more than the ring holds.
        c.send_input(b"seq 1 60000; echo FU''LL\n");
        c.read_output_until(b"FULL", Duration::from_secs(60));
    }
    let list = srv.admin_sessions();
    let held: u64 = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes_buffered"].as_u64().unwrap())
        .sum();
    let mut c = ws::connect(port, "session=full0&since=0");
    // Whatever the ring's start is, the client resumes at its end.
    c.expect_attached();
    let _ = c.read_output_at_least(1, WAIT);
    while let Some(Msg::Binary(_)) = c.next_msg(Duration::from_millis(200)) {}
    let mut total = Vec::new();
    let mut from_close = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        srv.signal(SIGUSR2);
        let closed = loop {
            match c.next_msg(WAIT) {
                Some(Msg::Close(Some(1012), _)) => break Instant::now(),
                Some(Msg::Text(_)) | Some(Msg::Binary(_)) => continue,
                other => panic!("expected the 1012 close, got {other:?}"),
            }
        };
        let since = c.offset;
        c = ws::connect(port, &format!("session=full0&since={since}"));
        let a = c.expect_attached();
        let back = Instant::now();
        assert_eq!(a["lost"], 0, "{a}");
        total.push(back - t0);
        from_close.push(back - closed);
        // Let the new process settle before the next one.
        std::thread::sleep(Duration::from_millis(300));
    }
    let spread = |v: &[Duration]| (v[0], v[v.len() - 1]);
    let (mt, mc) = (median(&mut total), median(&mut from_close));
    println!(
        "upgrade pause, 32 sessions, {} KiB of rings, {runs} runs ({}):",
        held / 1024,
        bin.display()
    );
    println!(
        "  SIGUSR2 -> attached again: median {:.1} ms (min {:.1}, max {:.1})",
        mt.as_secs_f64() * 1e3,
        spread(&total).0.as_secs_f64() * 1e3,
        spread(&total).1.as_secs_f64() * 1e3
    );
    println!(
        "  1012 close -> attached again: median {:.1} ms (min {:.1}, max {:.1})",
        mc.as_secs_f64() * 1e3,
        spread(&from_close).0.as_secs_f64() * 1e3,
        spread(&from_close).1.as_secs_f64() * 1e3
    );
}
