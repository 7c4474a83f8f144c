//! A session: one PTY and its process, the ring that stores its output, the clients attached
//! to it, and the metadata the admin list shows. No sockets and no clock here: the event loop
//! passes time in and moves bytes between sessions and connections; the session answers the
//! questions about itself (where a reconnect starts, whether it takes input, whether it may
//! be freed) and owns its lifecycle.

use std::fmt;
use std::io;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::api::protocol::{ErrorCode, ProtoError};
use crate::config::AttachPolicy;
use crate::limits::{INPUT_CAP, READ_PASS};
use crate::sessions::cgroup::Cgroup;
use crate::sessions::checkpoint::Checkpoints;
use crate::sessions::modes::ModeTracker;
use crate::sessions::policy::{Admission, Seats};
use crate::sessions::pty::{self, ExitStatus, Pty};
use crate::sessions::ring::Ring;

/// Where a session is in its life. Output ends (the PTY reports end of file) and the process
/// is reaped (SIGCHLD) in either order; the session has `exited` once both happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The process runs and its output flows.
    Running,
    /// The process was reaped; what it wrote before it died is still being read.
    Draining {
        /// How it ended.
        exit: ExitStatus,
    },
    /// Output ended (the terminal hung up) while the process is not reaped yet.
    Hungup,
    /// The process is gone and every byte of its output is in the ring.
    Exited {
        /// How it ended.
        exit: ExitStatus,
        /// A client has been sent the last byte and `exited`: once nobody is attached the
        /// session may be freed.
        seen: bool,
    },
}

impl State {
    /// The state after the child was reaped.
    fn on_reaped(self, exit: ExitStatus) -> State {
        match self {
            State::Running => State::Draining { exit },
            State::Hungup => State::Exited { exit, seen: false },
            other => other,
        }
    }

    /// The state after the PTY's output ended.
    fn on_output_end(self) -> State {
        match self {
            State::Running => State::Hungup,
            State::Draining { exit } => State::Exited { exit, seen: false },
            other => other,
        }
    }

    /// The state after a client was sent the end.
    fn on_end_seen(self) -> State {
        match self {
            State::Exited { exit, .. } => State::Exited { exit, seen: true },
            other => other,
        }
    }

    /// How the process ended, once it was reaped.
    pub fn exit(self) -> Option<ExitStatus> {
        match self {
            State::Draining { exit } | State::Exited { exit, .. } => Some(exit),
            State::Running | State::Hungup => None,
        }
    }

    /// True while output may still come from the PTY.
    pub fn output_open(self) -> bool {
        matches!(self, State::Running | State::Draining { .. })
    }

    /// The name the admin list shows (SPEC 2): `running` until every byte is in the ring.
    pub fn name(self) -> &'static str {
        match self {
            State::Exited { .. } => "exited",
            _ => "running",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Draining { .. } => "draining",
            State::Hungup => "hung up",
            State::Exited { seen: false, .. } => "exited",
            State::Exited { seen: true, .. } => "exited, end seen",
        })
    }
}

/// Where a client's output starts, as the `attached` message tells it.
#[derive(Debug, PartialEq, Eq)]
pub struct StartPoint {
    /// The offset of the first byte the client is sent.
    pub offset: u64,
    /// Bytes after the client's `since` it will never see.
    pub lost: u64,
    /// Escape sequences that put a blank terminal into the modes in force at `offset`, when
    /// the replay does not start at the client's own place.
    pub restore: Option<String>,
}

