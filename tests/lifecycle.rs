//! Session lifecycle (issue 3): the three attach policies with real clients, TTL reaping of
//! detached sessions and their process groups, `last_seen` and `idle_secs`, exited sessions
//! kept until seen or expired, and the ping, silence and write-stall deadlines.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use common::support::{StrayGuard, number_after, u};
use common::ws::{self, Msg, WAIT, Ws};
use common::{Server, is_timeout, process_alive, spawn_server};

/// Runs a command whose result the echoed command line cannot contain (the shell does the
/// arithmetic), proving this client's input reaches the shell.
fn echo_roundtrip(c: &mut Ws, tag: &str) -> Vec<u8> {
    c.send_input(format!("echo {tag}-$((1000+1))\n").as_bytes());
    c.read_output_until(format!("{tag}-1001").as_bytes(), WAIT)
}

/// Reads until a text message of type `ty` arrives; other texts go to `c.events`.
fn wait_text(c: &mut Ws, ty: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_msg(left) {
            Some(Msg::Text(v)) if v["type"] == ty => return v,
            Some(Msg::Text(v)) => c.events.push(v),
            Some(Msg::Binary(_)) => {}
            Some(other) => panic!("waiting for {ty}: {other:?}; events {:?}", c.events),
            None => panic!("no {ty} message within {timeout:?}; events {:?}", c.events),
        }
    }
}

/// Reads past pings and output until the server ends the connection, which must be a 1001
/// "timeout" close or a bare end (a wedged socket may never get the Close frame through).
fn expect_timeout_close(c: &mut Ws, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_msg(left) {
            Some(Msg::Binary(_)) | Some(Msg::Text(_)) => {}
            Some(Msg::Close(code, reason)) => {
                assert_eq!(
                    (code, reason.as_str()),
                    (Some(1001), "timeout"),
                    "close code and reason"
                );
                return;
            }
            Some(Msg::Gone(_)) => return,
            None => panic!("connection still open {timeout:?} after it should have been closed"),
        }
    }
}

