//! What the admin surface shows: serializable snapshots of sessions, limits and memory,
//! built here from the session table, and their JSON, text and Prometheus renderings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::routes::View;
use crate::api::text::escape_control;
use crate::config::AttachPolicy;
use crate::limits::DetachedOutput;
use crate::limits::Limits;
use crate::net::http::Response;
use crate::sessions::table::Table;

/// One row of the session list (SPEC section 2). Times are Unix seconds. `keepty ls` reads
/// it back ([`SessionRecord::from_json`]) to print the same table as `format=text`.
#[derive(Debug, Serialize)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// The user that created it.
    pub owner: String,
    /// Child pid.
    pub pid: i32,
    /// `running` or `exited`.
    pub state: String,
    /// Exit code once exited normally.
    pub exit_code: Option<i32>,
    /// Creation time.
    pub created_at: u64,
    /// Last client activity.
    pub last_seen: u64,
    /// Seconds since `last_seen`.
    pub idle_secs: u64,
    /// Seconds until the TTL reaps it (0 when due).
    pub expires_in_secs: u64,
    /// Output held in the ring.
    pub bytes_buffered: u64,
    /// Output ever produced.
    pub bytes_total: u64,
    /// Attached clients.
    pub clients: usize,
    /// Peer address of the client whose input reaches the PTY, if any.
    pub active_client: Option<String>,
    /// Terminal columns.
    pub cols: u16,
    /// Terminal rows.
    pub rows: u16,
    /// The window title the program set last (lossy UTF-8, controls removed); "" if none.
    pub title: String,
    /// The program is on the alternate screen (a full-screen program is running).
    pub alt_screen: bool,
    /// Resident memory of the session's processes together, bytes (sampled every few
    /// seconds; 0 until the first sample and once the program exited).
    pub rss_bytes: u64,
    /// CPU time of the session's processes and their waited-for children, milliseconds.
    pub cpu_ms: u64,
    /// The foreground program's name ("" until sampled).
    pub command: String,
    /// The foreground program's working directory ("" when unknown).
    pub cwd: String,
    /// Bells the program rang (BEL in plain output), ever: the page notifies when this grows
    /// while nobody is attached.
    pub bells: u64,
}

impl SessionRecord {
    /// A record read back from its JSON (`keepty ls`), as serde's derive read it: every field
    /// of SPEC section 2 present with its type and range, `exit_code` and `active_client` also
    /// null or absent, the later extensions (`title` to `bells`) their default when absent,
    /// other keys ignored; `None` when the record is not one. Written out because the
    /// derive's deserializer from a `Value` was 13 KB of the binary for this one read.
    pub fn from_json(v: &serde_json::Value) -> Option<SessionRecord> {
        use serde_json::Value;
        let o = v.as_object()?;
        let string = |k: &str| o.get(k)?.as_str().map(str::to_string);
        let uint = |k: &str| o.get(k)?.as_u64();
        let ext_string = |k: &str| -> Option<String> {
            match o.get(k) {
                None => Some(String::new()),
                Some(x) => x.as_str().map(str::to_string),
            }
        };
        let ext_uint = |k: &str| -> Option<u64> {
            match o.get(k) {
                None => Some(0),
                Some(x) => x.as_u64(),
            }
        };
        Some(SessionRecord {
            id: string("id")?,
            owner: string("owner")?,
            pid: i32::try_from(o.get("pid")?.as_i64()?).ok()?,
            state: string("state")?,
            exit_code: match o.get("exit_code") {
                None | Some(Value::Null) => None,
                Some(x) => Some(i32::try_from(x.as_i64()?).ok()?),
            },
            created_at: uint("created_at")?,
            last_seen: uint("last_seen")?,
            idle_secs: uint("idle_secs")?,
            expires_in_secs: uint("expires_in_secs")?,
            bytes_buffered: uint("bytes_buffered")?,
            bytes_total: uint("bytes_total")?,
            clients: usize::try_from(uint("clients")?).ok()?,
            active_client: match o.get("active_client") {
                None | Some(Value::Null) => None,
                Some(x) => Some(x.as_str()?.to_string()),
            },
            cols: u16::try_from(uint("cols")?).ok()?,
            rows: u16::try_from(uint("rows")?).ok()?,
            title: ext_string("title")?,
            alt_screen: match o.get("alt_screen") {
                None => false,
                Some(x) => x.as_bool()?,
            },
            rss_bytes: ext_uint("rss_bytes")?,
            cpu_ms: ext_uint("cpu_ms")?,
            command: ext_string("command")?,
            cwd: ext_string("cwd")?,
            bells: ext_uint("bells")?,
        })
    }
}

