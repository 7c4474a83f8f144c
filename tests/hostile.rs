//! Hostile and broken clients: the bad inputs an attacker or a confused client sends, at the
//! HTTP level, at the upgrade, in the `/ws` query and frame by frame, each with the exact
//! answer SPEC (or RFC 6455 / RFC 9112) gives it. After every case a canary session (a
//! WebSocket attached to a running shell, opened first) must still echo within 200 ms: no bad
//! input may crash, wedge or starve the server.
//!
//! The tests take `common::serial()`: several keep a core busy on purpose (floods), and the
//! canary's 200 ms bound is about the server, not about a shell starved of CPU by another
//! test's flood on a small machine.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::http::{self, Response};
use common::proc::rss_kib;
use common::support::{Canary, StrayGuard, assert_json_error, number_after};
use common::ws::{self, WAIT, find, tail};
use common::{is_timeout, serial, spawn_server};

/// How soon a protocol violation must be answered with a Close frame.
const PROMPT: Duration = Duration::from_secs(2);

// ---- raw HTTP -----------------------------------------------------------------------------

/// Sends `raw` on a new connection, reads one response, and reports whether the server then
/// closed the connection (EOF within 2 s).
fn exchange(addr: &str, raw: &[u8]) -> (Response, bool) {
    let mut s = http::connect(addr);
    // The server may answer (and stop reading) before the last byte: a failed write is fine
    // as long as the answer arrives.
    let _ = s.write_all(raw);
    let mut r = BufReader::new(s);
    let resp = http::read_response(&mut r)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", preview(raw)));
    let closed = http::closed_within(r.get_mut(), Duration::from_secs(2));
    (resp, closed)
}

fn preview(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
    if raw.len() > 120 {
        format!("{s}... ({} bytes)", raw.len())
    } else {
        s
    }
}

/// The request is refused with `status`/`code` and the connection is closed after it.
fn refused_and_closed(addr: &str, raw: &[u8], status: u16, code: &str, what: &str) {
    let (r, closed) = exchange(addr, raw);
    assert_json_error(&r, status, Some(code), what);
    assert!(closed, "{what}: connection left open after {status}");
}

/// A minimal TLS 1.2/1.3 ClientHello record (SNI `localhost`), as a browser sends it to an
/// `https://` URL pointed at the plain port.
fn tls_client_hello() -> Vec<u8> {
    let sni = b"localhost";
    let mut ext = Vec::new();
    ext.extend_from_slice(&[0x00, 0x00]); // server_name
    let list_len = sni.len() + 3;
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(sni);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

// ---- raw WebSocket ------------------------------------------------------------------------

/// The declared payload length, possibly in a longer encoding than needed.
#[derive(Clone, Copy)]
enum Len {
    /// The minimal encoding of the payload's real length.
    Minimal,
    /// The 16-bit form (marker 126) with this value.
    U16(u16),
    /// The 64-bit form (marker 127) with this value.
    U64(u64),
}

/// A client frame, built byte by byte so that every field can be wrong.
#[derive(Clone)]
struct Frame {
    fin: bool,
    /// RSV1..3 as the high nibble's low three bits (0x40, 0x20, 0x10).
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: Len,
    payload: Vec<u8>,
}

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

impl Frame {
    /// A final, masked frame with a minimal length.
    fn new(opcode: u8, payload: &[u8]) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            len: Len::Minimal,
            payload: payload.to_vec(),
        }
    }
    fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }
    fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }
    fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }
    fn len(mut self, len: Len) -> Frame {
        self.len = len;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv & 0x70) | (self.opcode & 0x0f)];
        let m = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len();
        match self.len {
            Len::Minimal if n < 126 => out.push(m | n as u8),
            Len::Minimal if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Len::Minimal => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
            Len::U16(v) => {
                out.push(m | 126);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Len::U64(v) => {
                out.push(m | 127);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// One frame from the server.
#[derive(Debug)]
struct ServerFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// What a raw client saw when the server ended the conversation.
#[derive(Debug)]
struct Closed {
    code: u16,
    reason: String,
    /// Text messages before the Close, parsed.
    texts: Vec<Value>,
}

/// A WebSocket client on a bare TCP stream: sends any bytes, parses what the server sends.
struct RawWs {
    s: TcpStream,
    buf: Vec<u8>,
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl RawWs {
    /// Upgrades `GET /ws?query`, sending `first` in the same write as the request head;
    /// panics unless the answer is 101.
    fn upgrade_with(port: u16, query: &str, first: &[u8]) -> RawWs {
        let mut s = http::connect(&format!("127.0.0.1:{port}"));
        let mut req = format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Protocol: keepty.v1\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(first);
        s.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no upgrade answer");
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).expect("read upgrade answer");
            assert!(n > 0, "closed before the upgrade answer: {}", tail(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101 "),
            "upgrade ?{query} refused: {head}"
        );
        buf.drain(..end);
        RawWs { s, buf }
    }

    /// Upgrades and reads the `attached` message (skipping nothing: it comes first).
    fn attach(port: u16, query: &str) -> RawWs {
        let mut c = RawWs::upgrade_with(port, query, b"");
        let f = c.next_frame(WAIT).expect("a first frame");
        assert_eq!(f.opcode, OP_TEXT, "first frame {f:?}");
        let v: Value = serde_json::from_slice(&f.payload).expect("attached is JSON");
        assert_eq!(v["type"], "attached", "{v}");
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("raw ws write: {e}"));
    }

    fn send_frame(&mut self, f: &Frame) {
        self.send(&f.bytes());
    }

    /// The next whole frame within `timeout`; None on timeout or when the connection ended.
    fn next_frame(&mut self, timeout: Duration) -> Option<ServerFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((f, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16 << 10];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return None,
                Err(_) => return None,
            }
        }
    }

    /// Reads until the server's Close frame; panics if none comes within `timeout`.
    fn expect_closed(&mut self, timeout: Duration, what: &str) -> Closed {
        let deadline = Instant::now() + timeout;
        let mut texts = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.next_frame(left) else {
                panic!("{what}: no Close frame within {timeout:?} (texts {texts:?})");
            };
            match f.opcode {
                OP_TEXT => texts.push(serde_json::from_slice(&f.payload).unwrap_or_else(|e| {
                    panic!("{what}: text frame is not JSON ({e}): {:?}", f.payload)
                })),
                OP_CLOSE => {
                    assert!(f.fin, "{what}: fragmented Close");
                    assert!(
                        f.payload.len() >= 2,
                        "{what}: Close without a code: {:?}",
                        f.payload
                    );
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let reason = String::from_utf8(f.payload[2..].to_vec())
                        .unwrap_or_else(|_| panic!("{what}: close reason is not UTF-8"));
                    return Closed {
                        code,
                        reason,
                        texts,
                    };
                }
                _ => {}
            }
        }
    }

    /// The server closes with `code` and a reason, and then ends the TCP connection.
    fn expect_close_code(&mut self, code: u16, what: &str) -> Closed {
        let c = self.expect_closed(PROMPT, what);
        assert_eq!(c.code, code, "{what}: close code (reason {:?})", c.reason);
        assert!(
            !c.reason.is_empty(),
            "{what}: close {code} without a reason"
        );
        // Answer the Close, as a client should; the server then ends the connection at once
        // (well before its 2 s linger for peers that never answer). After a protocol
        // failure it must not even wait for this answer (RFC 6455 7.1.7).
        let _ = self
            .s
            .write_all(&Frame::new(OP_CLOSE, &code.to_be_bytes()).bytes());
        let mut rest = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: TCP connection kept after the Close"
            );
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        c
    }

    /// The `error` message with `code`, then Close `close_code` (SPEC section 3).
    fn expect_error(&mut self, code: &str, close_code: u16, what: &str) {
        let c = self.expect_close_code(close_code, what);
        let err = c
            .texts
            .iter()
            .find(|v| v["type"] == "error")
            .unwrap_or_else(|| panic!("{what}: no error message before the Close: {c:?}"));
        assert_eq!(err["code"], code, "{what}: {err}");
        assert!(err["message"].is_string(), "{what}: {err}");
    }

    /// Collects binary output until it contains `pattern`.
    fn read_output_until(&mut self, pattern: &[u8], what: &str) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left) {
                Some(f) if f.opcode == OP_BINARY => {
                    out.extend_from_slice(&f.payload);
                    if find(&out, pattern).is_some() {
                        return out;
                    }
                }
                Some(f) if f.opcode == OP_CLOSE => {
                    panic!(
                        "{what}: closed ({:?}) before output; {}",
                        f.payload,
                        tail(&out)
                    )
                }
                Some(_) => {}
                None => panic!(
                    "{what}: no {:?} in the output; got {}",
                    String::from_utf8_lossy(pattern),
                    tail(&out)
                ),
            }
        }
    }
}

