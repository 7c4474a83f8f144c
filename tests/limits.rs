//! Hard limits (issue 3): `--max-sessions`, `--max-clients`, `--max-memory` and
//! `--max-pending` each turn the newcomer away cleanly and leave what exists alone; a flood
//! never pushes reserved memory past the cap; running out of file descriptors on `accept`
//! neither spins the loop nor wedges the server.

mod common;

use std::io::{self, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::http::{self, Response};
use common::proc::{connect_from, cpu_secs, rss_kib};
use common::spawn_server;
use common::support::echo_roundtrip;
use common::ws::{self, Msg, WAIT, Ws};

/// How an attach attempt was turned away.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the texts are read through Debug, in failure messages"
)]
enum Refusal {
    /// The upgrade got an HTTP error status (and this text after it).
    Http(u16, String),
    /// The WebSocket opened, then an error message (its code) and a Close (its code).
    Ws(String, Option<u16>),
    /// Closed or reset before any answer.
    Other(String),
}

fn attach_or_refusal(port: u16, query: &str) -> Result<(Ws, Value), Refusal> {
    let mut c = match ws::try_connect(port, query) {
        Ok(c) => c,
        Err(e) => {
            return Err(match e.strip_prefix("handshake refused: HTTP ") {
                Some(rest) => Refusal::Http(
                    rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0),
                    rest.to_string(),
                ),
                None => Refusal::Other(e),
            });
        }
    };
    match c.next_msg(WAIT) {
        Some(Msg::Text(v)) if v["type"] == "attached" => Ok((c, v)),
        Some(Msg::Text(v)) if v["type"] == "error" => {
            let code = v["code"].as_str().unwrap_or_default().to_string();
            let close = match c.next_msg(WAIT) {
                Some(Msg::Close(code, _)) => code,
                _ => None,
            };
            Err(Refusal::Ws(code, close))
        }
        other => Err(Refusal::Other(format!("{other:?}"))),
    }
}

