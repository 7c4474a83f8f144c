//! The subcommands' HTTP: where the server is, one blocking request at a time over a std
//! socket (`Connection: close`, so the answer ends where the stream does), and the client side
//! of the WebSocket handshake (RFC 6455 4.1), written here rather than taken from tungstenite's
//! client, whose `http` request and response types cost the binary 45 KB (mips 59 KB) for
//! one fixed request.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::Fail;

/// How long connecting and each read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer read: a full session list is a few KiB per session.
const MAX_ANSWER: u64 = 8 << 20;
/// The longest head of a handshake answer: keepty's is a few hundred bytes.
const MAX_HEAD: usize = 16 << 10;
/// The longest error body read after a refused handshake: keepty's is one JSON line.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The subprotocol asked for (SPEC section 2), which the answer must name.
const SUBPROTOCOL: &str = "keepty.v1";

/// A parsed `--url`: `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Host as written (brackets kept for IPv6), for the `Host` header and connecting.
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path prefix without a trailing `/` ("" for the root).
    pub prefix: String,
}

impl Server {
    /// Parses `url`. `https://` and `wss://` are refused: the client has no TLS (yet).
    pub fn parse(url: &str) -> Result<Server, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if url.starts_with("https://") || url.starts_with("wss://") {
            return Err(format!(
                "{url}: https:// is not supported by the keepty subcommands yet (use http:// on loopback, or an SSH tunnel)"
            ));
        } else {
            return Err(format!("--url {url:?}: expected http://HOST:PORT/"));
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                let port = p
                    .parse()
                    .map_err(|_| format!("--url {url:?}: bad port {p:?}"))?;
                (h.to_string(), port)
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() || host.starts_with(':') || host.contains(['@', '?', '#']) {
            return Err(format!("--url {url:?}: expected http://HOST:PORT/"));
        }
        Ok(Server {
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `HOST:PORT`, for the `Host` header and the WebSocket URL.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connects with timeouts; an error is [`Fail::Unreachable`].
    pub fn connect(&self) -> Result<TcpStream, Fail> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let unreachable = |e: io::Error| Fail::Unreachable(format!("{}: {e}", self.authority()));
        let addrs = (host, self.port).to_socket_addrs().map_err(unreachable)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(unreachable)?;
                    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(unreachable)?;
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(unreachable(last))
    }

    /// Sends one request and reads the whole answer: (status, body).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), Fail> {
        let mut s = self.connect()?;
        let mut head = format!(
            "{method} {}{path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: keepty-cli\r\nContent-Length: 0\r\n",
            self.prefix,
            self.authority()
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let lost = |e: io::Error| Fail::Unreachable(format!("{}: {e}", self.authority()));
        s.write_all(head.as_bytes()).map_err(lost)?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut answer).map_err(lost)?;
        parse_answer(&answer)
            .ok_or_else(|| Fail::Unreachable(format!("{}: not an HTTP answer", self.authority())))
    }

    /// The head of the upgrade request for `path_and_query` with `key`. Every part goes on
    /// the request line or in a header verbatim, so each must be one token there: a target
    /// or host with a space, a control byte or `#`, or a token with a control byte, is a
    /// [`Fail::Usage`] (as `http`'s parsers refused them when tungstenite built the request).
    pub fn upgrade_request(
        &self,
        path_and_query: &str,
        key: &str,
        token: Option<&str>,
    ) -> Result<String, Fail> {
        let target = format!("{}{path_and_query}", self.prefix);
        let authority = self.authority();
        let one_token = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !one_token(&target) || !one_token(&authority) {
            return Err(Fail::Usage(format!(
                "ws://{authority}{target}: not a valid URL"
            )));
        }
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        );
        if let Some(t) = token {
            // What a header value may hold (RFC 9110 5.5): no control byte but tab.
            if t.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(Fail::Usage("the token is not valid in a header".into()));
            }
            head.push_str("Authorization: Bearer ");
            head.push_str(t);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        Ok(head)
    }

