//! The server's whole state for an upgrade: the header, the listener's fd, the counters, the
//! failure limiter, then the session table (which writes its sessions, tombstones and
//! orphans itself). The order is the layout of docs/upgrade.md.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::Registry;

use crate::access::auth::LimiterState;
use crate::api::admin::Counters;
use crate::sessions::session::Session;
use crate::sessions::table::{Rearm, Table};
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// The failure limiter's state.
pub(crate) type Failures = LimiterState;

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
    // Rings are nearly all of it; the rest is well under 4 KiB a session.
    let guess: usize = p
        .table
        .iter()
        .map(|(_, s)| s.ring().len() + 4096)
        .sum::<usize>()
        + 64 * 1024;
    let mut w = Writer::with_header(guess);
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
    let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    w.section(|w| {
        let f = &p.failures;
        w.count(f.by_ip.len());
        for (key, n, age) in &f.by_ip {
            w.str(key);
            w.u32(*n);
            w.u64(ms(age));
        }
        // The global window: its count, and its age (u64::MAX: no window yet).
        let (n, age) = f.global.unwrap_or((0, Duration::MAX));
        w.u32(n);
        w.u64(ms(&age));
        w.count(f.trusted.len());
        for (key, left) in &f.trusted {
            w.str(key);
            w.u64(ms(left));
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
    let mut failures = LimiterState::default();
    for _ in 0..n {
        failures.by_ip.push((
            l.str(64, "limiter key")?,
            l.u32()?,
            Duration::from_millis(l.u64()?),
        ));
    }
    let (n, age) = (l.u32()?, l.u64()?);
    failures.global = (age != u64::MAX).then(|| (n, Duration::from_millis(age)));
    let n = l.count(1 << 16, "trusted addresses")?;
    for _ in 0..n {
        failures
            .trusted
            .push((l.str(64, "trusted key")?, Duration::from_millis(l.u64()?)));
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
pub(crate) fn decode(
    buf: &[u8],
    registry: &Registry,
    now: Instant,
) -> Result<Decoded, FormatError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::table;
    use crate::sessions::tombstones::Cause;
    use crate::upgrade::format::VERSION;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/state-v1.bin");
    const FIXTURE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1.bin");

    /// The state the committed fixture holds: two sessions (one with a wrapped ring and a
    /// half-read escape sequence), an orphan, a tombstone, counters and a limiter entry.
    fn fixture_state() -> Vec<u8> {
        let a = Session::fixture("alpha", "local", 3, 4101)
            .with_output(b"\x1b]2;build\x07\x1b[?25l$ make\r\nok\r\n\x1b[1");
        let now = a.last_seen();
        let mut wrapped = Vec::new();
        for i in 0..40 {
            wrapped.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let b = Session::fixture("beta", "ann", 7, 4102).with_output(&wrapped);
        let t = table::fixture(vec![a, b], &[4099], "gone", now);
        let counters = Counters {
            sessions_reaped: 1,
            sessions_dropped: 2,
            sessions_refused: 3,
            connections_refused: 4,
            upgrades: 5,
            ..Counters::default()
        };
        let parts = Parts {
            listener_fd: 3,
            table: &t,
            counters: &counters,
            auth_failures: 6,
            failures: LimiterState {
                by_ip: vec![("127.0.0.1".into(), 4, Duration::from_secs(2))],
                global: Some((9, Duration::from_secs(3))),
                trusted: vec![("10.0.0.0".into(), Duration::from_secs(7))],
            },
            ttl: Duration::from_secs(60),
            uptime: Duration::from_secs(3600),
        };
        encode(&parts, now)
    }

    #[test]
    fn the_writer_still_writes_the_committed_v1_fixture() {
        let now = fixture_state();
        if std::env::var_os("KEEPTY_WRITE_FIXTURE").is_some() {
            std::fs::write(FIXTURE_PATH, &now).unwrap();
        }
        assert_eq!(
            now, FIXTURE,
            "the layout changed: bump VERSION, document it in docs/upgrade.md, keep reading v1"
        );
    }

    #[test]
    fn the_v1_fixture_is_read() {
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let head = decode_head(FIXTURE).unwrap();
        assert_eq!(head.listener_fd, 3);
        assert_eq!(head.auth_failures, 6);
        assert_eq!(head.uptime, Duration::from_secs(3600));
        assert_eq!(
            head.failures.by_ip,
            vec![("127.0.0.1".to_string(), 4, Duration::from_secs(2))]
        );
        assert_eq!(head.failures.global, Some((9, Duration::from_secs(3))));
        assert_eq!(
            head.failures.trusted,
            vec![("10.0.0.0".to_string(), Duration::from_secs(7))]
        );
        let c = &head.counters;
        assert_eq!(
            (c.sessions_reaped, c.sessions_dropped, c.upgrades),
            (1, 2, 5)
        );
        let d = decode(FIXTURE, poll.registry(), now).unwrap();
        let t = &d.table;
        assert_eq!(t.len(), 2);
        let a = t.get(t.find("alpha").unwrap()).unwrap();
        assert_eq!((a.owner(), a.pid(), a.generation()), ("local", 4101, 3));
        assert_eq!(a.modes().title(), b"build");
        assert_eq!(a.ring().end(), 31);
        let b = t.get(t.find("beta").unwrap()).unwrap();
        assert_eq!(b.owner(), "ann");
        assert!(b.ring().start() > 0, "the ring wrapped");
        let (a_tail, b_tail) = b.ring().read_at(b.ring().end() - 9).unwrap();
        assert_eq!([a_tail, b_tail].concat(), b"line 39\r\n");
        assert_eq!(t.orphans(), &[4099]);
        assert_eq!(t.ended("gone").map(|g| g.cause), Some(Cause::Dropped));
        assert_eq!(t.ended("gone").map(|g| g.owner.as_str()), Some("local"));
        assert!(
            d.rearm
                .iter()
                .all(|r| r.ttl_left == Duration::from_secs(60))
        );
        assert_eq!(
            t.get(t.find("alpha").unwrap()).map(Session::last_seen),
            Some(now),
            "idle 0 when written"
        );
    }

    #[test]
    fn a_newer_format_is_refused_by_name_and_a_cut_one_is_an_error() {
        let mut newer = FIXTURE.to_vec();
        newer[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let e = decode_head(&newer).err().unwrap();
        assert!(
            e.0.contains(&format!("state format {}", VERSION + 1)),
            "{e}"
        );
        let poll = mio::Poll::new().unwrap();
        for cut in [0, 11, 20, FIXTURE.len() / 2, FIXTURE.len() - 1] {
            assert!(decode(&FIXTURE[..cut], poll.registry(), Instant::now()).is_err());
        }
    }
}
