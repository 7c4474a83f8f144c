//! Helpers shared by the integration tests: start the real binary on 127.0.0.1:0, read the
//! port from its first stdout line, and kill it (and its sessions) when the test ends.
#![allow(dead_code)]

pub mod auth;
pub mod http;
pub mod proc;
pub mod support;
pub mod ws;

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Holds the calling test apart from every other test of the same file that holds it, until
/// the guard drops. For tests that load the small machine on purpose (floods, hundreds of
/// shells, strace) or whose timing bounds are about the server, not about a neighbour test
/// starving it. Each test file is its own process, so files still run side by side.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock has said so already; the next one may run.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a socket error is a read or write timeout running out (which of the two kinds
/// depends on the call and the platform) rather than the peer closing or resetting.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A running keepty server; killed (with its process group) on drop.
pub struct Server {
    /// The child process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// stderr lines, collected by a background thread.
    pub stderr: mpsc::Receiver<String>,
    /// Session pids seen in admin lists, so that drop can clean up after a server that died
    /// without taking its sessions along.
    pub session_pids: Mutex<Vec<i32>>,
}

impl Server {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// All stderr lines logged so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc_kill(self.child.id() as i32, sig);
        }
    }
    /// Waits up to `timeout` for the server to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "getsid"]
    fn libc_getsid(pid: i32) -> i32;
    #[link_name = "prctl"]
    fn libc_prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

const PR_SET_PDEATHSIG: i32 = 1;

impl Server {
    /// `GET /admin/sessions` as JSON (the test runs on loopback, so no token is needed).
    /// Remembers the session pids for cleanup.
    pub fn admin_sessions(&self) -> serde_json::Value {
        let resp = http::get(&self.addr(), "/admin/sessions");
        assert_eq!(resp.status, 200, "/admin/sessions: {}", resp.text());
        let v = resp.json();
        if let Some(list) = v["sessions"].as_array() {
            let mut pids = self.session_pids.lock().unwrap();
            for s in list {
                if let Some(pid) = s["pid"].as_i64()
                    && pid > 1
                    && !pids.contains(&(pid as i32))
                {
                    pids.push(pid as i32);
                }
            }
        }
        v
    }

    /// The admin record of session `id`, if listed.
    pub fn session_record(&self, id: &str) -> Option<serde_json::Value> {
        let v = self.admin_sessions();
        v["sessions"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    }

    /// Polls the admin list until `pred` holds for session `id`'s record; panics after
    /// `timeout` with the last record seen.
    pub fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let rec = self.session_record(id);
            if let Some(r) = &rec
                && pred(r)
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last record: {rec:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether process `pid` still exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A graceful stop lets the server hang up its sessions; a bare SIGKILL would orphan
        // them if the server did not put them in their own sessions.
        if let Ok(None) = self.child.try_wait() {
            self.signal(15);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let pids =
            std::mem::take(&mut *self.session_pids.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in pids {
            // SAFETY: getsid/kill take plain integers. A session process is its own session
            // leader, so the sid check keeps us off a pid the kernel has since reused for an
            // unrelated process.
            unsafe {
                if process_alive(pid) && libc_getsid(pid) == pid {
                    libc_kill(-pid, 9);
                }
            }
        }
    }
}

/// Path of the keepty binary under test: `KEEPTY_BIN` when set (a cross build from
/// scripts/cross-build.sh, run by tests/cross.sh), else the one cargo built for these tests.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("KEEPTY_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_keepty").to_string())
    })
}

