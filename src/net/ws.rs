//! One WebSocket client: tungstenite over a non-blocking stream, plus the client's place in
//! its session's output (a cursor into the ring, never a copy of it).
//!
//! The stream is a [`Transport`]: the server's socket ([`Stream`]), or in the unit tests below
//! a scripted one, which is how every short write and `WouldBlock` the rules here guard
//! against is reproduced byte for byte.
//!
//! Writes follow one rule: a new frame starts only when the previous one is fully on the
//! socket, so at most one frame per client is ever held and the memory per client is fixed
//! whatever the output rate.
//!
//! Output frames bypass tungstenite. They are the hot path (every byte a session prints, to
//! every client) and a server-to-client binary frame is only a 2-10 byte header and the
//! payload, so they are written with one `writev` of the header and the ring's own slices:
//! no copy into a frame, none into tungstenite's buffer, no allocation. tungstenite keeps the
//! read side and every control and text frame. The two writers never interleave inside a
//! frame: an output frame starts only when tungstenite's buffer is flushed, and while one is
//! part-written tungstenite is not called at all (`read` too can write: it answers pings).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;

use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::api::protocol::{self, ErrorCode, ProtoError, Role, ServerMsg};
#[cfg(feature = "echo")]
use crate::limits::ECHO_CAP;
use crate::limits::{
    CHUNK, DISCARD_READS, FLOW_WINDOW, MAX_HEADER, MAX_MESSAGE, MAX_WRITE_BUFFER, OUTBOX_CAP,
    READ_BUFFER, TIMEOUT_TICKS,
};
use crate::net::stream::{Stream, Transport};
use crate::sessions::ring::Ring;

/// The tungstenite limits every connection gets.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // 0: a frame goes to the socket as soon as it is written, rather than being batched.
        .write_buffer_size(0)
        // The echo socket of a test build sends whole client messages back through it.
        .max_write_buffer_size(if cfg!(feature = "echo") {
            MAX_MESSAGE + 2 * MAX_WRITE_BUFFER
        } else {
            MAX_WRITE_BUFFER
        })
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Open,
    /// A close is wanted; it is sent once the outbox is empty.
    CloseQueued,
    /// Our close frame is written; waiting for the peer's answer (bounded by a timer).
    Closing,
    /// Finished: remove the connection.
    Done,
}

/// What reading produced.
pub enum Incoming {
    /// A data or control message.
    Message(Message),
    /// Nothing more for now.
    Idle,
    /// The peer went away or the close handshake finished.
    Closed,
    /// The peer broke the protocol: close with this code and reason.
    Failed(u16, &'static str),
}

/// A WebSocket client of a session.
pub struct WsConn<S = Stream> {
    ws: WebSocket<S>,
    /// Peer address, for logs and the admin list.
    peer: SocketAddr,
    /// The attached session's key and generation.
    session: Option<(usize, u64)>,
    /// Next output offset to send.
    cursor: u64,
    /// With `flow`: everything before this offset has reached the client.
    acked: u64,
    /// The client acknowledges output (`flow=1`).
    flow: bool,
    /// Writer or viewer.
    role: Role,
    /// Input is waiting because the session's input queue is full.
    read_paused: bool,
    outbox: VecDeque<String>,
    close: Option<(u16, String)>,
    phase: Phase,
    /// tungstenite holds unsent bytes.
    unflushed: bool,
    /// The socket said WouldBlock; wait for a writable event.
    write_blocked: bool,
    /// The peer broke the protocol: nothing more it sends is processed (RFC 6455 7.1.7),
    /// and our half of the connection ends once our Close frame is out.
    failed: bool,
    /// The unwritten tail of an output frame the socket took only part of, from `rest_at`
    /// on. Copied out of the ring, since a viewer's bytes may be overwritten before the
    /// socket takes them; its capacity is kept, so this allocates once per connection.
    rest: Vec<u8>,
    rest_at: usize,
    /// A read was put off because an output frame is part-written (see the module doc).
    read_deferred: bool,
    /// A ping is to be sent.
    ping_due: bool,
    /// Messages to send back, on the conformance-test echo socket only.
    #[cfg(feature = "echo")]
    echo: Option<VecDeque<Message>>,
    /// Some frame arrived since the last ping tick.
    heard: bool,
    /// Ping ticks in a row without a frame from the peer.
    silent_ticks: u8,
    /// Ping ticks in a row with output pending and none of it taken.
    stalled_ticks: u8,
    /// Counts writes that reached the socket; compared across ticks to see a stall.
    progress: u64,
    progress_at_tick: u64,
}

impl<S: Transport> WsConn<S> {
    /// Wraps a stream whose upgrade response has been sent; `leftover` is whatever the client
    /// sent after its request head.
    pub fn new(stream: S, leftover: Vec<u8>, peer: SocketAddr) -> WsConn<S> {
        WsConn {
            ws: WebSocket::from_partially_read(stream, leftover, WsRole::Server, Some(config())),
            peer,
            session: None,
            cursor: 0,
            acked: 0,
            flow: false,
            role: Role::Writer,
            read_paused: false,
            outbox: VecDeque::new(),
            close: None,
            phase: Phase::Open,
            unflushed: false,
            write_blocked: false,
            failed: false,
            rest: Vec::new(),
            rest_at: 0,
            read_deferred: false,
            ping_due: false,
            #[cfg(feature = "echo")]
            echo: None,
            heard: true,
            silent_ticks: 0,
            stalled_ticks: 0,
            progress: 0,
            progress_at_tick: 0,
        }
    }

