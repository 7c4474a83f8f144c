//! HTTP/1.1 without I/O: request-head parsing with hard caps, routing, and response bytes.
//!
//! The event loop feeds the bytes a connection has received so far to [`parse_head`]; a
//! complete head becomes an owned [`Request`] that [`route`] maps to what to do. Everything
//! that answers is a [`Response`], serialized once.

use std::borrow::Cow;

use crate::api::assets;

use crate::limits::{MAX_HEAD, MAX_HEADERS};

/// Why a request head is refused; each maps to a status and error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP: 400.
    Malformed,
    /// More than [`MAX_HEADERS`] headers: 431.
    TooManyHeaders,
    /// More than [`MAX_HEAD`] bytes without the end of the head, the request line complete:
    /// 431 (RFC 6585: the header fields, one or all together, are too large).
    TooLarge,
    /// More than [`MAX_HEAD`] bytes without the end of the request line: 413 (SPEC: head
    /// too large).
    LineTooLong,
    /// The request announces a body (`Content-Length` above 0, any `Transfer-Encoding`) or
    /// frames it ambiguously. keepty's requests carry none, and a body it does not parse
    /// must never be read as the next request or as WebSocket frames: 400, then close.
    Body,
}

impl HeadError {
    /// The response this error gets.
    pub fn response(self) -> Response {
        match self {
            HeadError::Malformed => Response::error(400, "bad_request", "malformed HTTP request"),
            HeadError::TooManyHeaders => Response::error(
                431,
                "headers_too_large",
                "more than 32 header fields in the request",
            ),
            HeadError::TooLarge => {
                Response::error(431, "headers_too_large", "request head larger than 8 KiB")
            }
            HeadError::LineTooLong => {
                Response::error(413, "head_too_large", "request line longer than 8 KiB")
            }
            HeadError::Body => Response::error(
                400,
                "bad_request",
                "request bodies are not accepted (no Transfer-Encoding, Content-Length 0)",
            ),
        }
    }
}

/// A parsed request head: the parts keepty looks at, owned.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?` (may be empty).
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// All header fields, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True if header `name` has `token` in its comma-separated list (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case(token)
            })
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.header_has_token("connection", "keep-alive")
    }

    /// True if the request announces a body, or frames one ambiguously: any
    /// `Transfer-Encoding`, or `Content-Length` other than exactly one `0` (two lengths
    /// `0` and `5` included, so the second can never be read as the next request). Only an
    /// upload gets this far with one, and its connection closes after the answer.
    pub fn has_body(&self) -> bool {
        self.body_framing_refused()
    }

    /// True if the request has a body, or framing that makes its length ambiguous: any
    /// `Transfer-Encoding`, or `Content-Length` other than exactly one `0`.
    pub fn body_framing_refused(&self) -> bool {
        let mut lengths = self.headers.iter().filter(|(n, _)| n == "content-length");
        let length_ok = match (lengths.next(), lengths.next()) {
            (None, _) => true,
            (Some((_, v)), None) => v.trim() == "0",
            (Some(_), Some(_)) => false,
        };
        !length_ok || self.header("transfer-encoding").is_some()
    }

    /// The `Sec-WebSocket-Key` when there is exactly one and it is what RFC 6455 section
    /// 4.1 asks for: 16 bytes in base64 (22 characters and `==`).
    pub fn ws_key(&self) -> Option<&str> {
        let mut keys = self
            .headers
            .iter()
            .filter(|(n, _)| n == "sec-websocket-key");
        let (Some((_, key)), None) = (keys.next(), keys.next()) else {
            return None;
        };
        let key = key.trim();
        let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        let (body, pad) = key.as_bytes().split_at_checked(22)?;
        // The last character carries 2 data bits: its low 4 bits must be zero.
        let last_ok = body.last().is_some_and(|c| b"AQgw".contains(c));
        (pad == b"==" && body.iter().all(|c| b64(*c)) && last_ok).then_some(key)
    }

    /// True if the client takes a gzip body.
    pub fn accepts_gzip(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "accept-encoding")
            .flat_map(|(_, v)| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").is_some_and(q_is_zero)
                });
                coding.eq_ignore_ascii_case("gzip") && !refused
            })
    }

    /// True if this is a WebSocket upgrade request (method aside).
    pub fn is_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
            && self.header_has_token("connection", "upgrade")
    }
}