/// One persistent shell.
pub struct Session {
    id: String,
    owner: String,
    /// Distinguishes this session from a later one in the same slab slot.
    generation: u64,
    /// The terminal; `None` once output ended and the master was closed.
    pty: Option<Pty>,
    /// The child's pid (also its process group and session id).
    pid: i32,
    /// Every process the session started, where cgroups are available: dropped with the
    /// session, it kills what is left ([`Cgroup`]'s drop).
    cgroup: Option<Cgroup>,
    ring: Ring,
    modes: ModeTracker,
    checkpoints: Checkpoints,
    seats: Seats,
    /// Unix seconds.
    created_at: u64,
    /// Last client activity (monotonic).
    last_seen: Instant,
    cols: u16,
    rows: u16,
    /// The master had data when we last stopped reading (edge-triggered: remember it).
    pty_readable: bool,
    /// The master took input when we last stopped writing.
    pty_writable: bool,
    state: State,
    input: Vec<u8>,
}

impl Session {
    /// A session around a freshly spawned PTY.
    pub fn new(
        id: String,
        owner: String,
        generation: u64,
        mut pty: Pty,
        scrollback: usize,
        (cols, rows): (u16, u16),
        (now, now_unix): (Instant, u64),
    ) -> Session {
        let mut s = Session::detached(id, owner, generation, scrollback, (now, now_unix));
        s.pid = pty.pid();
        // The cgroup outlives the terminal: it goes with the session, whose end is its end.
        s.cgroup = pty.take_cgroup();
        s.pty = Some(pty);
        (s.cols, s.rows) = (cols, rows);
        s
    }

    /// A session with no terminal: the start of [`Session::new`], and the fixtures of tests.
    fn detached(
        id: String,
        owner: String,
        generation: u64,
        scrollback: usize,
        (now, now_unix): (Instant, u64),
    ) -> Session {
        Session {
            id,
            owner,
            generation,
            pid: 0,
            pty: None,
            cgroup: None,
            ring: Ring::new(scrollback),
            modes: ModeTracker::new(),
            checkpoints: Checkpoints::new(scrollback),
            seats: Seats::new(),
            created_at: now_unix,
            last_seen: now,
            cols: 80,
            rows: 24,
            pty_readable: true,
            pty_writable: true,
            state: State::Running,
            input: Vec::new(),
        }
    }

    /// A session without a terminal, for the tests of code that holds sessions.
    #[cfg(test)]
    pub(crate) fn fixture(id: &str, owner: &str, generation: u64, pid: i32) -> Session {
        let mut s = Session::detached(id.into(), owner.into(), generation, 64, (Instant::now(), 0));
        s.pid = pid;
        s
    }

    /// Stable id (URL-safe).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user that created it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Tells this session from a later one in the same slot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The child's pid, which is also its process group and session id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// All output, addressed by absolute offset.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The terminal modes in force now (title, alternate screen).
    pub fn modes(&self) -> &ModeTracker {
        &self.modes
    }

    /// Unix seconds at creation.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Last client activity.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// Terminal columns and rows.
    pub fn size(&self) -> (u16, u16) {
        (self.cols, self.rows)
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The one place the state changes, so every transition is logged.
    fn set_state(&mut self, state: State) {
        if self.state != state {
            eprintln!(
                "keepty: session {} {} -> {}{}",
                self.id,
                self.state,
                state,
                match state.exit() {
                    Some(ExitStatus { code: Some(c), .. }) => format!(" (exit code {c})"),
                    Some(ExitStatus {
                        signal: Some(s), ..
                    }) => format!(" (signal {s})"),
                    _ => String::new(),
                }
            );
            self.state = state;
        }
    }

    /// How the process ended, once it was reaped.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.state.exit()
    }

    /// True until the process is reaped.
    pub fn is_alive(&self) -> bool {
        self.exit().is_none()
    }

    /// The child was reaped. What it wrote before it died is drained before the exit is
    /// reported, so the terminal is marked readable.
    pub fn on_reaped(&mut self, exit: ExitStatus) {
        self.set_state(self.state.on_reaped(exit));
        self.pty_readable = true;
    }

    /// A client was sent the last byte and `exited`.
    pub fn on_end_seen(&mut self) {
        self.set_state(self.state.on_end_seen());
    }