/// `KEEPTY_RUNNER`: the words the binary runs behind, e.g. `qemu-mips-static` for a foreign
/// build (binfmt is not mounted here, so the emulator is called directly). Empty by default.
pub fn runner() -> &'static [String] {
    static RUNNER: OnceLock<Vec<String>> = OnceLock::new();
    RUNNER.get_or_init(|| {
        std::env::var("KEEPTY_RUNNER")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

/// A command for the binary under test, behind its runner if there is one. Under qemu-user
/// the child's pid is the emulator's, which is the server's: signals reach it as they would.
pub fn keepty() -> Command {
    match runner().split_first() {
        Some((prog, rest)) => {
            let mut cmd = Command::new(prog);
            cmd.args(rest).arg(bin());
            cmd
        }
        None => Command::new(bin()),
    }
}

/// The runner and binary as words for a `sh -c` script (`exec RUNNER BIN ...`), quoted.
pub fn keepty_words() -> String {
    runner()
        .iter()
        .map(String::as_str)
        .chain([bin()])
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shell sessions run: `KEEPTY_SHELL` (tests/cross.sh points it at a wrapper that runs a
/// busybox of the target's architecture under qemu), else /bin/sh.
pub fn sh() -> &'static str {
    static SH: OnceLock<String> = OnceLock::new();
    SH.get_or_init(|| {
        std::env::var("KEEPTY_SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".to_string())
    })
}

/// Whether the binary runs behind a runner, printing why the calling test skips when it
/// does: for tests that need the host's view of the server process (its own RSS rather than
/// the emulator's, which grows with the code it has translated).
pub fn skip_under_runner(test: &str, why: &str) -> bool {
    if runner().is_empty() {
        return false;
    }
    eprintln!(
        "{test}: skipped under KEEPTY_RUNNER ({}): {why}",
        runner().join(" ")
    );
    true
}

/// Whether the binary under test is a `KEEPTY_BIN` cross build, printing why the calling test
/// skips when it is: they are static, so an LD_PRELOAD (libfaketime) never loads into them.
pub fn skip_for_static_bin(test: &str, why: &str) -> bool {
    if std::env::var_os("KEEPTY_BIN").is_none_or(|b| b.is_empty()) {
        return false;
    }
    eprintln!("{test}: skipped for KEEPTY_BIN {}: {why}", bin());
    true
}

/// How much longer a liveness bound may be: 1 for a native binary, `KEEPTY_TIME_SCALE`
/// (default 5) behind a runner, where every instruction of the server is emulated.
pub fn time_scale() -> u32 {
    if runner().is_empty() {
        return 1;
    }
    std::env::var("KEEPTY_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Starts keepty with `--listen 127.0.0.1:0` (unless `args` has a `--listen`: it may be given
/// once) plus `args` and waits for its startup line.
/// Whether the tests run as root (the account tests switch to `nobody` only then).
pub fn is_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// `nobody` from the password database, if this box has one with uid 65534.
pub fn have_nobody() -> bool {
    Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "65534")
}

/// How a keepty that was expected to end by itself ended.
pub struct Exited {
    /// False when it was still running at the deadline (it was killed then).
    pub finished: bool,
    /// The exit code; None when it was killed or died by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    /// As bytes: some tests look for raw control characters in it.
    pub stderr: Vec<u8>,
}

impl Exited {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs a prepared command (a startup that should be refused, say) until it exits, at most
/// `within`, then kills it, and returns what it printed.
pub fn run_to_exit(mut cmd: Command, within: Duration) -> Exited {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keepty");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for keepty") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    Exited {
        finished: status.is_some(),
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

pub fn spawn_server(args: &[&str]) -> Server {
    let mut cmd = keepty();
    if !args
        .iter()
        .take_while(|a| **a != "--")
        .any(|a| *a == "--listen" || a.starts_with("--listen="))
    {
        cmd.arg("--listen").arg("127.0.0.1:0");
    }
    cmd.args(args);
    spawn_cmd(cmd)
}

/// Starts a prepared command (the binary and its args) and waits for its startup line.
/// The server gets SIGTERM when the calling thread ends, so keep the `Server` on that thread.
pub fn spawn_cmd(mut cmd: Command) -> Server {
    // A process group of its own: a server that wrongly signals its own group (kill(0, ..))
    // must not take the test runner down with it. And since Ctrl-C on the runner then no
    // longer reaches the server, it is told to stop when the thread that started it dies.
    cmd.process_group(0);
    // Sessions that run the default command ($SHELL) get a shell without the developer's rc
    // files: an interactive bash runs ~/.bashrc, whose tools (pyenv's rehash, say) can stall
    // for a minute on a lock that a killed session left behind, and then no prompt comes.
    if !cmd.get_envs().any(|(k, _)| k == "SHELL") {
        cmd.env("SHELL", sh()).env_remove("ENV");
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc_prctl(PR_SET_PDEATHSIG, 15, 0, 0, 0);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keepty");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("KEEPTY_TEST_LOG").is_some() {
                eprintln!("[keepty] {line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (ptx, prx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = ptx.send(line);
        // Keep draining so the server never blocks on a full stdout pipe.
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    let line = prx
        .recv_timeout(Duration::from_secs(10))
        .expect("startup line within 10 s");
    let port = line
        .trim()
        .strip_prefix("keepty listening on http://")
        .or_else(|| line.trim().strip_prefix("keepty listening on https://"))
        .and_then(|rest| rest.trim_end_matches('/').rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected startup line: {line:?}"));
    Server {
        child,
        port,
        stderr: rx,
        session_pids: Mutex::new(Vec::new()),
    }
}
