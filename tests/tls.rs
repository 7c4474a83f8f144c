//! HTTPS and wss:// (feature `tls`): a test CA signs the server's certificate; a rustls
//! client checks it. The page, a session with reconnect and replay, refused hellos that
//! leave other sessions alone, the head timeout over a stalled handshake, certificate reload
//! on SIGHUP, the self-signed pair and its fingerprint, HSTS and the https Origin.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use common::auth::TempDir;
use common::http::{self, Response};
use common::{Server, spawn_server};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A test CA and server certificates it signs, written as PEM files into a temp dir.
struct Pki {
    dir: TempDir,
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().der().clone();
        Pki {
            dir: TempDir::new("tls"),
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs a certificate for localhost and 127.0.0.1 and writes it and its key as
    /// `cert.pem`, `key.pem`. Returns the certificate.
    fn issue(&self) -> CertificateDer<'static> {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        self.dir.write("cert.pem", &cert.pem(), 0o644);
        self.dir.write("key.pem", &key.serialize_pem(), 0o600);
        cert.der().clone()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.dir.path("cert.pem").to_string_lossy().into_owned(),
            "--tls-key".into(),
            self.dir.path("key.pem").to_string_lossy().into_owned(),
        ]
    }

    fn spawn(&self, extra: &[&str]) -> Server {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_server(&args)
    }
}

fn client_config(anchor: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(anchor.clone()).unwrap();
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(cfg)
}

/// A TLS connection to the server as `localhost`, the handshake done (so certificate
/// errors show here).
fn tls_connect(port: u16, anchor: &CertificateDer<'static>) -> Tls {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client_config(anchor), name).unwrap();
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    }
    s
}

fn peer_cert(s: &Tls) -> CertificateDer<'static> {
    s.conn.peer_certificates().unwrap()[0].clone()
}

fn https_get(port: u16, anchor: &CertificateDer<'static>, path: &str, extra: &str) -> Response {
    let mut s = tls_connect(port, anchor);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    s.flush().unwrap();
    http::read_response(&mut BufReader::new(s)).unwrap()
}

fn sha256_hex(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A wss:// client of one session: the `attached` message, then output until `needle`.
struct Wss {
    ws: WebSocket<Tls>,
    attached: serde_json::Value,
    output: Vec<u8>,
}

impl Wss {
    fn connect(port: u16, anchor: &CertificateDer<'static>, query: &str) -> Wss {
        let s = tls_connect(port, anchor);
        let mut req = format!("wss://localhost:{port}/ws?{query}")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "keepty.v1".parse().unwrap());
        req.headers_mut().insert(
            "Origin",
            format!("https://localhost:{port}").parse().unwrap(),
        );
        let (mut ws, _) =
            tungstenite::client::client(req, s).unwrap_or_else(|e| panic!("wss handshake: {e}"));
        let attached = loop {
            match ws.read().unwrap() {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "attached", "first message: {v}");
                    break v;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                m => panic!("expected attached, got {m:?}"),
            }
        };
        Wss {
            ws,
            attached,
            output: Vec::new(),
        }
    }

    fn offset(&self) -> u64 {
        self.attached["offset"].as_u64().unwrap() + self.output.len() as u64
    }

    fn type_line(&mut self, line: &str) {
        self.ws
            .send(Message::binary(format!("{line}\n").into_bytes()))
            .unwrap();
    }

    /// Reads output until it holds `needle` `times` times.
    fn expect(&mut self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(&self.output, needle) < times {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {:?}",
                String::from_utf8_lossy(&self.output)
            );
            match self.ws.read().unwrap() {
                Message::Binary(b) => self.output.extend_from_slice(&b),
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                m => panic!("unexpected {m:?}"),
            }
        }
    }
}

fn count(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

fn wait_stderr(server: &Server, seen: &mut Vec<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        seen.extend(server.stderr_lines());
        if let Some(l) = seen.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in stderr: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn https_page_and_hsts() {
    let pki = Pki::new();
    pki.issue();
    let server = pki.spawn(&[]);
    let r = https_get(server.port, &pki.ca, "/", "Accept-Encoding: identity\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<html") || r.text().contains("<!doctype"));
    assert!(
        r.header("strict-transport-security")
            .is_some_and(|v| v.contains("max-age=")),
        "HSTS over TLS"
    );
    let r = https_get(server.port, &pki.ca, "/healthz", "");
    assert_eq!(r.text(), "ok\n");
    // Plain HTTP: no HSTS.
    let plain = spawn_server(&[]);
    let r = http::get(&plain.addr(), "/healthz");
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_none());
}