/// A window title as the program sent it, made fit for a list: lossy UTF-8 without control
/// characters (C0, DEL, C1), which would act on the terminal or page that shows it, and
/// without format characters and line or paragraph separators (bidi overrides, zero-width
/// characters, tags), which would hide or reorder what the operator reads.
pub fn title_text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !crate::api::text::is_invisible(*c))
        .collect()
}

/// Longest title shown in the text table, characters; the JSON has all of it.
const TABLE_TITLE: usize = 24;

/// The configured caps, as shown to operators.
#[derive(Debug, Serialize)]
pub struct Caps {
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// `--max-clients`.
    pub max_clients: usize,
    /// `--max-memory`, bytes.
    pub max_memory: usize,
    /// `--scrollback`, bytes.
    pub scrollback: usize,
    /// `--ttl`, seconds.
    pub ttl_secs: u64,
    /// `--attach-policy`.
    pub attach_policy: &'static str,
    /// `--detached-output`.
    pub detached_output: &'static str,
}

/// Memory reserved against the cap.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Bytes reserved now.
    pub reserved: usize,
    /// `--max-memory`.
    pub cap: usize,
}

/// The `/admin/sessions` answer.
#[derive(Debug, Serialize)]
pub struct SessionList {
    /// Unix seconds.
    pub now: u64,
    /// Every session.
    pub sessions: Vec<SessionRecord>,
    /// Configured caps.
    pub limits: Caps,
    /// Memory against the cap.
    pub memory: Memory,
}

/// Operator-facing counters that outlive the sessions they count; the event loop owns them
/// (failed logins are the gate's, uptime is read off the clock when shown).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Sessions removed by the idle TTL.
    pub sessions_reaped: u64,
    /// Sessions removed by `/admin/drop` or `/admin/drop-all`.
    pub sessions_dropped: u64,
    /// New sessions refused by a limit (sessions, per-token or memory).
    pub sessions_refused: u64,
    /// Connections refused by `--max-clients`, `--max-pending` or the memory cap.
    pub connections_refused: u64,
    /// Requests with a missing or wrong token.
    pub auth_failures: u64,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Upgrades in place completed (the process that counts them is the new one).
    pub upgrades: u64,
}

/// Seconds as one unit, rounded down (`59s`, `3m`, `2h`, `4d`): the table must stay narrow
/// enough for a phone, and a minute more or less does not change what an operator does.
fn human_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// CPU time: tenths of a second below 10 s (`0.3s`), then as [`human_secs`].
fn human_cpu(ms: u64) -> String {
    if ms < 10_000 {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    } else {
        human_secs(ms / 1000)
    }
}