/// Parses one server frame off the front of `buf`: (frame, bytes used), or None if incomplete.
/// Server frames must be unmasked, with minimal lengths and clear RSV bits.
fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(
        buf[0] & 0x70,
        0,
        "server frame with RSV bits: {:#x}",
        buf[0]
    );
    assert_eq!(buf[1] & 0x80, 0, "masked server frame");
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as u64,
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).expect("frame length");
    assert!(len <= 1 << 20, "server frame of {len} bytes");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((
        ServerFrame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload,
        },
        at,
    ))
}

// ---- HTTP ---------------------------------------------------------------------------------

/// Bytes that are not an HTTP/1 request head: garbage, an HTTP/2 preface, a TLS ClientHello,
/// and heads RFC 9112 says a server must reject (whitespace before a colon, bare CR, NUL, an
/// obs-fold line). Each gets 400 `bad_request` and the connection is closed, at once.
#[test]
fn malformed_heads_get_400_and_close() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);
    let host = format!("Host: {addr}\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage bytes",
            b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00".to_vec(),
        ),
        ("TLS ClientHello", tls_client_hello()),
        (
            "whitespace before the colon",
            format!("GET /healthz HTTP/1.1\r\nHost : {addr}\r\n\r\n").into_bytes(),
        ),
        (
            "whitespace before the colon (other header)",
            format!("GET /healthz HTTP/1.1\r\n{host}Connection : close\r\n\r\n").into_bytes(),
        ),
        (
            "bare CR ending the request line",
            format!("GET /healthz HTTP/1.1\r{host}\r\n").into_bytes(),
        ),
        (
            "bare CR inside a header value",
            format!("GET /healthz HTTP/1.1\r\n{host}X-A: a\rb\r\n\r\n").into_bytes(),
        ),
        (
            "NUL in a header value",
            format!("GET /healthz HTTP/1.1\r\n{host}X-A: a\0b\r\n\r\n").into_bytes(),
        ),
        (
            "NUL in the request target",
            format!("GET /healthz\0 HTTP/1.1\r\n{host}\r\n").into_bytes(),
        ),
        (
            "obs-fold continuation line",
            format!("GET /healthz HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n").into_bytes(),
        ),
        ("HTTP/0.9 request line", b"GET /healthz\r\n\r\n".to_vec()),
    ];
    for (what, raw) in &cases {
        let start = Instant::now();
        refused_and_closed(&addr, raw, 400, "bad_request", what);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: answered after {:?}",
            start.elapsed()
        );
        canary.alive(what);
    }
}