    /// An exited session whose end a client has seen, and that nobody watches, is done.
    pub fn may_free(&self) -> bool {
        matches!(self.state, State::Exited { seen: true, .. }) && self.seats.is_empty()
    }

    /// The terminal, once output has ended, for the caller to deregister before it closes.
    pub fn take_closed_pty(&mut self) -> Option<Pty> {
        if self.state.output_open() {
            return None;
        }
        self.close_pty()
    }

    /// Drops the terminal at once (teardown); queued input has nowhere to go.
    pub fn close_pty(&mut self) -> Option<Pty> {
        self.input.clear();
        self.pty.take()
    }

    /// The session's cgroup, taken at teardown so it can outlive the session until its
    /// processes' kill is due.
    pub fn take_cgroup(&mut self) -> Option<Cgroup> {
        self.cgroup.take()
    }

    /// SIGKILLs everything the session started: its cgroup where it has one, else its
    /// process groups and session (the bounded /proc scan).
    pub fn kill_all(&self) {
        match &self.cgroup {
            Some(cg) => cg.kill(),
            None if self.is_alive() => pty::signal_session(self.pid, Signal::SIGKILL),
            None => {}
        }
    }

    /// Sends SIGHUP to a live process's groups and to everything in its cgroup (shutdown).
    pub fn hang_up(&self) {
        if let Some(cg) = &self.cgroup {
            cg.signal(Signal::SIGHUP);
        } else if self.is_alive() {
            if let Some(pty) = &self.pty {
                pty.signal_group(Signal::SIGHUP);
            }
            pty::signal_session(self.pid, Signal::SIGHUP);
        }
    }

    // ---- attaching -----------------------------------------------------------------------

    /// Attached connection keys, oldest first.
    pub fn clients(&self) -> &[usize] {
        self.seats.clients()
    }

    /// The client whose input and resizes reach the PTY.
    pub fn writer(&self) -> Option<usize> {
        self.seats.writer()
    }

    /// True while any client is attached.
    pub fn is_attached(&self) -> bool {
        !self.seats.is_empty()
    }

    /// Seats client `k` under `policy`.
    pub fn admit(&mut self, policy: AttachPolicy, k: usize) -> Admission {
        self.seats.admit(policy, k)
    }

    /// Client `k` left; returns the viewer promoted to writer, if any.
    pub fn leave(&mut self, policy: AttachPolicy, k: usize) -> Option<usize> {
        self.seats.leave(policy, k)
    }

    /// Client `k` asks for the keyboard; `Some(old writer)` if it moved.
    pub fn take_control(&mut self, policy: AttachPolicy, k: usize) -> Option<Option<usize>> {
        self.seats.take_control(policy, k)
    }

    /// Where output for a client that has `since` starts. A client that keeps its own place
    /// gets no restore; any other starts at a clean point, with the modes in force there (the
    /// replay takes it to the current ones). A `since` past the end is the client's mistake.
    pub fn start_point(&self, since: Option<u64>) -> Result<StartPoint, ProtoError> {
        let end = self.ring.end();
        match since {
            Some(since) if since > end => Err(ProtoError::new(
                ErrorCode::BadRequest,
                format!("since {since} is past the end of output ({end})"),
            )),
            Some(since) if since >= self.ring.start() => Ok(StartPoint {
                offset: since,
                lost: 0,
                restore: None,
            }),
            _ => {
                let (at, modes) = self.checkpoints.replay_point(&self.ring, &self.modes);
                Ok(StartPoint {
                    offset: at,
                    lost: at - since.unwrap_or(0),
                    restore: Some(self.modes.restore_sequence_for(&modes)),
                })
            }
        }
    }

