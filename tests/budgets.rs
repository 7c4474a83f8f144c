//! Connection budgets one peer cannot exhaust (issue 15, cases 5 and 7): kept-alive
//! connections that keep `--max-clients` full, unfinished requests from a few addresses that
//! keep `--max-pending` full, the 8-per-address pending cap that turned away a browser's own
//! reconnecting tabs, and the per-address share of `--max-clients`.

mod common;

use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::http;
use common::proc::connect_from;
use common::spawn_server;
use common::ws::{self, Ws};

/// `GET /healthz` kept alive on `s`; the status, or None when the server closed it.
fn healthz_on(s: &mut TcpStream, addr: &str) -> Option<u16> {
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    http::read_response(&mut BufReader::new(&*s))
        .ok()
        .map(|r| r.status)
}

/// A WebSocket attach on a connection from `src`.
fn attach_from(src: Ipv4Addr, port: u16, query: &str) -> Result<Ws, String> {
    let s = connect_from(src, port).map_err(|e| format!("connect: {e}"))?;
    ws::try_connect_on(s, port, query, Some("keepty.v1"), &[])
}

/// 128 keep-alive connections each sending `GET /healthz` every couple of seconds held all of
/// `--max-clients`: the operator's page and WebSocket got 429. Idle keep-alive connections
/// now have a budget of their own, evicted oldest first, so they never keep a request out.
#[test]
fn keep_alive_healthz_connections_do_not_keep_the_operator_out() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..128 {
        let mut s = http::connect(&addr);
        assert_eq!(
            healthz_on(&mut s, &addr),
            Some(200),
            "keep-alive connection {i}"
        );
        held.push(s);
    }
    for round in 0..2 {
        // The page, then a terminal, from the same address as the flood.
        let r = http::get(&addr, "/");
        assert_eq!(r.status, 200, "round {round}: the page: {}", r.text());
        let mut c = ws::try_connect(srv.port, &format!("session=op{round}&new=1"))
            .unwrap_or_else(|e| panic!("round {round}: the operator's WebSocket: {e}"));
        c.expect_attached();
        c.close();
        // The flood keeps going on every connection it still has.
        let mut alive = 0;
        for s in held.iter_mut() {
            if healthz_on(s, &addr) == Some(200) {
                alive += 1;
            }
        }
        assert!(alive > 64, "round {round}: only {alive} of 128 kept alive");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// An idle kept-alive connection is closed after a few seconds: it holds a slot for nothing.
#[test]
fn an_idle_keep_alive_connection_is_closed_soon() {
    let srv = spawn_server(&["--header-timeout", "30s"]);
    let addr = srv.addr();
    let mut s = http::connect(&addr);
    assert_eq!(healthz_on(&mut s, &addr), Some(200));
    let start = Instant::now();
    assert!(
        http::closed_within(&mut s, Duration::from_secs(12)),
        "still open after 12 s idle"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "closed after {took:?}, expected the 5 s keep-alive idle timeout"
    );
}

/// Unfinished requests from four addresses (8 each) filled `--max-pending` and a fifth
/// address got 429. When pending is full the oldest of the heaviest address now goes.
#[test]
fn unfinished_requests_from_four_addresses_do_not_keep_a_fifth_out() {
    let srv = spawn_server(&["--header-timeout", "10s"]);
    let addr = srv.addr();
    let mut slow = Vec::new();
    for a in 2..=5u8 {
        for _ in 0..8 {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, a), srv.port).expect("bind alias");
            slow.push(http::half_sent(s, &addr).expect("half-sent head"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let s = connect_from(Ipv4Addr::new(127, 0, 0, 6), srv.port).expect("bind 127.0.0.6");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let r = http::raw_request_on(s, req.as_bytes())
            .unwrap_or_else(|e| panic!("round {round}: no answer to the fifth address: {e}"));
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
    }
    let mut open = 0;
    for s in slow.iter_mut() {
        if !http::closed_within(s, Duration::from_millis(10)) {
            open += 1;
        }
    }
    assert!(
        open >= 28,
        "only {open} of 32 unfinished requests left: too many evicted"
    );
}

/// 20 tabs reconnecting at once from one address: 12 of them got 429 on a fresh server, since
/// the per-address pending cap (8) counted connections whose head had not been read yet.
#[test]
fn twenty_tabs_reconnecting_at_once_from_one_address_all_get_in() {
    let srv = spawn_server(&["--", common::sh()]);
    for i in 0..20 {
        let mut c = ws::connect(srv.port, &format!("session=tab{i}&new=1"));
        c.expect_attached();
        c.close();
    }
    // Every tab's connection is open before any of them sends its request, as after a
    // network change: the server accepts all twenty before it reads a head.
    let streams: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut tabs = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let c = ws::try_connect_on(
            s,
            srv.port,
            &format!("session=tab{i}"),
            Some("keepty.v1"),
            &[],
        )
        .unwrap_or_else(|e| panic!("tab {i} of 20: {e}"));
        tabs.push(c);
    }
    for (i, c) in tabs.iter_mut().enumerate() {
        let att = c.expect_attached();
        assert_eq!(att["session"], format!("tab{i}"), "{att}");
    }
}

/// One address holds at most its share of `--max-clients` (a quarter, at least 32: 40 of
/// 160 here): past it that address is refused, another is not.
#[test]
fn one_address_holds_only_its_share_of_max_clients() {
    let srv = spawn_server(&[
        "--max-clients",
        "160",
        "--max-sessions",
        "64",
        "--",
        common::sh(),
    ]);
    let share = 160 / 4;
    let one = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    for i in 0..share {
        let mut c = attach_from(one, srv.port, &format!("session=s{i}&new=1"))
            .unwrap_or_else(|e| panic!("client {i} of the share: {e}"));
        c.expect_attached();
        held.push(c);
    }
    match attach_from(one, srv.port, "session=over&new=1") {
        Err(e) => assert!(e.contains("429"), "past the share: {e}"),
        Ok(mut c) => panic!("attached past the share: {}", c.expect_attached()),
    }
    let mut other = attach_from(Ipv4Addr::new(127, 0, 0, 3), srv.port, "session=other&new=1")
        .unwrap_or_else(|e| panic!("another address: {e}"));
    other.expect_attached();
    // A client that leaves gives its place back.
    if let Some(c) = held.pop() {
        c.close();
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut again = attach_from(one, srv.port, "session=again&new=1")
        .unwrap_or_else(|e| panic!("after one left: {e}"));
    again.expect_attached();
}
