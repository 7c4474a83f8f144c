//! PTYs and their processes: open, spawn, resize, signal, reap. The only file that talks to
//! the kernel about terminals and the only one with `unsafe`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A session's terminal: the master side and the process started on the slave.
pub struct Pty {
    master: OwnedFd,
    pid: Pid,
}

mod ioctl {
    #![allow(missing_docs)]
    nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, super::Winsize);
}
use ioctl::set_winsize;

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

impl Pty {
    /// Opens a PTY of `cols` x `rows` and starts `argv` on it as a session leader with the
    /// PTY as its controlling terminal. The master is non-blocking and close-on-exec, so no
    /// later child inherits it (or that session would never see hangup).
    pub fn spawn(argv: &[String], cols: u16, rows: u16) -> io::Result<Pty> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let ws = winsize(cols, rows);
        let pair = openpty(&ws, None)?;
        set_cloexec(&pair.master)?;
        set_cloexec(&pair.slave)?;
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;

        let mut cmd = Command::new(prog);
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .env("COLORTERM", "truecolor")
            .stdin(Stdio::from(pair.slave.try_clone()?))
            .stdout(Stdio::from(pair.slave.try_clone()?))
            .stderr(Stdio::from(pair.slave.try_clone()?));
        if let Some(home) = std::env::var_os("HOME") {
            cmd.current_dir(home);
        }
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (setsid, ioctl); it allocates nothing. std has already reset the signal
        // mask and SIGPIPE's disposition for the child, and exec resets caught signals.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // fd 0 is the slave here: make it the controlling terminal of the new session.
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The slave copies held by `cmd` and `pair.slave` close here, so the master sees EIO
        // once the last process on the slave is gone.
        drop(cmd);
        drop(pair.slave);
        Ok(Pty {
            master: pair.master,
            pid: Pid::from_raw(child.id() as i32),
        })
    }

    /// A terminal inherited across an upgrade's exec: its master fd and its child.
    ///
    /// # Safety
    /// `fd` must be an open PTY master this process owns and nothing else will close.
    pub unsafe fn adopt(fd: RawFd, pid: i32) -> io::Result<Pty> {
        // SAFETY: the caller hands over sole ownership of the open fd.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        // The exec left it inheritable; no later child may get it.
        set_cloexec(&master)?;
        Ok(Pty {
            master,
            pid: Pid::from_raw(pid),
        })
    }

    /// The master, to be kept open across the exec.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The child's pid (also its session and process-group id).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The master fd, for registering with mio.
    pub fn raw_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }

    /// Reads output. `Ok(0)` means end of output: Linux reports EIO on the master once the
    /// slave side is closed by everyone, which is the PTY's end-of-file, not a failure.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(self.master.as_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EIO) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes input; `WouldBlock` when the terminal's input queue is full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::write(self.master.as_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets the terminal size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live
        // local for the duration of the call; the fd is our open master.
        unsafe { set_winsize(self.master.as_raw_fd(), &ws) }?;
        Ok(())
    }

    /// The terminal's foreground process group, if it has a real one. Once the session's
    /// leader is gone the kernel may answer 0, and `killpg(0, ..)` would signal the server's
    /// own group, so that and anything that is ours are refused here.
    pub fn foreground_group(&self) -> Option<i32> {
        let pgrp = nix::unistd::tcgetpgrp(self.master.as_fd()).ok()?.as_raw();
        is_foreign_group(pgrp).then_some(pgrp)
    }

    /// Tells the foreground program to repaint, even when the size did not change.
    pub fn nudge_redraw(&self) {
        if let Some(pgrp) = self.foreground_group() {
            signal_group(pgrp, Signal::SIGWINCH);
        }
    }

    /// Sends `sig` to the child's process group and to the terminal's foreground group (a
    /// job the shell started lives in a group of its own).
    pub fn signal_group(&self, sig: Signal) {
        signal_group(self.pid.as_raw(), sig);
        if let Some(pgrp) = self.foreground_group() {
            signal_group(pgrp, sig);
        }
    }
}

/// True for a process group that is not init's, not "the caller's" (0) and not the server's.
fn is_foreign_group(pgid: i32) -> bool {
    pgid > 1 && pgid != nix::unistd::getpgrp().as_raw()
}

/// Sends `sig` to process group `pgid`; never to the server's own group.
pub fn signal_group(pgid: i32, sig: Signal) {
    if is_foreign_group(pgid) {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

/// Sends `sig` to every process in session `sid` (the session a PTY child leads): background
/// jobs sit in process groups of their own, and a hangup must reach them all. Reads /proc;
/// used only when tearing a session down.
pub fn signal_session(sid: i32, sig: Signal) {
    if !is_foreign_group(sid) {
        return;
    }
    signal_group(sid, sig);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and parentheses):
        // state ppid pgrp session ...
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let session = rest
            .split_whitespace()
            .nth(3)
            .and_then(|s| s.parse::<i32>().ok());
        if session == Some(sid) && pid != std::process::id() as i32 {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when it exited.
    pub code: Option<i32>,
    /// Signal number when it was killed.
    pub signal: Option<i32>,
}

/// Reaps every child that has ended, without blocking: SIGCHLDs coalesce, so one wake-up may
/// stand for many exits.
pub fn reap_all(mut on_exit: impl FnMut(i32, ExitStatus)) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => on_exit(
                pid.as_raw(),
                ExitStatus {
                    code: Some(code),
                    signal: None,
                },
            ),
            Ok(WaitStatus::Signaled(pid, sig, _)) => on_exit(
                pid.as_raw(),
                ExitStatus {
                    code: None,
                    signal: Some(sig as i32),
                },
            ),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) => continue, // stopped/continued: not an exit
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn read_until(p: &Pty, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match p.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
            if String::from_utf8_lossy(&out).contains(needle) {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn master_is_cloexec_and_nonblocking() {
        let p = Pty::spawn(&["/bin/sh".into(), "-c".into(), "sleep 5".into()], 80, 24).unwrap();
        let fd_flags = FdFlag::from_bits_truncate(fcntl(&p.master, FcntlArg::F_GETFD).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC));
        let fl = OFlag::from_bits_truncate(fcntl(&p.master, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        signal_group(p.pid(), Signal::SIGKILL);
        let _ = waitpid(p.pid, None);
    }

    #[test]
    fn size_term_and_session() {
        let p = Pty::spawn(
            &[
                "/bin/sh".into(),
                "-c".into(),
                "stty size; echo TERM=$TERM; ps -o sid= -p $$ | tr -d ' '; echo done".into(),
            ],
            91,
            17,
        )
        .unwrap();
        let out = read_until(&p, "done");
        assert!(out.contains("17 91"), "{out}");
        assert!(out.contains("TERM=xterm-256color"), "{out}");
        assert!(
            out.contains(&p.pid().to_string()),
            "child leads its session: {out}"
        );
        let _ = waitpid(p.pid, None);
    }

    #[test]
    fn eof_after_exit_and_status() {
        let p = Pty::spawn(
            &["/bin/sh".into(), "-c".into(), "echo hi; exit 3".into()],
            80,
            24,
        )
        .unwrap();
        let out = read_until(&p, "\u{0}never");
        assert!(out.contains("hi"));
        let st = waitpid(p.pid, None).unwrap();
        assert_eq!(st, WaitStatus::Exited(p.pid, 3));
    }
}
