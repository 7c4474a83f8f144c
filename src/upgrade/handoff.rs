//! The system side of an upgrade: which binary to run, asking it whether it reads our state,
//! the memfd the state travels in, and the `execve` itself.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::upgrade::format::{FormatError, VERSION};

/// The hidden option that tells a fresh process to take over from a state file.
pub const RESTORE_FLAG: &str = "--restore-fd";

/// The hidden option that asks a binary which state formats it reads.
pub const CHECK_FLAG: &str = "--check-state-version";

/// How long the binary on disk may take to answer the check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest state a new process reads: 32 sessions of 256 KiB are 8 MiB; this leaves room
/// for `--max-sessions` and `--scrollback` well past the defaults, and no more.
const MAX_STATE: u64 = 1 << 30;

/// What `--check-state-version` prints: the formats this binary reads.
pub fn check_answer() -> String {
    let versions: Vec<String> = crate::upgrade::format::READS
        .iter()
        .map(u32::to_string)
        .collect();
    format!("keepty-state {}", versions.join(" "))
}

/// The path to run on an upgrade, read once at startup: after a package manager replaces the
/// file, `/proc/self/exe` names the old, deleted inode (with " (deleted)" appended), while
/// the path names the new one. `argv[0]` is preferred when it is absolute and is the running
/// file, so a symlink (`/usr/bin/keepty` -> a versioned directory) is followed afresh.
pub fn exe_path() -> io::Result<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(stripped) => PathBuf::from(stripped),
        None => exe,
    };
    if let Some(arg0) = std::env::args_os().next().map(PathBuf::from)
        && arg0.is_absolute()
        && same_file(&arg0, Path::new("/proc/self/exe"))
    {
        return Ok(arg0);
    }
    Ok(exe)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Asks the binary at `exe` which state formats it reads; `Ok` only if it names ours. It runs
/// as a child with nothing of ours open (every fd here is close-on-exec) and a time limit.
pub fn check(exe: &Path) -> Result<(), String> {
    let mut child = Command::new(exe)
        .arg(CHECK_FLAG)
        .args(plain_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not answer the check in 5 s", exe.display()));
            }
            Err(e) => return Err(format!("waiting for the check: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.by_ref().take(4096).read_to_string(&mut out);
    }
    if !status.success() {
        let mut why = String::new();
        if let Some(mut se) = child.stderr.take() {
            let _ = se.by_ref().take(4096).read_to_string(&mut why);
        }
        let why = why
            .lines()
            .last()
            .unwrap_or("it does not read keepty state");
        return Err(format!(
            "{} {CHECK_FLAG} failed ({status}): {why}",
            exe.display()
        ));
    }
    reads_ours(&out).map_err(|e| format!("{}: {e}", exe.display()))
}

/// Whether a check answer names the format this binary writes.
fn reads_ours(answer: &str) -> Result<(), FormatError> {
    let Some(list) = answer
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("keepty-state "))
    else {
        return Err(FormatError(format!("unexpected check answer {answer:?}")));
    };
    if list.split_whitespace().any(|v| v.parse() == Ok(VERSION)) {
        Ok(())
    } else {
        Err(FormatError(format!(
            "it reads state formats {list}, not {VERSION}"
        )))
    }
}

