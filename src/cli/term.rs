//! This process's own terminal, for `keepty attach`: raw mode (restored on every way out),
//! its size, and the signals that say it changed or that we must stop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::termios::{self, SetArg, Termios};

/// Raw mode on a terminal while this lives; the old settings come back on drop.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode (no echo, no line editing, no signals from
    /// keys, no output processing): every key goes to the session as typed.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode {
            fd: fd.try_clone_to_owned()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

mod ioctl {
    #![allow(missing_docs)]
    nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::pty::Winsize);
}

/// The terminal's columns and rows, if `fd` is a terminal that knows them.
pub fn size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live
    // local for the duration of the call; a bad fd is an error return, not undefined.
    unsafe { ioctl::get_winsize(fd.as_raw_fd(), &mut ws) }.ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col.min(1000), ws.ws_row.min(1000)))
}

/// True when `fd` is a terminal.
pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Self-pipes the signal handlers write to: one for SIGWINCH, one for the signals that end
/// the client (SIGTERM, SIGHUP, SIGINT), polled beside stdin and the socket.
pub struct SignalPipes {
    /// Readable after a SIGWINCH.
    pub winch: UnixStream,
    /// Readable after SIGTERM, SIGHUP or SIGINT.
    pub stop: UnixStream,
}

impl SignalPipes {
    /// Installs the handlers (signal-hook's async-signal-safe pipe writers).
    pub fn install() -> io::Result<SignalPipes> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
        let (winch, w) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGWINCH, w)?;
        let (stop, w) = UnixStream::pair()?;
        for sig in [SIGTERM, SIGHUP, SIGINT] {
            signal_hook::low_level::pipe::register(sig, w.try_clone()?)?;
        }
        winch.set_nonblocking(true)?;
        stop.set_nonblocking(true)?;
        Ok(SignalPipes { winch, stop })
    }
}

/// Empties a non-blocking self-pipe.
pub fn drain(s: &mut UnixStream) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}
