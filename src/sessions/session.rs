//! A session: one PTY and its process, the ring that stores its output, the clients attached
//! to it, and the metadata the admin list shows. No sockets and no clock here: the event loop
//! passes time in and moves bytes between sessions and connections.

use std::fmt;
use std::io;
use std::time::Instant;

use crate::sessions::checkpoint::Checkpoints;
use crate::sessions::modes::{ModeTracker, Modes};
use crate::sessions::policy::Seats;
use crate::sessions::pty::{ExitStatus, Pty};
use crate::sessions::ring::Ring;

/// Input waiting for the PTY, bytes. A client is not read while this much is queued, so a
/// program that stops reading its terminal pushes back on the client instead of growing memory.
pub const INPUT_CAP: usize = 64 << 10;

/// Memory the input queue can hold at most: the cap, plus the one message (64 KiB) that may
/// arrive while the queue is just under it.
pub const INPUT_RESERVE: usize = INPUT_CAP + crate::api::protocol::MAX_MESSAGE;

/// Most output taken from one PTY in one pass, so a flood from one session cannot starve
/// the others; the session stays marked readable and the loop comes back at once.
pub const READ_PASS: usize = 1 << 20;

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The process runs (or its output is still being drained).
    Running,
    /// The process is gone and every byte of its output is in the ring.
    Exited,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Exited => "exited",
        })
    }
}

/// One persistent shell.
pub struct Session {
    /// Stable id (URL-safe).
    pub id: String,
    /// The user that created it.
    pub owner: String,
    /// Distinguishes this session from a later one in the same slab slot.
    pub generation: u64,
    /// The terminal; `None` once output ended and the master was closed.
    pub pty: Option<Pty>,
    /// The child's pid (also its process group and session id).
    pub pid: i32,
    /// All output, addressed by absolute offset.
    pub ring: Ring,
    /// Terminal modes, for `restore` on a fresh attach.
    pub modes: ModeTracker,
    /// Clean places in the ring to start a replay, with the modes in force there.
    pub checkpoints: Checkpoints,
    /// Attached connection keys, oldest first, and the one whose input and resizes reach
    /// the PTY.
    pub seats: Seats,
    /// Unix seconds.
    pub created_at: u64,
    /// Last client activity (monotonic).
    pub last_seen: Instant,
    /// Terminal columns.
    pub cols: u16,
    /// Terminal rows.
    pub rows: u16,
    /// The master had data when we last stopped reading (edge-triggered: remember it).
    pub pty_readable: bool,
    /// The master took input when we last stopped writing.
    pub pty_writable: bool,
    /// End of output reached.
    pub output_done: bool,
    /// How the process ended, once reaped.
    pub exit: Option<ExitStatus>,
    /// A client has been sent the end of output and `exited`: the session may be freed.
    pub end_seen: bool,
    state: State,
    input: Vec<u8>,
}

/// What one read pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadPass {
    /// Bytes added to the ring.
    pub bytes: usize,
    /// Output ended in this pass.
    pub ended: bool,
}

impl Session {
    /// A session around a freshly spawned PTY.
    pub fn new(
        id: String,
        owner: String,
        generation: u64,
        pty: Pty,
        scrollback: usize,
        (cols, rows): (u16, u16),
        (now, now_unix): (Instant, u64),
    ) -> Session {
        Session {
            id,
            owner,
            generation,
            pid: pty.pid(),
            pty: Some(pty),
            ring: Ring::new(scrollback),
            modes: ModeTracker::new(),
            checkpoints: Checkpoints::new(scrollback),
            seats: Seats::new(),
            created_at: now_unix,
            last_seen: now,
            cols,
            rows,
            pty_readable: true,
            pty_writable: true,
            output_done: false,
            exit: None,
            end_seen: false,
            state: State::Running,
            input: Vec::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The one place the state changes, so every transition is logged.
    pub fn set_state(&mut self, state: State) {
        if self.state != state {
            eprintln!(
                "keepty: session {} {} -> {}{}",
                self.id,
                self.state,
                state,
                match self.exit {
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

    /// True while the session may take input: its process runs and the queue has room.
    pub fn can_take_input(&self) -> bool {
        self.state == State::Running && self.exit.is_none() && self.input.len() < INPUT_CAP
    }

    /// Queues input for the PTY and writes what the terminal takes now.
    pub fn send_input(&mut self, data: &[u8]) -> io::Result<()> {
        if self.exit.is_some() || self.pty.is_none() {
            return Ok(()); // nobody left to read it
        }
        self.input.extend_from_slice(data);
        self.flush_input()
    }

    /// True if input is waiting for the terminal to take it.
    pub fn has_input(&self) -> bool {
        !self.input.is_empty()
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

    /// Reads output into the ring, at most `budget` bytes (what may be written without
    /// overwriting bytes a client still needs). Stops at `WouldBlock`, end of output, the
    /// budget, or [`READ_PASS`]; `pty_readable` stays set whenever it stopped with data
    /// possibly left.
    pub fn read_output(&mut self, budget: u64) -> io::Result<ReadPass> {
        let mut pass = ReadPass::default();
        let Some(pty) = &self.pty else {
            return Ok(pass);
        };
        let limit = budget.min(READ_PASS as u64) as usize;
        while self.pty_readable && !self.output_done && pass.bytes < limit {
            let slot = self.ring.write_slot();
            let want = slot.len().min(limit - pass.bytes);
            match pty.read(&mut slot[..want]) {
                Ok(0) => {
                    self.output_done = true;
                    pass.ended = true;
                }
                Ok(n) => {
                    self.checkpoints.feed(&mut self.modes, &slot[..n]);
                    self.ring.commit(n);
                    self.checkpoints.after_write(&mut self.ring, &self.modes);
                    pass.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pty_readable = false;
                    // The process is gone and its output drained: what a background job
                    // might still write is cut off, as when a terminal window closes.
                    if self.exit.is_some() {
                        self.output_done = true;
                        pass.ended = true;
                    }
                }
                Err(e) => {
                    self.output_done = true;
                    return Err(e);
                }
            }
        }
        Ok(pass)
    }

    /// Where a replay that cannot start at the client's own `since` starts, and the modes in
    /// force there: the first clean point the ring holds (see `checkpoint.rs`).
    pub fn replay_point(&self) -> (u64, Modes) {
        self.checkpoints.replay_point(&self.ring, &self.modes)
    }

    /// Drops the terminal once output has ended, so its fd and slave close.
    pub fn close_pty(&mut self) -> Option<Pty> {
        self.input.clear();
        self.pty.take()
    }

    /// Records a client's activity.
    pub fn touch(&mut self, now: Instant) {
        if now > self.last_seen {
            self.last_seen = now;
        }
    }
}
