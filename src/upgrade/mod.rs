//! Upgrade in place (SIGUSR2 or `POST /admin/upgrade`): the running server writes its state
//! into a memfd, keeps the listener, every PTY master and that memfd open across `execve`, and
//! becomes the binary now at the path it was started from. Same PID, so the shells stay its
//! children. The layout of the state is in docs/upgrade.md.
//!
//! - [`mod@format`]: the framing (little-endian fields, sections, the version), pure.
//! - `state`: the whole server's record, written and read by the parts that own each piece.
//! - `handoff`: the system side: the binary's path, the check, the memfd, the exec.

pub mod format;
pub mod handoff;
pub(crate) mod state;
