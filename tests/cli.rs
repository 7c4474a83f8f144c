//! The subcommands (issue 18) against the real binary: `keepty attach` under a real PTY the
//! test opens (replay, typing, resize, a cut network resumed exactly through a proxy the test
//! cuts, detach leaving the session running, the program's exit status), `ls` and `drop`
//! with user and admin tokens, and the command line's own mistakes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use common::auth::TempDir;
use common::ws::{self, WAIT};
use common::{Server, keepty, spawn_server};

/// Runs `keepty ARGS` without a terminal; (exit status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = keepty();
    cmd.args(args)
        .env_remove("KEEPTY_URL")
        .env_remove("KEEPTY_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run keepty");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_line_mistakes_are_named_and_exit_2() {
    for (args, says) in [
        (&["--bogus"][..], "unknown option --bogus"),
        (&["-x"], "unknown option -x"),
        (&["bogus"], "unknown subcommand \"bogus\""),
        (&["--ttl", "1h", common::sh()], "unexpected argument"),
        (
            &["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
            "--listen given twice",
        ),
        (&["drop"], "drop needs a session ID"),
        (&["attach", "no such!"], "bad session id"),
        (&["ls", "--url", "https://127.0.0.1:1/"], "not supported"),
        (&["ls", "--wat"], "unknown option --wat"),
    ] {
        let (code, _, err) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err:?} lacks {says:?}");
        let lines: Vec<&str> = err.trim_end().lines().collect();
        assert_eq!(lines.len(), 2, "one line and a hint: {err:?}");
        assert!(lines[1].starts_with("Try 'keepty"), "{err:?}");
    }
    let (code, _, err) = run(&["ls", "--help"], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_unreachable_server_exits_1() {
    // A port that was just free: nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    for args in [&["ls", "--url", &url][..], &["attach", "x", "--url", &url]] {
        let (code, _, err) = run(args, &[]);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("cannot reach keepty"), "{err}");
    }
    // KEEPTY_URL is the fallback.
    let (code, _, err) = run(&["ls"], &[("KEEPTY_URL", &url)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// Opens session `id` as `token`'s owner (bearer header), waits for `attached`, leaves.
fn open_session(port: u16, id: &str, token: &str) {
    let url = format!("ws://127.0.0.1:{port}/ws?session={id}&new=1");
    let mut req = url.as_str().into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Sec-WebSocket-Protocol", "keepty.v1".parse().unwrap());
    h.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let (mut sock, _) = tungstenite::client::client(req, s).expect("handshake");
    loop {
        match sock.read().expect("attached") {
            Message::Text(t) if t.as_str().contains("\"attached\"") => break,
            _ => {}
        }
    }
    let _ = sock.close(None);
    let _ = sock.flush();
}

fn listed(out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut ids: Vec<String> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn ls_and_drop_with_tokens() {
    let dir = TempDir::new("cli-tokens");
    let users = dir.write("users", "alice tok-alice\nbob tok-bob\n", 0o600);
    let admins = dir.write("admins", "tok-root\n", 0o600);
    let root_file = dir.write("root-token", "# the admin's\ntok-root\n", 0o600);
    let srv = spawn_server(&[
        "--token-file",
        &users,
        "--admin-token-file",
        &admins,
        "--",
        common::sh(),
    ]);
    let url = srv.url();
    open_session(srv.port, "a1", "tok-alice");
    open_session(srv.port, "a2", "tok-alice");
    open_session(srv.port, "b1", "tok-bob");
    let as_ = |token: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &url]);
        run(&all, &[("KEEPTY_TOKEN", token)])
    };

    let (code, out, err) = as_("tok-alice", &["ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&out), ["a1", "a2"]);
    let (code, out, err) = as_("tok-bob", &["ls"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("OWNER") && lines[0].contains("RSS"),
        "{out}"
    );
    assert!(
        lines[0].contains("COMMAND") && lines[1].contains("b1"),
        "{out}"
    );
    assert!(lines[1].starts_with("bob"), "{out}");

    // Everyone's, with the admin token; a user token is refused with a hint.
    let (code, out, err) = run(
        &[
            "ls",
            "--all",
            "--json",
            "--url",
            &url,
            "--token-file",
            &root_file,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&out), ["a1", "a2", "b1"]);
    let (code, _, err) = as_("tok-alice", &["ls", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = as_("tok-root", &["ls"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("use --all"), "{err}");
    let (code, _, err) = as_("wrong", &["ls"]);
    assert_eq!(code, 1, "{err}");
    // A refused WebSocket handshake (the client's own, not tungstenite's) carries the
    // server's reason.
    let (code, _, err) = as_("wrong", &["attach", "a1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server answered 401 (unauthorized: wrong token)"),
        "{err}"
    );

    // Drop needs the admin; drop-all takes the rest.
    let (code, _, err) = as_("tok-alice", &["drop", "a1"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = as_("tok-root", &["drop", "a1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("dropped a1"), "{err}");
    let (code, _, err) = as_("tok-root", &["drop", "a1"]);
    assert_eq!(code, 1, "dropping it twice: {err}");
    let (_, out, _) = as_("tok-root", &["ls", "--all", "--json"]);
    assert_eq!(listed(&out), ["a2", "b1"]);
    let (code, _, err) = as_("tok-root", &["drop-all"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("dropped 2 sessions"), "{err}");
    let (_, out, _) = as_("tok-root", &["ls", "--all", "--json"]);
    assert!(listed(&out).is_empty());
}

// ---- attach under a real PTY ---------------------------------------------------------

/// `keepty attach` running with a PTY slave as its terminal; the test holds the master.
struct Attached {
    child: Child,
    master: OwnedFd,
    /// Everything the master read so far.
    seen: Arc<Mutex<Vec<u8>>>,
}

mod ioctl {
    nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, nix::pty::Winsize);
}

fn winsize(cols: u16, rows: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Attached {
    fn start(args: &[&str], size: (u16, u16)) -> Attached {
        let pair = nix::pty::openpty(Some(&winsize(size.0, size.1)), None).expect("openpty");
        let mut cmd = keepty();
        cmd.args(args)
            .env_remove("KEEPTY_URL")
            .env_remove("KEEPTY_TOKEN")
            .stdin(Stdio::from(pair.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pair.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pair.slave.try_clone().unwrap()));
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, ioctl): the
        // slave becomes the client's controlling terminal, so a resize sends it SIGWINCH.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn keepty attach");
        drop(cmd);
        drop(pair.slave);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = pair.master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            // Ends with EIO once the client and its slave are gone.
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Attached {
            child,
            master: pair.master,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{what}: {needle:?} never came; seen {:?}",
                tail(&self.text())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&self, keys: &[u8]) {
        let mut f = std::fs::File::from(self.master.try_clone().unwrap());
        f.write_all(keys).unwrap();
    }

    fn resize(&self, cols: u16, rows: u16) {
        // SAFETY: TIOCSWINSZ reads one winsize from a live local; the fd is our master.
        unsafe { ioctl::set_winsize(self.master.as_raw_fd(), &winsize(cols, rows)) }.unwrap();
    }

    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "keepty attach did not exit; seen {:?}",
                tail(&self.text())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(600);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A session `id` with some output in it, made over the WebSocket and left detached.
fn session_with_output(srv: &Server, id: &str, line: &str) {
    let mut c = ws::connect(srv.port, &format!("session={id}&new=1"));
    c.expect_attached();
    c.send_input(format!("{line}\r").as_bytes());
    c.read_output_until(b"marker-42", WAIT);
    c.close();
    srv.wait_session(id, WAIT, "detached", |r| r["clients"] == 0);
}

#[test]
fn attach_replays_types_resizes_detaches_and_exits_with_the_program() {
    let srv = spawn_server(&["--", common::sh()]);
    let url = srv.url();
    session_with_output(&srv, "work", "echo marker-$((6*7))");

    // No ID: the most recent detached session, which is `work`.
    let mut a = Attached::start(&["attach", "--url", &url], (100, 30));
    a.wait_for("keepty: attached to work", "the banner");
    a.wait_for("marker-42", "the replay");
    let rec = srv.wait_session("work", WAIT, "attached", |r| r["clients"] == 1);
    assert_eq!(
        (rec["cols"].as_u64(), rec["rows"].as_u64()),
        (Some(100), Some(30))
    );

    a.type_keys(b"echo typed-$((2*5))\r");
    a.wait_for("typed-10", "typing");
    a.resize(120, 40);
    srv.wait_session("work", WAIT, "resized", |r| {
        r["cols"] == 120 && r["rows"] == 40
    });
    a.type_keys(b"stty size\r");
    a.wait_for("40 120", "the program sees the new size");

    a.type_keys(b"\x1c");
    assert_eq!(a.wait_exit(), 0, "a detach exits 0");
    a.wait_for("keepty: detached", "the detach line, read after the exit");
    let rec = srv.wait_session("work", WAIT, "detached again", |r| r["clients"] == 0);
    assert_eq!(rec["state"], "running", "the session outlives the detach");

    // Again by id, with another detach key; then the program's exit is the client's.
    let mut b = Attached::start(&["attach", "-e", "^a", "work", "--url", &url], (80, 24));
    b.wait_for("keepty: attached to work", "second attach");
    b.type_keys(b"\x1cecho still-$((3*3))\r");
    b.wait_for("still-9", "Ctrl-\\ is an ordinary key under -e ^a");
    b.type_keys(b"exit 7\r");
    assert_eq!(b.wait_exit(), 7, "the program's status");
    // The reader thread may still be behind the exit (it was, under qemu at load).
    b.wait_for("exited with code 7", "the exit line, read after the exit");
}

#[test]
fn new_creates_and_a_refusal_is_one_line() {
    let srv = spawn_server(&["--", common::sh()]);
    let url = srv.url();
    let mut a = Attached::start(&["new", "fresh", "--url", &url], (80, 24));
    a.wait_for("keepty: created fresh", "the banner");
    a.type_keys(b"echo in-$((1+1))\r");
    a.wait_for("in-2", "typing");
    a.type_keys(b"\x1c");
    assert_eq!(a.wait_exit(), 0);
    srv.wait_session("fresh", WAIT, "kept", |r| r["state"] == "running");

    // An unknown id is refused before raw mode, as one line, exit 1.
    let mut b = Attached::start(&["attach", "nothing-here", "--url", &url], (80, 24));
    assert_eq!(b.wait_exit(), 1);
    b.wait_for("not_found", "the refusal");
}

// ---- a network that drops ------------------------------------------------------------

/// A TCP proxy to `port` whose live connections the test can cut at once. It listens on
/// 127.0.0.2 with the server's own port, so the `Host` the client sends names the server.
struct Proxy {
    live: Arc<Mutex<Vec<TcpStream>>>,
    accepted: mpsc::Receiver<()>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let l = TcpListener::bind(("127.0.0.2", target)).expect("bind 127.0.0.2");
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (tx, accepted) = mpsc::channel();
        let conns = live.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                conns.lock().unwrap().push(client.try_clone().unwrap());
                conns.lock().unwrap().push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        Proxy { live, accepted }
    }

    /// Cuts every connection through the proxy, both ways.
    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_dropped_network_resumes_exactly() {
    let srv = spawn_server(&["--", common::sh()]);
    let proxy = Proxy::start(srv.port);
    let url = format!("http://127.0.0.2:{}/", srv.port);
    session_with_output(&srv, "net", "echo marker-$((6*7))");
    let mut a = Attached::start(&["attach", "net", "--url", &url], (80, 24));
    a.wait_for("keepty: attached to net", "the banner");
    // Numbered lines, slowly, across the cut; the end is a marker the shell computes.
    a.type_keys(
        b"i=0; while [ $i -lt 300 ]; do echo n-$i; i=$((i+1)); sleep 0.01; done; echo done-$((5*5))\r",
    );
    a.wait_for("n-40\r\n", "the first lines");
    proxy.cut();
    a.wait_for("connection lost", "the line that says so");
    a.wait_for("keepty: reconnected to net at offset", "the reconnect");
    assert_eq!(
        proxy.accepted.try_iter().count(),
        2,
        "one connection, then one more"
    );
    a.wait_for("done-25", "the end of the output");
    // Without the banners (each one line with its own CR LF around it), every line came
    // once and in order: nothing lost, nothing twice.
    let text = a.text();
    let mut clean = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\r\nkeepty: ") {
        clean.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find("\r\n").map_or(after.len(), |j| j + 2);
        rest = &after[end..];
    }
    clean.push_str(rest);
    let numbers: Vec<u32> = clean
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("n-")?.parse().ok())
        .collect();
    assert_eq!(
        numbers,
        (0..300).collect::<Vec<u32>>(),
        "output across the cut: {:?}",
        tail(&clean)
    );
    a.type_keys(b"\x1c");
    assert_eq!(a.wait_exit(), 0);
}