    /// A writer's size. The kernel signals a resize only when the size really changes.
    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        let changed = (cols, rows) != (self.cols, self.rows);
        (self.cols, self.rows) = (cols, rows);
        match &self.pty {
            Some(pty) if changed => pty.resize(cols, rows),
            _ => Ok(()),
        }
    }

    /// Tells the foreground program to repaint, even when the size did not change.
    pub fn redraw(&self) {
        if let Some(pty) = &self.pty {
            pty.nudge_redraw();
        }
    }

    /// Records a client's activity.
    pub fn touch(&mut self, now: Instant) {
        if now > self.last_seen {
            self.last_seen = now;
        }
    }

    // ---- input ---------------------------------------------------------------------------

    /// The one backpressure rule for input: the writer is not read while the terminal has not
    /// taken its earlier input, so the queue never holds more than `INPUT_RESERVE` (the next
    /// message could be input). A process that is gone takes nothing and blocks nobody.
    pub fn input_full(&self) -> bool {
        self.is_alive() && self.input.len() >= INPUT_CAP
    }

    /// Queues input for the PTY and writes what the terminal takes now. Input arriving
    /// after the process is gone or the terminal closed has nobody to read it.
    pub fn send_input(&mut self, data: &[u8]) -> io::Result<()> {
        if self.state != State::Running || self.pty.is_none() {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        self.flush_input()
    }

    /// True if input waits and the terminal may take some now.
    pub fn wants_flush(&self) -> bool {
        self.pty_writable && !self.input.is_empty()
    }

    /// Writes queued input until the terminal stops taking it.
    pub fn flush_input(&mut self) -> io::Result<()> {
        let Some(pty) = &self.pty else {
            self.input.clear();
            return Ok(());
        };
        let mut done = 0;
        let mut result = Ok(());
        while done < self.input.len() {
            match pty.write(&self.input[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pty_writable = false;
                    break;
                }
                Err(e) => {
                    // EIO: the terminal is closing; input has nowhere to go.
                    done = self.input.len();
                    result = Err(e);
                }
            }
        }
        self.input.drain(..done);
        if self.input.capacity() > INPUT_CAP * 2 && self.input.is_empty() {
            self.input = Vec::new();
        }
        result
    }

    // ---- output --------------------------------------------------------------------------

    /// The master fd reported readiness: reading and writing find out which.
    pub fn on_pty_event(&mut self) {
        self.pty_readable = true;
        self.pty_writable = true;
    }

    /// True if output may be waiting in the PTY.
    pub fn wants_read(&self) -> bool {
        self.pty_readable && self.state.output_open()
    }

    /// Reads output into the ring, at most `budget` bytes (what may be written without
    /// overwriting bytes a client still needs). Stops at `WouldBlock`, end of output, the
    /// budget, or [`READ_PASS`]; the session stays readable whenever it stopped with data
    /// possibly left. Returns the bytes added.
    pub fn read_output(&mut self, budget: u64) -> io::Result<usize> {
        let mut bytes = 0;
        let limit = budget.min(READ_PASS as u64) as usize;
        while self.wants_read() && bytes < limit {
            let Some(pty) = &self.pty else {
                break;
            };
            let slot = self.ring.write_slot();
            let want = slot.len().min(limit - bytes);
            match pty.read(&mut slot[..want]) {
                Ok(0) => self.set_state(self.state.on_output_end()),
                Ok(n) => {
                    self.checkpoints.feed(&mut self.modes, &slot[..n]);
                    self.ring.commit(n);
                    self.checkpoints.after_write(&mut self.ring, &self.modes);
                    bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pty_readable = false;
                    // The process is gone and its output drained: what a background job
                    // might still write is cut off, as when a terminal window closes.
                    if !self.is_alive() {
                        self.set_state(self.state.on_output_end());
                    }
                }
                Err(e) => {
                    self.set_state(self.state.on_output_end());
                    return Err(e);
                }
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT0: ExitStatus = ExitStatus {
        code: Some(0),
        signal: None,
    };

    /// A session without a terminal, in `state`, with `output` in its ring.
    fn fixture(state: State, output: &[u8]) -> Session {
        let mut s = Session::detached("s".into(), "local".into(), 1, 64, (Instant::now(), 0));
        s.checkpoints.feed(&mut s.modes, output);
        s.ring.push(output);
        s.checkpoints.after_write(&mut s.ring, &s.modes);
        s.state = state;
        s
    }

    fn running() -> Session {
        fixture(State::Running, b"hello")
    }

    fn exited(seen: bool) -> Session {
        fixture(State::Exited { exit: EXIT0, seen }, b"bye")
    }

    #[test]
    fn reaped_and_hung_up_in_either_order_is_exited() {
        let end = State::Exited {
            exit: EXIT0,
            seen: false,
        };
        assert_eq!(State::Running.on_reaped(EXIT0).on_output_end(), end);
        assert_eq!(State::Running.on_output_end().on_reaped(EXIT0), end);
        assert_eq!(
            end.on_end_seen(),
            State::Exited {
                exit: EXIT0,
                seen: true
            }
        );
        // Only an exited session can have its end seen; repeats change nothing.
        assert_eq!(State::Running.on_end_seen(), State::Running);
        assert_eq!(end.on_reaped(EXIT0), end);
        assert_eq!(State::Hungup.on_output_end(), State::Hungup);
    }

    #[test]
    fn state_names_follow_spec() {
        assert_eq!(State::Running.name(), "running");
        assert_eq!(State::Draining { exit: EXIT0 }.name(), "running");
        assert_eq!(State::Hungup.name(), "running");
        assert_eq!(exited(false).state().name(), "exited");
    }

    #[test]
    fn only_a_seen_unwatched_end_is_freed() {
        assert!(!running().may_free());
        assert!(!exited(false).may_free());
        let mut s = exited(true);
        assert!(s.may_free());
        s.admit(AttachPolicy::Handoff, 7);
        assert!(!s.may_free(), "a client still watches");
        let mut s = exited(false);
        s.on_end_seen();
        assert!(s.may_free());
    }

    #[test]
    fn start_point_at_the_clients_place_or_a_clean_replay() {
        let s = running();
        assert_eq!(
            s.start_point(Some(2)),
            Ok(StartPoint {
                offset: 2,
                lost: 0,
                restore: None
            })
        );
        assert_eq!(s.start_point(Some(5)).map(|p| p.offset), Ok(5));
        let e = s.start_point(Some(6)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        // A fresh page starts at the oldest clean point, with a restore string.
        let p = s.start_point(None).unwrap();
        assert_eq!((p.offset, p.lost), (0, 0));
        assert!(p.restore.is_some());
    }

    #[test]
    fn start_point_after_the_ring_wrapped_counts_what_is_lost() {
        let s = fixture(State::Running, &[b'x'; 200]);
        let start = s.ring().start();
        assert!(start > 0);
        let p = s.start_point(Some(10)).unwrap();
        assert!(p.offset >= start);
        assert_eq!(p.lost, p.offset - 10);
        assert!(p.restore.is_some());
    }

    #[test]
    fn input_backpressure_only_while_the_process_lives() {
        let mut s = running();
        assert!(!s.input_full());
        s.input.resize(INPUT_CAP, b'a');
        assert!(s.input_full());
        s.state = State::Draining { exit: EXIT0 };
        assert!(
            !s.input_full(),
            "a reaped process must not pause its writer"
        );
    }

    #[test]
    fn input_after_the_end_goes_nowhere() {
        let mut s = exited(false);
        s.send_input(b"ls\r").unwrap();
        assert!(!s.wants_flush());
        assert!(s.take_closed_pty().is_none());
    }

    #[test]
    fn a_writer_resize_is_remembered() {
        let mut s = running();
        s.resize(120, 40).unwrap();
        assert_eq!(s.size(), (120, 40));
    }

    #[test]
    fn output_is_read_only_while_it_may_come() {
        let mut s = running();
        assert!(s.wants_read());
        s.set_state(State::Hungup);
        assert!(!s.wants_read());
        assert_eq!(s.read_output(1024).unwrap(), 0);
    }
}
