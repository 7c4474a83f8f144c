//! The other accounts on the box (issue 15): sessions run as the token's unix user, with a
//! clean environment; a token-less keepty serves only its own uid on loopback; a drop or
//! reap reaches processes that left the session (`setsid`).
//!
//! These need root (to switch to `nobody`, uid 65534) and, for the drop, a writable cgroup2
//! hierarchy; where either is missing the test says so and returns.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::auth::TempDir;
use common::http;
use common::support::{StrayGuard, number_after};
use common::ws::{self, WAIT};
use common::{Server, keepty, process_alive, spawn_cmd};

const CAROL: &str = "carol-Vz3Lq8Rt1Mw6Np0Xs4Ke";
const NOBODY: u32 = 65534;

fn skip(why: &str) {
    eprintln!("skipped: {why}");
}

/// A keepty started with `args` and then `-- /bin/sh`, with one extra environment variable
/// that no session may see.
fn server(args: &[&str]) -> Server {
    let mut cmd = keepty();
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .args(["--", common::sh()])
        .env("KEEPTY_TEST_ONLY_IN_KEEPTY", "leaked-from-keepty")
        .env("LANG", "C.UTF-8");
    spawn_cmd(cmd)
}

/// Runs keepty to its exit and returns (exit code, stderr).
fn start_fails(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = keepty();
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .args(["--", common::sh()]);
    let run = common::run_to_exit(cmd, Duration::from_secs(10));
    (run.code, run.stderr_text())
}