/// A head over the caps is refused whole (never truncated and served): a request line that
/// does not end within 8 KiB gets 413 `head_too_large`, header fields that are too many or
/// too large (one, or all together) get 431 `headers_too_large`. Just under the cap is served.
#[test]
fn oversized_heads_are_refused_not_truncated() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);

    let long_target = format!("/healthz?{}", "a".repeat(9000));
    let raw = format!("GET {long_target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    refused_and_closed(
        &addr,
        raw.as_bytes(),
        413,
        "head_too_large",
        "9000-byte request line",
    );
    canary.alive("long request line");

    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    refused_and_closed(
        &addr,
        raw.as_bytes(),
        431,
        "headers_too_large",
        "one 9000-byte header",
    );
    canary.alive("one big header");

    let mut raw = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n");
    for i in 0..33 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    refused_and_closed(
        &addr,
        raw.as_bytes(),
        431,
        "headers_too_large",
        "34 header fields",
    );
    canary.alive("header count");

    let mut raw = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n");
    for i in 0..30 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(300)));
    }
    raw.push_str("\r\n");
    refused_and_closed(
        &addr,
        raw.as_bytes(),
        431,
        "headers_too_large",
        "30 headers of 300 bytes",
    );
    canary.alive("total header size");

    // A head that crosses the cap by a few bytes is refused whole, not cut at the cap.
    let mut raw = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: ");
    raw.push_str(&"d".repeat(8192 - raw.len() - 4));
    raw.push_str("\r\n\r\nX-After-The-Cap: 1\r\n\r\n");
    let raw = raw.replacen("\r\n\r\nX-After", "\r\nX-After", 1);
    refused_and_closed(
        &addr,
        raw.as_bytes(),
        431,
        "headers_too_large",
        "head crossing the cap",
    );
    canary.alive("head crossing the cap");

    // Just under the cap: served, all of it.
    let mut raw = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Pad: ");
    raw.push_str(&"e".repeat(8192 - raw.len() - 4));
    raw.push_str("\r\n\r\n");
    assert_eq!(raw.len(), 8192);
    let (r, _) = exchange(&addr, raw.as_bytes());
    assert_eq!(r.status, 200, "an 8 KiB head: {}", r.text());
    canary.alive("8 KiB head");
}

/// Host (SPEC section 2): missing or twice is 400, a name that is not ours is 403, before
/// routing (an unknown path or an upgrade gets the same 403).
#[test]
fn host_header_defects() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let port = srv.port;
    let mut canary = Canary::open(&srv);

    refused_and_closed(
        &addr,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        400,
        "bad_request",
        "missing Host",
    );
    canary.alive("missing Host");
    refused_and_closed(
        &addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nHost: {addr}\r\n\r\n").as_bytes(),
        400,
        "bad_request",
        "duplicate Host (same value)",
    );
    refused_and_closed(
        &addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\n\r\n").as_bytes(),
        400,
        "bad_request",
        "duplicate Host (different values)",
    );
    canary.alive("duplicate Host");
    refused_and_closed(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: \r\n\r\n",
        403,
        "forbidden",
        "empty Host",
    );
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        format!("127.0.0.1:{port}@evil.example"),
    ] {
        for path in ["/healthz", "/nope", "/ws?new=1"] {
            let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
            if path.starts_with("/ws") {
                raw.push_str(&http::UPGRADE.join("\r\n"));
                raw.push_str("\r\n");
            }
            raw.push_str("\r\n");
            refused_and_closed(
                &addr,
                raw.as_bytes(),
                403,
                "forbidden",
                &format!("Host {host} on {path}"),
            );
        }
        canary.alive(&format!("Host {host}"));
    }
}

/// keepty's requests carry no body. One that announces a body (Content-Length above 0, any
/// Transfer-Encoding) or frames it ambiguously is refused with 400 and the connection closed,
/// so the body can never be read as the next request or as WebSocket frames.
#[test]
fn bodies_and_transfer_encoding_are_refused() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);
    let smuggled = format!("GET /admin/drop-all?confirm=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let cases = [
        (
            "Transfer-Encoding: chunked on GET",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ),
        (
            "Content-Length body on GET",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "non-numeric Content-Length",
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: abc\r\n\r\n"),
        ),
        (
            "negative Content-Length",
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: -1\r\n\r\n"),
        ),
        (
            "two Content-Length headers",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"
            ),
        ),
        (
            "Transfer-Encoding: identity on GET",
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: identity\r\n\r\n"),
        ),
        (
            "body on a WebSocket upgrade",
            format!(
                "GET /ws?new=1 HTTP/1.1\r\nHost: {addr}\r\n{}\r\nContent-Length: 6\r\n\r\nhello!",
                http::UPGRADE.join("\r\n")
            ),
        ),
        (
            "body on a POST",
            format!(
                "POST /admin/drop?id=canary HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
    ];
    for (what, raw) in &cases {
        refused_and_closed(&addr, raw.as_bytes(), 400, "bad_request", what);
        canary.alive(what);
    }
    // Content-Length: 0 is no body.
    let (r, _) = exchange(
        &addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "Content-Length: 0");
    assert_eq!(
        srv.session_record("canary").map(|r| r["state"].clone()),
        Some(Value::from("running")),
        "a smuggled request reached the admin surface"
    );
}

