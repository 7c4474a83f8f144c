//! Every session the server holds, found by slot, id or child pid, and what is left of the
//! ones that ended: their tombstones, and the children of torn-down sessions still to be
//! killed and reaped. The event loop decides when sessions come and go; this keeps the
//! indexes consistent with the slab whatever the order of events.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry};
use nix::sys::signal::Signal;
use slab::Slab;

use crate::access::account::Account;
use crate::api::protocol::{self, ErrorCode, ProtoError};
use crate::sessions::cgroup::Cgroup;
use crate::sessions::pty::{self, Launch, Pty};
use crate::sessions::ring::Ring;
use crate::sessions::session::{Restored, Session};
use crate::sessions::tombstones::{Cause, Tombstone, Tombstones};
use crate::token;
use crate::upgrade::format::{FormatError, Reader, Writer};

/// What a new session is made of.
pub struct Spawn<'a> {
    /// The id asked for; a random one without.
    pub id: Option<&'a str>,
    /// The user creating it.
    pub owner: &'a str,
    /// The program and its arguments.
    pub command: &'a [String],
    /// The unix account it runs as; `None`: keepty's own.
    pub account: Option<&'a Account>,
    /// Columns and rows.
    pub size: (u16, u16),
    /// Its ring, bytes.
    pub scrollback: usize,
}

/// The session table.
#[derive(Default)]
pub struct Table {
    slab: Slab<Session>,
    ids: HashMap<String, usize>,
    /// Children not yet reaped, by pid: the leaders of live sessions.
    pids: HashMap<i32, usize>,
    /// Leaders of sessions already torn down, awaiting SIGKILL and reaping.
    orphans: Vec<i32>,
    /// The cgroups of sessions torn down, by leader pid, until their SIGKILL is due.
    dying: Vec<(i32, Cgroup)>,
    tombstones: Tombstones,
    generation: u64,
}

/// A session taken out of the table for good.
pub struct Ended {
    /// What it was.
    pub session: Session,
    /// Its leader was not reaped yet: its pid is still ours to signal, and it is an orphan
    /// until it is reaped.
    pub leader_alive: bool,
}

impl Table {
    /// Sessions alive (running or exited but not freed).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Remembered ids of sessions that ended.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// The session in slot `k`.
    pub fn get(&self, k: usize) -> Option<&Session> {
        self.slab.get(k)
    }

    /// The session in slot `k`, to change.
    pub fn get_mut(&mut self, k: usize) -> Option<&mut Session> {
        self.slab.get_mut(k)
    }

    /// The session a client is bound to, if it is still the same one (not a later session
    /// in the same slot).
    pub fn bound(&self, (k, generation): (usize, u64)) -> Option<&Session> {
        self.slab.get(k).filter(|s| s.generation() == generation)
    }

