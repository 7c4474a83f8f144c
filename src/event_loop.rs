//! The server: one thread, one `mio::Poll` over the listener, every connection, every PTY
//! master and the signal source.
//!
//! Each turn: poll, dispatch every event (sources are edge-triggered, so each is drained to
//! `WouldBlock` or its readiness is remembered), fire due timers, move output from PTYs into
//! rings and from rings to clients until nothing moves, then free what was closed. Slab slots
//! are freed only after the batch, so an event for a closed connection never reaches a new one
//! in the same slot.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use nix::sys::signal::Signal;
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use tungstenite::Message;

use crate::access::auth::{self, FailureLimiter, Tokens};
use crate::api::admin;
use crate::api::assets;
use crate::api::protocol::{self, ClientMsg, ErrorCode, ProtoError, Role, ServerMsg, WsParams};
use crate::config::{Config, DetachedOutput};
use crate::net::http::{self, Request, Response, Route};
use crate::net::listener::{self, Accepted};
use crate::net::stream::Stream;
use crate::net::ws::{self, Incoming, Phase, WsConn};
use crate::sessions::policy::Admission;
use crate::sessions::pty::{self, ExitStatus, Pty};
use crate::sessions::session::{self, Session, State};
use crate::sessions::tombstones::{self, Cause, Tombstones};
use crate::signals;
use crate::timer::Wheel;
use crate::token::{self, Source};

/// Timer wheel slot width. It sets only how timers are filed, not how often the server wakes:
/// the poll timeout is the exact next deadline, so an idle server sleeps until its next real
/// timer (a ping 20 s away per attached client, a TTL hours away) and a Pi's CPU stays in its
/// idle state. Every deadline here is seconds long, so 100 ms slots lose no precision that
/// matters while keeping one lap (1024 slots) at 102 s, past every short timer.
const TICK: Duration = Duration::from_millis(100);
/// How long a closing connection may take to answer our close or finish its request.
const LINGER: Duration = Duration::from_secs(2);
/// How long a peer may take none of a response before it is dropped. A slow phone link still
/// makes progress and keeps extending this; a peer that stopped reading does not.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// Messages read from one WebSocket before the others get a turn: a client flooding pings or
/// control messages must not starve every other session.
const WS_READ_BUDGET: usize = 64;
/// Steps (a read, a parsed request, a write) taken for one HTTP connection before the others
/// get a turn: an endless pipeline must not starve every other session.
const HTTP_STEP_BUDGET: usize = 64;
/// From SIGHUP to SIGKILL when a session is torn down.
const KILL_AFTER: Duration = Duration::from_secs(3);
/// How long after SIGKILL the server waits for the last children before it exits anyway.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Unfinished requests allowed from one peer address.
const PENDING_PER_PEER: usize = 8;
/// How long to wait before retrying `accept` after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(500);
/// Memory charged per HTTP connection (one that has not upgraded) against `--max-memory`:
/// its request head and its structs. Response bodies are the embedded files (static) or
/// small JSON built and freed per request. Charging the WebSocket's buffers only at the
/// upgrade keeps unfinished requests (a slowloris) from eating a small cap: 32 pending
/// connections hold about 0.3 MiB, not 8 MiB.
pub const HTTP_RESERVE: usize = http::MAX_HEAD + 2048;

/// Memory charged per WebSocket connection against `--max-memory`, the most its buffers can
/// hold: tungstenite's read buffer, a partial frame and an assembled message (64 KiB each), its
/// write buffer cap, the tail of a part-written output frame, a request head, and the
/// connection's own structs.
pub const CONN_RESERVE: usize = ws::READ_BUFFER
    + 2 * protocol::MAX_MESSAGE
    + ws::MAX_WRITE_BUFFER
    + ws::MAX_HEADER
    + ws::CHUNK
    + http::MAX_HEAD
    + 2048;

/// Time-based work, keyed so a stale entry (its object gone or reused) is recognised.
#[derive(Clone, Copy, Debug)]
enum Timer {
    /// A connection's head deadline or close linger: (slot, generation).
    Conn(usize, u64),
    /// A WebSocket's ping tick: ping, and close it if silent or stalled.
    Ping(usize, u64),
    /// A session's TTL check: (slot, generation).
    Ttl(usize, u64),
    /// SIGKILL what is left of a torn-down session (by its session id = leader pid).
    Kill(i32),
    /// Forget tombstones that are due.
    Tombstones,
    /// Shutdown: SIGKILL what is left of every session.
    KillOrphans,
    /// Shutdown: stop waiting for children.
    ExitNow,
    /// Try `accept` again after EMFILE.
    Accept,
}

/// What happens after an HTTP response is written.
enum After {
    KeepAlive,
    Close,
    Upgrade(Result<WsParams, ProtoError>, Caller),
    /// Upgrade to the conformance-test echo socket.
    #[cfg(feature = "echo")]
    Echo,
}

/// The authenticated user behind a request.
struct Caller {
    name: String,
    max_sessions: Option<usize>,
}

#[cfg(feature = "echo")]
impl Caller {
    fn echo() -> Caller {
        Caller {
            name: String::new(),
            max_sessions: Some(0),
        }
    }
}

/// Events counted for the metrics.
#[derive(Default)]
struct Stats {
    sessions_reaped: u64,
    sessions_dropped: u64,
    sessions_refused: u64,
    connections_refused: u64,
    auth_failures: u64,
}

enum HttpPhase {
    Reading,
    Writing {
        head: Vec<u8>,
        body: Cow<'static, [u8]>,
        pos: usize,
        after: After,
    },
    /// Response sent and write side shut: discard what the peer still sends until it closes,
    /// so unread bytes do not make the kernel reset the connection under our response.
    Lingering,
}

struct HttpConn {
    stream: Stream,
    peer: SocketAddr,
    buf: Vec<u8>,
    phase: HttpPhase,
    /// When this connection is dropped unless it progresses (head, write stall or linger).
    deadline: Instant,
    /// The earliest wheel entry pending for this connection.
    timer_at: Instant,
}

impl HttpConn {
    /// Makes sure a wheel entry fires at or before `deadline`. Deadlines move often (every
    /// write extends the stall deadline) but an entry is added only when none pending covers
    /// the new one, so a connection has at most a couple of entries however long it lives.
    fn arm(&mut self, wheel: &mut Wheel<Timer>, timer: Timer, now: Instant) {
        if !(self.timer_at > now && self.timer_at <= self.deadline) {
            wheel.insert(self.deadline, timer);
            self.timer_at = self.deadline;
        }
    }
}

// Both boxed: the slab stays a dense array of small slots whichever kind a slot holds.
enum ConnKind {
    Http(Box<HttpConn>),
    Ws(Box<WsConn>),
    /// Being converted or removed.
    Gone,
}

struct Conn {
    generation: u64,
    kind: ConnKind,
    dead: bool,
    /// Has not finished its first request head: counted against `--max-pending`, not
    /// `--max-clients`, so a slowloris cannot take the client slots.
    pending: Option<IpAddr>,
}

/// The live WebSocket in slot `k`, if that is what it holds. Takes the slab, not the server,
/// so callers can hold it while touching the session table.
fn live_ws(conns: &mut Slab<Conn>, k: usize) -> Option<&mut WsConn> {
    match conns.get_mut(k) {
        Some(Conn {
            kind: ConnKind::Ws(w),
            dead: false,
            ..
        }) => Some(w),
        _ => None,
    }
}

/// The WebSocket in slot `k`, live or closing, read-only.
fn any_ws(conns: &Slab<Conn>, k: usize) -> Option<&WsConn> {
    match conns.get(k) {
        Some(Conn {
            kind: ConnKind::Ws(w),
            ..
        }) => Some(w),
        _ => None,
    }
}

/// The live HTTP connection in slot `k`.
fn live_http(conns: &mut Slab<Conn>, k: usize) -> Option<&mut HttpConn> {
    match conns.get_mut(k) {
        Some(Conn {
            kind: ConnKind::Http(h),
            dead: false,
            ..
        }) => Some(h),
        _ => None,
    }
}

