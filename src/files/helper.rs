//! The helper process: every path operation of a transfer (resolve, open, create, rename,
//! unlink) runs in a child forked for that transfer, with the session's account's groups,
//! gid and uid, so `..`, symlinks and permissions are exactly that user's. The child only
//! makes system calls and exits; it never returns into the server (keepty is one thread, so
//! a fork without exec is sound here).
//!
//! Parent and child talk over a `SOCK_SEQPACKET` socketpair: one JSON message per request
//! and per answer, an opened file travelling with its answer as `SCM_RIGHTS`. The parent's
//! end is non-blocking and polled by the event loop, so an open that hangs (a dead NFS
//! mount) stalls this one transfer until its timeout, never the loop. For an upload the
//! child keeps the directory and the temporary name: on `commit` it renames the file into
//! place; on `abort`, or when the socket ends (the connection dropped, keepty exited or
//! upgraded), it unlinks the temporary file. SIGCHLD's reaper collects it like any child;
//! its pid leads no session, so its exit is never taken for a session's.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::stat::{FileStat, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::files::wire::{self, FileError};

/// Largest message either side sends: a path of `PATH_MAX` escaped in JSON, and room.
const MAX_MESSAGE: usize = 64 << 10;

/// Mode of an uploaded file that replaces nothing: 0666 less a typical umask's 022.
const NEW_MODE: u32 = 0o644;

/// Whose rights the helper takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Switch to this account (uid, gid, groups) before any path operation; `None`: keep
    /// keepty's own (not root, or the session runs as keepty's own account).
    pub account: Option<(u32, u32, Vec<u32>)>,
    /// That user's home: the session's directory when no process's can be read.
    pub home: String,
}

impl Identity {
    /// The rights of session leader `pid`'s user: its real uid and gid and its groups as
    /// `/proc/PID/status` gives them (what the session's shell really has, read without the
    /// password database, which may be a network service), and the `HOME` it started with.
    /// The real ids, not the effective ones: a session of `nobody` whose shell has `exec`ed
    /// `su` is, while su waits for a password, a process with effective uid 0, and the
    /// helper must not become root for it. (Nor the owner of `/proc/PID`: that is root for
    /// any process that made itself non-dumpable.) Only root switches; anyone else keeps its
    /// own (and its sessions run as itself).
    pub fn of_process(pid: i32) -> io::Result<Identity> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let (uid, gid, groups) = parse_status(&status)
            .ok_or_else(|| io::Error::other("no Uid/Gid/Groups in /proc/PID/status"))?;
        let home = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|&b| b == 0)
                    .find_map(|kv| kv.strip_prefix(b"HOME="))
                    .map(|h| String::from_utf8_lossy(h).into_owned())
            })
            .unwrap_or_else(|| "/".to_string());
        let me = nix::unistd::Uid::effective().as_raw();
        let account = (me == 0 && uid != me).then_some((uid, gid, groups));
        Ok(Identity { account, home })
    }
}

/// The real uid, real gid and supplementary groups in a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<(u32, u32, Vec<u32>)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().filter_map(|n| n.parse::<u32>().ok()))
    };
    // Uid: real, effective, saved, file system.
    let uid = field("Uid:")?.next()?;
    let gid = field("Gid:")?.next()?;
    let mut groups: Vec<u32> = field("Groups:")?.collect();
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Some((uid, gid, groups))
}

/// What the helper is asked.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ask {
    /// `cwd`, `open`, `create`, `commit`, `abort`.
    pub op: String,
    /// The path as the user gave it (relative to the session's directory, or absolute).
    pub path: String,
    /// `create`: replace an existing file.
    pub overwrite: bool,
    /// `create`: the bytes to come, for the free-space check.
    pub length: u64,
    /// Where the session is: its foreground process group (0: unknown), its leader, and its
    /// user's home (the last fallback).
    pub pgid: i32,
    /// The session leader's pid.
    pub leader: i32,
    /// The session user's home.
    pub home: String,
}

/// What the helper answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// A refusal's code ([`FileError::code`]); empty when it worked.
    pub error: String,
    /// Why, in words, for a refusal.
    pub message: String,
    /// The absolute path (the final one for an upload), or the directory for `cwd`.
    pub path: String,
    /// The file's size.
    pub size: u64,
}

impl Answer {
    fn refuse(e: &FileError) -> Answer {
        let message = match e {
            FileError::Io(m) => m.clone(),
            _ => String::new(),
        };
        Answer {
            error: e.code().to_string(),
            message,
            ..Answer::default()
        }
    }