/// Bytes in powers of 1024 like `ls -h` and our own `--scrollback` (`512`, `1.5M`, `12K`):
/// one decimal below 10 units, whole units above. Must agree with `bytes` in
/// assets/format.js, which the admin page shows the same numbers with; its tests
/// (tests/page/format.test.mjs) hold this function's outputs.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return n.to_string();
    }
    let n = u128::from(n);
    for (i, unit) in UNITS.iter().enumerate() {
        let size = 1u128 << (10 * (i + 1));
        let tenths = (n * 10 + size / 2) / size;
        if tenths < 100 {
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
        let whole = (n + size / 2) / size;
        // 1023.6K rounds to 1024K, which reads better as 1.0M: let the next unit take it.
        if whole < 1024 || i == UNITS.len() - 1 {
            return format!("{whole}{unit}");
        }
    }
    unreachable!("the last unit always answers")
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM`, via the days-to-civil algorithm of
/// <http://howardhinnant.github.io/date_algorithms.html>, to need no date crate.
fn utc_minute(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (hour, minute) = (rem / 3_600, rem % 3_600 / 60);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

/// The `format=text` session table: one header row, one row per session, then a summary.
///
/// Numeric columns are right-aligned; the id and the window title come last so that on a
/// narrow screen the columns that matter for a decision line up, and only the (up to 64
/// character) id and the title wrap. A `*` after the size marks the alternate screen.
/// Every cell is passed through [`escape_control`], because owners come from token files
/// and the table is meant to be `curl`ed straight onto a terminal.
pub fn render_text(list: &SessionList) -> String {
    let mut out = render_rows(&list.sessions);
    let n = list.sessions.len();
    out.push_str(&format!(
        "{n} session{}, memory {} of {}\n",
        if n == 1 { "" } else { "s" },
        human_bytes(list.memory.reserved as u64),
        human_bytes(list.memory.cap as u64),
    ));
    out
}

/// The table's header and rows, without the summary line (`keepty ls` prints these for the
/// sessions it was given).
pub fn render_rows(sessions: &[SessionRecord]) -> String {
    const HEADER: [&str; 14] = [
        "OWNER", "STATE", "CLIENTS", "IDLE", "EXPIRES", "BUFFERED", "TOTAL", "RSS", "CPU", "SIZE",
        "CREATED", "COMMAND", "ID", "TITLE",
    ];
    const RIGHT: [bool; 14] = [
        false, false, true, true, true, true, true, true, true, false, false, false, false, false,
    ];

    let mut rows: Vec<[String; 14]> = Vec::with_capacity(sessions.len() + 1);
    rows.push(HEADER.map(String::from));
    for s in sessions {
        let state = match (s.state.as_str(), s.exit_code) {
            ("exited", Some(code)) => format!("exited {code}"),
            (other, _) => other.to_string(),
        };
        rows.push(
            [
                s.owner.clone(),
                state,
                s.clients.to_string(),
                human_secs(s.idle_secs),
                human_secs(s.expires_in_secs),
                human_bytes(s.bytes_buffered),
                human_bytes(s.bytes_total),
                human_bytes(s.rss_bytes),
                human_cpu(s.cpu_ms),
                format!(
                    "{}x{}{}",
                    s.cols,
                    s.rows,
                    if s.alt_screen { "*" } else { "" }
                ),
                utc_minute(s.created_at),
                if s.command.is_empty() {
                    "-".to_string()
                } else {
                    s.command.clone()
                },
                s.id.clone(),
                table_title(&s.title),
            ]
            .map(|cell| escape_control(&cell).into_owned()),
        );
    }

    let mut widths = [0usize; 14];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if RIGHT[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A title cell, cut to [`TABLE_TITLE`] characters with an ellipsis. It is free text (spaces
/// and all), so it is the last column, where it cannot shift the others.
fn table_title(title: &str) -> String {
    if title.chars().nth(TABLE_TITLE).is_none() {
        return title.to_string();
    }
    let mut out: String = title.chars().take(TABLE_TITLE - 1).collect();
    out.push('…');
    out
}

/// Appends one metric family in text format 0.0.4: `# HELP`, `# TYPE`, then its samples,
/// each `(labels, value)` with labels already in `{k="v"}` form (or empty).
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    use std::fmt::Write as _;

    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// `/admin/metrics`: Prometheus text exposition format 0.0.4, ending with a newline.
///
/// Sums over sessions (clients, bytes) are gauges because they fall when a session goes;
/// only the `_total` families never decrease, so only they are counters.
pub fn render_metrics(list: &SessionList, c: &Counters) -> String {
    let exited = list.sessions.iter().filter(|s| s.state == "exited").count() as u64;
    let running = list.sessions.len() as u64 - exited;
    let clients: u64 = list.sessions.iter().map(|s| s.clients as u64).sum();
    let buffered: u64 = list.sessions.iter().map(|s| s.bytes_buffered).sum();
    let output: u64 = list.sessions.iter().map(|s| s.bytes_total).sum();
    let rss: u64 = list.sessions.iter().map(|s| s.rss_bytes).sum();
    let cpu_ms: u64 = list.sessions.iter().map(|s| s.cpu_ms).sum();

    let mut out = String::with_capacity(2048);
    let m = &mut out;
    metric(
        m,
        "keepty_sessions",
        "gauge",
        "Sessions alive, by state.",
        &[
            ("{state=\"running\"}", running),
            ("{state=\"exited\"}", exited),
        ],
    );
    metric(
        m,
        "keepty_clients",
        "gauge",
        "WebSocket clients attached to sessions.",
        &[("", clients)],
    );
    metric(
        m,
        "keepty_bytes_buffered",
        "gauge",
        "Output bytes held in session ring buffers.",
        &[("", buffered)],
    );
    metric(
        m,
        "keepty_session_output_bytes",
        "gauge",
        "Output bytes ever produced by the sessions alive now.",
        &[("", output)],
    );
    // Totals only: a label per session would grow the series without bound.
    metric(
        m,
        "keepty_sessions_rss_bytes",
        "gauge",
        "Resident memory of every session's processes, summed (sampled).",
        &[("", rss)],
    );
    metric(
        m,
        "keepty_sessions_cpu_ms",
        "gauge",
        "CPU milliseconds used by the sessions alive now, with their waited-for children (sampled).",
        &[("", cpu_ms)],
    );
    metric(
        m,
        "keepty_memory_reserved_bytes",
        "gauge",
        "Memory reserved by ring and connection buffers.",
        &[("", list.memory.reserved as u64)],
    );
    metric(
        m,
        "keepty_memory_cap_bytes",
        "gauge",
        "The --max-memory cap.",
        &[("", list.memory.cap as u64)],
    );
    metric(
        m,
        "keepty_sessions_reaped_total",
        "counter",
        "Sessions reaped by the idle TTL.",
        &[("", c.sessions_reaped)],
    );
    metric(
        m,
        "keepty_upgrades_total",
        "counter",
        "Upgrades in place completed (SIGUSR2 or /admin/upgrade).",
        &[("", c.upgrades)],
    );
    metric(
        m,
        "keepty_sessions_dropped_total",
        "counter",
        "Sessions dropped by an admin.",
        &[("", c.sessions_dropped)],
    );
    metric(
        m,
        "keepty_sessions_refused_total",
        "counter",
        "New sessions refused by a limit.",
        &[("", c.sessions_refused)],
    );
    metric(
        m,
        "keepty_connections_refused_total",
        "counter",
        "Connections refused by a limit.",
        &[("", c.connections_refused)],
    );
    metric(
        m,
        "keepty_auth_failures_total",
        "counter",
        "Requests with a missing or wrong token.",
        &[("", c.auth_failures)],
    );
    metric(
        m,
        "keepty_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[("", c.uptime_secs)],
    );
    metric(
        m,
        "keepty_limit_max_sessions",
        "gauge",
        "The --max-sessions limit.",
        &[("", list.limits.max_sessions as u64)],
    );
    metric(
        m,
        "keepty_limit_max_clients",
        "gauge",
        "The --max-clients limit.",
        &[("", list.limits.max_clients as u64)],
    );
    metric(
        m,
        "keepty_limit_scrollback_bytes",
        "gauge",
        "The --scrollback ring size per session.",
        &[("", list.limits.scrollback as u64)],
    );
    metric(
        m,
        "keepty_limit_ttl_seconds",
        "gauge",
        "The --ttl idle timeout.",
        &[("", list.limits.ttl_secs)],
    );
    out
}

/// Monotonic instants shown as Unix seconds, converted through one anchor so a time shown
/// twice reads the same (and a wall-clock jump moves nothing that was shown).
pub struct Clock {
    started: Instant,
    started_unix_ms: u128,
}

impl Clock {
    /// The anchor: the monotonic and wall-clock readings of the same moment.
    pub fn new(started: Instant, started_unix_ms: u128) -> Clock {
        Clock {
            started,
            started_unix_ms,
        }
    }

    /// `t` as Unix seconds.
    pub fn unix_secs(&self, t: Instant) -> u64 {
        let ms = self.started_unix_ms as i128
            + (t.saturating_duration_since(self.started).as_millis() as i128)
            - (self.started.saturating_duration_since(t).as_millis() as i128);
        (ms.max(0) / 1000) as u64
    }

    /// Time since the anchor.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Seconds since the anchor.
    pub fn uptime_secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }
}