/// An HTTP request sent by a process running as `uid` (python3 drops root before it
/// connects): the status code, or the reason it could not ask.
fn request_as(uid: u32, port: u16, path: &str, extra: &str) -> Result<u16, String> {
    let script = format!(
        "import os, socket\n\
         os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n\
         s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n\
         s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n{extra}Connection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while b'\\r\\n' not in data:\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(os.getuid(), data.split(b'\\r\\n')[0].decode())\n"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut f = text.split_whitespace();
    if f.next() != Some(&uid.to_string()) {
        return Err(format!(
            "the client did not run as {uid}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "HTTP/1.1 401 Unauthorized"
    f.nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {text}"))
}

const UPGRADE: &str = "Connection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n";

#[test]
fn without_a_token_file_loopback_serves_only_keepty_s_own_uid() {
    if common::skip_under_runner(
        "without_a_token_file_loopback_serves_only_keepty_s_own_uid",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    if !common::is_root() || !std::path::Path::new("/usr/bin/python3").exists() {
        return skip("needs root and /usr/bin/python3 to connect as another uid");
    }
    let srv = server(&[]);
    let port = srv.port;
    // Another account's socket: refused, whatever it asks, and the page still loads.
    for (path, extra) in [
        ("/api/sessions", ""),
        ("/ws?new=1", UPGRADE),
        ("/admin/sessions", ""),
    ] {
        assert_eq!(
            request_as(NOBODY, port, path, extra),
            Ok(401),
            "{path} from uid {NOBODY}"
        );
    }
    assert_eq!(
        request_as(NOBODY, port, "/", ""),
        Ok(200),
        "the page is public"
    );
    // The same requests from root (keepty's own uid here) work.
    assert_eq!(request_as(0, port, "/api/sessions", ""), Ok(200));
    assert_eq!(request_as(0, port, "/ws?new=1", UPGRADE), Ok(101));
    let r = http::get(&srv.addr(), "/api/sessions");
    assert_eq!(r.status, 200, "{}", r.text());
    // The refusal says what to do.
    let lines = srv.stderr_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("uid 65534") && l.contains("needs a token")),
        "{lines:?}"
    );
    // With a token file the token decides, not the socket's owner.
    let dir = TempDir::new("acct-tok");
    let users = dir.write("users", &format!("carol {CAROL}\n"), 0o600);
    let srv = server(&["--token-file", &users]);
    let auth = format!("Authorization: Bearer {CAROL}\\r\\n");
    assert_eq!(
        request_as(NOBODY, srv.port, "/api/sessions", &auth),
        Ok(200)
    );
    assert_eq!(request_as(NOBODY, srv.port, "/api/sessions", ""), Ok(401));
}

#[test]
fn a_token_user_runs_as_its_unix_user_and_cannot_read_keepty_s_files() {
    if common::skip_under_runner(
        "a_token_user_runs_as_its_unix_user_and_cannot_read_keepty_s_files",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    if !common::is_root() || !common::have_nobody() {
        return skip("needs root and a nobody user (uid 65534)");
    }
    let dir = TempDir::new("acct-run");
    let users = dir.write("users", &format!("carol {CAROL} - nobody\n"), 0o600);
    let srv = server(&["--token-file", &users]);
    let auth = format!("Bearer {CAROL}");
    let mut c = ws::try_connect_with(
        srv.port,
        "new=1",
        Some("keepty.v1"),
        &[("Authorization", auth.as_str())],
    )
    .expect("carol's session");
    c.expect_attached();
    c.send_input(
        format!(
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,) home=$HOME user=$USER \
             logname=$LOGNAME cwd=$(pwd); cat {users} >/dev/null 2>&1 || echo token-file-$((1+1)); \
             cat /proc/$PPID/environ >/dev/null 2>&1 || echo environ-$((2+2)); \
             ls -l /proc/$$/fd | tr -s ' ' | cut -d' ' -f9- | tr '\\n' ' '; echo; echo end-$((3+3))\n"
        )
        .as_bytes(),
    );
    let out = c.read_output_until(b"end-6", WAIT);
    let text = String::from_utf8_lossy(&out);
    let home = Command::new("sh")
        .args(["-c", "getent passwd nobody | cut -d: -f6"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(text.contains("uid=65534 gid=65534"), "{text}");
    assert!(
        text.contains("user=nobody logname=nobody"),
        "USER, LOGNAME from passwd: {text}"
    );
    assert!(
        text.contains(&format!("home={home} ")),
        "HOME from passwd: {text}"
    );
    let cwd = if std::path::Path::new(&home).is_dir() {
        home.as_str()
    } else {
        "/"
    };
    assert!(
        text.contains(&format!("cwd={cwd}")),
        "cwd its home, else /: {text}"
    );
    assert!(
        !text.contains("groups=0") && !text.contains(",0,"),
        "root's groups dropped: {text}"
    );
    assert!(
        text.contains("token-file-2"),
        "it read the token file: {text}"
    );
    assert!(
        text.contains("environ-4"),
        "it read keepty's environment: {text}"
    );
    // Nothing of keepty's is open in the shell: no socket, no PTY master, no cgroup file.
    assert!(text.contains("/dev/pts/"), "the fd listing ran: {text}");
    for leak in ["socket:", "ptmx", "cgroup"] {
        assert!(
            !text.contains(leak),
            "the shell holds keepty's {leak}: {text}"
        );
    }
    c.close();
}

#[test]
fn a_session_s_environment_is_the_documented_one_not_keepty_s() {
    if common::skip_under_runner(
        "a_session_s_environment_is_the_documented_one_not_keepty_s",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    let srv = server(&[]);
    let mut c = ws::connect(srv.port, "new=1&session=envcheck");
    c.expect_attached();
    c.send_input(b"env | sort; echo end-$((3+3))\n");
    let out = c.read_output_until(b"end-6", WAIT);
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("leaked-from-keepty"),
        "keepty's environment reached the session: {text}"
    );
    for want in [
        "TERM=xterm-256color",
        "COLORTERM=truecolor",
        "KEEPTY_SESSION=envcheck",
        "LANG=C.UTF-8",
        "HOME=",
        "PATH=",
    ] {
        assert!(text.contains(want), "no {want}: {text}");
    }
    c.close();
}

#[test]
fn a_unix_user_that_cannot_be_used_refuses_the_start() {
    if common::skip_under_runner(
        "a_unix_user_that_cannot_be_used_refuses_the_start",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    let dir = TempDir::new("acct-bad");
    let users = dir.write(
        "users",
        &format!("carol {CAROL} - keepty-no-such-user\n"),
        0o600,
    );
    let (code, err) = start_fails(&["--token-file", &users]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("line 1") && err.contains("users"),
        "{err}"
    );
    assert!(!err.contains(CAROL), "token logged: {err}");
    // A line with its fields swapped puts the token where the unix user goes: not echoed.
    let swapped = dir.write("swapped", &format!("carol nobody - {CAROL}\n"), 0o600);
    let (code, err) = start_fails(&["--token-file", &swapped]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains(CAROL), "token logged: {err}");
    if common::is_root() && common::have_nobody() {
        // Sessions as nobody, and a token file nobody may read: refused, not warned about.
        let loose = dir.write("loose", &format!("carol {CAROL} - nobody\n"), 0o644);
        let (code, err) = start_fails(&["--token-file", &loose]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }
}

/// Starts `setsid sh` ignoring SIGHUP (so only the SIGKILL can end it) from a session's
/// shell and returns its pid: it has left the session's process groups and session id.
fn start_escapee(c: &mut ws::Ws) -> i32 {
    c.send_input(
        b"setsid sh -c 'trap \"\" HUP; echo esc=$$; exec sleep 1000' </dev/null & sleep 0.3; echo up-$((1+1))\n",
    );
    let out = c.read_output_until(b"up-2", WAIT);
    number_after(&out, b"esc=").unwrap_or_else(|| panic!("no pid: {}", ws::tail(&out)))
}

/// Whether this machine lets a process of ours make a cgroup2 child of its own cgroup (what
/// keepty needs), tried independently of keepty so that a keepty that does not use cgroups
/// fails here instead of skipping.
fn cgroups_available() -> Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = mountinfo
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .ok_or("no cgroup2 mount")?
        .to_string();
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup2 entry in /proc/self/cgroup")?;
    let probe = std::path::Path::new(&mount)
        .join(own.trim_start_matches('/'))
        .join(format!("keepty-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

fn wait_dead(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !process_alive(pid)
}

#[test]
fn a_drop_and_a_reap_reach_processes_that_left_the_session() {
    if common::skip_under_runner(
        "a_drop_and_a_reap_reach_processes_that_left_the_session",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    if let Err(why) = cgroups_available() {
        return skip(&format!(
            "no writable cgroup2 hierarchy here ({why}); a drop reaches the session only"
        ));
    }
    let srv = server(&["--ttl", "2s"]);
    // Drop.
    let mut c = ws::connect(srv.port, "new=1&session=escape-drop");
    c.expect_attached();
    let esc = start_escapee(&mut c);
    let _guard = StrayGuard(esc);
    let sid = std::fs::read_to_string(format!("/proc/{esc}/stat")).unwrap_or_default();
    assert!(process_alive(esc), "{sid}");
    let r = http::request(&srv.addr(), "POST", "/admin/drop?id=escape-drop", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // SIGHUP is ignored; the SIGKILL comes 3 s after the drop.
    assert!(
        wait_dead(esc, Duration::from_secs(8)),
        "a setsid process outlived its session's drop"
    );
    c.abort();

    // Reap (TTL 2 s once detached).
    let mut c = ws::connect(srv.port, "new=1&session=escape-reap");
    c.expect_attached();
    let esc = start_escapee(&mut c);
    let _guard = StrayGuard(esc);
    c.abort();
    assert!(
        wait_dead(esc, Duration::from_secs(12)),
        "a setsid process outlived its session's reap"
    );
    // The session cgroups are gone with them.
    let pid = srv.child.id();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let left: Vec<String> = mountinfo
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .filter_map(|l| l.split_whitespace().nth(4))
        .flat_map(|m| std::fs::read_dir(m).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("keepty-{pid}-")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = left;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left.retain(|n| {
            mountinfo
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .any(|m| std::path::Path::new(m).join(n).exists())
        });
    }
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// An upgrade in place carries each session's cgroup (its directory is in the state), so a
/// drop after the upgrade still reaches a process that left the session.
#[test]
fn a_drop_after_an_upgrade_still_reaches_processes_that_left_the_session() {
    if common::skip_under_runner(
        "a_drop_after_an_upgrade_still_reaches_processes_that_left_the_session",
        "switching accounts, cgroups and socket owners are host kernel paths the emulated server reaches through qemu's own forks",
    ) {
        return;
    }
    if let Err(why) = cgroups_available() {
        return skip(&format!(
            "no writable cgroup2 hierarchy here ({why}); a drop reaches the session only"
        ));
    }
    let srv = server(&[]);
    let mut c = ws::connect(srv.port, "new=1&session=escape-upgrade");
    c.expect_attached();
    let esc = start_escapee(&mut c);
    let _guard = StrayGuard(esc);
    srv.signal(12); // SIGUSR2
    let deadline = Instant::now() + WAIT;
    let mut upgraded = false;
    while !upgraded && Instant::now() < deadline {
        upgraded = srv
            .stderr
            .recv_timeout(Duration::from_millis(100))
            .is_ok_and(|l| l.contains("keepty: upgraded in place"));
    }
    assert!(upgraded, "no upgrade within {WAIT:?}");
    c.abort();
    assert!(
        process_alive(esc),
        "the upgrade itself must not kill the session's processes"
    );
    let r = http::request(&srv.addr(), "POST", "/admin/drop?id=escape-upgrade", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_dead(esc, Duration::from_secs(8)),
        "a setsid process outlived a drop made after an upgrade"
    );
}
