//! A blocking keepty WebSocket client for the tests and the e2e bench: connects with the
//! `keepty.v1` subprotocol, keeps track of the output offset, acknowledges output when
//! `flow=1`, and bounds every wait in time. The e2e bench uses it too, through tests/common.

use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message, WebSocket};

use super::is_timeout;

/// The default wait for anything the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// One thing read from the socket.
#[derive(Debug)]
pub enum Msg {
    /// A text frame, parsed as JSON.
    Text(Value),
    /// A binary frame: output bytes.
    Binary(Vec<u8>),
    /// A Close frame with its code (None when the frame had no code) and reason.
    Close(Option<u16>, String),
    /// The connection ended without a Close frame, or broke.
    Gone(String),
}

/// A connected client.
pub struct Ws {
    /// The socket; `sock.get_mut()` reaches the TcpStream.
    pub sock: WebSocket<TcpStream>,
    /// Connected with `flow=1`.
    pub flow: bool,
    /// With `flow`, acknowledge every binary frame as it is read (the default).
    pub auto_ack: bool,
    /// The offset of the next output byte: the `attached` offset plus binary bytes since
    /// (moved by `gap` messages).
    pub offset: u64,
    /// The last offset acknowledged.
    pub acked: u64,
    /// Text messages other than `attached` seen while reading output.
    pub events: Vec<Value>,
    /// Set once a Close frame (code) or the end of the connection was seen.
    pub closed: Option<Option<u16>>,
}

/// Connects to `ws://127.0.0.1:PORT/ws?QUERY`; Err for a refused handshake (with the reason).
pub fn try_connect(port: u16, query: &str) -> Result<Ws, String> {
    let url = format!("ws://127.0.0.1:{port}/ws?{query}");
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "keepty.v1".parse().unwrap());
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let (sock, proto) = handshake(req, stream)?;
    if proto != "keepty.v1" {
        return Err(format!("server chose subprotocol {proto:?}, not keepty.v1"));
    }
    let flow = query.split('&').any(|kv| kv == "flow=1");
    Ok(Ws {
        sock,
        flow,
        auto_ack: true,
        offset: 0,
        acked: 0,
        events: Vec::new(),
        closed: None,
    })
}

/// Connects or panics.
pub fn connect(port: u16, query: &str) -> Ws {
    try_connect(port, query).unwrap_or_else(|e| panic!("ws connect ?{query}: {e}"))
}

