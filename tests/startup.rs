//! Startup: settings with which the server could never do its job are refused with exit 2 and
//! a message naming the option, before anything listens; and the memory cap in force is said
//! on stderr after the first stdout line, which stays the bare "listening" line scripts read.
//! And the names the box resolves itself by need no `--allow-host`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http, keepty, spawn_server};

/// Runs keepty with `args` on a free port; expects exit 2 within 5 s and nothing on stdout.
/// Returns stderr.
fn refused(args: &[&str]) -> String {
    refused_with(args, |_| {})
}

fn refused_with(args: &[&str], env: impl FnOnce(&mut Command)) -> String {
    let mut cmd = keepty();
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    env(&mut cmd);
    let run = common::run_to_exit(cmd, Duration::from_secs(5));
    let err = run.stderr_text();
    assert!(
        run.finished,
        "keepty {args:?} still running after 5 s: it was not refused"
    );
    assert_eq!(run.code, Some(2), "keepty {args:?}: stderr {err:?}");
    assert_eq!(run.stdout, "", "keepty {args:?} printed on stdout");
    assert!(
        err.starts_with("keepty: ") && err.lines().count() == 1,
        "keepty {args:?}: one line on stderr, got {err:?}"
    );
    err
}

#[test]
fn a_memory_cap_too_small_for_any_request_is_refused() {
    let err = refused(&["--max-memory", "1K", "--", common::sh()]);
    assert!(
        err.contains("--max-memory 1K cannot hold one request") && err.contains("/healthz"),
        "{err}"
    );
}

#[test]
fn a_scrollback_past_the_memory_cap_is_refused() {
    let err = refused(&[
        "--scrollback",
        "64M",
        "--max-memory",
        "64M",
        "--",
        common::sh(),
    ]);
    assert!(
        err.contains("cannot hold one session") && err.contains("--scrollback 64M"),
        "{err}"
    );
    // The same with the machine's default cap, whatever it is here (at most 64M).
    let err = refused(&["--scrollback", "64M", "--", common::sh()]);
    assert!(err.contains("cannot hold one session"), "{err}");
}

#[test]
fn a_command_that_is_not_found_is_refused() {
    let err = refused(&["--", "keepty-bogus-command"]);
    assert!(
        err.contains("keepty-bogus-command is not found on PATH"),
        "{err}"
    );
    let err = refused(&["--", "/nonexistent/bin/sh"]);
    assert!(
        err.contains("/nonexistent/bin/sh is not an executable file"),
        "{err}"
    );
    // The default command is $SHELL: a broken one is refused the same way.
    let err = refused_with(&[], |c| {
        c.env("SHELL", "/nonexistent/shell");
    });
    assert!(err.contains("/nonexistent/shell"), "{err}");
    // Looked up on the server's PATH, as the sessions would be.
    let err = refused_with(&["--", "sh"], |c| {
        c.env("PATH", "/nonexistent");
    });
    assert!(
        err.contains("sh is not found on PATH (/nonexistent)"),
        "{err}"
    );
}

#[test]
fn zero_times_are_refused() {
    let err = refused(&["--ttl", "0", "--", common::sh()]);
    assert!(
        err.contains("--ttl 0ns") && err.contains("1s or more"),
        "{err}"
    );
    let err = refused(&["--header-timeout", "0", "--", common::sh()]);
    assert!(err.contains("--header-timeout 0"), "{err}");
}

#[test]
fn the_memory_cap_is_said_after_the_listening_line() {
    // spawn_server reads the port from the first stdout line: that it starts proves the line.
    let srv = spawn_server(&["--max-memory", "8M", "--", common::sh()]);
    let lines = wait_for_line(&srv, "memory cap");
    assert!(
        lines
            .iter()
            .any(|l| l == "keepty: memory cap 8M (--max-memory)"),
        "{lines:?}"
    );
    let srv = spawn_server(&["--", "sh"]);
    let lines = wait_for_line(&srv, "memory cap");
    let line = lines.iter().find(|l| l.contains("memory cap")).unwrap();
    assert!(
        line.contains("the default here: a quarter of") && line.contains("within 4M..64M"),
        "{line}"
    );
}

fn wait_for_line(srv: &common::Server, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines.extend(srv.stderr_lines());
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no stderr line with {needle:?} in 5 s: {lines:?}");
}

/// The hostname, `NAME.local` and `NAME.lan` are this server's own names; any other is 403
/// with a message naming the option that allows it.
#[test]
fn the_box_answers_to_its_own_names_and_says_how_to_allow_others() {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_ascii_lowercase();
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let first = name.split('.').next().unwrap().to_string();
    for host in [
        name.clone(),
        format!("{first}.local"),
        format!("{first}.lan:{}", srv.port),
    ] {
        let r = healthz_as(&addr, &host);
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
    }
    let r = healthz_as(&addr, "keepty-other.example");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("--allow-host NAME"),
        "{}",
        r.text()
    );
}

fn healthz_as(addr: &str, host: &str) -> http::Response {
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    http::raw_request(addr, head.as_bytes()).unwrap_or_else(|e| panic!("Host {host}: {e}"))
}