/// True if a qvalue (`q=` of RFC 9110 12.4.2: `0`, `0.5`, `1.000`) is zero or below, which
/// refuses its coding. Read as decimal digits: `str::parse::<f32>` linked core's float parser
/// and its tables (15 KB) for this one test. Forms that are no qvalue (exponents, `inf`)
/// never refuse.
fn q_is_zero(q: &str) -> bool {
    let (negative, digits) = match q.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[..0]),
    };
    let number =
        !(int.is_empty() && frac.is_empty()) && int.iter().chain(frac).all(u8::is_ascii_digit);
    number && (negative || int.iter().chain(frac).all(|&b| b == b'0'))
}

/// Parses a request head from the bytes received so far. `Ok(None)`: not complete yet.
/// `Ok(Some((req, n)))`: the head is the first `n` bytes; what follows belongs to the next
/// request or, after an upgrade, to the WebSocket.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let out = Request {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                minor_version: req.version.unwrap_or(1),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            // Only an upload takes a body; its route judges the framing (files::wire).
            if out.body_framing_refused() && !takes_body(&out) {
                return Err(HeadError::Body);
            }
            Ok(Some((out, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            if buf.contains(&b'\n') {
                Err(HeadError::TooLarge)
            } else {
                Err(HeadError::LineTooLong)
            }
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// True for the one request that carries a body: an upload (`PUT`/`POST` of
/// `/api/sessions/ID/files`).
fn takes_body(req: &Request) -> bool {
    matches!(req.method.as_str(), "PUT" | "POST")
        && matches!(file_route(&req.path), Some((_, FileRoute::Files)))
}

/// Which file route of a session (`/api/sessions/ID/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRoute {
    /// `.../cwd`: the session's current directory.
    Cwd,
    /// `.../files`: download (GET, HEAD) or upload (PUT, POST).
    Files,
    /// `.../files/ticket`: a single-use download link.
    Ticket,
}

/// The session id and file route a path names, if it is one.
fn file_route(path: &str) -> Option<(&str, FileRoute)> {
    let rest = path.strip_prefix("/api/sessions/")?;
    let (id, tail) = rest.split_once('/')?;
    let what = match tail {
        "cwd" => FileRoute::Cwd,
        "files" => FileRoute::Files,
        "files/ticket" => FileRoute::Ticket,
        _ => return None,
    };
    Some((id, what))
}

/// What a request asks for.
#[derive(Debug)]
pub enum Route {
    /// An embedded file.
    Asset(&'static assets::Asset),
    /// `/healthz`.
    Health,
    /// `/ws`: a WebSocket upgrade.
    WebSocket,
    /// `/echo`: a WebSocket that sends every message back (conformance testing only).
    #[cfg(feature = "echo")]
    Echo,
    /// `/api/sessions`: the caller's own sessions.
    ApiSessions,
    /// `/api/whoami`: the user the caller's token names (extension).
    ApiWhoami,
    /// `/admin`: the admin page.
    AdminPage,
    /// `/admin/sessions`.
    AdminSessions,
    /// `/admin/metrics`.
    AdminMetrics,
    /// `/admin/drop?id=`.
    AdminDrop,
    /// `/admin/drop-all?confirm=`.
    AdminDropAll,
    /// `/admin/upgrade`: re-execute the binary on disk, keeping every session.
    AdminUpgrade,
    /// A file route of session `id` (the id is checked by the route).
    SessionFiles(String, FileRoute),
    /// `/api/files/TICKET`: a download by ticket.
    TicketDownload(String),
    /// A known path with a method it does not take.
    MethodNotAllowed(&'static str),
    /// Nothing here.
    NotFound,
}

impl Route {
    /// True for routes that change something: they take POST as well as GET, and refuse a
    /// cross-site `Sec-Fetch-Site` so a link or image elsewhere cannot trigger them.
    pub fn has_side_effect(&self) -> bool {
        matches!(
            self,
            Route::AdminDrop | Route::AdminDropAll | Route::AdminUpgrade
        )
    }
}

/// Maps a request to its route.
pub fn route(req: &Request) -> Route {
    let r = match req.path.as_str() {
        "/healthz" => Route::Health,
        "/ws" => {
            return if req.method == "GET" {
                Route::WebSocket
            } else {
                Route::MethodNotAllowed("GET")
            };
        }
        #[cfg(feature = "echo")]
        "/echo" => Route::Echo,
        "/api/sessions" => Route::ApiSessions,
        "/api/whoami" => Route::ApiWhoami,
        // Not "/admin/": the page's relative asset URLs would resolve under it.
        "/admin" => Route::AdminPage,
        "/admin/sessions" => Route::AdminSessions,
        "/admin/metrics" => Route::AdminMetrics,
        "/admin/drop" => Route::AdminDrop,
        "/admin/drop-all" => Route::AdminDropAll,
        "/admin/upgrade" => Route::AdminUpgrade,
        p if p.starts_with("/api/") => return api_route(req),
        p => match assets::get(p) {
            Some(a) => Route::Asset(a),
            None => return Route::NotFound,
        },
    };
    let ok = match req.method.as_str() {
        "GET" => true,
        "HEAD" => !r.has_side_effect(),
        "POST" => r.has_side_effect(),
        _ => false,
    };
    match (ok, r.has_side_effect()) {
        (true, _) => r,
        (false, true) => Route::MethodNotAllowed("GET, POST"),
        (false, false) => Route::MethodNotAllowed("GET, HEAD"),
    }
}

/// The file routes, each with the methods it takes.
fn api_route(req: &Request) -> Route {
    let m = req.method.as_str();
    if let Some(ticket) = req.path.strip_prefix("/api/files/") {
        return match m {
            "GET" | "HEAD" => Route::TicketDownload(ticket.to_string()),
            _ => Route::MethodNotAllowed("GET, HEAD"),
        };
    }
    let Some((id, what)) = file_route(&req.path) else {
        return Route::NotFound;
    };
    let ok = match what {
        FileRoute::Cwd => matches!(m, "GET" | "HEAD"),
        FileRoute::Files => matches!(m, "GET" | "HEAD" | "PUT" | "POST"),
        FileRoute::Ticket => m == "POST",
    };
    match (ok, what) {
        (true, _) => Route::SessionFiles(id.to_string(), what),
        (false, FileRoute::Cwd) => Route::MethodNotAllowed("GET, HEAD"),
        (false, FileRoute::Files) => Route::MethodNotAllowed("GET, HEAD, PUT, POST"),
        (false, FileRoute::Ticket) => Route::MethodNotAllowed("POST"),
    }
}

/// The first value of query parameter `key`, percent-decoded (`+` stays `+`: these are
/// tokens and ids, not form text). `None` if absent or not valid UTF-8 once decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| *k == key)?
        .1;
    let mut out = Vec::with_capacity(raw.len());
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Headers every response carries: no framing by other sites, no referrer leaking a token in
/// a URL, no script but our own files.
pub const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n";

/// A response: status line + headers + body, serialized by [`Response::encode_head`].
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra header lines (`Name: value`), beyond the ones every response gets.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// Body; embedded assets are borrowed, not copied.
    pub body: Cow<'static, [u8]>,
    /// Send the head only (HEAD requests, 304).
    pub omit_body: bool,
}

/// The reason phrase for the statuses keepty sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

impl Response {
    /// A response with a body and content type.
    pub fn new(
        status: u16,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", Cow::Borrowed(content_type))],
            body: body.into(),
            omit_body: false,
        }
    }

    /// A JSON body, fields in declaration order.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Self {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// The SPEC's error shape: `{"error":CODE,"message":TEXT}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Response::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    /// An embedded asset, gzip-compressed when the client takes it, 304 when its ETag matches.
    pub fn asset(req: &Request, a: &'static assets::Asset) -> Self {
        let gzip = req.accepts_gzip();
        // The gzip bytes are a different representation, so they get their own strong tag.
        let etag: Cow<'static, str> = if gzip {
            Cow::Owned(format!("{}-gz\"", a.etag.trim_end_matches('"')))
        } else {
            Cow::Borrowed(a.etag)
        };
        let mut r = if req
            .header("if-none-match")
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
        {
            let mut r = Response::new(304, a.content_type, &[][..]);
            r.omit_body = true;
            r
        } else if gzip {
            let mut r = Response::new(200, a.content_type, a.gzip);
            r.headers.push(("Content-Encoding", Cow::Borrowed("gzip")));
            r
        } else {
            Response::new(200, a.content_type, a.body())
        };
        r.headers.push(("ETag", etag));
        r.headers.push(("Vary", Cow::Borrowed("Accept-Encoding")));
        // Revalidate every time: asset names are not content-hashed, and a 304 is cheap.
        r.headers.push(("Cache-Control", Cow::Borrowed("no-cache")));
        r
    }

    /// The status line and headers, including `Content-Length` and `Connection`.
    pub fn encode_head(&self, keep_alive: bool) -> Vec<u8> {
        self.encode_head_sized(keep_alive, self.body.len() as u64)
    }

    /// [`Response::encode_head`] for a body of `length` bytes sent apart (a file).
    pub fn encode_head_sized(&self, keep_alive: bool, length: u64) -> Vec<u8> {
        use std::fmt::Write;
        let mut h = String::with_capacity(256);
        let _ = write!(h, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(h, "{name}: {value}\r\n");
        }
        if self.status != 304 {
            let _ = write!(h, "Content-Length: {length}\r\n");
        }
        h.push_str(if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        });
        // Answers that are not cacheable files (API, admin, errors) must not be stored.
        if !self.headers.iter().any(|(n, _)| *n == "Cache-Control") {
            h.push_str("Cache-Control: no-store\r\n");
        }
        h.push_str(SECURITY_HEADERS);
        h.push_str("\r\n");
        h.into_bytes()
    }
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade.
pub fn upgrade_response(accept_key: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n"
    );
    if let Some(p) = protocol {
        h.push_str("Sec-WebSocket-Protocol: ");
        h.push_str(p);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Request {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn only_an_upload_may_carry_a_body() {
        let head = |line: &str| {
            parse_head(format!("{line}\r\nHost: h\r\nContent-Length: 3\r\n\r\n").as_bytes())
        };
        assert!(head("PUT /api/sessions/a/files?path=x HTTP/1.1").is_ok());
        assert!(head("POST /api/sessions/a/files?path=x HTTP/1.1").is_ok());
        for refused in [
            "GET /api/sessions/a/files?path=x HTTP/1.1",
            "PUT /api/sessions/a/cwd HTTP/1.1",
            "POST /api/sessions/a/files/ticket HTTP/1.1",
            "POST /admin/drop-all?confirm=1 HTTP/1.1",
        ] {
            assert_eq!(head(refused).err(), Some(HeadError::Body), "{refused}");
        }
    }

    #[test]
    fn qvalues_read_as_the_float_parse_did() {
        for q in [
            "0", "0.", "0.0", "0.000", "-0", "+0", "-1", "-0.5", "0.001", "0.5", "1", "1.000",
            "+1", "00.00", ".0", ".5", "", "-", ".", "x", "0x", "1.2.3", " 0",
        ] {
            let float = q.parse::<f32>().is_ok_and(|v| v <= 0.0);
            assert_eq!(q_is_zero(q), float, "{q:?}");
        }
        // Not qvalues at all: the float parse took them, this never refuses on them.
        assert!(!q_is_zero("0e1") && !q_is_zero("-inf") && !q_is_zero("nan"));
    }

    #[test]
    fn partial_then_complete() {
        let raw = b"GET /ws?session=a HTTP/1.1\r\nHost: x\r\n\r\nEXTRA";
        assert!(parse_head(&raw[..20]).unwrap().is_none());
        let (r, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(&raw[n..], b"EXTRA");
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query, "session=a");
        assert_eq!(r.header("host"), Some("x"));
    }

    #[test]
    fn caps() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&big).unwrap_err(), HeadError::TooLarge);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..40 {
            many.push_str(&format!("H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            HeadError::TooManyHeaders
        );
        assert_eq!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(req("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn gzip_negotiation() {
        assert!(req("GET / HTTP/1.1\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n").accepts_gzip());
        assert!(!req("GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=0\r\n\r\n").accepts_gzip());
        assert!(req("GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=0.001, br\r\n\r\n").accepts_gzip());
        assert!(
            !req("GET / HTTP/1.1\r\nAccept-Encoding: br, gzip ; q=0.000\r\n\r\n").accepts_gzip()
        );
        assert!(!req("GET / HTTP/1.1\r\n\r\n").accepts_gzip());
    }

    #[test]
    fn upgrade_detection() {
        let r = req(
            "GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        );
        assert!(r.is_upgrade());
        assert!(matches!(route(&r), Route::WebSocket));
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route(&req("GET /healthz HTTP/1.1\r\n\r\n")),
            Route::Health
        ));
        assert!(matches!(
            route(&req("GET / HTTP/1.1\r\n\r\n")),
            Route::Asset(_)
        ));
        assert!(matches!(
            route(&req("GET /nope HTTP/1.1\r\n\r\n")),
            Route::NotFound
        ));
        assert!(matches!(
            route(&req("DELETE / HTTP/1.1\r\n\r\n")),
            Route::MethodNotAllowed(_)
        ));
    }

    #[test]
    fn etags_differ_per_encoding_and_revalidate() {
        let a = assets::get("/").unwrap();
        let plain = Response::asset(&req("GET / HTTP/1.1\r\n\r\n"), a);
        let gz = Response::asset(&req("GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"), a);
        let tag = |r: &Response| {
            r.headers
                .iter()
                .find(|h| h.0 == "ETag")
                .unwrap()
                .1
                .to_string()
        };
        assert_ne!(tag(&plain), tag(&gz));
        assert!(tag(&gz).starts_with('"') && tag(&gz).ends_with("-gz\""));
        let again = format!(
            "GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nIf-None-Match: {}\r\n\r\n",
            tag(&gz)
        );
        assert_eq!(Response::asset(&req(&again), a).status, 304);
        let cross = format!("GET / HTTP/1.1\r\nIf-None-Match: {}\r\n\r\n", tag(&gz));
        assert_eq!(Response::asset(&req(&cross), a).status, 200);
    }

    #[test]
    fn admin_routes_and_methods() {
        let r = |raw: &str| route(&req(raw));
        assert!(matches!(
            r("POST /admin/drop?id=a HTTP/1.1\r\n\r\n"),
            Route::AdminDrop
        ));
        assert!(matches!(
            r("GET /admin/drop-all?confirm=1 HTTP/1.1\r\n\r\n"),
            Route::AdminDropAll
        ));
        assert!(matches!(
            r("HEAD /admin/drop?id=a HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed("GET, POST")
        ));
        assert!(matches!(
            r("POST /admin/sessions HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed("GET, HEAD")
        ));
        assert!(matches!(r("GET /admin HTTP/1.1\r\n\r\n"), Route::AdminPage));
        assert!(matches!(
            r("GET /api/sessions HTTP/1.1\r\n\r\n"),
            Route::ApiSessions
        ));
        assert!(matches!(
            r("GET /api/whoami HTTP/1.1\r\n\r\n"),
            Route::ApiWhoami
        ));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("id=abc&x=1", "id").as_deref(), Some("abc"));
        assert_eq!(
            query_param("token=a%2Fb%3d", "token").as_deref(),
            Some("a/b=")
        );
        assert_eq!(query_param("token=a+b", "token").as_deref(), Some("a+b"));
        assert_eq!(query_param("flag&id=", "flag").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "id"), None);
        assert_eq!(query_param("id=%ff", "id"), None);
        assert_eq!(query_param("id=%zz", "id").as_deref(), Some("%zz"));
    }

    #[test]
    fn every_response_has_security_headers() {
        let head = String::from_utf8(Response::error(400, "x", "y").encode_head(false)).unwrap();
        assert!(head.contains("frame-ancestors 'none'"));
        assert!(head.contains("Referrer-Policy: no-referrer"));
        assert!(head.contains("X-Content-Type-Options: nosniff"));
        assert!(head.contains("Cache-Control: no-store"));
        let a = assets::get("/").unwrap();
        let head =
            String::from_utf8(Response::asset(&req("GET / HTTP/1.1\r\n\r\n"), a).encode_head(true))
                .unwrap();
        assert!(head.contains("Cache-Control: no-cache") && !head.contains("no-store"));
    }

    #[test]
    fn bodies_and_line_length() {
        let refused = |raw: &str| parse_head(raw.as_bytes()).unwrap_err();
        for h in [
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: identity",
            "Content-Length: 5",
            "Content-Length: abc",
            "Content-Length: 0\r\nContent-Length: 0",
        ] {
            assert_eq!(
                refused(&format!("GET / HTTP/1.1\r\n{h}\r\n\r\n")),
                HeadError::Body,
                "{h}"
            );
        }
        assert!(
            parse_head(b"POST /admin/drop HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .is_some()
        );
        let mut line = b"GET /".to_vec();
        line.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&line).unwrap_err(), HeadError::LineTooLong);
        assert_eq!(HeadError::LineTooLong.response().status, 413);
        assert_eq!(HeadError::TooLarge.response().status, 431);
        assert_eq!(HeadError::Body.response().status, 400);
    }

    #[test]
    fn websocket_keys() {
        let key = |k: &str| {
            req(&format!(
                "GET /ws HTTP/1.1\r\nSec-WebSocket-Key: {k}\r\n\r\n"
            ))
            .ws_key()
            .map(str::to_string)
        };
        assert_eq!(
            key("dGhlIHNhbXBsZSBub25jZQ==").as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert!(key("AAAAAAAAAAAAAAAAAAAA+w==").is_some());
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZQ===",
            "dGhlIHNhbXBsZSBub25jZ!==",
        ] {
            assert_eq!(key(bad), None, "{bad:?}");
        }
        let two = req(
            "GET /ws HTTP/1.1\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\
             Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
        );
        assert_eq!(two.ws_key(), None);
    }

    #[test]
    fn response_head() {
        let r = Response::error(404, "not_found", "nothing here");
        let head = String::from_utf8(r.encode_head(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert!(head.contains("Connection: keep-alive"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "not_found");
    }
}