/// Polls the admin list until session `id` is no longer listed; returns how long that took.
fn wait_gone(srv: &Server, id: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let rec = srv.session_record(id);
        if rec.is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "session {id} still listed after {timeout:?}: {rec:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reject_policy_refuses_newcomer_and_keeps_first_client() {
    let srv = spawn_server(&["--attach-policy", "reject", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=rj&new=1");
    let att = a.expect_attached();
    assert_eq!(att["policy"], "reject", "{att}");
    assert_eq!(att["role"], "writer", "{att}");
    echo_roundtrip(&mut a, "a1");

    let mut b = ws::connect(srv.port, "session=rj");
    b.expect_error("attached_elsewhere", 4409);
    // new=1 on an existing id is an attach like any other, so it is refused too.
    let mut b = ws::connect(srv.port, "session=rj&new=1");
    b.expect_error("attached_elsewhere", 4409);

    // take_control means nothing outside multi.
    a.send_json(json!({"type": "take_control"}));
    echo_roundtrip(&mut a, "a2");
    assert!(
        a.events
            .iter()
            .all(|v| v["type"] != "role" && v["type"] != "taken_over"),
        "the first client was disturbed: {:?}",
        a.events
    );
    let rec = srv.session_record("rj").expect("listed");
    assert_eq!(rec["clients"], 1, "{rec}");

    // The policy guards an attached session only: once the first client leaves, it is free.
    a.close();
    srv.wait_session("rj", WAIT, "the detach", |r| r["clients"] == 0);
    let mut c = ws::connect(srv.port, "session=rj");
    let att = c.expect_attached();
    assert_eq!(
        (&att["created"], &att["role"]),
        (&json!(false), &json!("writer"))
    );
    echo_roundtrip(&mut c, "c1");
    c.close();
}

#[test]
fn handoff_policy_moves_the_session_to_the_newcomer() {
    let srv = spawn_server(&["--attach-policy", "handoff", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=ho&new=1");
    let att = a.expect_attached();
    assert_eq!(att["policy"], "handoff", "{att}");
    echo_roundtrip(&mut a, "a1");

    let mut b = ws::connect(srv.port, "session=ho");
    let att = b.expect_attached();
    assert_eq!(
        (&att["created"], &att["role"]),
        (&json!(false), &json!("writer"))
    );
    let texts = a.expect_close(4410);
    assert!(
        texts.iter().any(|v| v["type"] == "taken_over"),
        "no taken_over before 4410: {texts:?}"
    );

    b.send_json(json!({"type": "take_control"}));
    echo_roundtrip(&mut b, "b1");
    assert!(
        b.events.iter().all(|v| v["type"] != "role"),
        "take_control did something under handoff: {:?}",
        b.events
    );
    let rec = srv.session_record("ho").expect("listed");
    assert_eq!(rec["clients"], 1, "{rec}");
    b.close();
}

#[test]
fn multi_policy_viewer_is_read_only_until_it_takes_control() {
    let srv = spawn_server(&["--attach-policy", "multi", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=mv&new=1&cols=80&rows=24");
    let att = a.expect_attached();
    assert_eq!(
        (&att["role"], &att["policy"]),
        (&json!("writer"), &json!("multi"))
    );
    echo_roundtrip(&mut a, "w0");

    // A viewer's requested size must not reach the PTY either.
    let mut b = ws::connect(srv.port, "session=mv&cols=33&rows=11");
    let att = b.expect_attached();
    assert_eq!(att["role"], "viewer", "{att}");
    assert_eq!(att["created"], false, "{att}");
    assert_eq!(att["policy"], "multi", "{att}");

    let out = echo_roundtrip(&mut a, "both");
    assert!(ws::find(&out, b"both-1001").is_some());
    b.read_output_until(b"both-1001", WAIT);

    b.send_input(b"echo viewer-$((5*5))\n");
    b.resize(33, 11);
    // The two clients' messages are not ordered against each other; give the server time
    // to act on the viewer's before the writer asks.
    std::thread::sleep(Duration::from_millis(300));
    a.send_input(b"stty size; echo sized-$((4+4))\n");
    let out_a = a.read_output_until(b"sized-8", WAIT);
    let out_b = b.read_output_until(b"sized-8", WAIT);
    for (who, out) in [("writer", &out_a), ("viewer", &out_b)] {
        assert!(
            ws::find(out, b"viewer-25").is_none(),
            "the viewer's input reached the shell (seen by the {who}): {}",
            ws::tail(out)
        );
        assert!(
            ws::find(out, b"24 80").is_some(),
            "the viewer's size reached the PTY (seen by the {who}): {}",
            ws::tail(out)
        );
    }
    let rec = srv.session_record("mv").expect("listed");
    assert_eq!(rec["clients"], 2, "{rec}");
    assert_eq!((u(&rec["cols"]), u(&rec["rows"])), (80, 24), "{rec}");

    b.send_json(json!({"type": "take_control"}));
    let r = wait_text(&mut b, "role", WAIT);
    assert_eq!(r["role"], "writer", "{r}");
    let r = wait_text(&mut a, "role", WAIT);
    assert_eq!(r["role"], "viewer", "{r}");

    a.send_input(b"echo old-$((6*6))\n");
    std::thread::sleep(Duration::from_millis(300));
    let out_b = echo_roundtrip(&mut b, "new");
    let out_a = a.read_output_until(b"new-1001", WAIT);
    for out in [&out_a, &out_b] {
        assert!(
            ws::find(out, b"old-36").is_none(),
            "the demoted writer's input still reached the shell: {}",
            ws::tail(out)
        );
    }
    b.resize(100, 30);
    b.send_input(b"stty size; echo sz-$((1+1))\n");
    let out = b.read_output_until(b"sz-2", WAIT);
    assert!(
        ws::find(&out, b"30 100").is_some(),
        "the new writer's resize did not apply: {}",
        ws::tail(&out)
    );
    a.close();
    b.close();
}

#[test]
fn multi_policy_promotes_the_oldest_viewer_when_the_writer_leaves() {
    let srv = spawn_server(&["--attach-policy", "multi", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=mp&new=1");
    a.expect_attached();
    echo_roundtrip(&mut a, "a0");
    let mut b = ws::connect(srv.port, "session=mp");
    assert_eq!(b.expect_attached()["role"], "viewer");
    let mut c = ws::connect(srv.port, "session=mp");
    assert_eq!(c.expect_attached()["role"], "viewer");
    echo_roundtrip(&mut a, "all");
    b.read_output_until(b"all-1001", WAIT);
    c.read_output_until(b"all-1001", WAIT);

    a.abort();
    let r = wait_text(&mut b, "role", WAIT);
    assert_eq!(r["role"], "writer", "{r}");

    c.send_input(b"echo cview-$((8*8))\n");
    std::thread::sleep(Duration::from_millis(300));
    let out_b = echo_roundtrip(&mut b, "bw");
    let out_c = c.read_output_until(b"bw-1001", WAIT);
    for out in [&out_b, &out_c] {
        assert!(
            ws::find(out, b"cview-64").is_none(),
            "the younger viewer's input reached the shell: {}",
            ws::tail(out)
        );
    }
    assert!(
        c.events
            .iter()
            .all(|v| !(v["type"] == "role" && v["role"] == "writer")),
        "the younger viewer was promoted too: {:?}",
        c.events
    );
    let rec = srv.session_record("mp").expect("listed");
    assert_eq!(rec["clients"], 2, "{rec}");

    // And down the line: the last viewer takes over when the new writer leaves.
    b.close();
    let r = wait_text(&mut c, "role", WAIT);
    assert_eq!(r["role"], "writer", "{r}");
    echo_roundtrip(&mut c, "cw");
    c.close();
}

#[test]
fn ttl_reaps_a_detached_session_and_its_process_group() {
    let srv = spawn_server(&["--ttl", "3s", "--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=reap-me&new=1");
    c.expect_attached();
    // Without job control the background job stays in the shell's process group, which is
    // what the reaper signals; ignoring SIGHUP keeps it alive until the SIGKILL that must
    // follow.
    c.send_input(b"set +m; (trap '' HUP; exec sleep 1000) & echo bg=$! sh=$$ up-$((1+1))\n");
    let out = c.read_output_until(b"up-2", WAIT);
    let bg = number_after(&out, b"bg=").unwrap_or_else(|| panic!("no bg pid: {}", ws::tail(&out)));
    let _guard = StrayGuard(bg);
    let sh = number_after(&out, b"sh=").unwrap_or_else(|| panic!("no sh pid: {}", ws::tail(&out)));
    assert!(process_alive(bg) && process_alive(sh));
    let rec = srv.session_record("reap-me").expect("listed");
    assert_eq!(rec["pid"], sh, "{rec}");

    c.abort();
    srv.wait_session("reap-me", WAIT, "the detach", |r| r["clients"] == 0);
    let detached = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        srv.session_record("reap-me").is_some(),
        "reaped 1 s into a 3 s TTL"
    );
    // The TTL, 1 s of last_seen rounding and the wheel's slack.
    let left = Duration::from_secs(6).saturating_sub(detached.elapsed());
    wait_gone(&srv, "reap-me", left);
    let reaped_after = detached.elapsed();
    assert!(
        reaped_after >= Duration::from_secs(2),
        "reaped after {reaped_after:?} with a 3 s TTL"
    );
    assert!(
        process_alive(bg),
        "a job ignoring SIGHUP died right at the reap: SIGKILL came without the 3 s grace"
    );

    let start = Instant::now();
    while (process_alive(bg) || process_alive(sh)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(sh), "the shell {sh} outlived the reap");
    assert!(
        !process_alive(bg),
        "the background job {bg} outlived the reap (no SIGKILL within 5 s)"
    );
    let killed_after = start.elapsed();
    assert!(
        killed_after >= Duration::from_secs(2),
        "SIGKILL after {killed_after:?}, expected about 3 s after the SIGHUP"
    );

    let mut c = ws::connect(srv.port, "session=reap-me");
    c.expect_error("expired", 4404);
    assert!(
        srv.session_record("reap-me").is_none(),
        "the expired id came back"
    );
}

#[test]
fn an_attached_session_is_never_reaped() {
    let srv = spawn_server(&["--ttl", "1s", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=kept&new=1");
    a.expect_attached();
    echo_roundtrip(&mut a, "k0");
    // A detached neighbour shows that the TTL is really running meanwhile.
    let mut d = ws::connect(srv.port, "session=control&new=1");
    d.expect_attached();
    d.abort();

    let start = Instant::now();
    let mut control_gone = false;
    while !control_gone || start.elapsed() < Duration::from_secs(3) {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "the detached control session was not reaped within 6 s of a 1 s TTL"
        );
        let list = srv.admin_sessions();
        let sessions = list["sessions"].as_array().expect("sessions");
        let kept = sessions
            .iter()
            .find(|s| s["id"] == "kept")
            .unwrap_or_else(|| {
                panic!(
                    "an attached session was reaped after {:?}: {list}",
                    start.elapsed()
                )
            });
        assert_eq!(kept["state"], "running", "{kept}");
        assert_eq!(kept["clients"], 1, "{kept}");
        assert_eq!(kept["idle_secs"], 0, "idle while attached: {kept}");
        control_gone = sessions.iter().all(|s| s["id"] != "control");
        std::thread::sleep(Duration::from_millis(250));
    }
    echo_roundtrip(&mut a, "k1");
    a.close();
}

#[test]
fn last_seen_follows_activity_and_idle_time_grows_when_detached() {
    let ttl = 3600;
    let srv = spawn_server(&["--ttl", "1h", "--", common::sh()]);
    let mut a = ws::connect(srv.port, "session=seen&new=1");
    a.expect_attached();
    echo_roundtrip(&mut a, "s0");
    let list = srv.admin_sessions();
    let rec = srv.session_record("seen").expect("listed");
    let now = u(&list["now"]);
    let seen0 = u(&rec["last_seen"]);
    assert!(now.abs_diff(seen0) <= 1, "last_seen {seen0} vs now {now}");
    assert!(u(&rec["created_at"]) <= seen0, "{rec}");
    assert_eq!(rec["idle_secs"], 0, "{rec}");

    // last_seen has 1 s resolution.
    std::thread::sleep(Duration::from_millis(2200));
    echo_roundtrip(&mut a, "s1");
    let rec = srv.session_record("seen").expect("listed");
    assert!(
        u(&rec["last_seen"]) >= seen0 + 2,
        "input 2.2 s later did not move last_seen from {seen0}: {rec}"
    );
    assert_eq!(rec["idle_secs"], 0, "{rec}");

    a.abort();
    let rec = srv.wait_session("seen", WAIT, "the detach", |r| r["clients"] == 0);
    let seen_detached = u(&rec["last_seen"]);
    std::thread::sleep(Duration::from_millis(2200));
    let list = srv.admin_sessions();
    let now = u(&list["now"]);
    let rec = srv.session_record("seen").expect("listed");
    // Whole seconds: a stamp may be shown as its second or the next one, so one second of
    // wobble is not movement.
    assert!(
        u(&rec["last_seen"]).abs_diff(seen_detached) <= 1,
        "last_seen moved from {seen_detached} with nobody attached: {rec}"
    );
    let idle = u(&rec["idle_secs"]);
    assert!(idle >= 2, "idle_secs after 2.2 s detached: {rec}");
    assert!(
        idle.abs_diff(now - seen_detached) <= 1,
        "idle_secs {idle} vs now {now} - last_seen {seen_detached}"
    );
    let expires = u(&rec["expires_in_secs"]);
    assert!(
        expires.abs_diff(ttl - idle) <= 1,
        "expires_in_secs {expires} vs ttl {ttl} - idle {idle}"
    );
}

#[test]
fn exited_session_is_kept_until_a_client_sees_the_end() {
    let srv = spawn_server(&[
        "--",
        common::sh(),
        "-c",
        "echo hi-$((2*3)); sleep 1; echo bye-$((6*7)); exit 5",
    ]);
    let mut a = ws::connect(srv.port, "session=ex-seen&new=1");
    a.expect_attached();
    a.read_output_until(b"hi-6", WAIT);
    a.abort();
    srv.wait_session("ex-seen", WAIT, "the detach", |r| r["clients"] == 0);
    let rec = srv.wait_session("ex-seen", WAIT, "the exit", |r| r["state"] == "exited");
    assert_eq!(rec["exit_code"], 5, "{rec}");
    std::thread::sleep(Duration::from_millis(1500));
    let rec = srv
        .session_record("ex-seen")
        .expect("an exited session nobody has seen end must be kept");
    assert_eq!(rec["state"], "exited", "{rec}");

    let mut b = ws::connect(srv.port, "session=ex-seen&since=0");
    let att = b.expect_attached();
    assert_eq!(att["created"], false, "{att}");
    let (out, texts, code) = b.read_to_close(WAIT);
    assert!(
        ws::find(&out, b"bye-42").is_some(),
        "replay lacks the last output: {}",
        ws::tail(&out)
    );
    let last = texts
        .last()
        .unwrap_or_else(|| panic!("no exited: {texts:?}"));
    assert_eq!(last["type"], "exited", "{texts:?}");
    assert_eq!(last["code"], 5, "{last}");
    assert_eq!(code, Some(1000), "close code after exited");

    wait_gone(&srv, "ex-seen", Duration::from_secs(3));
    // Seen to the end is gone, not expired: nothing was taken from anyone.
    let mut c = ws::connect(srv.port, "session=ex-seen");
    c.expect_error("not_found", 4404);
}

#[test]
fn exited_session_nobody_sees_is_freed_by_the_ttl() {
    let srv = spawn_server(&[
        "--ttl",
        "3s",
        "--",
        common::sh(),
        "-c",
        "echo hi-$((2*3)); sleep 1; exit 3",
    ]);
    let mut a = ws::connect(srv.port, "session=ex-ttl&new=1");
    a.expect_attached();
    a.read_output_until(b"hi-6", WAIT);
    a.abort();
    srv.wait_session("ex-ttl", WAIT, "the detach", |r| r["clients"] == 0);
    let detached = Instant::now();
    let rec = srv.wait_session("ex-ttl", Duration::from_secs(3), "the exit", |r| {
        r["state"] == "exited"
    });
    assert_eq!(rec["exit_code"], 3, "{rec}");
    let left = Duration::from_secs(7).saturating_sub(detached.elapsed());
    wait_gone(&srv, "ex-ttl", left);
    assert!(
        detached.elapsed() >= Duration::from_secs(2),
        "freed after {:?} with a 3 s TTL",
        detached.elapsed()
    );
    let mut c = ws::connect(srv.port, "session=ex-ttl");
    c.expect_error("expired", 4404);
}

#[test]
fn a_client_that_reads_answers_pings_and_stays() {
    let srv = spawn_server(&["--ping-interval", "1s", "--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=pinged&new=1");
    c.expect_attached();
    let mut pings = 0;
    let start = Instant::now();
    // Reading is what makes tungstenite answer: each read sends the pong a ping queued.
    while start.elapsed() < Duration::from_secs(5) {
        c.sock
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match c.sock.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(f)) => {
                panic!("closed after {:?}: {f:?}", start.elapsed())
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("connection broke after {:?}: {e}", start.elapsed()),
        }
    }
    assert!(pings >= 3, "{pings} pings in 5 s at a 1 s interval");
    let rec = srv.session_record("pinged").expect("listed");
    assert_eq!(rec["clients"], 1, "{rec}");
    echo_roundtrip(&mut c, "alive");
    c.close();
}

#[test]
fn a_silent_client_is_closed() {
    let srv = spawn_server(&["--ping-interval", "1s", "--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=quiet&new=1");
    c.expect_attached();
    let start = Instant::now();
    // No reads from here on, so not even pongs go out.
    srv.wait_session(
        "quiet",
        Duration::from_secs(8),
        "the silent client to be dropped",
        |r| r["clients"] == 0,
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took <= Duration::from_secs(6),
        "closed after {took:?}; expected 3 ping intervals (3 s) plus slack"
    );
    expect_timeout_close(&mut c, Duration::from_secs(3));
    let rec = srv
        .session_record("quiet")
        .expect("the session outlives its client");
    assert_eq!(rec["state"], "running", "{rec}");
}

#[test]
fn a_client_that_takes_no_output_is_closed() {
    let srv = spawn_server(&["--ping-interval", "1s", "--", common::sh()]);
    let mut c = ws::connect(srv.port, "session=stall&new=1&flow=1");
    c.auto_ack = false;
    c.expect_attached();
    c.send_input(b"seq 1 400000\n");
    let start = Instant::now();
    let mut received = 0usize;
    let mut last_output = start;
    // It keeps reading (so it answers pings and is not silent) but never acknowledges.
    let end = loop {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "still open 12 s into a stall; {received} bytes received"
        );
        match c.next_msg(Duration::from_millis(200)) {
            Some(Msg::Binary(b)) => {
                received += b.len();
                last_output = Instant::now();
            }
            Some(Msg::Text(_)) | None => {}
            Some(end @ (Msg::Close(..) | Msg::Gone(_))) => break end,
        }
    };
    let stalled_for = last_output.elapsed();
    if let Msg::Close(code, reason) = &end {
        assert_eq!(
            (*code, reason.as_str()),
            (Some(1001), "timeout"),
            "close code and reason"
        );
    }
    assert!(
        received <= 256 * 1024,
        "{received} bytes sent unacknowledged, over the 256 KiB flow window"
    );
    assert!(
        received > 0,
        "no output at all: the test never filled the window"
    );
    assert!(
        stalled_for >= Duration::from_millis(2500) && stalled_for <= Duration::from_secs(6),
        "closed {stalled_for:?} after the last output; expected 3 ping intervals plus slack"
    );

    // The session is fine; a client that acknowledges can carry on.
    let rec = srv
        .session_record("stall")
        .expect("the session outlives its client");
    assert_eq!(rec["state"], "running", "{rec}");
    let mut d = ws::connect(srv.port, "session=stall&flow=1");
    d.expect_attached();
    d.send_input(b"\x03");
    echo_roundtrip(&mut d, "after");
    d.close();
}