/// The running server.
pub struct Server {
    cfg: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    conns: Slab<Conn>,
    sessions: Slab<Session>,
    ids: HashMap<String, usize>,
    pids: HashMap<i32, usize>,
    /// Children of sessions already torn down, awaiting SIGKILL/reap.
    orphans: Vec<i32>,
    tombstones: Tombstones,
    /// Connections still sending their first request head, in all and per peer address.
    pending: usize,
    pending_by_ip: HashMap<IpAddr, usize>,
    /// The time of the current turn, for code deep in a call chain that needs it.
    now: Instant,
    wheel: Wheel<Timer>,
    generation: u64,
    dead: Vec<usize>,
    touched_sessions: Vec<usize>,
    touched_conns: Vec<usize>,
    /// Some session stopped reading for fairness with data left: poll without sleeping.
    busy: bool,
    shutting_down: bool,
    exit_now: bool,
    accept_paused: bool,
    /// Accept last failed for lack of file descriptors (for logging the transitions).
    out_of_fds: bool,
    tokens: Tokens,
    failures: FailureLimiter,
    stats: Stats,
    started: Instant,
    /// The wall clock at `started`, in milliseconds: monotonic instants shown as Unix times
    /// are converted through this one anchor, so a time shown twice reads the same.
    started_unix_ms: u128,
    /// TLS state when serving HTTPS (feature `tls`).
    #[cfg(feature = "tls")]
    tls: Option<crate::net::tls::Tls>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the token files and logs what was loaded (counts and warnings, never a token).
fn load_tokens(cfg: &Config) -> Result<Tokens, String> {
    let loaded = Tokens::load(cfg.token_file.as_deref(), cfg.admin_token_file.as_deref())?;
    for w in &loaded.warnings {
        eprintln!("keepty: warning: {w}");
    }
    let (users, admins) = loaded.tokens.counts();
    eprintln!(
        "keepty: auth: {}; admin: {}",
        users.map_or(
            "no token file, every request is user local".to_string(),
            |n| format!("{n} user tokens")
        ),
        admins.map_or("loopback peers only".to_string(), |n| format!(
            "{n} admin tokens"
        ))
    );
    Ok(loaded.tokens)
}

/// The token in `Authorization: Bearer TOKEN`.
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.header("authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
}

/// The token a browser sends as the subprotocol `keepty.token.BASE64URL(TOKEN)`.
fn subprotocol_token(req: &Request) -> Option<Vec<u8>> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .find_map(|p| p.trim().strip_prefix("keepty.token."))
        .and_then(auth::base64url_decode)
}

fn too_many_failures() -> Response {
    Response::error(
        429,
        "limit",
        "too many failed attempts from this address; try again in a minute",
    )
}

/// A request with a side effect must not come from another site: a link or an image
/// elsewhere would otherwise be enough to drop sessions.
fn check_fetch_site(req: &Request, route: &Route) -> Result<(), Response> {
    match req.header("sec-fetch-site") {
        Some(site) if route.has_side_effect() && !matches!(site.trim(), "same-origin" | "none") => {
            Err(Response::error(
                403,
                "forbidden",
                "a request from another site cannot change sessions",
            ))
        }
        _ => Ok(()),
    }
}

fn random_id() -> io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(protocol::encode_id(&b))
}