/// Pipelined requests are answered in order, one answer each; after an error that closes the
/// connection, nothing that followed it is answered. A WebSocket frame sent in the same write
/// as the upgrade request is read as the first frame.
#[test]
fn pipelined_requests_in_order() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);

    let mut raw = String::new();
    let paths = [
        "/healthz",
        "/nope",
        "/assets/xterm.css",
        "/healthz",
        "/admin/nope",
    ];
    for p in paths {
        raw.push_str(&format!("GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    }
    raw.push_str(&format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    let mut r = BufReader::new(http::connect(&addr));
    r.get_mut().write_all(raw.as_bytes()).unwrap();
    let want = [200, 404, 200, 200, 404, 200];
    for (i, w) in want.iter().enumerate() {
        let resp = http::read_response(&mut r).unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(resp.status, *w, "pipelined response {i}: {}", resp.text());
        if i == 2 {
            assert!(
                resp.text().contains('{'),
                "response 2 is not the stylesheet"
            );
        }
    }
    assert!(
        http::closed_within(r.get_mut(), Duration::from_secs(2)),
        "open after Connection: close"
    );
    canary.alive("pipelined requests");

    // A malformed request in the middle: answered 400, and what follows is never answered.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\nGET /x HTTP/1.1\r\nBad Header\r\n\r\nGET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    );
    let mut r = BufReader::new(http::connect(&addr));
    r.get_mut().write_all(raw.as_bytes()).unwrap();
    assert_eq!(http::read_response(&mut r).unwrap().status, 200);
    let bad = http::read_response(&mut r).expect("the 400");
    assert_json_error(
        &bad,
        400,
        Some("bad_request"),
        "pipelined malformed request",
    );
    let mut rest = Vec::new();
    r.get_mut()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = r.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "answered after a 400: {:?}",
        String::from_utf8_lossy(&rest)
    );
    canary.alive("pipelined malformed request");

    // The upgrade and its first frame in one write.
    let input = Frame::new(OP_BINARY, b"echo piped-$((3+3))\n").bytes();
    let mut c = RawWs::upgrade_with(srv.port, "session=piped&new=1", &input);
    c.read_output_until(b"piped-6", "frame pipelined after the upgrade");
    canary.alive("frame pipelined after the upgrade");

    // A client that pipelines requests without end (and reads the answers) must not starve
    // the other sessions while it lasts.
    let one = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let chunk = one.repeat(200).into_bytes();
    let s = http::connect(&addr);
    let (stop, writer, reader) = flood(&s, chunk);
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        canary.alive(&format!("endless pipeline, {} ms in", 150 * (i + 1)));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let answered = reader.join().unwrap();
    assert!(
        answered > 0,
        "pipeline: {sent} bytes sent and nothing answered"
    );
    drop(s);
    canary.alive("after the endless pipeline");
}

/// Writes `chunk` to `s` over and over from one thread while another reads and discards
/// what comes back, until the flag is set. Returns the flag and the threads (bytes written,
/// bytes read).
fn flood(
    s: &TcpStream,
    chunk: Vec<u8>,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<usize>,
    std::thread::JoinHandle<usize>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        while !stop_w.load(Ordering::Relaxed) {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        sent
    });
    let mut r = s.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop_r = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        while !stop_r.load(Ordering::Relaxed) {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        got
    });
    (stop, writer, reader)
}

/// `/assets` serves embedded files only: no path, encoded or not, reaches the filesystem.
#[test]
fn path_traversal_is_404() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);
    let cargo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    for path in [
        "/assets/../Cargo.toml",
        "/assets/../../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/%2E%2E/Cargo.toml",
        "/assets/..%2fCargo.toml",
        "/assets/..%2FCargo.toml",
        "/assets/%2e%2e%2fCargo.toml",
        "/assets/%252e%252e/Cargo.toml",
        "/assets/..%5cCargo.toml",
        "/assets/..\\Cargo.toml",
        "/assets/....//Cargo.toml",
        "/assets/%c0%ae%c0%ae/Cargo.toml",
        "/assets//etc/passwd",
        "/assets/../../../../../../etc/passwd",
        "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/assets/app.js%00.png",
        "/assets/./app.js/../../Cargo.toml",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/Cargo.toml",
        "/src/main.rs",
        "/assets/",
        "/assets",
    ] {
        let r = http::get(&addr, path);
        assert_json_error(&r, 404, Some("not_found"), path);
        assert!(
            !r.text().contains("[package]")
                && !r.text().contains("root:")
                && r.body.len() < cargo.len(),
            "{path}: a file came back: {}",
            r.text()
        );
        canary.alive(path);
    }
}

// ---- the upgrade --------------------------------------------------------------------------

/// Every defect of the upgrade request, with RFC 6455 section 4.2 and SPEC answers.
#[test]
fn upgrade_defects() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut canary = Canary::open(&srv);
    let base = |extra: &[&str], drop: &str| -> String {
        let mut lines: Vec<&str> = http::UPGRADE
            .iter()
            .copied()
            .filter(|l| !l.starts_with(drop) || drop.is_empty())
            .collect();
        lines.extend_from_slice(extra);
        let mut raw = format!("GET /ws?session=up&new=1 HTTP/1.1\r\nHost: {addr}\r\n");
        for l in lines {
            raw.push_str(l);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        raw
    };
    // A wrong key: not base64 of 16 bytes (RFC 6455 4.2.1: 400).
    for key in [
        "",
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25jZSE=",
        "!!!!!!!!!!!!!!!!!!!!!!==",
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
    ] {
        let line = format!("Sec-WebSocket-Key: {key}");
        let raw = base(&[&line], "Sec-WebSocket-Key");
        let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
        assert_json_error(&r, 400, Some("bad_request"), &format!("key {key:?}"));
        canary.alive(&format!("key {key:?}"));
    }
    let raw = base(&[], "Sec-WebSocket-Key");
    let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
    assert_json_error(&r, 400, Some("bad_request"), "no key");
    let raw = base(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="], "");
    let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
    assert_json_error(&r, 400, Some("bad_request"), "two keys");
    canary.alive("two keys");

    // Wrong version: 426 with the version we speak (RFC 6455 4.4).
    for v in ["8", "12", "14", "", "13, 8", "abc"] {
        let line = format!("Sec-WebSocket-Version: {v}");
        let raw = base(&[&line], "Sec-WebSocket-Version");
        let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
        assert_json_error(&r, 426, Some("bad_request"), &format!("version {v:?}"));
        assert_eq!(
            r.header("sec-websocket-version"),
            Some("13"),
            "version {v:?}: the 426 must name 13"
        );
    }
    canary.alive("versions");

    // Not an upgrade: 400.
    for (what, raw) in [
        ("no Connection: Upgrade", base(&[], "Connection")),
        (
            "Connection: keep-alive",
            base(&["Connection: keep-alive"], "Connection"),
        ),
        ("no Upgrade header", base(&[], "Upgrade")),
        ("Upgrade: h2c", base(&["Upgrade: h2c"], "Upgrade")),
    ] {
        let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
        assert_json_error(&r, 400, Some("bad_request"), what);
        canary.alive(what);
    }
    // POST (or any other method): 405, Allow: GET.
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "CONNECT"] {
        let raw = base(&[], "").replacen("GET ", &format!("{method} "), 1);
        let r = http::raw_request(&addr, raw.as_bytes()).expect("a response");
        assert_json_error(&r, 405, Some("method_not_allowed"), method);
        assert_eq!(r.header("allow"), Some("GET"), "{method}: Allow");
    }
    canary.alive("methods");
    assert!(
        srv.session_record("up").is_none(),
        "a refused upgrade created a session"
    );
}