/// Attaches, retrying while refused for memory: a connection the server has just closed
/// (this test's own admin request, say) may hold its reserve for a moment longer, so only a
/// refusal that persists for 1.5 s stands.
fn attach_when_room(port: u16, query: &str) -> Result<(Ws, Value), Refusal> {
    let start = Instant::now();
    loop {
        let got = attach_or_refusal(port, query);
        let for_memory = match &got {
            Err(Refusal::Http(503, _)) => true,
            Err(Refusal::Ws(code, _)) => code == "memory",
            _ => false,
        };
        if !for_memory || start.elapsed() > Duration::from_millis(1500) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The admin list, once there is room for the request's own connection (at a cap it is
/// refused like any other).
fn admin_when_room(addr: &str) -> Value {
    let start = Instant::now();
    loop {
        let got = try_get(addr, "/admin/sessions");
        match &got {
            Ok(r) if r.status == 200 => return r.json(),
            Ok(r) if r.status == 429 || r.status == 503 => {}
            Err(_) => {}
            Ok(r) => panic!("/admin/sessions: {} {}", r.status, r.text()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "/admin/sessions refused for 3 s: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until session `id` has no client.
fn wait_detached(addr: &str, id: &str) {
    let start = Instant::now();
    loop {
        let list = admin_when_room(addr);
        let clients = list["sessions"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == id))
            .map(|s| s["clients"].clone());
        if clients == Some(Value::from(0)) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "session {id} never detached: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET path` on a fresh connection, with short timeouts and errors returned, not raised.
fn try_get(addr: &str, path: &str) -> io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    http::read_response(&mut BufReader::new(s))
}

/// The answer to a request the server should refuse. A server that answers before reading
/// the request may reset the connection under it and lose its own answer; a few tries make
/// that race harmless.
fn refused_response(addr: &str, path: &str) -> Response {
    let mut errors = Vec::new();
    for _ in 0..3 {
        match try_get(addr, path) {
            Ok(r) => return r,
            Err(e) => errors.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {path}: no answer in 3 tries: {errors:?}")
}

fn assert_json_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
}

/// Polls `/healthz` until it answers 200.
fn wait_healthy(addr: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let got = try_get(addr, "/healthz");
        if matches!(&got, Ok(r) if r.status == 200) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "/healthz not 200 within {timeout:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn session_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn max_sessions_refuses_new_sessions_and_spares_the_rest() {
    let srv = spawn_server(&["--max-sessions", "2", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=ms-1&new=1");
    a.expect_attached();
    let mut b = ws::connect(srv.port, "session=ms-2&new=1");
    b.expect_attached();
    echo_roundtrip(&mut a, "a0");
    echo_roundtrip(&mut b, "b0");

    for q in ["session=ms-3&new=1", "new=1"] {
        let mut c = ws::connect(srv.port, q);
        c.expect_error("limit", 4429);
    }
    echo_roundtrip(&mut a, "a1");
    echo_roundtrip(&mut b, "b1");
    assert_eq!(session_ids(&srv.admin_sessions()), ["ms-1", "ms-2"]);

    // Attaching to an existing session is not a new one.
    let mut b2 = ws::connect(srv.port, "session=ms-2");
    b2.expect_attached();
    b.expect_close(4410);
    echo_roundtrip(&mut b2, "b2");

    // A session that ends makes room.
    b2.send_input(b"exit\n");
    let (_, texts, code) = b2.read_to_close(WAIT);
    assert_eq!(code, Some(1000), "{texts:?}");
    let start = Instant::now();
    while session_ids(&srv.admin_sessions()).len() > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the ended session is still counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = ws::connect(srv.port, "session=ms-3&new=1");
    c.expect_attached();
    echo_roundtrip(&mut c, "c0");
    echo_roundtrip(&mut a, "a2");
}

#[test]
fn max_clients_refuses_connections_and_spares_the_rest() {
    let srv = spawn_server(&["--max-clients", "2", "--", common::sh()]);
    let addr = srv.addr();
    let mut a = ws::connect(srv.port, "session=cl-1&new=1");
    a.expect_attached();
    let mut b = ws::connect(srv.port, "session=cl-2&new=1");
    b.expect_attached();
    echo_roundtrip(&mut a, "a0");
    echo_roundtrip(&mut b, "b0");

    let r = refused_response(&addr, "/healthz");
    assert_json_error(&r, 429, "limit");
    match attach_or_refusal(srv.port, "session=cl-3&new=1") {
        Err(Refusal::Http(429, _)) => {}
        Err(Refusal::Ws(code, Some(4429))) if code == "limit" => {}
        Err(other) => panic!("third client: expected 429 or limit/4429, got {other:?}"),
        Ok((_, att)) => panic!("third client attached past --max-clients 2: {att}"),
    }
    echo_roundtrip(&mut a, "a1");
    echo_roundtrip(&mut b, "b1");

    b.close();
    wait_healthy(&addr, Duration::from_secs(5));
    assert_eq!(
        session_ids(&admin_when_room(&addr)),
        ["cl-1", "cl-2"],
        "the refused client created a session"
    );
    echo_roundtrip(&mut a, "a2");
}

#[test]
fn max_memory_refuses_sessions_then_connections_and_spares_the_rest() {
    let cap = 1u64 << 20;
    let srv = spawn_server(&[
        "--max-memory",
        "1M",
        "--scrollback",
        "256K",
        "--",
        common::sh(),
    ]);
    let addr = srv.addr();
    let mut ids = Vec::new();
    let mut refused = false;
    for i in 0..6 {
        let id = format!("mem-{i}");
        match attach_when_room(srv.port, &format!("session={id}&new=1")) {
            Ok((mut c, _)) => {
                echo_roundtrip(&mut c, "m");
                c.close();
                wait_detached(&addr, &id);
                ids.push(id);
            }
            // The connection fitted and the session did not.
            Err(Refusal::Ws(code, close)) => {
                assert_eq!((code.as_str(), close), ("memory", Some(4503)));
                refused = true;
                break;
            }
            Err(other) => panic!("session {i}: expected memory/4503, got {other:?}"),
        }
    }
    assert!(refused, "6 sessions with 256 KiB rings fitted in 1 MiB");
    // A session reserves its ring and more, a connection some 200 KiB.
    assert!(
        (2..=3).contains(&ids.len()),
        "{} sessions fitted in 1 MiB with 256 KiB rings",
        ids.len()
    );
    let list = admin_when_room(&addr);
    assert_eq!(session_ids(&list), ids, "{list}");
    assert_eq!(list["memory"]["cap"], cap, "{list}");
    assert!(
        list["memory"]["reserved"].as_u64().unwrap() <= cap,
        "{list}"
    );

    // Connections past the cap get 503, and those already open keep working.
    let mut held = Vec::new();
    let mut got_503 = false;
    for id in &ids {
        match attach_when_room(srv.port, &format!("session={id}")) {
            Ok((c, _)) => held.push(c),
            Err(Refusal::Http(503, text)) => {
                assert!(text.contains("\"memory\""), "{text}");
                got_503 = true;
                break;
            }
            Err(other) => panic!("attach to {id}: {other:?}"),
        }
        let r = refused_response(&addr, "/healthz");
        if r.status == 503 {
            assert_json_error(&r, 503, "memory");
            got_503 = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        got_503,
        "{} connections fitted beside {} sessions",
        held.len() + 1,
        ids.len()
    );
    for (i, c) in held.iter_mut().enumerate() {
        echo_roundtrip(c, &format!("held{i}"));
    }
    drop(held);
    let list = admin_when_room(&addr);
    assert!(
        list["memory"]["reserved"].as_u64().unwrap() <= cap,
        "{list}"
    );
    assert_eq!(session_ids(&list), ids, "{list}");
    // Registers the session pids for the cleanup in Server's drop.
    srv.admin_sessions();
}

/// Reads the admin list's memory figures and the server's RSS and checks both against their
/// bounds; None when the list itself was refused (at the cap it needs a connection too).
fn memory_within_cap(addr: &str, pid: u32, cap: u64, when: &str) -> Option<u64> {
    let rss = rss_kib(pid);
    assert!(rss < 20 * 1024, "{when}: server RSS {rss} KiB");
    match try_get(addr, "/admin/sessions") {
        Ok(r) if r.status == 200 => {
            let v = r.json();
            let reserved = v["memory"]["reserved"].as_u64().expect("memory.reserved");
            assert_eq!(v["memory"]["cap"], cap, "{when}: {v}");
            assert!(
                reserved <= cap,
                "{when}: reserved {reserved} over the cap {cap}"
            );
            Some(reserved)
        }
        Ok(r) => {
            assert_json_error(&r, 503, "memory");
            None
        }
        Err(_) => None,
    }
}

#[test]
fn a_flood_never_pushes_reserved_memory_past_the_cap() {
    let cap = 2u64 << 20;
    let srv = spawn_server(&[
        "--max-memory",
        "2M",
        "--scrollback",
        "256K",
        "--",
        common::sh(),
    ]);
    let addr = srv.addr();
    let pid = srv.child.id();
    let mut max_reserved = 0;
    let mut check = |when: &str| {
        let reserved = memory_within_cap(&addr, pid, cap, when);
        max_reserved = max_reserved.max(reserved.unwrap_or(0));
        reserved.is_some()
    };

    let mut attached = Vec::new();
    let mut refusals = 0;
    for i in 0..20 {
        match attach_or_refusal(srv.port, &format!("session=fl-{i}&new=1")) {
            // Half stay attached, holding their connection's reserve as well.
            Ok((c, _)) if i % 2 == 0 => attached.push(c),
            Ok((c, _)) => c.abort(),
            Err(Refusal::Ws(code, Some(4503))) if code == "memory" => refusals += 1,
            Err(Refusal::Http(503, _)) => refusals += 1,
            Err(other) => panic!("session {i}: expected memory/4503 or HTTP 503, got {other:?}"),
        }
        check(&format!("after session {i}"));
    }
    let idle: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    check("with 20 idle connections");
    assert!(refusals > 0, "20 x 256 KiB rings fitted in 2 MiB");
    assert!(!attached.is_empty(), "no session fitted at all");

    for (i, c) in attached.iter_mut().enumerate() {
        echo_roundtrip(c, &format!("fl{i}"));
    }
    drop(idle);
    drop(attached);
    let start = Instant::now();
    while !check("after the flood") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the admin list never answered after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(max_reserved > 0, "reserved memory never reported");
    let list = srv.admin_sessions();
    assert!(session_ids(&list).len() <= 8, "{list}");
}

/// `--max-pending` full: a newcomer gets in and the oldest unfinished request of the address
/// holding the most is closed at once (issue 15: the newcomer used to be turned away until a
/// head timeout freed a slot); the others are cut off at the head timeout.
#[test]
fn pending_connections_are_capped_and_cut_off_at_the_head_timeout() {
    let srv = spawn_server(&["--max-pending", "4", "--header-timeout", "2s"]);
    let addr = srv.addr();
    let start = Instant::now();
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        slow.push(http::half_sent(http::connect(&addr), &addr).expect("half-sent head"));
        // In order, so the first is the oldest.
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fifth = http::connect(&addr);
    let r = http::raw_request_on(
        fifth,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("the fifth is served");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        http::closed_within(&mut slow[0], Duration::from_millis(500)),
        "the oldest unfinished request was not closed for the newcomer"
    );
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "the oldest was only closed by the head timeout"
    );
    for (i, s) in slow.iter_mut().enumerate().skip(1) {
        assert!(
            http::closed_within(s, Duration::from_secs(4)),
            "half-sent connection {i} still open after {:?}",
            start.elapsed()
        );
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "half-sent heads closed after {took:?}, expected the 2 s head timeout"
    );
    wait_healthy(&addr, Duration::from_secs(3));
}

/// One address's slowloris fills `--max-pending`; another peer is still served, at the cost
/// of the slowloris's own oldest connection.
#[test]
fn one_address_cannot_keep_another_out_of_pending() {
    let srv = spawn_server(&["--header-timeout", "5s"]);
    let addr = srv.addr();
    let mut slow: Vec<TcpStream> = (0..32)
        .map(|_| http::half_sent(http::connect(&addr), &addr).expect("half-sent head"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            !http::closed_within(s, Duration::from_millis(20)),
            "half-sent connection {i} of 32 from one address was closed while there was room"
        );
    }

    // Another peer is not held back by the first one's slowloris.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), srv.port).expect("bind 127.0.0.2");
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    other
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let r = http::read_response(&mut BufReader::new(other)).expect("answer to 127.0.0.2");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn half_sent_connections_do_not_count_against_max_clients() {
    let srv = spawn_server(&[
        "--max-clients",
        "2",
        "--max-pending",
        "8",
        "--",
        common::sh(),
    ]);
    let addr = srv.addr();
    let mut slow: Vec<TcpStream> = (0..3)
        .map(|_| http::half_sent(http::connect(&addr), &addr).expect("half-sent head"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut a = ws::connect(srv.port, "session=hc-1&new=1");
    a.expect_attached();
    let mut b = ws::connect(srv.port, "session=hc-2&new=1");
    b.expect_attached();
    echo_roundtrip(&mut a, "a0");
    echo_roundtrip(&mut b, "b0");
    // Completed requests still count.
    match attach_or_refusal(srv.port, "session=hc-3&new=1") {
        Err(Refusal::Http(429, _)) => {}
        Err(Refusal::Ws(code, Some(4429))) if code == "limit" => {}
        Err(other) => panic!("third client: expected 429 or limit/4429, got {other:?}"),
        Ok((_, att)) => panic!("third client attached past --max-clients 2: {att}"),
    }
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            !http::closed_within(s, Duration::from_millis(20)),
            "half-sent connection {i} was closed to make room"
        );
    }
    echo_roundtrip(&mut a, "a1");
}

#[test]
fn half_sent_head_is_cut_off_while_other_clients_are_served() {
    let srv = spawn_server(&["--header-timeout", "2s", "--", common::sh()]);
    let addr = srv.addr();
    let mut c = ws::connect(srv.port, "session=served&new=1");
    c.expect_attached();
    let start = Instant::now();
    let mut slow = http::half_sent(http::connect(&addr), &addr).expect("half-sent head");
    let mut closed_after = None;
    for i in 0..20 {
        echo_roundtrip(&mut c, &format!("t{i}"));
        let r = try_get(&addr, "/healthz").expect("healthz while a head is pending");
        assert_eq!(r.status, 200, "{}", r.text());
        // Trickling does not buy time: the deadline is for the whole head.
        if slow.write_all(b"a").is_err()
            || http::closed_within(&mut slow, Duration::from_millis(250))
        {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let took = closed_after.expect("a half-sent head was never cut off");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "cut off after {took:?}, expected the 2 s head timeout"
    );
    echo_roundtrip(&mut c, "end");
}

#[test]
fn emfile_on_accept_does_not_spin_and_recovers() {
    // exec: the shell becomes the server, so the child's pid is the server's.
    let script = format!(
        "ulimit -n 40 && exec {} --listen 127.0.0.1:0 --max-pending 100 -- {}",
        common::keepty_words(),
        common::sh()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    let srv = common::spawn_cmd(cmd);
    let addr = srv.addr();
    let pid = srv.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("40")),
        "the server does not run under ulimit -n 40: {limits}"
    );
    wait_healthy(&addr, Duration::from_secs(3));

    // Connections from several loopback addresses, so the per-peer pending cap does not
    // turn them away before the descriptors run out.
    let mut conns = Vec::new();
    for i in 0..60u8 {
        let src = Ipv4Addr::new(127, 0, 0, 2 + i % 8);
        conns.push(connect_from(src, srv.port).unwrap_or_else(|e| panic!("connect {i}: {e}")));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        fds >= 36,
        "the server holds only {fds} of its 40 descriptors: the test never reached EMFILE"
    );
    let logs_before = srv.stderr_lines().len();
    let cpu_before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_secs(pid) - cpu_before;
    let logged = srv.stderr_lines().len();
    assert!(
        cpu < 0.5,
        "{cpu:.2} s of CPU in 2 s at EMFILE: the loop spins"
    );
    assert!(
        logged < 100,
        "{logged} log lines in 2 s at EMFILE (and {logs_before} before)"
    );

    drop(conns);
    wait_healthy(&addr, Duration::from_secs(5));
}

/// Unfinished requests are charged only their head buffer: 24 of them (from 3 addresses,
/// leaving room under --max-pending 32 for the real client) must not fill a small memory cap
/// and keep sessions out, as they did when each was charged a WebSocket's full buffers
/// (~250 KB each, 6 MB in all).
#[test]
fn pending_requests_do_not_fill_a_small_memory_cap() {
    let srv = spawn_server(&["--max-memory", "4M", "--", common::sh()]);
    let mut held = Vec::new();
    for i in 0..24u8 {
        let src = Ipv4Addr::new(127, 0, 0, 10 + i / 8);
        let mut s = connect_from(src, srv.port).expect("connect from a loopback address");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .expect("half a request");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, attached) = attach_or_refusal(srv.port, "new=1")
        .unwrap_or_else(|e| panic!("24 half-sent requests kept a session out: {e:?}"));
    assert_eq!(attached["type"], "attached", "{attached}");
    echo_roundtrip(&mut c, "pend");
    let list = srv.admin_sessions();
    let reserved = list["memory"]["reserved"].as_u64().unwrap_or(u64::MAX);
    assert!(reserved <= 4 << 20, "{list}");
    drop(held);
}