    /// The slot of session `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    /// Every session, with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slab.iter()
    }

    /// Every slot, for a loop that changes the table as it goes.
    pub fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(k, _)| k).collect()
    }

    /// Sessions `owner` holds.
    pub fn count_owned(&self, owner: &str) -> usize {
        self.slab.iter().filter(|(_, s)| s.owner() == owner).count()
    }

    /// Whether `owner` may have one more session under `--max-sessions` and its token's own
    /// cap. The memory cap is the caller's to check.
    pub fn may_create(
        &self,
        owner: &str,
        owner_max: Option<usize>,
        max_sessions: usize,
    ) -> Result<(), ProtoError> {
        if self.slab.len() >= max_sessions {
            return Err(ProtoError::new(
                ErrorCode::Limit,
                format!("the server's session limit is reached (--max-sessions {max_sessions})"),
            ));
        }
        if let Some(max) = owner_max
            && self.count_owned(owner) >= max
        {
            return Err(ProtoError::new(
                ErrorCode::Limit,
                format!("your token's session limit ({max}) is reached"),
            ));
        }
        Ok(())
    }

    /// Starts the program of `spawn` on a new terminal, watched by `registry`; the new
    /// session's slot and generation.
    pub fn spawn(
        &mut self,
        spawn: Spawn<'_>,
        registry: &Registry,
        now: (Instant, u64),
    ) -> Result<(usize, u64), ProtoError> {
        let internal = |m: String| ProtoError::new(ErrorCode::Internal, m);
        let id = match spawn.id {
            Some(id) => id.to_string(),
            None => random_id().map_err(|e| internal(format!("no randomness: {e}")))?,
        };
        let (cols, rows) = spawn.size;
        // The ring first: a mapping the kernel refuses costs no process to kill.
        let ring = Ring::new(spawn.scrollback).map_err(|e| {
            ProtoError::new(
                ErrorCode::Memory,
                format!("cannot map {} bytes of scrollback: {e}", spawn.scrollback),
            )
        })?;
        let pty = Pty::spawn(&Launch {
            argv: spawn.command,
            size: spawn.size,
            account: spawn.account,
            id: &id,
        })
        .map_err(|e| internal(format!("could not start {}: {e}", spawn.command[0])))?;
        let (key, generation) = (self.slab.vacant_key(), self.generation + 1);
        let fd: RawFd = pty.raw_fd();
        if let Err(e) = registry.register(
            &mut SourceFd(&fd),
            token::pty(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            pty.signal_group(Signal::SIGKILL);
            return Err(internal(format!("cannot watch the terminal: {e}")));
        }
        let s = Session::new(
            id,
            spawn.owner.to_string(),
            generation,
            pty,
            ring,
            spawn.size,
            now,
        );
        eprintln!(
            "keepty: session {} created (pid {}, {cols}x{rows})",
            s.id(),
            s.pid()
        );
        Ok((self.insert(s), generation))
    }

    /// Adds a session; an id that ended before is no longer remembered as ended.
    fn insert(&mut self, s: Session) -> usize {
        self.generation = s.generation();
        self.tombstones.remove(s.id());
        let id = s.id().to_string();
        let pid = s.pid();
        let k = self.slab.insert(s);
        self.ids.insert(id, k);
        self.pids.insert(pid, k);
        k
    }

    /// Why `id` is gone and whose it was, if it ended within the tombstones' memory.
    pub fn ended(&self, id: &str) -> Option<&Tombstone> {
        self.tombstones.get(id)
    }

    /// A child was reaped: the slot of the session it led, if it led one.
    pub fn on_reaped(&mut self, pid: i32) -> Option<usize> {
        self.orphans.retain(|&p| p != pid);
        self.pids.remove(&pid)
    }

    /// True while `pid` leads a live session (a pid reused by a new session must not be
    /// signalled for an old one).
    pub fn leads_a_session(&self, pid: i32) -> bool {
        self.pids.contains_key(&pid)
    }

    /// Leaders of torn-down sessions not reaped yet.
    pub fn orphans(&self) -> &[i32] {
        &self.orphans
    }

    /// Frees a session that ended by itself (its end seen).
    pub fn free(&mut self, k: usize) -> Option<Session> {
        let mut s = self.slab.try_remove(k)?;
        self.ids.remove(s.id());
        if let Some(cg) = s.take_cgroup() {
            cg.release();
        }
        Some(s)
    }

    /// Removes session `k` for good and remembers its id as ended by `cause`.
    pub fn end(&mut self, k: usize, cause: Cause, now: Instant) -> Option<Ended> {
        let session = self.slab.try_remove(k)?;
        self.ids.remove(session.id());
        // Only while the leader lives is its pid surely ours to address by session: once it
        // is reaped (an exited session), the terminal's hangup has already reached the rest,
        // and the number may belong to somebody else by now.
        let leader_alive = self.pids.remove(&session.pid()).is_some();
        if leader_alive {
            self.orphans.push(session.pid());
        }
        self.tombstones
            .add(session.id(), session.owner(), cause, now);
        Some(Ended {
            session,
            leader_alive,
        })
    }

    /// Forgets tombstones that are due; the next one's expiry, if any.
    pub fn expire_tombstones(&mut self, now: Instant) -> Option<Instant> {
        self.tombstones.expire(now);
        self.tombstones.next_expiry()
    }

    /// Keeps a torn-down session's cgroup until its kill is due ([`Table::take_dying`]).
    pub fn hold_until_killed(&mut self, sid: i32, cg: Cgroup) {
        self.dying.push((sid, cg));
    }

    /// The cgroup of torn-down session `sid`, whose kill is due: dropping it kills them all.
    pub fn take_dying(&mut self, sid: i32) -> Option<Cgroup> {
        let i = self.dying.iter().position(|(s, _)| *s == sid)?;
        Some(self.dying.swap_remove(i).1)
    }

    /// True if torn-down session `sid` has a cgroup to kill (no /proc scan needed).
    pub fn has_cgroup(&self, sid: i32) -> bool {
        self.dying.iter().any(|(s, _)| *s == sid)
    }

    /// Shutdown: kills what is left of every torn-down session with a cgroup.
    pub fn kill_dying(&mut self) {
        self.dying.clear();
    }

    /// True once no session's process and no orphan is left to reap.
    pub fn all_reaped(&self) -> bool {
        self.orphans.is_empty() && self.slab.iter().all(|(_, s)| !s.is_alive())
    }
}

