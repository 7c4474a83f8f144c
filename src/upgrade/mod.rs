//! Upgrade in place (SIGUSR2 or `POST /admin/upgrade`): the running server writes its state
//! into a memfd, keeps the listener, every PTY master and that memfd open across `execve`, and
//! becomes the binary now at the path it was started from. Same PID, so the shells stay its
//! children. The layout of the state is in docs/upgrade.md.
//!
//! - [`mod@format`]: the framing (little-endian fields, sections, the version), pure.
//! - `state`: the whole server's record, written and read by the parts that own each piece.
//! - `handoff`: the system side: the binary's path, the check, the memfd, the exec.

pub mod format;
pub mod handoff;
pub(crate) mod state;

/// Reads `data` as a restore would read a session record, a ring, a mode tracker and
/// tombstones, and checks that a session record it accepts writes back to bytes that read the
/// same: the body of the `state_record` fuzz target. No file descriptor is touched (a record
/// only names its master; adopting it is the table's).
pub fn read_records(data: &[u8]) {
    use crate::sessions::modes::ModeTracker;
    use crate::sessions::ring::Ring;
    use crate::sessions::session::Session;
    use crate::sessions::tombstones::Tombstones;
    use format::{Reader, Writer};

    let now = std::time::Instant::now();
    let _ = format::declared_version(data);
    let _ = Ring::from_record(&mut Reader::new(data));
    let _ = ModeTracker::from_record(&mut Reader::new(data));
    let _ = Tombstones::from_record(&mut Reader::new(data), now);
    let write = |s: &Session, ttl| {
        let mut w = Writer::default();
        s.to_record(&mut w, now, ttl);
        w.into_bytes()
    };
    if let Ok(back) = Session::from_record(&mut Reader::new(data), now) {
        let again = write(&back.session, back.ttl_left);
        match Session::from_record(&mut Reader::new(&again), now) {
            Ok(twice) => assert_eq!(write(&twice.session, twice.ttl_left), again),
            Err(e) => panic!("a record written from an accepted one is refused: {e}"),
        }
    }
}
