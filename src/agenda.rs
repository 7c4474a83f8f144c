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

    /// Nothing left to look at.
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.conns.is_empty()
    }
}