/// What a snapshot is built from, read-only.
pub struct Sources<'a> {
    /// The sessions.
    pub table: &'a Table,
    /// The caps shown.
    pub limits: &'a Limits,
    /// `--attach-policy`.
    pub policy: AttachPolicy,
    /// Memory reserved now.
    pub reserved: usize,
    /// The anchor for Unix times.
    pub clock: &'a Clock,
    /// This turn's time, both clocks.
    pub now: Instant,
    /// Unix seconds now.
    pub now_unix: u64,
}

impl Sources<'_> {
    /// Every session, or only `owner`'s; `writer_peer` names the client with the keyboard.
    pub fn list(
        &self,
        owner: Option<&str>,
        writer_peer: impl Fn(usize) -> Option<SocketAddr>,
    ) -> SessionList {
        let ttl = self.limits.ttl.as_secs();
        let sessions = self
            .table
            .iter()
            .filter(|(_, s)| owner.is_none_or(|o| s.owner() == o))
            .map(|(_, s)| {
                // Attached means in use: seen now.
                let (idle, last_seen) = if s.is_attached() {
                    (0, self.now_unix)
                } else {
                    (
                        self.now.saturating_duration_since(s.last_seen()).as_secs(),
                        self.clock.unix_secs(s.last_seen()),
                    )
                };
                let (cols, rows) = s.size();
                SessionRecord {
                    id: s.id().to_string(),
                    owner: s.owner().to_string(),
                    pid: s.pid(),
                    state: s.state().name().to_string(),
                    exit_code: s.exit().and_then(|e| e.code),
                    created_at: s.created_at(),
                    last_seen,
                    idle_secs: idle,
                    expires_in_secs: ttl.saturating_sub(idle),
                    bytes_buffered: s.ring().len() as u64,
                    bytes_total: s.ring().end(),
                    clients: s.clients().len(),
                    active_client: s.writer().and_then(&writer_peer).map(|p| p.to_string()),
                    cols,
                    rows,
                    title: title_text(s.modes().title()),
                    alt_screen: s.modes().alt_screen(),
                    rss_bytes: s.usage().rss_bytes,
                    cpu_ms: s.usage().cpu_ms,
                    command: s.usage().command.clone(),
                    cwd: s.usage().cwd.clone(),
                    bells: s.modes().bells(),
                }
            })
            .collect();
        SessionList {
            now: self.now_unix,
            sessions,
            limits: Caps {
                max_sessions: self.limits.max_sessions,
                max_clients: self.limits.max_clients,
                max_memory: self.limits.max_memory,
                scrollback: self.limits.scrollback,
                ttl_secs: ttl,
                attach_policy: self.policy.name(),
                detached_output: match self.limits.detached_output {
                    DetachedOutput::DropOldest => "drop-oldest",
                    DetachedOutput::Block => "block",
                },
            },
            memory: Memory {
                reserved: self.reserved,
                cap: self.limits.max_memory,
            },
        }
    }
}