/// A session brought back by [`Table::from_record`], whose TTL the caller re-arms.
pub struct Rearm {
    /// Its slot.
    pub key: usize,
    /// Its generation.
    pub generation: u64,
    /// What was left of its TTL.
    pub ttl_left: std::time::Duration,
}

impl Table {
    /// Writes the table for an upgrade: the generation counter, the tombstones, the orphans
    /// still to be killed, and every session (each in a section of its own, so one that a
    /// reader cannot take does not cost the others).
    pub fn to_record(
        &self,
        w: &mut Writer,
        now: Instant,
        ttl_left: impl Fn(&Session) -> std::time::Duration,
    ) {
        w.u64(self.generation);
        w.section(|w| self.tombstones.to_record(w, now));
        w.count(self.orphans.len());
        for &pid in &self.orphans {
            w.i32(pid);
        }
        w.count(self.slab.len());
        for (_, s) in self.slab.iter() {
            w.section(|w| s.to_record(w, now, ttl_left(s)));
        }
    }

    /// Every PTY master, to be kept open across the exec.
    pub fn pty_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.slab
            .iter()
            .filter_map(|(_, s)| s.pty())
            .map(Pty::as_fd)
    }

    /// Rebuilds the table from [`Table::to_record`] after the exec, adopting each PTY master
    /// and registering it with `registry`. A session whose record cannot be read is hung up
    /// (its master closed, its processes sent SIGHUP and left to be killed and reaped as
    /// orphans) and logged: nobody could serve it, and its shell must not linger unseen.
    /// Only a table whose frame is unreadable is an error.
    pub fn from_record(
        r: &mut Reader<'_>,
        registry: &Registry,
        now: Instant,
    ) -> Result<(Table, Vec<Rearm>), FormatError> {
        let mut t = Table {
            generation: r.u64()?,
            ..Table::default()
        };
        t.tombstones = Tombstones::from_record(&mut r.section()?, now)?;
        let n = r.count(1 << 16, "orphans")?;
        for _ in 0..n {
            t.orphans.push(r.i32()?);
        }
        let n = r.count(1 << 16, "sessions")?;
        let mut rearm = Vec::with_capacity(n);
        for _ in 0..n {
            let mut rec = r.section()?;
            let mut head = Reader::new(rec.rest());
            match Session::from_record(&mut rec, now) {
                Ok(back) => match t.adopt(back, registry) {
                    Ok(a) => rearm.push(a),
                    Err((pid, why)) => t.hang_up_unreadable(pid, None, &why),
                },
                Err(e) => match Session::record_head(&mut head) {
                    Ok((pid, fd)) => t.hang_up_unreadable(pid, fd, &e.0),
                    Err(_) => eprintln!("keepty: upgrade: a session record is unreadable: {e}"),
                },
            }
        }
        Ok((t, rearm))
    }

    fn adopt(&mut self, back: Restored, registry: &Registry) -> Result<Rearm, (i32, String)> {
        let mut s = back.session;
        let pid = s.pid();
        if self.ids.contains_key(s.id()) {
            return Err((pid, format!("a second session named {}", s.id())));
        }
        let key = self.slab.vacant_key();
        if let Some(fd) = back.pty_fd {
            // SAFETY: the fd was this session's master in the process before the exec, which
            // left it open for us; the state names each master once (checked by the kernel's
            // answer below: a closed or reused number fails to register or is not a tty).
            let pty = unsafe { Pty::adopt(fd, pid) }.map_err(|e| (pid, e.to_string()))?;
            let raw = pty.raw_fd();
            if !nix::unistd::isatty(pty.as_fd()).unwrap_or(false) {
                return Err((pid, format!("fd {raw} is not a terminal")));
            }
            registry
                .register(
                    &mut SourceFd(&raw),
                    token::pty(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| (pid, format!("cannot watch the terminal: {e}")))?;
            s.adopt_pty(pty);
        }
        let generation = s.generation();
        let alive = s.is_alive();
        let id = s.id().to_string();
        let k = self.slab.insert(s);
        self.ids.insert(id, k);
        if alive {
            self.pids.insert(pid, k);
        }
        self.generation = self.generation.max(generation);
        Ok(Rearm {
            key: k,
            generation,
            ttl_left: back.ttl_left,
        })
    }

    /// A session that came across the exec but cannot be served: its processes are hung up
    /// and killed later as orphans; the master, if known, is closed.
    fn hang_up_unreadable(&mut self, pid: i32, fd: Option<i32>, why: &str) {
        eprintln!(
            "keepty: upgrade: ERROR: session of pid {pid} cannot be restored ({why}); hanging it up"
        );
        if let Some(fd) = fd {
            // SAFETY: the master was inherited for this session alone and nothing else in
            // this process took the number; closing it hangs the terminal up.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if pid > 1 {
            pty::signal_session(pid, Signal::SIGHUP);
            self.orphans.push(pid);
        }
    }
}

