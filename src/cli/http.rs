//! The subcommands' HTTP: where the server is, and one blocking request at a time over a std
//! socket (`Connection: close`, so the answer ends where the stream does).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::Fail;

/// How long connecting and each read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer read: a full session list is a few KiB per session.
const MAX_ANSWER: u64 = 8 << 20;

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
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
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
}
