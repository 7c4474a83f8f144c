//! The plain HTTP side: the page and its assets (plain and gzip), keep-alive, `/healthz`,
//! JSON errors, and malformed or oversized request heads.

mod common;

use std::io::{BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::http::{self, Response};
use common::support::assert_json_error;
use common::{is_timeout, spawn_server};

const PAGES: &[&str] = &[
    "/",
    "/assets/app.js",
    "/assets/xterm.js",
    "/assets/xterm.css",
];

/// gunzip through the system tool: flate2 is only a build-dependency of the crate.
fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip -dc");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    // A separate writer avoids a pipe deadlock when the output is larger than the pipe buffer.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("gzip output");
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "gzip -dc failed: the body is not valid gzip"
    );
    out.stdout
}

fn assert_content_length(path: &str, r: &Response) {
    let cl = r
        .header("content-length")
        .unwrap_or_else(|| panic!("{path}: no Content-Length"));
    assert_eq!(
        cl.parse::<usize>().unwrap(),
        r.body.len(),
        "{path}: Content-Length"
    );
}

fn assert_healthy(addr: &str) {
    let r = http::get(addr, "/healthz");
    assert_eq!(r.status, 200, "/healthz after a bad request");
    assert_eq!(r.text().trim_end(), "ok");
}

#[test]
fn page_and_assets_plain_and_gzip() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    for &path in PAGES {
        let plain = http::get(&addr, path);
        assert_eq!(plain.status, 200, "{path}: {}", plain.text());
        assert_content_length(path, &plain);
        assert!(!plain.body.is_empty(), "{path}: empty body");
        assert!(
            plain.header("content-encoding").is_none(),
            "{path}: encoded although gzip was not accepted"
        );
        let ct = plain.header("content-type").unwrap_or_default().to_string();
        let want = match path {
            "/" => "text/html",
            p if p.ends_with(".js") => "text/javascript",
            _ => "text/css",
        };
        assert!(ct.starts_with(want), "{path}: Content-Type {ct:?}");

        let gz = http::get_with(&addr, path, &["Accept-Encoding: gzip, deflate, br"]);
        assert_eq!(gz.status, 200, "{path} (gzip)");
        assert_content_length(path, &gz);
        assert_eq!(
            gz.header("content-encoding"),
            Some("gzip"),
            "{path}: Content-Encoding"
        );
        assert_eq!(
            gz.header("content-type").unwrap_or_default(),
            ct,
            "{path}: gzip Content-Type"
        );
        assert!(
            gz.body.len() < plain.body.len(),
            "{path}: gzip body is not smaller"
        );
        assert!(
            gunzip(&gz.body) == plain.body,
            "{path}: gunzipped body differs from the plain one"
        );
    }
    let html = http::get(&addr, "/").text();
    assert!(
        html.to_ascii_lowercase().contains("<!doctype html>"),
        "/ is not an HTML page"
    );
}

#[test]
fn healthz_and_unknown_path() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let r = http::get(&addr, "/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim_end(), "ok");
    assert_content_length("/healthz", &r);

    for path in ["/nope", "/assets/nope.js", "/assets/../Cargo.toml"] {
        let r = http::get(&addr, path);
        assert_json_error(&r, 404, None, path);
        assert_content_length(path, &r);
    }
}

#[test]
fn keep_alive_and_connection_close() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();

    // Two requests, then a third with Connection: close, all on one connection.
    let mut r = BufReader::new(http::connect(&addr));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).unwrap();
    let a = http::read_response(&mut r).expect("first response");
    assert_eq!((a.status, a.text().trim_end()), (200, "ok"));
    r.get_mut()
        .write_all(format!("GET /assets/xterm.css HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let b = http::read_response(&mut r).expect("second response on the same connection");
    assert_eq!(b.status, 200);
    assert_content_length("/assets/xterm.css", &b);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).unwrap();
    let c = http::read_response(&mut r).expect("third response");
    assert_eq!(c.status, 200);
    let mut rest = Vec::new();
    r.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = r
        .read_to_end(&mut rest)
        .expect("server closes after Connection: close");
    assert_eq!(
        n,
        0,
        "bytes after the last response: {:?}",
        String::from_utf8_lossy(&rest)
    );

    // Pipelined: both requests in one write, answered in order.
    let mut r = BufReader::new(http::connect(&addr));
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\nGET /nope HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    r.get_mut().write_all(req.as_bytes()).unwrap();
    assert_eq!(
        http::read_response(&mut r).expect("pipelined 1").status,
        200
    );
    assert_eq!(
        http::read_response(&mut r).expect("pipelined 2").status,
        404
    );
}

#[test]
fn garbage_request_gets_400_and_close() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut s = http::connect(&addr);
    s.write_all(b"\x00\x01\x02 this is not http\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let resp = http::read_response(&mut r).expect("a response to garbage");
    assert_json_error(&resp, 400, None, "garbage");
    assert!(
        http::closed_within(r.get_mut(), Duration::from_secs(5)),
        "connection left open after 400"
    );
    assert_healthy(&addr);
}

