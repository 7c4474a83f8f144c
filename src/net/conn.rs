//! The connection table, and one HTTP connection's I/O.
//!
//! [`HttpConn::advance`] reads a request head, writes a response and lingers after a close,
//! without blocking, and says what happened ([`Step`]); the event loop only decides what a
//! head gets and what follows a sent response. [`Conns`] holds every connection (HTTP or
//! WebSocket) in a slab with generations and keeps each in one of three budgets
//! ([`crate::net::budget`]). It frees slots only after the event batch (deferred
//! removal), so an event for a closed connection never reaches a new one in the same slot.

use std::borrow::Cow;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::{Interest, Registry};
use slab::Slab;

use crate::files::transfer::{Outcome, Transfer};
use crate::limits::{HTTP_STEP_BUDGET, LINGER, MAX_HEAD, WRITE_STALL};
use crate::net::budget::{Budget, Budgets, TooManyClients};
use crate::net::http::{self, HeadError, Request, Response};
use crate::net::stream::{Stream, Transport};
use crate::net::ws::WsConn;
use crate::token;

/// What happens once a response is on the wire.
pub enum After<U> {
    /// Read the next request.
    KeepAlive,
    /// Shut our side and linger until the peer closes.
    Close,
    /// The connection becomes what `U` says (a WebSocket).
    Upgrade(U),
}

/// What [`HttpConn::advance`] got to.
pub enum Step<U> {
    /// A request head arrived: answer it with [`HttpConn::respond`].
    Head(Request),
    /// The head cannot be parsed: answer with its error and close.
    Bad(HeadError),
    /// The upgrade response is sent: the stream is the WebSocket's now.
    Upgraded(U),
    /// Nothing more until the socket is ready again.
    Blocked,
    /// The turn's budget is spent with work perhaps left: come back after the others.
    Yield,
    /// A file transfer ended: send this answer (keep the connection if `true`).
    Answer(Response, bool),
    /// A download ticket's file checks out: the loop issues the ticket and answers.
    Ticket {
        /// The session the ticket is for.
        session: (usize, u64),
        /// The absolute path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The connection is finished.
    Closed,
}

enum Phase<U> {
    Reading,
    Writing {
        head: Vec<u8>,
        body: Cow<'static, [u8]>,
        pos: usize,
        after: After<U>,
    },
    /// Response sent and write side shut: discard what the peer still sends until it closes,
    /// so unread bytes do not make the kernel reset the connection under our response.
    Lingering,
    /// A file transfer (a body into a file, a file out, or the helper's answer).
    Transfer(Box<Transfer>),
    /// Upgraded; the stream is about to be handed over.
    Done,
}

/// One HTTP/1.1 connection over `S` (the socket, or a scripted stream in tests).
pub struct HttpConn<U, S = Stream> {
    stream: S,
    peer: SocketAddr,
    buf: Vec<u8>,
    phase: Phase<U>,
    /// When this connection is dropped unless it progresses (head, write stall or linger).
    deadline: Instant,
    /// The earliest wheel entry pending for this connection.
    timer_at: Instant,
    /// A response was sent: an idle connection is a kept-alive one, not a new one whose
    /// request is on its way.
    served: bool,
}

impl<U, S: Transport> HttpConn<U, S> {
    /// A connection that must send its first request head by `deadline`.
    pub fn new(stream: S, peer: SocketAddr, deadline: Instant) -> Self {
        HttpConn {
            stream,
            peer,
            buf: Vec::new(),
            phase: Phase::Reading,
            deadline,
            timer_at: deadline,
            served: false,
        }
    }

    /// Peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The stream, for registration.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// True while a response is being written (a shutdown lets it finish).
    pub fn is_writing(&self) -> bool {
        matches!(self.phase, Phase::Writing { .. })
    }

    /// True for a kept-alive connection between requests: it answered one, and nothing of
    /// the next has been read. Such a connection holds nothing a client waits for, so it is
    /// the first to go when the idle budget is full.
    pub fn is_idle(&self) -> bool {
        self.served && matches!(self.phase, Phase::Reading) && self.buf.is_empty()
    }

