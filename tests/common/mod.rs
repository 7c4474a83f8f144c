//! Helpers shared by the integration tests: start the real binary on 127.0.0.1:0, read the
//! port from its first stdout line, and kill it (and its sessions) when the test ends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running keepty server; killed (with its process group) on drop.
pub struct Server {
    /// The child process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// stderr lines, collected by a background thread.
    pub stderr: mpsc::Receiver<String>,
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of the keepty binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keepty")
}

/// Starts keepty with `--listen 127.0.0.1:0` plus `args` and waits for its startup line.
pub fn spawn_server(args: &[&str]) -> Server {
    let mut cmd = Command::new(bin());
    cmd.arg("--listen").arg("127.0.0.1:0");
    cmd.args(args);
    spawn_cmd(cmd)
}

/// Starts a prepared command (the binary and its args) and waits for its startup line.
pub fn spawn_cmd(mut cmd: Command) -> Server {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
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
    let line = prx.recv_timeout(Duration::from_secs(10)).expect("startup line within 10 s");
    let port = line
        .trim()
        .strip_prefix("keepty listening on http://")
        .and_then(|rest| rest.trim_end_matches('/').rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected startup line: {line:?}"));
    Server { child, port, stderr: rx }
}