#[test]
fn oversized_heads_are_refused() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();

    // One header line that pushes the head past 8 KiB.
    let big = "a".repeat(9000);
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: {big}\r\n\r\n");
    let r = http::raw_request(&addr, req.as_bytes()).expect(
        "a response to an oversized head (not a reset: the server should drain or half-close)",
    );
    assert!(
        matches!(r.status, 413 | 431),
        "oversized head: status {} {}",
        r.status,
        r.text()
    );
    assert_json_error(&r, r.status, None, "oversized head");
    assert_healthy(&addr);

    // Too many headers, though the head is small.
    let mut req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = http::raw_request(&addr, req.as_bytes()).expect("a response to 40 headers");
    assert_json_error(&r, 431, None, "40 headers");
    assert_healthy(&addr);

    // A request line alone over 8 KiB.
    let req = format!("GET /{big} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let r = http::raw_request(&addr, req.as_bytes()).expect("a response to a long request line");
    assert!(
        matches!(r.status, 413 | 414 | 431),
        "long request line: status {} {}",
        r.status,
        r.text()
    );
    assert_json_error(&r, r.status, None, "long request line");
    assert_healthy(&addr);

    // A head that never ends is cut off at the limit, not buffered without bound.
    let mut s = http::connect(&addr);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .unwrap();
    let line = format!("X-Pad: {}\r\n", "b".repeat(1000));
    for _ in 0..64 {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    let mut r = BufReader::new(s);
    match http::read_response(&mut r) {
        Ok(resp) => assert!(
            matches!(resp.status, 413 | 431),
            "endless head: status {}",
            resp.status
        ),
        // A reset after the server gave up is acceptable here: what matters is that it did.
        Err(e) => assert!(
            !is_timeout(&e),
            "endless head: no answer and no close within the read timeout"
        ),
    }
    assert_healthy(&addr);
}

/// `--header-timeout` is a total deadline for a request head: trickling bytes does not extend
/// it, other clients are served meanwhile, and each keep-alive request gets a fresh one.
#[test]
fn request_head_timeout_is_total_and_per_request() {
    let srv = spawn_server(&["--header-timeout", "1s"]);
    let addr = srv.addr();
    let start = std::time::Instant::now();

    // A slowloris: one header byte every 150 ms, never finishing.
    let mut slow = http::connect(&addr);
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .unwrap();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            http::get(&addr, "/healthz").status,
            200,
            "others are served"
        );
        if slow.write_all(b"a").is_err() || http::closed_within(&mut slow, Duration::from_millis(1))
        {
            closed = true;
            break;
        }
    }
    let took = start.elapsed();
    assert!(closed, "a trickled head was never cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut off after {took:?}, expected about 1 s"
    );

    // Keep-alive: three requests 600 ms apart on one connection, each within its own 1 s.
    let mut s = http::connect(&addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(600));
        }
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let resp = http::read_response(&mut r).expect("keep-alive response");
        assert_eq!(resp.status, 200, "request {i}");
    }
    // ...and an idle keep-alive connection is closed once its next head is overdue.
    assert!(
        http::closed_within(&mut s, Duration::from_secs(3)),
        "idle keep-alive connection kept open"
    );
}

/// The Host allowlist (against DNS rebinding) and the Origin check on the upgrade path.
#[test]
fn host_allowlist_and_cross_site_upgrade() {
    let srv = spawn_server(&["--allow-host", "box.lan"]);
    let addr = srv.addr();
    let port = srv.port;
    let with_host = |host: &str, path: &str, extra: &str| {
        let raw =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
        http::raw_request(&addr, raw.as_bytes()).expect("response")
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        // IP literals cannot be rebound, and are how a LAN reaches a box on 0.0.0.0.
        format!("192.168.1.5:{port}"),
        format!("box.lan:{port}"),
        "BOX.LAN".to_string(),
    ] {
        assert_eq!(with_host(&host, "/healthz", "").status, 200, "Host {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("box.lan.evil.example:{port}"),
    ] {
        let r = with_host(&host, "/", "");
        assert_eq!(r.status, 403, "Host {host}");
        assert_eq!(r.json()["error"], "forbidden", "Host {host}");
    }
    let missing = http::raw_request(&addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(missing.status, 400);

    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cross = with_host(
        &addr,
        "/ws?new=1",
        &format!("{upgrade}Origin: http://evil.example\r\n"),
    );
    assert_eq!(
        cross.status, 403,
        "cross-site WebSocket hijacking must fail"
    );
    let null = with_host(&addr, "/ws?new=1", &format!("{upgrade}Origin: null\r\n"));
    assert_eq!(null.status, 403);
    assert!(
        srv.admin_sessions()["sessions"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a refused upgrade started a session"
    );
}
