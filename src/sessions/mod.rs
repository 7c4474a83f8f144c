//! A shell and everything it owns: the PTY and its process (and the cgroup of every process
//! it starts), the ring of its output, the terminal modes and clean replay points, the
//! download offers its programs make, the attach seats, and the tombstones of sessions that
//! ended.

pub(crate) mod cgroup;
pub mod checkpoint;
pub(crate) mod gather;
pub(crate) mod mapping;
pub mod modes;
pub mod offer;
pub mod policy;
pub(crate) mod pty;
pub mod ring;
pub mod sample;
pub(crate) mod session;
pub(crate) mod table;
pub(crate) mod tombstones;
