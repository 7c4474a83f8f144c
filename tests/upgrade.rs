//! Upgrade in place (SIGUSR2, `POST /admin/upgrade`): the same process executes the binary at
//! its path again and keeps every session, shell, ring byte and timer; clients are closed with
//! 1012 and resume with `since`; a binary that cannot read the state is not executed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::auth::TempDir;
use common::http;
use common::proc::{children, fd_count, rss_kib};
use common::ws::{self, Msg, WAIT};
use common::{Server, spawn_cmd, spawn_server};

const SIGUSR2: i32 = 12;

/// Waits for the stderr line a finished upgrade logs, keeping the lines read on the way.
fn wait_upgraded(srv: &Server, log: &mut Vec<String>) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match srv.stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let done = line.contains("keepty: upgraded in place");
                log.push(line);
                if done {
                    return;
                }
            }
            Err(_) => continue,
        }
    }
    panic!("no upgrade within {WAIT:?}; log: {log:#?}");
}

/// Waits for a stderr line containing `needle`.
fn wait_log(srv: &Server, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(line) = srv.stderr.recv_timeout(Duration::from_millis(100))
            && line.contains(needle)
        {
            return line;
        }
    }
    panic!("no log line with {needle:?} within {WAIT:?}");
}

fn metric(srv: &Server, name: &str) -> u64 {
    let text = http::get(&srv.addr(), "/admin/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}

/// The admin record's fields that must not change across an upgrade. The ones left out
/// change with time or with the clients' reconnecting: `idle_secs`, `expires_in_secs`,
/// `last_seen` (rounded to the second from a duration, so it may move by one), `clients`
/// and `active_client`; what the sampler reads from /proc (`rss_bytes`, `cpu_ms`, `command`,
/// `cwd`: not carried, sampled again within a sweep of the new process); and the rest of
/// `now`, `memory` of the list.
fn stable(rec: &serde_json::Value) -> serde_json::Value {
    let mut r = rec.clone();
    for k in [
        "idle_secs",
        "expires_in_secs",
        "last_seen",
        "clients",
        "active_client",
        "rss_bytes",
        "cpu_ms",
        "command",
        "cwd",
    ] {
        r.as_object_mut().unwrap().remove(k);
    }
    r
}

/// Reads a streaming client to the end marker, reconnecting with `since` after a 1012 close.
/// Returns every byte of output, whether it saw the upgrade, and the `lost` of each attach.
fn stream_through(port: u16, id: &str, mut c: ws::Ws, end: &[u8]) -> (Vec<u8>, bool, Vec<u64>) {
    let mut out = Vec::new();
    let mut restarted = false;
    let mut lost = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "{id}: stream did not end");
        match c.next_msg(Duration::from_secs(30)) {
            Some(Msg::Binary(b)) => {
                out.extend_from_slice(&b);
                if ws::find(&out[out.len().saturating_sub(b.len() + end.len())..], end).is_some() {
                    return (out, restarted, lost);
                }
            }
            Some(Msg::Text(v)) => {
                if v["type"] == "restarting" {
                    restarted = true;
                }
            }
            Some(Msg::Close(code, reason)) => {
                assert_eq!(code, Some(1012), "{id}: closed with {code:?} {reason}");
                assert!(
                    ws::find(&out, end).is_none(),
                    "{id}: the upgrade came after the stream ended"
                );
                assert_eq!(reason, "restarting");
                let since = c.offset;
                let q = format!("session={id}&since={since}&flow=1");
                // Ten clients of one address reconnect at once, past the 8 unfinished requests
                // a peer may have (--max-pending): the 429 ones retry, as the page does.
                let mut tries = 0;
                c = loop {
                    match ws::try_connect(port, &q) {
                        Ok(c) => break c,
                        Err(e) if e.contains("429") && tries < 50 => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("{id} reconnect: {e}"),
                    }
                };
                let a = c.expect_attached();
                assert_eq!(a["offset"].as_u64(), Some(since), "{id}: {a}");
                lost.push(a["lost"].as_u64().unwrap());
            }
            other => panic!("{id}: {other:?} after {} bytes", out.len()),
        }
    }
}

