//! One WebSocket client: tungstenite over a non-blocking mio stream, plus the client's place
//! in its session's output (a cursor into the ring, never a copy of it).
//!
//! Writes follow one rule: a new frame is handed to tungstenite only when its previous one is
//! fully on the socket, so tungstenite's buffer never holds more than one frame and the memory
//! per client is fixed whatever the output rate.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use mio::net::TcpStream;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::protocol::{self, ErrorCode, ProtoError, Role, ServerMsg};
use crate::ring::Ring;

/// Largest output frame. Small enough that one frame per client is cheap, large enough that
/// a flood is a few thousand frames a second, not hundreds of thousands.
pub const CHUNK: usize = 16 << 10;
/// tungstenite's read buffer (it allocates it eagerly, per connection).
pub const READ_BUFFER: usize = 4 << 10;
/// tungstenite's write buffer cap: one output frame plus a control frame or text message,
/// with room to spare (we hand it a new frame only once the last is on the socket).
pub const MAX_WRITE_BUFFER: usize = 2 * CHUNK + 4096;
/// Text messages a client may have queued (they are few: attached, role, exited, close).
const OUTBOX_CAP: usize = 16;

/// The tungstenite limits every connection gets.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // 0: a frame goes to the socket as soon as it is written, rather than being batched.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(protocol::MAX_MESSAGE))
        .max_frame_size(Some(protocol::MAX_MESSAGE))
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
pub struct WsConn {
    ws: WebSocket<TcpStream>,
    /// Peer address, for logs and the admin list.
    pub peer: SocketAddr,
    /// The attached session's key and generation.
    pub session: Option<(usize, u64)>,
    /// Next output offset to send.
    pub cursor: u64,
    /// With `flow`: everything before this offset has reached the client.
    pub acked: u64,
    /// The client acknowledges output (`flow=1`).
    pub flow: bool,
    /// Writer or viewer.
    pub role: Role,
    /// Once output has ended: send `exited` after the last byte.
    pub exit_notice: Option<(Option<i32>, Option<i32>)>,
    /// Input is waiting because the session's input queue is full.
    pub read_paused: bool,
    outbox: VecDeque<String>,
    close: Option<(u16, String)>,
    phase: Phase,
    /// tungstenite holds unsent bytes.
    unflushed: bool,
    /// The socket said WouldBlock; wait for a writable event.
    write_blocked: bool,
    frame: BytesMut,
    /// A ping is to be sent.
    ping_due: bool,
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

/// Ping ticks without a frame, or without output taken, after which a client is closed.
pub const TIMEOUT_TICKS: u8 = 3;

impl WsConn {
    /// Wraps a stream whose upgrade response has been sent; `leftover` is whatever the client
    /// sent after its request head.
    pub fn new(stream: TcpStream, leftover: Vec<u8>, peer: SocketAddr) -> WsConn {
        WsConn {
            ws: WebSocket::from_partially_read(stream, leftover, WsRole::Server, Some(config())),
            peer,
            session: None,
            cursor: 0,
            acked: 0,
            flow: false,
            role: Role::Writer,
            exit_notice: None,
            read_paused: false,
            outbox: VecDeque::new(),
            close: None,
            phase: Phase::Open,
            unflushed: false,
            write_blocked: false,
            frame: BytesMut::new(),
            ping_due: false,
            heard: true,
            silent_ticks: 0,
            stalled_ticks: 0,
            progress: 0,
            progress_at_tick: 0,
        }
    }

    /// The stream, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.ws.get_mut()
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

    /// The peer's socket is writable again.
    pub fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// True when there is nothing queued in tungstenite.
    pub fn can_take_frame(&self) -> bool {
        !self.unflushed && !self.write_blocked
    }

    /// The periodic liveness check, once per ping interval: queues a ping and reports
    /// whether the client is still worth keeping. A client that sent no frame (pongs count)
    /// for [`TIMEOUT_TICKS`] ticks, or took none of its pending output for as long, is not.
    pub fn on_ping_tick(&mut self, ring: Option<&Ring>) -> bool {
        self.silent_ticks = if self.heard { 0 } else { self.silent_ticks + 1 };
        self.heard = false;
        // With flow, output is taken when it is acknowledged, not when it is sent.
        let pending = self.unflushed
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
        match self.ws.read() {
            Ok(m) => {
                self.heard = true;
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
            Err(WsError::Utf8(_)) => Incoming::Failed(1007, "text frame is not UTF-8"),
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Incoming::Closed,
            Err(WsError::Protocol(_)) => {
                Incoming::Failed(protocol::CLOSE_PROTOCOL, "WebSocket protocol error")
            }
            Err(_) => Incoming::Closed,
        }
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
                    return true; // wait for the peer's close frame
                }
            }
            if let Some(r) = ring {
                self.skip_lost(r);
            }
            let msg = if self.ping_due && self.phase != Phase::Done {
                self.ping_due = false;
                Message::Ping(bytes::Bytes::new())
            } else if let Some(text) = self.outbox.pop_front() {
                Message::text(text)
            } else if let Some(data) = ring.and_then(|r| self.next_chunk(r)) {
                Message::Binary(data)
            } else if self.phase == Phase::CloseQueued {
                let (code, reason) = self.close.take().unwrap_or((1000, String::new()));
                self.phase = Phase::Closing;
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                match self.ws.close(Some(frame)) {
                    Ok(()) => {}
                    Err(e) => return self.on_write_error(e),
                }
                return true;
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
    /// oldest byte held and is told how much it missed, instead of stalling.
    fn skip_lost(&mut self, ring: &Ring) {
        let start = ring.start();
        if self.phase == Phase::Open && self.session.is_some() && self.cursor < start {
            let lost = start - self.cursor;
            self.cursor = start;
            self.acked = self.acked.max(start);
            self.send(&ServerMsg::Gap {
                offset: start,
                lost,
            });
        }
    }

    /// The next frame of output, if the client may have one now.
    fn next_chunk(&mut self, ring: &Ring) -> Option<bytes::Bytes> {
        if self.phase != Phase::Open || self.session.is_none() {
            return None;
        }
        let mut max = CHUNK as u64;
        if self.flow {
            let in_flight = self.cursor.saturating_sub(self.acked);
            max = max.min(protocol::FLOW_WINDOW.saturating_sub(in_flight));
        }
        if max == 0 || self.cursor >= ring.end() {
            return None;
        }
        let (a, b) = ring.read_at(self.cursor)?;
        let a_n = a.len().min(max as usize);
        let b_n = b.len().min(max as usize - a_n);
        // The previous frame's bytes were copied into tungstenite's buffer and dropped, so
        // this reuses the same allocation instead of making one per frame.
        self.frame.reserve(a_n + b_n);
        self.frame.extend_from_slice(&a[..a_n]);
        self.frame.extend_from_slice(&b[..b_n]);
        self.cursor += (a_n + b_n) as u64;
        Some(self.frame.split().freeze())
    }

    /// True if this client has output it could be sent from `ring`.
    pub fn wants_output(&self, ring: &Ring) -> bool {
        self.phase == Phase::Open
            && self.cursor < ring.end()
            && (!self.flow || self.cursor - self.acked < protocol::FLOW_WINDOW)
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
