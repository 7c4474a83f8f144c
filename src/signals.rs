//! The signals the server acts on, delivered through the poll loop rather than in a handler.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

/// What a signal asks the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A child changed state: reap.
    Child,
    /// SIGTERM/SIGINT: shut down gracefully.
    Shutdown,
    /// SIGHUP: reload token files.
    Reload,
    /// SIGUSR2: upgrade in place (nginx's signal for a new executable).
    Upgrade,
}

/// Installs the handlers. Must happen before the first spawn so no SIGCHLD is missed.
pub fn install() -> io::Result<Signals> {
    let signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR2])?;
    // Blocked by the process before an upgrade's exec: deliver what waited, now that the
    // handlers are in.
    unblock_after_upgrade();
    Ok(signals)
}

/// The signals the server handles, which must not take their default action while no
/// handler is installed (across an exec).
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals until the next process has its handlers (the mask survives
/// `execve`, and so do pending signals).
pub fn block_for_exec() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None);
}

/// Unblocks them again: after the exec, or when it failed.
pub fn unblock_after_upgrade() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

/// Drains every pending signal (they coalesce: one event may stand for many).
pub fn drain(signals: &mut Signals, out: &mut Vec<Event>) {
    for sig in signals.pending() {
        out.push(match sig {
            SIGCHLD => Event::Child,
            SIGHUP => Event::Reload,
            SIGUSR2 => Event::Upgrade,
            _ => Event::Shutdown,
        });
    }
}
