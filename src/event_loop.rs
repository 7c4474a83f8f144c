//! The server: one thread, one `mio::Poll` over the listener, every connection, every PTY
//! master and the signal source. This file conducts; the parts own their state.
//!
//! Each turn: poll, dispatch every event (sources are edge-triggered, so each is drained to
//! `WouldBlock` or its readiness is remembered), fire due timers, move output from PTYs into
//! rings and from rings to clients until nothing moves (settle), then free what was closed.
//! Slab slots are freed only after the batch, so an event for a closed connection never
//! reaches a new one in the same slot.
//!
//! What else lives here is what needs both tables at once: attaching a client to a session,
//! and tearing a session down with its clients.

mod files;
mod upgrade;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use nix::sys::signal::Signal;
use signal_hook_mio::v1_0::Signals;

use crate::access::gate::{Caller, Gate};
use crate::agenda::{Timer, Touched};
use crate::api::admin::{self, Clock, Counters, Sources};
use crate::api::protocol::{self, ErrorCode, ProtoError, Role, ServerMsg, WsParams};
use crate::api::routes::{self, Action, Context, Reject, Upgrade, View};
use crate::config::{AttachPolicy, Config};
use crate::error::StartError;
use crate::files::tickets::Tickets;
use crate::limits::{
    ACCEPT_BATCH, ACCEPT_RETRY, Charge, EXIT_GRACE, KILL_AFTER, LINGER, Limits, SETTLE_ROUNDS,
    TOMBSTONE_KEEP, Usage,
};
use crate::net::conn::{After, Conns, HttpConn, Kind, Step};
use crate::net::http::{Request, Response};
use crate::net::layer::Layer;
use crate::net::listener::{self, Acceptor, Next};
use crate::net::stream::Transport;
use crate::net::ws::{Phase, WsConn};
use crate::relay::{self, Relay};
use crate::sessions::cgroup;
use crate::sessions::policy::Admission;
use crate::sessions::pty::{self, ExitStatus};
use crate::sessions::sample::Sampler;
use crate::sessions::table::{Spawn, Table};
use crate::sessions::tombstones::Cause;
use crate::signals;
use crate::timer::Wheel;
use crate::token::{self, Source};
use crate::upgrade::{handoff, state as upgrade_state};

/// Timer wheel slot width. It sets only how timers are filed, not how often the server wakes:
/// the poll timeout is the exact next deadline, so an idle server sleeps until its next real
/// timer (a ping 20 s away per attached client, a TTL hours away) and a Pi's CPU stays in its
/// idle state. Every deadline here is seconds long, so 100 ms slots lose no precision that
/// matters while keeping one lap (1024 slots) at 102 s, past every short timer.
const TICK: Duration = Duration::from_millis(100);