    /// The stream, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut S {
        self.ws.get_mut()
    }

    /// Peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The attached session's key and generation.
    pub fn session(&self) -> Option<(usize, u64)> {
        self.session
    }

    /// Next output offset to send.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Writer or viewer.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True if this client's input and resizes may reach the PTY.
    pub fn is_writer(&self) -> bool {
        self.role == Role::Writer && self.phase == Phase::Open
    }

    /// Attaches to `session` (key, generation) with output from `offset`; `flow`: the client
    /// acknowledges output.
    pub fn attach(&mut self, session: (usize, u64), offset: u64, flow: bool, role: Role) {
        self.session = Some(session);
        self.cursor = offset;
        self.acked = offset;
        self.flow = flow;
        self.role = role;
    }

    /// Leaves the session, if attached, and says which it was. No output follows.
    pub fn detach(&mut self) -> Option<(usize, u64)> {
        self.session.take()
    }

    /// Changes the role and tells the client.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
        self.send(&ServerMsg::Role { role });
    }

    /// True while input waits for room in the session's input queue: nothing is read.
    pub fn read_paused(&self) -> bool {
        self.read_paused
    }

    /// Stops reading until [`WsConn::resume_read`].
    pub fn pause_read(&mut self) {
        self.read_paused = true;
    }

    /// Reads again; true if reading was paused (the caller reads now: edge-triggered, the
    /// bytes waiting bring no new event).
    pub fn resume_read(&mut self) -> bool {
        std::mem::take(&mut self.read_paused)
    }

    /// Makes this the conformance-test echo socket: messages are sent back, not served.
    #[cfg(feature = "echo")]
    pub fn set_echo(&mut self) {
        self.echo = Some(VecDeque::new());
    }

    /// On an echo socket, queues a data message to be sent back and returns `None`; any other
    /// message (and every message elsewhere) is handed back. A peer that lets [`ECHO_CAP`]
    /// messages pile up is closed.
    #[cfg(feature = "echo")]
    pub fn echo(&mut self, msg: Message) -> Option<Message> {
        let Some(q) = self.echo.as_mut() else {
            return Some(msg);
        };
        if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
            return Some(msg);
        }
        if q.len() >= ECHO_CAP {
            self.close_with(protocol::CLOSE_POLICY, "echo queue full");
        } else {
            q.push_back(msg);
        }
        None
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True while output may still be sent to this client.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Queues a text message. Past the (small) cap the client is hopelessly behind on control
    /// messages, which cannot happen with a well-behaved peer: it is closed.
    pub fn send(&mut self, msg: &ServerMsg<'_>) {
        if self.phase != Phase::Open {
            return;
        }
        if self.outbox.len() >= OUTBOX_CAP {
            self.close_with(protocol::CLOSE_INTERNAL, "too many queued messages");
            return;
        }
        self.outbox.push_back(msg.to_json());
    }

    /// Sends the `error` message and then closes with its code.
    pub fn fail(&mut self, err: &ProtoError) {
        self.send(&ServerMsg::Error {
            code: err.code.name(),
            message: &err.message,
        });
        self.close_with(err.code.close_code(), err.code.name());
    }

    /// Closes after the queued messages (no more output is sent).
    pub fn close_with(&mut self, code: u16, reason: &str) {
        if self.phase == Phase::Open {
            self.phase = Phase::CloseQueued;
            self.close = Some((code, reason.to_string()));
        }
    }

    /// The peer's socket is writable again: what the stream itself holds back goes first.
    pub fn on_writable(&mut self) {
        // An error here shows again on the next write, which handles it.
        let _ = self.ws.get_mut().flush_pending();
        self.write_blocked = false;
    }

    /// True when there is nothing queued in tungstenite and no output frame part-written.
    pub fn can_take_frame(&self) -> bool {
        !self.unflushed && !self.write_blocked && !self.frame_in_flight()
    }

    fn frame_in_flight(&self) -> bool {
        self.rest_at < self.rest.len()
    }

    /// True once, after a read put off by a part-written output frame can go ahead: the
    /// caller reads again (edge-triggered, no new event may come for the bytes waiting).
    pub fn take_read_deferred(&mut self) -> bool {
        if self.read_deferred && !self.frame_in_flight() {
            self.read_deferred = false;
            return true;
        }
        false
    }

    /// The periodic liveness check, once per ping interval: queues a ping and reports
    /// whether the client is still worth keeping. A client that sent no frame (pongs count)
    /// for [`TIMEOUT_TICKS`] ticks, or took none of its pending output for as long, is not.
    pub fn on_ping_tick(&mut self, ring: Option<&Ring>) -> bool {
        self.silent_ticks = if self.heard { 0 } else { self.silent_ticks + 1 };
        self.heard = false;
        // With flow, output is taken when it is acknowledged, not when it is sent.
        let pending = self.unflushed
            || self.frame_in_flight()
            || !self.outbox.is_empty()
            || (self.flow && self.acked < self.cursor)
            || ring.is_some_and(|r| self.phase == Phase::Open && self.cursor < r.end());
        self.stalled_ticks = if pending && self.progress == self.progress_at_tick {
            self.stalled_ticks + 1
        } else {
            0
        };
        self.progress_at_tick = self.progress;
        if self.silent_ticks >= TIMEOUT_TICKS || self.stalled_ticks >= TIMEOUT_TICKS {
            return false;
        }
        self.ping_due = true;
        true
    }

    /// Why [`WsConn::on_ping_tick`] gave up, for the log.
    pub fn timeout_reason(&self) -> &'static str {
        if self.silent_ticks >= TIMEOUT_TICKS {
            "silent"
        } else {
            "took none of its output"
        }
    }

    /// Reads one message.
    pub fn read(&mut self) -> Incoming {
        if self.phase == Phase::Done {
            return Incoming::Closed;
        }
        if self.failed {
            return self.discard_input();
        }
        if self.frame_in_flight() {
            // tungstenite may write a pong from inside `read`, which would land in the middle
            // of our frame.
            self.read_deferred = true;
            return Incoming::Idle;
        }
        let got = match self.ws.read() {
            Ok(m) => {
                self.heard = true;
                if let Message::Close(_) = m {
                    // tungstenite queued the answering Close (RFC 6455 5.5.1: an endpoint
                    // that receives a Close must send one). Flushing it writes it and ends
                    // the WebSocket (best effort: a peer that does not read loses it).
                    let _ = self.ws.flush();
                }
                Incoming::Message(m)
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // tungstenite may have queued a pong it could not send yet.
                Incoming::Idle
            }
            Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                Incoming::Failed(protocol::CLOSE_TOO_BIG, "message too big")
            }
            Err(WsError::Capacity(_)) => Incoming::Failed(protocol::CLOSE_TOO_BIG, "frame too big"),
            Err(WsError::Utf8(_)) => {
                Incoming::Failed(protocol::CLOSE_INVALID_PAYLOAD, "text frame is not UTF-8")
            }
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Incoming::Closed,
            Err(WsError::Protocol(_)) => {
                Incoming::Failed(protocol::CLOSE_PROTOCOL, "WebSocket protocol error")
            }
            Err(_) => Incoming::Closed,
        };
        if let Incoming::Failed(..) = got {
            self.failed = true;
        }
        got
    }

    /// After a protocol failure: reads and drops what the peer sends, a bounded amount per
    /// call (the linger timer bounds the rest), until it ends the connection.
    fn discard_input(&mut self) -> Incoming {
        let mut sink = [0u8; 4096];
        for _ in 0..DISCARD_READS {
            match io::Read::read(self.ws.get_mut(), &mut sink) {
                Ok(0) => return Incoming::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Incoming::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Incoming::Closed,
            }
        }
        Incoming::Idle
    }

    /// Moves bytes toward the peer: unsent tungstenite bytes, then queued text messages, then
    /// output from `ring` (when attached) and finally the close frame. Stops at `WouldBlock`.
    /// Returns false if the connection is finished or broken.
    pub fn pump_write(&mut self, ring: Option<&Ring>) -> bool {
        loop {
            if self.phase == Phase::Done {
                return false;
            }
            if self.write_blocked {
                return true;
            }
            if self.frame_in_flight() {
                if !self.write_rest() {
                    return false;
                }
                if self.read_deferred && !self.frame_in_flight() {
                    // Input waits for no output. Under steady output every pump could end
                    // inside a new frame, and the peer's keys and pongs would wait for the
                    // whole backlog (a slow link would even time out as silent). The caller
                    // reads now (take_read_deferred) and pumps again.
                    return true;
                }
                continue;
            }
            if self.unflushed || self.phase == Phase::Closing {
                match self.ws.flush() {
                    Ok(()) => {
                        if self.unflushed {
                            self.progress += 1;
                        }
                        self.unflushed = false;
                    }
                    Err(e) => return self.on_write_error(e),
                }
                if self.phase == Phase::Closing {
                    if self.failed {
                        // Our Close frame is out. After a failure nothing more is read from
                        // the peer (RFC 6455 7.1.7), so end our half now: the peer sees the
                        // end at once instead of after the linger.
                        self.ws.get_mut().shutdown_write();
                    }
                    return true; // wait for the peer's close frame
                }
            }
            if let Some(r) = ring {
                self.skip_lost(r);
            }
            #[cfg(feature = "echo")]
            if !self.ping_due
                && self.outbox.is_empty()
                && self.phase == Phase::Open
                && let Some(m) = self.echo.as_mut().and_then(VecDeque::pop_front)
            {
                match self.ws.write(m) {
                    Ok(()) => continue,
                    Err(e) => return self.on_write_error(e),
                }
            }
            let msg = if self.ping_due && self.phase != Phase::Done {
                self.ping_due = false;
                Message::Ping(bytes::Bytes::new())
            } else if let Some(text) = self.outbox.pop_front() {
                Message::text(text)
            } else if let Some(r) = ring
                && self.output_allowance(r) > 0
            {
                match self.write_output(r) {
                    Some(true) => continue,
                    Some(false) => return false,
                    None => return true,
                }
            } else if self.phase == Phase::CloseQueued {
                let (code, reason) = self
                    .close
                    .take()
                    .unwrap_or((protocol::CLOSE_NORMAL, String::new()));
                self.phase = Phase::Closing;
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                match self.ws.close(Some(frame)) {
                    // Written; the Closing step above finishes the job.
                    Ok(()) => continue,
                    Err(e) => return self.on_write_error(e),
                }
            } else {
                return true;
            };
            // Our own pings are not output the client took.
            let counts = !matches!(msg, Message::Ping(_));
            match self.ws.write(msg) {
                Ok(()) if counts => self.progress += 1,
                Ok(()) => {}
                Err(e) => return self.on_write_error(e),
            }
        }
    }

    fn on_write_error(&mut self, e: WsError) -> bool {
        match e {
            WsError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Queued in tungstenite; it goes out on the next writable event.
                self.unflushed = true;
                self.write_blocked = true;
                true
            }
            _ => {
                self.phase = Phase::Done;
                false
            }
        }
    }

    /// A client the ring has overtaken (a viewer: the writer is never overtaken) jumps to the
    /// first clean point held, not into the middle of an escape sequence or a character, and
    /// is told how much it missed, instead of stalling.
    fn skip_lost(&mut self, ring: &Ring) {
        if self.phase == Phase::Open && self.session.is_some() && self.cursor < ring.start() {
            let to = ring.clean_start();
            let lost = to - self.cursor;
            self.cursor = to;
            self.acked = self.acked.max(to);
            self.send(&ServerMsg::Gap { offset: to, lost });
        }
    }

    /// How many output bytes this client may be sent now, at most one frame's worth.
    fn output_allowance(&self, ring: &Ring) -> usize {
        if self.phase != Phase::Open || self.session.is_none() || !self.ws.can_write() {
            return 0;
        }
        let mut max = CHUNK as u64;
        if self.flow {
            let in_flight = self.cursor.saturating_sub(self.acked);
            max = max.min(FLOW_WINDOW.saturating_sub(in_flight));
        }
        max.min(ring.end().saturating_sub(self.cursor)) as usize
    }

    /// Writes one output frame from `ring[cursor..]` with a single `writev`; what the socket
    /// does not take is copied to `rest`. `Some(false)` if the connection broke, `None` if
    /// there was nothing to write after all.
    fn write_output(&mut self, ring: &Ring) -> Option<bool> {
        // Our frame must not start inside a frame tungstenite has part-written (a pong it
        // queued while reading, say). Nothing to flush is the common case and costs no
        // system call.
        if let Err(e) = self.ws.flush() {
            return Some(self.on_write_error(e));
        }
        let max = self.output_allowance(ring);
        // skip_lost has moved a lagging cursor, so this holds; but never spin on it.
        let (a, b) = ring.read_at(self.cursor)?;
        let a = &a[..a.len().min(max)];
        let b = &b[..b.len().min(max - a.len())];
        let mut header = [0u8; MAX_HEADER];
        let header_len = frame_header(a.len() + b.len(), &mut header);
        let parts = [
            IoSlice::new(&header[..header_len]),
            IoSlice::new(a),
            IoSlice::new(b),
        ];
        let total = header_len + a.len() + b.len();
        let written = loop {
            match self.ws.get_mut().write_vectored(&parts) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Some(true);
                }
                Err(_) => {
                    self.phase = Phase::Done;
                    return Some(false);
                }
            }
        };
        if written == 0 {
            self.phase = Phase::Done;
            return Some(false);
        }
        if written < total {
            if self.rest.capacity() == 0 {
                // Exactly once, to the largest tail there can be, so no later frame grows it.
                self.rest.reserve_exact(MAX_HEADER + CHUNK);
            }
            self.rest.clear();
            let mut skip = written;
            for part in [&header[..header_len], a, b] {
                let from = skip.min(part.len());
                self.rest.extend_from_slice(&part[from..]);
                skip -= from;
            }
            self.rest_at = 0;
        }
        self.cursor += (a.len() + b.len()) as u64;
        self.progress += 1;
        Some(true)
    }

    /// Writes more of a part-written output frame. False if the connection broke.
    fn write_rest(&mut self) -> bool {
        loop {
            match self.ws.get_mut().write(&self.rest[self.rest_at..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.rest_at += n;
                    self.progress += 1;
                    if !self.frame_in_flight() {
                        self.rest.clear();
                        self.rest_at = 0;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return true;
                }
                Err(_) => break,
            }
        }
        self.phase = Phase::Done;
        false
    }

    /// True if every byte of output has been handed to the socket layer.
    pub fn caught_up(&self, ring: &Ring) -> bool {
        self.cursor >= ring.end()
    }

    /// Marks the connection finished (the peer's close arrived or the linger ran out).
    pub fn finish(&mut self) {
        self.phase = Phase::Done;
    }

    /// An `ack` from the client. Acks beyond what was sent are a protocol error.
    pub fn ack(&mut self, offset: u64) -> Result<(), ProtoError> {
        if offset > self.cursor {
            return Err(ProtoError::new(
                ErrorCode::BadRequest,
                "ack beyond the output sent",
            ));
        }
        if offset > self.acked {
            self.acked = offset;
            self.progress += 1;
        }
        Ok(())
    }

    /// The oldest byte this client may still need: what it acknowledged (flow) or was sent.
    pub fn needs_from(&self) -> u64 {
        if self.flow { self.acked } else { self.cursor }
    }
}

