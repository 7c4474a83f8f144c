//! The server's whole state for an upgrade: the header, the listener's fd, the counters, the
//! failure limiter, then the session table (which writes its sessions, tombstones and
//! orphans itself). The order is the layout of docs/upgrade.md.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::Registry;

use crate::api::admin::Counters;
use crate::sessions::session::Session;
use crate::sessions::table::{Rearm, Table};
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// The failure limiter's entries: key, failures, age of the window.
pub(crate) type Failures = Vec<(String, u32, Duration)>;

/// What is written.
pub(crate) struct Parts<'a> {
    /// The listening socket.
    pub listener_fd: RawFd,
    /// The sessions, tombstones and orphans.
    pub table: &'a Table,
    /// The admin counters.
    pub counters: &'a Counters,
    /// Wrong tokens counted in all.
    pub auth_failures: u64,
    /// The failure limiter.
    pub failures: Failures,
    /// `--ttl`, to say how much of each session's TTL is left.
    pub ttl: Duration,
    /// Since the first process started, so the uptime goes on.
    pub uptime: Duration,
}

/// What is read back.
pub(crate) struct Decoded {
    /// The table, its masters adopted and registered.
    pub table: Table,
    /// The TTL timers to arm again.
    pub rearm: Vec<Rearm>,
    /// The admin counters.
    pub counters: Counters,
    /// Wrong tokens counted in all.
    pub auth_failures: u64,
    /// The failure limiter's entries.
    pub failures: Failures,
    /// Since the first process started.
    pub uptime: Duration,
}

/// How much of a session's TTL is left: all of it while attached, else from its last activity.
fn ttl_left(s: &Session, ttl: Duration, now: Instant) -> Duration {
    if s.is_attached() {
        ttl
    } else {
        (s.last_seen() + ttl).saturating_duration_since(now)
    }
}

/// Writes the state.
pub(crate) fn encode(p: &Parts<'_>, now: Instant) -> Vec<u8> {
    let mut w = Writer::with_header();
    w.i32(p.listener_fd);
    w.section(|w| {
        let c = p.counters;
        for v in [
            c.sessions_reaped,
            c.sessions_dropped,
            c.sessions_refused,
            c.connections_refused,
            p.auth_failures,
            c.upgrades,
            u64::try_from(p.uptime.as_millis()).unwrap_or(u64::MAX),
        ] {
            w.u64(v);
        }
    });
    w.section(|w| {
        w.count(p.failures.len());
        for (key, n, age) in &p.failures {
            w.str(key);
            w.u32(*n);
            w.u64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        }
    });
    w.section(|w| p.table.to_record(w, now, |s| ttl_left(s, p.ttl, now)));
    w.into_bytes()
}

/// The start of a state, read without touching a file descriptor.
pub(crate) struct Head<'a> {
    /// The listening socket's number.
    pub listener_fd: RawFd,
    /// The admin counters.
    pub counters: Counters,
    /// Wrong tokens counted in all.
    pub auth_failures: u64,
    /// The failure limiter's entries.
    pub failures: Failures,
    /// Since the first process started.
    pub uptime: Duration,
    /// The table's section, still to be read.
    pub table: Reader<'a>,
}

/// The parts of the state that need no file descriptors: the header, the listener's number,
/// the counters and the limiter; and a reader at the table.
pub(crate) fn decode_head(buf: &[u8]) -> Result<Head<'_>, FormatError> {
    let mut r = Reader::new(buf);
    r.header()?;
    let listener_fd = r.i32()?;
    if listener_fd < 0 {
        return bad("no listener in the state");
    }
    let mut c = r.section()?;
    let mut counters = Counters {
        sessions_reaped: c.u64()?,
        sessions_dropped: c.u64()?,
        sessions_refused: c.u64()?,
        connections_refused: c.u64()?,
        ..Counters::default()
    };
    let auth_failures = c.u64()?;
    counters.upgrades = c.u64()?;
    let uptime = Duration::from_millis(c.u64()?);
    c.finish("the counters")?;
    let mut l = r.section()?;
    let n = l.count(1 << 16, "limiter entries")?;
    let mut failures = Vec::with_capacity(n);
    for _ in 0..n {
        failures.push((
            l.str(64, "limiter key")?,
            l.u32()?,
            Duration::from_millis(l.u64()?),
        ));
    }
    l.finish("the limiter")?;
    let table = r.section()?;
    r.finish("the state")?;
    Ok(Head {
        listener_fd,
        counters,
        auth_failures,
        failures,
        uptime,
        table,
    })
}

/// Reads the whole state, adopting the PTY masters and registering them with `registry`.
pub(crate) fn decode(buf: &[u8], registry: &Registry, now: Instant) -> Result<Decoded, FormatError> {
    let mut head = decode_head(buf)?;
    let (table, rearm) = Table::from_record(&mut head.table, registry, now)?;
    Ok(Decoded {
        table,
        rearm,
        counters: head.counters,
        auth_failures: head.auth_failures,
        failures: head.failures,
        uptime: head.uptime,
    })
}