/// The running server.
pub struct Server {
    command: Vec<String>,
    policy: AttachPolicy,
    limits: Limits,
    poll: Poll,
    acceptor: Acceptor,
    local_addr: SocketAddr,
    signals: Signals,
    conns: Conns<Upgrade>,
    sessions: Table,
    gate: Gate,
    wheel: Wheel<Timer>,
    /// The time of the current turn, for code deep in a call chain that needs it.
    now: Instant,
    touched: Touched,
    /// Some session stopped reading for fairness with data left: poll without sleeping.
    busy: bool,
    shutting_down: bool,
    exit_now: bool,
    counters: Counters,
    clock: Clock,
    /// TLS, when serving HTTPS.
    layer: Layer,
    /// What each session costs, read from /proc a few files per tick.
    sampler: Sampler,
    /// The binary an upgrade executes, read at startup (see `handoff::exe_path`).
    exe: Option<PathBuf>,
    /// An upgrade is closing its clients; it executes by this deadline (`event_loop/upgrade.rs`).
    upgrading: Option<Instant>,
    /// The listener while an upgrade drains: not polled, so connections wait in its backlog.
    held_listener: Option<TcpListener>,
    /// This process took over from an upgrade.
    restored: bool,
    /// The listener may hold more connections than the last turn accepted.
    accept_more: bool,
    /// Download tickets issued and not yet used (`src/files/tickets.rs`).
    tickets: Tickets,
    /// File transfers that moved their bytes for this turn, by slot and generation: they go
    /// on in the next, so a transfer takes one pass per turn however many settle rounds the
    /// others need.
    next_turn: Vec<(usize, u64)>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Server {
    /// Binds the listener and installs signal handling. Nothing is served until [`run`].
    ///
    /// [`run`]: Server::run
    pub fn bind(cfg: Config) -> Result<Server, StartError> {
        if let Some(why) = cfg.refusal() {
            return Err(StartError::Config(why));
        }
        crate::startup::check(&cfg, std::env::var_os("PATH").as_deref())
            .map_err(StartError::Config)?;
        // The token files are read before anything else, so a broken one is reported even
        // when the port is taken too; the port a Host must name is known after the bind.
        let mut gate =
            Gate::new(&cfg, cfg.listen.port(), cfg.tls_requested()).map_err(StartError::Config)?;
        let layer = Layer::new(&cfg).map_err(StartError::Config)?;
        // Once, at startup: whether sessions get cgroups of their own, said in the log.
        let _ = cgroup::detect();
        let is_tls = layer.is_tls();
        let poll = Poll::new()?;
        let inherited = cfg.restore_fd.map(|_| handoff::seal_inherited());
        let restore = match cfg.restore_fd {
            Some(fd) => Some(
                handoff::read_state(fd)
                    .map_err(|e| format!("cannot read the state (fd {fd}): {e}"))
                    .and_then(|buf| {
                        let fd = upgrade_state::decode_head(&buf)
                            .map_err(|e| e.0)?
                            .listener_fd;
                        Ok((buf, fd))
                    })
                    .map_err(|e| StartError::System(io::Error::other(format!("upgrade: {e}"))))?,
            ),
            None => None,
        };
        let mut listener = match &restore {
            // SAFETY: the process before the exec named this fd as its listener and left it
            // open for us; nothing else here owns it.
            Some((_, fd)) => unsafe { handoff::adopt_listener(*fd) }?,
            None => TcpListener::bind(cfg.listen).map_err(|e| StartError::Listen(cfg.listen, e))?,
        };
        let local_addr = listener.local_addr()?;
        gate.bound(local_addr.port(), is_tls);
        poll.registry()
            .register(&mut listener, token::LISTENER, Interest::READABLE)?;
        let mut signals = signals::install()?;
        poll.registry()
            .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
        let now = Instant::now();
        let mut wheel = Wheel::new(TICK, now);
        let mut sampler = Sampler::new("/proc");
        if sampler.arm() {
            wheel.insert(now + TICK, Timer::Sample);
        }
        let exe = handoff::exe_path()
            .inspect_err(|e| eprintln!("keepty: upgrades disabled: no path to this binary: {e}"))
            .ok();
        let mut server = Server {
            limits: cfg.limits(is_tls),
            command: cfg.command,
            policy: cfg.attach_policy,
            wheel,
            poll,
            acceptor: Acceptor::new(listener),
            local_addr,
            signals,
            conns: Conns::default(),
            sessions: Table::default(),
            gate,
            now,
            touched: Touched::default(),
            busy: false,
            shutting_down: false,
            exit_now: false,
            counters: Counters::default(),
            clock: Clock::new(now, unix_now().as_millis()),
            layer,
            sampler,
            exe,
            upgrading: None,
            held_listener: None,
            restored: false,
            accept_more: false,
            tickets: Tickets::default(),
            next_turn: Vec::new(),
        };
        if let Some((buf, _)) = restore {
            server.restore(&buf, now);
            let adopted: Vec<_> = server.sessions.pty_fds().map(|f| f.as_raw_fd()).collect();
            handoff::close_unadopted(&inherited.unwrap_or_default(), &adopted);
        }
        Ok(server)
    }

    /// Loads what `cfg` names (token files, certificates) without binding: what a binary
    /// answering an upgrade's check proves it can start with.
    pub fn check_config(cfg: &Config) -> Result<(), String> {
        if let Some(why) = cfg.refusal() {
            return Err(why);
        }
        Gate::new(cfg, cfg.listen.port(), cfg.tls_requested())?;
        Layer::new(cfg)?;
        Ok(())
    }

    /// True when this process took over from an upgrade in place.
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        self.layer.is_tls()
    }