fn set_inherit(fd: BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    let flags = if inherit {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// The arguments for the new process: the restore option, then ours.
fn next_args(fd: RawFd) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![RESTORE_FLAG.into(), fd.to_string().into()];
    out.extend(plain_args());
    out
}

/// Our arguments without an earlier restore option: what the check is run with too, so the
/// new binary loads this configuration (token files, certificates) before it is trusted
/// with the sessions.
fn plain_args() -> Vec<OsString> {
    without_restore(std::env::args_os().skip(1))
}

/// `args` without the `--restore-fd N` an earlier upgrade put first (only there: anything
/// later may be the sessions' command and its own arguments).
fn without_restore(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut args = args.peekable();
    if args.peek().is_some_and(|a| a == RESTORE_FLAG) {
        args.next();
        args.next();
    } else if args.peek().is_some_and(|a| {
        a.as_bytes()
            .starts_with(format!("{RESTORE_FLAG}=").as_bytes())
    }) {
        args.next();
    }
    args.collect()
}

/// Writes `state` into a memfd, leaves `keep` and the memfd open across the exec and runs
/// `exe`. Returns only if the exec failed, with everything as it was (close-on-exec again).
pub fn exec(exe: &Path, state: &[u8], keep: &[BorrowedFd<'_>]) -> io::Error {
    let Err(e) = try_exec(exe, state, keep);
    for fd in keep {
        let _ = set_inherit(*fd, false);
    }
    crate::signals::unblock_after_upgrade();
    e
}

fn try_exec(
    exe: &Path,
    state: &[u8],
    keep: &[BorrowedFd<'_>],
) -> io::Result<std::convert::Infallible> {
    let memfd = memfd_create(c"keepty-state", MFdFlags::MFD_CLOEXEC)?;
    let mut f = File::from(memfd);
    f.write_all(state)?;
    f.seek(SeekFrom::Start(0))?;
    let fd = f.as_raw_fd();
    let path = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the binary's path"))?;
    let mut argv = vec![path.clone()];
    for a in next_args(fd) {
        argv.push(
            CString::new(a.as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in an argument"))?,
        );
    }
    for fd in keep {
        set_inherit(*fd, true)?;
    }
    set_inherit(f.as_fd(), true)?;
    // A signal between the exec and the new process's handlers would take its default
    // action, and SIGUSR2's, SIGHUP's and SIGTERM's is to kill, hanging up every shell.
    // Blocked, they wait; the new process unblocks them once its handlers are in.
    crate::signals::block_for_exec();
    let Err(e) = nix::unistd::execv(&path, &argv);
    Err(e.into())
}

/// Marks every fd this process inherited close-on-exec, before anything is read: should the
/// state fail to name one of them, it must not leak into a shell started later. Returns the
/// inherited PTY masters, so those the restore did not adopt can be closed (their shells then
/// see hangup, as when a terminal window closes).
pub fn seal_inherited() -> Vec<RawFd> {
    let mut masters = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return masters;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: only for the duration of this call, on an fd that was listed open; an
        // fd closed since (the directory's own) makes fcntl fail, which is ignored.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if set_inherit(borrowed, false).is_ok()
            && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|p| p == Path::new("/dev/ptmx"))
        {
            masters.push(fd);
        }
    }
    masters
}

/// Closes the inherited masters the restore did not adopt.
pub fn close_unadopted(masters: &[RawFd], adopted: &[RawFd]) {
    for &fd in masters.iter().filter(|fd| !adopted.contains(fd)) {
        eprintln!(
            "keepty: upgrade: ERROR: terminal fd {fd} belongs to no restored session; closing it"
        );
        // SAFETY: an inherited master no session took ownership of: nothing else holds it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Reads the state a previous process left in memfd `fd` and closes it.
pub fn read_state(fd: RawFd) -> io::Result<Vec<u8>> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a state fd",
        ));
    }
    // SAFETY: the fd was passed on the command line by the process before the exec, which
    // made it for us alone; we take it over and close it here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = File::from(owned);
    let size = f.metadata().map(|m| m.len().min(MAX_STATE)).unwrap_or(0);
    let mut buf = Vec::with_capacity(size as usize + 1);
    Read::by_ref(&mut f).take(MAX_STATE).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Takes over the listening socket inherited across the exec.
///
/// # Safety
/// `fd` must be the listening socket the previous process left open for us.
pub unsafe fn adopt_listener(fd: RawFd) -> io::Result<mio::net::TcpListener> {
    // SAFETY: per the contract, the fd is a listening socket nobody else owns.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    std_listener.local_addr()?;
    set_inherit(std_listener.as_fd(), false)?;
    std_listener.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(std_listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_answer_names_the_versions_read() {
        assert!(reads_ours(&check_answer()).is_ok());
        assert!(reads_ours("keepty-state 7 8\n").is_err());
        assert!(reads_ours("keepty 0.1.0").is_err());
        assert!(reads_ours("").is_err());
        assert!(reads_ours(&format!("keepty-state 0 {VERSION}")).is_ok());
    }

    #[test]
    fn an_earlier_restore_option_is_dropped_and_the_command_kept() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let strip = |v: &[&str]| without_restore(args(v).into_iter());
        assert_eq!(
            strip(&[
                "--restore-fd",
                "7",
                "--ttl",
                "5s",
                "bash",
                "--restore-fd",
                "1"
            ]),
            args(&["--ttl", "5s", "bash", "--restore-fd", "1"]),
            "the command's own arguments stay"
        );
        assert_eq!(
            strip(&["--restore-fd=9", "--ttl", "5s"]),
            args(&["--ttl", "5s"])
        );
        assert_eq!(strip(&["--ttl", "5s"]), args(&["--ttl", "5s"]));
        assert_eq!(next_args(5)[..2], args(&["--restore-fd", "5"])[..]);
    }

    #[test]
    fn the_path_is_the_running_binary() {
        let p = exe_path().unwrap();
        assert!(
            same_file(&p, Path::new("/proc/self/exe")),
            "{}",
            p.display()
        );
    }
}
