//! PTYs and their processes: open, spawn, resize, signal, reap. The only file that talks to
//! the kernel about terminals and the only one with `unsafe`.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, Uid};

use crate::access::account::Account;
use crate::sessions::cgroup::Cgroup;

/// A session's terminal: the master side and the process started on the slave.
pub struct Pty {
    master: OwnedFd,
    pid: Pid,
    /// Every process it starts, where cgroups are available (until the session takes it).
    cgroup: Option<Cgroup>,
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

/// `PATH` for a session of another account: what `login` gives (login.defs' ENV_PATH and
/// ENV_SUPATH), not keepty's, which may name directories only keepty's user should use.
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a session's first process is and whom it runs as.
pub struct Launch<'a> {
    /// The program and its arguments.
    pub argv: &'a [String],
    /// Columns and rows.
    pub size: (u16, u16),
    /// The unix account to run as (keepty must be root for it to differ from its own);
    /// `None`: keepty's own.
    pub account: Option<&'a Account>,
    /// The session's id, given to it as `KEEPTY_SESSION`.
    pub id: &'a str,
}

/// The environment of a session, built from nothing: keepty's own environment may hold what
/// its service manager or its operator's shell put there (credentials, agent sockets), none
/// of which is the session's business. `own` is keepty's environment, from which only the
/// locale and time zone pass (and, for keepty's own account, its identity and `PATH`).
pub fn session_env(
    account: Option<&Account>,
    id: &str,
    own: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let own: Vec<(OsString, OsString)> = own.into_iter().collect();
    let get = |k: &str| own.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut env: Vec<(OsString, OsString)> = own
        .iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| matches!(k, "LANG" | "LANGUAGE" | "TZ") || k.starts_with("LC_"))
        })
        .cloned()
        .collect();
    let mut set = |k: &str, v: OsString| env.push((k.into(), v));
    set("TERM", "xterm-256color".into());
    set("COLORTERM", "truecolor".into());
    set("KEEPTY_SESSION", id.into());
    match account {
        Some(a) => {
            set("HOME", a.home.clone().into());
            set("USER", a.name.clone().into());
            set("LOGNAME", a.name.clone().into());
            set("SHELL", a.shell.clone().into());
            set(
                "PATH",
                if a.uid == 0 { ROOT_PATH } else { USER_PATH }.into(),
            );
        }
        None => {
            // Keepty's own account: what its environment says, else the password database
            // (read only when something is missing).
            let pw = std::cell::OnceCell::new();
            let from_pw =
                |f: fn(&Account) -> OsString| pw.get_or_init(Account::own).as_ref().map(f);
            let pairs: [(&str, Option<OsString>); 4] = [
                (
                    "HOME",
                    get("HOME").or_else(|| from_pw(|a| a.home.clone().into())),
                ),
                (
                    "USER",
                    get("USER").or_else(|| from_pw(|a| a.name.clone().into())),
                ),
                (
                    "LOGNAME",
                    get("LOGNAME").or_else(|| from_pw(|a| a.name.clone().into())),
                ),
                (
                    "SHELL",
                    get("SHELL").or_else(|| from_pw(|a| a.shell.clone().into())),
                ),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    set(k, v);
                }
            }
            let default = if nix::unistd::geteuid().is_root() {
                ROOT_PATH
            } else {
                USER_PATH
            };
            set("PATH", get("PATH").unwrap_or_else(|| default.into()));
        }
    }
    env
}