    /// The SHA-256 fingerprint of the certificate served, when serving HTTPS.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.layer.fingerprint()
    }

    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut fired = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = if self.busy || self.accept_more {
                Some(Duration::ZERO)
            } else {
                // Output held to gather a frame (issue 20) is due as surely as a timer.
                let due = match (self.wheel.next_deadline(), self.touched.held_until()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                due.map(|d| d.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.now = now;
            self.busy = false;
            for ev in events.iter() {
                self.dispatch(ev, now);
            }
            for (k, generation) in std::mem::take(&mut self.next_turn) {
                if self.conns.generation(k) == Some(generation) {
                    self.touched.conns.push(k);
                }
            }
            self.touched.release_held(now);
            if std::mem::take(&mut self.accept_more) {
                self.accept_all(now);
            }
            self.wheel.poll(now, &mut fired);
            for t in fired.drain(..) {
                self.on_timer(t, now);
            }
            self.settle(now);
            if self.upgrade_due(now) {
                self.execute_upgrade(now);
            }
            if self.exit_now || (self.shutting_down && self.finished()) {
                // What was killed 3 s ago is gone; what is not yet will not hold us up.
                let _ = cgroup::sweep();
                eprintln!("keepty: shutdown complete");
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, ev: &Event, now: Instant) {
        match token::decode(ev.token()) {
            Source::Listener => self.accept_all(now),
            Source::Signals => {
                let mut sigs = Vec::new();
                signals::drain(&mut self.signals, &mut sigs);
                for s in sigs {
                    self.on_signal(s, now);
                }
            }
            Source::Conn(k) => {
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    self.on_conn_writable(k);
                }
                match self.conns.kind_mut(k) {
                    Some(Kind::Http(_)) => self.drive_http(k, now),
                    Some(Kind::Ws(_)) => self.relay().read_ws(k),
                    _ => {}
                }
                self.touched.conns.push(k);
            }
            Source::Pty(k) => {
                if let Some(s) = self.sessions.get_mut(k) {
                    s.on_pty_event();
                    self.touched.sessions.push(k);
                }
            }
        }
    }

    /// The tables, lent to the relay for one call.
    fn relay(&mut self) -> Relay<'_> {
        Relay {
            conns: &mut self.conns,
            sessions: &mut self.sessions,
            wheel: &mut self.wheel,
            touched: &mut self.touched,
            busy: &mut self.busy,
            registry: self.poll.registry(),
            policy: self.policy,
            limits: &self.limits,
            now: self.now,
        }
    }

    /// What exists now, for the memory budget.
    fn usage(&self) -> Usage {
        let (http, ws) = self.conns.counts();
        Usage {
            sessions: self.sessions.len(),
            http,
            ws,
            tombstones: self.sessions.tombstone_count(),
            transfers: self.conns.transfers().count(),
        }
    }

    // ---- accepting -------------------------------------------------------------------

    /// Accepts what waits, [`ACCEPT_BATCH`] connections a turn (see there for why).
    fn accept_all(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            match self.acceptor.next() {
                Next::Conn(stream, peer) => self.add_conn(stream, peer, now),
                Next::Done => return,
                Next::Paused => {
                    self.wheel.insert(now + ACCEPT_RETRY, Timer::Accept);
                    return;
                }
            }
        }
        self.accept_more = true;
    }

    fn add_conn(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        // Pending is full: the oldest unfinished request of the address holding the most goes,
        // so a slowloris from a few addresses cannot keep a fifth out.
        if let Some(victim) = self.conns.pending_victim(self.limits.max_pending) {
            if let Some(h) = self.conns.http_mut(victim) {
                eprintln!(
                    "keepty: --max-pending reached; closing an unfinished request from {}",
                    h.peer()
                );
            }
            self.relay().kill_conn(victim);
        }
        if self.limits.admit(self.usage(), Charge::Connection).is_err() {
            eprintln!("keepty: refused connection from {peer}: --max-memory reached");
            self.counters.connections_refused += 1;
            // Over TLS a refusal cannot be read before a handshake we will not do: just close.
            if !self.is_tls() {
                listener::refuse(stream, 503, "memory", "memory cap reached");
            }
            return;
        }
        let _ = stream.set_nodelay(true);
        let stream = match self.layer.wrap(stream) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keepty: cannot start TLS with {peer}: {e}");
                return;
            }
        };
        let deadline = now + self.limits.header_timeout;
        match self
            .conns
            .insert(HttpConn::new(stream, peer, deadline), self.poll.registry())
        {
            Ok((k, generation)) => {
                self.wheel.insert(deadline, Timer::Conn(k, generation));
                self.touched.conns.push(k);
            }
            Err(e) => eprintln!("keepty: cannot register connection from {peer}: {e}"),
        }
    }

    // ---- HTTP ------------------------------------------------------------------------

    fn on_conn_writable(&mut self, k: usize) {
        // TLS records a write left in rustls go out now; an error shows on the next I/O.
        match self.conns.kind_mut(k) {
            Some(Kind::Http(h)) => {
                let _ = h.stream_mut().flush_pending();
            }
            Some(Kind::Ws(w)) => w.on_writable(),
            _ => {}
        }
    }

    /// Advances an HTTP connection as far as it can go: a head came, route it; a response
    /// was sent, do what follows.
    fn drive_http(&mut self, k: usize, now: Instant) {
        let Some(generation) = self.conns.generation(k) else {
            return;
        };
        // A transfer that had its pass this turn waits for the next (an event for it in
        // this turn's batch does not buy it another).
        if self.next_turn.contains(&(k, generation)) {
            return;
        }
        // Bounded like each advance, so an endless pipeline cannot starve everyone else.
        for _ in 0..crate::limits::HTTP_STEP_BUDGET {
            let header_timeout = self.limits.next_head_timeout();
            let Some(h) = self.conns.http_mut(k) else {
                return;
            };
            let step = h.advance(now, header_timeout);
            if let Some(at) = h.rearm(now) {
                self.wheel.insert(at, Timer::Conn(k, generation));
            }
            match step {
                Step::Head(req) => self.on_head(k, req, now),
                Step::Bad(e) => {
                    eprintln!("keepty: bad request from {}: {e:?}", h.peer());
                    self.respond(k, &Request::default(), e.response(), After::Close, now);
                }
                Step::Upgraded(u) => return self.upgrade(k, u, now),
                Step::Answer(resp, keep) => self.answer_transfer(k, resp, keep, now),
                Step::Ticket {
                    session,
                    path,
                    size,
                } => self.issue_ticket(k, session, path, size, now),
                Step::Blocked => return self.settle_idle(k),
                Step::Yield if h.transfer().is_some() => {
                    self.next_turn.push((k, generation));
                    self.busy = true;
                    return;
                }
                Step::Yield => break,
                Step::Closed => return self.relay().kill_conn(k),
            }
        }
        // Budget spent: resume from the touched list after everyone else had a turn, since
        // no new event may come.
        self.touched.conns.push(k);
    }

    /// A connection that went idle between requests moves to the idle budget; past it, the
    /// oldest idle one of the address with the most is closed.
    fn settle_idle(&mut self, k: usize) {
        if let Some(victim) = self.conns.settle_idle(k, self.limits.max_idle()) {
            self.relay().kill_conn(victim);
        }
    }

    /// A request head arrived on connection `k`.
    fn on_head(&mut self, k: usize, req: Request, now: Instant) {
        let Some(peer) = self.conns.http_mut(k).map(|h| h.peer()) else {
            return;
        };
        // A request is being served: it counts against --max-clients and its client's share.
        let client = self.gate.client(&req, peer);
        let (max, share) = (self.limits.max_clients, self.limits.peer_share());
        if self.conns.begin_request(k, client, max, share).is_err() {
            eprintln!(
                "keepty: refused request from {client}: --max-clients or its share ({share}) reached"
            );
            self.counters.connections_refused += 1;
            let resp = Reject::TooManyClients.response();
            return self.respond(k, &req, resp, After::Close, now);
        }
        let cx = Context {
            upgrade_fits: self.limits.admit(self.usage(), Charge::Upgrade).is_ok(),
            max_upload: self.limits.max_upload,
        };
        let (resp, after) = match routes::route(&req, peer, now, &mut self.gate, &cx) {
            Action::Respond(resp, after) => (resp, after),
            Action::List { owner, view } => {
                (self.list(owner.as_deref(), view, now), After::KeepAlive)
            }
            Action::Drop(id) => (self.drop_one(&id, now), After::KeepAlive),
            Action::DropAll(confirm) => (self.drop_all(confirm, now), After::KeepAlive),
            Action::Upgrade => (self.upgrade_answer(k, now), After::Close),
            Action::Files(ask) => return self.start_files(k, &req, ask, now),
        };
        self.respond(k, &req, resp, after, now);
    }

    fn respond(
        &mut self,
        k: usize,
        req: &Request,
        mut resp: Response,
        after: After<Upgrade>,
        now: Instant,
    ) {
        self.layer.decorate(&mut resp);
        let closing = self.shutting_down || self.upgrading.is_some();
        if let Some(h) = self.conns.http_mut(k) {
            h.respond(req, resp, after, closing, now);
        }
    }

    /// A session list, drawn from the tables.
    fn list(&self, owner: Option<&str>, view: View, now: Instant) -> Response {
        let sources = Sources {
            table: &self.sessions,
            limits: &self.limits,
            policy: self.policy,
            reserved: self.limits.reserved(self.usage()),
            clock: &self.clock,
            now,
            now_unix: unix_now().as_secs(),
        };
        let list = sources.list(owner, |k| self.conns.ws(k).map(WsConn::peer));
        let counters = Counters {
            auth_failures: self.gate.auth_failures(),
            uptime_secs: self.clock.uptime_secs(now),
            ..self.counters.clone()
        };
        admin::respond(view, &list, &counters)
    }

    fn drop_one(&mut self, id: &str, now: Instant) -> Response {
        let Some(skey) = self.sessions.find(id) else {
            return Reject::NoSession.response();
        };
        self.teardown(skey, Cause::Dropped, now);
        Response::json(200, &serde_json::json!({ "dropped": id }))
    }

    fn drop_all(&mut self, confirm: usize, now: Instant) -> Response {
        let count = self.sessions.len();
        if confirm != count {
            return Reject::ConfirmMismatch { confirm, count }.response();
        }
        for k in self.sessions.keys() {
            self.teardown(k, Cause::Dropped, now);
        }
        Response::json(200, &serde_json::json!({ "dropped": count }))
    }

    /// Turns an HTTP connection whose 101 is sent into a WebSocket.
    fn upgrade(&mut self, k: usize, u: Upgrade, now: Instant) {
        let Some(h) = self.conns.take_http(k) else {
            return;
        };
        let (stream, leftover, peer) = h.into_parts();
        let mut w = Box::new(WsConn::new(stream, leftover, peer));
        let Some(generation) = self.conns.generation(k) else {
            return;
        };
        match u {
            // Arrived while an upgrade closes its clients: come back to the new process.
            Upgrade::Session(..) if self.upgrading.is_some() => {
                w.send(&ServerMsg::Restarting);
                w.close_with(protocol::CLOSE_RESTART, "restarting");
                self.wheel.insert(now + LINGER, Timer::Conn(k, generation));
            }
            Upgrade::Session(params, caller) => {
                let result = params.and_then(|p| self.attach(k, &mut w, &p, &caller, now));
                if let Err(e) = result {
                    eprintln!(
                        "keepty: refused WebSocket from {peer}: {} ({})",
                        e.code.name(),
                        e.message
                    );
                    w.fail(&e);
                    self.wheel.insert(now + LINGER, Timer::Conn(k, generation));
                }
                self.wheel
                    .insert(now + self.limits.ping_interval, Timer::Ping(k, generation));
            }
            #[cfg(feature = "echo")]
            Upgrade::Echo => w.set_echo(),
        }
        self.conns.put_ws(k, w);
        self.touched.conns.push(k);
        // Frames that came with the request head are already buffered in tungstenite.
        self.relay().read_ws(k);
    }

    // ---- attaching -------------------------------------------------------------------

    /// Attaches WebSocket `w` (connection `k`) per its query: finds or creates the session,
    /// seats the client under the attach policy, and tells it where its output starts.
    fn attach(
        &mut self,
        k: usize,
        w: &mut WsConn,
        p: &WsParams,
        caller: &Caller,
        now: Instant,
    ) -> Result<(), ProtoError> {
        let existing = p.session.as_deref().and_then(|id| self.sessions.find(id));
        // Another user's session, live or ended, answers exactly as an unknown id does, with
        // or without new=1, before anything else about it can show (its policy, its end).
        if let Some(s) = existing.and_then(|k| self.sessions.get(k))
            && s.owner() != caller.name
        {
            return Err(self.unknown(None, caller));
        }
        let (skey, created) = match existing {
            Some(s) => (s, false),
            // An ended id stays its owner's until its tombstone expires.
            None if p.new && !self.ended_elsewhere(p.session.as_deref(), caller) => {
                (self.create_session(p, caller, now)?, true)
            }
            None => return Err(self.unknown(p.session.as_deref(), caller)),
        };
        let Some(s) = self.sessions.get_mut(skey) else {
            return Err(self.unknown(None, caller));
        };
        let start = s.start_point(p.since)?;
        let role = match s.admit(self.policy, k) {
            Admission::Refused => {
                return Err(ProtoError::new(
                    ErrorCode::AttachedElsewhere,
                    "the session is attached in another window",
                ));
            }
            Admission::Viewer => Role::Viewer,
            Admission::Writer { evicted } => {
                relay::take_over(&mut self.conns, &mut self.touched, s.id(), &evicted);
                Role::Writer
            }
        };
        w.attach((skey, s.generation()), start.offset, p.flow, role);
        if role == Role::Writer {
            let (cols, rows) = s.size();
            let _ = s.resize(p.cols.unwrap_or(cols), p.rows.unwrap_or(rows));
            // A full-screen program repaints for the newcomer, whose screen is blank or was
            // replayed from a tail. The resize above cannot be relied on (the kernel signals
            // only a real change, and the program may have set the size itself). A program
            // that just started has nothing to repaint.
            if !created {
                s.redraw();
            }
        }
        s.touch(now);
        let (cols, rows) = s.size();
        w.send(&ServerMsg::Attached {
            session: s.id(),
            created,
            offset: start.offset,
            lost: start.lost,
            role,
            policy: self.policy.name(),
            cols,
            rows,
            end: s.ring().end(),
            restore: start.restore.as_deref(),
        });
        // An offer made while nobody was attached goes to the first to come back, once.
        if let Some(offer) = s.take_offer() {
            w.send(&ServerMsg::Offer {
                path: &offer.path,
                size: offer.size,
            });
        }
        eprintln!(
            "keepty: session {} attached by {} as {role:?} (offset {}, lost {})",
            s.id(),
            w.peer(),
            start.offset,
            start.lost
        );
        self.touched.sessions.push(skey);
        Ok(())
    }

    /// The answer for an id that names none of `caller`'s sessions: why it is gone, if it
    /// is remembered as the caller's; another user's tombstone says nothing.
    fn unknown(&self, id: Option<&str>, caller: &Caller) -> ProtoError {
        let cause = id
            .and_then(|id| self.sessions.ended(id))
            .filter(|t| t.owner == caller.name)
            .map(|t| t.cause);
        match cause {
            Some(Cause::Expired) => ProtoError::new(
                ErrorCode::Expired,
                "the session was idle past its TTL and has ended",
            ),
            Some(Cause::Dropped) => ProtoError::new(ErrorCode::Dropped, "the session was dropped"),
            None => ProtoError::new(ErrorCode::NotFound, "no such session"),
        }
    }

    /// True when `id` ended as another user's session and is still remembered.
    fn ended_elsewhere(&self, id: Option<&str>, caller: &Caller) -> bool {
        id.and_then(|id| self.sessions.ended(id))
            .is_some_and(|t| t.owner != caller.name)
    }

    /// Starts a session for `caller`, if every cap allows one more: the server's and the
    /// token's session caps and the memory cap, all checked before anything is allocated.
    fn create_session(
        &mut self,
        p: &WsParams,
        caller: &Caller,
        now: Instant,
    ) -> Result<usize, ProtoError> {
        let allowed = if self.shutting_down {
            Err(ProtoError::new(
                ErrorCode::Limit,
                "the server is shutting down",
            ))
        } else {
            self.sessions
                .may_create(&caller.name, caller.max_sessions, self.limits.max_sessions)
                .and_then(|()| {
                    self.limits
                        .admit(self.usage(), Charge::Session)
                        .map_err(|_| ProtoError::new(ErrorCode::Memory, "--max-memory reached"))
                })
        };
        if let Err(e) = allowed {
            self.counters.sessions_refused += 1;
            return Err(e);
        }
        let spawn = Spawn {
            id: p.session.as_deref(),
            owner: &caller.name,
            command: &self.command,
            account: caller.account.as_deref(),
            size: (p.cols.unwrap_or(80), p.rows.unwrap_or(24)),
            scrollback: self.limits.scrollback,
        };
        let when = (now, unix_now().as_secs());
        let (key, generation) = self.sessions.spawn(spawn, self.poll.registry(), when)?;
        self.wheel
            .insert(now + self.limits.ttl, Timer::Ttl(key, generation));
        if self.sampler.arm() {
            self.wheel.insert(now + TICK, Timer::Sample);
        }
        self.touched.sessions.push(key);
        Ok(key)
    }

    // ---- PTYs, children and signals --------------------------------------------------

    fn on_signal(&mut self, sig: signals::Event, now: Instant) {
        match sig {
            signals::Event::Child => {
                let mut exits = Vec::new();
                pty::reap_all(|pid, st| exits.push((pid, st)));
                for (pid, st) in exits {
                    self.on_child_exit(pid, st);
                }
            }
            signals::Event::Shutdown => self.begin_shutdown(now),
            signals::Event::Upgrade => {
                if let Err(why) = self.request_upgrade(None, now) {
                    eprintln!("keepty: upgrade refused: {why}; serving on");
                }
            }
            signals::Event::Reload => {
                // Sessions and clients stay as they are; only new requests see new tokens.
                self.gate.reload();
                self.layer.reload();
            }
        }
    }

    fn on_child_exit(&mut self, pid: i32, st: ExitStatus) {
        let Some(skey) = self.sessions.on_reaped(pid) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(skey) {
            s.on_reaped(st);
            self.touched.sessions.push(skey);
        }
    }

    /// Ends session `skey` for good (TTL or drop): clients are told and closed, the process
    /// group gets SIGHUP now and SIGKILL in 3 s, the ring is freed, and the id is remembered.
    fn teardown(&mut self, skey: usize, cause: Cause, now: Instant) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let (msg, code, word) = match cause {
            Cause::Expired => (ServerMsg::Expired, protocol::CLOSE_EXPIRED, "expired"),
            Cause::Dropped => (ServerMsg::Dropped, protocol::CLOSE_DROPPED, "dropped"),
        };
        for c in s.clients().to_vec() {
            let generation = self.conns.generation(c);
            if let (Some(w), Some(generation)) = (self.conns.ws_mut(c), generation) {
                w.send(&msg);
                w.close_with(code, "");
                w.detach();
                self.wheel.insert(now + LINGER, Timer::Conn(c, generation));
                self.touched.conns.push(c);
            }
        }
        if self.sessions.tombstone_count() == 0 {
            self.wheel.insert(now + TOMBSTONE_KEEP, Timer::Tombstones);
        }
        let Some(mut ended) = self.sessions.end(skey, cause, now) else {
            return;
        };
        let s = &mut ended.session;
        let cgroup = s.take_cgroup();
        if let Some(pty) = s.close_pty() {
            let fd = pty.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            pty.signal_group(Signal::SIGHUP);
        }
        // Everything the session started, `setsid` daemons included, is in its cgroup, which
        // lists them without a scan of /proc. Without one, jobs in process groups of their
        // own get the hangup through the (bounded) scan by session.
        match &cgroup {
            Some(cg) => cg.signal(Signal::SIGHUP),
            None if ended.leader_alive => pty::signal_session(s.pid(), Signal::SIGHUP),
            None => {}
        }
        if ended.leader_alive || cgroup.is_some() {
            self.wheel.insert(now + KILL_AFTER, Timer::Kill(s.pid()));
        }
        if let Some(cg) = cgroup {
            self.sessions.hold_until_killed(s.pid(), cg);
        }
        match cause {
            Cause::Expired => self.counters.sessions_reaped += 1,
            Cause::Dropped => self.counters.sessions_dropped += 1,
        }
        eprintln!("keepty: session {} {word} (pid {})", s.id(), s.pid());
    }

    // ---- time ------------------------------------------------------------------------

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Conn(k, generation) => self.conn_deadline(k, generation, now),
            Timer::Ping(k, generation) => self.relay().ping_tick(k, generation),
            Timer::Ttl(skey, generation) => {
                let Some(s) = self.sessions.bound((skey, generation)) else {
                    return;
                };
                // An attached session is in use whatever its clients send; otherwise the TTL
                // counts from the last activity. Either way the check follows the deadline.
                let due = if s.is_attached() {
                    now + self.limits.ttl
                } else {
                    s.last_seen() + self.limits.ttl
                };
                if due > now {
                    self.wheel.insert(due, t);
                } else {
                    self.teardown(skey, Cause::Expired, now);
                }
            }
            Timer::Kill(sid) => {
                // Dropping the cgroup kills all inside and removes it.
                if let Some(cg) = self.sessions.take_dying(sid) {
                    drop(cg);
                } else if !self.sessions.leads_a_session(sid) {
                    // The pid may have been reused by a new session in the meantime: then
                    // leave it be.
                    pty::signal_session(sid, Signal::SIGKILL);
                }
                if cgroup::sweep_and_rearm(false) {
                    self.wheel
                        .insert(now + cgroup::SWEEP_AFTER, Timer::SweepCgroups);
                }
            }
            Timer::SweepCgroups => {
                if cgroup::sweep_and_rearm(true) {
                    self.wheel
                        .insert(now + cgroup::SWEEP_AFTER, Timer::SweepCgroups);
                }
            }
            Timer::Tombstones => {
                if let Some(next) = self.sessions.expire_tombstones(now) {
                    self.wheel.insert(next, Timer::Tombstones);
                }
            }
            Timer::KillOrphans => {
                for &pid in self.sessions.orphans() {
                    if !self.sessions.has_cgroup(pid) {
                        pty::signal_session(pid, Signal::SIGKILL);
                    }
                }
                self.sessions.kill_dying();
                for (_, s) in self.sessions.iter() {
                    s.kill_all();
                }
            }
            Timer::ExitNow => {
                eprintln!("keepty: children did not all exit in time; exiting anyway");
                self.exit_now = true;
            }
            Timer::Accept => {
                self.acceptor.resume();
                self.accept_all(now);
            }
            Timer::Sample => {
                if let Some(next) = self.sampler.tick(&mut self.sessions, now) {
                    self.wheel.insert(next, Timer::Sample);
                }
            }
            // Only wakes the loop: `run` executes once the upgrade is due.
            Timer::UpgradeNow => {}
            Timer::ReleaseHold(skey, generation) => self.release_hold((skey, generation)),
        }
    }

    /// A connection's head deadline, write stall or close linger came due.
    fn conn_deadline(&mut self, k: usize, generation: u64, now: Instant) {
        let expired = match self.conns.live_mut(k, generation) {
            Some(Kind::Http(h)) => {
                let expired = h.expired(now);
                // The deadline moved on (a new request, or response progress).
                if !expired && let Some(at) = h.rearm(now) {
                    self.wheel.insert(at, Timer::Conn(k, generation));
                }
                expired
            }
            Some(Kind::Ws(w)) => w.phase() != Phase::Open,
            _ => false,
        };
        if expired {
            self.relay().kill_conn(k);
        }
    }

    // ---- shutdown --------------------------------------------------------------------

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            eprintln!("keepty: second shutdown signal; exiting now");
            self.sessions.kill_dying();
            for (_, s) in self.sessions.iter() {
                s.kill_all();
            }
            self.exit_now = true;
            return;
        }
        eprintln!("keepty: shutting down");
        self.shutting_down = true;
        if let Some(mut l) = self.acceptor.close() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for k in self.conns.keys() {
            match self.conns.kind_mut(k) {
                Some(Kind::Ws(w)) => {
                    w.send(&ServerMsg::Shutdown);
                    w.close_with(protocol::CLOSE_GOING_AWAY, "shutdown");
                    self.relay().detach_ws(k);
                }
                // A response being written finishes; it closes after (see `respond`).
                Some(Kind::Http(h)) if h.is_writing() => {}
                _ => self.relay().kill_conn(k),
            }
        }
        for (_, s) in self.sessions.iter() {
            s.hang_up();
        }
        self.wheel.insert(now + KILL_AFTER, Timer::KillOrphans);
        self.wheel
            .insert(now + KILL_AFTER + EXIT_GRACE, Timer::ExitNow);
    }

    fn finished(&self) -> bool {
        self.conns.is_empty() && self.sessions.all_reaped()
    }

    // ---- the end of each turn --------------------------------------------------------

    /// Services everything the batch touched, then frees closed connections.
    fn settle(&mut self, now: Instant) {
        // Servicing can touch more (a paused writer resumes, a client detaches): loop until
        // quiet, bounded so one turn cannot spin.
        for _ in 0..SETTLE_ROUNDS {
            if self.touched.is_empty() {
                break;
            }
            let sessions = self.touched.take_sessions();
            for &s in &sessions {
                self.relay().service_session(s);
            }
            self.touched.done_sessions(sessions);
            let conns = self.touched.take_conns();
            for &k in &conns {
                self.service_conn(k, now);
            }
            self.touched.done_conns(conns);
        }
        if !self.touched.is_empty() {
            self.busy = true;
        }
        self.conns.reap(self.poll.registry());
    }

    fn service_conn(&mut self, k: usize, now: Instant) {
        match self.conns.kind_mut(k) {
            Some(Kind::Http(_)) => self.drive_http(k, now),
            Some(Kind::Ws(_)) => self.relay().service_ws(k),
            _ => {}
        }
    }
}
