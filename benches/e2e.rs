//! End-to-end numbers for the real binary over loopback, each beside the ceiling it is judged
//! against: output throughput and keystroke echo next to the same through a bare PTY with no
//! server, time from TCP connect to the first prompt byte, reattach replay of a full ring,
//! server memory (idle, 50 attached clients, 500 detached sessions, and the marginal cost of
//! each), and the binary's size and shared libraries. Prints a table and writes
//! `target/e2e.json` (or `$CARGO_TARGET_DIR/e2e.json`).
//!
//! Run with `benches/e2e.sh` (builds the release binary first) or `cargo bench --bench e2e`
//! with `KEEPTY_BIN` pointing at a binary. `E2E_MIB` sets the throughput volume (default 256,
//! as in `head -c 256M /dev/zero | base64`), `E2E_RUNS` the runs per throughput case (3).
//!
//! The cost per relayed byte (instructions under callgrind, system calls by kind under
//! `perf stat` and `strace -c`, wake-ups as `epoll_wait` calls) for a fast producer, a slow
//! one and echo, and the server's CPU per 64 MiB beside ttyd's (`E2E_TTYD`, or `ttyd` on
//! PATH) when ttyd is there: a missing tool is said so and skipped. `E2E_BASE_BIN` measures
//! an older binary alternately with this one; `E2E_ONLY=cost,echo,...` runs only those
//! sections; `E2E_COST=0` skips the cost runs; `E2E_COST_MIB` (16), `E2E_COST_LINES` (300),
//! `E2E_COST_KEYS` (300) size them; `E2E_COST_KEEP=DIR` keeps the tools' output files;
//! `E2E_COST_TOOLS=perf,strace,valgrind` picks the tools.
//!
//! The floor: an ideal relay (this bench binary started again as a server, `ideal_relay`)
//! that copies a PTY master to a TCP socket with nothing else, interleaved in the throughput
//! runs (`E2E_IDEAL_NAPS`, default `0,1000`: microseconds it naps after a drain, to let the
//! kernel gather output) and counted in the cost runs (`E2E_COST_IDEAL_NAP_US`, default 0).
//!
//! These are measurements to print and compare, not assertions: timing on a shared 2-core
//! machine is too noisy to gate on. Cases that compete for the CPU are interleaved, so a
//! burst of load from elsewhere hits both sides of a ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::proc::{cpu_secs, rss_kib};
use common::ws::{self, Msg, WAIT};
use common::{Server, spawn_cmd};
use serde_json::{Value, json};
use tungstenite::Message;

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

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn(bin: &PathBuf, args: &[&str]) -> Server {
    let mut cmd = Command::new(bin);
    cmd.arg("--listen").arg("127.0.0.1:0").args(args);
    spawn_cmd(cmd)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// One line of the table: what, the value, and what it is judged against.
struct Row {
    name: &'static str,
    value: String,
    beside: String,
    target: &'static str,
    met: Option<bool>,
}

struct Report {
    rows: Vec<Row>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn row(&mut self, name: &'static str, value: String, beside: String, target: &'static str) {
        self.rows.push(Row {
            name,
            value,
            beside,
            target,
            met: None,
        });
    }

    fn judged(
        &mut self,
        name: &'static str,
        value: String,
        beside: String,
        target: &'static str,
        met: bool,
    ) {
        self.rows.push(Row {
            name,
            value,
            beside,
            target,
            met: Some(met),
        });
    }
}

// ---- binary ---------------------------------------------------------------------------

fn binary(bin: &PathBuf, r: &mut Report) {
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    // The release profile already strips; strip a copy anyway in case this binary was not.
    let copy = std::env::temp_dir().join(format!("keepty-e2e-strip-{}", std::process::id()));
    let stripped = if std::fs::copy(bin, &copy).is_ok()
        && Command::new("strip")
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success())
    {
        std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(size)
    } else {
        size
    };
    let _ = std::fs::remove_file(&copy);
    let ldd = Command::new("ldd")
        .arg(bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // The vDSO and the dynamic loader are not libraries the binary asks for.
    let libs: Vec<String> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|l| !l.starts_with("linux-vdso") && !l.contains("ld-linux"))
        .map(str::to_string)
        .collect();
    let mib = stripped as f64 / 1048576.0;
    r.judged(
        "binary, stripped",
        format!("{mib:.2} MiB ({stripped} B)"),
        format!("as built {size} B"),
        "< 1.2 MiB",
        mib < 1.2,
    );
    let only_libc = libs.iter().all(|l| l.starts_with("libc.so"));
    r.judged(
        "shared libraries",
        libs.join(" "),
        String::new(),
        "libc only",
        only_libc,
    );
    r.json.insert(
        "binary".into(),
        json!({"path": bin.display().to_string(), "bytes": size, "stripped_bytes": stripped, "libs": libs}),
    );
}

// ---- a bare PTY -------------------------------------------------------------------------

unsafe extern "C" {
    fn posix_openpt(flags: i32) -> i32;
    fn grantpt(fd: i32) -> i32;
    fn unlockpt(fd: i32) -> i32;
    fn ptsname_r(fd: i32, buf: *mut u8, len: usize) -> i32;
}

