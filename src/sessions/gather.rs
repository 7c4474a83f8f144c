//! When a session's new output goes out: at once, or a moment later in a bigger frame.
//!
//! A PTY hands over a few KiB per read, and under sustained output every read that became a
//! frame of its own cost a `writev` (a trip through the loopback or network stack, and a
//! wake-up of the reader). So while output streams, new bytes wait until enough gathered for
//! a large frame or a short window passed, whichever comes first. Output that follows a quiet
//! moment never waits: an echo, a prompt or a slow log line goes out in the pass that read it.
//!
//! Pure bookkeeping on offsets and instants, no I/O: the relay asks [`Gather::hold`] after each
//! read pass, and the event loop wakes for [`Gather::deadline`].

use std::time::Instant;

use crate::limits::{GATHER, GATHER_WINDOW, QUIET, STREAMING};

/// One session's gathering state.
#[derive(Debug, Default)]
pub struct Gather {
    /// When the last read pass that took output ran, and how much it took.
    last_data: Option<(Instant, usize)>,
    /// The output counts as streaming: set by a pass that read, kept until the next one.
    streaming: bool,
    /// Output offset up to which output was let go.
    released: u64,
    /// Since when output has been held, if it is.
    held_since: Option<Instant>,
}

impl Gather {
    /// After a read pass at `now` that took `bytes`, with the output ending at `end` and
    /// `room` bytes that may still be read before a client must be sent something: true if
    /// the new output should wait. `open` is false once the output has ended, which lets
    /// everything go.
    pub fn hold(&mut self, now: Instant, bytes: usize, end: u64, room: u64, open: bool) -> bool {
        if bytes > 0 {
            // Streaming: output again within the quiet gap of the last, and more than a
            // trickle between the two passes.
            self.streaming = self.last_data.is_some_and(|(at, last)| {
                now.saturating_duration_since(at) <= QUIET && last + bytes >= STREAMING
            });
            self.last_data = Some((now, bytes));
        }
        let pending = end.saturating_sub(self.released);
        let window_open = self
            .held_since
            .is_none_or(|t| now.saturating_duration_since(t) < GATHER_WINDOW);
        let hold = open
            && self.streaming
            && pending > 0
            && pending < GATHER as u64
            && room >= GATHER as u64
            && window_open;
        if hold {
            self.held_since.get_or_insert(now);
        } else {
            self.released = end;
            self.held_since = None;
        }
        hold
    }

    /// When held output must go out at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + GATHER_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ROOM: u64 = 1 << 20;

    fn ms(t0: Instant, us: u64) -> Instant {
        t0 + Duration::from_micros(us)
    }

    #[test]
    fn output_after_a_quiet_moment_goes_at_once() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        // The first output ever, a big one: nothing came before it, so it is not held.
        assert!(!g.hold(t0, 4096, 4096, ROOM, true));
        // Echoed keys, however close together: a trickle is never held.
        let mut end = 4096;
        for i in 1..100 {
            end += 1;
            assert!(!g.hold(ms(t0, 5_000 + i * 50), 1, end, ROOM, true));
        }
        // A burst after a pause longer than the quiet gap goes at once too.
        let later = ms(t0, 5_000 + 100 * 50) + QUIET + Duration::from_micros(1);
        end += 4096;
        assert!(!g.hold(later, 4096, end, ROOM, true));
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn streaming_output_gathers_until_enough_or_the_window_ends() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        let mut end = 3000;
        assert!(!g.hold(t0, 3000, end, ROOM, true));
        // Sustained: held while under GATHER and within the window, then let go at once.
        let mut t = 100;
        loop {
            end += 3000;
            let pending = end - 3000;
            let held = g.hold(ms(t0, t), 3000, end, ROOM, true);
            t += 10;
            if pending < GATHER as u64 {
                assert!(held, "at {end}");
            } else {
                assert!(!held, "enough gathered at {end}");
                break;
            }
        }
        // Held again, then the window runs out without more output: it goes.
        end += 3000;
        let start = ms(t0, t);
        assert!(g.hold(start, 3000, end, ROOM, true));
        assert_eq!(g.deadline(), Some(start + GATHER_WINDOW));
        assert!(g.hold(start + GATHER_WINDOW / 2, 0, end, ROOM, true));
        assert!(!g.hold(start + GATHER_WINDOW, 0, end, ROOM, true));
        assert_eq!(g.deadline(), None);
        // Nothing new: nothing to hold.
        assert!(!g.hold(start + GATHER_WINDOW, 0, end, ROOM, true));
    }

    #[test]
    fn the_end_of_output_and_a_full_ring_let_go() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        assert!(!g.hold(t0, 3000, 3000, ROOM, true));
        assert!(g.hold(ms(t0, 100), 3000, 6000, ROOM, true));
        // The output ended: what is held goes.
        assert!(!g.hold(ms(t0, 200), 0, 6000, ROOM, false));
        let mut g = Gather::default();
        assert!(!g.hold(t0, 3000, 3000, ROOM, true));
        // Too little room left to gather a frame (a small ring, or the writer behind).
        assert!(!g.hold(ms(t0, 100), 3000, 6000, GATHER as u64 - 1, true));
    }
}
