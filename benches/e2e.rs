//! End-to-end numbers for the real binary over loopback: size, memory, throughput and
//! keystroke echo latency. Run with `benches/e2e.sh` (builds the release binary first) or
//! `cargo bench --bench e2e` with `KEEPTY_BIN` pointing at a binary.
//!
//! These are measurements to print and compare by eye, not assertions: timing on a shared
//! 2-core machine is too noisy to gate on.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ws::{self, Msg, WAIT};
use common::{Server, spawn_cmd};

fn keepty_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("KEEPTY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/keepty"));
    let bin = if bin.is_relative() {
        root.join(bin)
    } else {
        bin
    };
    if bin.is_file() {
        bin
    } else {
        // cargo builds the bench profile's binary for us; it inherits the release settings.
        eprintln!("{} not found; using {}", bin.display(), common::bin());
        PathBuf::from(common::bin())
    }
}

fn spawn(bin: &PathBuf, args: &[&str]) -> Server {
    let mut cmd = Command::new(bin);
    cmd.arg("--listen").arg("127.0.0.1:0").args(args);
    spawn_cmd(cmd)
}

/// Resident set size of `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn binary_size(bin: &PathBuf) {
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!("binary: {}", bin.display());
    println!(
        "  size as built:          {size:>10} bytes ({:.2} MiB)",
        size as f64 / 1048576.0
    );
    // The release profile already strips; strip a copy anyway in case this binary was not.
    let copy = std::env::temp_dir().join(format!("keepty-e2e-strip-{}", std::process::id()));
    if std::fs::copy(bin, &copy).is_ok()
        && Command::new("strip")
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success())
    {
        let stripped = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
        println!(
            "  size stripped:          {stripped:>10} bytes ({:.2} MiB)",
            stripped as f64 / 1048576.0
        );
    }
    let _ = std::fs::remove_file(&copy);
}

fn memory(bin: &PathBuf) {
    let srv = spawn(bin, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(srv.child.id());
    println!("memory (VmRSS of the server process):");
    println!("  idle:                   {idle:>10} KiB");
    for _ in 0..10 {
        let mut c = ws::connect(srv.port, "new=1&cols=80&rows=24");
        c.expect_attached();
        // The prompt shows the shell is up before we leave.
        c.read_output_at_least(1, WAIT);
        c.close();
    }
    std::thread::sleep(Duration::from_secs(1));
    let with10 = rss_kib(srv.child.id());
    let list = srv.admin_sessions();
    let sessions = list["sessions"].as_array().map(Vec::len).unwrap_or(0);
    let shells: u64 = list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| rss_kib(p as u32))
        .sum();
    println!(
        "  {sessions} detached sessions:    {with10:>10} KiB (+{} KiB)",
        with10.saturating_sub(idle)
    );
    println!("  their shells together:  {shells:>10} KiB (not the server's)");
    println!(
        "  memory reserved (admin): {} of cap {}",
        list["memory"]["reserved"], list["memory"]["cap"]
    );
}

/// CPU time (user + system) `pid` has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime are fields 14 and 15; the command name before them may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ is 100 on every Linux this runs on.
    f.iter().sum::<u64>() as f64 / 100.0
}