    /// The answer as a result.
    pub fn result(self) -> Result<Answer, FileError> {
        if self.error.is_empty() {
            Ok(self)
        } else {
            Err(FileError::from_code(&self.error, &self.message))
        }
    }
}

/// The parent's end of one helper.
pub struct Helper {
    sock: OwnedFd,
    pid: i32,
}

impl Helper {
    /// Forks a helper with `who`'s rights.
    pub fn spawn(who: &Identity) -> io::Result<Helper> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Everything the child needs is allocated before the fork.
        let groups: Vec<nix::unistd::Gid> = who
            .account
            .as_ref()
            .map(|(_, _, g)| g.iter().map(|&g| nix::unistd::Gid::from_raw(g)).collect())
            .unwrap_or_default();
        // SAFETY: keepty runs one thread, so the child's copy of the heap and its locks is
        // consistent; the child never returns from `child` (it `_exit`s, panics included).
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    child(theirs, who, &groups)
                }))
                .unwrap_or(70);
                // SAFETY: `_exit` ends the child at once, without running the parent's
                // destructors or atexit handlers on its copies.
                unsafe { nix::libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
                Ok(Helper {
                    sock: ours,
                    pid: child.as_raw(),
                })
            }
        }
    }

    /// The socket, for registration with the poll.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends a request. The socket holds far more than one message and each request waits
    /// for its answer, so a send never finds it full.
    pub fn ask(&self, ask: &Ask) -> io::Result<()> {
        let bytes = serde_json::to_vec(ask).map_err(io::Error::other)?;
        send(self.sock.as_raw_fd(), &bytes, None)?;
        Ok(())
    }

    /// The answer, if one arrived (`Ok(None)`: not yet); an error when the helper is gone.
    pub fn answer(&self) -> io::Result<Option<(Answer, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        match recv(self.sock.as_raw_fd(), &mut buf) {
            Ok((0, _)) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file helper exited",
            )),
            Ok((n, fd)) => {
                let a: Answer = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
                Ok(Some((a, fd)))
            }
            Err(Errno::EAGAIN) => Ok(None),
            Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn send(fd: RawFd, data: &[u8], pass: Option<RawFd>) -> nix::Result<usize> {
    let iov = [IoSlice::new(data)];
    let fds = [pass.unwrap_or(-1)];
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if pass.is_some() { &cmsgs } else { &[] };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
}

fn recv(fd: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just installed `f` in this process for us; nothing
                // else owns it. Extra fds (a confused peer) are closed by the drop.
                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, got))
}

// ---- the child -------------------------------------------------------------------------

/// An upload the child is writing: where the temporary file is and what it becomes.
struct Pending {
    dir: OwnedFd,
    tmp: String,
    name: String,
    file: OwnedFd,
    overwrite: bool,
    mode: u32,
    path: String,
}

/// The child's life: shed the server's descriptors and signal handlers, take the account's
/// rights, then answer requests until the socket ends. Its exit code, for the log of a
/// failed start only.
fn child(sock: OwnedFd, who: &Identity, groups: &[nix::unistd::Gid]) -> i32 {
    use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
    let keep = sock.as_raw_fd();
    // The listener, other connections and PTY masters are not this process's to hold: a
    // master kept open here would keep its session from seeing a hangup.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2 && fd != keep)
            .collect();
        for fd in fds {
            let _ = nix::unistd::close(fd);
        }
    }
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the default disposition installs no handler.
        let _ = unsafe { signal(s, SigHandler::SigDfl) };
    }
    let _ = SigSet::all().thread_unblock();
    if let Some((uid, gid, _)) = &who.account {
        let switched = nix::unistd::setgroups(groups)
            .and_then(|()| nix::unistd::setgid(nix::unistd::Gid::from_raw(*gid)))
            .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(*uid)));
        if switched.is_err() || nix::unistd::Uid::effective().as_raw() != *uid {
            return 71;
        }
    }
    let mut pending: Option<Pending> = None;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match recv(keep, &mut buf) {
            Ok((0, _)) => break,
            Ok((n, _)) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        let Ok(ask) = serde_json::from_slice::<Ask>(&buf[..n]) else {
            break;
        };
        let (answer, fd) = match ask.op.as_str() {
            "cwd" => (
                Answer {
                    path: cwd_of(&ask).to_string_lossy().into_owned(),
                    ..Answer::default()
                },
                None,
            ),
            "open" => match open_file(&ask) {
                Ok((a, f)) => (a, Some(f)),
                Err(e) => (Answer::refuse(&e), None),
            },
            "create" => match create(&ask) {
                Ok(p) => {
                    let a = Answer {
                        path: p.path.clone(),
                        ..Answer::default()
                    };
                    let fd = p.file.as_raw_fd();
                    if send(keep, &serde_json::to_vec(&a).unwrap_or_default(), Some(fd)).is_err() {
                        unlink(&p);
                        break;
                    }
                    pending = Some(p);
                    continue;
                }
                Err(e) => (Answer::refuse(&e), None),
            },
            "commit" => match pending.take() {
                Some(p) => match commit(&p) {
                    Ok(a) => (a, None),
                    Err(e) => {
                        unlink(&p);
                        (Answer::refuse(&e), None)
                    }
                },
                None => (
                    Answer::refuse(&FileError::Io("nothing to commit".into())),
                    None,
                ),
            },
            _ => break,
        };
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        let sent = send(keep, &bytes, fd.as_ref().map(|f| f.as_raw_fd()));
        drop(fd);
        if sent.is_err() {
            break;
        }
    }
    // An upload that was not committed leaves nothing.
    if let Some(p) = pending {
        unlink(&p);
    }
    0
}