    /// The stream and what the client sent after its head, once upgraded.
    pub fn into_parts(self) -> (S, Vec<u8>, SocketAddr) {
        (self.stream, self.buf, self.peer)
    }

    /// Goes as far as it can without blocking, at most [`HTTP_STEP_BUDGET`] steps.
    /// `header_timeout` is the deadline a kept-alive connection gets for its next head
    /// ([`crate::limits::Limits::next_head_timeout`]: short, since an idle connection holds
    /// a slot for nothing).
    pub fn advance(&mut self, now: Instant, header_timeout: std::time::Duration) -> Step<U> {
        for _ in 0..HTTP_STEP_BUDGET {
            let step = match &mut self.phase {
                Phase::Reading => self.read_head(),
                Phase::Writing { .. } => self.write_response(now, header_timeout),
                Phase::Lingering => self.discard(),
                Phase::Transfer(_) => self.step_transfer(now, header_timeout),
                Phase::Done => Some(Step::Closed),
            };
            if let Some(step) = step {
                return step;
            }
        }
        Step::Yield
    }

    /// One step of reading a head: `None` to go on.
    fn read_head(&mut self) -> Option<Step<U>> {
        match http::parse_head(&self.buf) {
            Ok(Some((req, n))) => {
                self.buf.drain(..n);
                return Some(Step::Head(req));
            }
            Ok(None) => {}
            Err(e) => return Some(Step::Bad(e)),
        }
        let mut chunk = [0u8; 2048];
        let room = MAX_HEAD.saturating_sub(self.buf.len()).min(chunk.len());
        match self.stream.read(&mut chunk[..room]) {
            Ok(0) => Some(Step::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Step::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // A TLS failure: not a client hello, a bad handshake.
                eprintln!("keepty: TLS failed with {}: {e}", self.peer);
                Some(Step::Closed)
            }
            Err(_) => Some(Step::Closed),
        }
    }

    /// Writes the response and, once it is out, does what follows it: `None` to go on.
    fn write_response(
        &mut self,
        now: Instant,
        header_timeout: std::time::Duration,
    ) -> Option<Step<U>> {
        let Phase::Writing {
            head, body, pos, ..
        } = &mut self.phase
        else {
            return None;
        };
        let total = head.len() + body.len();
        while *pos < total {
            let r = if *pos < head.len() {
                // One syscall for head and body when both fit.
                self.stream
                    .write_vectored(&[IoSlice::new(&head[*pos..]), IoSlice::new(body)])
            } else {
                self.stream.write(&body[*pos - head.len()..])
            };
            match r {
                Ok(0) => return Some(Step::Closed),
                Ok(n) => {
                    *pos += n;
                    self.deadline = now + WRITE_STALL;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Step::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Step::Closed),
            }
        }
        // With TLS the last records may still be in rustls: they must be on the socket
        // before a close, and before the WebSocket takes the stream over is merely tidier.
        match self.stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Step::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(_) => return Some(Step::Closed),
        }
        let Phase::Writing { after, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return None;
        };
        match after {
            After::KeepAlive => {
                // A new request gets a fresh head deadline.
                self.phase = Phase::Reading;
                self.served = true;
                self.deadline = now + header_timeout;
                None
            }
            After::Close => {
                self.stream.shutdown_write();
                self.phase = Phase::Lingering;
                self.deadline = now + LINGER;
                None
            }
            After::Upgrade(u) => Some(Step::Upgraded(u)),
        }
    }

    /// A transfer's turn: `None` to go on.
    fn step_transfer(
        &mut self,
        now: Instant,
        header_timeout: std::time::Duration,
    ) -> Option<Step<U>> {
        let Phase::Transfer(t) = &mut self.phase else {
            return None;
        };
        let session = t.session();
        let step = match t.advance(&mut self.stream, &mut self.buf, &mut self.deadline, now) {
            Outcome::Blocked => return Some(Step::Blocked),
            Outcome::Yield => return Some(Step::Yield),
            Outcome::Closed => return Some(Step::Closed),
            Outcome::Respond(resp, keep) => Step::Answer(resp, keep),
            Outcome::Ticket { path, size } => Step::Ticket {
                session,
                path,
                size,
            },
            Outcome::Sent => {
                // Like any response sent: the next request gets a fresh head deadline.
                self.phase = Phase::Reading;
                self.deadline = now + header_timeout;
                return None;
            }
        };
        // The transfer (and with it the helper's socket) ends here; the loop answers.
        self.phase = Phase::Reading;
        Some(step)
    }

