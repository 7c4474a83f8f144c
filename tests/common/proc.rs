//! What /proc says about a process (memory, CPU time, descriptors, children), and loopback
//! connections from a chosen source address, so one test can be many peers.
#![allow(dead_code)]

use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in KiB; 0 when the process is
/// gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let kib = status_kib(pid, "VmRSS");
    assert!(kib > 0, "no VmRSS for pid {pid}");
    kib
}

/// Peak resident set size of process `pid` (`VmHWM`), in KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    let kib = status_kib(pid, "VmHWM");
    assert!(kib > 0, "no VmHWM for pid {pid}");
    kib
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The fields of /proc/PID/stat after the parenthesised command name (which may hold
/// spaces): index 0 is the state, 1 the ppid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

unsafe extern "C" {
    #[link_name = "sysconf"]
    fn c_sysconf(name: i32) -> i64;
    #[link_name = "socket"]
    fn c_socket(domain: i32, ty: i32, protocol: i32) -> i32;
    #[link_name = "bind"]
    fn c_bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    #[link_name = "connect"]
    fn c_connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
}

const SC_CLK_TCK: i32 = 2;

/// User plus system CPU time of process `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let f = stat_fields(pid).unwrap_or_else(|| panic!("/proc/{pid}/stat"));
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf takes and returns plain integers.
    let hz = unsafe { c_sysconf(SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// The children of `pid` (from every process's ppid), each with its state letter.
pub fn children(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(child)
            && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
        {
            out.push((child, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// Children of `pid` in state Z: exited and never reaped.
pub fn zombies(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|&(_, st)| st == 'Z')
        .map(|(p, _)| p)
        .collect()
}

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

const AF_INET: i32 = 2;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2_000_000;

/// A loopback connection to `port` from source address `src` (any of 127.0.0.0/8), so one
/// test can be several peers. std cannot bind before connecting.
pub fn connect_from(src: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let sockaddr = |ip: Ipv4Addr, port: u16| SockaddrIn {
        family: AF_INET as u16,
        port: port.to_be(),
        addr: u32::from(ip).to_be(),
        zero: [0; 8],
    };
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses point at
    // live, correctly sized sockaddr_in values. CLOEXEC keeps the socket out of the servers
    // other tests spawn meanwhile.
    unsafe {
        let fd = c_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Owns the descriptor from here, so the error paths close it.
        let stream = TcpStream::from_raw_fd(fd);
        if c_bind(fd, &sockaddr(src, 0), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if c_connect(fd, &sockaddr(Ipv4Addr::LOCALHOST, port), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}