/// The lossy tail of `buf`, for failure messages.
pub fn tail(buf: &[u8]) -> String {
    let start = buf.len().saturating_sub(300);
    format!("{:?}", String::from_utf8_lossy(&buf[start..]))
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Ws {
    /// The next message within `timeout`, or None. Keeps `offset` current and acknowledges
    /// output when `flow` and `auto_ack` are set; pings are answered by tungstenite.
    pub fn next_msg(&mut self, timeout: Duration) -> Option<Msg> {
        if let Some(code) = self.closed {
            return Some(Msg::Gone(format!("already closed (close code {code:?})")));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock
                .get_mut()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or_else(|e| {
                        panic!("text frame is not JSON ({e}): {:?}", t.as_str())
                    });
                    match v["type"].as_str() {
                        Some("attached") => {
                            self.offset = v["offset"].as_u64().expect("attached.offset");
                            self.acked = self.offset;
                        }
                        Some("gap") => {
                            self.offset = v["offset"].as_u64().expect("gap.offset");
                        }
                        _ => {}
                    }
                    return Some(Msg::Text(v));
                }
                Ok(Message::Binary(b)) => {
                    self.offset += b.len() as u64;
                    // Output still in flight after our own Close frame is not acknowledged:
                    // nothing may be sent after a Close.
                    if self.flow && self.auto_ack && self.sock.can_write() {
                        let o = self.offset;
                        self.ack(o);
                    }
                    return Some(Msg::Binary(b.to_vec()));
                }
                Ok(Message::Close(f)) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                    self.closed = Some(code);
                    // Lets tungstenite send its reply to the Close frame.
                    let _ = self.sock.flush();
                    return Some(Msg::Close(code, reason));
                }
                Ok(_) => continue,
                Err(Error::Io(e)) if is_timeout(&e) => continue,
                Err(e) => {
                    self.closed = Some(None);
                    return Some(Msg::Gone(e.to_string()));
                }
            }
        }
    }

    /// Sends one message; panics if the socket is broken.
    pub fn send(&mut self, m: Message) {
        self.sock.send(m).unwrap_or_else(|e| panic!("ws send: {e}"));
    }

    /// Sends a JSON text message.
    pub fn send_json(&mut self, v: Value) {
        self.send(Message::Text(v.to_string().into()));
    }

    /// Sends input bytes for the PTY.
    pub fn send_input(&mut self, bytes: &[u8]) {
        self.send(Message::Binary(bytes.to_vec().into()));
    }

    /// Acknowledges output up to `offset`.
    pub fn ack(&mut self, offset: u64) {
        self.send_json(json!({"type": "ack", "offset": offset}));
        self.acked = offset;
    }

    /// Asks for a new terminal size.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.send_json(json!({"type": "resize", "cols": cols, "rows": rows}));
    }

    /// The first message must be `attached`; returns it.
    pub fn expect_attached(&mut self) -> Value {
        match self.next_msg(WAIT) {
            Some(Msg::Text(v)) if v["type"] == "attached" => v,
            Some(Msg::Text(v)) => {
                // An error is followed by a Close: include its code in the failure.
                let close = self.next_msg(Duration::from_secs(2));
                panic!("expected attached, got {v} then {close:?}")
            }
            other => panic!("expected attached, got {other:?}"),
        }
    }

    /// Collects output until it contains `pattern`; returns everything collected (which may
    /// run past the pattern, to the end of the frame). Text messages go to `events`. Panics
    /// on timeout or close, with what was collected.
    pub fn read_output_until(&mut self, pattern: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_msg(left) {
                Some(Msg::Binary(b)) => {
                    // Only the new bytes and a pattern's length before them can hold a new match.
                    let from = out.len().saturating_sub(pattern.len());
                    out.extend_from_slice(&b);
                    if find(&out[from..], pattern).is_some() {
                        return out;
                    }
                }
                Some(Msg::Text(v)) => self.events.push(v),
                Some(other) => panic!(
                    "connection ended ({other:?}) before output {:?}; events {:?}; got {}",
                    String::from_utf8_lossy(pattern),
                    self.events,
                    tail(&out)
                ),
                None => panic!(
                    "timed out after {timeout:?} waiting for output {:?}; events {:?}; got {}",
                    String::from_utf8_lossy(pattern),
                    self.events,
                    tail(&out)
                ),
            }
        }
    }

    /// Collects output until at least `n` bytes arrived (may run past `n` to the frame's end).
    pub fn read_output_at_least(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_msg(left) {
                Some(Msg::Binary(b)) => out.extend_from_slice(&b),
                Some(Msg::Text(v)) => self.events.push(v),
                other => panic!(
                    "wanted {n} bytes, got {} then {other:?}; events {:?}; tail {}",
                    out.len(),
                    self.events,
                    tail(&out)
                ),
            }
        }
        out
    }

    /// Reads output and text messages until the server closes: returns the output, the text
    /// messages, and the close code (None when the connection ended without one).
    pub fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut texts = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_msg(left) {
                Some(Msg::Binary(b)) => out.extend_from_slice(&b),
                Some(Msg::Text(v)) => texts.push(v),
                Some(Msg::Close(code, _)) => return (out, texts, code),
                Some(Msg::Gone(e)) => panic!(
                    "connection ended without a Close frame ({e}); texts {texts:?}; tail {}",
                    tail(&out)
                ),
                None => panic!(
                    "no Close within {timeout:?}; texts {texts:?}; {} bytes, tail {}",
                    out.len(),
                    tail(&out)
                ),
            }
        }
    }

    /// Reads until the server closes with `code`; returns the text messages before it.
    pub fn expect_close(&mut self, code: u16) -> Vec<Value> {
        let (_, texts, got) = self.read_to_close(WAIT);
        assert_eq!(got, Some(code), "close code; texts before it: {texts:?}");
        texts
    }

    /// Expects `{"type":"error","code":CODE,...}` then a Close with `close_code`.
    pub fn expect_error(&mut self, code: &str, close_code: u16) -> Value {
        let texts = self.expect_close(close_code);
        let err = texts
            .iter()
            .find(|v| v["type"] == "error")
            .unwrap_or_else(|| panic!("no error message before close {close_code}: {texts:?}"))
            .clone();
        assert_eq!(err["code"], code, "error message {err}");
        assert!(
            err["message"].is_string(),
            "error message without text: {err}"
        );
        err
    }

    /// Closes politely (Close frame, waits briefly for the reply).
    pub fn close(mut self) {
        let _ = self.sock.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.next_msg(Duration::from_millis(200)) {
                Some(Msg::Close(..)) | Some(Msg::Gone(_)) => break,
                _ => {}
            }
        }
    }

    /// Drops the connection the way a reloading page or a lost network does: no Close frame.
    pub fn abort(mut self) {
        let _ = self.sock.get_mut().shutdown(Shutdown::Both);
    }
}

