//! A minimal blocking HTTP/1.1 client, enough to check status lines, headers and bodies byte
//! for byte (a real client library would hide exactly the details the tests look at).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::is_timeout;

/// Every socket read or write in the tests gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked but not decompressed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A loopback connection with read and write timeouts set.
pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads one response. The body is delimited by Content-Length, chunked encoding, or (neither
/// given) the end of the connection.
pub fn read_response<R: BufRead>(r: &mut R) -> io::Result<Response> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.take(64 * 1024).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed inside the response head ({} bytes read)",
                    head.len()
                ),
            ));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        head.extend_from_slice(&line);
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head over 64 KiB"));
        }
    }
    let head =
        String::from_utf8(head).map_err(|_| io::Error::other("response head is not UTF-8"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::other(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if status / 100 == 1 || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| io::Error::other(format!("bad Content-Length {cl:?}")))?;
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_line:?}")))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.take(64 << 20).read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Sends `raw` as is on a new connection and reads one response.
pub fn raw_request(addr: &str, raw: &[u8]) -> io::Result<Response> {
    let mut s = connect(addr);
    s.write_all(raw)?;
    read_response(&mut BufReader::new(s))
}

/// `GET path` with `Connection: close` and extra header lines (each `Name: value`).
pub fn get_with(addr: &str, path: &str, extra: &[&str]) -> Response {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes()).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET path` with `Connection: close`.
pub fn get(addr: &str, path: &str) -> Response {
    get_with(addr, path, &[])
}

/// Whether the peer has closed `s`: a read sees EOF (or a reset) within `timeout`.
pub fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Builds a request head: `METHOD path HTTP/1.1`, a `Host` naming `addr` unless `extra` has
/// one of its own, `Connection: close`, `Content-Length: 0` for POST, then the `extra` lines
/// (each `Name: value`).
pub fn request_head(addr: &str, method: &str, path: &str, extra: &[&str]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !extra
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    if method == "POST" || method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Any method, any headers (see `request_head`); panics when no response comes.
pub fn request(addr: &str, method: &str, path: &str, extra: &[&str]) -> Response {
    let req = request_head(addr, method, path, extra);
    raw_request(addr, req.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Sends `raw` on an already connected stream (say one from another local address) and
/// reads one response.
pub fn raw_request_on(mut s: TcpStream, raw: &[u8]) -> io::Result<Response> {
    s.write_all(raw)?;
    read_response(&mut BufReader::new(s))
}

/// The header lines of a WebSocket upgrade request (a fixed key), for `request`'s `extra`.
pub const UPGRADE: &[&str] = &[
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// `GET /ws?query` as a raw upgrade request with extra header lines; returns the response
/// head (and body, when refused). A 101 leaves the connection to be dropped.
pub fn upgrade(addr: &str, query: &str, extra: &[&str]) -> Response {
    let mut lines: Vec<&str> = UPGRADE.to_vec();
    lines.extend_from_slice(extra);
    let mut req = request_head(addr, "GET", &format!("/ws?{query}"), &lines);
    // request_head adds `Connection: close`, which would contradict `Connection: Upgrade`.
    req = req.replacen("Connection: close\r\n", "", 1);
    raw_request(addr, req.as_bytes()).unwrap_or_else(|e| panic!("upgrade /ws?{query}: {e}"))
}

/// The start of a request head that stops inside a header value: what a slowloris sends.
pub fn half_head(addr: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ")
}

/// Sends [`half_head`] on `s` and stops there, keeping the connection pending on the server.
/// The write fails on a connection the server has already turned away; whether that is fine
/// is the caller's to say.
pub fn half_sent(mut s: TcpStream, addr: &str) -> io::Result<TcpStream> {
    s.write_all(half_head(addr).as_bytes())?;
    Ok(s)
}
