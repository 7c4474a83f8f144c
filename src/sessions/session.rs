//! A session: one PTY and its process, the ring that stores its output, the clients attached
//! to it, and the metadata the admin list shows. No sockets and no clock here: the event loop
//! passes time in and moves bytes between sessions and connections; the session answers the
//! questions about itself (where a reconnect starts, whether it takes input, whether it may
//! be freed) and owns its lifecycle.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::api::protocol::{ErrorCode, ProtoError};
use crate::config::AttachPolicy;
use crate::limits::{INPUT_CAP, READ_PASS};
use crate::sessions::cgroup::Cgroup;
use crate::sessions::checkpoint::Checkpoints;
use crate::sessions::gather::Gather;
use crate::sessions::modes::ModeTracker;
use crate::sessions::offer::Offer;
use crate::sessions::policy::{Admission, Seats};
use crate::sessions::pty::{self, ExitStatus, Pty};
use crate::sessions::ring::Ring;
use crate::sessions::sample::Usage;
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

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
    /// Whether new output goes out now or gathers into a bigger frame.
    gather: Gather,
    /// The master took input when we last stopped writing.
    pty_writable: bool,
    state: State,
    input: Vec<u8>,
    /// What its processes cost, as last sampled.
    usage: Usage,
    /// After an upgrade: the first byte the writer that was attached had not been sent, kept
    /// from being overwritten until a writer attaches again or the grace runs out.
    hold: Option<u64>,
}

/// A session read back from a state file, with what the caller must rebuild around it.
pub struct Restored {
    /// The session, without its terminal: see [`Session::adopt_pty`].
    pub session: Session,
    /// The PTY master inherited across the exec, if the session still had one.
    pub pty_fd: Option<i32>,
    /// What was left of its idle TTL.
    pub ttl_left: Duration,
}

/// The longest id, owner or input a state file may hold for one session.
const MAX_ID: usize = 256;

impl Session {
    /// A session around a freshly spawned PTY.
    pub fn new(
        id: String,
        owner: String,
        generation: u64,
        mut pty: Pty,
        ring: Ring,
        (cols, rows): (u16, u16),
        (now, now_unix): (Instant, u64),
    ) -> Session {
        let mut s = Session::detached(id, owner, generation, ring, (now, now_unix));
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
        ring: Ring,
        (now, now_unix): (Instant, u64),
    ) -> Session {
        let scrollback = ring.capacity();
        Session {
            id,
            owner,
            generation,
            pid: 0,
            pty: None,
            cgroup: None,
            ring,
            modes: ModeTracker::new(),
            checkpoints: Checkpoints::new(scrollback),
            seats: Seats::new(),
            created_at: now_unix,
            last_seen: now,
            cols: 80,
            rows: 24,
            pty_readable: true,
            gather: Gather::default(),
            pty_writable: true,
            state: State::Running,
            input: Vec::new(),
            usage: Usage::default(),
            hold: None,
        }
    }

    /// A session without a terminal, for the tests of code that holds sessions.
    #[cfg(test)]
    pub(crate) fn fixture(id: &str, owner: &str, generation: u64, pid: i32) -> Session {
        let mut s = Session::detached(
            id.into(),
            owner.into(),
            generation,
            Ring::new(64).expect("a 64-byte mapping"),
            (Instant::now(), 0),
        );
        s.pid = pid;
        s
    }

    /// The fixture with `output` read, as if from its terminal.
    #[cfg(test)]
    pub(crate) fn with_output(mut self, output: &[u8]) -> Session {
        self.checkpoints.feed(&mut self.modes, output);
        self.ring.push(output);
        self.checkpoints.after_write(&mut self.ring, &self.modes);
        self
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

    /// After a read pass at `now` that took `bytes`, with `room` bytes still readable before a
    /// client must be sent something: true if the new output should wait to gather.
    pub fn gather(&mut self, now: Instant, bytes: usize, room: u64) -> bool {
        let open = self.state.output_open();
        self.gather.hold(now, bytes, self.ring.end(), room, open)
    }

    /// When output held to gather must go out.
    pub fn gather_deadline(&self) -> Option<Instant> {
        self.gather.deadline()
    }

    /// The terminal modes in force now (title, alternate screen).
    pub fn modes(&self) -> &ModeTracker {
        &self.modes
    }

    /// The latest download offer its output made (`keepty send`), once; see
    /// [`ModeTracker::take_offer`].
    pub fn take_offer(&mut self) -> Option<Offer> {
        self.modes.take_offer()
    }

    /// Unix seconds at creation.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Last client activity.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// What the session's processes cost, as last sampled.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Stores a sample of [`Session::usage`].
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = usage;
    }

