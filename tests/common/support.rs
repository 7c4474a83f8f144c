//! Assertions and small steps several test files share.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;
use super::http::Response;
use super::ws::{self, Msg, WAIT, Ws};

/// The fields every session record carries (SPEC section 2).
pub const RECORD_FIELDS: &[&str] = &[
    "id",
    "owner",
    "pid",
    "state",
    "exit_code",
    "created_at",
    "last_seen",
    "idle_secs",
    "expires_in_secs",
    "bytes_buffered",
    "bytes_total",
    "clients",
    "active_client",
    "cols",
    "rows",
    "rss_bytes",
    "cpu_ms",
    "command",
    "cwd",
    "bells",
];

/// Asserts a JSON error answer (SPEC section 2): this status and, if given, this code.
pub fn assert_json_error(r: &Response, status: u16, code: Option<&str>, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: status; body {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: Content-Type {ct:?}"
    );
    let v = r.json();
    assert!(v["error"].is_string(), "{what}: no error code in {v}");
    assert!(v["message"].is_string(), "{what}: no message in {v}");
    if let Some(c) = code {
        assert_eq!(v["error"], c, "{what}: error code in {v}");
    }
    v
}

/// A JSON field that must be an unsigned number (an offset, a count).
pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Runs a command whose result the echoed command line cannot contain.
pub fn echo_roundtrip(c: &mut Ws, tag: &str) {
    c.send_input(format!("echo {tag}-$((1000+1))\n").as_bytes());
    c.read_output_until(format!("{tag}-1001").as_bytes(), WAIT);
}

/// The ids in a session list, sorted.
pub fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions array in {list}"))
        .iter()
        .map(|s| s["id"].as_str().expect("record id").to_string())
        .collect();
    v.sort();
    v
}

/// Polls the admin list until `id` is no longer listed.
pub fn wait_unlisted(srv: &Server, id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while srv.session_record(id).is_some() {
        assert!(
            Instant::now() < deadline,
            "session {id} still listed after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn c_kill(pid: i32, sig: i32) -> i32;
}

/// Kills a `sleep 1000` the test started through a shell if the server failed to, so a
/// failing test leaves nothing behind. The command line is checked first: after a correct
/// drop or reap the pid may already belong to an unrelated process.
pub struct StrayGuard(pub i32);

impl Drop for StrayGuard {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if cmdline == b"sleep\x001000\x00" {
            // SAFETY: kill(2) with plain integers; no memory is involved.
            unsafe {
                c_kill(self.0, 9);
            }
        }
    }
}

/// The first decimal number that directly follows `key` in `out` (the echoed command line
/// has `$!` or `$$` there, so it is skipped).
pub fn number_after(out: &[u8], key: &[u8]) -> Option<i32> {
    let mut from = 0;
    while let Some(i) = ws::find(&out[from..], key) {
        let start = from + i + key.len();
        let digits: Vec<u8> = out[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        if !digits.is_empty() {
            return String::from_utf8(digits).ok()?.parse().ok();
        }
        from = start;
    }
    None
}

/// A client attached to a running shell in session `canary`, opened before any hostile
/// input or load: after each step it must still echo within `liveness`.
pub struct Canary {
    /// The connection.
    pub c: Ws,
    n: u32,
    /// How long an echo may take: a generous liveness bound, not a benchmark.
    pub liveness: Duration,
}

impl Canary {
    /// Opens the canary with a 200 ms liveness bound.
    pub fn open(srv: &Server) -> Canary {
        Canary::open_with(srv, Duration::from_millis(200))
    }

    /// Opens the canary with the given liveness bound.
    pub fn open_with(srv: &Server, liveness: Duration) -> Canary {
        let mut c = ws::connect(srv.port, "session=canary&new=1");
        c.expect_attached();
        echo_roundtrip(&mut c, "canary-ready");
        // An emulated server (tests/cross.sh) is slower by a factor, not by a fixed delay.
        let liveness = liveness * super::time_scale();
        Canary { c, n: 0, liveness }
    }

    /// Sends `echo canary-N` and waits until `canary-N` has come back twice: the terminal's
    /// echo of the command line and the shell's output (a prompt may land between them).
    /// Returns how long that took.
    pub fn alive(&mut self, after: &str) -> Duration {
        self.n += 1;
        let n = self.n;
        let start = Instant::now();
        self.c.send_input(format!("echo canary-{n}\n").as_bytes());
        let want = format!("canary-{n}\r");
        let mut out = Vec::new();
        loop {
            let left = self.liveness.saturating_sub(start.elapsed());
            match self.c.next_msg(left) {
                Some(Msg::Binary(b)) => {
                    out.extend_from_slice(&b);
                    let seen = out.windows(want.len()).filter(|w| *w == want.as_bytes());
                    if seen.count() >= 2 {
                        return start.elapsed();
                    }
                }
                Some(Msg::Text(v)) => panic!("canary got {v} after {after}"),
                Some(other) => panic!("canary connection ended after {after}: {other:?}"),
                None => panic!(
                    "canary did not echo within {:?} after {after}; got {}",
                    self.liveness,
                    ws::tail(&out)
                ),
            }
        }
    }
}