/// Origins that are not ours (SPEC section 2): 403 `forbidden`, no session.
#[test]
fn hostile_origins_are_403() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    for origin in [
        "null".to_string(),
        format!("http://127.0.0.1:{port}.evil.com"),
        format!("http://evil.com/127.0.0.1:{port}"),
        format!("http://evil.com/http://127.0.0.1:{port}"),
        format!("http://evil.com?http://127.0.0.1:{port}"),
        format!("http://evil.com#127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}@evil.com"),
        format!("http://evil.com@127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        "http://127.0.0.1".to_string(),
        format!("https://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        format!("file://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}\tx"),
        format!("//127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
        String::new(),
    ] {
        let line = format!("Origin: {origin}");
        let r = http::upgrade(&addr, "session=origin&new=1", &[&line]);
        assert_json_error(&r, 403, Some("forbidden"), &format!("Origin {origin:?}"));
        canary.alive(&format!("Origin {origin:?}"));
    }
    // Two Origins, ours first: a browser never sends that; refused, not judged by the first.
    let ours = format!("Origin: http://{addr}");
    let r = http::upgrade(
        &addr,
        "session=origin&new=1",
        &[&ours, "Origin: http://evil.com"],
    );
    assert_json_error(&r, 403, Some("forbidden"), "two Origins");
    // Our own origin works.
    let r = http::upgrade(&addr, "session=origin&new=1", &[&ours]);
    assert_eq!(r.status, 101, "own Origin: {}", r.text());
    canary.alive("origins");
    let list = srv.admin_sessions();
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"origin"),
        "own origin made no session: {ids:?}"
    );
    // The same Origins on the admin surface.
    for origin in ["null".to_string(), format!("https://{addr}")] {
        let line = format!("Origin: {origin}");
        let r = http::get_with(&addr, "/admin/sessions", &[&line]);
        assert_json_error(
            &r,
            403,
            Some("forbidden"),
            &format!("admin Origin {origin}"),
        );
    }
    canary.alive("admin origins");
}

/// SPEC section 3: a bad id or parameter opens the socket, sends `error` `bad_request` and
/// closes with 4400; an unknown session without new=1 is `not_found`, 4404.
#[test]
fn bad_ids_and_parameters() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    // The canary's output end, for `since` past it.
    let end = srv.session_record("canary").expect("canary record")["bytes_total"]
        .as_u64()
        .expect("bytes_total");
    let long = "a".repeat(65);
    let since_past = format!("session=canary&since={}", end + 1_000_000);
    let cases: Vec<(String, &str)> = vec![
        (format!("session={long}&new=1"), "65-character id"),
        (format!("session={long}"), "65-character id without new"),
        ("session=&new=1".into(), "empty id"),
        ("session=a.b&new=1".into(), "dot in id"),
        ("session=a/b&new=1".into(), "slash in id"),
        ("session=..&new=1".into(), "dot-dot id"),
        ("session=a%20b&new=1".into(), "percent-encoded space in id"),
        ("session=a%41&new=1".into(), "percent-encoded letter in id"),
        ("session=a+b&new=1".into(), "plus in id"),
        ("session=%C3%A9&new=1".into(), "non-ASCII id"),
        ("session=a%00&new=1".into(), "NUL in id"),
        ("session=x&session=y&new=1".into(), "session twice"),
        ("session=x&session=x&new=1".into(), "same session twice"),
        ("session=x&new=1&new=1".into(), "new twice"),
        ("session=canary&since=0&since=0".into(), "since twice"),
        ("session=x&new=1&cols=80&cols=80".into(), "cols twice"),
        ("session=x&new=1&rows=24&rows=24".into(), "rows twice"),
        ("session=x&new=1&flow=1&flow=1".into(), "flow twice"),
        (since_past, "since past the end"),
        ("session=canary&since=-1".into(), "negative since"),
        ("session=canary&since=abc".into(), "non-numeric since"),
        (
            "session=canary&since=99999999999999999999999".into(),
            "since beyond u64",
        ),
        ("session=x&new=1&cols=0".into(), "cols 0"),
        ("session=x&new=1&cols=1001".into(), "cols 1001"),
        ("session=x&new=1&cols=abc".into(), "non-numeric cols"),
        ("session=x&new=1&cols=".into(), "empty cols"),
        ("session=x&new=1&cols=80.5".into(), "fractional cols"),
        ("session=x&new=1&cols=-80".into(), "negative cols"),
        ("session=x&new=1&cols=65616".into(), "cols wrapping u16"),
        ("session=x&new=1&rows=0".into(), "rows 0"),
        ("session=x&new=1&rows=1001".into(), "rows 1001"),
        ("session=x&new=1&rows=abc".into(), "non-numeric rows"),
        ("session=x&new=2".into(), "new=2"),
        ("session=x&new=1&flow=yes".into(), "flow=yes"),
        ("new=0".into(), "no session and new=0"),
        ("".into(), "empty query"),
    ];
    for (query, what) in &cases {
        let mut c = RawWs::upgrade_with(port, query, b"");
        c.expect_error("bad_request", 4400, what);
        canary.alive(what);
    }
    let mut c = RawWs::upgrade_with(port, "session=nosuch", b"");
    c.expect_error("not_found", 4404, "unknown id without new=1");
    canary.alive("unknown id");
    // Unknown parameters are ignored; none of the refused queries made a session.
    let mut c = RawWs::attach(port, "session=ok&new=1&evil=%00%ff&cols=80&rows=24&x");
    c.send_frame(&Frame::new(OP_BINARY, b"echo ok-$((40+2))\n"));
    c.read_output_until(b"ok-42", "unknown parameters");
    let list = srv.admin_sessions();
    let mut ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["canary", "ok"], "sessions after the refusals");
    canary.alive("unknown parameters");
}