    /// Connects and makes the WebSocket handshake for `path_and_query` (blocking, with
    /// timeouts): the stream and the bytes read past the answer's head, which are the first
    /// frames. A refusal is [`Fail::Refused`] with the server's own message.
    pub fn upgrade(
        &self,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<(TcpStream, Vec<u8>), Fail> {
        let key = ws_key();
        let head = self.upgrade_request(path_and_query, &key, token)?;
        let mut s = self.connect()?;
        let lost = |e: io::Error| Fail::Unreachable(format!("{}: {e}", self.authority()));
        let broken = |why: &str| Fail::Unreachable(format!("{}: {why}", self.authority()));
        s.write_all(head.as_bytes()).map_err(lost)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match upgrade_answer(&buf, &key) {
                Upgrade::Partial if buf.len() > MAX_HEAD => {
                    return Err(broken("the handshake answer's head is too long"));
                }
                Upgrade::Partial => {}
                Upgrade::Accepted { head } => return Ok((s, buf.split_off(head))),
                Upgrade::Refused { status, head, len } => {
                    let want = len.unwrap_or(MAX_ERROR_BODY).min(MAX_ERROR_BODY);
                    let mut body = buf.split_off(head);
                    if body.len() < want {
                        // What the body lacks, until it ends; a read that fails ends it too
                        // (the status alone still says what happened).
                        let missing = (want - body.len()) as u64;
                        let _ = (&mut s).take(missing).read_to_end(&mut body);
                    }
                    body.truncate(want);
                    return Err(Fail::Refused(error_text(status, &body)));
                }
                Upgrade::Invalid(why) => return Err(broken(&why)),
            }
            let n = loop {
                match s.read(&mut chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r.map_err(lost)?,
                }
            };
            if n == 0 {
                return Err(broken(
                    "the connection closed during the WebSocket handshake",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// What the bytes read so far say about the answer to a WebSocket upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet: read more.
    Partial,
    /// 101 with every header the handshake needs: the WebSocket's frames start at `head`.
    Accepted {
        /// The head's length.
        head: usize,
    },
    /// Another status: its body starts at `head`, `len` bytes long if the answer says.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The head's length.
        head: usize,
        /// `Content-Length`, when given.
        len: Option<usize>,
    },
    /// Not an answer a WebSocket client can take; why.
    Invalid(String),
}

/// Judges the answer to an upgrade request made with `key`, as RFC 6455 4.1 asks a client to
/// (and tungstenite's client did): HTTP/1.1, status 101, `Upgrade: websocket`, `Connection:
/// Upgrade`, the `Sec-WebSocket-Accept` that `key` gives, and the subprotocol asked for.
pub fn upgrade_answer(bytes: &[u8], key: &str) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Upgrade::Partial,
        Err(e) => return Upgrade::Invalid(format!("not an HTTP answer ({e})")),
    };
    let (Some(status), Some(1)) = (resp.code, resp.version) else {
        return Upgrade::Invalid("not an HTTP/1.1 answer".into());
    };
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if status != 101 {
        return Upgrade::Refused {
            status,
            head,
            len: header("content-length").and_then(content_length),
        };
    }
    let is = |name: &str, want: &str, nocase: bool| {
        header(name).is_some_and(|v| {
            if nocase {
                v.eq_ignore_ascii_case(want.as_bytes())
            } else {
                v == want.as_bytes()
            }
        })
    };
    let accept = crate::net::accept::accept_key(key.as_bytes());
    let missing = if !is("upgrade", "websocket", true) {
        "Upgrade: websocket"
    } else if !is("connection", "upgrade", true) {
        "Connection: Upgrade"
    } else if !is("sec-websocket-accept", &accept, false) {
        "the Sec-WebSocket-Accept of its key"
    } else if !is("sec-websocket-protocol", SUBPROTOCOL, false) {
        "Sec-WebSocket-Protocol: keepty.v1"
    } else {
        return Upgrade::Accepted { head };
    };
    Upgrade::Invalid(format!("the WebSocket handshake's answer lacks {missing}"))
}

/// A `Content-Length` value.
fn content_length(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A `Sec-WebSocket-Key`: 16 bytes from the kernel's random source, in base64 (RFC 6455
/// 4.1). It only has to differ between handshakes; without /dev/urandom the time and pid do.
fn ws_key() -> String {
    let raw = crate::random::bytes::<16>().unwrap_or_else(|_| {
        let mut raw = [0u8; 16];
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        raw[..8].copy_from_slice(&(t as u64).to_le_bytes());
        raw[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        raw
    });
    crate::base64::standard(&raw)
}

/// Splits an HTTP answer into its status and body (cut to `Content-Length` when given).
pub fn parse_answer(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(bytes).ok()? else {
        return None;
    };
    let status = resp.code?;
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| content_length(h.value));
    let body = &bytes[n..];
    let body = match len {
        Some(l) if l <= body.len() => &body[..l],
        _ => body,
    };
    Some((status, body.to_vec()))
}

/// The human text of a keepty error answer (`{"error","message"}`), or the status alone.
pub fn error_text(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let code = v["error"].as_str()?.to_string();
            let msg = v["message"].as_str().unwrap_or("").to_string();
            Some(format!("{code}: {msg}"))
        });
    match msg {
        Some(m) => format!("the server answered {status} ({m})"),
        None => format!("the server answered {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = Server::parse("http://127.0.0.1:7700/").unwrap();
        assert_eq!(
            s,
            Server {
                host: "127.0.0.1".into(),
                port: 7700,
                prefix: String::new()
            }
        );
        let s = Server::parse("http://[::1]:9/term/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("[::1]", 9, "/term")
        );
        assert_eq!(Server::parse("http://box.lan").unwrap().port, 80);
        assert_eq!(Server::parse("http://[::1]").unwrap().host, "[::1]");
        assert!(
            Server::parse("https://box/")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(Server::parse("box:7700").is_err());
        assert!(Server::parse("http://:7700/").is_err());
        assert!(Server::parse("http://h:port/").is_err());
        assert!(Server::parse("http://u@h:1/").is_err());
    }

    #[test]
    fn answers() {
        let a = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello, trailing";
        assert_eq!(parse_answer(a), Some((404, b"hello".to_vec())));
        let a = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(parse_answer(a), Some((200, b"all of it".to_vec())));
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(parse_answer(b"garbage"), None);
        assert_eq!(
            error_text(
                401,
                br#"{"error":"unauthorized","message":"a token is required"}"#
            ),
            "the server answered 401 (unauthorized: a token is required)"
        );
        assert_eq!(error_text(502, b"<html>"), "the server answered 502");
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        let (a, b) = (ws_key(), ws_key());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }

    #[test]
    fn upgrade_requests() {
        let s = Server::parse("http://127.0.0.1:7700/term/").unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            s.upgrade_request("/ws?session=a&new=1", key, Some("t0k"))
                .unwrap(),
            "GET /term/ws?session=a&new=1 HTTP/1.1\r\nHost: 127.0.0.1:7700\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: keepty.v1\r\n\
             Authorization: Bearer t0k\r\n\r\n"
        );
        let head = s.upgrade_request("/ws?session=a", key, None).unwrap();
        assert!(!head.contains("Authorization") && head.ends_with("keepty.v1\r\n\r\n"));
        // Nothing can end the request line or a header early.
        for bad in [
            "/ws?session=a b",
            "/ws?x\r\nX-Evil: 1",
            "/ws?a#b",
            "/ws?\u{e9}",
        ] {
            assert_eq!(
                s.upgrade_request(bad, key, None).unwrap_err().exit_code(),
                2
            );
        }
        assert!(s.upgrade_request("/ws?a", key, Some("a\r\nX: y")).is_err());
        assert!(
            s.upgrade_request("/ws?a", key, Some("with space\tand tab"))
                .is_ok()
        );
        let odd = Server::parse("http://a b:1/").unwrap();
        assert!(odd.upgrade_request("/ws?a", key, None).is_err());
    }

    #[test]
    fn upgrade_answers() {
        // RFC 6455 1.3's example key and accept.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                  Sec-WebSocket-Protocol: keepty.v1\r\n\r\n";
        let with_frame = format!("{ok}\u{82}\u{1}x");
        assert_eq!(
            upgrade_answer(with_frame.as_bytes(), key),
            Upgrade::Accepted { head: ok.len() }
        );
        for cut in [0, 10, ok.len() - 1] {
            assert_eq!(upgrade_answer(&ok.as_bytes()[..cut], key), Upgrade::Partial);
        }
        let lacks = |answer: &str, what: &str| match upgrade_answer(answer.as_bytes(), key) {
            Upgrade::Invalid(why) => assert!(why.contains(what), "{why}"),
            other => panic!("{answer}: {other:?}"),
        };
        lacks(&ok.replace("s3pP", "AAAA"), "Sec-WebSocket-Accept");
        lacks(
            &ok.replace("Upgrade: WebSocket\r\n", ""),
            "Upgrade: websocket",
        );
        lacks(
            &ok.replace("Connection: upgrade", "Connection: close"),
            "Connection",
        );
        lacks(&ok.replace("keepty.v1", "other"), "Sec-WebSocket-Protocol");
        lacks(&ok.replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1");
        lacks("SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer");
        let refused = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 11\r\n\r\n{\"error\":1}";
        assert_eq!(
            upgrade_answer(refused.as_bytes(), key),
            Upgrade::Refused {
                status: 401,
                head: refused.len() - 11,
                len: Some(11)
            }
        );
    }
}