/// Session id of an `attached` message.
pub fn session_id(attached: &Value) -> String {
    attached["session"]
        .as_str()
        .expect("attached.session")
        .to_string()
}

/// Like `try_connect`, on an already connected `stream` (say one from another local
/// address), offering the subprotocols `protocols` (comma-separated; None sends no
/// `Sec-WebSocket-Protocol`) and the extra `headers`. When `keepty.v1` is offered, the server
/// must answer with exactly `keepty.v1`.
pub fn try_connect_on(
    stream: TcpStream,
    port: u16,
    query: &str,
    protocols: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, String> {
    let url = format!("ws://127.0.0.1:{port}/ws?{query}");
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(p) = protocols {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            p.parse().map_err(|e| format!("protocol header: {e}"))?,
        );
    }
    for (k, v) in headers {
        let name: tungstenite::http::HeaderName =
            k.parse().map_err(|e| format!("header name {k}: {e}"))?;
        req.headers_mut()
            .insert(name, v.parse().map_err(|e| format!("header {k}: {e}"))?);
    }
    let (sock, proto) = handshake(req, stream)?;
    let offered_v1 = protocols.is_some_and(|p| p.split(',').any(|x| x.trim() == "keepty.v1"));
    if offered_v1 && proto != "keepty.v1" {
        return Err(format!("server chose subprotocol {proto:?}, not keepty.v1"));
    }
    let flow = query.split('&').any(|kv| kv == "flow=1");
    Ok(Ws {
        sock,
        flow,
        auto_ack: true,
        offset: 0,
        acked: 0,
        events: Vec::new(),
        closed: None,
    })
}

/// Like `try_connect` from 127.0.0.1, with the given subprotocols and extra headers.
pub fn try_connect_with(
    port: u16,
    query: &str,
    protocols: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    try_connect_on(stream, port, query, protocols, headers)
}

/// Runs the client handshake on `stream` with the harness's timeouts; returns the socket and
/// the subprotocol the server chose ("" if none). A refusal reads "handshake refused: HTTP
/// STATUS BODY".
fn handshake(
    req: tungstenite::handshake::client::Request,
    stream: TcpStream,
) -> Result<(tungstenite::WebSocket<TcpStream>, String), String> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let (sock, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(Error::Http(r)) => format!(
            "handshake refused: HTTP {} {}",
            r.status(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default())
        ),
        other => format!("handshake failed: {other}"),
    })?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((sock, proto))
}