fn throughput(bin: &PathBuf, flow: bool) {
    let srv = spawn(
        bin,
        &[
            "--",
            "/bin/sh",
            "-c",
            "stty -opost; head -c 64M /dev/zero | base64",
        ],
    );
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut c = ws::connect(srv.port, if flow { "new=1&flow=1" } else { "new=1" });
        // Acks in 64 KiB steps: one per frame would measure the ack path, not the output path.
        c.auto_ack = false;
        c.expect_attached();
        let cpu0 = cpu_secs(srv.child.id());
        let start = Instant::now();
        let deadline = start + Duration::from_secs(120);
        let mut frames = 0u64;
        loop {
            assert!(Instant::now() < deadline, "throughput run took over 120 s");
            match c.next_msg(WAIT) {
                Some(Msg::Binary(_)) => {
                    frames += 1;
                    if flow && c.offset - c.acked >= 64 << 10 {
                        let o = c.offset;
                        c.ack(o);
                    }
                }
                Some(Msg::Text(v)) if v["type"] == "exited" => break,
                Some(Msg::Text(_)) => {}
                other => panic!("throughput run ended early: {other:?}"),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_secs(srv.child.id()) - cpu0;
        let bytes = c.offset;
        let _ = c.read_to_close(WAIT);
        rates.push(bytes as f64 / 1048576.0 / secs);
        println!(
            "  run: {bytes} bytes in {secs:.3} s, {frames} frames (avg {} B), server CPU {cpu:.2} s",
            bytes / frames.max(1)
        );
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let how = if flow {
        "flow=1, acking every 64 KiB"
    } else {
        "no flow, TCP backpressure only"
    };
    println!("throughput ({how}), median of 3: {:.1} MiB/s", rates[1]);
}

unsafe extern "C" {
    fn posix_openpt(flags: i32) -> i32;
    fn grantpt(fd: i32) -> i32;
    fn unlockpt(fd: i32) -> i32;
    fn ptsname_r(fd: i32, buf: *mut u8, len: usize) -> i32;
}

/// The same output read straight from a PTY master by this process: the ceiling keepty's
/// throughput is to be compared with (PTYs are slow in some sandboxes).
fn pty_baseline() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    const O_RDWR: i32 = 2;
    const O_NOCTTY: i32 = 0o400;
    let mut name = [0u8; 128];
    // SAFETY: plain libc calls on a descriptor we own; `name` outlives the call that fills it.
    let master = unsafe {
        let fd = posix_openpt(O_RDWR | O_NOCTTY);
        assert!(fd >= 0, "posix_openpt");
        assert!(grantpt(fd) == 0 && unlockpt(fd) == 0, "grantpt/unlockpt");
        assert_eq!(ptsname_r(fd, name.as_mut_ptr(), name.len()), 0, "ptsname_r");
        std::fs::File::from_raw_fd(fd)
    };
    let end = name.iter().position(|&b| b == 0).unwrap();
    let slave_path = std::str::from_utf8(&name[..end]).unwrap().to_string();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .unwrap();
    let mut child = Command::new("/bin/sh")
        .args(["-c", "stty -opost; head -c 64M /dev/zero | base64"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("spawn baseline");
    let start = Instant::now();
    let mut master = master;
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    // EIO once the last slave descriptor is closed.
    while let Ok(k) = master.read(&mut buf) {
        if k == 0 || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        n += k as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = child.wait();
    println!(
        "baseline: the same command read straight from a PTY: {n} bytes, {:.1} MiB/s",
        n as f64 / 1048576.0 / secs
    );
}

fn echo_latency(bin: &PathBuf) {
    // Raw mode and `cat` make every byte a round trip through a process, as a shell's line
    // editor does, rather than an echo by the kernel's line discipline.
    let srv = spawn(
        bin,
        &[
            "--",
            "/bin/sh",
            "-c",
            "stty raw -echo; printf ready; exec cat",
        ],
    );
    let mut c = ws::connect(srv.port, "new=1");
    c.expect_attached();
    c.read_output_until(b"ready", WAIT);
    let mut samples = Vec::with_capacity(1000);
    for i in 0..1050 {
        let t = Instant::now();
        c.send_input(b"a");
        let mut got = 0;
        while got == 0 {
            match c.next_msg(WAIT) {
                Some(Msg::Binary(b)) => got += b.len(),
                Some(Msg::Text(_)) => {}
                other => panic!("echo sample {i}: {other:?}"),
            }
        }
        // The first 50 warm up caches and the scheduler.
        if i >= 50 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "keystroke echo round trip ({} samples): median {:.1} us, p99 {:.1} us, max {:.1} us",
        samples.len(),
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6
    );
    c.close();
}

fn main() {
    // `cargo bench` passes `--bench` and maybe a filter; there is one fixed run.
    let bin = keepty_bin();
    binary_size(&bin);
    memory(&bin);
    pty_baseline();
    throughput(&bin, true);
    throughput(&bin, false);
    echo_latency(&bin);
}