    /// Starts a file transfer whose helper has its first request.
    pub fn begin_transfer(&mut self, t: Transfer, now: Instant) {
        self.served = true;
        self.deadline = now + t.timeout();
        self.phase = Phase::Transfer(Box::new(t));
    }

    /// The transfer in flight, if any.
    pub fn transfer(&self) -> Option<&Transfer> {
        match &self.phase {
            Phase::Transfer(t) => Some(t),
            _ => None,
        }
    }

    /// One step of lingering: `None` to go on.
    fn discard(&mut self) -> Option<Step<U>> {
        let mut sink = [0u8; 2048];
        match self.stream.read(&mut sink) {
            Ok(0) => Some(Step::Closed),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Step::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => Some(Step::Closed),
        }
    }

    /// Starts writing `resp` to `req`. A request body is never expected; rather than parse
    /// one, the connection ends after answering so its bytes are not mistaken for the next
    /// request. `closing`: the server is shutting down, so nothing is kept alive.
    pub fn respond(
        &mut self,
        req: &Request,
        mut resp: Response,
        after: After<U>,
        closing: bool,
        now: Instant,
    ) {
        let after = match after {
            After::KeepAlive if !req.keep_alive() || req.has_body() => After::Close,
            a => a,
        };
        if req.method == "HEAD" {
            resp.omit_body = true;
        }
        self.answer(resp, after, closing, now);
    }