/// A table of `sessions`, with `orphans` and one tombstone, for the tests of code that holds
/// tables.
#[cfg(test)]
pub(crate) fn fixture(
    sessions: Vec<Session>,
    orphans: &[i32],
    dropped: &str,
    now: Instant,
) -> Table {
    let mut t = Table::default();
    for s in sessions {
        t.insert(s);
    }
    t.orphans.extend_from_slice(orphans);
    t.tombstones.add(dropped, "local", Cause::Dropped, now);
    t
}

fn random_id() -> std::io::Result<String> {
    Ok(protocol::encode_id(&crate::random::bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::pty::ExitStatus;

    fn table_with(ids: &[(&str, &str, i32)]) -> (Table, Vec<usize>) {
        let mut t = Table::default();
        let keys = ids
            .iter()
            .map(|(id, owner, pid)| {
                let generation = t.generation + 1;
                t.insert(Session::fixture(id, owner, generation, *pid))
            })
            .collect();
        (t, keys)
    }

    #[test]
    fn sessions_are_found_by_slot_id_and_owner() {
        let (t, k) = table_with(&[("a", "ann", 101), ("b", "bob", 102), ("c", "ann", 103)]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.find("b"), Some(k[1]));
        assert_eq!(t.count_owned("ann"), 2);
        let g = t.get(k[0]).unwrap().generation();
        assert!(t.bound((k[0], g)).is_some());
        assert!(
            t.bound((k[0], g + 100)).is_none(),
            "a later session in the slot is not it"
        );
        assert!(
            t.may_create("ann", Some(2), 32).is_err(),
            "the token's own cap"
        );
        assert!(t.may_create("bob", Some(2), 32).is_ok());
        assert!(t.may_create("bob", None, 3).is_err(), "--max-sessions");
    }

    #[test]
    fn an_ended_session_leaves_a_tombstone_and_an_orphan() {
        let (mut t, k) = table_with(&[("a", "ann", 101)]);
        let now = Instant::now();
        let ended = t.end(k[0], Cause::Dropped, now).unwrap();
        assert!(ended.leader_alive);
        assert_eq!(t.find("a"), None);
        let stone = t.ended("a").unwrap();
        assert_eq!((stone.cause, stone.owner.as_str()), (Cause::Dropped, "ann"));
        assert_eq!(t.orphans(), &[101]);
        assert!(!t.leads_a_session(101));
        assert!(!t.all_reaped(), "the orphan is not reaped yet");
        assert_eq!(t.on_reaped(101), None, "it led no session any more");
        assert!(t.orphans().is_empty() && t.all_reaped());
        assert!(
            t.end(k[0], Cause::Dropped, now).is_none(),
            "ending twice does nothing"
        );
    }

    #[test]
    fn a_reaped_leader_is_not_signalled_again() {
        let (mut t, k) = table_with(&[("a", "ann", 101)]);
        assert!(t.leads_a_session(101));
        assert_eq!(t.on_reaped(101), Some(k[0]));
        let exit = ExitStatus {
            code: Some(0),
            signal: None,
        };
        t.get_mut(k[0]).unwrap().on_reaped(exit);
        let ended = t.end(k[0], Cause::Expired, Instant::now()).unwrap();
        assert!(!ended.leader_alive, "its pid may be somebody else's by now");
        assert!(t.orphans().is_empty());
    }

    #[test]
    fn a_new_session_under_an_ended_id_forgets_the_tombstone() {
        let (mut t, k) = table_with(&[("a", "ann", 101)]);
        t.end(k[0], Cause::Expired, Instant::now());
        assert_eq!(t.tombstone_count(), 1);
        let generation = t.generation + 1;
        t.insert(Session::fixture("a", "ann", generation, 104));
        assert!(t.ended("a").is_none());
        let k = t.find("a").unwrap();
        assert_eq!(t.free(k).map(|s| s.pid()), Some(104));
        assert_eq!(t.find("a"), None);
    }
}