    /// The terminal's foreground process group, while the terminal is open.
    pub fn foreground_group(&self) -> Option<i32> {
        self.pty.as_ref()?.foreground_group()
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
        let a = self.seats.admit(policy, k);
        if matches!(a, Admission::Writer { .. }) {
            // A writer is back: its own place protects the output from now on.
            self.hold = None;
        }
        a
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

// ---- upgrade ---------------------------------------------------------------------------

impl Session {
    /// Keeps output from `offset` on from being overwritten while nobody is attached: the
    /// writer was closed for an upgrade and will resume from there.
    pub fn hold_output(&mut self, offset: u64) {
        self.hold = Some(offset);
    }

    /// The offset held for a writer that is coming back, if any.
    pub fn held(&self) -> Option<u64> {
        self.hold
    }

    /// The writer did not come back in time: output may overwrite as usual.
    pub fn release_hold(&mut self) {
        self.hold = None;
    }

    /// The terminal, while it is open.
    pub fn pty(&self) -> Option<&Pty> {
        self.pty.as_ref()
    }

    /// The PTY master's fd, to be kept open across the exec.
    pub fn pty_fd(&self) -> Option<i32> {
        self.pty.as_ref().map(Pty::raw_fd)
    }

    /// Puts back the terminal inherited across the exec.
    pub fn adopt_pty(&mut self, pty: Pty) {
        self.pty = Some(pty);
    }

    /// Writes the session for an upgrade (layout in docs/upgrade.md). The pid and the master
    /// come first, so a reader that fails on the rest still knows what to hang up.
    pub fn to_record(&self, w: &mut Writer, now: Instant, ttl_left: Duration) {
        w.i32(self.pid);
        w.i32(self.pty_fd().unwrap_or(-1));
        w.str(&self.id);
        w.str(&self.owner);
        w.u64(self.generation);
        w.u64(self.created_at);
        w.u64(millis(now.saturating_duration_since(self.last_seen)));
        w.u64(millis(ttl_left));
        w.u16(self.cols);
        w.u16(self.rows);
        let (tag, exit, seen) = match self.state {
            State::Running => (0, None, false),
            State::Draining { exit } => (1, Some(exit), false),
            State::Hungup => (2, None, false),
            State::Exited { exit, seen } => (3, Some(exit), seen),
        };
        w.u8(tag);
        let exit = exit.unwrap_or(ExitStatus {
            code: None,
            signal: None,
        });
        w.bool(exit.code.is_some());
        w.i32(exit.code.unwrap_or(0));
        w.bool(exit.signal.is_some());
        w.i32(exit.signal.unwrap_or(0));
        w.bool(seen);
        w.u64(self.hold.unwrap_or(u64::MAX));
        w.bytes(&self.input);
        // The cgroup's directory ("" for none): the new process adopts it, so a drop after an
        // upgrade still reaches every process the session started.
        w.str(
            &self
                .cgroup
                .as_ref()
                .map(|c| c.dir().to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        w.section(|w| self.ring.to_record(w));
        w.section(|w| self.modes.to_record(w));
        w.section(|w| self.checkpoints.to_record(w));
    }

    /// The pid and master fd at the head of a record, read even when the rest is unreadable.
    pub fn record_head(r: &mut Reader<'_>) -> Result<(i32, Option<i32>), FormatError> {
        let pid = r.i32()?;
        let fd = r.i32()?;
        Ok((pid, (fd >= 0).then_some(fd)))
    }

    /// Reads a session written by [`Session::to_record`]. Its last activity is as long ago
    /// as it was when it was written: only durations cross the exec, never clock readings.
    pub fn from_record(r: &mut Reader<'_>, now: Instant) -> Result<Restored, FormatError> {
        let (pid, pty_fd) = Session::record_head(r)?;
        if pid <= 1 {
            return bad(format!("pid {pid} cannot lead a session"));
        }
        let id = r.str(MAX_ID, "id")?;
        let owner = r.str(MAX_ID, "owner")?;
        let generation = r.u64()?;
        let created_at = r.u64()?;
        let idle = Duration::from_millis(r.u64()?);
        let ttl_left = Duration::from_millis(r.u64()?);
        let (cols, rows) = (r.u16()?, r.u16()?);
        let tag = r.u8()?;
        let code = (r.bool()?, r.i32()?);
        let signal = (r.bool()?, r.i32()?);
        let exit = ExitStatus {
            code: code.0.then_some(code.1),
            signal: signal.0.then_some(signal.1),
        };
        let seen = r.bool()?;
        let state = match tag {
            0 => State::Running,
            1 => State::Draining { exit },
            2 => State::Hungup,
            3 => State::Exited { exit, seen },
            t => return bad(format!("unknown session state {t}")),
        };
        let hold = Some(r.u64()?).filter(|&h| h != u64::MAX);
        let input = r.bytes(INPUT_CAP * 2, "queued input")?.to_vec();
        let cgroup = r.str(4096, "cgroup directory")?;
        let ring = Ring::from_record(&mut r.section()?)?;
        let modes = ModeTracker::from_record(&mut r.section()?)?;
        let checkpoints = Checkpoints::from_record(&mut r.section()?)?;
        r.finish("the session record")?;
        if hold.is_some_and(|h| h > ring.end()) {
            return bad("held output past the end of the ring");
        }
        let mut s = Session::detached(id, owner, generation, ring, (now, created_at));
        s.pid = pid;
        s.modes = modes;
        s.checkpoints = checkpoints;
        s.last_seen = now.checked_sub(idle).unwrap_or(now);
        (s.cols, s.rows) = (cols, rows);
        s.state = state;
        s.input = input;
        s.hold = hold;
        s.cgroup = Cgroup::adopt(&cgroup);
        Ok(Restored {
            session: s,
            pty_fd,
            ttl_left,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        let mut s = Session::detached(
            "s".into(),
            "local".into(),
            1,
            Ring::new(64).expect("a 64-byte mapping"),
            (Instant::now(), 0),
        );
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
    fn a_record_reads_back_as_the_same_session() {
        let now = Instant::now();
        let mut s = fixture(
            State::Exited {
                exit: ExitStatus {
                    code: None,
                    signal: Some(9),
                },
                seen: false,
            },
            b"\x1b[?1049h\x1b]0;title\x07abc\x1b[3",
        );
        s.pid = 4242;
        s.input = b"typed".to_vec();
        s.hold_output(3);
        s.last_seen = now - Duration::from_secs(7);
        let mut w = Writer::default();
        s.to_record(&mut w, now, Duration::from_secs(5));
        let b = w.into_bytes();
        let later = now + Duration::from_secs(100);
        let back = Session::from_record(&mut Reader::new(&b), later).unwrap();
        let t = &back.session;
        assert_eq!(back.pty_fd, None);
        assert_eq!(back.ttl_left, Duration::from_secs(5));
        assert_eq!((t.id(), t.owner(), t.pid()), ("s", "local", 4242));
        assert_eq!(t.state(), s.state());
        assert_eq!(t.held(), Some(3));
        assert_eq!(later - t.last_seen(), Duration::from_secs(7));
        assert_eq!(t.modes().title(), b"title");
        assert!(t.modes().alt_screen());
        assert_eq!(t.start_point(None), s.start_point(None));
        // Writing it again gives the same bytes (idle measured from the new clock).
        let mut w2 = Writer::default();
        t.to_record(&mut w2, later, Duration::from_secs(5));
        assert_eq!(w2.into_bytes(), b);
        for cut in 0..b.len() {
            assert!(Session::from_record(&mut Reader::new(&b[..cut]), now).is_err());
        }
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