impl Server {
    /// Binds the listener and installs signal handling. Nothing is served until [`run`].
    ///
    /// [`run`]: Server::run
    pub fn bind(cfg: Config) -> io::Result<Server> {
        let tokens =
            load_tokens(&cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        #[cfg(feature = "tls")]
        let tls = crate::net::tls::Tls::from_config(&cfg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(cfg.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, token::LISTENER, Interest::READABLE)?;
        let mut signals = signals::install()?;
        poll.registry()
            .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
        Ok(Server {
            wheel: Wheel::new(TICK, Instant::now()),
            cfg,
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            conns: Slab::new(),
            sessions: Slab::new(),
            ids: HashMap::new(),
            pids: HashMap::new(),
            orphans: Vec::new(),
            tombstones: Tombstones::default(),
            pending: 0,
            pending_by_ip: HashMap::new(),
            now: Instant::now(),
            generation: 0,
            dead: Vec::new(),
            touched_sessions: Vec::new(),
            touched_conns: Vec::new(),
            busy: false,
            shutting_down: false,
            exit_now: false,
            accept_paused: false,
            out_of_fds: false,
            tokens,
            failures: FailureLimiter::default(),
            stats: Stats::default(),
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    /// The SHA-256 fingerprint of the certificate served, when serving HTTPS.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            return Some(&t.fingerprint);
        }
        None
    }

    /// Memory a connection holds beyond its HTTP or WebSocket buffers: rustls's, with TLS.
    fn conn_overhead(&self) -> usize {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return crate::net::tls::CONN_OVERHEAD;
        }
        0
    }

    /// Wraps an accepted socket: as is, or as the server side of a TLS handshake.
    fn wrap(&self, stream: TcpStream) -> io::Result<Stream> {
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            let t = crate::net::stream::TlsStream::new(stream, t.config.clone())?;
            return Ok(Stream::Tls(Box::new(t)));
        }
        Ok(Stream::Plain(stream))
    }

    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Serves until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut fired = Vec::new();
        let mut sig_events = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = if self.busy {
                Some(Duration::ZERO)
            } else {
                self.wheel
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(now))
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
                match token::decode(ev.token()) {
                    Source::Listener => self.accept_all(now),
                    Source::Signals => {
                        signals::drain(&mut self.signals, &mut sig_events);
                        for s in sig_events.drain(..) {
                            self.on_signal(s, now);
                        }
                    }
                    Source::Conn(k) => {
                        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                            self.on_conn_writable(k);
                        }
                        self.on_conn_readable(k, now);
                        self.touched_conns.push(k);
                    }
                    Source::Pty(k) => self.on_pty_event(k),
                }
            }
            self.wheel.poll(now, &mut fired);
            for t in fired.drain(..) {
                self.on_timer(t, now);
            }
            self.settle(now);
            if self.exit_now || (self.shutting_down && self.finished()) {
                eprintln!("keepty: shutdown complete");
                return Ok(());
            }
        }
    }

    // ---- accepting -------------------------------------------------------------------

    fn accept_all(&mut self, now: Instant) {
        if self.accept_paused {
            return;
        }
        loop {
            let Some(l) = &self.listener else { return };
            match listener::accept(l) {
                Ok(Accepted::Conn(stream, peer)) => {
                    if std::mem::take(&mut self.out_of_fds) {
                        eprintln!("keepty: file descriptors available again; accepting");
                    }
                    self.add_conn(stream, peer, now)
                }
                Ok(Accepted::Drained) => return,
                Ok(Accepted::OutOfFds) => {
                    // One line when it starts, not one per retry.
                    if !std::mem::replace(&mut self.out_of_fds, true) {
                        eprintln!("keepty: out of file descriptors; retrying accept every 500 ms");
                    }
                    self.accept_paused = true;
                    self.wheel.insert(now + ACCEPT_RETRY, Timer::Accept);
                    return;
                }
                Err(e) => {
                    eprintln!("keepty: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Memory reserved against `--max-memory`: every ring in full, every connection at its
    /// buffers' caps, every tombstone. Checked before anything is created, so the cap holds.
    fn memory_reserved(&self) -> usize {
        let ws = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, ConnKind::Ws(_)))
            .count();
        self.sessions.len() * self.session_reserve()
            + ws * CONN_RESERVE
            + (self.conns.len() - ws) * HTTP_RESERVE
            + self.conns.len() * self.conn_overhead()
            + self.tombstones.len() * tombstones::RESERVE
    }

    /// Memory charged per session: its ring, and its input queue at the most it can hold.
    fn session_reserve(&self) -> usize {
        self.cfg.scrollback + session::INPUT_RESERVE
    }

    /// Connections past their first request head: the ones `--max-clients` counts.
    fn active_conns(&self) -> usize {
        self.conns.len() - self.pending
    }

    fn add_conn(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let ip = peer.ip();
        let from_peer = self.pending_by_ip.get(&ip).copied().unwrap_or(0);
        // Over TLS a refusal cannot be read before a handshake we will not do: just close.
        let tls = self.is_tls();
        if self.pending >= self.cfg.max_pending || from_peer >= PENDING_PER_PEER {
            eprintln!("keepty: refused connection from {peer}: too many unfinished requests");
            self.stats.connections_refused += 1;
            if !tls {
                listener::refuse(stream, 429, "limit", "too many unfinished requests");
            }
            return;
        }
        if self.memory_reserved() + HTTP_RESERVE + self.conn_overhead() > self.cfg.max_memory {
            eprintln!("keepty: refused connection from {peer}: --max-memory reached");
            self.stats.connections_refused += 1;
            if !tls {
                listener::refuse(stream, 503, "memory", "memory cap reached");
            }
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut stream = match self.wrap(stream) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keepty: cannot start TLS with {peer}: {e}");
                return;
            }
        };
        let generation = self.next_generation();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token::conn(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            eprintln!("keepty: cannot register connection from {peer}: {e}");
            return;
        }
        let deadline = now + self.cfg.header_timeout;
        entry.insert(Conn {
            generation,
            kind: ConnKind::Http(Box::new(HttpConn {
                stream,
                peer,
                buf: Vec::new(),
                phase: HttpPhase::Reading,
                deadline,
                timer_at: deadline,
            })),
            dead: false,
            pending: Some(ip),
        });
        self.pending += 1;
        *self.pending_by_ip.entry(ip).or_insert(0) += 1;
        self.wheel.insert(deadline, Timer::Conn(key, generation));
        self.touched_conns.push(key);
    }

    // ---- connections -----------------------------------------------------------------

    fn on_conn_writable(&mut self, k: usize) {
        // TLS records a write left in rustls go out now; an error shows on the next I/O.
        match self.conns.get_mut(k).map(|c| &mut c.kind) {
            Some(ConnKind::Http(h)) => {
                let _ = h.stream.flush_tls();
            }
            Some(ConnKind::Ws(w)) => w.on_writable(),
            _ => {}
        }
    }

    fn on_conn_readable(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.dead {
            return;
        }
        match conn.kind {
            ConnKind::Http(_) => self.drive_http(k, now),
            ConnKind::Ws(_) => self.read_ws(k, now),
            ConnKind::Gone => {}
        }
    }

    /// Marks a connection for removal and detaches it from its session at once, so the
    /// session's read budget no longer waits for it.
    fn kill_conn(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.dead {
            return;
        }
        conn.dead = true;
        self.dead.push(k);
        self.end_pending(k);
        let conn = &mut self.conns[k];
        if let ConnKind::Ws(w) = &mut conn.kind {
            w.finish();
            if let Some((s, _)) = w.detach() {
                self.detach(s, k);
            }
        }
    }

    /// A connection's first request head is complete (or it is gone): it no longer counts
    /// as pending.
    fn end_pending(&mut self, k: usize) {
        let Some(ip) = self.conns.get_mut(k).and_then(|c| c.pending.take()) else {
            return;
        };
        self.pending -= 1;
        if let Some(n) = self.pending_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_by_ip.remove(&ip);
            }
        }
    }

    fn detach(&mut self, skey: usize, k: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        // multi: the oldest viewer takes over the keyboard.
        let promoted = s.seats.leave(self.cfg.attach_policy, k);
        // It was attached until now, so it was seen until now.
        s.touch(self.now);
        if let Some(w) = any_ws(&self.conns, k) {
            eprintln!("keepty: session {} detached by {}", s.id, w.peer());
        }
        self.touched_sessions.push(skey);
        if let Some(next) = promoted {
            self.announce_writer(skey, None, next);
        }
    }

    /// Tells the clients of session `skey` that the keyboard moved from `old` (now a viewer,
    /// if still attached) to `k`, and has the program repaint for the new writer.
    fn announce_writer(&mut self, skey: usize, old: Option<usize>, k: usize) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if let Some(old) = old
            && let Some(w) = live_ws(&mut self.conns, old)
        {
            w.set_role(Role::Viewer);
            self.touched_conns.push(old);
        }
        if let Some(w) = live_ws(&mut self.conns, k) {
            // A writer is protected from being overwritten from here on: what it still needs
            // is what it has been sent (or acked), which the ring holds right now.
            w.set_role(Role::Writer);
            eprintln!("keepty: session {} writer is now {}", s.id, w.peer());
            self.touched_conns.push(k);
        }
        if let Some(pty) = &s.pty {
            pty.nudge_redraw();
        }
        self.touched_sessions.push(skey);
    }

    /// Advances an HTTP connection as far as it can go without blocking.
    fn drive_http(&mut self, k: usize, now: Instant) {
        let Some(generation) = self.conns.get(k).map(|c| c.generation) else {
            return;
        };
        for _ in 0..HTTP_STEP_BUDGET {
            let Some(h) = live_http(&mut self.conns, k) else {
                return;
            };
            match &mut h.phase {
                HttpPhase::Reading => match http::parse_head(&h.buf) {
                    Ok(Some((req, n))) => {
                        h.buf.drain(..n);
                        let peer = h.peer;
                        let was_pending = self.conns[k].pending.is_some();
                        self.end_pending(k);
                        let (resp, after) = if was_pending
                            && self.active_conns() > self.cfg.max_clients
                        {
                            eprintln!("keepty: refused request from {peer}: --max-clients reached");
                            self.stats.connections_refused += 1;
                            (
                                Response::error(429, "limit", "too many connections"),
                                After::Close,
                            )
                        } else {
                            self.handle_request(&req, peer, now)
                        };
                        self.start_response(k, &req, resp, after, now);
                    }
                    Ok(None) => {
                        let mut chunk = [0u8; 2048];
                        let room = http::MAX_HEAD - h.buf.len();
                        match h.stream.read(&mut chunk[..room.min(2048)]) {
                            Ok(0) => return self.kill_conn(k),
                            Ok(n) => h.buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                                // A TLS failure: not a client hello, a bad handshake.
                                eprintln!("keepty: TLS failed with {}: {e}", h.peer);
                                return self.kill_conn(k);
                            }
                            Err(_) => return self.kill_conn(k),
                        }
                    }
                    Err(e) => {
                        let peer = h.peer;
                        eprintln!("keepty: bad request from {peer}: {e:?}");
                        let req = Request::default();
                        self.start_response(k, &req, e.response(), After::Close, now);
                    }
                },
                HttpPhase::Writing {
                    head,
                    body,
                    pos,
                    after: _,
                } => {
                    let total = head.len() + body.len();
                    while *pos < total {
                        let r = if *pos < head.len() {
                            // One syscall for head and body when both fit.
                            h.stream.write_vectored(&[
                                io::IoSlice::new(&head[*pos..]),
                                io::IoSlice::new(body),
                            ])
                        } else {
                            h.stream.write(&body[*pos - head.len()..])
                        };
                        match r {
                            Ok(0) => return self.kill_conn(k),
                            Ok(n) => {
                                *pos += n;
                                h.deadline = now + WRITE_STALL;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return self.kill_conn(k),
                        }
                    }
                    // With TLS the last records may still be in rustls: they must be on the
                    // socket before a close, and before the WebSocket takes the stream over
                    // is merely tidier.
                    match h.stream.flush() {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return self.kill_conn(k),
                    }
                    let HttpPhase::Writing { after, .. } =
                        std::mem::replace(&mut h.phase, HttpPhase::Reading)
                    else {
                        return;
                    };
                    match after {
                        After::KeepAlive => {
                            // A new request gets a fresh head deadline.
                            h.deadline = now + self.cfg.header_timeout;
                            h.arm(&mut self.wheel, Timer::Conn(k, generation), now);
                        }
                        After::Close => {
                            h.stream.shutdown_write();
                            h.phase = HttpPhase::Lingering;
                            h.deadline = now + LINGER;
                            h.arm(&mut self.wheel, Timer::Conn(k, generation), now);
                        }
                        After::Upgrade(params, caller) => {
                            return self.upgrade(k, params, caller, now);
                        }
                        #[cfg(feature = "echo")]
                        After::Echo => return self.upgrade_echo(k, now),
                    }
                }
                HttpPhase::Lingering => {
                    let mut sink = [0u8; 2048];
                    match h.stream.read(&mut sink) {
                        Ok(0) => return self.kill_conn(k),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.kill_conn(k),
                    }
                }
            }
        }
        // Budget spent (an endless pipeline, say): resume from the touched list after
        // everyone else had a turn, since no new event may come.
        self.touched_conns.push(k);
    }

    fn start_response(
        &mut self,
        k: usize,
        req: &Request,
        mut resp: Response,
        after: After,
        now: Instant,
    ) {
        let Some(h) = live_http(&mut self.conns, k) else {
            return;
        };
        // A request body is never expected; rather than parse one, end the connection after
        // answering so its bytes are not mistaken for the next request.
        let after = match after {
            After::KeepAlive if !req.keep_alive() || req.has_body() || self.shutting_down => {
                After::Close
            }
            a => a,
        };
        if req.method == "HEAD" {
            resp.omit_body = true;
        }
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|t| t.hsts()) {
            // A year, the usual; no includeSubDomains: other names on the box are not ours.
            resp.headers.push((
                "Strict-Transport-Security",
                Cow::Borrowed("max-age=31536000"),
            ));
        }
        let (head, body) = match &after {
            #[cfg(feature = "echo")]
            After::Echo => (
                std::mem::take(&mut resp.body).into_owned(),
                Cow::Borrowed(&[][..]),
            ),
            After::Upgrade(..) => (
                std::mem::take(&mut resp.body).into_owned(),
                Cow::Borrowed(&[][..]),
            ),
            _ => {
                let head = resp.encode_head(matches!(after, After::KeepAlive));
                let body = if resp.omit_body {
                    Cow::Borrowed(&[][..])
                } else {
                    resp.body
                };
                (head, body)
            }
        };
        h.phase = HttpPhase::Writing {
            head,
            body,
            pos: 0,
            after,
        };
        // The head deadline is met; from here the peer only has to keep taking the response.
        h.deadline = now + WRITE_STALL;
    }

    /// Answers one request. Returns the response and what happens after it is written.
    fn handle_request(
        &mut self,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> (Response, After) {
        if let Err(resp) = self.check_host(req) {
            eprintln!("keepty: refused request from {peer}: Host not allowed");
            return (resp, After::Close);
        }
        match http::route(req) {
            Route::Asset(a) => (Response::asset(req, a), After::KeepAlive),
            Route::Health => (
                Response::new(200, "text/plain; charset=utf-8", &b"ok\n"[..]),
                After::KeepAlive,
            ),
            Route::NotFound => (
                Response::error(404, "not_found", "no such page"),
                After::KeepAlive,
            ),
            Route::MethodNotAllowed(allow) => {
                let mut r = Response::error(405, "method_not_allowed", "method not allowed here");
                r.headers.push(("Allow", Cow::Borrowed(allow)));
                (r, After::KeepAlive)
            }
            // The same handshake checks as /ws, but no token and no session: a test build's
            // Autobahn run exercises the frame path.
            #[cfg(feature = "echo")]
            Route::Echo => match self.handshake(req, Caller::echo()) {
                (r, After::Upgrade(..)) => (r, After::Echo),
                other => other,
            },
            Route::WebSocket => match self.authenticate_user(req, peer, now) {
                Ok(caller) => self.handshake(req, caller),
                Err(resp) => (resp, After::Close),
            },
            Route::ApiSessions => match self.authenticate_user(req, peer, now) {
                Ok(caller) => {
                    // A user sees its own sessions, not the operator's limits and memory.
                    let list = self.session_list(now, Some(&caller.name));
                    let body = serde_json::json!({ "now": list.now, "sessions": list.sessions });
                    (Response::json(200, &body), After::KeepAlive)
                }
                Err(resp) => (resp, After::KeepAlive),
            },
            route => {
                if let Err(resp) = self
                    .check_origin(req)
                    .and_then(|()| self.authenticate_admin(req, peer, now))
                    .and_then(|()| check_fetch_site(req, &route))
                {
                    return (resp, After::KeepAlive);
                }
                (self.admin(req, &route, now), After::KeepAlive)
            }
        }
    }

    /// The user a request acts as: `local` without a token file, else the owner of the
    /// token it carries (Bearer, or the `keepty.token.` subprotocol for browsers).
    fn authenticate_user(
        &mut self,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Caller, Response> {
        if !self.tokens.users_required() {
            return Ok(Caller {
                name: auth::LOCAL_USER.to_string(),
                max_sessions: None,
            });
        }
        // The block is on guessing tokens, so it applies where a token is checked.
        if self.failures.blocked(peer.ip(), now) {
            return Err(too_many_failures());
        }
        let token = bearer(req)
            .map(<[u8]>::to_vec)
            .or_else(|| subprotocol_token(req));
        let Some(token) = token else {
            return Err(Response::error(
                401,
                "unauthorized",
                "a user token is required",
            ));
        };
        match self.tokens.user(&token) {
            Some(u) => Ok(Caller {
                name: u.name.clone(),
                max_sessions: u.max_sessions,
            }),
            None => Err(self.auth_failed(peer, now, "user")),
        }
    }

    /// Admin access: an admin token when an admin token file is configured, else a loopback
    /// peer.
    fn authenticate_admin(
        &mut self,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Response> {
        if !self.tokens.admins_required() {
            return if peer.ip().is_loopback() {
                Ok(())
            } else {
                Err(Response::error(
                    403,
                    "forbidden",
                    "without --admin-token-file the admin surface answers loopback peers only",
                ))
            };
        }
        if self.failures.blocked(peer.ip(), now) {
            return Err(too_many_failures());
        }
        let token = bearer(req)
            .map(<[u8]>::to_vec)
            .or_else(|| http::query_param(&req.query, "token").map(String::into_bytes));
        match token {
            None => Err(Response::error(
                401,
                "unauthorized",
                "an admin token is required",
            )),
            Some(t) if self.tokens.is_admin(&t) => Ok(()),
            Some(_) => Err(self.auth_failed(peer, now, "admin")),
        }
    }

    /// Counts a wrong token from `peer` (never logging it) and answers 401. Once the address
    /// has used up its attempts, its next requests get 429 (checked before any token).
    fn auth_failed(&mut self, peer: SocketAddr, now: Instant, kind: &str) -> Response {
        self.stats.auth_failures += 1;
        let blocked = self.failures.fail(peer.ip(), now);
        eprintln!(
            "keepty: wrong {kind} token from {}{}",
            peer.ip(),
            if blocked {
                "; refusing that address for a minute"
            } else {
                ""
            }
        );
        // This failure is answered as one; the block applies to the address's next requests.
        Response::error(401, "unauthorized", "wrong token")
    }

    /// The admin surface, once the caller is known to be an admin.
    fn admin(&mut self, req: &Request, route: &Route, now: Instant) -> Response {
        match route {
            Route::AdminSessions => {
                let list = self.session_list(now, None);
                if http::query_param(&req.query, "format").as_deref() == Some("text") {
                    Response::new(
                        200,
                        "text/plain; charset=utf-8",
                        admin::render_text(&list).into_bytes(),
                    )
                } else {
                    Response::json(200, &list)
                }
            }
            Route::AdminMetrics => {
                let list = self.session_list(now, None);
                let counters = admin::Counters {
                    sessions_reaped: self.stats.sessions_reaped,
                    sessions_dropped: self.stats.sessions_dropped,
                    sessions_refused: self.stats.sessions_refused,
                    connections_refused: self.stats.connections_refused,
                    auth_failures: self.stats.auth_failures,
                    uptime_secs: now.saturating_duration_since(self.started).as_secs(),
                };
                Response::new(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    admin::render_metrics(&list, &counters).into_bytes(),
                )
            }
            Route::AdminPage => match assets::get("/assets/admin.html") {
                Some(a) => Response::new(200, a.content_type, a.body()),
                None => Response::error(404, "not_found", "the admin page is not built in"),
            },
            Route::AdminDrop => {
                let Some(id) =
                    http::query_param(&req.query, "id").filter(|i| protocol::valid_id(i))
                else {
                    return Response::error(400, "bad_request", "id must be a valid session id");
                };
                let Some(&skey) = self.ids.get(&id) else {
                    return Response::error(404, "not_found", "no such session");
                };
                self.teardown(skey, Cause::Dropped, now);
                Response::json(200, &serde_json::json!({ "dropped": id }))
            }
            Route::AdminDropAll => {
                let count = self.sessions.len();
                let Some(confirm) =
                    http::query_param(&req.query, "confirm").and_then(|c| c.parse::<usize>().ok())
                else {
                    return Response::error(
                        400,
                        "bad_request",
                        "confirm=N is required, N being the current session count",
                    );
                };
                if confirm != count {
                    return Response::error(
                        409,
                        "confirm_mismatch",
                        &format!(
                            "confirm={confirm} but the session count is {count}; nothing dropped"
                        ),
                    );
                }
                let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.teardown(k, Cause::Dropped, now);
                }
                Response::json(200, &serde_json::json!({ "dropped": count }))
            }
            _ => Response::error(404, "not_found", "no such page"),
        }
    }

    /// The Host allowlist: the only defence against DNS rebinding, where an attacker's page
    /// reaches us under its own name with a matching Origin.
    fn check_host(&self, req: &Request) -> Result<(), Response> {
        // Two Host headers could be read differently by a proxy in front and by us.
        if req.headers.iter().filter(|(n, _)| n == "host").count() > 1 {
            return Err(Response::error(
                400,
                "bad_request",
                "more than one Host header",
            ));
        }
        let Some(host) = req.header("host") else {
            return Err(Response::error(400, "bad_request", "Host header required"));
        };
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p))
                if !n.is_empty()
                    && (n.starts_with('[') || !n.contains(':'))
                    && p.chars().all(|c| c.is_ascii_digit()) =>
            {
                (n.to_string(), Some(p.to_string()))
            }
            _ => (host.clone(), None),
        };
        if port.is_some_and(|p| p.parse::<u16>().ok() != Some(self.local_addr.port())) {
            return Err(Response::error(
                403,
                "forbidden",
                "Host does not name this server",
            ));
        }
        // An IP literal cannot be a rebinding attack (that needs a name the attacker's DNS
        // answers), and it is how an operator reaches a box listening on 0.0.0.0.
        let ip_literal = name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        let ok = ip_literal
            || name == "localhost"
            || self
                .cfg
                .allow_hosts
                .iter()
                .any(|h| *h == name || *h == host);
        if ok {
            Ok(())
        } else {
            Err(Response::error(
                403,
                "forbidden",
                "Host does not name this server",
            ))
        }
    }

    /// A request carrying `Origin` must come from our own origin or an allowed one.
    fn check_origin(&self, req: &Request) -> Result<(), Response> {
        let Some(origin) = req.header("origin") else {
            return Ok(());
        };
        // A browser sends one Origin; judging only the first of several would be a bypass.
        if req.headers.iter().filter(|(n, _)| n == "origin").count() > 1 {
            return Err(Response::error(403, "forbidden", "more than one Origin"));
        }
        let host = req.header("host").unwrap_or("");
        // Our own origin is the Host asked for under the scheme we serve; a TLS proxy in
        // front of a plain keepty is another origin and is named with --allow-origin.
        let scheme = if self.is_tls() { "https://" } else { "http://" };
        let own = origin
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && origin[scheme.len()..].eq_ignore_ascii_case(host);
        if own || self.cfg.allow_origins.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(Response::error(403, "forbidden", "Origin not allowed"))
        }
    }

    fn handshake(&mut self, req: &Request, caller: Caller) -> (Response, After) {
        if !req.is_upgrade() {
            return (
                Response::error(400, "bad_request", "expected a WebSocket upgrade"),
                After::KeepAlive,
            );
        }
        if req.header("sec-websocket-version").map(str::trim) != Some("13") {
            let mut r = Response::error(426, "bad_request", "WebSocket version 13 required");
            r.headers
                .push(("Sec-WebSocket-Version", Cow::Borrowed("13")));
            return (r, After::Close);
        }
        let Some(key) = req.ws_key() else {
            return (
                Response::error(
                    400,
                    "bad_request",
                    "one Sec-WebSocket-Key of 16 bytes in base64 required",
                ),
                After::Close,
            );
        };
        if let Err(resp) = self.check_origin(req) {
            return (resp, After::Close);
        }
        // The connection was charged as HTTP; as a WebSocket it may hold far more.
        if self.memory_reserved() - HTTP_RESERVE + CONN_RESERVE > self.cfg.max_memory {
            return (
                Response::error(503, "memory", "memory cap reached"),
                After::Close,
            );
        }
        let protocol = req
            .header_has_token("sec-websocket-protocol", "keepty.v1")
            .then_some("keepty.v1");
        let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
        let mut resp = Response::new(101, "", Vec::new());
        resp.body = Cow::Owned(http::upgrade_response(&accept, protocol));
        (
            resp,
            After::Upgrade(protocol::parse_ws_query(&req.query), caller),
        )
    }

    /// Turns an HTTP connection whose 101 is sent into a WebSocket client.
    fn upgrade(
        &mut self,
        k: usize,
        params: Result<WsParams, ProtoError>,
        caller: Caller,
        now: Instant,
    ) {
        let conn = &mut self.conns[k];
        let ConnKind::Http(h) = std::mem::replace(&mut conn.kind, ConnKind::Gone) else {
            return;
        };
        let mut w = Box::new(WsConn::new(h.stream, h.buf, h.peer));
        let result = params.and_then(|p| self.attach(k, &mut w, &p, &caller, now));
        if let Err(e) = result {
            eprintln!(
                "keepty: refused WebSocket from {}: {} ({})",
                w.peer(),
                e.code.name(),
                e.message
            );
            w.fail(&e);
            let generation = self.conns[k].generation;
            self.wheel.insert(now + LINGER, Timer::Conn(k, generation));
        }
        self.conns[k].kind = ConnKind::Ws(w);
        let generation = self.conns[k].generation;
        self.wheel
            .insert(now + self.cfg.ping_interval, Timer::Ping(k, generation));
        self.touched_conns.push(k);
        // Frames that came with the request head are already buffered in tungstenite.
        self.read_ws(k, now);
    }

    /// Turns an HTTP connection whose 101 is sent into an echo socket (test builds only).
    #[cfg(feature = "echo")]
    fn upgrade_echo(&mut self, k: usize, now: Instant) {
        let conn = &mut self.conns[k];
        let ConnKind::Http(h) = std::mem::replace(&mut conn.kind, ConnKind::Gone) else {
            return;
        };
        let mut w = Box::new(WsConn::new(h.stream, h.buf, h.peer));
        w.set_echo();
        self.conns[k].kind = ConnKind::Ws(w);
        self.touched_conns.push(k);
        self.read_ws(k, now);
    }

    /// Whether `caller` may have one more session: the global and per-token caps and the
    /// memory cap, all checked before anything is allocated.
    fn may_create_session(&self, caller: &Caller) -> Result<(), ProtoError> {
        if self.shutting_down {
            return Err(ProtoError::new(
                ErrorCode::Limit,
                "the server is shutting down",
            ));
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(ProtoError::new(
                ErrorCode::Limit,
                format!(
                    "the server's session limit is reached (--max-sessions {})",
                    self.cfg.max_sessions
                ),
            ));
        }
        if let Some(max) = caller.max_sessions
            && self
                .sessions
                .iter()
                .filter(|(_, s)| s.owner == caller.name)
                .count()
                >= max
        {
            return Err(ProtoError::new(
                ErrorCode::Limit,
                format!("your token's session limit ({max}) is reached"),
            ));
        }
        if self.memory_reserved() + self.session_reserve() > self.cfg.max_memory {
            return Err(ProtoError::new(ErrorCode::Memory, "--max-memory reached"));
        }
        Ok(())
    }

    fn create_session(
        &mut self,
        id: Option<&str>,
        p: &WsParams,
        caller: &Caller,
        now: Instant,
    ) -> Result<usize, ProtoError> {
        let refused = self.may_create_session(caller);
        if refused.is_err() {
            self.stats.sessions_refused += 1;
        }
        refused?;
        let id = match id {
            Some(id) => id.to_string(),
            None => random_id()
                .map_err(|e| ProtoError::new(ErrorCode::Internal, format!("no randomness: {e}")))?,
        };
        let (cols, rows) = (p.cols.unwrap_or(80), p.rows.unwrap_or(24));
        let pty = Pty::spawn(&self.cfg.command, cols, rows).map_err(|e| {
            ProtoError::new(
                ErrorCode::Internal,
                format!("could not start {}: {e}", self.cfg.command[0]),
            )
        })?;
        let generation = self.next_generation();
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let fd: RawFd = pty.raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd),
            token::pty(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            pty.signal_group(Signal::SIGKILL);
            return Err(ProtoError::new(
                ErrorCode::Internal,
                format!("cannot watch the terminal: {e}"),
            ));
        }
        let s = Session::new(
            id.clone(),
            caller.name.clone(),
            generation,
            pty,
            self.cfg.scrollback,
            (cols, rows),
            (now, unix_now()),
        );
        eprintln!(
            "keepty: session {id} created (pid {}, {cols}x{rows})",
            s.pid
        );
        self.pids.insert(s.pid, key);
        entry.insert(s);
        self.tombstones.remove(&id);
        self.ids.insert(id, key);
        self.wheel
            .insert(now + self.cfg.ttl, Timer::Ttl(key, generation));
        self.touched_sessions.push(key);
        Ok(key)
    }

    /// Attaches WebSocket `w` (connection `k`) per its query.
    fn attach(
        &mut self,
        k: usize,
        w: &mut WsConn,
        p: &WsParams,
        caller: &Caller,
        now: Instant,
    ) -> Result<(), ProtoError> {
        let existing = p
            .session
            .as_deref()
            .and_then(|id| self.ids.get(id).copied());
        let (skey, created) = match existing {
            Some(s) => (s, false),
            None if p.new => (
                self.create_session(p.session.as_deref(), p, caller, now)?,
                true,
            ),
            None => {
                return Err(
                    match p.session.as_deref().and_then(|id| self.tombstones.get(id)) {
                        Some(Cause::Expired) => ProtoError::new(
                            ErrorCode::Expired,
                            "the session was idle past its TTL and has ended",
                        ),
                        Some(Cause::Dropped) => {
                            ProtoError::new(ErrorCode::Dropped, "the session was dropped")
                        }
                        None => ProtoError::new(ErrorCode::NotFound, "no such session"),
                    },
                );
            }
        };
        let s = &mut self.sessions[skey];
        if s.owner != caller.name {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                "the session belongs to another user",
            ));
        }
        if let Some(since) = p.since
            && since > s.ring.end()
        {
            return Err(ProtoError::new(
                ErrorCode::BadRequest,
                format!("since {since} is past the end of output ({})", s.ring.end()),
            ));
        }
        let role = match s.seats.admit(self.cfg.attach_policy, k) {
            Admission::Refused => {
                return Err(ProtoError::new(
                    ErrorCode::AttachedElsewhere,
                    "the session is attached in another window",
                ));
            }
            Admission::Viewer => Role::Viewer,
            Admission::Writer { evicted } => {
                for old in evicted {
                    if let Some(ow) = live_ws(&mut self.conns, old) {
                        eprintln!("keepty: session {} taken over from {}", s.id, ow.peer());
                        ow.send(&ServerMsg::TakenOver);
                        ow.close_with(protocol::CLOSE_TAKEN_OVER, "taken_over");
                        ow.detach();
                        self.touched_conns.push(old);
                    }
                }
                Role::Writer
            }
        };
        // A client that keeps its own place gets no restore; any other starts at a clean
        // point, with the modes in force there (the replay takes it to the current ones).
        let (offset, lost, restore) = match p.since {
            Some(since) if since >= s.ring.start() => (since, 0, None),
            _ => {
                let (at, modes) = s.replay_point();
                let restore = s.modes.restore_sequence_for(&modes);
                (at, at - p.since.unwrap_or(0), Some(restore))
            }
        };
        w.attach((skey, s.generation), offset, p.flow, role);
        if role == Role::Writer {
            let (cols, rows) = (p.cols.unwrap_or(s.cols), p.rows.unwrap_or(s.rows));
            if let Some(pty) = &s.pty {
                if (cols, rows) != (s.cols, s.rows) {
                    let _ = pty.resize(cols, rows);
                }
                // A full-screen program repaints for the newcomer, whose screen is blank or
                // was replayed from a tail. The kernel signals a resize only when the size
                // really changes, and the program may have set it itself (`stty cols`), so
                // the resize above cannot be relied on. A program that just started has
                // nothing to repaint.
                if !created {
                    pty.nudge_redraw();
                }
            }
            s.cols = cols;
            s.rows = rows;
        }
        s.touch(now);
        w.send(&ServerMsg::Attached {
            session: &s.id,
            created,
            offset,
            lost,
            role,
            policy: self.cfg.attach_policy.name(),
            cols: s.cols,
            rows: s.rows,
            end: s.ring.end(),
            restore: restore.as_deref(),
        });
        eprintln!(
            "keepty: session {} attached by {} as {:?} (offset {offset}, lost {lost})",
            s.id,
            w.peer(),
            role
        );
        self.touched_sessions.push(skey);
        Ok(())
    }

    /// Reads a WebSocket until `WouldBlock`, or until input must wait for the PTY.
    fn read_ws(&mut self, k: usize, now: Instant) {
        for _ in 0..WS_READ_BUDGET {
            let Some(w) = live_ws(&mut self.conns, k) else {
                return;
            };
            if w.read_paused() {
                return;
            }
            let attached = w
                .session()
                .filter(|(s, g)| self.sessions.get(*s).is_some_and(|s| s.generation == *g));
            // The writer waits while the terminal has not taken its earlier input, so the
            // queue never holds more than INPUT_RESERVE (the next message could be input).
            if let Some((skey, _)) = attached
                && w.role() == Role::Writer
                && self.sessions[skey].has_input()
                && !self.sessions[skey].can_take_input()
                && self.sessions[skey].exit.is_none()
            {
                w.pause_read();
                return;
            }
            match w.read() {
                Incoming::Idle => return,
                Incoming::Closed => return self.kill_conn(k),
                Incoming::Failed(code, reason) => {
                    eprintln!("keepty: closing WebSocket from {}: {reason}", w.peer());
                    w.close_with(code, reason);
                    self.detach_ws(k, now);
                    return;
                }
                Incoming::Message(msg) => {
                    #[cfg(feature = "echo")]
                    let Some(msg) = w.echo(msg) else {
                        self.touched_conns.push(k);
                        continue;
                    };
                    let Some((skey, _)) = attached else {
                        // Not attached (closing, or taken over): only the close matters.
                        if let Message::Close(_) = msg {
                            let _ = w.pump_write(None);
                        }
                        continue;
                    };
                    let is_writer = w.is_writer();
                    let s = &mut self.sessions[skey];
                    s.touch(now);
                    match msg {
                        Message::Binary(data) if is_writer && s.state() == State::Running => {
                            if let Err(e) = s.send_input(&data) {
                                eprintln!("keepty: session {} input failed: {e}", s.id);
                            }
                            if !s.can_take_input() && s.exit.is_none() {
                                w.pause_read();
                            }
                        }
                        Message::Text(text) => match protocol::parse_client_msg(&text) {
                            Ok(ClientMsg::Resize { cols, rows }) => {
                                if is_writer && let Some(pty) = &s.pty {
                                    if let Err(e) = pty.resize(cols, rows) {
                                        eprintln!("keepty: session {} resize failed: {e}", s.id);
                                    }
                                    s.cols = cols;
                                    s.rows = rows;
                                }
                            }
                            Ok(ClientMsg::Ack { offset }) => {
                                if let Err(e) = w.ack(offset) {
                                    w.fail(&e);
                                    self.detach_ws(k, now);
                                    return;
                                }
                            }
                            Ok(ClientMsg::TakeControl) if w.is_open() => {
                                if let Some(old) = s.seats.take_control(self.cfg.attach_policy, k) {
                                    self.announce_writer(skey, old, k);
                                }
                            }
                            Ok(ClientMsg::TakeControl) | Ok(ClientMsg::Unknown) => {}
                            Err(e) => {
                                w.fail(&e);
                                self.detach_ws(k, now);
                                return;
                            }
                        },
                        Message::Close(_) => {
                            // tungstenite queued our answer; send it, then we are done.
                            let _ = w.pump_write(None);
                            return self.kill_conn(k);
                        }
                        _ => {} // ping/pong: tungstenite answers pings itself
                    }
                    self.touched_sessions.push(skey);
                }
            }
        }
        // Budget spent with more perhaps unread: resume from the touched list (edge-triggered,
        // no new event will come), after everyone else had a turn.
        self.touched_conns.push(k);
    }

    /// Detaches a WebSocket that is closing but not yet gone, with a bound on how long it may
    /// take to finish closing.
    fn detach_ws(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let generation = conn.generation;
        if let ConnKind::Ws(w) = &mut conn.kind
            && let Some((s, _)) = w.detach()
        {
            self.detach(s, k);
        }
        self.wheel.insert(now + LINGER, Timer::Conn(k, generation));
        self.touched_conns.push(k);
    }

    // ---- PTYs and children -----------------------------------------------------------

    fn on_pty_event(&mut self, skey: usize) {
        if let Some(s) = self.sessions.get_mut(skey) {
            // Any event (in, out, hup) may mean new readiness; reading finds out which.
            s.pty_readable = true;
            s.pty_writable = true;
            self.touched_sessions.push(skey);
        }
    }

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
            signals::Event::Reload => {
                // Sessions and clients stay as they are; only new requests see new tokens.
                match load_tokens(&self.cfg) {
                    Ok(t) => {
                        self.tokens = t;
                        eprintln!("keepty: SIGHUP: token files reloaded");
                    }
                    Err(e) => eprintln!("keepty: SIGHUP: keeping the old tokens: {e}"),
                }
                // Open connections keep the certificate they started with.
                #[cfg(feature = "tls")]
                if let Some(t) = &mut self.tls {
                    match t.reload() {
                        Ok(()) => eprintln!(
                            "keepty: SIGHUP: TLS certificate reloaded, SHA-256 {}",
                            t.fingerprint
                        ),
                        Err(e) => eprintln!("keepty: SIGHUP: keeping the old TLS certificate: {e}"),
                    }
                }
            }
        }
    }

    fn on_child_exit(&mut self, pid: i32, st: ExitStatus) {
        self.orphans.retain(|&p| p != pid);
        let Some(skey) = self.pids.remove(&pid) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(skey) {
            s.exit = Some(st);
            // Drain what the process wrote before it died before reporting the exit.
            s.pty_readable = true;
            self.touched_sessions.push(skey);
        }
    }

    /// How many bytes session `skey` may read now without overwriting output a client still
    /// needs: the writer's unacknowledged (flow) or unsent bytes, and in `block` mode with
    /// nobody attached, anything at all.
    fn read_budget(&self, skey: usize) -> u64 {
        let s = &self.sessions[skey];
        let protect = match s.seats.writer().and_then(|w| any_ws(&self.conns, w)) {
            Some(w) => Some(w.needs_from()),
            _ if self.cfg.detached_output == DetachedOutput::Block => Some(s.ring.start()),
            _ => None,
        };
        match protect {
            Some(p) => (s.ring.capacity() as u64).saturating_sub(s.ring.end().saturating_sub(p)),
            None => u64::MAX,
        }
    }

    /// Moves output PTY -> ring -> clients for one session until neither side can move.
    fn service_session(&mut self, skey: usize, now: Instant) {
        for _ in 0..64 {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            let mut progress = false;
            if s.pty_writable && s.has_input() {
                let _ = s.flush_input();
                // The writer was paused on a full input queue: let it go on.
                if s.can_take_input()
                    && let Some(k) = s.seats.writer()
                    && let Some(w) = live_ws(&mut self.conns, k)
                    && w.resume_read()
                {
                    self.touched_conns.push(k);
                }
            }
            let s = &self.sessions[skey];
            if s.pty_readable && !s.output_done {
                let budget = self.read_budget(skey);
                let s = &mut self.sessions[skey];
                if budget > 0 {
                    match s.read_output(budget) {
                        Ok(pass) => progress |= pass.bytes > 0,
                        Err(e) => eprintln!("keepty: session {} read failed: {e}", s.id),
                    }
                    if s.pty_readable && !s.output_done && self.read_budget(skey) > 0 {
                        self.busy = true; // stopped for fairness, not for lack of data
                    }
                }
            }
            self.finish_output(skey);
            // Newest first, by index: a client that finishes here is removed from the list,
            // which leaves the indices still to visit unchanged.
            let mut i = self.sessions[skey].seats.clients().len();
            while i > 0 {
                i -= 1;
                let s = &self.sessions[skey];
                let Some(&c) = s.seats.clients().get(i) else {
                    continue;
                };
                let Some(w) = live_ws(&mut self.conns, c) else {
                    continue;
                };
                let before = w.cursor();
                if !w.pump_write(Some(&s.ring)) {
                    self.kill_conn(c);
                    continue;
                }
                if w.take_read_deferred() {
                    self.touched_conns.push(c);
                }
                progress |= w.cursor() != before;
                if s.state() == State::Exited && w.is_open() && w.caught_up(&s.ring) {
                    let (code, signal) = s.exit.map(|e| (e.code, e.signal)).unwrap_or((None, None));
                    w.send(&ServerMsg::Exited { code, signal });
                    w.close_with(protocol::CLOSE_NORMAL, "exited");
                    let _ = w.pump_write(None);
                    let s = &mut self.sessions[skey];
                    s.end_seen = true;
                    self.detach_ws(c, now);
                }
            }
            if !progress {
                break;
            }
        }
        self.maybe_free_session(skey);
    }

    /// Once output has ended and the child is reaped, the session is `exited`.
    fn finish_output(&mut self, skey: usize) {
        let s = &mut self.sessions[skey];
        if s.output_done
            && let Some(pty) = s.close_pty()
        {
            // SourceFd does not own the fd: deregister before the Pty closes it.
            let fd = pty.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        if s.output_done && s.exit.is_some() && s.state() == State::Running {
            s.set_state(State::Exited);
        }
    }

    /// An exited session whose end a client has seen, and that nobody watches, is gone.
    fn maybe_free_session(&mut self, skey: usize) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        if s.state() == State::Exited && s.end_seen && s.seats.is_empty() {
            eprintln!("keepty: session {} freed", s.id);
            self.ids.remove(&s.id);
            self.sessions.remove(skey);
        }
    }

    /// Ends session `skey` for good (TTL or drop): clients are told and closed, the process
    /// group gets SIGHUP now and SIGKILL in 3 s, the ring is freed, and the id is remembered.
    fn teardown(&mut self, skey: usize, cause: Cause, now: Instant) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let (msg, code) = match cause {
            Cause::Expired => (ServerMsg::Expired, protocol::CLOSE_EXPIRED),
            Cause::Dropped => (ServerMsg::Dropped, protocol::CLOSE_DROPPED),
        };
        for c in s.seats.clients().to_vec() {
            if let Some(w) = live_ws(&mut self.conns, c) {
                w.send(&msg);
                w.close_with(code, "");
                w.detach();
                self.wheel
                    .insert(now + LINGER, Timer::Conn(c, self.conns[c].generation));
                self.touched_conns.push(c);
            }
        }
        let mut s = self.sessions.remove(skey);
        if let Some(pty) = s.close_pty() {
            let fd = pty.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            pty.signal_group(Signal::SIGHUP);
        }
        // Only while the leader lives is its pid surely ours to address by session: once it
        // is reaped (an exited session), the terminal's hangup has already reached the rest,
        // and the number may belong to somebody else by now.
        if self.pids.remove(&s.pid).is_some() {
            // Jobs in process groups of their own get the hangup too.
            pty::signal_session(s.pid, Signal::SIGHUP);
            self.orphans.push(s.pid);
            self.wheel.insert(now + KILL_AFTER, Timer::Kill(s.pid));
        }
        self.ids.remove(&s.id);
        if self.tombstones.is_empty() {
            self.wheel.insert(now + tombstones::KEEP, Timer::Tombstones);
        }
        self.tombstones.add(&s.id, cause, now);
        match cause {
            Cause::Expired => self.stats.sessions_reaped += 1,
            Cause::Dropped => self.stats.sessions_dropped += 1,
        }
        eprintln!(
            "keepty: session {} {} (pid {})",
            s.id,
            match cause {
                Cause::Expired => "expired",
                Cause::Dropped => "dropped",
            },
            s.pid
        );
    }

    // ---- time ------------------------------------------------------------------------

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Conn(k, generation) => {
                let Some(conn) = self.conns.get_mut(k) else {
                    return;
                };
                if conn.generation != generation || conn.dead {
                    return;
                }
                match &mut conn.kind {
                    ConnKind::Http(h) => {
                        if h.deadline > now {
                            // The deadline moved on (a new request, or response progress).
                            h.arm(&mut self.wheel, t, now);
                            return;
                        }
                        match h.phase {
                            HttpPhase::Reading if h.buf.is_empty() => self.kill_conn(k),
                            HttpPhase::Reading => {
                                eprintln!("keepty: request head from {} timed out", h.peer);
                                self.kill_conn(k)
                            }
                            _ => self.kill_conn(k),
                        }
                    }
                    ConnKind::Ws(w) => {
                        if w.phase() != Phase::Open {
                            self.kill_conn(k);
                        }
                    }
                    ConnKind::Gone => {}
                }
            }
            Timer::Ping(k, generation) => {
                let Some(conn) = self.conns.get_mut(k) else {
                    return;
                };
                if conn.generation != generation || conn.dead {
                    return;
                }
                let ConnKind::Ws(w) = &mut conn.kind else {
                    return;
                };
                if w.phase() != Phase::Open {
                    return; // closing: the linger timer ends it
                }
                let ring = w
                    .session()
                    .and_then(|(s, g)| self.sessions.get(s).filter(|s| s.generation == g))
                    .map(|s| &s.ring);
                if w.on_ping_tick(ring) {
                    self.wheel
                        .insert(now + self.cfg.ping_interval, Timer::Ping(k, generation));
                } else {
                    eprintln!(
                        "keepty: closing WebSocket from {}: {} for {} pings",
                        w.peer(),
                        w.timeout_reason(),
                        ws::TIMEOUT_TICKS
                    );
                    w.close_with(protocol::CLOSE_GOING_AWAY, "timeout");
                    self.detach_ws(k, now);
                }
                self.touched_conns.push(k);
            }
            Timer::Ttl(skey, generation) => {
                let Some(s) = self.sessions.get(skey) else {
                    return;
                };
                if s.generation != generation {
                    return;
                }
                // An attached session is in use whatever its clients send; otherwise the TTL
                // counts from the last activity. Either way the check follows the deadline.
                let due = if s.seats.is_empty() {
                    s.last_seen + self.cfg.ttl
                } else {
                    now + self.cfg.ttl
                };
                if due > now {
                    self.wheel.insert(due, t);
                } else {
                    self.teardown(skey, Cause::Expired, now);
                }
            }
            Timer::Kill(sid) => {
                // The pid may have been reused by a new session in the meantime: leave it be.
                if !self.pids.contains_key(&sid) {
                    pty::signal_session(sid, Signal::SIGKILL);
                }
            }
            Timer::Tombstones => {
                self.tombstones.expire(now);
                if let Some(next) = self.tombstones.next_expiry() {
                    self.wheel.insert(next, Timer::Tombstones);
                }
            }
            Timer::KillOrphans => {
                for &pid in &self.orphans {
                    pty::signal_session(pid, Signal::SIGKILL);
                }
                for (_, s) in self.sessions.iter() {
                    if s.exit.is_none() {
                        pty::signal_session(s.pid, Signal::SIGKILL);
                    }
                }
            }
            Timer::ExitNow => {
                eprintln!("keepty: children did not all exit in time; exiting anyway");
                self.exit_now = true;
            }
            Timer::Accept => {
                self.accept_paused = false;
                self.accept_all(now);
            }
        }
    }

    // ---- shutdown --------------------------------------------------------------------

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            eprintln!("keepty: second shutdown signal; exiting now");
            for (_, s) in self.sessions.iter() {
                pty::signal_session(s.pid, Signal::SIGKILL);
            }
            self.exit_now = true;
            return;
        }
        eprintln!("keepty: shutting down");
        self.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            let conn = &mut self.conns[k];
            match &mut conn.kind {
                ConnKind::Ws(w) => {
                    w.send(&ServerMsg::Shutdown);
                    w.close_with(protocol::CLOSE_GOING_AWAY, "shutdown");
                    self.detach_ws(k, now);
                }
                ConnKind::Http(h) if matches!(h.phase, HttpPhase::Writing { .. }) => {}
                _ => self.kill_conn(k),
            }
        }
        for (_, s) in self.sessions.iter() {
            if s.exit.is_none() {
                if let Some(pty) = &s.pty {
                    pty.signal_group(Signal::SIGHUP);
                }
                pty::signal_session(s.pid, Signal::SIGHUP);
            }
        }
        self.wheel.insert(now + KILL_AFTER, Timer::KillOrphans);
        self.wheel
            .insert(now + KILL_AFTER + EXIT_GRACE, Timer::ExitNow);
    }

    fn finished(&self) -> bool {
        self.conns.is_empty()
            && self.orphans.is_empty()
            && self.sessions.iter().all(|(_, s)| s.exit.is_some())
    }

    // ---- the end of each turn --------------------------------------------------------

    /// Services everything the batch touched, then frees closed connections.
    fn settle(&mut self, now: Instant) {
        // Servicing can touch more (a paused writer resumes, a client detaches): loop until
        // quiet, bounded so one turn cannot spin.
        for _ in 0..8 {
            if self.touched_sessions.is_empty() && self.touched_conns.is_empty() {
                break;
            }
            let mut sessions = std::mem::take(&mut self.touched_sessions);
            sessions.sort_unstable();
            sessions.dedup();
            for s in sessions {
                self.service_session(s, now);
            }
            let mut conns = std::mem::take(&mut self.touched_conns);
            conns.sort_unstable();
            conns.dedup();
            for k in conns {
                self.service_conn(k, now);
            }
        }
        if !self.touched_sessions.is_empty() || !self.touched_conns.is_empty() {
            self.busy = true;
        }
        for k in std::mem::take(&mut self.dead) {
            if let Some(mut conn) = self.conns.try_remove(k) {
                match &mut conn.kind {
                    ConnKind::Http(h) => {
                        let _ = self.poll.registry().deregister(&mut h.stream);
                    }
                    ConnKind::Ws(w) => {
                        let _ = self.poll.registry().deregister(w.stream_mut());
                    }
                    ConnKind::Gone => {}
                }
            }
        }
    }

    fn service_conn(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.dead {
            return;
        }
        match &mut conn.kind {
            ConnKind::Http(_) => self.drive_http(k, now),
            ConnKind::Ws(w) => {
                if !w.read_paused() {
                    self.read_ws(k, now);
                }
                let Some(w) = live_ws(&mut self.conns, k) else {
                    return;
                };
                let ring = w
                    .session()
                    .and_then(|(s, g)| self.sessions.get(s).filter(|s| s.generation == g))
                    .map(|s| &s.ring);
                if !w.pump_write(ring) || w.phase() == Phase::Done {
                    self.kill_conn(k);
                    return;
                }
                if w.take_read_deferred() {
                    self.touched_conns.push(k);
                }
                if let Some((s, _)) = w.session() {
                    // Sending may have freed read budget for the session.
                    self.touched_sessions.push(s);
                }
            }
            ConnKind::Gone => {}
        }
    }

    // ---- admin -----------------------------------------------------------------------

    /// A monotonic instant as Unix seconds.
    fn unix_secs(&self, t: Instant) -> u64 {
        let ms = self.started_unix_ms as i128
            + (t.saturating_duration_since(self.started).as_millis() as i128)
            - (self.started.saturating_duration_since(t).as_millis() as i128);
        (ms.max(0) / 1000) as u64
    }

    /// Every session, or only `owner`'s.
    fn session_list(&self, now: Instant, owner: Option<&str>) -> admin::SessionList {
        let now_unix = unix_now();
        let ttl = self.cfg.ttl.as_secs();
        let sessions = self
            .sessions
            .iter()
            .filter(|(_, s)| owner.is_none_or(|o| s.owner == o))
            .map(|(_, s)| {
                // Attached means in use: seen now.
                let idle = if s.seats.is_empty() {
                    now.saturating_duration_since(s.last_seen).as_secs()
                } else {
                    0
                };
                admin::SessionRecord {
                    id: s.id.clone(),
                    owner: s.owner.clone(),
                    pid: s.pid,
                    state: s.state().to_string(),
                    exit_code: s.exit.and_then(|e| e.code),
                    created_at: s.created_at,
                    last_seen: if s.seats.is_empty() {
                        self.unix_secs(s.last_seen)
                    } else {
                        now_unix
                    },
                    idle_secs: idle,
                    expires_in_secs: ttl.saturating_sub(idle),
                    bytes_buffered: s.ring.len() as u64,
                    bytes_total: s.ring.end(),
                    clients: s.seats.clients().len(),
                    active_client: s
                        .seats
                        .writer()
                        .and_then(|w| any_ws(&self.conns, w))
                        .map(|w| w.peer().to_string()),
                    cols: s.cols,
                    rows: s.rows,
                    title: admin::title_text(s.modes.title()),
                    alt_screen: s.modes.alt_screen(),
                }
            })
            .collect();
        admin::SessionList {
            now: now_unix,
            sessions,
            limits: admin::Limits {
                max_sessions: self.cfg.max_sessions,
                max_clients: self.cfg.max_clients,
                max_memory: self.cfg.max_memory,
                scrollback: self.cfg.scrollback,
                ttl_secs: ttl,
                attach_policy: self.cfg.attach_policy.name(),
                detached_output: match self.cfg.detached_output {
                    DetachedOutput::DropOldest => "drop-oldest",
                    DetachedOutput::Block => "block",
                },
            },
            memory: admin::Memory {
                reserved: self.memory_reserved(),
                cap: self.cfg.max_memory,
            },
        }
    }
}
