//! The signals the server acts on, delivered through the poll loop rather than in a handler.

use std::io;

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
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
}

/// Installs the handlers. Must happen before the first spawn so no SIGCHLD is missed.
pub fn install() -> io::Result<Signals> {
    Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
}

/// Drains every pending signal (they coalesce: one event may stand for many).
pub fn drain(signals: &mut Signals, out: &mut Vec<Event>) {
    for sig in signals.pending() {
        out.push(match sig {
            SIGCHLD => Event::Child,
            SIGHUP => Event::Reload,
            _ => Event::Shutdown,
        });
    }
}