// ---- frames -------------------------------------------------------------------------------

/// RFC 6455 violations after a good upgrade: each fails the connection with the close code
/// section 7.4.1 gives it (1002 protocol error, 1007 bad UTF-8) and a reason.
#[test]
fn frame_protocol_violations() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    let q = "session=victim&new=1";
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked binary frame",
            Frame::new(OP_BINARY, b"echo x\n").unmasked().bytes(),
            1002,
        ),
        (
            "unmasked ping",
            Frame::new(OP_PING, b"p").unmasked().bytes(),
            1002,
        ),
        (
            "RSV1 set",
            Frame::new(OP_BINARY, b"x").rsv(0x40).bytes(),
            1002,
        ),
        (
            "RSV2 set",
            Frame::new(OP_TEXT, b"{}").rsv(0x20).bytes(),
            1002,
        ),
        ("RSV3 set", Frame::new(OP_PING, b"").rsv(0x10).bytes(), 1002),
        (
            "all RSV bits",
            Frame::new(OP_BINARY, b"x").rsv(0x70).bytes(),
            1002,
        ),
        ("data opcode 0x3", Frame::new(0x3, b"x").bytes(), 1002),
        ("data opcode 0x7", Frame::new(0x7, b"x").bytes(), 1002),
        ("control opcode 0xB", Frame::new(0xB, b"x").bytes(), 1002),
        ("control opcode 0xF", Frame::new(0xF, b"").bytes(), 1002),
        (
            "continuation with nothing to continue",
            Frame::new(OP_CONT, b"x").bytes(),
            1002,
        ),
        (
            "new data frame inside a fragmented message",
            [
                Frame::new(OP_BINARY, b"ab").fin(false).bytes(),
                Frame::new(OP_TEXT, b"{}").bytes(),
            ]
            .concat(),
            1002,
        ),
        (
            "fragmented ping",
            Frame::new(OP_PING, b"ab").fin(false).bytes(),
            1002,
        ),
        (
            "fragmented close",
            Frame::new(OP_CLOSE, &1000u16.to_be_bytes())
                .fin(false)
                .bytes(),
            1002,
        ),
        (
            "fragmented pong",
            [
                Frame::new(OP_PONG, b"a").fin(false).bytes(),
                Frame::new(OP_CONT, b"b").bytes(),
            ]
            .concat(),
            1002,
        ),
        (
            "126-byte ping",
            Frame::new(OP_PING, &[b'p'; 126]).bytes(),
            1002,
        ),
        (
            "126-byte pong",
            Frame::new(OP_PONG, &[b'p'; 126]).bytes(),
            1002,
        ),
        (
            "126-byte close",
            Frame::new(
                OP_CLOSE,
                &[&1000u16.to_be_bytes()[..], &[b'r'; 124]].concat(),
            )
            .bytes(),
            1002,
        ),
        (
            "1-byte close payload",
            Frame::new(OP_CLOSE, &[3]).bytes(),
            1002,
        ),
        (
            "close code 1005 on the wire",
            Frame::new(OP_CLOSE, &1005u16.to_be_bytes()).bytes(),
            1002,
        ),
        (
            "close code 999",
            Frame::new(OP_CLOSE, &999u16.to_be_bytes()).bytes(),
            1002,
        ),
        (
            "invalid UTF-8 in a text frame",
            Frame::new(OP_TEXT, b"{\"type\":\"\xff\xfe\"}").bytes(),
            1007,
        ),
        (
            "overlong UTF-8 encoding",
            Frame::new(OP_TEXT, b"\xc0\xaf").bytes(),
            1007,
        ),
        (
            "UTF-16 surrogate in UTF-8",
            Frame::new(OP_TEXT, b"\xed\xa0\x80").bytes(),
            1007,
        ),
        (
            "invalid UTF-8 split across fragments",
            [
                Frame::new(OP_TEXT, b"{\"a\":\"\xe2\x82").fin(false).bytes(),
                Frame::new(OP_CONT, b"\"}").bytes(),
            ]
            .concat(),
            1007,
        ),
        (
            "invalid UTF-8 in a close reason",
            Frame::new(OP_CLOSE, &[&1000u16.to_be_bytes()[..], b"\xff"].concat()).bytes(),
            1007,
        ),
    ];
    for (what, bytes, code) in &cases {
        let mut c = RawWs::attach(port, q);
        c.send(bytes);
        c.expect_close_code(*code, what);
        canary.alive(what);
    }
}

