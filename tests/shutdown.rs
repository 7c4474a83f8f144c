//! Graceful shutdown on SIGTERM: clients are told, sessions are ended, the server exits 0.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ws::{self, WAIT};
use common::{process_alive, spawn_server};

#[test]
fn sigterm_tells_clients_and_ends_sessions() {
    let mut srv = spawn_server(&["--", common::sh()]);
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for name in ["term-a", "term-b"] {
        let mut c = ws::connect(srv.port, &format!("session={name}&new=1"));
        c.expect_attached();
        c.send_input(b"echo up-$((2+3))\n");
        c.read_output_until(b"up-5", WAIT);
        let pid = srv.session_record(name).expect("listed")["pid"]
            .as_i64()
            .expect("pid") as i32;
        assert!(
            process_alive(pid),
            "session {name} pid {pid} is not running"
        );
        pids.push(pid);
        clients.push(c);
    }

    let start = Instant::now();
    srv.signal(15);
    for c in &mut clients {
        let texts = c.expect_close(1001);
        assert!(
            texts.iter().any(|v| v["type"] == "shutdown"),
            "no shutdown message: {texts:?}"
        );
    }
    let code = srv.wait_exit(Duration::from_secs(6));
    assert_eq!(
        code,
        Some(0),
        "exit status after SIGTERM (None: still running after 6 s)"
    );
    assert!(start.elapsed() < Duration::from_secs(6));

    // The server reaps what it started; zombies re-parented elsewhere do not count as alive.
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| process_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in &pids {
        assert!(!process_alive(p), "session process {p} outlived the server");
    }
    // New connections are refused once it is gone.
    assert!(
        std::net::TcpStream::connect(srv.addr()).is_err(),
        "still accepting after exit"
    );
}

/// The server must signal only its sessions' process groups, never its own: `killpg(0, ..)`
/// (e.g. from `tcgetpgrp` answering 0 once a session's leader has died) would hit whatever
/// shares the server's group, such as the shell or service manager that started it.
#[test]
fn signals_never_reach_the_servers_own_process_group() {
    let mut srv = spawn_server(&["--", common::sh()]);
    // A bystander in the server's process group that reports which signal reached it.
    let mut bystander = Bystander(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(
                "trap 'exit 40' TERM; trap 'exit 41' WINCH; trap 'exit 42' HUP; \
             i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
            )
            .process_group(srv.child.id() as i32)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn bystander"),
    );

    // A session whose shell exits while detached, then a reattach to it (a redraw nudge to
    // a terminal without a foreground group)...
    let mut c = ws::connect(srv.port, "session=gone&new=1");
    c.expect_attached();
    c.send_input(b"sleep 0.3; exit 3\n");
    c.read_output_until(b"exit 3", WAIT);
    c.abort();
    srv.wait_session("gone", WAIT, "the shell to exit", |r| {
        r["state"] == "exited"
    });
    let mut c = ws::connect(srv.port, "session=gone&since=0");
    c.expect_attached();
    let (_, texts, code) = c.read_to_close(WAIT);
    assert_eq!(code, Some(1000), "{texts:?}");

    // ...and several live shells hung up at shutdown, whose leaders die as they are signalled.
    let mut keep = Vec::new();
    for i in 0..8 {
        let mut c = ws::connect(srv.port, &format!("session=live-{i}&new=1"));
        c.expect_attached();
        c.send_input(b"echo ok-$((1+1))\n");
        c.read_output_until(b"ok-2", WAIT);
        if i % 2 == 0 {
            c.abort();
        } else {
            keep.push(c);
        }
    }
    srv.signal(15);
    assert_eq!(srv.wait_exit(Duration::from_secs(6)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let status = bystander.0.try_wait().expect("try_wait");
    drop(keep);
    assert!(
        status.is_none(),
        "a process in the server's own process group got a signal: it exited {:?} \
         (41: SIGWINCH, 42: SIGHUP, else killed)",
        status.and_then(|s| s.code())
    );
}

/// A child that is stopped when the test ends, pass or fail.
struct Bystander(Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // Its TERM trap lets it reap its own `sleep` rather than orphan it.
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
