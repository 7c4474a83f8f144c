//! The relay between sessions and their clients: input from the writer to the PTY, output
//! from the PTY through the ring to every client, control messages, and the bookkeeping of who
//! is attached. It borrows the tables it works on from the server for one call; the server
//! decides when (an event, a timer, the settle step) and the relay what moves.

use std::time::Instant;

use mio::Registry;
use mio::unix::SourceFd;
use tungstenite::Message;

use crate::agenda::{Timer, Touched};
use crate::api::protocol::{self, ClientMsg, Role, ServerMsg};
use crate::api::routes::Upgrade;
use crate::config::AttachPolicy;
use crate::limits::DetachedOutput;
use crate::limits::{LINGER, Limits, SESSION_PASSES, TIMEOUT_TICKS, WS_READ_BUDGET};
use crate::net::conn::{Conns, Kind};
use crate::net::ws::{Incoming, Phase, WsConn};
use crate::sessions::session::{Session, State};
use crate::sessions::table::Table;
use crate::timer::Wheel;

/// The server's tables, lent for one call.
pub(crate) struct Relay<'a> {
    /// Every connection.
    pub(crate) conns: &'a mut Conns<Upgrade>,
    /// Every session.
    pub(crate) sessions: &'a mut Table,
    /// Where linger and ping deadlines are filed.
    pub(crate) wheel: &'a mut Wheel<Timer>,
    /// What the settle step must come back to.
    pub(crate) touched: &'a mut Touched,
    /// Set when a session stopped reading for fairness with data left.
    pub(crate) busy: &'a mut bool,
    /// For closing a finished terminal.
    pub(crate) registry: &'a Registry,
    /// `--attach-policy`.
    pub(crate) policy: AttachPolicy,
    /// The caps.
    pub(crate) limits: &'a Limits,
    /// This turn's time.
    pub(crate) now: Instant,
}

/// Tells the clients a newcomer took session `id` from (`handoff`) and closes them.
pub(crate) fn take_over(
    conns: &mut Conns<Upgrade>,
    touched: &mut Touched,
    id: &str,
    evicted: &[usize],
) {
    for &old in evicted {
        if let Some(w) = conns.ws_mut(old) {
            eprintln!("keepty: session {id} taken over from {}", w.peer());
            w.send(&ServerMsg::TakenOver);
            w.close_with(protocol::CLOSE_TAKEN_OVER, "taken_over");
            w.detach();
            touched.conns.push(old);
        }
    }
}