/// Zero-length messages, non-minimal length encodings, deep JSON and control messages that
/// are not JSON at all. Zero-length binary is empty input (nothing happens); zero-length text
/// is a control message that does not parse: `error` `bad_request`, close 4400.
#[test]
fn odd_but_wellformed_messages() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    let q = "session=victim&new=1";

    let mut c = RawWs::attach(port, q);
    for _ in 0..100 {
        c.send_frame(&Frame::new(OP_BINARY, b""));
    }
    // An empty fragmented binary message, too.
    c.send_frame(&Frame::new(OP_BINARY, b"").fin(false));
    c.send_frame(&Frame::new(OP_CONT, b""));
    c.send_frame(&Frame::new(OP_BINARY, b"echo empty-$((5+5))\n"));
    c.read_output_until(b"empty-10", "zero-length binary frames");
    canary.alive("zero-length binary");

    // Length in a longer encoding than needed (RFC 6455 5.2 asks senders for the minimal
    // one; like most servers, keepty reads the length it is given).
    c.send_frame(&Frame::new(OP_BINARY, b"echo nonmin-$((6+6))\n").len(Len::U16(21)));
    c.read_output_until(b"nonmin-12", "16-bit length for 21 bytes");
    c.send_frame(&Frame::new(OP_BINARY, b"echo nonmin-$((7+7))\n").len(Len::U64(21)));
    c.read_output_until(b"nonmin-14", "64-bit length for 21 bytes");
    c.send_frame(&Frame::new(OP_PING, b"hi").len(Len::U64(2)));
    canary.alive("non-minimal lengths");

    // Input split into many fragments, with pings between them, is one message.
    c.send_frame(&Frame::new(OP_BINARY, b"echo fr").fin(false));
    c.send_frame(&Frame::new(OP_PING, b"mid"));
    c.send_frame(&Frame::new(OP_CONT, b"ag-$((8").fin(false));
    c.send_frame(&Frame::new(OP_CONT, b"+8))\n"));
    c.read_output_until(b"frag-16", "fragmented input");
    canary.alive("fragmented input");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero-length text", Frame::new(OP_TEXT, b"").bytes()),
        (
            "zero-length fragmented text",
            [
                Frame::new(OP_TEXT, b"").fin(false).bytes(),
                Frame::new(OP_CONT, b"").bytes(),
            ]
            .concat(),
        ),
        (
            "text that is not JSON",
            Frame::new(OP_TEXT, b"hello").bytes(),
        ),
        (
            "JSON that is not an object",
            Frame::new(OP_TEXT, b"[1,2]").bytes(),
        ),
        ("JSON without a type", Frame::new(OP_TEXT, b"{}").bytes()),
        (
            "deep nesting in a control message",
            Frame::new(
                OP_TEXT,
                format!(
                    "{{\"type\":\"resize\",\"cols\":80,\"rows\":24,\"x\":{}{}}}",
                    "[".repeat(30_000),
                    "]".repeat(30_000)
                )
                .as_bytes(),
            )
            .bytes(),
        ),
        (
            "deep nesting of objects",
            Frame::new(
                OP_TEXT,
                format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).as_bytes(),
            )
            .bytes(),
        ),
        (
            "deep nesting as the type",
            Frame::new(
                OP_TEXT,
                format!("{{\"type\":{}{}}}", "[".repeat(30_000), "]".repeat(30_000)).as_bytes(),
            )
            .bytes(),
        ),
        (
            "resize out of range",
            Frame::new(OP_TEXT, br#"{"type":"resize","cols":0,"rows":24}"#).bytes(),
        ),
        (
            "resize with huge numbers",
            Frame::new(
                OP_TEXT,
                br#"{"type":"resize","cols":1e308,"rows":18446744073709551616}"#,
            )
            .bytes(),
        ),
        (
            "ack beyond what was sent",
            Frame::new(OP_TEXT, br#"{"type":"ack","offset":18446744073709551615}"#).bytes(),
        ),
        (
            "NUL in a control message",
            Frame::new(OP_TEXT, b"{\"type\":\"resize\0\"}").bytes(),
        ),
    ];
    for (what, bytes) in &cases {
        let mut c = RawWs::attach(port, q);
        c.send(bytes);
        c.expect_error("bad_request", 4400, what);
        canary.alive(what);
    }
}

