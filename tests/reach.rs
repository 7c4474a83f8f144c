//! First contact (src/reach.rs): on all interfaces, keepty names its LAN addresses on stderr,
//! and shows the phone link with the first user's token, and its QR code, only when stderr is
//! a terminal (SPEC 5); the first stdout line stays the startup line tests read.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::auth::TempDir;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn token() -> String {
    format!(
        "~~~???reach-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// The fragment form of the token, as the page decodes it.
fn encoded(token: &str) -> String {
    token.replace('?', "%3F")
}

#[test]
fn a_pipe_gets_addresses_on_stderr_and_no_token_anywhere() {
    let dir = TempDir::new("reach-pipe");
    let token = token();
    let users = dir.write("users", &format!("phone {token}\nother x-{token}\n"), 0o600);
    let mut child = common::keepty()
        .args([
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            &users,
            "--",
            "/bin/true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keepty");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Until the address line (or the line saying there is none), at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut err = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                let done =
                    l.contains("reachable from other devices") || l.contains("no LAN address");
                err.push(l);
                if done {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // SAFETY: kill(2) on our own child; no memory involved.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let mut out = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out);
    let _ = child.wait();
    // The reader thread forwards the rest until the pipe closes.
    let drain = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => err.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout beyond the startup line: {out:?}");
    assert!(
        lines[0].starts_with("keepty listening on http://0.0.0.0:") && lines[0].ends_with('/'),
        "{out:?}"
    );
    let port = lines[0].trim_end_matches('/').rsplit(':').next().unwrap();
    let reach = err
        .iter()
        .find(|l| l.contains("reachable from other devices") || l.contains("no LAN address"))
        .unwrap_or_else(|| panic!("no address line on stderr: {err:?}"));
    if let Some(list) = reach.strip_prefix("keepty: reachable from other devices at ") {
        for url in list.split(' ') {
            let host = url
                .strip_prefix("http://")
                .and_then(|r| r.strip_suffix(&format!(":{port}/")))
                .unwrap_or_else(|| panic!("bad address {url:?} in {reach:?}"));
            let ip: std::net::IpAddr = host.parse().unwrap_or_else(|_| panic!("{host:?}"));
            assert!(
                ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified(),
                "{reach}"
            );
        }
    }
    let all = err.join("\n");
    assert!(
        !all.contains(&token) && !all.contains(&encoded(&token)),
        "a token on stderr: {all}"
    );
    assert!(
        all.contains("shown only when stderr is a terminal"),
        "no word about the phone link: {all}"
    );
}

/// On a terminal (util-linux `script` gives keepty one as its stderr), stderr has the link
/// with the first user's token and a QR code in half blocks; stdout, here a file, has the
/// startup line and no token.
#[test]
fn a_terminal_gets_the_phone_link_and_a_qr_code() {
    let dir = TempDir::new("reach-tty");
    let token = token();
    let users = dir.write("users", &format!("phone {token}\n"), 0o600);
    let out_path = dir.path("stdout");
    let pid_path = dir.path("pid");
    // keepty is the session leader on script's terminal, outside script's process group, and
    // takes the SIGHUP of a closed terminal for a token reload: it is stopped by its pid.
    let inner = format!(
        "echo $$ > {}; exec {} --listen 0.0.0.0:0 --token-file {users} -- /bin/true >{}",
        pid_path.display(),
        common::keepty_words(),
        out_path.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("util-linux `script` (Debian: bsdutils)");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
            line.clear();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    // The QR code's last line is the quiet zone after the last module row: wait for the line
    // that follows the first link, then for the code to end (a line of blanks only).
    let mut qr_lines = 0;
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            if l.starts_with("\x1b[30;47m") {
                qr_lines += 1;
            }
            let blank = l.starts_with("\x1b[30;47m")
                && l.trim_start_matches("\x1b[30;47m")
                    .trim_end()
                    .trim_end_matches("\x1b[0m")
                    .trim()
                    == "";
            out.push(l);
            if blank && qr_lines > 2 {
                break;
            }
        }
    }
    let keepty: i32 = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if keepty > 0 {
        // SAFETY: kill(2) on the keepty this test started; no memory involved.
        unsafe {
            libc_kill(keepty, 15);
        }
        let gone = Instant::now() + Duration::from_secs(5);
        while common::process_alive(keepty) && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // SAFETY: kill(2) on the process group of a child we spawned; no memory involved.
    unsafe {
        libc_kill(-(child.id() as i32), 15);
    }
    let _ = child.wait();
    assert!(keepty > 0, "script did not start keepty");
    assert!(
        !common::process_alive(keepty),
        "keepty {keepty} outlived SIGTERM"
    );
    let text = out.concat();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        stdout.lines().next().is_some_and(|l| l
            .trim_end()
            .starts_with("keepty listening on http://0.0.0.0:")),
        "{stdout:?}"
    );
    if text.contains("no LAN address") {
        return;
    }
    let link = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/#token="))
        .unwrap_or_else(|| panic!("no phone link on the terminal: {text:?}"));
    assert!(
        link.starts_with("http://") && link.ends_with(&format!("/#token={}", encoded(&token))),
        "{link}"
    );
    assert!(qr_lines > 10, "no QR code after the link: {text:?}");
    assert!(text.contains("reachable from other devices"), "{text}");
    assert!(
        !stdout.contains(&token) && !stdout.contains(&encoded(&token)),
        "a token on stdout: {stdout}"
    );
}