impl Relay<'_> {
    /// Client `k` left session `skey`.
    pub(crate) fn detach(&mut self, (skey, generation): (usize, u64), k: usize) {
        let Some(s) = self
            .sessions
            .get_mut(skey)
            .filter(|s| s.generation() == generation)
        else {
            return;
        };
        // multi: the oldest viewer takes over the keyboard.
        let promoted = s.leave(self.policy, k);
        // It was attached until now, so it was seen until now.
        s.touch(self.now);
        if let Some(w) = self.conns.ws(k) {
            eprintln!("keepty: session {} detached by {}", s.id(), w.peer());
        }
        self.touched.sessions.push(skey);
        if let Some(next) = promoted {
            self.announce_writer(skey, None, next);
        }
    }

    /// Tells the clients of session `skey` that the keyboard moved from `old` (now a viewer,
    /// if still attached) to `k`, and has the program repaint for the new writer.
    pub(crate) fn announce_writer(&mut self, skey: usize, old: Option<usize>, k: usize) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        if let Some(old) = old
            && let Some(w) = self.conns.ws_mut(old)
        {
            w.set_role(Role::Viewer);
            self.touched.conns.push(old);
        }
        if let Some(w) = self.conns.ws_mut(k) {
            // A writer is protected from being overwritten from here on: what it still needs
            // is what it has been sent (or acked), which the ring holds right now.
            w.set_role(Role::Writer);
            eprintln!("keepty: session {} writer is now {}", s.id(), w.peer());
            self.touched.conns.push(k);
        }
        s.redraw();
        self.touched.sessions.push(skey);
    }

    /// Reads a WebSocket until `WouldBlock`, or until input must wait for the PTY.
    pub(crate) fn read_ws(&mut self, k: usize) {
        for _ in 0..WS_READ_BUDGET {
            let Some(w) = self.conns.ws_mut(k) else {
                return;
            };
            if w.read_paused() {
                return;
            }
            let bound = w.session().filter(|b| self.sessions.bound(*b).is_some());
            if let Some((skey, _)) = bound
                && w.role() == Role::Writer
                && self.sessions.get(skey).is_some_and(Session::input_full)
            {
                w.pause_read();
                return;
            }
            let msg = match w.read() {
                Incoming::Idle => return,
                Incoming::Closed => return self.kill_conn(k),
                Incoming::Failed(code, reason) => {
                    eprintln!("keepty: closing WebSocket from {}: {reason}", w.peer());
                    w.close_with(code, reason);
                    return self.detach_ws(k);
                }
                Incoming::Message(msg) => msg,
            };
            #[cfg(feature = "echo")]
            let Some(msg) = w.echo(msg) else {
                self.touched.conns.push(k);
                continue;
            };
            let Some((skey, _)) = bound else {
                // Not attached (closing, or taken over): only the close matters.
                if let Message::Close(_) = msg {
                    let _ = w.pump_write(None);
                }
                continue;
            };
            if !self.on_message(k, skey, msg) {
                return;
            }
            self.touched.sessions.push(skey);
        }
        // Budget spent with more perhaps unread: resume from the touched list (edge-triggered,
        // no new event will come), after everyone else had a turn.
        self.touched.conns.push(k);
    }

    /// One message from client `k` of session `skey`; false once the client is done.
    fn on_message(&mut self, k: usize, skey: usize, msg: Message) -> bool {
        let (Some(w), Some(s)) = (self.conns.ws_mut(k), self.sessions.get_mut(skey)) else {
            return false;
        };
        let is_writer = w.is_writer();
        s.touch(self.now);
        let failed = match msg {
            Message::Binary(data) if is_writer && s.state() == State::Running => {
                if let Err(e) = s.send_input(&data) {
                    eprintln!("keepty: session {} input failed: {e}", s.id());
                }
                if s.input_full() {
                    w.pause_read();
                }
                None
            }
            Message::Text(text) => match protocol::parse_client_msg(&text) {
                Ok(ClientMsg::Resize { cols, rows }) => {
                    if is_writer
                        && s.state().output_open()
                        && let Err(e) = s.resize(cols, rows)
                    {
                        eprintln!("keepty: session {} resize failed: {e}", s.id());
                    }
                    None
                }
                Ok(ClientMsg::Ack { offset }) => w.ack(offset).err(),
                Ok(ClientMsg::TakeControl) if w.is_open() => {
                    if let Some(old) = s.take_control(self.policy, k) {
                        self.announce_writer(skey, old, k);
                    }
                    None
                }
                Ok(ClientMsg::TakeControl) | Ok(ClientMsg::Unknown) => None,
                Err(e) => Some(e),
            },
            Message::Close(_) => {
                // tungstenite queued our answer; send it, then we are done.
                let _ = w.pump_write(None);
                self.kill_conn(k);
                return false;
            }
            _ => None, // ping/pong: tungstenite answers pings itself
        };
        if let Some(e) = failed {
            if let Some(w) = self.conns.ws_mut(k) {
                w.fail(&e);
            }
            self.detach_ws(k);
            return false;
        }
        true
    }

    /// Marks a connection for removal and detaches it from its session at once, so the
    /// session's read budget no longer waits for it.
    pub(crate) fn kill_conn(&mut self, k: usize) {
        if let Some(binding) = self.conns.kill(k) {
            self.detach(binding, k);
        }
    }

    /// Detaches a WebSocket that is closing but not yet gone, with a bound on how long it may
    /// take to finish closing.
    pub(crate) fn detach_ws(&mut self, k: usize) {
        let Some(generation) = self.conns.generation(k) else {
            return;
        };
        if let Some(binding) = self.conns.ws_mut(k).and_then(WsConn::detach) {
            self.detach(binding, k);
        }
        self.wheel
            .insert(self.now + LINGER, Timer::Conn(k, generation));
        self.touched.conns.push(k);
    }

    /// How many bytes session `skey` may read now without overwriting output a client still
    /// needs: the writer's unacknowledged (flow) or unsent bytes, and in `block` mode with
    /// nobody attached, anything at all; after an upgrade, what the writer then attached had
    /// not been sent.
    fn read_budget(&self, s: &Session) -> u64 {
        let protect = match s.writer().and_then(|w| self.conns.ws(w)) {
            Some(w) => Some(w.needs_from()),
            // A writer closed by an upgrade is coming back for these bytes.
            None if s.held().is_some() => s.held(),
            _ if self.limits.detached_output == DetachedOutput::Block => Some(s.ring().start()),
            _ => None,
        };
        let ring = s.ring();
        match protect {
            Some(p) => (ring.capacity() as u64).saturating_sub(ring.end().saturating_sub(p)),
            None => u64::MAX,
        }
    }

    /// Moves input to the PTY and output PTY -> ring -> clients for one session until
    /// neither side can move.
    pub(crate) fn service_session(&mut self, skey: usize) {
        for _ in 0..SESSION_PASSES {
            let Some(s) = self.sessions.get(skey) else {
                return;
            };
            let budget = self.read_budget(s);
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            if s.wants_flush() {
                let _ = s.flush_input();
                // The writer was paused on a full input queue: let it go on.
                if !s.input_full()
                    && let Some(k) = s.writer()
                    && let Some(w) = self.conns.ws_mut(k)
                    && w.resume_read()
                {
                    self.touched.conns.push(k);
                }
            }
            let mut progress = false;
            let mut read = 0;
            if s.wants_read() && budget > 0 {
                match s.read_output(budget) {
                    Ok(n) => read = n,
                    Err(e) => eprintln!("keepty: session {} read failed: {e}", s.id()),
                }
                progress |= read > 0;
                if read > 0 {
                    self.offer(skey);
                }
                if self
                    .sessions
                    .get(skey)
                    .is_some_and(|s| s.wants_read() && self.read_budget(s) > 0)
                {
                    *self.busy = true; // stopped for fairness, not for lack of data
                }
            }
            self.close_finished_pty(skey);
            let hold = self.gathers(skey, read);
            progress |= self.pump_clients(skey, hold);
            if !progress {
                break;
            }
        }
        if let Some(d) = self.sessions.get(skey).and_then(Session::gather_deadline) {
            self.touched.hold(skey, d);
        }
        if self.sessions.get(skey).is_some_and(Session::may_free)
            && let Some(s) = self.sessions.free(skey)
        {
            eprintln!("keepty: session {} freed", s.id());
        }
    }

    /// Sends the download offer session `skey`'s output just made (`keepty send`) to its
    /// clients; with none open it waits in the session for the next attach.
    fn offer(&mut self, skey: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if !s.modes().has_offer() {
            return;
        }
        let open: Vec<usize> = s
            .clients()
            .iter()
            .copied()
            .filter(|&c| self.conns.ws(c).is_some_and(WsConn::is_open))
            .collect();
        if open.is_empty() {
            return;
        }
        let Some(offer) = s.take_offer() else {
            return;
        };
        eprintln!(
            "keepty: session {} offers a download ({} bytes)",
            s.id(),
            offer.size
        );
        let msg = ServerMsg::Offer {
            path: &offer.path,
            size: offer.size,
        };
        for c in open {
            if let Some(w) = self.conns.ws_mut(c) {
                w.send(&msg);
                self.touched.conns.push(c);
            }
        }
    }

    /// True if the output session `skey` just read (`read` bytes) should wait to gather into a
    /// bigger frame (see [`crate::sessions::gather`]). Never past a quarter of the ring or the
    /// room the writer leaves, so a viewer is not overtaken and the reads never stall on it.
    fn gathers(&mut self, skey: usize, read: usize) -> bool {
        let Some(s) = self.sessions.get(skey) else {
            return false;
        };
        let room = self.read_budget(s).min(s.ring().capacity() as u64 / 4);
        let now = self.now;
        self.sessions
            .get_mut(skey)
            .is_some_and(|s| s.gather(now, read, room))
    }

    /// Once output has ended, the terminal is closed (deregistered first: `SourceFd` does not
    /// own the fd).
    fn close_finished_pty(&mut self, skey: usize) {
        if let Some(pty) = self
            .sessions
            .get_mut(skey)
            .and_then(Session::take_closed_pty)
        {
            let fd = pty.raw_fd();
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
    }

    /// Sends each client of `skey` what it may have (no new output while it is `held` to
    /// gather); tells those that saw the end of an exited session. True if any output moved.
    fn pump_clients(&mut self, skey: usize, held: bool) -> bool {
        let mut progress = false;
        // Newest first, by index: a client that finishes here is removed from the list,
        // which leaves the indices still to visit unchanged.
        let Some(mut i) = self.sessions.get(skey).map(|s| s.clients().len()) else {
            return false;
        };
        while i > 0 {
            i -= 1;
            let Some(s) = self.sessions.get(skey) else {
                return progress;
            };
            let Some(&c) = s.clients().get(i) else {
                continue;
            };
            let Some(w) = self.conns.ws_mut(c) else {
                continue;
            };
            let before = w.cursor();
            if !w.pump_write((!held).then(|| s.ring())) {
                self.kill_conn(c);
                continue;
            }
            if w.take_read_deferred() {
                self.touched.conns.push(c);
            }
            progress |= w.cursor() != before;
            if let State::Exited { exit, .. } = s.state()
                && w.is_open()
                && w.caught_up(s.ring())
            {
                w.send(&ServerMsg::Exited {
                    code: exit.code,
                    signal: exit.signal,
                });
                w.close_with(protocol::CLOSE_NORMAL, "exited");
                let _ = w.pump_write(None);
                if let Some(s) = self.sessions.get_mut(skey) {
                    s.on_end_seen();
                }
                self.detach_ws(c);
            }
        }
        progress
    }

    /// A WebSocket's liveness tick: ping it, or close it if it went silent or stopped
    /// taking its output.
    pub(crate) fn ping_tick(&mut self, k: usize, generation: u64) {
        let Some(Kind::Ws(w)) = self.conns.live_mut(k, generation) else {
            return;
        };
        if w.phase() != Phase::Open {
            return; // closing: the linger timer ends it
        }
        let ring = w
            .session()
            .and_then(|b| self.sessions.bound(b))
            .map(Session::ring);
        if w.on_ping_tick(ring) {
            self.wheel.insert(
                self.now + self.limits.ping_interval,
                Timer::Ping(k, generation),
            );
        } else {
            eprintln!(
                "keepty: closing WebSocket from {}: {} for {TIMEOUT_TICKS} pings",
                w.peer(),
                w.timeout_reason(),
            );
            w.close_with(protocol::CLOSE_GOING_AWAY, "timeout");
            self.detach_ws(k);
        }
        self.touched.conns.push(k);
    }

    /// Reads and writes WebSocket `k` as far as it goes.
    pub(crate) fn service_ws(&mut self, k: usize) {
        let Some(w) = self.conns.ws_mut(k) else {
            return;
        };
        if !w.read_paused() {
            self.read_ws(k);
        }
        let Some(w) = self.conns.ws_mut(k) else {
            return;
        };
        let ring = w
            .session()
            .and_then(|b| self.sessions.bound(b))
            .map(Session::ring);
        if !w.pump_write(ring) || w.phase() == Phase::Done {
            return self.kill_conn(k);
        }
        if w.take_read_deferred() {
            self.touched.conns.push(k);
        }
        if let Some((s, _)) = w.session() {
            // Sending may have freed read budget for the session.
            self.touched.sessions.push(s);
        }
    }
}