/// Every `nNUMBER` line from 1 to `count`, once each and in order.
fn check_sequence(id: &str, out: &[u8], count: u64) {
    let text = String::from_utf8_lossy(out);
    let mut want = 1u64;
    for line in text.split("\r\n") {
        // The first line follows the shell's prompt.
        let line = line.trim_start_matches(&['$', '#', ' '][..]);
        if let Some(n) = line.strip_prefix('n').and_then(|n| n.parse::<u64>().ok()) {
            assert_eq!(
                n,
                want,
                "{id}: line n{n} where n{want} was due; output starts {:?}",
                String::from_utf8_lossy(&out[..out.len().min(300)])
            );
            want += 1;
        }
    }
    assert_eq!(want, count + 1, "{id}: stream ended early");
}

/// One `GET /healthz` on a new connection; any failure is an error, not a panic.
fn healthz(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answer {out:?}"))
    }
}

#[test]
fn an_upgrade_under_load_keeps_every_byte_shell_and_record() {
    if common::skip_under_runner(
        "an_upgrade_under_load_keeps_every_byte_shell_and_record",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let _guard = common::serial();
    let srv = spawn_server(&["--max-sessions", "60", "--max-memory", "256M"]);
    let port = srv.port;
    // 39 idle sessions, one with a background job whose pid must survive.
    for i in 0..39 {
        let mut c = ws::connect(port, &format!("session=idle{i}&new=1"));
        c.expect_attached();
        if i == 0 {
            c.send_input(b"sleep 600 & echo job-$!\n");
            c.read_output_until(b"job-", WAIT);
        }
    }
    // One detached with a wrapped ring.
    {
        let mut c = ws::connect(port, "session=wrapped&new=1");
        c.expect_attached();
        c.send_input(b"seq -f 'w%g' 1 100000; echo WR-$((1+1))\n");
        c.read_output_until(b"WR-2", Duration::from_secs(60));
    }
    let wrapped = srv.session_record("wrapped").unwrap();
    let total = wrapped["bytes_total"].as_u64().unwrap();
    let start = total - wrapped["bytes_buffered"].as_u64().unwrap();
    assert!(start > 0, "the ring wrapped: {wrapped}");
    let mut c = ws::connect(port, &format!("session=wrapped&since={start}"));
    c.expect_attached();
    let wrapped_before = c.read_output_at_least((total - start) as usize, WAIT);
    drop(c);

    // Ten attached and streaming, with flow control.
    const LINES: u64 = 150_000;
    let mut streams = Vec::new();
    for i in 0..10 {
        let id = format!("stream{i}");
        let mut c = ws::connect(port, &format!("session={id}&new=1&flow=1"));
        c.expect_attached();
        c.send_input(format!("seq -f 'n%g' 1 {LINES}; echo EN''D-$((2+2))\n").as_bytes());
        streams.push((id, c));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = srv.admin_sessions();
    assert_eq!(before["sessions"].as_array().unwrap().len(), 50);
    let job_pid = |list: &serde_json::Value| {
        let pid = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "idle0")
            .unwrap()["pid"]
            .as_u64()
            .unwrap() as u32;
        (pid, children(pid))
    };
    let (idle_pid, kids_before) = job_pid(&before);
    assert!(!kids_before.is_empty(), "the background job runs");

    let readers: Vec<_> = streams
        .into_iter()
        .map(|(id, c)| std::thread::spawn(move || stream_through(port, &id, c, b"END-4")))
        .collect();
    // Connections during the upgrade: requests keep coming and every one is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, served, addr) = (stop.clone(), served.clone(), srv.addr());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match healthz(&addr) {
                    Ok(()) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            failures
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    srv.signal(SIGUSR2);
    let mut log = Vec::new();
    wait_upgraded(&srv, &mut log);
    let during = served.load(Ordering::Relaxed);
    for r in readers {
        let id_out = r.join().expect("reader");
        let (out, restarted, lost) = id_out;
        assert!(restarted, "the client was told");
        assert_eq!(lost, vec![0], "resumed without loss");
        check_sequence("stream", &out, LINES);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let failures = prober.join().unwrap();
    assert!(
        failures.is_empty(),
        "requests failed across the upgrade: {failures:?}"
    );
    assert!(
        served.load(Ordering::Relaxed) > during,
        "served after the upgrade too"
    );

    let after = srv.admin_sessions();
    let by_id = |l: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let mut v: Vec<_> = l["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["id"].as_str().unwrap().starts_with("stream"))
            .map(|s| (s["id"].as_str().unwrap().to_string(), stable(s)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(by_id(&before), by_id(&after), "the admin list is the same");
    assert_eq!(after["sessions"].as_array().unwrap().len(), 50);
    let (idle_pid_after, kids_after) = job_pid(&after);
    assert_eq!(idle_pid, idle_pid_after);
    assert_eq!(kids_before, kids_after, "the shell's children are the same");
    // The wrapped ring: the same bytes from the same offset.
    let mut c = ws::connect(port, &format!("session=wrapped&since={start}"));
    let a = c.expect_attached();
    assert_eq!(a["lost"], 0);
    let wrapped_after = c.read_output_at_least((total - start) as usize, WAIT);
    assert_eq!(
        wrapped_before, wrapped_after,
        "the wrapped ring survived byte for byte"
    );
    assert_eq!(metric(&srv, "keepty_upgrades_total"), 1);
}

#[test]
fn a_ttl_runs_on_across_an_upgrade() {
    if common::skip_under_runner(
        "a_ttl_runs_on_across_an_upgrade",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let _guard = common::serial();
    let srv = spawn_server(&["--ttl", "5s"]);
    let t0 = Instant::now();
    let mut c = ws::connect(srv.port, "session=short&new=1");
    c.expect_attached();
    drop(c);
    std::thread::sleep(Duration::from_millis(1500));
    let before = srv.session_record("short").unwrap();
    srv.signal(SIGUSR2);
    wait_upgraded(&srv, &mut Vec::new());
    let after = srv
        .session_record("short")
        .expect("still there after the upgrade");
    assert_eq!(before["pid"], after["pid"]);
    assert!(
        after["expires_in_secs"].as_u64().unwrap() <= before["expires_in_secs"].as_u64().unwrap(),
        "the TTL did not start over: {before} then {after}"
    );
    // Reaped at its TTL (5 s, the wheel's 100 ms slots), not 5 s after the upgrade.
    let deadline = t0 + Duration::from_secs(15);
    while srv.session_record("short").is_some() {
        assert!(Instant::now() < deadline, "never reaped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = t0.elapsed();
    assert!(
        gone >= Duration::from_millis(4900),
        "reaped early: {gone:?}"
    );
    // Generous on a shared machine, yet short of 1.5 s + 5 s, a TTL restarted at the upgrade.
    assert!(gone < Duration::from_millis(6400), "reaped late: {gone:?}");
    let err = ws::try_connect(srv.port, "session=short");
    let mut c = err.expect("the socket opens");
    match c.next_msg(WAIT) {
        Some(Msg::Text(v)) => assert_eq!(v["code"], "expired", "{v}"),
        other => panic!("{other:?}"),
    }
}

/// A copy of the binary in a directory of its own, to be replaced by the tests.
fn private_binary(dir: &TempDir) -> PathBuf {
    let path = dir.path("keepty");
    std::fs::copy(common::bin(), &path).unwrap();
    path
}

/// Replaces `path` the way a package manager does: a new file renamed over it.
fn replace(path: &Path, with: impl FnOnce(&Path)) {
    let tmp = path.with_extension("new");
    with(&tmp);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn script(body: &'static str) -> impl FnOnce(&Path) {
    move |p: &Path| std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap()
}

#[test]
fn a_binary_that_cannot_take_the_state_leaves_the_old_one_serving() {
    if common::skip_under_runner(
        "a_binary_that_cannot_take_the_state_leaves_the_old_one_serving",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let _guard = common::serial();
    let dir = TempDir::new("upgrade-refuse");
    let exe = private_binary(&dir);
    let mut cmd = Command::new(&exe);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let srv = spawn_cmd(cmd);
    let mut c = ws::connect(srv.port, "session=keep&new=1");
    c.expect_attached();
    c.send_input(b"echo alive-$((1+2))\n");
    c.read_output_until(b"alive-3", WAIT);
    let addr = srv.addr();
    for (body, why) in [
        ("echo keepty-state 99", "reads state formats 99"),
        ("exit 3", "does not read keepty state"),
        ("echo 'keepty 9.9'", "unexpected check answer"),
    ] {
        replace(&exe, script(body));
        srv.signal(SIGUSR2);
        let line = wait_log(&srv, "upgrade refused");
        assert!(line.contains(why), "{line}");
        let r = http::request(&addr, "POST", "/admin/upgrade", &[]);
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.json()["error"], "upgrade_refused");
        wait_log(&srv, "upgrade refused");
        // The client was never closed and the shell still answers.
        c.send_input(b"echo still-$((2+3))\n");
        c.read_output_until(b"still-5", WAIT);
    }
    // The real binary back at the path: the upgrade goes ahead (the running file is now a
    // deleted inode, but the path was read at startup).
    replace(&exe, |p| {
        std::fs::copy(common::bin(), p).unwrap();
    });
    let r = http::request(&addr, "POST", "/admin/upgrade", &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    wait_upgraded(&srv, &mut Vec::new());
    // The shell's prompt after `still-5` may still be on its way: output before the notice
    // is fine (next_msg counts it into the offset), anything else is not.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no restarting notice");
        match c.next_msg(WAIT) {
            Some(Msg::Text(v)) if v["type"] == "restarting" => break,
            Some(Msg::Binary(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let mut c = ws::connect(srv.port, &format!("session=keep&since={}", c.offset));
    assert_eq!(c.expect_attached()["lost"], 0);
    c.send_input(b"echo after-$((3+4))\n");
    c.read_output_until(b"after-7", WAIT);
    // A cross-site request cannot trigger it.
    let r = http::request(
        &addr,
        "POST",
        "/admin/upgrade",
        &["Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(r.status, 403);
}

#[test]
fn ten_upgrades_in_a_row_leak_no_fd_and_no_memory() {
    if common::skip_under_runner(
        "ten_upgrades_in_a_row_leak_no_fd_and_no_memory",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let _guard = common::serial();
    let srv = spawn_server(&[]);
    let pid = srv.child.id();
    let mut shells = Vec::new();
    for i in 0..4 {
        let mut c = ws::connect(srv.port, &format!("session=leak{i}&new=1"));
        c.expect_attached();
        c.send_input(b"seq 1 20000\n");
        c.read_output_until(b"20000", WAIT);
        shells.push(srv.session_record(&format!("leak{i}")).unwrap()["pid"].clone());
    }
    let mut fds = Vec::new();
    let mut rss = Vec::new();
    for i in 0..10 {
        if i % 2 == 0 {
            srv.signal(SIGUSR2);
        } else {
            let r = http::request(&srv.addr(), "POST", "/admin/upgrade", &[]);
            assert_eq!(r.status, 202, "{}", r.text());
        }
        wait_upgraded(&srv, &mut Vec::new());
        // Every request after the upgrade is served by the new process.
        assert_eq!(metric(&srv, "keepty_upgrades_total"), i + 1);
        // The metrics request's socket closes after its answer: let it go before counting.
        std::thread::sleep(Duration::from_millis(300));
        fds.push(fd_count(pid));
        rss.push(rss_kib(pid));
    }
    // The first restored process marks whatever it inherited from outside (the test
    // runner's own fds) close-on-exec, so those go at the second exec; from then on the count
    // must not move.
    assert!(
        fds[1..].iter().all(|&n| n == fds[1]) && fds[1] <= fds[0],
        "fds changed: {fds:?}"
    );
    assert!(
        rss[9] <= rss[0] + 1024,
        "RSS grew by more than 1 MiB over nine upgrades: {rss:?} KiB"
    );
    for (i, pid) in shells.iter().enumerate() {
        assert_eq!(
            &srv.session_record(&format!("leak{i}")).unwrap()["pid"],
            pid
        );
    }
    assert!(common::proc::zombies(pid).is_empty());
}

#[test]
fn a_configuration_the_new_binary_cannot_load_is_refused_before_the_exec() {
    if common::skip_under_runner(
        "a_configuration_the_new_binary_cannot_load_is_refused_before_the_exec",
        "the server executes itself again, and qemu-user without binfmt cannot exec a foreign binary",
    ) {
        return;
    }
    let _guard = common::serial();
    let dir = TempDir::new("upgrade-config");
    let admin = dir.write("admin", "upgrade-admin-token\n", 0o600);
    let srv = spawn_server(&["--admin-token-file", &admin]);
    let mut c = ws::connect(srv.port, "session=cfg&new=1");
    c.expect_attached();
    // The token file is gone: a new process would exit 2 and hang up every shell.
    std::fs::remove_file(&admin).unwrap();
    srv.signal(SIGUSR2);
    let line = wait_log(&srv, "upgrade refused");
    assert!(line.contains("the configuration does not load"), "{line}");
    c.send_input(b"echo kept-$((4+4))\n");
    c.read_output_until(b"kept-8", WAIT);
    // Back in place, the same request goes through.
    common::auth::write_file(Path::new(&admin), "upgrade-admin-token\n", 0o600);
    srv.signal(SIGUSR2);
    wait_upgraded(&srv, &mut Vec::new());
    let mut c = ws::connect(srv.port, &format!("session=cfg&since={}", c.offset));
    assert_eq!(c.expect_attached()["lost"], 0);
}
