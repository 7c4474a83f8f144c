//! File transfers (issue 19): upload into and download from a session's directory over the
//! session's HTTP routes, against the real binary. Byte-exact 50 MB both ways while another
//! session's echo keeps answering (its latency printed, never asserted); the upload cap; the
//! transfer timeout; a dropped upload; `exists` and overwrite; body framing; `..` and
//! symlinks; another user's token; single-use tickets; one transfer per session; and, as
//! root, the session user's rights rather than keepty's.

mod common;

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::auth::TempDir;
use common::http::{self, Response};
use common::support::{Canary, assert_json_error};
use common::ws::{self, WAIT, Ws};
use common::{Server, spawn_server};

const ALICE: &str = "alice-Qw8Zr2Lk5Tn9Vb3Mx7Pc";
const BOB: &str = "bob-Hs4Jd6Fg1Ky0Ua2Ie5Wo9";

fn server(args: &[&str]) -> Server {
    let mut all = args.to_vec();
    all.extend(["--", common::sh()]);
    spawn_server(&all)
}

/// Percent-encodes a path for `path=`.
fn q(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A session `id` whose shell sits in `dir`.
fn session_in(srv: &Server, id: &str, dir: &Path, extra: &[(&str, &str)]) -> Ws {
    let mut c = ws::try_connect_with(
        srv.port,
        &format!("session={id}&new=1"),
        Some("keepty.v1"),
        extra,
    )
    .unwrap_or_else(|e| panic!("session {id}: {e}"));
    c.expect_attached();
    c.send_input(format!("cd '{}' && echo in-$((40+2))\n", dir.display()).as_bytes());
    c.read_output_until(b"in-42", WAIT);
    c
}

/// A request head for `method path` with `extra` header lines and, for a body, its length.
fn head(srv: &Server, method: &str, path: &str, length: Option<u64>, extra: &[&str]) -> String {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        srv.addr()
    );
    if let Some(n) = length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    for e in extra {
        h.push_str(e);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

fn put(srv: &Server, id: &str, path: &str, body: &[u8], extra: &[&str]) -> Response {
    let mut raw = head(
        srv,
        "PUT",
        &format!("/api/sessions/{id}/files?path={}", q(path)),
        Some(body.len() as u64),
        extra,
    )
    .into_bytes();
    raw.extend_from_slice(body);
    http::raw_request(&srv.addr(), &raw).expect("PUT answered")
}

fn get(srv: &Server, path: &str, extra: &[&str]) -> Response {
    let raw = head(srv, "GET", path, None, extra);
    http::raw_request(&srv.addr(), raw.as_bytes()).expect("GET answered")
}

fn post(srv: &Server, path: &str, extra: &[&str]) -> Response {
    let raw = head(srv, "POST", path, Some(0), extra);
    http::raw_request(&srv.addr(), raw.as_bytes()).expect("POST answered")
}

fn download(srv: &Server, id: &str, path: &str, extra: &[&str]) -> Response {
    get(
        srv,
        &format!("/api/sessions/{id}/files?path={}", q(path)),
        extra,
    )
}

/// Temporary upload files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".keepty-upload-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until no temporary upload file is left in `dir`.
fn no_leftovers_within(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if leftovers(dir).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    leftovers(dir).is_empty()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `n` bytes that do not repeat in any short period (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `work` on a thread while the canary echoes in a loop; the echo times, sorted.
fn echo_during<T: Send + 'static>(
    canary: &mut Canary,
    work: impl FnOnce() -> T + Send + 'static,
) -> (T, Vec<Duration>) {
    let t = std::thread::spawn(work);
    let mut times = Vec::new();
    while !t.is_finished() {
        times.push(canary.alive("a transfer step"));
    }
    times.sort();
    (t.join().expect("transfer thread"), times)
}

#[test]
fn fifty_megabytes_up_and_down_are_byte_exact_while_another_session_echoes() {
    let dir = TempDir::new("files-big");
    let srv = server(&["--max-upload", "64M"]);
    let mut canary = Canary::open_with(&srv, Duration::from_secs(5));
    let _c = session_in(&srv, "big", &dir.0, &[]);
    let src = dir.path("source.bin");
    fs::write(&src, noise(50 << 20)).unwrap();
    let want = sha256(&src);
    // The same echo with nothing else going on, for comparison.
    let mut idle: Vec<Duration> = (0..200).map(|_| canary.alive("idle")).collect();
    idle.sort();

    let (addr, port) = (srv.addr(), srv.port);
    let body = fs::read(&src).unwrap();
    let ((resp, up_took), up_times) = echo_during(&mut canary, move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let h = format!(
            "PUT /api/sessions/big/files?path=uploaded.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(h.as_bytes()).unwrap();
        for chunk in body.chunks(256 << 10) {
            s.write_all(chunk).unwrap();
        }
        let r = http::read_response(&mut BufReader::new(s)).unwrap();
        (r, started.elapsed())
    });
    assert_eq!(resp.status, 201, "{}", resp.text());
    let v = resp.json();
    let dest = dir.path("uploaded.bin");
    assert_eq!(
        v["path"],
        dest.to_str().unwrap(),
        "relative to the shell's cwd"
    );
    assert_eq!(v["size"], 50u64 << 20);
    assert_eq!(sha256(&dest), want, "uploaded byte-exact");
    assert!(leftovers(&dir.0).is_empty());
    let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "0666 & ~022");

    let addr = srv.addr();
    let dest_q = q(dest.to_str().unwrap());
    let ((resp, down_took), down_times) = echo_during(&mut canary, move || {
        let started = Instant::now();
        let raw = format!(
            "GET /api/sessions/big/files?path={dest_q} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        let r = http::raw_request(&addr, raw.as_bytes()).unwrap();
        (r, started.elapsed())
    });
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        resp.header("content-disposition"),
        Some("attachment; filename=\"uploaded.bin\"")
    );
    let back = dir.path("downloaded.bin");
    fs::write(&back, &resp.body).unwrap();
    assert_eq!(sha256(&back), want, "downloaded byte-exact");
    for (what, took) in [("upload", up_took), ("download", down_took)] {
        eprintln!(
            "measurement: 50 MiB {what} took {took:?} ({:.0} MiB/s)",
            50.0 / took.as_secs_f64()
        );
    }
    for (what, t) in [
        ("no transfer (baseline)", &idle),
        ("50 MiB upload", &up_times),
        ("50 MiB download", &down_times),
    ] {
        eprintln!(
            "measurement: echo of another session, {what}: {} echoes, p50 {:?}, p99 {:?}, max {:?}",
            t.len(),
            percentile(t, 0.5),
            percentile(t, 0.99),
            t.last().copied().unwrap_or_default()
        );
    }
}

#[test]
fn the_cap_refuses_before_a_byte_is_written() {
    let dir = TempDir::new("files-cap");
    let srv = server(&["--max-upload", "1K"]);
    let _c = session_in(&srv, "cap", &dir.0, &[]);
    let r = put(&srv, "cap", "big.bin", &[7u8; 2048], &[]);
    assert_json_error(&r, 413, Some("too_large"), "over --max-upload");
    assert!(!dir.path("big.bin").exists());
    assert!(leftovers(&dir.0).is_empty());
    let r = put(&srv, "cap", "ok.bin", &[7u8; 1024], &[]);
    assert_eq!(r.status, 201, "at the cap: {}", r.text());
    // A length no file system holds is refused as well, not overflowed.
    let raw = head(
        &srv,
        "PUT",
        "/api/sessions/cap/files?path=x",
        None,
        &["Content-Length: 99999999999999999999"],
    );
    let r = http::raw_request(&srv.addr(), raw.as_bytes()).unwrap();
    assert_json_error(&r, 400, Some("bad_request"), "a length past u64");
}

#[test]
fn a_stalled_upload_is_closed_by_the_timeout_and_leaves_no_file() {
    let dir = TempDir::new("files-stall");
    let srv = server(&["--transfer-timeout", "1s"]);
    let _c = session_in(&srv, "stall", &dir.0, &[]);
    let mut s = http::connect(&srv.addr());
    let h = head(
        &srv,
        "PUT",
        "/api/sessions/stall/files?path=slow.bin",
        Some(1000),
        &[],
    );
    s.write_all(h.as_bytes()).unwrap();
    s.write_all(&[1u8; 100]).unwrap();
    // The temporary file exists while the body comes.
    let deadline = Instant::now() + WAIT;
    while leftovers(&dir.0).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(leftovers(&dir.0).len(), 1, "written under a temporary name");
    let started = Instant::now();
    assert!(
        http::closed_within(&mut s, Duration::from_secs(10)),
        "closed after the transfer timeout"
    );
    eprintln!("closed after {:?} without progress", started.elapsed());
    assert!(no_leftovers_within(&dir.0, WAIT), "{:?}", leftovers(&dir.0));
    assert!(!dir.path("slow.bin").exists());
    assert!(
        srv.stderr_lines()
            .iter()
            .any(|l| l.contains("made no progress in time"))
    );
}

#[test]
fn a_dropped_upload_leaves_no_file() {
    let dir = TempDir::new("files-drop");
    let srv = server(&[]);
    let _c = session_in(&srv, "drop", &dir.0, &[]);
    let mut s = http::connect(&srv.addr());
    let h = head(
        &srv,
        "PUT",
        "/api/sessions/drop/files?path=cut.bin",
        Some(1 << 20),
        &[],
    );
    s.write_all(h.as_bytes()).unwrap();
    s.write_all(&[2u8; 300 << 10]).unwrap();
    let deadline = Instant::now() + WAIT;
    while leftovers(&dir.0).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(leftovers(&dir.0).len(), 1);
    drop(s);
    assert!(no_leftovers_within(&dir.0, WAIT), "{:?}", leftovers(&dir.0));
    assert!(!dir.path("cut.bin").exists());
    // The session takes the next transfer: nothing is left busy.
    let r = put(&srv, "drop", "next.bin", b"next", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn an_existing_file_needs_overwrite_and_keeps_its_mode() {
    let dir = TempDir::new("files-exists");
    let srv = server(&[]);
    let _c = session_in(&srv, "ex", &dir.0, &[]);
    let f = dir.path("conf");
    fs::write(&f, b"old").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let r = put(&srv, "ex", "conf", b"new", &[]);
    assert_json_error(&r, 409, Some("exists"), "no overwrite=1");
    assert_eq!(fs::read(&f).unwrap(), b"old");
    let raw_path = "/api/sessions/ex/files?path=conf&overwrite=1";
    let mut raw = head(&srv, "PUT", raw_path, Some(3), &[]).into_bytes();
    raw.extend_from_slice(b"new");
    let r = http::raw_request(&srv.addr(), &raw).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(fs::read(&f).unwrap(), b"new");
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600,
        "the replaced file's mode"
    );
    // A directory, or a path ending in /, is not a file to write.
    fs::create_dir(dir.path("sub")).unwrap();
    assert_json_error(
        &put(&srv, "ex", "sub", b"x", &[]),
        400,
        Some("is_directory"),
        "a dir",
    );
    assert_json_error(
        &put(&srv, "ex", "new/", b"x", &[]),
        400,
        Some("is_directory"),
        "dir/",
    );
    assert_json_error(
        &put(&srv, "ex", "missing/x", b"x", &[]),
        404,
        Some("not_found"),
        "no parent",
    );
    // And a download of a directory or a fifo is not a file.
    assert_json_error(
        &download(&srv, "ex", "sub", &[]),
        400,
        Some("not_a_file"),
        "dir",
    );
    let fifo = dir.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert_json_error(
        &download(&srv, "ex", "fifo", &[]),
        400,
        Some("not_a_file"),
        "fifo",
    );
    assert_json_error(
        &download(&srv, "ex", "nope", &[]),
        404,
        Some("not_found"),
        "absent",
    );
    // Every helper was reaped, and none of their exits was taken for the session's.
    let deadline = Instant::now() + WAIT;
    while !common::proc::zombies(srv.child.id()).is_empty() {
        assert!(Instant::now() < deadline, "helpers left as zombies");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = srv.session_record("ex").expect("the session is listed");
    assert_eq!(rec["state"], "running", "{rec}");
}

#[test]
fn a_body_needs_one_plain_content_length() {
    let dir = TempDir::new("files-framing");
    let srv = server(&[]);
    let _c = session_in(&srv, "fr", &dir.0, &[]);
    let path = "/api/sessions/fr/files?path=f";
    let ask = |extra: &[&str], body: &[u8]| {
        let mut raw = head(&srv, "PUT", path, None, extra).into_bytes();
        raw.extend_from_slice(body);
        http::raw_request(&srv.addr(), &raw).unwrap()
    };
    assert_json_error(&ask(&[], b""), 411, Some("length_required"), "no length");
    assert_json_error(
        &ask(&["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        411,
        Some("length_required"),
        "chunked",
    );
    assert_json_error(
        &ask(
            &["Transfer-Encoding: chunked", "Content-Length: 3"],
            b"3\r\nabc\r\n0\r\n\r\n",
        ),
        400,
        Some("bad_request"),
        "both framings",
    );
    assert_json_error(
        &ask(&["Content-Length: 3", "Content-Length: 3"], b"abc"),
        400,
        Some("bad_request"),
        "two lengths",
    );
    assert_json_error(
        &ask(&["Content-Length: -1"], b""),
        400,
        Some("bad_request"),
        "negative",
    );
    let mut raw = head(&srv, "PUT", "/api/sessions/fr/files", Some(1), &[]).into_bytes();
    raw.push(b'x');
    let r = http::raw_request(&srv.addr(), &raw).unwrap();
    assert_json_error(&r, 400, Some("bad_request"), "no path");
    // Lengths 0 and N: refused and closed, so the N bytes are never read as a request.
    let smuggled = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr());
    let mut s = http::connect(&srv.addr());
    let h = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
        srv.addr(),
        smuggled.len()
    );
    s.write_all(h.as_bytes()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one answer: {text}");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // A NUL in the path never reaches a system call.
    let mut raw = head(
        &srv,
        "PUT",
        "/api/sessions/fr/files?path=a%00b",
        Some(1),
        &[],
    )
    .into_bytes();
    raw.push(b'x');
    let r = http::raw_request(&srv.addr(), &raw).unwrap();
    assert_json_error(&r, 400, Some("bad_request"), "NUL");
    assert!(!dir.path("f").exists() && !dir.path("a").exists());
    assert!(leftovers(&dir.0).is_empty());
}

#[test]
fn dot_dot_and_symlinks_resolve_as_the_shell_would() {
    let dir = TempDir::new("files-paths");
    fs::create_dir(dir.path("a")).unwrap();
    fs::create_dir(dir.path("b")).unwrap();
    fs::write(dir.path("b/real.txt"), b"real contents").unwrap();
    std::os::unix::fs::symlink(dir.path("b/real.txt"), dir.path("a/link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path("b"), dir.path("a/to-b")).unwrap();
    let srv = server(&[]);
    let _c = session_in(&srv, "paths", &dir.path("a"), &[]);
    // The cwd route names the shell's directory.
    let r = get(&srv, "/api/sessions/paths/cwd", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cwd"], dir.path("a").to_str().unwrap());
    // `..` climbs from the shell's directory; a symlink is followed as the user's cat would.
    let r = download(&srv, "paths", "../b/real.txt", &[]);
    assert_eq!(r.body, b"real contents");
    let r = download(&srv, "paths", "link.txt", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"real contents"[..]));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"link.txt\"")
    );
    let r = put(&srv, "paths", "to-b/../up.txt", b"up", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    // The kernel resolves `to-b/..` through the link: b's parent, as `echo > to-b/../up.txt`.
    assert_eq!(fs::read(dir.path("up.txt")).unwrap(), b"up");
    // An upload onto a planted symlink replaces the link and never writes through it.
    let victim = dir.path("b/victim");
    std::os::unix::fs::symlink(&victim, dir.path("a/trap")).unwrap();
    assert_json_error(
        &put(&srv, "paths", "trap", b"x", &[]),
        409,
        Some("exists"),
        "a link",
    );
    let raw_path = "/api/sessions/paths/files?path=trap&overwrite=1";
    let mut raw = head(&srv, "PUT", raw_path, Some(5), &[]).into_bytes();
    raw.extend_from_slice(b"trap!");
    let r = http::raw_request(&srv.addr(), &raw).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!victim.exists(), "nothing written through the link");
    assert!(
        !fs::symlink_metadata(dir.path("a/trap"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A non-ASCII name is offered with its UTF-8 form too.
    fs::write(dir.path("a/résumé.txt"), b"cv").unwrap();
    let r = download(&srv, "paths", "résumé.txt", &[]);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt")
    );
}

#[test]
fn only_the_owner_of_a_running_session_may_transfer() {
    let dir = TempDir::new("files-owner");
    let users = dir.write("users", &format!("alice {ALICE}\nbob {BOB}\n"), 0o600);
    let srv = server(&["--token-file", &users]);
    let alice = format!("Bearer {ALICE}");
    let _c = session_in(&srv, "hers", &dir.0, &[("Authorization", alice.as_str())]);
    fs::write(dir.path("secret"), b"alice's").unwrap();
    let as_alice = format!("Authorization: Bearer {ALICE}");
    let as_bob = format!("Authorization: Bearer {BOB}");
    let r = download(&srv, "hers", "secret", &[&as_alice]);
    assert_eq!(r.body, b"alice's");
    for (r, what) in [
        (download(&srv, "hers", "secret", &[&as_bob]), "download"),
        (put(&srv, "hers", "planted", b"x", &[&as_bob]), "upload"),
        (get(&srv, "/api/sessions/hers/cwd", &[&as_bob]), "cwd"),
        (
            post(
                &srv,
                "/api/sessions/hers/files/ticket?path=secret",
                &[&as_bob],
            ),
            "ticket",
        ),
    ] {
        assert_json_error(&r, 403, Some("forbidden"), what);
    }
    assert!(!dir.path("planted").exists());
    assert_json_error(
        &download(&srv, "hers", "secret", &[]),
        401,
        None,
        "no token",
    );
    assert_json_error(
        &download(&srv, "nosuch", "secret", &[&as_alice]),
        404,
        Some("unknown_session"),
        "unknown id",
    );
    // Another site's page cannot make the browser upload, whatever token it holds.
    let r = put(
        &srv,
        "hers",
        "x",
        b"x",
        &[&as_alice, "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = put(
        &srv,
        "hers",
        "x",
        b"x",
        &[&as_alice, "Origin: http://evil.example"],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!dir.path("x").exists());
    // A dropped session is not running.
    let r = http::request(&srv.addr(), "POST", "/admin/drop?id=hers", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_json_error(
        &download(&srv, "hers", "secret", &[&as_alice]),
        409,
        Some("not_running"),
        "dropped",
    );
}

#[test]
fn a_ticket_downloads_once_without_a_token() {
    let dir = TempDir::new("files-ticket");
    let users = dir.write("users", &format!("alice {ALICE}\n"), 0o600);
    let srv = server(&["--token-file", &users]);
    let alice = format!("Bearer {ALICE}");
    let _c = session_in(&srv, "t", &dir.0, &[("Authorization", alice.as_str())]);
    fs::write(dir.path("log.txt"), b"the log").unwrap();
    let auth = format!("Authorization: {alice}");
    let r = post(&srv, "/api/sessions/t/files/ticket?path=log.txt", &[&auth]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["size"].as_u64()),
        (Some("log.txt"), Some(7))
    );
    let url = v["url"].as_str().unwrap().to_string();
    let ticket = url.strip_prefix("/api/files/").unwrap().to_string();
    assert_eq!(ticket.len(), 43, "32 random bytes in base64url");
    let r = get(&srv, &url, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"the log"[..]));
    assert_json_error(&get(&srv, &url, &[]), 404, Some("unknown_ticket"), "used");
    assert_json_error(
        &get(
            &srv,
            "/api/files/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &[],
        ),
        404,
        Some("unknown_ticket"),
        "made up",
    );
    // A ticket is only for what checks out now; a GET does not issue one.
    assert_json_error(
        &post(&srv, "/api/sessions/t/files/ticket?path=nope", &[&auth]),
        404,
        Some("not_found"),
        "absent",
    );
    assert_eq!(
        get(&srv, "/api/sessions/t/files/ticket?path=log.txt", &[&auth]).status,
        405
    );
    assert!(
        !srv.stderr_lines().iter().any(|l| l.contains(&ticket)),
        "a ticket is never logged"
    );
}

#[test]
fn a_second_transfer_of_a_session_is_busy() {
    let dir = TempDir::new("files-busy");
    let srv = server(&[]);
    let _one = session_in(&srv, "one", &dir.0, &[]);
    let _two = session_in(&srv, "two", &dir.0, &[]);
    let mut s = http::connect(&srv.addr());
    let h = head(
        &srv,
        "PUT",
        "/api/sessions/one/files?path=first",
        Some(10),
        &[],
    );
    s.write_all(h.as_bytes()).unwrap();
    s.write_all(b"12345").unwrap();
    let deadline = Instant::now() + WAIT;
    while leftovers(&dir.0).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_json_error(
        &put(&srv, "one", "second", b"x", &[]),
        409,
        Some("busy"),
        "same session",
    );
    assert_json_error(
        &download(&srv, "one", "first", &[]),
        409,
        Some("busy"),
        "a download too",
    );
    // The page asks for the directory while an upload runs: that is not a transfer.
    let r = get(&srv, "/api/sessions/one/cwd", &[]);
    assert_eq!(r.status, 200, "cwd beside an upload: {}", r.text());
    let r = put(&srv, "two", "other", b"x", &[]);
    assert_eq!(
        r.status,
        201,
        "another session is not held up: {}",
        r.text()
    );
    s.write_all(b"67890").unwrap();
    let r = http::read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(fs::read(dir.path("first")).unwrap(), b"1234567890");
    let r = put(&srv, "one", "second", b"x", &[]);
    assert_eq!(r.status, 201, "free again: {}", r.text());
}

#[test]
fn head_answers_the_headers_only() {
    let dir = TempDir::new("files-head");
    let srv = server(&[]);
    let _c = session_in(&srv, "h", &dir.0, &[]);
    fs::write(dir.path("f"), vec![9u8; 1000]).unwrap();
    let mut s = http::connect(&srv.addr());
    s.write_all(head(&srv, "HEAD", "/api/sessions/h/files?path=f", None, &[]).as_bytes())
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body: {text}");
}

// ---- as another account (root only) ------------------------------------------------------

const CAROL: &str = "carol-Vz3Lq8Rt1Mw6Np0Xs4Ke";

/// A world-readable directory (nobody must reach into it), removed on drop.
struct OpenDir(PathBuf);

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn as_root_a_session_of_nobody_has_nobody_s_rights() {
    if common::skip_under_runner(
        "as_root_a_session_of_nobody_has_nobody_s_rights",
        "switching accounts goes through the emulator's own forks",
    ) {
        return;
    }
    if !common::is_root() || !common::have_nobody() {
        eprintln!("skipped: needs root and a nobody user (uid 65534)");
        return;
    }
    let base =
        OpenDir(std::env::temp_dir().join(format!("keepty-files-acct-{}", std::process::id())));
    let _ = fs::remove_dir_all(&base.0);
    fs::create_dir(&base.0).unwrap();
    fs::set_permissions(&base.0, fs::Permissions::from_mode(0o755)).unwrap();
    // Root's: nobody may enter but not write, and a file only root may read.
    let closed = base.0.join("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
    let secret = base.0.join("secret");
    fs::write(&secret, b"root only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    // Nobody's own directory, with a symlink to the secret planted in it.
    let mine = base.0.join("mine");
    fs::create_dir(&mine).unwrap();
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&secret, mine.join("link")).unwrap();

    let users = base.0.join("users");
    fs::write(&users, format!("carol {CAROL} - nobody\n")).unwrap();
    fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).unwrap();
    let srv = server(&["--token-file", users.to_str().unwrap()]);
    let auth = format!("Bearer {CAROL}");
    let _c = session_in(&srv, "nob", &mine, &[("Authorization", auth.as_str())]);
    let h = format!("Authorization: {auth}");

    let r = put(&srv, "nob", closed.join("f").to_str().unwrap(), b"x", &[&h]);
    assert_json_error(
        &r,
        403,
        Some("permission_denied"),
        "a directory nobody cannot write",
    );
    assert!(!closed.join("f").exists() && leftovers(&closed).is_empty());
    let r = download(&srv, "nob", "link", &[&h]);
    assert_json_error(
        &r,
        403,
        Some("permission_denied"),
        "a link to a root-only file",
    );
    assert_json_error(
        &download(&srv, "nob", secret.to_str().unwrap(), &[&h]),
        403,
        Some("permission_denied"),
        "the root-only file itself",
    );
    // What nobody may do works, and the file is nobody's.
    let r = put(&srv, "nob", "mine.txt", b"nobody's", &[&h]);
    assert_eq!(r.status, 201, "{}", r.text());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(mine.join("mine.txt")).unwrap().uid(), 65534);
    let r = get(&srv, "/api/sessions/nob/cwd", &[&h]);
    assert_eq!(r.json()["cwd"], mine.to_str().unwrap());

    // The shell execs su, set-uid root: at its password prompt the session's leader has
    // effective uid 0 and real uid nobody. The helper must still be nobody.
    let mut c = _c;
    c.send_input(b"exec su root\n");
    c.read_output_until(b"assword", WAIT);
    let r = put(&srv, "nob", closed.join("g").to_str().unwrap(), b"x", &[&h]);
    assert_json_error(
        &r,
        403,
        Some("permission_denied"),
        "a directory nobody cannot write, with su waiting",
    );
    assert!(!closed.join("g").exists() && leftovers(&closed).is_empty());
    assert_json_error(
        &download(&srv, "nob", secret.to_str().unwrap(), &[&h]),
        403,
        Some("permission_denied"),
        "the root-only file, with su waiting",
    );
}

#[test]
fn an_upgrade_ends_a_transfer_in_flight_and_leaves_no_file() {
    if common::skip_under_runner(
        "an_upgrade_ends_a_transfer_in_flight_and_leaves_no_file",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let dir = TempDir::new("files-upgrade");
    let srv = server(&[]);
    let _c = session_in(&srv, "up", &dir.0, &[]);
    let mut s = http::connect(&srv.addr());
    let h = head(
        &srv,
        "PUT",
        "/api/sessions/up/files?path=half.bin",
        Some(1 << 20),
        &[],
    );
    s.write_all(h.as_bytes()).unwrap();
    s.write_all(&[3u8; 64 << 10]).unwrap();
    let deadline = Instant::now() + WAIT;
    while leftovers(&dir.0).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(leftovers(&dir.0).len(), 1);
    const SIGUSR2: i32 = 12;
    srv.signal(SIGUSR2);
    assert!(
        http::closed_within(&mut s, WAIT),
        "the upload's connection is closed by the upgrade"
    );
    let deadline = Instant::now() + WAIT;
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("upgraded in place")) {
        assert!(Instant::now() < deadline, "no upgrade: {log:#?}");
        log.extend(srv.stderr_lines());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(no_leftovers_within(&dir.0, WAIT), "{:?}", leftovers(&dir.0));
    assert!(!dir.path("half.bin").exists());
    // The session survived the upgrade and takes a transfer from the new process.
    let r = put(&srv, "up", "after.bin", b"after", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_transfer_s_buffer_counts_against_the_memory_cap() {
    // 420K holds one session (4K ring + input queue), its WebSocket and one request, but not
    // a transfer's 68 KiB on top (src/limits.rs: TRANSFER_RESERVE).
    let dir = TempDir::new("files-memory");
    let srv = server(&["--scrollback", "4K", "--max-memory", "420K"]);
    let _c = session_in(&srv, "mem", &dir.0, &[]);
    let r = put(&srv, "mem", "f.bin", b"data", &[]);
    assert_json_error(&r, 503, Some("memory"), "past --max-memory");
    assert!(!dir.path("f.bin").exists() && leftovers(&dir.0).is_empty());
    assert_json_error(
        &download(&srv, "mem", "f.bin", &[]),
        503,
        Some("memory"),
        "a download too",
    );
}