/// `sh -c SCRIPT` on a fresh PTY with no server: the master (blocking) and the child.
fn bare_pty(script: &str) -> (std::fs::File, Child) {
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
    // A session of its own, like keepty's children, so the slave is its controlling tty.
    let mut cmd = Command::new("setsid");
    cmd.args(["/bin/sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let child = cmd.spawn().expect("spawn bare PTY child");
    (master, child)
}

// ---- throughput -----------------------------------------------------------------------

fn flood_script(mib: u64) -> String {
    format!("stty -opost; head -c {mib}M /dev/zero | base64")
}

/// Bytes per second read straight from a PTY master in 64 KiB reads: the physical limit.
fn bare_throughput(mib: u64) -> f64 {
    let (mut master, mut child) = bare_pty(&flood_script(mib));
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    // EIO once the last slave descriptor is closed.
    while let Ok(k) = master.read(&mut buf) {
        if k == 0 || start.elapsed() > Duration::from_secs(300) {
            break;
        }
        n += k as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = child.wait();
    n as f64 / secs
}

struct Flood {
    rate: f64,
    frames: u64,
    bytes: u64,
    cpu: f64,
}

/// One attached client taking a flood: bytes per second from connect to `exited`.
fn server_throughput(srv: &Server, flow: bool) -> Flood {
    let start = Instant::now();
    let mut c = ws::connect(srv.port, if flow { "new=1&flow=1" } else { "new=1" });
    c.expect_attached();
    let cpu0 = cpu_secs(srv.child.id());
    c.sock.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    let deadline = start + Duration::from_secs(300);
    let (mut frames, mut bytes, mut acked) = (0u64, 0u64, 0u64);
    loop {
        assert!(Instant::now() < deadline, "throughput run took over 300 s");
        // The harness's own reader sets a timeout per message; this loop is the lean one.
        match c.sock.read() {
            Ok(Message::Binary(b)) => {
                frames += 1;
                bytes += b.len() as u64;
                // Acks in 64 KiB steps, as a browser batching its acks would.
                if flow && bytes - acked >= 64 << 10 {
                    acked = bytes;
                    let msg = format!("{{\"type\":\"ack\",\"offset\":{acked}}}");
                    c.sock.send(Message::text(msg)).unwrap();
                }
            }
            Ok(Message::Text(t)) if t.as_str().contains("\"exited\"") => break,
            Ok(_) => {}
            Err(e) => panic!("throughput run ended early: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(srv.child.id()) - cpu0;
    let _ = c.read_to_close(WAIT);
    Flood {
        rate: bytes as f64 / secs,
        frames,
        bytes,
        cpu,
    }
}

fn throughput(bins: &[(&'static str, PathBuf)], r: &mut Report) {
    let mib = env_num("E2E_MIB", 256);
    let runs = env_num("E2E_RUNS", 3);
    let script = flood_script(mib);
    let srvs: Vec<Server> = bins
        .iter()
        .map(|(_, bin)| spawn(bin, &["--", "/bin/sh", "-c", &script]))
        .collect();
    let n = bins.len();
    let ttyd = ttyd_bin().map(|b| spawn_ttyd(&b, &script));
    let (mut ttyd_rate, mut ttyd_cpu) = (Vec::new(), Vec::new());
    // The floor: the ideal relay, with each nap of E2E_IDEAL_NAPS (microseconds; by default
    // none and 1 ms, the cheapest found).
    let naps: Vec<u64> = std::env::var("E2E_IDEAL_NAPS")
        .unwrap_or_else(|_| "0,1000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let ideals: Vec<Server> = naps.iter().map(|&nap| spawn_ideal(&script, nap)).collect();
    let (mut ideal_rate, mut ideal_cpu) =
        (vec![Vec::new(); naps.len()], vec![Vec::new(); naps.len()]);
    let mut bare = Vec::new();
    let (mut flow, mut plain, mut cpu) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    let mut detail = Vec::new();
    for run in 0..runs {
        bare.push(bare_throughput(mib) / 1048576.0);
        // Each binary in turn, so a burst of load from elsewhere hits them all alike.
        for (i, ((label, _), srv)) in bins.iter().zip(&srvs).enumerate() {
            for is_flow in [true, false] {
                let f = server_throughput(srv, is_flow);
                eprintln!(
                    "e2e: run {run} {label} flow={} {:.1} MiB/s, {} frames of {} B on average, server CPU {:.2} s (bare {:.1} MiB/s)",
                    u8::from(is_flow),
                    f.rate / 1048576.0,
                    f.frames,
                    f.bytes / f.frames.max(1),
                    f.cpu,
                    bare.last().unwrap()
                );
                detail.push(
                    json!({"run": run, "bin": label, "flow": is_flow, "mib_s": f.rate / 1048576.0,
                    "frames": f.frames, "bytes": f.bytes, "server_cpu_s": f.cpu}),
                );
                let mibs = f.bytes as f64 / 1048576.0;
                cpu[i].push(f.cpu / mibs.max(1.0) * 64.0);
                if is_flow { &mut flow[i] } else { &mut plain[i] }.push(f.rate / 1048576.0);
            }
        }
        if let Some(t) = &ttyd {
            let f = ttyd_throughput(t);
            eprintln!(
                "e2e: run {run} ttyd {:.1} MiB/s, {} frames of {} B on average, server CPU {:.2} s",
                f.rate / 1048576.0,
                f.frames,
                f.bytes / f.frames.max(1),
                f.cpu
            );
            detail.push(
                json!({"run": run, "bin": "ttyd", "mib_s": f.rate / 1048576.0,
                "frames": f.frames, "bytes": f.bytes, "server_cpu_s": f.cpu}),
            );
            ttyd_rate.push(f.rate / 1048576.0);
            ttyd_cpu.push(f.cpu / (f.bytes as f64 / 1048576.0).max(1.0) * 64.0);
        }
        for (i, (srv, nap)) in ideals.iter().zip(&naps).enumerate() {
            let f = ideal_throughput(srv);
            eprintln!(
                "e2e: run {run} ideal relay (nap {nap} us) {:.1} MiB/s, {} reads of {} B on average by the client, server CPU {:.2} s",
                f.rate / 1048576.0,
                f.frames,
                f.bytes / f.frames.max(1),
                f.cpu
            );
            detail.push(
                json!({"run": run, "bin": format!("ideal relay, nap {nap} us"), "mib_s": f.rate / 1048576.0,
                "bytes": f.bytes, "server_cpu_s": f.cpu}),
            );
            ideal_rate[i].push(f.rate / 1048576.0);
            ideal_cpu[i].push(f.cpu / (f.bytes as f64 / 1048576.0).max(1.0) * 64.0);
        }
    }
    let b = median(&mut bare);
    let mut medians = serde_json::Map::new();
    let ttyd_c = (!ttyd_cpu.is_empty()).then(|| median(&mut ttyd_cpu));
    if let Some(c) = ttyd_c {
        let rate = median(&mut ttyd_rate);
        r.row(
            "ttyd throughput",
            format!("{rate:.1} MiB/s"),
            format!("bare PTY {b:.1} MiB/s"),
            "",
        );
        r.row(
            "ttyd server CPU per 64 MiB",
            format!("{c:.3} s"),
            String::new(),
            "",
        );
        medians.insert(
            "ttyd".into(),
            json!({"mib_s": rate, "server_cpu_s_per_64_mib": c}),
        );
    }
    // The least CPU any relay on a PTY master spent here: what no design can go below.
    let mut floor: Option<f64> = None;
    for (i, nap) in naps.iter().enumerate() {
        let (rate, c) = (median(&mut ideal_rate[i]), median(&mut ideal_cpu[i]));
        floor = Some(floor.map_or(c, |f: f64| f.min(c)));
        r.row(
            "ideal relay throughput",
            format!("{rate:.1} MiB/s"),
            format!("nap {nap} us; bare PTY {b:.1} MiB/s"),
            "",
        );
        match ttyd_c {
            Some(t) => r.judged(
                "ideal relay CPU per 64 MiB",
                format!("{c:.3} s"),
                format!("nap {nap} us; ttyd {t:.3} s, ratio {:.2}", c / t),
                "<= 0.25x ttyd, or the goal is out of reach",
                c <= 0.25 * t,
            ),
            None => r.row(
                "ideal relay CPU per 64 MiB",
                format!("{c:.3} s"),
                format!("nap {nap} us"),
                "",
            ),
        }
        medians.insert(
            format!("ideal_nap_{nap}_us"),
            json!({"mib_s": rate, "server_cpu_s_per_64_mib": c}),
        );
    }
    for (i, (label, _)) in bins.iter().enumerate() {
        let (f, p, c) = (
            median(&mut flow[i]),
            median(&mut plain[i]),
            median(&mut cpu[i]),
        );
        for (name, v) in [("throughput, flow=1", f), ("throughput, no flow", p)] {
            r.judged(
                name,
                format!("{v:.1} MiB/s"),
                format!("{label}; bare PTY {b:.1} MiB/s, ratio {:.2}", v / b),
                ">= 70% of bare and >= 150 MiB/s",
                v >= 0.7 * b && v >= 150.0,
            );
        }
        match ttyd_c {
            Some(t) => r.judged(
                "server CPU per 64 MiB",
                format!("{c:.3} s"),
                format!("{label}; ttyd {t:.3} s, ratio {:.2}", c / t),
                "<= 0.25x ttyd",
                c <= 0.25 * t,
            ),
            None => r.row(
                "server CPU per 64 MiB",
                format!("{c:.3} s"),
                format!("{label}; median of every run, flow and not"),
                "",
            ),
        }
        if let Some(fl) = floor {
            r.row(
                "server CPU over the floor",
                format!("{:.2}x", c / fl),
                format!("{label}; ideal relay {fl:.3} s"),
                "",
            );
        }
        medians.insert(
            (*label).into(),
            json!({"flow": f, "no_flow": p, "server_cpu_s_per_64_mib": c}),
        );
    }
    r.json.insert(
        "throughput".into(),
        json!({"command": script, "runs": runs, "median_mib_s": {"bare_pty": b}, "bins": medians,
            "bare_mib_s": bare, "detail": detail}),
    );
}

// ---- the floor: an ideal relay ---------------------------------------------------------

/// Set in the environment of this bench binary when it is started as the ideal relay: the
/// script each connection's producer runs.
const IDEAL_ENV: &str = "E2E_IDEAL_RELAY";
/// Microseconds the ideal relay naps after each drain that moved output (0: none), to let the
/// line discipline fill between reads.
const IDEAL_NAP_ENV: &str = "E2E_IDEAL_NAP_US";

/// The least a server on a PTY master can do, as a program of its own (this bench binary,
/// started again with [`IDEAL_ENV`] set): per connection it spawns the producer on a fresh
/// PTY and copies the master's output to the socket as raw bytes. No framing, no ring, no
/// WebSocket, no timers: one epoll (mio's) over the master and the socket, edge-triggered,
/// the master read to `WouldBlock` into one 1 MiB buffer, the buffer written in as few calls as
/// the socket takes. It prints keepty's startup line so the harness's `spawn_cmd` reads its
/// port. Its CPU per byte is the floor that keepty and ttyd are measured against.
fn ideal_relay(script: &str) {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;

    const PTY: Token = Token(0);
    const SOCK: Token = Token(1);
    let nap = Duration::from_micros(env_num(IDEAL_NAP_ENV, 0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    println!("keepty listening on http://127.0.0.1:{port}/");
    let mut buf = vec![0u8; 1 << 20];
    let mut poll = Poll::new().expect("epoll");
    let mut events = Events::with_capacity(8);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        stream.set_nonblocking(true).expect("nonblocking socket");
        let mut sock = mio::net::TcpStream::from_std(stream);
        let (mut master, mut child) = bare_pty(script);
        let fd = master.as_raw_fd();
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("nonblocking master");
        let reg = poll.registry();
        reg.register(&mut SourceFd(&fd), PTY, Interest::READABLE)
            .expect("register master");
        reg.register(&mut sock, SOCK, Interest::WRITABLE)
            .expect("register socket");
        let (mut readable, mut writable, mut eof) = (true, true, false);
        let (mut filled, mut sent) = (0, 0);
        loop {
            let mut moved = false;
            while readable && !eof && filled < buf.len() {
                match master.read(&mut buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        filled += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => readable = false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => eof = true, // EIO: the producer and its slave are gone
                }
            }
            while writable && sent < filled {
                match sock.write(&buf[sent..filled]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => writable = false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        sent = filled;
                    }
                }
            }
            if sent == filled {
                (sent, filled) = (0, 0);
            }
            if eof && filled == 0 {
                break;
            }
            if moved && !nap.is_zero() {
                std::thread::sleep(nap);
            }
            let more = (readable && !eof && filled < buf.len()) || (writable && sent < filled);
            if more {
                continue;
            }
            if poll.poll(&mut events, None).is_err() {
                continue;
            }
            for ev in events.iter() {
                if ev.token() == PTY {
                    readable = true;
                } else if ev.token() == SOCK {
                    writable = true;
                }
            }
        }
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        let _ = poll.registry().deregister(&mut sock);
        drop(sock);
        drop(master);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The ideal relay started as a server: this bench binary again, with [`IDEAL_ENV`] set.
fn spawn_ideal(script: &str, nap_us: u64) -> Server {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.env(IDEAL_ENV, script)
        .env(IDEAL_NAP_ENV, nap_us.to_string());
    spawn_cmd(cmd)
}

/// One raw TCP client of the ideal relay taking the flood until it closes: the same reader
/// loop as keepty's client without the WebSocket layer, so the socket is drained as fast.
fn ideal_throughput(srv: &Server) -> Flood {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let cpu0 = cpu_secs(srv.child.id());
    let deadline = start + Duration::from_secs(300);
    let mut buf = vec![0u8; 64 << 10];
    let (mut frames, mut bytes) = (0u64, 0u64);
    loop {
        assert!(Instant::now() < deadline, "ideal relay run took over 300 s");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                frames += 1;
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("ideal relay run ended early: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Flood {
        rate: bytes as f64 / secs,
        frames,
        bytes,
        cpu: cpu_secs(srv.child.id()) - cpu0,
    }
}

// ---- ttyd, side by side ---------------------------------------------------------------

/// ttyd (`E2E_TTYD`, else `ttyd` on PATH) if it runs: the C terminal server keepty's cost per
/// byte is judged against.
fn ttyd_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("E2E_TTYD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ttyd"));
    let ok = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("e2e: ttyd not found (set E2E_TTYD): no side-by-side ttyd rows");
    }
    ok.then_some(bin)
}

/// A running ttyd, killed on drop.
struct Ttyd {
    child: Child,
    port: u16,
}

impl Drop for Ttyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts ttyd on a free loopback port with `sh -c SCRIPT` for each client (writable).
fn spawn_ttyd(bin: &PathBuf, script: &str) -> Ttyd {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(bin)
        .args([
            "-p",
            &port.to_string(),
            "-i",
            "lo",
            "-W",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ttyd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ttyd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ttyd { child, port }
}

/// A ttyd client: subprotocol `tty`, the size message first; output comes as binary messages
/// led by '0'.
fn ttyd_connect(port: u16) -> ws::Ws {
    let mut c = ws::try_connect_with(port, "", Some("tty"), &[]).expect("connect to ttyd");
    c.sock
        .send(Message::binary(
            &br#"{"AuthToken":"","columns":80,"rows":24}"#[..],
        ))
        .expect("ttyd size message");
    c
}

/// One ttyd client taking the flood until ttyd closes (the command exited).
fn ttyd_throughput(t: &Ttyd) -> Flood {
    let start = Instant::now();
    let mut c = ttyd_connect(t.port);
    let cpu0 = cpu_secs(t.child.id());
    c.sock.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    let deadline = start + Duration::from_secs(300);
    let (mut frames, mut bytes) = (0u64, 0u64);
    loop {
        assert!(
            Instant::now() < deadline,
            "ttyd throughput run took over 300 s"
        );
        match c.sock.read() {
            Ok(Message::Binary(b)) if b.first() == Some(&b'0') => {
                frames += 1;
                bytes += b.len() as u64 - 1;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Flood {
        rate: bytes as f64 / secs,
        frames,
        bytes,
        cpu: cpu_secs(t.child.id()) - cpu0,
    }
}

/// Keystroke round trips through ttyd, as `server_echo` does through keepty.
fn ttyd_echo(bin: &PathBuf) -> Vec<Duration> {
    let t = spawn_ttyd(bin, ECHO_SCRIPT);
    let mut c = ttyd_connect(t.port);
    c.sock.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    let mut seen = Vec::new();
    while ws::find(&seen, b"ready").is_none() {
        match c.sock.read() {
            Ok(Message::Binary(b)) if b.first() == Some(&b'0') => seen.extend_from_slice(&b[1..]),
            Ok(_) => {}
            Err(e) => panic!("ttyd echo: no ready: {e}"),
        }
    }
    let mut samples = Vec::with_capacity(KEYS);
    for i in 0..KEYS + WARMUP {
        let t0 = Instant::now();
        c.sock.send(Message::binary(&b"0a"[..])).unwrap();
        loop {
            match c.sock.read() {
                Ok(Message::Binary(b)) if b.first() == Some(&b'0') && b.len() > 1 => break,
                Ok(_) => {}
                Err(e) => panic!("ttyd echo sample {i}: {e}"),
            }
        }
        if i >= WARMUP {
            samples.push(t0.elapsed());
        }
    }
    samples.sort();
    samples
}

// ---- echo -----------------------------------------------------------------------------

const ECHO_SCRIPT: &str = "stty raw -echo; printf ready; exec cat";
const KEYS: usize = 2000;
const WARMUP: usize = 100;

fn bare_echo() -> Vec<Duration> {
    let (mut master, mut child) = bare_pty(ECHO_SCRIPT);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.ends_with(b"ready") {
        let n = master.read(&mut buf).expect("bare echo: ready");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut samples = Vec::with_capacity(KEYS);
    for i in 0..KEYS + WARMUP {
        let t = Instant::now();
        master.write_all(b"a").unwrap();
        let n = master.read(&mut buf).expect("bare echo");
        assert!(n > 0);
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    samples.sort();
    samples
}

fn server_echo(bin: &PathBuf) -> Vec<Duration> {
    let srv = spawn(bin, &["--", "/bin/sh", "-c", ECHO_SCRIPT]);
    let mut c = ws::connect(srv.port, "new=1");
    c.expect_attached();
    c.read_output_until(b"ready", WAIT);
    c.sock.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    let mut samples = Vec::with_capacity(KEYS);
    for i in 0..KEYS + WARMUP {
        let t = Instant::now();
        c.sock.send(Message::binary(&b"a"[..])).unwrap();
        loop {
            match c.sock.read() {
                Ok(Message::Binary(b)) if !b.is_empty() => break,
                Ok(_) => {}
                Err(e) => panic!("echo sample {i}: {e}"),
            }
        }
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    c.close();
    samples.sort();
    samples
}

fn echo(bins: &[(&'static str, PathBuf)], r: &mut Report) {
    let bare = bare_echo();
    let (b50, b99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
    let rounds = env_num("E2E_RUNS", 3).max(1);
    let mut samples = vec![Vec::new(); bins.len()];
    // Rounds of each binary in turn, pooled.
    for _ in 0..rounds {
        for (i, (_, bin)) in bins.iter().enumerate() {
            samples[i].extend(server_echo(bin));
        }
    }
    let mut out = serde_json::Map::new();
    if let Some(t) = ttyd_bin() {
        let mut s = ttyd_echo(&t);
        s.sort();
        let (t50, t99) = (percentile(&s, 0.5), percentile(&s, 0.99));
        r.row(
            "ttyd echo p50 / p99",
            format!("{t50:.0} / {t99:.0} us"),
            format!("bare PTY {b50:.0} / {b99:.0} us"),
            "",
        );
        out.insert("ttyd".into(), json!({"p50": t50, "p99": t99}));
    }
    for ((label, _), srv) in bins.iter().zip(&mut samples) {
        srv.sort();
        let (s50, s99) = (percentile(srv, 0.5), percentile(srv, 0.99));
        r.judged(
            "echo round trip p50",
            format!("{s50:.0} us"),
            format!("{label}; bare PTY {b50:.0} us (+{:.0} us)", s50 - b50),
            "within 60 us of bare",
            s50 - b50 <= 60.0,
        );
        r.row(
            "echo round trip p99",
            format!("{s99:.0} us"),
            format!("{label}; bare PTY {b99:.0} us"),
            "",
        );
        out.insert((*label).into(), json!({"p50": s50, "p99": s99}));
    }
    r.json.insert(
        "echo_us".into(),
        json!({"keys": KEYS * rounds as usize, "server": out, "bare_pty": {"p50": b50, "p99": b99}}),
    );
}

// ---- connect to prompt, reattach replay -----------------------------------------------

/// Connects, upgrades and reads until the first output byte, with a hand-written client: the
/// harness's tungstenite client adds milliseconds of its own to a handshake.
fn first_output_byte(port: u16, query: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: keepty.v1\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut at = None;
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the first output byte");
        buf.extend_from_slice(&chunk[..n]);
        if at.is_none() {
            at = ws::find(&buf, b"\r\n\r\n").map(|i| i + 4);
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", ws::tail(&buf));
        }
        // Walk the server's (unmasked) frames to the first binary one with a payload.
        while let Some(i) = at {
            let Some(&[b0, b1]) = buf.get(i..i + 2).map(|h| <&[u8; 2]>::try_from(h).unwrap())
            else {
                break;
            };
            let (len, hl) = match b1 & 0x7f {
                126 => match buf.get(i + 2..i + 4) {
                    Some(l) => (u16::from_be_bytes([l[0], l[1]]) as usize, 4),
                    None => break,
                },
                127 => panic!("no 64-bit frame expected before the prompt"),
                l => (l as usize, 2),
            };
            if b0 & 0x0f == 2 && len > 0 && buf.len() > i + hl {
                return;
            }
            if buf.len() < i + hl + len {
                break;
            }
            at = Some(i + hl + len);
        }
    }
}

fn connect_to_prompt(bin: &PathBuf, r: &mut Report) {
    let srv = spawn(bin, &["--max-sessions", "100", "--", "/bin/sh"]);
    let mut server = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        first_output_byte(srv.port, &format!("session=p{i}&new=1"));
        server.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // What the shell alone takes to print its prompt on a PTY.
    let mut bare = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (mut master, mut child) = bare_pty("exec /bin/sh");
        let mut b = [0u8; 256];
        let _ = master.read(&mut b);
        bare.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = child.kill();
        let _ = child.wait();
    }
    let (s, b) = (median(&mut server), median(&mut bare));
    r.judged(
        "TCP connect to first prompt byte",
        format!("{s:.2} ms"),
        format!("spawn sh on a bare PTY {b:.2} ms"),
        "< 3 ms",
        s < 3.0,
    );
    r.json.insert(
        "connect_to_prompt_ms".into(),
        json!({"median": s, "bare_spawn_median": b, "samples": server}),
    );
}

fn reattach_replay(bin: &PathBuf, r: &mut Report) {
    let srv = spawn(
        bin,
        &[
            "--scrollback",
            "256K",
            "--",
            "/bin/sh",
            "-c",
            "head -c 1M /dev/urandom | base64; exec sleep 600",
        ],
    );
    let mut c = ws::connect(srv.port, "session=replay&new=1");
    c.expect_attached();
    // Until the output stops: it is then the ring's, full and wrapped.
    while let Some(m) = c.next_msg(Duration::from_millis(500)) {
        assert!(matches!(m, Msg::Binary(_) | Msg::Text(_)), "{m:?}");
    }
    let end = c.offset;
    c.close();
    let mut times = Vec::new();
    let mut replayed = 0;
    for _ in 0..20 {
        let t = Instant::now();
        // As a fresh page does: no `since`, so the ring's replay point on.
        let mut c = ws::connect(srv.port, "session=replay&flow=1");
        let a = c.expect_attached();
        let from = a["offset"].as_u64().unwrap_or(0);
        while c.offset < end {
            match c.next_msg(WAIT) {
                Some(Msg::Binary(_) | Msg::Text(_)) => {}
                other => panic!("replay ended early: {other:?}"),
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        replayed = end - from;
        c.close();
    }
    let m = median(&mut times);
    r.row(
        "reattach replay of a full ring",
        format!("{m:.2} ms"),
        format!("{replayed} B replayed, open to last byte"),
        "",
    );
    r.json.insert(
        "reattach_replay_ms".into(),
        json!({"median": m, "bytes": replayed, "samples": times}),
    );
}

// ---- memory ---------------------------------------------------------------------------

fn wait_settled() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Output bytes that reached the rings: the pages they touched are ring memory, not overhead.
fn ring_pages_touched(srv: &Server) -> u64 {
    let list = srv.admin_sessions();
    list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["bytes_total"].as_u64())
        .map(|b| b.div_ceil(4096))
        .sum()
}

fn memory(bin: &PathBuf, r: &mut Report) {
    let srv = spawn(
        bin,
        &[
            "--max-sessions",
            "600",
            "--max-clients",
            "600",
            "--max-memory",
            "1G",
            "--",
            "/bin/sh",
        ],
    );
    let pid = srv.child.id();
    wait_settled();
    let idle = rss_kib(pid);
    // 50 sessions first, then 50 clients attached to them: the difference is what a
    // connection costs (RSS rarely shrinks after a free, so the other order shows nothing).
    for i in 0..50 {
        let mut c = ws::connect(srv.port, &format!("session=m{i}&new=1"));
        c.expect_attached();
        c.read_output_at_least(1, WAIT); // the prompt: the shell is up
        c.close();
    }
    wait_settled();
    let detached50 = rss_kib(pid);
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut c = ws::connect(srv.port, &format!("session=m{i}"));
        c.expect_attached();
        clients.push(c);
    }
    wait_settled();
    let attached50 = rss_kib(pid);
    for c in clients.drain(..) {
        c.close();
    }
    for i in 50..500 {
        let mut c = ws::connect(srv.port, &format!("session=m{i}&new=1"));
        c.expect_attached();
        c.read_output_at_least(1, WAIT);
        c.close();
    }
    wait_settled();
    let detached500 = rss_kib(pid);
    let pages = ring_pages_touched(&srv);
    let per_conn = (attached50.saturating_sub(detached50) * 1024) as f64 / 50.0;
    let per_session =
        ((detached500.saturating_sub(idle) * 1024) as f64 - (pages * 4096) as f64) / 500.0;
    r.judged(
        "RSS idle",
        format!("{:.2} MiB", idle as f64 / 1024.0),
        String::new(),
        "< 1.5 MiB",
        (idle as f64) < 1.5 * 1024.0,
    );
    r.judged(
        "RSS, 50 attached clients",
        format!("{:.2} MiB", attached50 as f64 / 1024.0),
        format!("{:.2} MiB before they attach", detached50 as f64 / 1024.0),
        "< 3 MiB",
        (attached50 as f64) < 3.0 * 1024.0,
    );
    r.row(
        "RSS, 500 detached sessions",
        format!("{:.2} MiB", detached500 as f64 / 1024.0),
        format!("{} KiB of ring pages written", pages * 4),
        "",
    );
    r.judged(
        "marginal per detached session",
        format!("{:.1} KiB", per_session / 1024.0),
        "besides ring pages written".into(),
        "< 8 KiB",
        per_session < 8.0 * 1024.0,
    );
    r.row(
        "marginal per attached connection",
        format!("{:.1} KiB", per_conn / 1024.0),
        "50 attached minus the same 50 sessions detached".into(),
        "",
    );
    r.json.insert(
        "rss_kib".into(),
        json!({"idle": idle, "attached_50": attached50, "detached_50": detached50,
            "detached_500": detached500, "ring_pages_written": pages,
            "marginal_bytes_per_session": per_session, "marginal_bytes_per_connection": per_conn}),
    );
}

// ---- cost per relayed byte ------------------------------------------------------------

/// The tool a cost run is measured with: callgrind's instruction count or strace's count of
/// system calls by kind. Both slow the server down (callgrind about 50x), which lets it
/// gather more per read than at full speed, so these are the server's costs at its most
/// loaded, and the throughput and CPU rows above are the ones at full speed.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Callgrind,
    Strace,
    /// `perf stat` on the syscall tracepoints: counts at full speed (no PMU needed).
    Perf,
}

/// The system calls `perf stat` counts one by one (`raw_syscalls` counts them all).
const PERF_CALLS: [&str; 9] = [
    "read",
    "write",
    "writev",
    "epoll_wait",
    "epoll_ctl",
    "recvfrom",
    "sendto",
    "readv",
    "ioctl",
];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Callgrind => "valgrind",
            Tool::Strace => "strace",
            Tool::Perf => "perf",
        }
    }

    fn available(self) -> bool {
        if self == Tool::Perf {
            // Tracepoints need tracefs and the right to read it (root, or a low
            // perf_event_paranoid): try one.
            return Command::new("perf")
                .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"])
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && !String::from_utf8_lossy(&o.stderr).contains("not supported")
                });
        }
        Command::new(self.name())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// What one cost run moves: `Fast` a flood of base64 from `cat`-like `head | base64`, `Slow`
/// one line every 10 ms, `Echo` a keystroke at a time through `cat` in raw mode.
#[derive(Clone, Copy)]
enum Load {
    Fast(u64),
    Slow(u64),
    Echo(usize),
    /// Start, attach, the program exits at once, stop: what every run costs besides its load.
    Fixed,
}

impl Load {
    fn script(self) -> String {
        match self {
            Load::Fast(mib) => flood_script(mib),
            Load::Slow(lines) => format!(
                "stty -opost; i=0; while [ $i -lt {lines} ]; do \
                 echo 'slow producer: one line of about eighty bytes every ten milliseconds..'; \
                 sleep 0.01; i=$((i+1)); done"
            ),
            Load::Echo(_) => ECHO_SCRIPT.to_string(),
            Load::Fixed => "exit 0".to_string(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Load::Fast(_) => "fast producer",
            Load::Slow(_) => "slow producer",
            Load::Echo(_) => "interactive echo",
            Load::Fixed => "fixed",
        }
    }
}

/// What a cost run counted: output bytes the client got, frames, and the tool's totals.
#[derive(Default, Clone)]
struct Counted {
    bytes: u64,
    frames: u64,
    keys: u64,
    instructions: u64,
    syscalls: Vec<(String, u64)>,
}

impl Counted {
    fn calls(&self, name: &str) -> u64 {
        self.syscalls
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c)
            .sum()
    }
    fn total_calls(&self) -> u64 {
        match self.syscalls.iter().find(|(n, _)| n == "all") {
            Some((_, all)) => *all,
            None => self.syscalls.iter().map(|(_, c)| c).sum(),
        }
    }
}

/// The pid of the server a tool started: valgrind runs it in its own process, strace forks it.
fn traced_pid(srv: &Server, tool: Tool) -> u32 {
    let pid = srv.child.id();
    if tool == Tool::Callgrind {
        return pid;
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

/// Runs `load` on `bin` under `tool` and returns what was counted; None if the run failed.
fn cost_run(bin: &PathBuf, tool: Tool, load: Load) -> Option<Counted> {
    // E2E_COST_KEEP=DIR keeps each tool's output there (callgrind_annotate reads it).
    let keep = std::env::var_os("E2E_COST_KEEP").map(PathBuf::from);
    let out = keep
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "keepty-e2e-{}-{}-{}.out",
            tool.name(),
            load.name().replace(' ', "-"),
            std::process::id()
        ));
    let _ = std::fs::remove_file(&out);
    let mut cmd = match tool {
        Tool::Callgrind => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()));
            c
        }
        Tool::Strace => {
            // No -f: the server is one thread, and its children (the shell) are not its cost.
            let mut c = Command::new("strace");
            c.arg("-c").arg("-o").arg(&out);
            c
        }
        Tool::Perf => {
            let mut c = Command::new("perf");
            let mut events = vec![
                "raw_syscalls:sys_enter".to_string(),
                "task-clock".into(),
                "context-switches".into(),
            ];
            events.extend(PERF_CALLS.iter().map(|n| format!("syscalls:sys_enter_{n}")));
            c.args(["stat", "--no-inherit", "-x,", "-o"])
                .arg(&out)
                .arg("-e")
                .arg(events.join(","))
                .arg("--");
            c
        }
    };
    let script = load.script();
    // An empty path is the ideal relay (this bench binary again), read by a raw TCP client.
    if bin.as_os_str().is_empty() {
        cmd.arg(std::env::current_exe().ok()?)
            .env(IDEAL_ENV, &script)
            .env(
                IDEAL_NAP_ENV,
                env_num("E2E_COST_IDEAL_NAP_US", 0).to_string(),
            );
        let mut srv = spawn_cmd(cmd);
        let mut counted = Counted::default();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    counted.frames += 1;
                    counted.bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("e2e: ideal relay cost run ended early: {e}");
                    return None;
                }
            }
        }
        // SAFETY: kill(2) with plain integers on a pid we started.
        unsafe { c_kill(traced_pid(&srv, tool) as i32, 15) };
        srv.wait_exit(Duration::from_secs(60))?;
        return tool_totals(tool, &out, keep.is_none(), counted);
    }
    cmd.arg(bin)
        .args(["--listen", "127.0.0.1:0", "--", "/bin/sh", "-c", &script]);
    let mut srv = spawn_cmd(cmd);
    let mut counted = Counted::default();
    let mut c = ws::connect(srv.port, "new=1");
    c.expect_attached();
    c.sock
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    if let Load::Echo(keys) = load {
        c.read_output_until(b"ready", Duration::from_secs(60));
        for _ in 0..keys {
            c.sock.send(Message::binary(&b"a"[..])).ok()?;
            loop {
                match c.sock.read() {
                    Ok(Message::Binary(b)) if !b.is_empty() => {
                        counted.bytes += b.len() as u64;
                        counted.frames += 1;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("e2e: cost echo: {e}");
                        return None;
                    }
                }
            }
        }
        counted.keys = keys as u64;
        c.close();
    } else {
        loop {
            match c.sock.read() {
                Ok(Message::Binary(b)) => {
                    counted.frames += 1;
                    counted.bytes += b.len() as u64;
                }
                Ok(Message::Text(t)) if t.as_str().contains("\"exited\"") => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("e2e: cost run ended early: {e}");
                    return None;
                }
            }
        }
        let _ = c.read_to_close(WAIT);
    }
    // A graceful stop, to the server itself, so the tool writes its totals as it exits.
    // SAFETY: kill(2) with plain integers on a pid we started.
    unsafe { c_kill(traced_pid(&srv, tool) as i32, 15) };
    if srv.wait_exit(Duration::from_secs(60)).is_none() {
        eprintln!("e2e: {} run did not stop", tool.name());
        return None;
    }
    tool_totals(tool, &out, keep.is_none(), counted)
}

/// Reads the totals `tool` wrote to `out` into `counted` (and removes the file unless kept).
fn tool_totals(tool: Tool, out: &PathBuf, remove: bool, mut counted: Counted) -> Option<Counted> {
    let text = std::fs::read_to_string(out).ok()?;
    if remove {
        let _ = std::fs::remove_file(out);
    }
    match tool {
        Tool::Callgrind => {
            // "summary: N" (older valgrind writes "totals: N" as well; either will do).
            counted.instructions = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
        }
        Tool::Strace => counted.syscalls = parse_strace(&text),
        Tool::Perf => counted.syscalls = parse_perf(&text),
    }
    Some(counted)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn c_kill(pid: i32, sig: i32) -> i32;
}

/// The rows of `strace -c`: `% time  seconds  usecs/call  calls  [errors]  syscall`.
fn parse_strace(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[0].parse::<f64>().is_err() {
                return None;
            }
            let name = (*f.last()?).to_string();
            if name == "total" {
                return None;
            }
            Some((name, f[3].parse().ok()?))
        })
        .collect()
}

/// The lines of `perf stat -x,`: `count,unit,event,...`; the total under the name `all` and
/// the task clock in microseconds under `cpu_us`.
fn parse_perf(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let count: f64 = f.first()?.parse().ok()?;
            let event = *f.get(2)?;
            let name = if event == "raw_syscalls:sys_enter" {
                "all".to_string()
            } else if event == "task-clock" {
                return Some(("cpu_us".to_string(), (count * 1000.0) as u64));
            } else if event == "context-switches" {
                return Some(("switches".to_string(), count as u64));
            } else {
                event.strip_prefix("syscalls:sys_enter_")?.to_string()
            };
            Some((name, count as u64))
        })
        .collect()
}

/// Per unit of a load: per MiB for the producers, per keystroke for echo.
fn per_unit(load: Load, v: f64, c: &Counted) -> f64 {
    match load {
        Load::Echo(_) => v / c.keys.max(1) as f64,
        _ => v * 1048576.0 / c.bytes.max(1) as f64,
    }
}

/// Instructions and system calls per relayed MiB (per keystroke for echo) for each load,
/// for `bin` and, when `E2E_BASE_BIN` names one, for an older binary run alternately with it.
fn cost(bins: &[(&'static str, PathBuf)], r: &mut Report) {
    if std::env::var("E2E_COST").is_ok_and(|v| v == "0") {
        return;
    }
    let mib = env_num("E2E_COST_MIB", 16);
    let loads = [
        Load::Fixed,
        Load::Fast(mib),
        Load::Slow(env_num("E2E_COST_LINES", 300)),
        Load::Echo(env_num("E2E_COST_KEYS", 300) as usize),
    ];
    let mut json = serde_json::Map::new();
    // E2E_COST_TOOLS=perf,strace,valgrind picks the tools (all three by default).
    let tools = std::env::var("E2E_COST_TOOLS").unwrap_or_default();
    for tool in [Tool::Callgrind, Tool::Perf, Tool::Strace] {
        if !tools.is_empty() && !tools.split(',').any(|t| t == tool.name()) {
            continue;
        }
        if !tool.available() {
            eprintln!("e2e: {} not found: no {} counts", tool.name(), tool.name());
            r.row(
                "cost per relayed byte",
                format!("{} not installed", tool.name()),
                String::new(),
                "",
            );
            continue;
        }
        // The ideal relay beside them (an empty path), for the system calls and switches
        // the floor itself makes; it takes no input, so no echo run.
        let mut runs: Vec<(&str, PathBuf)> = bins.iter().map(|(l, b)| (*l, b.clone())).collect();
        if tool != Tool::Callgrind {
            runs.push(("ideal relay", PathBuf::new()));
        }
        for (label, bin) in &runs {
            let mut fixed = Counted::default();
            for load in loads {
                if bin.as_os_str().is_empty() && matches!(load, Load::Echo(_)) {
                    continue;
                }
                let Some(c) = cost_run(bin, tool, load) else {
                    continue;
                };
                if let Load::Fixed = load {
                    fixed = c;
                    continue;
                }
                let key = format!("{label} {} {}", tool.name(), load.name());
                let unit = if let Load::Echo(_) = load {
                    "key"
                } else {
                    "MiB"
                };
                let frames = per_unit(load, c.frames as f64, &c);
                match tool {
                    Tool::Callgrind => {
                        let i = c.instructions.saturating_sub(fixed.instructions) as f64;
                        let v = per_unit(load, i, &c);
                        eprintln!(
                            "e2e: {key}: {v:.0} instructions/{unit}, {frames:.1} frames/{unit}"
                        );
                        r.rows.push(Row {
                            name: "instructions",
                            value: format!("{:.0}/{unit}", v),
                            beside: format!("{label}, {}, {frames:.1} frames/{unit}", load.name()),
                            target: "",
                            met: None,
                        });
                        json.insert(
                            key,
                            json!({"instructions": c.instructions,
                            "fixed_instructions": fixed.instructions, "bytes": c.bytes,
                            "frames": c.frames, "keys": c.keys, "per_unit": v, "unit": unit}),
                        );
                    }
                    Tool::Strace | Tool::Perf => {
                        let calls = |name: &str| {
                            per_unit(
                                load,
                                c.calls(name).saturating_sub(fixed.calls(name)) as f64,
                                &c,
                            )
                        };
                        let total = per_unit(
                            load,
                            c.total_calls().saturating_sub(fixed.total_calls()) as f64,
                            &c,
                        );
                        let mut kinds: Vec<(String, f64)> = c
                            .syscalls
                            .iter()
                            .map(|(n, _)| (n.clone(), calls(n)))
                            .filter(|(n, v)| {
                                *v >= 0.05 && n != "all" && n != "cpu_us" && n != "switches"
                            })
                            .collect();
                        kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
                        let top: Vec<String> = kinds
                            .iter()
                            .take(5)
                            .map(|(n, v)| format!("{n} {v:.1}"))
                            .collect();
                        eprintln!("e2e: {key}: {total:.1} syscalls/{unit}: {}", top.join(", "));
                        let cpu = calls("cpu_us");
                        let switches = calls("switches");
                        if tool == Tool::Perf {
                            eprintln!(
                                "e2e: {key}: server CPU {cpu:.0} us/{unit}, {switches:.1} context switches/{unit}"
                            );
                        }
                        r.rows.push(Row {
                            name: if tool == Tool::Perf {
                                "system calls (perf)"
                            } else {
                                "system calls (strace)"
                            },
                            value: format!("{total:.1}/{unit}"),
                            beside: if tool == Tool::Perf {
                                format!(
                                    "{label}, {}: {}; {switches:.0} context switches, {cpu:.0} us CPU",
                                    load.name(),
                                    top.join(", ")
                                )
                            } else {
                                format!("{label}, {}: {}", load.name(), top.join(", "))
                            },
                            target: "",
                            met: None,
                        });
                        json.insert(
                            key,
                            json!({"per_unit": total, "unit": unit,
                            "wakeups_per_unit": calls("epoll_wait") + calls("epoll_pwait"),
                            "cpu_us_per_unit": cpu, "switches_per_unit": switches,
                            "by_kind": kinds.iter().map(|(n, v)| (n.clone(), json!(v)))
                                .collect::<serde_json::Map<_, _>>(),
                            "bytes": c.bytes, "frames": c.frames, "keys": c.keys}),
                        );
                    }
                }
            }
        }
    }
    r.json.insert("cost".into(), Value::Object(json));
}

fn print_table(r: &Report) {
    let w0 = r.rows.iter().map(|x| x.name.len()).max().unwrap_or(0);
    let w1 = r.rows.iter().map(|x| x.value.len()).max().unwrap_or(0);
    let w2 = r.rows.iter().map(|x| x.beside.len()).max().unwrap_or(0);
    let w3 = r.rows.iter().map(|x| x.target.len()).max().unwrap_or(0);
    println!();
    for x in &r.rows {
        let met = match x.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        };
        println!(
            "{:w0$}  {:>w1$}  {:w2$}  {:w3$}  {met}",
            x.name, x.value, x.beside, x.target
        );
    }
}

fn main() {
    if let Ok(script) = std::env::var(IDEAL_ENV) {
        return ideal_relay(&script);
    }
    // `cargo bench` passes `--bench` and maybe a filter; there is one fixed run.
    let bin = keepty_bin();
    let mut r = Report {
        rows: Vec::new(),
        json: serde_json::Map::new(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("e2e: {} (load average {})", bin.display(), load.trim());
    // An older binary to measure beside this one, alternately, in the same run.
    let mut bins = vec![("this", bin.clone())];
    if let Some(base) = std::env::var_os("E2E_BASE_BIN") {
        bins.push(("base", PathBuf::from(base)));
    }
    // E2E_ONLY=cost,echo,... runs only those sections.
    let only = std::env::var("E2E_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|s| s == name);
    if run("binary") {
        binary(&bin, &mut r);
    }
    if run("memory") {
        memory(&bin, &mut r);
    }
    if run("connect") {
        connect_to_prompt(&bin, &mut r);
    }
    if run("replay") {
        reattach_replay(&bin, &mut r);
    }
    if run("echo") {
        echo(&bins, &mut r);
    }
    if run("throughput") {
        throughput(&bins, &mut r);
    }
    if run("cost") {
        cost(&bins, &mut r);
    }
    print_table(&r);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut json = Value::Object(r.json);
    json["load_average_at_start"] = Value::from(load.trim());
    json["cpus"] = Value::from(std::thread::available_parallelism().map_or(0, |n| n.get()));
    let path = target.join("e2e.json");
    match std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default()) {
        Ok(()) => println!("\nwritten: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