impl Pty {
    /// Opens a PTY of `launch.size` and starts `launch.argv` on it as a session leader with
    /// the PTY as its controlling terminal, in a clean environment ([`session_env`]), in its
    /// own cgroup where there is one, and as `launch.account` when given and keepty is root.
    /// The master is non-blocking and close-on-exec, so no later child inherits it (or that
    /// session would never see hangup).
    pub fn spawn(launch: &Launch<'_>) -> io::Result<Pty> {
        let (prog, args) = launch
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let (cols, rows) = launch.size;
        let ws = winsize(cols, rows);
        let pair = openpty(&ws, None)?;
        set_cloexec(&pair.master)?;
        set_cloexec(&pair.slave)?;
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;

        let env = session_env(launch.account, launch.id, std::env::vars_os());
        let home = env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "/".into());
        let home = CString::new(home.into_vec()).unwrap_or_else(|_| c"/".to_owned());
        // Another account only when we are root: otherwise the account is our own (the token
        // file's loader refuses anything else) and there is nothing to switch.
        let switch = launch
            .account
            .filter(|_| nix::unistd::geteuid().is_root())
            .map(|a| (a.uid, a.gid, a.groups.clone()));
        if let Some((uid, _, _)) = &switch {
            // Programs that reopen their terminal (ssh, sudo, tty) need it to be theirs.
            nix::unistd::fchown(&pair.slave, Some(Uid::from_raw(*uid)), None)?;
        }
        let cgroup = Cgroup::create();
        let procs = match &cgroup {
            Some(cg) => Some(cg.procs_file()?),
            None => None,
        };
        let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);

        let mut cmd = Command::new(prog);
        cmd.args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::from(pair.slave.try_clone()?))
            .stdout(Stdio::from(pair.slave.try_clone()?))
            .stderr(Stdio::from(pair.slave.try_clone()?));
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (write, setsid, ioctl, setgroups, setgid, setuid, chdir) on data made
        // before the fork; it allocates nothing. std has already reset the signal mask and
        // SIGPIPE's disposition for the child, and exec resets caught signals.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                // Join the session's cgroup first, so that nothing it forks is ever outside.
                if let Some(fd) = procs_fd
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // fd 0 is the slave here: make it the controlling terminal of the new session.
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Groups, then group, then user: each step needs the privilege the next drops.
                if let Some((uid, gid, groups)) = &switch
                    && (libc::setgroups(groups.len() as _, groups.as_ptr()) < 0
                        || libc::setgid(*gid) < 0
                        || libc::setuid(*uid) < 0)
                {
                    return Err(io::Error::last_os_error());
                }
                // As the account, so a home it cannot enter is not entered; "/" then, as login.
                if libc::chdir(home.as_ptr()) < 0 && libc::chdir(c"/".as_ptr()) < 0 {
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
        drop(procs);
        Ok(Pty {
            master: pair.master,
            pid: Pid::from_raw(child.id() as i32),
            cgroup,
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
            // A restored session's cgroup is in its record (`Cgroup::adopt`), not here.
            cgroup: None,
        })
    }

    /// The master, to be kept open across the exec.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The session's cgroup, for the session to keep past its terminal: dropping it kills
    /// everything the session started.
    pub fn take_cgroup(&mut self) -> Option<Cgroup> {
        self.cgroup.take()
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

/// The most `/proc` entries one [`signal_session`] reads: the scan runs on the loop thread,
/// and a box with more processes than this (a fork bomb, say) must not stall every client.
/// Where sessions have cgroups the scan is only the fallback; see `sessions::cgroup`.
pub const MAX_PROC_SCAN: usize = 4096;

/// Sends `sig` to every process in session `sid` (the session a PTY child leads): background
/// jobs sit in process groups of their own, and a hangup must reach them all. Reads at most
/// [`MAX_PROC_SCAN`] entries of /proc; used only when tearing a session down. A process that
/// left the session (`setsid`) is not found here: that takes the session's cgroup.
pub fn signal_session(sid: i32, sig: Signal) {
    if !is_foreign_group(sid) {
        return;
    }
    signal_group(sid, sig);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten().take(MAX_PROC_SCAN) {
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

    fn spawn(argv: &[&str], size: (u16, u16)) -> Pty {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Pty::spawn(&Launch {
            argv: &argv,
            size,
            account: None,
            id: "t",
        })
        .unwrap()
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn the_environment_is_built_not_inherited() {
        let own = os(&[
            ("SECRET_FROM_KEEPTY", "x"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("TZ", "UTC"),
            ("HOME", "/root"),
            ("USER", "root"),
            ("PATH", "/opt/keepty/bin:/usr/bin"),
        ]);
        let names = |env: &[(OsString, OsString)]| -> Vec<String> {
            env.iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect()
        };
        let get = |env: &[(OsString, OsString)], k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        let mine = session_env(None, "s1", own.clone());
        for k in ["SECRET_FROM_KEEPTY", "SSH_AUTH_SOCK"] {
            assert!(!names(&mine).contains(&k.to_string()), "{k} leaked");
        }
        assert_eq!(get(&mine, "LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(get(&mine, "LC_TIME").as_deref(), Some("de_DE.UTF-8"));
        assert_eq!(get(&mine, "KEEPTY_SESSION").as_deref(), Some("s1"));
        assert_eq!(get(&mine, "HOME").as_deref(), Some("/root"));
        assert_eq!(
            get(&mine, "PATH").as_deref(),
            Some("/opt/keepty/bin:/usr/bin")
        );
        assert!(
            get(&mine, "LOGNAME").is_some(),
            "filled from the password database"
        );

        let alice = Account {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 27],
            home: "/home/alice".into(),
            shell: "/bin/zsh".into(),
        };
        let theirs = session_env(Some(&alice), "s2", own);
        assert_eq!(get(&theirs, "HOME").as_deref(), Some("/home/alice"));
        assert_eq!(get(&theirs, "USER").as_deref(), Some("alice"));
        assert_eq!(get(&theirs, "LOGNAME").as_deref(), Some("alice"));
        assert_eq!(get(&theirs, "SHELL").as_deref(), Some("/bin/zsh"));
        assert_eq!(
            get(&theirs, "PATH").as_deref(),
            Some(USER_PATH),
            "not keepty's"
        );
        assert_eq!(get(&theirs, "TZ").as_deref(), Some("UTC"));
        let mut n = names(&theirs);
        n.sort();
        assert_eq!(
            n,
            [
                "COLORTERM",
                "HOME",
                "KEEPTY_SESSION",
                "LANG",
                "LC_TIME",
                "LOGNAME",
                "PATH",
                "SHELL",
                "TERM",
                "TZ",
                "USER"
            ]
        );
    }

    #[test]
    fn master_is_cloexec_and_nonblocking() {
        let p = spawn(&["/bin/sh", "-c", "sleep 5"], (80, 24));
        let fd_flags = FdFlag::from_bits_truncate(fcntl(&p.master, FcntlArg::F_GETFD).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC));
        let fl = OFlag::from_bits_truncate(fcntl(&p.master, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        signal_group(p.pid(), Signal::SIGKILL);
        let _ = waitpid(p.pid, None);
    }

    #[test]
    fn size_term_and_session() {
        let p = spawn(
            &[
                "/bin/sh",
                "-c",
                "stty size; echo TERM=$TERM; ps -o sid= -p $$ | tr -d ' '; echo done",
            ],
            (91, 17),
        );
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
        let p = spawn(&["/bin/sh", "-c", "echo hi; exit 3"], (80, 24));
        let out = read_until(&p, "\u{0}never");
        assert!(out.contains("hi"));
        let st = waitpid(p.pid, None).unwrap();
        assert_eq!(st, WaitStatus::Exited(p.pid, 3));
    }
}