#[test]
fn startup_line_says_https() {
    let pki = Pki::new();
    pki.issue();
    let mut cmd = common::keepty();
    cmd.args(["--listen", "127.0.0.1:0"]).args(pki.args());
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = String::from_utf8(line).unwrap();
    assert!(
        line.starts_with("keepty listening on https://127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn wss_session_reconnect_and_replay() {
    let pki = Pki::new();
    pki.issue();
    let server = pki.spawn(&["--", common::sh()]);
    let mut a = Wss::connect(server.port, &pki.ca, "new=1&cols=80&rows=24");
    let id = a.attached["session"].as_str().unwrap().to_string();
    a.type_line("echo mark-$((40+2))");
    a.expect("mark-42", 1);
    let offset = a.offset();
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    // From the start: the whole output again, exactly.
    let mut b = Wss::connect(server.port, &pki.ca, &format!("session={id}&since=0"));
    assert_eq!(b.attached["offset"], 0);
    assert_eq!(b.attached["lost"], 0);
    b.expect("mark-42", 1);
    drop(b);
    // From where the first client stopped: only what came after, then new output.
    let mut c = Wss::connect(
        server.port,
        &pki.ca,
        &format!("session={id}&since={offset}"),
    );
    assert_eq!(c.attached["offset"], offset);
    c.type_line("echo again-$((6*7))");
    c.expect("again-42", 1);
    assert_eq!(count(&c.output, "mark-42"), 0, "no duplicate replay");
}

#[test]
fn bad_certificate_path_is_exit_2() {
    let out = common::keepty()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert /nonexistent/cert.pem"), "{err}");
    // A key without a certificate is a usage error too.
    let out = common::keepty().args(["--tls-key", "/x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn garbage_hello_closes_only_that_connection() {
    let pki = Pki::new();
    pki.issue();
    let server = pki.spawn(&["--", common::sh()]);
    let mut canary = Wss::connect(server.port, &pki.ca, "new=1");
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &b"\x16\x03\x01\x00\x10not a client hello at all"[..],
        &[0xffu8; 4096][..],
    ] {
        let mut s = http::connect(&server.addr());
        let _ = s.write_all(junk);
        assert!(
            http::closed_within(&mut s, Duration::from_secs(5)),
            "not closed after {:?}",
            String::from_utf8_lossy(&junk[..junk.len().min(20)])
        );
    }
    canary.type_line("echo alive-$((1+1))");
    canary.expect("alive-2", 1);
    let r = https_get(server.port, &pki.ca, "/healthz", "");
    assert_eq!(r.status, 200);
}

#[test]
fn stalled_handshake_meets_the_head_timeout() {
    let pki = Pki::new();
    pki.issue();
    let server = pki.spawn(&["--header-timeout", "1s"]);
    let mut s = http::connect(&server.addr());
    // The start of a handshake record, and nothing more.
    s.write_all(b"\x16\x03\x01\x01\x00\x01").unwrap();
    let t = Instant::now();
    assert!(http::closed_within(&mut s, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // A connection that never sends anything, too.
    let mut s = http::connect(&server.addr());
    assert!(http::closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn sighup_reloads_the_certificate() {
    let pki = Pki::new();
    let first = pki.issue();
    let server = pki.spawn(&[]);
    let mut seen = Vec::new();
    let old = tls_connect(server.port, &pki.ca);
    assert_eq!(peer_cert(&old), first);
    let second = pki.issue();
    assert_ne!(first, second);
    server.signal(1);
    let line = wait_stderr(&server, &mut seen, "TLS certificate reloaded");
    assert!(line.contains(&sha256_hex(&second)), "{line}");
    let s = tls_connect(server.port, &pki.ca);
    assert_eq!(
        peer_cert(&s),
        second,
        "a new connection sees the new certificate"
    );
    // A broken new certificate: the last good one stays.
    pki.dir.write("cert.pem", "not a certificate\n", 0o644);
    server.signal(1);
    wait_stderr(&server, &mut seen, "keeping the old TLS certificate");
    let s = tls_connect(server.port, &pki.ca);
    assert_eq!(peer_cert(&s), second);
    // The connection opened before the reload still works.
    let mut old = old;
    write!(
        old,
        "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        server.port
    )
    .unwrap();
    let r = http::read_response(&mut BufReader::new(old)).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn self_signed_is_made_once_and_fingerprinted() {
    let dir = TempDir::new("tls-self");
    let state = dir.path("state");
    let state_arg = state.to_string_lossy().into_owned();
    let args = ["--tls-self-signed", "--tls-dir", state_arg.as_str()];
    let fingerprint = |server: &Server, seen: &mut Vec<String>| -> String {
        let line = wait_stderr(server, seen, "fingerprint");
        line.rsplit(' ').next().unwrap().to_string()
    };
    let (fp1, pem1) = {
        let server = spawn_server(&args);
        let mut seen = Vec::new();
        let fp = fingerprint(&server, &mut seen);
        assert!(
            seen.iter()
                .any(|l| l.contains("made a self-signed TLS certificate"))
        );
        let pem = std::fs::read_to_string(state.join("tls-cert.pem")).unwrap();
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state.join("tls-key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(key_mode & 0o077, 0, "the key is private");
        // The served certificate is the stored one, and its fingerprint is the one printed.
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
        let s = tls_connect(server.port, &der);
        assert_eq!(sha256_hex(&peer_cert(&s)), fp);
        // No HSTS with a self-signed certificate (see README).
        let r = https_get(server.port, &der, "/healthz", "");
        assert!(r.header("strict-transport-security").is_none());
        (fp, pem)
    };
    let server = spawn_server(&args);
    let mut seen = Vec::new();
    assert_eq!(fingerprint(&server, &mut seen), fp1, "reused on restart");
    assert!(!seen.iter().any(|l| l.contains("made a self-signed")));
    assert_eq!(
        std::fs::read_to_string(state.join("tls-cert.pem")).unwrap(),
        pem1
    );
}

/// Sends an upgrade with `origin` over TLS; returns the status.
fn upgrade_status(port: u16, anchor: &CertificateDer<'static>, origin: &str) -> u16 {
    let mut s = tls_connect(port, anchor);
    write!(
        s,
        "GET /ws?new=1 HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: keepty.v1\r\nOrigin: {origin}\r\n\r\n"
    )
    .unwrap();
    s.flush().unwrap();
    http::read_response(&mut BufReader::new(s)).unwrap().status
}

#[test]
fn origin_is_https_on_the_tls_server() {
    let pki = Pki::new();
    pki.issue();
    let server = pki.spawn(&[]);
    let p = server.port;
    assert_eq!(
        upgrade_status(p, &pki.ca, &format!("https://localhost:{p}")),
        101
    );
    assert_eq!(
        upgrade_status(p, &pki.ca, &format!("HTTPS://LOCALHOST:{p}")),
        101
    );
    assert_eq!(
        upgrade_status(p, &pki.ca, &format!("http://localhost:{p}")),
        403
    );
    assert_eq!(upgrade_status(p, &pki.ca, "https://evil.example"), 403);
}

#[test]
fn plain_http_off_loopback_warns_and_tls_does_not() {
    let pki = Pki::new();
    pki.issue();
    let tokens = pki
        .dir
        .write("tokens", "alice tok-0123456789abcdef\n", 0o600);
    let plain = spawn_server(&["--listen", "0.0.0.0:0", "--token-file", &tokens]);
    let mut seen = Vec::new();
    wait_stderr(&plain, &mut seen, "WARNING: serving plain HTTP");
    let mut args = vec!["--listen", "0.0.0.0:0", "--token-file", &tokens];
    let tls_args = pki.args();
    args.extend(tls_args.iter().map(String::as_str));
    let server = spawn_server(&args);
    let mut seen = Vec::new();
    wait_stderr(&server, &mut seen, "fingerprint");
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(server.stderr_lines());
    assert!(!seen.iter().any(|l| l.contains("WARNING")), "{seen:#?}");
}

/// One client taking `mib` MiB of `base64` output from connect to `exited`: MiB/s and the
/// server's CPU seconds. `tls` picks wss:// over ws://.
fn flood(bin: &str, mib: u64, pki: Option<&Pki>) -> (f64, f64) {
    let script = format!("stty -opost; head -c {mib}M /dev/zero | base64");
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"]);
    if let Some(p) = pki {
        cmd.args(p.args());
    }
    cmd.args(["--", common::sh(), "-c", &script]);
    let server = common::spawn_cmd(cmd);
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        f.iter().sum::<f64>() / 100.0
    };
    let start = Instant::now();
    let cpu0 = cpu(server.child.id());
    let mut bytes = 0u64;
    let mut on_frame = |m: Message| -> bool {
        match m {
            Message::Binary(b) => bytes += b.len() as u64,
            Message::Text(t) if t.as_str().contains("\"exited\"") => return false,
            _ => {}
        }
        true
    };
    match pki {
        Some(p) => {
            let mut c = Wss::connect(server.port, &p.ca, "new=1");
            while on_frame(c.ws.read().unwrap()) {}
        }
        None => {
            let mut c = common::ws::connect(server.port, "new=1");
            while on_frame(c.sock.read().unwrap()) {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu(server.child.id()) - cpu0;
    (bytes as f64 / secs / (1 << 20) as f64, cpu)
}

/// Throughput with and without TLS, for docs/performance.md. Not a check (timing on a
/// shared machine): `KEEPTY_BIN=target/release/keepty cargo test --release --features tls
/// --test tls -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let bin = std::env::var("KEEPTY_BIN").unwrap_or_else(|_| common::bin().to_string());
    let mib = std::env::var("E2E_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let pki = Pki::new();
    pki.issue();
    for run in 1..=3 {
        let (plain, plain_cpu) = flood(&bin, mib, None);
        let (tls, tls_cpu) = flood(&bin, mib, Some(&pki));
        println!(
            "run {run}: ws:// {plain:.1} MiB/s (server CPU {plain_cpu:.2} s), wss:// {tls:.1} MiB/s (server CPU {tls_cpu:.2} s), {mib} MiB of base64"
        );
    }
}

/// An upgrade in place reads the certificate files again (the new process loads them as any
/// start does), tells wss:// clients `restarting` with 1012, and closes TLS connections in
/// flight (their rustls state cannot cross the exec); the session resumes over wss://.
#[test]
fn an_upgrade_reads_the_certificate_again_and_closes_tls_connections() {
    if common::skip_under_runner(
        "an_upgrade_reads_the_certificate_again_and_closes_tls_connections",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let pki = Pki::new();
    let first = pki.issue();
    let server = pki.spawn(&[]);
    let mut seen = Vec::new();
    let mut wss = Wss::connect(server.port, &pki.ca, "session=tls-up&new=1");
    wss.type_line("echo up-$((5*5))");
    wss.expect("up-25", 1);
    let mut idle = tls_connect(server.port, &pki.ca);
    assert_eq!(peer_cert(&idle), first);
    let second = pki.issue();
    server.signal(12); // SIGUSR2
    wait_stderr(&server, &mut seen, "upgraded in place");
    let mut told = false;
    let close = loop {
        match wss.ws.read() {
            Ok(Message::Text(t)) => told |= t.contains("\"restarting\""),
            Ok(Message::Binary(b)) => wss.output.extend_from_slice(&b),
            Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert!(told, "the client was told");
    assert_eq!(close, Some(1012));
    let mut buf = [0u8; 64];
    assert!(
        matches!(idle.read(&mut buf), Ok(0) | Err(_)),
        "the TLS connection in flight was closed"
    );
    let s = tls_connect(server.port, &pki.ca);
    assert_eq!(
        peer_cert(&s),
        second,
        "the new process read the new certificate"
    );
    let since = wss.offset();
    let mut back = Wss::connect(
        server.port,
        &pki.ca,
        &format!("session=tls-up&since={since}"),
    );
    assert_eq!(back.attached["lost"], 0);
    back.type_line("echo again-$((6*6))");
    back.expect("again-36", 1);
}

/// A file up and down over HTTPS (issue 19): the transfer states read and write through
/// rustls as a response does, byte-exact, with the session attached over wss.
#[test]
fn files_travel_over_https() {
    let pki = Pki::new();
    pki.issue();
    let dir = common::auth::TempDir::new("tls-files");
    let server = pki.spawn(&["--", common::sh()]);
    let mut a = Wss::connect(server.port, &pki.ca, "session=tf&new=1");
    a.type_line(&format!("cd '{}' && echo in-$((40+2))", dir.0.display()));
    a.expect("in-42", 1);
    // Not a multiple of any buffer: the last record is a short one.
    let body: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 253) as u8).collect();
    let port = server.port;
    let mut s = tls_connect(port, &pki.ca);
    write!(
        s,
        "PUT /api/sessions/tf/files?path=up.bin HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    s.flush().unwrap();
    let r = http::read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(std::fs::read(dir.path("up.bin")).unwrap(), body);
    let r = https_get(port, &pki.ca, "/api/sessions/tf/files?path=up.bin", "");
    assert_eq!(r.status, 200);
    assert!(
        r.header("strict-transport-security").is_some(),
        "HSTS on a download too"
    );
    assert_eq!(r.body, body, "downloaded byte-exact over TLS");
}