    /// Starts writing `resp` (the request was judged already: a transfer's end).
    pub fn answer(&mut self, mut resp: Response, after: After<U>, closing: bool, now: Instant) {
        let after = match after {
            After::KeepAlive if closing => After::Close,
            a => a,
        };
        self.served = true;
        let (head, body) = match &after {
            // An upgrade's 101 is all head.
            After::Upgrade(_) => (
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
        self.phase = Phase::Writing {
            head,
            body,
            pos: 0,
            after,
        };
        // The head deadline is met; from here the peer only has to keep taking the response.
        self.deadline = now + WRITE_STALL;
    }

    /// When a wheel entry must be added for this connection's deadline. Deadlines move often
    /// (every write extends the stall deadline) but an entry is added only when none pending
    /// covers the new one, so a connection has at most a couple of entries however long it
    /// lives.
    pub fn rearm(&mut self, now: Instant) -> Option<Instant> {
        if self.timer_at > now && self.timer_at <= self.deadline {
            return None;
        }
        self.timer_at = self.deadline;
        Some(self.deadline)
    }

    /// A wheel entry fired: true if the connection is past its deadline (and logs a head
    /// that timed out half-sent); else the deadline moved on and [`HttpConn::rearm`] files it.
    pub fn expired(&self, now: Instant) -> bool {
        if self.deadline > now {
            return false;
        }
        if matches!(self.phase, Phase::Reading) && !self.buf.is_empty() {
            eprintln!("keepty: request head from {} timed out", self.peer);
        }
        if matches!(self.phase, Phase::Transfer(_)) {
            eprintln!(
                "keepty: file transfer with {} made no progress in time",
                self.peer
            );
        }
        true
    }
}

/// What a slot holds. Both boxed: the slab stays a dense array of small slots whichever kind
/// a slot holds.
pub enum Kind<U> {
    /// Not upgraded.
    Http(Box<HttpConn<U>>),
    /// A WebSocket client.
    Ws(Box<WsConn>),
    /// Being converted.
    Gone,
}

/// One slot of the table.
pub struct Conn<U> {
    generation: u64,
    /// What it is.
    pub kind: Kind<U>,
    dead: bool,
    /// Which budget it counts in.
    budget: Budget,
}

/// Every connection.
pub struct Conns<U> {
    slab: Slab<Conn<U>>,
    generation: u64,
    budgets: Budgets,
    ws: usize,
    dead: Vec<usize>,
}

impl<U> Default for Conns<U> {
    fn default() -> Self {
        Conns {
            slab: Slab::new(),
            generation: 0,
            budgets: Budgets::default(),
            ws: 0,
            dead: Vec::new(),
        }
    }
}

impl<U> Conns<U> {
    /// Makes room for one more unfinished request: when `--max-pending` are pending, the
    /// slot of the one to close ([`Budgets::pending_victim`]).
    pub fn pending_victim(&self, max_pending: usize) -> Option<usize> {
        self.budgets
            .pending_victim(max_pending, self.live_budgets())
    }

    /// Every live slot with the budget it counts in.
    fn live_budgets(&self) -> impl Iterator<Item = (usize, Budget)> + '_ {
        self.slab
            .iter()
            .filter(|(_, c)| !c.dead)
            .map(|(k, c)| (k, c.budget))
    }

    /// Adds a new connection, registered for both directions, as pending under its peer's
    /// address; its slot and generation.
    pub fn insert(&mut self, mut h: HttpConn<U>, registry: &Registry) -> io::Result<(usize, u64)> {
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        registry.register(
            h.stream_mut(),
            token::conn(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.generation += 1;
        let budget = self.budgets.enter_pending(h.peer().ip());
        entry.insert(Conn {
            generation: self.generation,
            kind: Kind::Http(Box::new(h)),
            dead: false,
            budget,
        });
        Ok((key, self.generation))
    }

    /// Takes connection `k` out of whichever budget it counts in.
    fn uncount(&mut self, k: usize) {
        if let Some(c) = self.slab.get_mut(k) {
            self.budgets.uncount(&mut c.budget);
        }
    }

    /// A request head arrived on `k` from `client`: the connection now serves a request and
    /// counts against `--max-clients` and `client`'s `share` of it. Refused (and counted
    /// nowhere, to be answered and closed) past either.
    pub fn begin_request(
        &mut self,
        k: usize,
        client: IpAddr,
        max_clients: usize,
        share: usize,
    ) -> Result<(), TooManyClients> {
        let Some(c) = self.slab.get_mut(k) else {
            return Err(TooManyClients);
        };
        self.budgets
            .begin_request(&mut c.budget, client, max_clients, share)
    }

    /// After `k` made progress: a connection kept alive between requests moves into the idle
    /// budget. When that holds more than `max_idle`, the slot of the one to close: the
    /// oldest idle connection of the address with the most.
    pub fn settle_idle(&mut self, k: usize, max_idle: usize) -> Option<usize> {
        let c = self.slab.get_mut(k).filter(|c| !c.dead)?;
        if !matches!(&c.kind, Kind::Http(h) if h.is_idle()) {
            return None;
        }
        if !self.budgets.go_idle(&mut c.budget) {
            return None;
        }
        self.budgets.idle_victim(max_idle, self.live_budgets())
    }

    /// The file transfers in flight: each one's session, and whether it streams a file
    /// ([`Transfer::streams`]).
    pub fn transfers(&self) -> impl Iterator<Item = ((usize, u64), bool)> + '_ {
        self.slab
            .iter()
            .filter(|(_, c)| !c.dead)
            .filter_map(|(_, c)| match &c.kind {
                Kind::Http(h) => h.transfer().map(|t| (t.session(), t.streams())),
                _ => None,
            })
    }

    /// True when none is left.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Connections not upgraded, and WebSockets.
    pub fn counts(&self) -> (usize, usize) {
        (self.slab.len() - self.ws, self.ws)
    }

    /// Every slot, for a loop that changes the table as it goes.
    pub fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(k, _)| k).collect()
    }

    /// The generation of the connection in slot `k`, if it is live.
    pub fn generation(&self, k: usize) -> Option<u64> {
        self.slab.get(k).filter(|c| !c.dead).map(|c| c.generation)
    }

    /// The live connection in slot `k` if it is still generation `generation`.
    pub fn live_mut(&mut self, k: usize, generation: u64) -> Option<&mut Kind<U>> {
        self.slab
            .get_mut(k)
            .filter(|c| !c.dead && c.generation == generation)
            .map(|c| &mut c.kind)
    }