/// The session's directory: its foreground group's, else its leader's, else the home.
fn cwd_of(ask: &Ask) -> PathBuf {
    for pid in [ask.pgid, ask.leader] {
        if pid > 0
            && let Ok(p) = nix::fcntl::readlink(format!("/proc/{pid}/cwd").as_str())
            && p.as_bytes().starts_with(b"/")
        {
            return PathBuf::from(p);
        }
    }
    PathBuf::from(if ask.home.is_empty() { "/" } else { &ask.home })
}

/// `ask.path` made absolute against the session's directory, without touching the disk.
fn absolute(ask: &Ask) -> PathBuf {
    let p = Path::new(&ask.path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd_of(ask).join(p)
    }
}

fn open_file(ask: &Ask) -> Result<(Answer, OwnedFd), FileError> {
    let path = absolute(ask);
    // O_NONBLOCK: opening a fifo must not wait for a writer; a regular file ignores it.
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(wire::errno_error)?;
    let st = nix::sys::stat::fstat(&fd).map_err(wire::errno_error)?;
    if !is_regular(&st) {
        return Err(FileError::NotAFile);
    }
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
    Ok((
        Answer {
            path: path.to_string_lossy().into_owned(),
            size: u64::try_from(st.st_size).unwrap_or(0),
            ..Answer::default()
        },
        fd,
    ))
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn create(ask: &Ask) -> Result<Pending, FileError> {
    if ask.path.ends_with('/') {
        return Err(FileError::IsDirectory);
    }
    let path = absolute(ask);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FileError::IsDirectory);
    };
    let name: OsString = name.to_owned();
    let Some(name) = name.to_str().map(str::to_string) else {
        return Err(FileError::BadPath);
    };
    if name == "." || name == ".." {
        return Err(FileError::IsDirectory);
    }
    let dir = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(wire::errno_error)?;
    // What is there now: a directory (followed, as the user's `cp` would) is refused; any
    // entry, a symlink included, is "exists" unless overwrite was asked for.
    let mut mode = NEW_MODE;
    match nix::sys::stat::fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(lst) => {
            if let Ok(st) = nix::sys::stat::fstatat(&dir, name.as_str(), AtFlags::empty())
                && is_dir(&st)
            {
                return Err(FileError::IsDirectory);
            }
            if !ask.overwrite {
                return Err(FileError::Exists);
            }
            if is_regular(&lst) {
                mode = lst.st_mode & 0o7777;
            }
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(wire::errno_error(e)),
    }
    let mut tries = 0;
    let (tmp, file) = loop {
        let suffix = crate::base64::url(
            &crate::random::bytes::<6>().map_err(|e| FileError::Io(e.to_string()))?,
        );
        let tmp = wire::temp_name(&name, &suffix[..6]);
        // O_EXCL | O_NOFOLLOW: a name planted in the directory (a symlink included) is
        // never opened, only a new file of our own.
        match nix::fcntl::openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(f) => break (tmp, f),
            Err(Errno::EEXIST) if tries < 8 => tries += 1,
            Err(e) => return Err(wire::errno_error(e)),
        }
    };
    let p = Pending {
        dir,
        tmp,
        name,
        file,
        overwrite: ask.overwrite,
        mode,
        path: path.to_string_lossy().into_owned(),
    };
    if let Ok(vfs) = nix::sys::statvfs::fstatvfs(&p.file) {
        // The field types differ between targets (32 bits on some 32-bit libcs).
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let free = u64::from(vfs.blocks_available()).saturating_mul(vfs.fragment_size() as u64);
        if free < ask.length {
            unlink(&p);
            return Err(FileError::NoSpace);
        }
    }
    Ok(p)
}

