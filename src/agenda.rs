//! What the event loop has to come back to: timers filed on the wheel, and the sessions and
//! connections a turn touched, serviced before it polls again.

/// Time-based work, keyed so a stale entry (its object gone or reused) is recognised.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Timer {
    /// A connection's head deadline or close linger: (slot, generation).
    Conn(usize, u64),
    /// A WebSocket's ping tick: ping, and close it if silent or stalled.
    Ping(usize, u64),
    /// A session's TTL check: (slot, generation).
    Ttl(usize, u64),
    /// SIGKILL what is left of a torn-down session (by its session id = leader pid).
    Kill(i32),
    /// Remove session cgroups whose processes are gone since their kill.
    SweepCgroups,
    /// Forget tombstones that are due.
    Tombstones,
    /// Shutdown: SIGKILL what is left of every session.
    KillOrphans,
    /// Shutdown: stop waiting for children.
    ExitNow,
    /// Try `accept` again after EMFILE.
    Accept,
    /// The next step of sampling what sessions cost.
    Sample,
    /// An upgrade's clients had their time to close: exec now.
    UpgradeNow,
    /// A session's writer did not come back after an upgrade: (slot, generation).
    ReleaseHold(usize, u64),
}

/// What the settle step still has to look at this turn.
#[derive(Default)]
pub(crate) struct Touched {
    /// Sessions whose PTY, ring or clients may move.
    pub(crate) sessions: Vec<usize>,
    /// Connections that may read or write.
    pub(crate) conns: Vec<usize>,
    /// The lists being serviced, kept between turns so a busy turn allocates nothing.
    spare_sessions: Vec<usize>,
    spare_conns: Vec<usize>,
    /// Sessions holding output to gather a frame, and the earliest time one must let it go:
    /// the loop wakes then and services them all (those not yet due file themselves again).
    held: Vec<usize>,
    held_until: Option<std::time::Instant>,
}

impl Touched {
    /// The sessions touched so far, sorted and without repeats; new touches go to a fresh
    /// list meanwhile. Hand the list back with [`Touched::done_sessions`].
    pub(crate) fn take_sessions(&mut self) -> Vec<usize> {
        let mut taken = std::mem::take(&mut self.spare_sessions);
        std::mem::swap(&mut taken, &mut self.sessions);
        taken.sort_unstable();
        taken.dedup();
        taken
    }

    /// Returns a serviced list for reuse.
    pub(crate) fn done_sessions(&mut self, mut list: Vec<usize>) {
        list.clear();
        self.spare_sessions = list;
    }

    /// The connections touched so far, as [`Touched::take_sessions`].
    pub(crate) fn take_conns(&mut self) -> Vec<usize> {
        let mut taken = std::mem::take(&mut self.spare_conns);
        std::mem::swap(&mut taken, &mut self.conns);
        taken.sort_unstable();
        taken.dedup();
        taken
    }

    /// Returns a serviced list for reuse.
    pub(crate) fn done_conns(&mut self, mut list: Vec<usize>) {
        list.clear();
        self.spare_conns = list;
    }

    /// Session `s` holds output until `deadline` at the latest.
    pub(crate) fn hold(&mut self, s: usize, deadline: std::time::Instant) {
        // A flood files the same session turn after turn: the last entry is the common repeat.
        if self.held.last() != Some(&s) {
            self.held.push(s);
        }
        self.held_until = Some(self.held_until.map_or(deadline, |d| d.min(deadline)));
    }

    /// When the loop must wake for held output.
    pub(crate) fn held_until(&self) -> Option<std::time::Instant> {
        self.held_until
    }

    /// At or after [`Touched::held_until`]: the sessions holding output are touched, so the
    /// settle step lets go of what is due.
    pub(crate) fn release_held(&mut self, now: std::time::Instant) {
        if self.held_until.is_some_and(|d| d <= now) {
            self.sessions.append(&mut self.held);
            self.held_until = None;
        }
    }

    /// Nothing left to look at.
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn held_sessions_come_back_when_the_first_is_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut t = Touched::default();
        assert_eq!(t.held_until(), None);
        // A flood files itself every turn: one entry, the earliest deadline kept.
        t.hold(3, t0 + 2 * ms);
        t.hold(3, t0 + 3 * ms);
        t.hold(5, t0 + ms);
        assert_eq!(t.held_until(), Some(t0 + ms));
        // Not yet due: nothing is touched.
        t.release_held(t0);
        assert!(t.is_empty());
        assert_eq!(t.held_until(), Some(t0 + ms));
        // Due: every held session is touched (the one not yet due files itself again when
        // serviced), and the loop no longer wakes for them.
        t.release_held(t0 + ms);
        assert_eq!(t.take_sessions(), vec![3, 5]);
        assert_eq!(t.held_until(), None);
        t.release_held(t0 + 10 * ms);
        assert!(t.is_empty());
    }
}