    /// The live connection in slot `k`.
    pub fn kind_mut(&mut self, k: usize) -> Option<&mut Kind<U>> {
        self.slab
            .get_mut(k)
            .filter(|c| !c.dead)
            .map(|c| &mut c.kind)
    }

    /// The live HTTP connection in slot `k`.
    pub fn http_mut(&mut self, k: usize) -> Option<&mut HttpConn<U>> {
        match self.kind_mut(k) {
            Some(Kind::Http(h)) => Some(h),
            _ => None,
        }
    }

    /// The live WebSocket in slot `k`.
    pub fn ws_mut(&mut self, k: usize) -> Option<&mut WsConn> {
        match self.kind_mut(k) {
            Some(Kind::Ws(w)) => Some(w),
            _ => None,
        }
    }

    /// The WebSocket in slot `k`, live or closing, read-only.
    pub fn ws(&self, k: usize) -> Option<&WsConn> {
        match self.slab.get(k).map(|c| &c.kind) {
            Some(Kind::Ws(w)) => Some(w),
            _ => None,
        }
    }

    /// Marks a connection for removal after the batch. A WebSocket is finished at once and
    /// its session binding returned, so the caller detaches it now and the session's read
    /// budget no longer waits for it.
    pub fn kill(&mut self, k: usize) -> Option<(usize, u64)> {
        let conn = self.slab.get_mut(k).filter(|c| !c.dead)?;
        conn.dead = true;
        self.dead.push(k);
        self.uncount(k);
        match &mut self.slab[k].kind {
            Kind::Ws(w) => {
                w.finish();
                w.detach()
            }
            _ => None,
        }
    }

    /// Takes the HTTP connection out of slot `k` to turn it into a WebSocket.
    pub fn take_http(&mut self, k: usize) -> Option<Box<HttpConn<U>>> {
        let conn = self.slab.get_mut(k).filter(|c| !c.dead)?;
        match std::mem::replace(&mut conn.kind, Kind::Gone) {
            Kind::Http(h) => Some(h),
            other => {
                conn.kind = other;
                None
            }
        }
    }

    /// Puts the WebSocket made from slot `k`'s HTTP connection back in its slot.
    pub fn put_ws(&mut self, k: usize, w: Box<WsConn>) {
        if let Some(conn) = self.slab.get_mut(k) {
            conn.kind = Kind::Ws(w);
            self.ws += 1;
        }
    }