/// A declared length far past the 64 KiB cap is refused from the header alone, before any
/// allocation: close 1009 at once, and the server's memory does not move.
#[test]
fn huge_declared_lengths_are_refused_before_allocation() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    let q = "session=victim&new=1";
    let before = rss_kib(srv.child.id());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "2^62 bytes declared",
            Frame::new(OP_BINARY, b"").len(Len::U64(1 << 62)).bytes(),
        ),
        (
            "2^63+1 bytes declared (top bit set)",
            Frame::new(OP_BINARY, b"")
                .len(Len::U64((1 << 63) + 1))
                .bytes(),
        ),
        (
            "u64::MAX bytes declared, text",
            Frame::new(OP_TEXT, b"").len(Len::U64(u64::MAX)).bytes(),
        ),
        (
            "1 GiB declared, unmasked too",
            Frame::new(OP_BINARY, b"")
                .unmasked()
                .len(Len::U64(1 << 30))
                .bytes(),
        ),
        (
            "64 KiB + 1 declared",
            Frame::new(OP_BINARY, b"").len(Len::U64(65537)).bytes(),
        ),
        (
            "continuation past 64 KiB in total",
            [
                Frame::new(OP_BINARY, &vec![b'a'; 40 << 10])
                    .fin(false)
                    .bytes(),
                Frame::new(OP_CONT, &vec![b'b'; 40 << 10]).bytes(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in &cases {
        let mut c = RawWs::attach(port, q);
        let start = Instant::now();
        c.send(bytes);
        // 1009 (message too big); a server may call a top-bit length a protocol error.
        let closed = c.expect_closed(PROMPT, what);
        let want = if what.contains("top bit") {
            [1009, 1002]
        } else {
            [1009, 1009]
        };
        assert!(
            want.contains(&closed.code) && !closed.reason.is_empty(),
            "{what}: close {} {:?}",
            closed.code,
            closed.reason
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: refused only after {:?}",
            start.elapsed()
        );
        canary.alive(what);
    }
    let after = rss_kib(srv.child.id());
    assert!(
        after < before + 4096,
        "server RSS went from {before} KiB to {after} KiB"
    );
}

/// 10,000 pings in one burst: every one is read, pongs never outnumber them and echo their
/// payloads in order (the server may coalesce them), and the session keeps serving.
#[test]
fn ping_flood() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    let mut c = RawWs::attach(port, "session=victim&new=1");
    let before = rss_kib(srv.child.id());

    const PINGS: u32 = 10_000;
    let mut burst = Vec::new();
    for i in 0..PINGS {
        burst.extend_from_slice(&Frame::new(OP_PING, &i.to_be_bytes()).bytes());
    }
    // The marker after the pings proves they were all read.
    burst.extend_from_slice(&Frame::new(OP_BINARY, b"echo pings-$((9+9))\n").bytes());
    let mut w = c.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&burst));
    let deadline = Instant::now() + WAIT;
    let mut pongs = 0u32;
    let mut last: Option<u32> = None;
    let mut out = Vec::new();
    while find(&out, b"pings-18").is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .next_frame(left)
            .unwrap_or_else(|| panic!("ping flood: no marker; {pongs} pongs; {}", tail(&out)));
        match f.opcode {
            OP_PONG => {
                pongs += 1;
                let n = u32::from_be_bytes(f.payload[..].try_into().expect("4-byte pong"));
                assert!(n < PINGS, "pong {n} for no ping");
                assert!(last.is_none_or(|l| n > l), "pong {n} after {last:?}");
                last = Some(n);
            }
            OP_BINARY => out.extend_from_slice(&f.payload),
            OP_CLOSE => panic!("closed during the ping flood: {:?}", f.payload),
            _ => {}
        }
    }
    writer.join().unwrap().expect("write the pings");
    canary.alive("10,000 pings");
    // Pongs still in flight arrive; the last ping is answered.
    while last != Some(PINGS - 1) {
        let Some(f) = c.next_frame(Duration::from_secs(2)) else {
            panic!("the last ping got no pong (last {last:?}, {pongs} pongs)");
        };
        if f.opcode == OP_PONG {
            pongs += 1;
            last = Some(u32::from_be_bytes(f.payload[..].try_into().unwrap()));
        }
    }
    assert!(pongs <= PINGS, "{pongs} pongs for {PINGS} pings");
    let after = rss_kib(srv.child.id());
    assert!(
        after < before + 4096,
        "server RSS went from {before} KiB to {after} KiB"
    );
    canary.alive("after the pongs");

    // A sustained flood, as fast as the socket takes it (pings and control messages of a
    // type the server ignores), must not starve the other sessions while it lasts.
    let mut chunk = Vec::new();
    for i in 0..1000u32 {
        chunk.extend_from_slice(&Frame::new(OP_PING, &i.to_be_bytes()).bytes());
        chunk.extend_from_slice(&Frame::new(OP_TEXT, br#"{"type":"future"}"#).bytes());
    }
    let (stop, writer, reader) = flood(&c.s, chunk);
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        canary.alive(&format!("sustained ping flood, {} ms in", 150 * (i + 1)));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    reader.join().unwrap();
    eprintln!("sustained flood: {sent} bytes");
    let _ = c.s.shutdown(Shutdown::Both);
    canary.alive("after the sustained flood");
}

/// A 10 MB paste into a program that reads no input: the server holds a bounded amount,
/// pushes back on the sender through TCP, and every other session keeps echoing meanwhile.
#[test]
fn paste_into_program_that_does_not_read() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);

    let mut sink = ws::connect(port, "session=sink&new=1");
    sink.expect_attached();
    sink.send_input(b"echo pid-$$-sink; stty -icanon -echo; exec sleep 1000\n");
    let out = sink.read_output_until(b"-sink\r", WAIT);
    let pid = number_after(&out, b"pid-").expect("the shell's pid");
    let _guard = StrayGuard(pid);
    srv.admin_sessions(); // remembers the session pid for cleanup
    // `exec` has happened once the session's process is sleep.
    let deadline = Instant::now() + WAIT;
    while std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() != b"sleep\x001000\x00"
    {
        assert!(Instant::now() < deadline, "sleep never started in {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = rss_kib(srv.child.id());

    // The paste, from a thread: 160 frames of 64 KiB; writes block once the server stops
    // reading, and the thread gives up after its time.
    let mut s = sink.sock.get_mut().try_clone().unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let paster = std::thread::spawn(move || {
        let frame = Frame::new(OP_BINARY, &vec![b'x'; 64 << 10]).bytes();
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < 10_000_000 && start.elapsed() < Duration::from_secs(3) {
            match s.write(&frame) {
                Ok(n) => sent += n,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break,
            }
        }
        sent
    });
    // Meanwhile the canary keeps echoing.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        canary.alive(&format!("paste, {} ms in", 200 * (i + 1)));
    }
    let sent = paster.join().unwrap();
    let after = rss_kib(srv.child.id());
    eprintln!("paste: {sent} bytes accepted by the socket; RSS {before} -> {after} KiB");
    assert!(
        after < before + 4096,
        "server RSS went from {before} KiB to {after} KiB with {sent} bytes pasted"
    );
    canary.alive("after the paste");
    let _ = sink.sock.get_mut().shutdown(Shutdown::Both);
    canary.alive("paster gone");
}

/// Terminal queries in the output (cursor position, device attributes, colours) are passed
/// to the client like any output and, replayed, still never answered by the server: nothing
/// turns up as input to the program.
#[test]
fn replayed_queries_never_become_input() {
    let _serial = serial();
    let srv = spawn_server(&["--", common::sh()]);
    let port = srv.port;
    let mut canary = Canary::open(&srv);
    let query = r"printf '\033[6n\033[c\033[>c\033]11;?\007\033[18t'";
    // Reads whatever input arrives within half a second, raw, and shows it.
    let probe = |tag: &str| {
        format!(
            "stty -echo -icanon min 0 time 5; X=$(dd bs=256 count=1 2>/dev/null | od -An -c | tr -d ' \\n'); stty sane; echo \"{tag}:[$X]:end\"\n"
        )
    };
    let mut c = ws::connect(port, "session=q&new=1");
    c.expect_attached();
    c.send_input(format!("{query}; {}", probe("live")).as_bytes());
    let out = c.read_output_until(b"]:end\r", WAIT);
    assert!(
        find(&out, b"\x1b[6n").is_some(),
        "the query was not passed on: {}",
        tail(&out)
    );
    assert!(
        find(&out, b"live:[]:end").is_some(),
        "the query was answered as input: {}",
        tail(&out)
    );
    c.close();
    canary.alive("live query");

    // Reattach from 0: the replay holds the queries; still nothing is answered.
    let mut c = ws::connect(port, "session=q&since=0");
    let att = c.expect_attached();
    assert_eq!(att["offset"], 0, "{att}");
    let replay = c.read_output_until(b"live:[]:end", WAIT);
    assert!(
        find(&replay, b"\x1b[6n").is_some(),
        "replay lacks the query"
    );
    c.send_input(probe("replayed").as_bytes());
    let out = c.read_output_until(b"]:end\r", WAIT);
    assert!(
        find(&out, b"replayed:[]:end").is_some(),
        "input appeared after a replay of queries: {}",
        tail(&out)
    );
    canary.alive("replayed query");
}