/// Writes the header of a final, unmasked binary frame carrying `len` bytes (RFC 6455 5.2)
/// into `out` and returns its length. Server frames are never masked.
pub fn frame_header(len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x82; // FIN, opcode 2 (binary)
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= 0xffff {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::script::Script;

    const OP_TEXT: u8 = 1;
    const OP_BINARY: u8 = 2;
    const OP_CLOSE: u8 = 8;
    const OP_PING: u8 = 9;
    const OP_PONG: u8 = 10;

    /// The output byte at offset `o`: 251 is prime, so a misplaced slice shows.
    fn pattern(o: u64) -> u8 {
        (o % 251) as u8
    }

    fn expected(from: u64, to: u64) -> Vec<u8> {
        (from..to).map(pattern).collect()
    }

    /// A ring of `capacity` bytes that has been sent the pattern up to `end`.
    fn ring_upto(capacity: usize, end: u64) -> Ring {
        let mut ring = Ring::new(capacity).expect("a small mapping");
        ring.push(&expected(0, end));
        ring
    }

    fn conn() -> (WsConn<Script>, Script) {
        let sock = Script::new();
        let peer = "127.0.0.1:9".parse().unwrap();
        (WsConn::new(sock.clone(), Vec::new(), peer), sock)
    }

    fn attached(offset: u64, flow: bool, role: Role) -> (WsConn<Script>, Script) {
        let (mut w, sock) = conn();
        w.attach((0, 1), offset, flow, role);
        (w, sock)
    }

    /// A client attached at `from` whose first output frame from `ring` the socket cut after
    /// `k` bytes (the next write says WouldBlock).
    fn cut_after(k: usize, ring: &Ring, from: u64, role: Role) -> (WsConn<Script>, Script) {
        let (mut w, sock) = attached(from, false, role);
        if k > 0 {
            sock.accept(k);
        }
        sock.block();
        assert!(w.pump_write(Some(ring)));
        assert_eq!(sock.written().len(), k);
        (w, sock)
    }

    /// A final client frame, masked as RFC 6455 requires of clients.
    fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER];
        let n = frame_header(payload.len(), &mut header);
        header[0] = 0x80 | op;
        header[1] |= 0x80;
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = header[..n].to_vec();
        f.extend_from_slice(&mask);
        f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        f
    }

    /// Splits what the server wrote into (opcode, payload) frames, checking each is final,
    /// unmasked and whole: a cut or interleaved frame fails here.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 2, "cut header: {bytes:?}");
            assert_eq!(bytes[0] & 0xf0, 0x80, "FIN and no RSV bits");
            assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
            let (len, at) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert!(
                bytes.len() >= at + len,
                "frame cut: {} of {}",
                bytes.len(),
                at + len
            );
            out.push((bytes[0] & 0x0f, bytes[at..at + len].to_vec()));
            bytes = &bytes[at + len..];
        }
        out
    }

    /// Asserts that `bytes` are exactly the frames `want`; a mismatch shows their shapes
    /// (opcode, length, first byte), not megabytes of payload.
    #[track_caller]
    fn assert_frames(bytes: &[u8], want: &[(u8, Vec<u8>)]) {
        let got = frames(bytes);
        if got != want {
            let shape = |f: &[(u8, Vec<u8>)]| -> Vec<(u8, usize, Option<u8>)> {
                f.iter()
                    .map(|(op, p)| (*op, p.len(), p.first().copied()))
                    .collect()
            };
            panic!("frames {:?}, want {:?}", shape(&got), shape(want));
        }
    }

    fn text(json: &str) -> (u8, Vec<u8>) {
        (OP_TEXT, json.as_bytes().to_vec())
    }

    fn close(code: u16, reason: &str) -> (u8, Vec<u8>) {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        (OP_CLOSE, p)
    }

    /// Reads until there is nothing more, as the event loop's drain does.
    fn read_all(w: &mut WsConn<Script>) -> Vec<Message> {
        let mut got = Vec::new();
        loop {
            match w.read() {
                Incoming::Message(m) => got.push(m),
                Incoming::Idle => return got,
                Incoming::Closed => panic!("closed"),
                Incoming::Failed(code, why) => panic!("failed {code} {why}"),
            }
        }
    }

    #[test]
    fn output_frame_cut_at_every_byte() {
        // (ring capacity, output end, client's offset): a short frame from one slice, and a
        // frame with a 16-bit length from two (the range wraps at 1024).
        for (capacity, end, from) in [(1024, 100, 0), (1024, 1024 + 250, 1024 - 50)] {
            let ring = ring_upto(capacity, end);
            let (a, b) = ring.read_at(from).unwrap();
            assert_eq!(b.is_empty(), from == 0, "the second case wraps");
            let payload = expected(from, end);
            let frame_len = frame_header(payload.len(), &mut [0; MAX_HEADER]) + a.len() + b.len();
            for k in 0..frame_len {
                let (mut w, sock) = cut_after(k, &ring, from, Role::Writer);
                // Handed over, or (nothing taken) not yet.
                assert_eq!(w.cursor(), if k == 0 { from } else { end }, "cut at {k}");
                assert!(!w.can_take_frame());
                w.on_writable();
                assert!(w.pump_write(Some(&ring)));
                assert!(w.can_take_frame(), "cut at {k}");
                assert_eq!(w.cursor(), end);
                let whole = frames(&sock.written()) == [(OP_BINARY, payload.clone())];
                assert!(whole, "cut at {k}");
            }
        }
    }

    #[test]
    fn would_block_between_header_and_payload() {
        let mut ring = ring_upto(4096, 300);
        let (mut w, sock) = cut_after(4, &ring, 0, Role::Writer);
        assert_eq!(
            sock.written(),
            [0x82, 126, 1, 44],
            "the header alone: 300 bytes follow"
        );
        // More output meanwhile: it waits for the frame on the wire to end.
        ring.push(&expected(300, 400));
        assert!(w.pump_write(Some(&ring)), "still blocked: nothing written");
        assert_eq!(sock.written().len(), 4);
        w.on_writable();
        assert!(w.pump_write(Some(&ring)));
        assert_frames(
            &sock.written(),
            &[
                (OP_BINARY, expected(0, 300)),
                (OP_BINARY, expected(300, 400)),
            ],
        );
    }

    #[test]
    fn part_written_frame_survives_the_ring_moving_on() {
        let mut ring = ring_upto(1024, 1000);
        let (mut w, sock) = cut_after(10, &ring, 0, Role::Viewer);
        // The ring overwrites every byte of the frame before the socket takes the rest.
        ring.push(&expected(1000, 3000));
        w.on_writable();
        assert!(w.pump_write(Some(&ring)));
        let got = frames(&sock.written());
        assert_eq!(got[0], (OP_BINARY, expected(0, 1000)));
        assert_eq!(got[1], text(r#"{"type":"gap","offset":1976,"lost":976}"#));
        assert_eq!(got[2], (OP_BINARY, expected(1976, 3000)));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn pong_waits_for_a_part_written_frame() {
        let ring = ring_upto(4096, 1000);
        let (mut w, sock) = cut_after(500, &ring, 0, Role::Writer);
        sock.feed(&client_frame(OP_PING, b"hi"));
        assert!(matches!(w.read(), Incoming::Idle), "the read is put off");
        assert!(
            !w.take_read_deferred(),
            "not while the frame is part-written"
        );
        assert_eq!(sock.written().len(), 500);
        w.on_writable();
        assert!(w.pump_write(Some(&ring)));
        assert!(w.take_read_deferred(), "the frame is out: read now");
        assert!(!w.take_read_deferred(), "once");
        let got = read_all(&mut w);
        assert!(matches!(&got[..], [Message::Ping(p)] if p.as_ref() == b"hi"));
        assert_frames(
            &sock.written(),
            &[(OP_BINARY, expected(0, 1000)), (OP_PONG, b"hi".to_vec())],
        );
    }

    #[test]
    fn output_waits_for_a_part_written_pong() {
        let mut ring = ring_upto(4096, 0);
        let (mut w, sock) = attached(0, false, Role::Writer);
        sock.feed(&client_frame(OP_PING, b"ping!"));
        let Incoming::Message(Message::Ping(_)) = w.read() else {
            panic!("a ping");
        };
        // The read that sends the pong gets 3 of its 7 bytes out.
        sock.accept(3).block();
        assert!(matches!(w.read(), Incoming::Idle));
        assert_eq!(sock.written().len(), 3);
        ring.push(&expected(0, 100));
        assert!(w.pump_write(Some(&ring)));
        assert_frames(
            &sock.written(),
            &[(OP_PONG, b"ping!".to_vec()), (OP_BINARY, expected(0, 100))],
        );
    }

    #[test]
    fn protocol_failure_closes_and_reads_nothing_more() {
        let ring = ring_upto(4096, 100);
        let (mut w, sock) = attached(100, false, Role::Writer);
        // An unmasked frame, then a good one that must not be served.
        sock.feed(&[0x81, 2, b'h', b'i']);
        sock.feed(&client_frame(OP_TEXT, br#"{"type":"ack","offset":0}"#));
        let Incoming::Failed(code, reason) = w.read() else {
            panic!("a failure");
        };
        assert_eq!(code, protocol::CLOSE_PROTOCOL);
        w.close_with(code, reason);
        assert!(matches!(w.read(), Incoming::Idle));
        assert_eq!(sock.unread(), 0, "drained, not parsed");
        sock.feed(&client_frame(OP_BINARY, b"input"));
        assert!(matches!(w.read(), Incoming::Idle));
        assert_eq!(sock.shut_at(), None);
        // Output that arrives now is not sent: only our Close, then the end of our half.
        let ring = {
            let mut r = ring;
            r.push(b"late");
            r
        };
        assert!(w.pump_write(Some(&ring)));
        assert_eq!(w.phase(), Phase::Closing);
        let written = sock.written();
        assert_frames(
            &written,
            &[close(protocol::CLOSE_PROTOCOL, "WebSocket protocol error")],
        );
        assert_eq!(sock.shut_at(), Some(written.len()));
        sock.eof();
        assert!(matches!(w.read(), Incoming::Closed));
    }

    #[test]
    fn failures_close_with_their_codes() {
        let too_big = {
            let mut f = vec![0x82, 0x80 | 127];
            f.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            f
        };
        for (bytes, want) in [
            (
                client_frame(OP_TEXT, &[b'a', 0xff]),
                protocol::CLOSE_INVALID_PAYLOAD,
            ),
            (too_big, protocol::CLOSE_TOO_BIG),
            (client_frame(0x3, b""), protocol::CLOSE_PROTOCOL),
        ] {
            let (mut w, sock) = conn();
            sock.feed(&bytes);
            let got = w.read();
            assert!(
                matches!(got, Incoming::Failed(c, _) if c == want),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn close_from_the_peer_is_answered() {
        let (mut w, sock) = conn();
        sock.feed(&client_frame(
            OP_CLOSE,
            &protocol::CLOSE_NORMAL.to_be_bytes(),
        ));
        assert!(matches!(w.read(), Incoming::Message(Message::Close(_))));
        assert_frames(&sock.written(), &[close(protocol::CLOSE_NORMAL, "")]);
    }

    #[test]
    fn flow_window() {
        let ring = ring_upto(1 << 20, 600 << 10);
        let (mut w, sock) = attached(0, true, Role::Writer);
        assert!(w.pump_write(Some(&ring)));
        assert_eq!(w.cursor(), FLOW_WINDOW, "a window's worth, no more");
        let got = frames(&sock.take_written());
        assert_eq!(got.len(), FLOW_WINDOW as usize / CHUNK);
        assert_eq!(w.needs_from(), 0);
        w.ack(1000).unwrap();
        assert_eq!(w.needs_from(), 1000);
        assert!(w.pump_write(Some(&ring)));
        assert_eq!(w.cursor(), FLOW_WINDOW + 1000);
        assert_frames(
            &sock.take_written(),
            &[(OP_BINARY, expected(256 << 10, (256 << 10) + 1000))],
        );
        w.ack(10).unwrap();
        assert_eq!(w.needs_from(), 1000, "an old ack changes nothing");
        let e = w.ack(w.cursor() + 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        w.ack(w.cursor()).unwrap();
        assert!(w.pump_write(Some(&ring)));
        assert_eq!(w.cursor(), 2 * FLOW_WINDOW + 1000);
    }

    #[test]
    fn without_flow_output_goes_out_in_chunks() {
        let ring = ring_upto(1 << 20, 200_000);
        let (mut w, sock) = attached(0, false, Role::Writer);
        assert!(w.pump_write(Some(&ring)));
        assert!(w.caught_up(&ring));
        assert_eq!(w.needs_from(), 200_000);
        let got = frames(&sock.written());
        let sizes: Vec<usize> = got.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 200_000 - 3 * CHUNK]);
        let all: Vec<u8> = got.into_iter().flat_map(|(_, p)| p).collect();
        assert!(
            all == expected(0, 200_000),
            "output lost, repeated or reordered"
        );
    }

    #[test]
    fn lagging_viewer_skips_to_a_clean_point() {
        let mut ring = ring_upto(1024, 3000);
        ring.set_clean_start(2100);
        let (mut w, sock) = attached(0, true, Role::Viewer);
        assert!(w.pump_write(Some(&ring)));
        assert_frames(
            &sock.written(),
            &[
                text(r#"{"type":"gap","offset":2100,"lost":2100}"#),
                (OP_BINARY, expected(2100, 3000)),
            ],
        );
        assert_eq!(
            w.needs_from(),
            2100,
            "the skipped bytes count as acknowledged"
        );
    }

    #[test]
    fn outbox_cap() {
        let (mut w, sock) = conn();
        for _ in 0..OUTBOX_CAP {
            w.send(&ServerMsg::Shutdown);
        }
        assert!(w.is_open());
        w.send(&ServerMsg::Shutdown);
        assert_eq!(w.phase(), Phase::CloseQueued);
        w.send(&ServerMsg::Shutdown);
        assert!(w.pump_write(None));
        let got = frames(&sock.written());
        assert_eq!(got.len(), OUTBOX_CAP + 1);
        assert!(
            got[..OUTBOX_CAP]
                .iter()
                .all(|f| *f == text(r#"{"type":"shutdown"}"#))
        );
        assert_eq!(
            got[OUTBOX_CAP],
            close(protocol::CLOSE_INTERNAL, "too many queued messages")
        );
    }

    #[test]
    fn silent_client_times_out() {
        let (mut w, sock) = conn();
        for _ in 0..TIMEOUT_TICKS {
            assert!(w.on_ping_tick(None));
            assert!(w.pump_write(None));
        }
        assert!(!w.on_ping_tick(None));
        assert_eq!(w.timeout_reason(), "silent");
        let pings = frames(&sock.written());
        assert_eq!(pings, vec![(OP_PING, Vec::new()); TIMEOUT_TICKS as usize]);
    }

    #[test]
    fn answering_client_stays() {
        let (mut w, sock) = conn();
        for _ in 0..3 * TIMEOUT_TICKS {
            assert!(w.on_ping_tick(None));
            assert!(w.pump_write(None));
            assert_frames(&sock.take_written(), &[(OP_PING, Vec::new())]);
            sock.feed(&client_frame(OP_PONG, b""));
            assert_eq!(read_all(&mut w).len(), 1);
        }
    }

    #[test]
    fn stalled_client_times_out() {
        let mut ring = ring_upto(1 << 20, 1000);
        let (mut w, sock) = attached(0, false, Role::Writer);
        // It answers pings but takes no output: the socket stays full.
        sock.block();
        assert!(w.pump_write(Some(&ring)));
        for tick in 1..=TIMEOUT_TICKS {
            sock.feed(&client_frame(OP_PONG, b""));
            read_all(&mut w);
            ring.push(b"more");
            let alive = w.on_ping_tick(Some(&ring));
            assert_eq!(alive, tick < TIMEOUT_TICKS, "tick {tick}");
        }
        assert_eq!(w.timeout_reason(), "took none of its output");
        assert!(sock.written().is_empty());
    }

    #[test]
    fn slow_client_stays() {
        let ring = ring_upto(1 << 20, 1 << 20);
        let (mut w, sock) = attached(0, false, Role::Writer);
        for _ in 0..3 * TIMEOUT_TICKS {
            sock.feed(&client_frame(OP_PONG, b""));
            read_all(&mut w);
            // A slow link: less than a frame each interval, and every pump ending mid-frame,
            // as a socket takes what fits, not what ends a frame.
            for _ in 0..8 {
                sock.accept(5_000);
            }
            sock.block();
            w.on_writable();
            assert!(w.pump_write(Some(&ring)));
            // What the event loop does.
            while w.take_read_deferred() {
                read_all(&mut w);
                assert!(w.pump_write(Some(&ring)));
            }
            assert!(w.on_ping_tick(Some(&ring)));
        }
        assert!(w.cursor() > 3 * CHUNK as u64);
    }

    #[test]
    fn input_is_read_between_frames_of_steady_output() {
        let ring = ring_upto(1 << 20, 600 << 10);
        let (mut w, sock) = cut_after(1000, &ring, 0, Role::Writer);
        sock.feed(&client_frame(OP_PING, b"k"));
        assert!(matches!(w.read(), Incoming::Idle), "put off");
        // The socket would take the rest of the frame and part of the next at once.
        sock.accept(2 * CHUNK).accept(5000).block();
        w.on_writable();
        assert!(w.pump_write(Some(&ring)));
        assert!(
            w.take_read_deferred(),
            "the read goes first, at the frame's end"
        );
        assert!(matches!(&read_all(&mut w)[..], [Message::Ping(_)]));
        assert_frames(
            &sock.written(),
            &[
                (OP_BINARY, expected(0, CHUNK as u64)),
                (OP_PONG, b"k".to_vec()),
            ],
        );
        assert!(w.pump_write(Some(&ring)));
        w.on_writable();
        assert!(w.pump_write(Some(&ring)));
        let output: Vec<u8> = frames(&sock.written())
            .into_iter()
            .filter(|(op, _)| *op == OP_BINARY)
            .flat_map(|(_, p)| p)
            .collect();
        assert!(
            output == expected(0, 600 << 10),
            "output lost, repeated or reordered"
        );
    }

    #[test]
    fn attach_roles_and_input_pause() {
        let (mut w, sock) = conn();
        assert_eq!(w.session(), None);
        w.attach((3, 7), 42, true, Role::Viewer);
        assert_eq!(
            (w.session(), w.cursor(), w.needs_from()),
            (Some((3, 7)), 42, 42)
        );
        assert!(!w.is_writer());
        w.set_role(Role::Writer);
        assert!(w.is_writer());
        assert_eq!(w.role(), Role::Writer);
        assert!(!w.read_paused());
        w.pause_read();
        assert!(w.read_paused());
        assert!(w.resume_read());
        assert!(!w.resume_read(), "was not paused");
        assert_eq!(w.detach(), Some((3, 7)));
        assert_eq!(w.detach(), None);
        w.close_with(protocol::CLOSE_GOING_AWAY, "bye");
        assert!(!w.is_writer(), "a closing writer takes no input");
        assert!(w.pump_write(None));
        assert_frames(
            &sock.written(),
            &[
                text(r#"{"type":"role","role":"writer"}"#),
                close(protocol::CLOSE_GOING_AWAY, "bye"),
            ],
        );
        assert_eq!(w.peer().port(), 9);
    }

    #[test]
    fn broken_socket_ends_the_connection() {
        let ring = ring_upto(4096, 100);
        let (mut w, sock) = attached(0, false, Role::Writer);
        sock.write_fail(io::ErrorKind::ConnectionReset);
        assert!(!w.pump_write(Some(&ring)));
        assert_eq!(w.phase(), Phase::Done);
        let (mut w, sock) = attached(0, false, Role::Writer);
        sock.accept(10).write_fail(io::ErrorKind::BrokenPipe);
        assert!(!w.pump_write(Some(&ring)), "broken while part-written");
        let (mut w, sock) = conn();
        sock.read_fail(io::ErrorKind::ConnectionReset);
        assert!(matches!(w.read(), Incoming::Closed));
    }

    #[cfg(feature = "echo")]
    #[test]
    fn echo_socket() {
        let (mut w, sock) = conn();
        assert!(w.echo(Message::text("not an echo socket")).is_some());
        w.set_echo();
        assert!(w.echo(Message::text("back")).is_none());
        assert!(w.echo(Message::Ping(bytes::Bytes::new())).is_some());
        assert!(w.pump_write(None));
        assert_frames(&sock.take_written(), &[text("back")]);
        for _ in 0..=ECHO_CAP {
            assert!(w.echo(Message::binary(vec![1])).is_none());
        }
        assert_eq!(w.phase(), Phase::CloseQueued);
        assert!(w.pump_write(None));
        assert_frames(
            &sock.written(),
            &[close(protocol::CLOSE_POLICY, "echo queue full")],
        );
    }
}