fn commit(p: &Pending) -> Result<Answer, FileError> {
    let _ = nix::sys::stat::fchmod(&p.file, Mode::from_bits_truncate(p.mode));
    let size = nix::sys::stat::fstat(&p.file)
        .map(|s| u64::try_from(s.st_size).unwrap_or(0))
        .unwrap_or(0);
    // The rename replaces a name, a symlink itself included; it never writes through one.
    let renamed = if p.overwrite {
        nix::fcntl::renameat(&p.dir, p.tmp.as_str(), &p.dir, p.name.as_str())
    } else {
        match rename_noreplace(&p.dir, &p.tmp, &p.name) {
            // A file system without RENAME_NOREPLACE: a hard link fails the same way on
            // an existing name.
            Err(Errno::EINVAL | Errno::ENOSYS) => match nix::unistd::linkat(
                &p.dir,
                p.tmp.as_str(),
                &p.dir,
                p.name.as_str(),
                AtFlags::empty(),
            ) {
                Ok(()) => {
                    unlink(p);
                    Ok(())
                }
                // Nor hard links (FAT on a router's USB stick): look, then rename. Only the
                // user's own processes could slip a file in between.
                Err(Errno::EPERM | Errno::EOPNOTSUPP) => {
                    match nix::sys::stat::fstatat(
                        &p.dir,
                        p.name.as_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    ) {
                        Ok(_) => Err(Errno::EEXIST),
                        Err(Errno::ENOENT) => {
                            nix::fcntl::renameat(&p.dir, p.tmp.as_str(), &p.dir, p.name.as_str())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            r => r,
        }
    };
    match renamed {
        Ok(()) => Ok(Answer {
            path: p.path.clone(),
            size,
            ..Answer::default()
        }),
        Err(Errno::EEXIST) => Err(FileError::Exists),
        Err(e) => Err(wire::errno_error(e)),
    }
}

/// `renameat2(RENAME_NOREPLACE)` within one directory, by its system call: nix wraps it for
/// glibc only, and musl (every router and Pi build) has no wrapper for it.
fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> nix::Result<()> {
    let from = std::ffi::CString::new(from).map_err(|_| Errno::EINVAL)?;
    let to = std::ffi::CString::new(to).map_err(|_| Errno::EINVAL)?;
    // SAFETY: two NUL-terminated strings that outlive the call and a directory fd we own;
    // the kernel only reads them.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            nix::libc::RENAME_NOREPLACE,
        )
    };
    Errno::result(r).map(drop)
}

fn unlink(p: &Pending) {
    let _ = nix::unistd::unlinkat(
        p.dir.as_fd(),
        p.tmp.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keepty-helper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_rename_without_replace_refuses_an_existing_name() {
        let d = scratch("noreplace");
        std::fs::write(d.join("a"), b"new").unwrap();
        std::fs::write(d.join("b"), b"old").unwrap();
        let dir =
            nix::fcntl::open(&d, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(rename_noreplace(&dir, "a", "b"), Err(Errno::EEXIST));
        assert_eq!(std::fs::read(d.join("b")).unwrap(), b"old");
        assert_eq!(rename_noreplace(&dir, "a", "c"), Ok(()));
        assert_eq!(std::fs::read(d.join("c")).unwrap(), b"new");
        assert!(!d.join("a").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Waits (bounded) for the helper's answer.
    fn wait(h: &Helper) -> (Answer, Option<OwnedFd>) {
        for _ in 0..2000 {
            if let Some(a) = h.answer().unwrap() {
                return a;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no answer");
    }

    fn ask(op: &str, path: &Path) -> Ask {
        Ask {
            op: op.into(),
            path: path.to_string_lossy().into_owned(),
            leader: std::process::id() as i32,
            ..Ask::default()
        }
    }

    fn leftovers(d: &Path) -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("keepty-upload"))
            .collect()
    }

    #[test]
    fn an_upload_is_renamed_on_commit_and_removed_when_the_socket_ends() {
        use std::io::Write;
        let d = scratch("upload");
        let me = Identity {
            account: None,
            home: String::new(),
        };
        let h = Helper::spawn(&me).unwrap();
        let target = d.join("f.bin");
        h.ask(&Ask {
            length: 5,
            ..ask("create", &target)
        })
        .unwrap();
        let (a, fd) = wait(&h);
        assert_eq!(a.result().unwrap().path, target.to_string_lossy());
        assert_eq!(leftovers(&d).len(), 1, "written under a temporary name");
        let mut f = std::fs::File::from(fd.unwrap());
        f.write_all(b"hello").unwrap();
        h.ask(&ask("commit", &target)).unwrap();
        let (a, _) = wait(&h);
        assert_eq!(a.result().unwrap().size, 5);
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        assert!(leftovers(&d).is_empty());
        drop(h);

        // Not committed: the socket's end removes the temporary file.
        let h = Helper::spawn(&me).unwrap();
        let other = d.join("g.bin");
        h.ask(&ask("create", &other)).unwrap();
        let _ = wait(&h);
        assert_eq!(leftovers(&d).len(), 1);
        drop(h);
        for _ in 0..2000 {
            if leftovers(&d).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(leftovers(&d).is_empty(), "the helper unlinked it");
        assert!(!other.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn existing_names_directories_and_planted_links_are_refused() {
        let d = scratch("refuse");
        std::fs::write(d.join("there"), b"old").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("link")).unwrap();
        let h = Helper::spawn(&Identity {
            account: None,
            home: String::new(),
        })
        .unwrap();
        let code = |a: Ask| {
            h.ask(&a).unwrap();
            wait(&h).0.error
        };
        assert_eq!(code(ask("create", &d.join("there"))), "exists");
        assert_eq!(code(ask("create", &d.join("sub"))), "is_directory");
        assert_eq!(
            code(ask("create", &PathBuf::from(format!("{}/x/", d.display())))),
            "is_directory"
        );
        assert_eq!(code(ask("create", &d.join("nope/x"))), "not_found");
        assert_eq!(code(ask("create", &d.join("link"))), "exists");
        assert_eq!(code(ask("open", &d.join("sub"))), "not_a_file");
        assert_eq!(code(ask("open", &d.join("missing"))), "not_found");
        // Overwriting a symlink replaces the link, never the file it points to.
        h.ask(&Ask {
            overwrite: true,
            ..ask("create", &d.join("link"))
        })
        .unwrap();
        let (a, _) = wait(&h);
        assert!(a.error.is_empty(), "{a:?}");
        h.ask(&ask("commit", &d.join("link"))).unwrap();
        assert!(wait(&h).0.error.is_empty());
        assert!(
            !d.join("victim").exists(),
            "nothing written through the link"
        );
        assert!(
            !std::fs::symlink_metadata(d.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rights_come_from_the_process_status() {
        let status = "Name:\tsh\nUid:\t65534\t65533\t65534\t65534\nGid:\t100\t101\t100\t100\nGroups:\t5 7 \n";
        assert_eq!(parse_status(status), Some((65534, 100, vec![5, 7, 100])));
        // A set-uid root program the user runs (su at its password prompt): still the user.
        let su =
            "Name:\tsu\nUid:\t65534\t0\t0\t0\nGid:\t65534\t65534\t65534\t65534\nGroups:\t65534\n";
        assert_eq!(parse_status(su), Some((65534, 65534, vec![65534])));
        assert_eq!(
            parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"),
            Some((0, 0, vec![0]))
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
        let me = Identity::of_process(std::process::id() as i32).unwrap();
        assert_eq!(me.account, None, "our own process: nothing to switch");
    }

    #[test]
    fn cwd_falls_back_to_the_leader_then_home() {
        let h = Helper::spawn(&Identity {
            account: None,
            home: String::new(),
        })
        .unwrap();
        h.ask(&Ask {
            op: "cwd".into(),
            leader: std::process::id() as i32,
            ..Ask::default()
        })
        .unwrap();
        let (a, _) = wait(&h);
        assert_eq!(PathBuf::from(a.path), std::env::current_dir().unwrap());
        h.ask(&Ask {
            op: "cwd".into(),
            home: "/home/nobody-here".into(),
            ..Ask::default()
        })
        .unwrap();
        assert_eq!(wait(&h).0.path, "/home/nobody-here");
    }
}