    /// Frees the slots of connections killed during the batch.
    pub fn reap(&mut self, registry: &Registry) {
        for k in std::mem::take(&mut self.dead) {
            let Some(mut conn) = self.slab.try_remove(k) else {
                continue;
            };
            match &mut conn.kind {
                Kind::Http(h) => {
                    let _ = registry.deregister(h.stream_mut());
                }
                Kind::Ws(w) => {
                    self.ws -= 1;
                    let _ = registry.deregister(w.stream_mut());
                }
                Kind::Gone => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::script::Script;

    const TIMEOUT: Duration = Duration::from_secs(10);
    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

    fn conn(sock: &Script, now: Instant) -> HttpConn<u32, Script> {
        HttpConn::new(
            sock.clone(),
            "127.0.0.1:5000".parse().unwrap(),
            now + TIMEOUT,
        )
    }

    fn ok() -> Response {
        Response::new(200, "text/plain; charset=utf-8", &b"ok\n"[..])
    }

    fn head(step: Step<u32>) -> Request {
        match step {
            Step::Head(r) => r,
            _ => panic!("expected a request head"),
        }
    }

    /// A connection that got `GET` and is answering it with `ok()`, nothing written yet.
    fn answering(after: After<u32>) -> (HttpConn<u32, Script>, Script, Instant) {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        sock.feed(GET);
        let req = head(h.advance(now, TIMEOUT));
        h.respond(&req, ok(), after, false, now);
        (h, sock, now)
    }

    fn is_blocked(step: &Step<u32>) -> bool {
        matches!(step, Step::Blocked)
    }

    #[test]
    fn a_head_cut_anywhere_arrives_whole() {
        let now = Instant::now();
        for cut in 1..GET.len() {
            let sock = Script::new();
            let mut h = conn(&sock, now);
            sock.feed(&GET[..cut]).read_block();
            assert!(is_blocked(&h.advance(now, TIMEOUT)), "cut at {cut}");
            sock.feed(&GET[cut..]);
            let req = head(h.advance(now, TIMEOUT));
            assert_eq!(
                (req.method.as_str(), req.path.as_str()),
                ("GET", "/healthz")
            );
        }
    }

    #[test]
    fn short_writes_and_would_block_deliver_the_response_once() {
        let (mut h, sock, now) = answering(After::KeepAlive);
        sock.accept(7).block();
        assert!(is_blocked(&h.advance(now, TIMEOUT)));
        assert_eq!(sock.written().len(), 7);
        assert!(h.is_writing());
        sock.accept(1).accept(2).block();
        assert!(is_blocked(&h.advance(now, TIMEOUT)));
        assert_eq!(sock.written().len(), 10);
        // The rest goes in one write; then the next head is awaited.
        assert!(is_blocked(&h.advance(now, TIMEOUT)));
        assert!(!h.is_writing());
        let out = String::from_utf8(sock.written()).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: keep-alive\r\n"));
        assert!(out.ends_with("\r\n\r\nok\n"));
        assert_eq!(out.matches("HTTP/1.1").count(), 1);
        assert_eq!(sock.shut_at(), None);
    }

    #[test]
    fn only_a_kept_alive_connection_between_requests_is_idle() {
        // What an upgrade's drain closes at once: a new connection's request may be on its
        // way, and a half-read one is answered first.
        let now = Instant::now();
        let sock = Script::new();
        let h = conn(&sock, now);
        assert!(!h.is_idle(), "new: its request may be on its way");
        let (mut h, sock, now) = answering(After::KeepAlive);
        assert!(!h.is_idle(), "answering");
        assert!(is_blocked(&h.advance(now, TIMEOUT)));
        assert!(h.is_idle(), "answered, waiting for the next head");
        sock.feed(b"GET /he").read_block();
        let _ = h.advance(now, TIMEOUT);
        assert!(!h.is_idle(), "part of a next request was read");
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        let mut two = GET.to_vec();
        two.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
        sock.feed(&two);
        let first = head(h.advance(now, TIMEOUT));
        h.respond(&first, ok(), After::KeepAlive, false, now);
        let second = head(h.advance(now, TIMEOUT));
        assert_eq!(second.path, "/nope");
        assert_eq!(
            String::from_utf8(sock.written())
                .unwrap()
                .matches("200 OK")
                .count(),
            1
        );
    }

    #[test]
    fn close_shuts_after_the_response_then_lingers_until_the_peer_ends() {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        sock.feed(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let req = head(h.advance(now, TIMEOUT));
        // The request asked for close: kept-alive is not honoured.
        h.respond(&req, ok(), After::KeepAlive, false, now);
        sock.feed(b"late bytes the peer sent").read_block();
        assert!(is_blocked(&h.advance(now, TIMEOUT)));
        let out = sock.written();
        assert_eq!(
            sock.shut_at(),
            Some(out.len()),
            "shut right after the response"
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Connection: close\r\n")
        );
        // Lingering reads and drops until the end.
        sock.eof();
        assert!(matches!(h.advance(now, TIMEOUT), Step::Closed));
        assert_eq!(sock.unread(), 0);
    }

    #[test]
    fn head_requests_and_shutdown_change_the_response() {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        sock.feed(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let req = head(h.advance(now, TIMEOUT));
        // Shutting down: nothing is kept alive.
        h.respond(&req, ok(), After::KeepAlive, true, now);
        let _ = h.advance(now, TIMEOUT);
        let out = String::from_utf8(sock.written()).unwrap();
        assert!(
            out.contains("Content-Length: 3\r\n") && out.ends_with("\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("Connection: close\r\n"));
        assert!(sock.shut_at().is_some());
    }

    #[test]
    fn an_upgrade_hands_over_the_stream_with_what_followed_the_head() {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        let mut bytes = GET.to_vec();
        bytes.extend_from_slice(b"\x82\x80frame");
        sock.feed(&bytes);
        let req = head(h.advance(now, TIMEOUT));
        let mut resp = Response::new(101, "", Vec::new());
        resp.body = std::borrow::Cow::Borrowed(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
        h.respond(&req, resp, After::Upgrade(7), false, now);
        assert!(matches!(h.advance(now, TIMEOUT), Step::Upgraded(7)));
        assert_eq!(sock.written(), b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let (_, leftover, _) = h.into_parts();
        assert_eq!(leftover, b"\x82\x80frame");
    }

    #[test]
    fn bad_heads_are_refused_and_ends_are_closed() {
        let now = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, now);
        sock.feed(b"\x16\x03\x01 not http\r\n\r\n");
        assert!(matches!(
            h.advance(now, TIMEOUT),
            Step::Bad(HeadError::Malformed)
        ));
        let sock = Script::new();
        let mut h = conn(&sock, now);
        sock.feed(&vec![b'a'; MAX_HEAD]);
        assert!(matches!(
            h.advance(now, TIMEOUT),
            Step::Bad(HeadError::LineTooLong)
        ));
        for end in [
            |s: &Script| {
                s.eof();
            },
            |s: &Script| {
                s.read_fail(io::ErrorKind::InvalidData);
            },
            |s: &Script| {
                s.read_fail(io::ErrorKind::ConnectionReset);
            },
        ] {
            let sock = Script::new();
            let mut h = conn(&sock, now);
            sock.feed(b"GET / HT");
            end(&sock);
            assert!(matches!(h.advance(now, TIMEOUT), Step::Closed));
        }
    }

    #[test]
    fn a_broken_write_closes() {
        let (mut h, sock, now) = answering(After::KeepAlive);
        sock.write_fail(io::ErrorKind::BrokenPipe);
        assert!(matches!(h.advance(now, TIMEOUT), Step::Closed));
    }

    #[test]
    fn a_flood_while_lingering_yields_to_the_others() {
        let (mut h, sock, now) = answering(After::Close);
        for _ in 0..2 * HTTP_STEP_BUDGET {
            sock.feed(b"x");
        }
        assert!(matches!(h.advance(now, TIMEOUT), Step::Yield));
        assert!(sock.unread() > 0);
    }

    #[test]
    fn deadlines_follow_progress_and_are_filed_once() {
        let t0 = Instant::now();
        let sock = Script::new();
        let mut h = conn(&sock, t0);
        // The entry filed at creation covers the head deadline.
        assert_eq!(h.rearm(t0), None);
        assert!(!h.expired(t0 + TIMEOUT - Duration::from_millis(1)));
        assert!(h.expired(t0 + TIMEOUT));
        // Writing a response moves the deadline later: the pending entry still comes first.
        sock.feed(GET);
        let req = head(h.advance(t0, TIMEOUT));
        h.respond(&req, ok(), After::KeepAlive, false, t0);
        assert_eq!(h.rearm(t0), None);
        assert!(!h.expired(t0 + TIMEOUT));
        // Once sent, the connection is idle and its next head gets the keep-alive deadline
        // (5 s here), sooner than the pending entry (t0 + 10 s): a new one is filed.
        let keepalive = Duration::from_secs(5);
        let t1 = t0 + Duration::from_secs(1);
        assert!(!h.is_idle());
        let _ = h.advance(t1, keepalive);
        assert!(h.is_idle());
        assert_eq!(h.rearm(t1), Some(t1 + keepalive));
        assert_eq!(h.rearm(t1), None);
        assert!(!h.expired(t1 + keepalive - Duration::from_millis(1)));
        assert!(h.expired(t1 + keepalive));
        // The next request: busy again, the entry for its response filed once.
        let t2 = t1 + Duration::from_secs(1);
        sock.feed(GET);
        let req = head(h.advance(t2, keepalive));
        h.respond(&req, ok(), After::KeepAlive, false, t2);
        assert!(!h.is_idle());
        assert_eq!(h.rearm(t2), None, "the entry at t1 + 5 s is still ahead");
        let t3 = t1 + keepalive;
        assert_eq!(
            h.rearm(t3),
            Some(t2 + WRITE_STALL),
            "it fired: file the new one"
        );
        assert_eq!(h.rearm(t3), None);
    }
}