/// The answer for `view` of `list`.
pub fn respond(view: View, list: &SessionList, counters: &Counters) -> Response {
    match view {
        // A user sees its own sessions, not the operator's limits and memory.
        View::Own => Response::json(
            200,
            &serde_json::json!({ "now": list.now, "sessions": list.sessions }),
        ),
        View::Json => Response::json(200, list),
        View::Text => Response::new(
            200,
            "text/plain; charset=utf-8",
            render_text(list).into_bytes(),
        ),
        View::Metrics => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(list, counters).into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn record(id: &str, owner: &str) -> SessionRecord {
        SessionRecord {
            id: id.to_string(),
            owner: owner.to_string(),
            pid: 4242,
            state: "running".to_string(),
            exit_code: None,
            created_at: 1_700_000_000,
            last_seen: 1_700_000_100,
            idle_secs: 5,
            expires_in_secs: 43_195,
            bytes_buffered: 12 * 1024,
            bytes_total: 3 * 1024 * 1024 / 2,
            clients: 1,
            active_client: Some("127.0.0.1:5555".to_string()),
            cols: 80,
            rows: 24,
            title: String::new(),
            alt_screen: false,
            rss_bytes: 0,
            cpu_ms: 0,
            command: String::new(),
            cwd: String::new(),
            bells: 0,
        }
    }

    fn list(sessions: Vec<SessionRecord>) -> SessionList {
        SessionList {
            now: 1_700_000_105,
            sessions,
            limits: Caps {
                max_sessions: 32,
                max_clients: 128,
                max_memory: 64 << 20,
                scrollback: 256 << 10,
                ttl_secs: 43_200,
                attach_policy: "handoff",
                detached_output: "drop-oldest",
            },
            memory: Memory {
                reserved: 3 << 19,
                cap: 64 << 20,
            },
        }
    }

    #[test]
    fn records_read_back_as_served() {
        let mut r = record("s1", "alice");
        (r.exit_code, r.title, r.alt_screen, r.bells) = (Some(-3), "t".into(), true, 7);
        (r.rss_bytes, r.cpu_ms, r.command, r.cwd) = (1 << 20, 12, "vim".into(), "/tmp".into());
        let v = serde_json::to_value(&r).unwrap();
        let back = SessionRecord::from_json(&v).expect("reads back");
        assert_eq!(serde_json::to_value(&back).unwrap(), v);

        // Older servers' records lack the extensions; null options may also be absent.
        let mut old = v.clone();
        let o = old.as_object_mut().unwrap();
        for k in [
            "title",
            "alt_screen",
            "rss_bytes",
            "cpu_ms",
            "command",
            "cwd",
            "bells",
        ] {
            o.remove(k);
        }
        o.remove("exit_code");
        o.insert("active_client".into(), serde_json::Value::Null);
        o.insert("future".into(), serde_json::json!([1]));
        let back = SessionRecord::from_json(&old).expect("an older record");
        assert_eq!(
            (back.exit_code, back.active_client, back.bells),
            (None, None, 0)
        );
        assert_eq!((back.title.as_str(), back.alt_screen), ("", false));

        // A missing field, a wrong type or a number out of its range is no record.
        for (k, bad) in [
            ("id", serde_json::Value::Null),
            ("pid", serde_json::json!(1u64 << 40)),
            ("cols", serde_json::json!(70_000)),
            ("clients", serde_json::json!(-1)),
            ("created_at", serde_json::json!(1.5)),
            ("title", serde_json::Value::Null),
            ("alt_screen", serde_json::json!(1)),
            ("exit_code", serde_json::json!("3")),
        ] {
            let mut w = v.clone();
            w[k] = bad;
            assert!(SessionRecord::from_json(&w).is_none(), "{k}");
        }
        let mut w = v.clone();
        w.as_object_mut().unwrap().remove("last_seen");
        assert!(SessionRecord::from_json(&w).is_none());
        assert!(SessionRecord::from_json(&serde_json::json!([1])).is_none());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(60), "1m");
        assert_eq!(human_secs(3_599), "59m");
        assert_eq!(human_secs(7_200), "2h");
        assert_eq!(human_secs(86_399), "23h");
        assert_eq!(human_secs(3 * 86_400 + 5), "3d");
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1023), "1023");
        assert_eq!(human_bytes(1024), "1K");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(12 * 1024), "12K");
        assert_eq!(human_bytes(12 * 1024 + 600), "13K");
        assert_eq!(human_bytes(1023 * 1024 + 1000), "1M");
        assert_eq!(human_bytes(3 << 19), "1.5M");
        assert_eq!(human_bytes(64 << 20), "64M");
        assert_eq!(human_bytes(5 << 30), "5G");
        assert_eq!(human_bytes(u64::MAX), "16E");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_minute(951_868_799), "2000-02-29 23:59");
        assert_eq!(utc_minute(4_107_542_400), "2100-03-01 00:00");
        assert_eq!(utc_minute(1_767_225_599), "2025-12-31 23:59");
    }

    #[test]
    fn table_is_aligned_and_summed_up() {
        let mut b = record("b-very-long-session-id-0123456789", "alice");
        b.state = "exited".to_string();
        b.exit_code = Some(130);
        b.clients = 0;
        b.idle_secs = 3 * 3_600 + 5;
        b.cols = 200;
        b.rows = 50;
        let mut a = record("a", "local");
        a.title = "vim src/main.rs and a very long tail".to_string();
        a.alt_screen = true;
        a.rss_bytes = 52 << 20;
        a.cpu_ms = 1234;
        a.command = "vim".to_string();
        b.cpu_ms = 3_725_000;
        let text = render_text(&list(vec![a, b]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(text.ends_with('\n'));
        assert_eq!(
            lines[0],
            "OWNER  STATE       CLIENTS  IDLE  EXPIRES  BUFFERED  TOTAL  RSS   CPU  SIZE    \
             CREATED           COMMAND  ID                                 TITLE"
        );
        assert_eq!(
            lines[1],
            "local  running           1    5s      11h       12K   1.5M  52M  1.2s  80x24*  \
             2023-11-14 22:13  vim      a                                  vim src/main.rs and a v…"
        );
        assert_eq!(
            lines[2],
            "alice  exited 130        0    3h      11h       12K   1.5M    0    1h  200x50  \
             2023-11-14 22:13  -        b-very-long-session-id-0123456789"
        );
        assert_eq!(lines[3], "2 sessions, memory 1.5M of 64M");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn titles_lose_their_controls() {
        assert_eq!(title_text(b""), "");
        assert_eq!(title_text("héllo ✓".as_bytes()), "héllo ✓");
        assert_eq!(
            title_text(b"a\x1b[2Jb\tc\x7fd\xc2\x9be\xfff"),
            "a[2Jbcde\u{fffd}f"
        );
        assert_eq!(
            title_text(
                "a\u{202e}gpj.exe\u{202c} b\u{200b}c\u{2028}d\u{2029}e\u{feff}\u{e0041}".as_bytes()
            ),
            "agpj.exe bcde"
        );
        assert_eq!(table_title(&"x".repeat(24)), "x".repeat(24));
        assert_eq!(table_title(&"é".repeat(25)), format!("{}…", "é".repeat(23)));
    }

    #[test]
    fn table_with_no_sessions() {
        let text = render_text(&list(vec![]));
        assert!(text.starts_with("OWNER  STATE  CLIENTS"), "{text}");
        assert!(
            text.ends_with("\n0 sessions, memory 1.5M of 64M\n"),
            "{text}"
        );
        let one = render_text(&list(vec![record("x", "local")]));
        assert!(one.ends_with("\n1 session, memory 1.5M of 64M\n"), "{one}");
    }

    #[test]
    fn table_cells_cannot_drive_a_terminal() {
        let mut r = record("id", "ev\x1b]0;pwned\x07il\u{9b}2J");
        r.state = "run\rning".to_string();
        let text = render_text(&list(vec![r]));
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c)),
            "{text:?}"
        );
        assert!(text.contains("ev\\x1b]0;pwned\\x07il\\u{009b}2J"), "{text}");
        assert_eq!(text.lines().count(), 3);
        // Alignment counts characters, not bytes: the header's STATE column matches the row.
        let lines: Vec<&str> = text.lines().collect();
        let col = |l: &str, needle: &str| {
            l.chars().count() - l[l.find(needle).unwrap()..].chars().count()
        };
        assert_eq!(col(lines[0], "STATE"), col(lines[1], "run\\x0dning"));
    }

    /// A small validator for text format 0.0.4: every sample belongs to a family declared by
    /// `# TYPE` before it, families are contiguous and declared once, label syntax holds and
    /// every value is a float. Returns each family's type and samples.
    fn parse_prometheus(text: &str) -> HashMap<String, (String, Vec<(String, f64)>)> {
        fn is_name(s: &str, colon: bool) -> bool {
            let mut cs = s.chars();
            cs.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        }
        /// Consumes `{k="v",...}` and returns what follows.
        fn labels(mut s: &str) -> &str {
            s = s.strip_prefix('{').unwrap();
            loop {
                if let Some(rest) = s.strip_prefix('}') {
                    return rest;
                }
                let eq = s.find('=').expect("label without =");
                assert!(is_name(&s[..eq], false), "label name {:?}", &s[..eq]);
                s = s[eq + 1..].strip_prefix('"').expect("label value quoted");
                let mut chars = s.char_indices();
                let end = loop {
                    match chars.next().expect("unterminated label value") {
                        (_, '\\') => {
                            let (_, e) = chars.next().expect("dangling escape");
                            assert!(matches!(e, '\\' | '"' | 'n'), "bad escape \\{e}");
                        }
                        (_, '\n') => panic!("raw newline in label value"),
                        (i, '"') => break i,
                        _ => {}
                    }
                };
                s = &s[end + 1..];
                s = s.strip_prefix(',').unwrap_or(s);
            }
        }

        assert!(text.ends_with('\n'), "must end with a newline");
        let mut families: HashMap<String, (String, Vec<(String, f64)>)> = HashMap::new();
        let mut helped: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(is_name(name, true) && !help.is_empty(), "{line}");
                assert!(!helped.contains(&name.to_string()), "HELP twice: {line}");
                helped.push(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(is_name(name, true), "{line}");
                assert!(
                    matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "{line}"
                );
                assert!(!families.contains_key(name), "TYPE twice: {line}");
                families.insert(name.to_string(), (kind.to_string(), Vec::new()));
                current = Some(name.to_string());
            } else if line.starts_with('#') {
                continue;
            } else {
                let end = line.find(['{', ' ']).expect("sample has a value");
                let name = &line[..end];
                assert!(is_name(name, true), "{line}");
                assert_eq!(
                    current.as_deref(),
                    Some(name),
                    "sample outside its family: {line}"
                );
                let mut rest = &line[end..];
                let label_text = if rest.starts_with('{') {
                    let after = labels(rest);
                    let l = &rest[..rest.len() - after.len()];
                    rest = after;
                    l.to_string()
                } else {
                    String::new()
                };
                let mut parts = rest
                    .strip_prefix(' ')
                    .expect("space before value")
                    .split(' ');
                let value: f64 = parts.next().unwrap().parse().expect("value is a float");
                if let Some(ts) = parts.next() {
                    ts.parse::<i64>().expect("timestamp is an integer");
                }
                assert!(parts.next().is_none(), "{line}");
                families.get_mut(name).unwrap().1.push((label_text, value));
            }
        }
        for name in families.keys() {
            assert!(helped.contains(name), "{name} has no HELP");
        }
        families
    }

    #[test]
    fn metrics_parse_and_add_up() {
        let mut b = record("b", "alice");
        b.state = "exited".to_string();
        b.clients = 2;
        b.rss_bytes = 50 << 20;
        b.cpu_ms = 1500;
        let mut a = record("a", "local");
        a.rss_bytes = 2 << 20;
        a.cpu_ms = 20;
        let counters = Counters {
            sessions_reaped: 3,
            sessions_dropped: 4,
            sessions_refused: 5,
            connections_refused: 6,
            auth_failures: 7,
            uptime_secs: 99,
            upgrades: 2,
        };
        let text = render_metrics(&list(vec![a, b]), &counters);
        let fams = parse_prometheus(&text);
        let one = |name: &str| -> (String, f64) {
            let (kind, samples) = fams.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(samples.len(), 1, "{name}");
            assert_eq!(samples[0].0, "", "{name}");
            (kind.clone(), samples[0].1)
        };
        let (kind, sessions) = &fams["keepty_sessions"];
        assert_eq!(kind, "gauge");
        assert_eq!(
            sessions,
            &vec![
                ("{state=\"running\"}".to_string(), 1.0),
                ("{state=\"exited\"}".to_string(), 1.0)
            ]
        );
        for (name, kind, value) in [
            ("keepty_clients", "gauge", 3.0),
            ("keepty_sessions_rss_bytes", "gauge", 52.0 * 1024.0 * 1024.0),
            ("keepty_sessions_cpu_ms", "gauge", 1520.0),
            ("keepty_bytes_buffered", "gauge", 24.0 * 1024.0),
            (
                "keepty_session_output_bytes",
                "gauge",
                3.0 * 1024.0 * 1024.0,
            ),
            (
                "keepty_memory_reserved_bytes",
                "gauge",
                1.5 * 1024.0 * 1024.0,
            ),
            ("keepty_memory_cap_bytes", "gauge", 64.0 * 1024.0 * 1024.0),
            ("keepty_sessions_reaped_total", "counter", 3.0),
            ("keepty_sessions_dropped_total", "counter", 4.0),
            ("keepty_upgrades_total", "counter", 2.0),
            ("keepty_sessions_refused_total", "counter", 5.0),
            ("keepty_connections_refused_total", "counter", 6.0),
            ("keepty_auth_failures_total", "counter", 7.0),
            ("keepty_uptime_seconds", "gauge", 99.0),
            ("keepty_limit_max_sessions", "gauge", 32.0),
            ("keepty_limit_max_clients", "gauge", 128.0),
            ("keepty_limit_scrollback_bytes", "gauge", 262_144.0),
            ("keepty_limit_ttl_seconds", "gauge", 43_200.0),
        ] {
            assert_eq!(one(name), (kind.to_string(), value), "{name}");
        }
        assert_eq!(fams.len(), 19, "keepty_upgrades_total is the 19th");
        for (name, (kind, _)) in &fams {
            assert!(name.starts_with("keepty_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn metrics_with_no_sessions_still_list_both_states() {
        let text = render_metrics(&list(vec![]), &Counters::default());
        let fams = parse_prometheus(&text);
        assert_eq!(
            fams["keepty_sessions"].1,
            vec![
                ("{state=\"running\"}".to_string(), 0.0),
                ("{state=\"exited\"}".to_string(), 0.0)
            ]
        );
        assert_eq!(fams["keepty_clients"].1, vec![(String::new(), 0.0)]);
    }

    #[test]
    fn admin_page_fits_the_csp_and_is_embedded() {
        let html = std::str::from_utf8(
            crate::api::assets::get("/assets/admin.html")
                .unwrap()
                .body(),
        )
        .unwrap();
        let lower = html.to_ascii_lowercase();
        assert!(lower.starts_with("<!doctype html>"));
        // script-src 'self': scripts only by src, and no inline handlers.
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..i + lower[i..].find('>').unwrap()];
            assert!(tag.contains(" src=\""), "inline script: {tag}");
        }
        for (i, _) in lower.match_indices(" on") {
            let word: String = lower[i + 1..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                !lower[i + 1 + word.len()..].starts_with('='),
                "inline handler {word}"
            );
        }
        assert!(!lower.contains("javascript:"));
        assert_eq!(
            crate::api::assets::tests::assert_references_embedded(html),
            3
        );
        let js = std::str::from_utf8(crate::api::assets::get("/assets/admin.js").unwrap().body())
            .unwrap();
        // Session data reaches the page through textContent only.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "admin.js uses {sink}");
        }
    }

    #[test]
    fn the_validator_rejects_broken_text() {
        for bad in [
            "keepty_x 1\n",
            "# HELP keepty_x h\n# TYPE keepty_x gauge\nkeepty_x one\n",
            "# HELP keepty_x h\n# TYPE keepty_x gauge\nkeepty_x{a=\"b} 1\n",
            "# HELP keepty_x h\n# TYPE keepty_x gauge\nkeepty_x{1a=\"b\"} 1\n",
            "# HELP keepty_x h\n# TYPE keepty_x gauge\nkeepty_x 1",
            "# TYPE keepty_x gauge\nkeepty_x 1\n",
        ] {
            let r = std::panic::catch_unwind(|| parse_prometheus(bad));
            assert!(r.is_err(), "accepted {bad:?}");
        }
    }
}
