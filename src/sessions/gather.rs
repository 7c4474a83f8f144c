//! When a session's PTY is read again: at once, or, while output streams, after a short rest.
//!
//! A PTY master hands over at most the line discipline's 4 KiB per read, and a read that finds
//! it empty first waits for the kernel's flush worker to refill it (a context switch) or comes
//! back with `WouldBlock`. Read the moment the PTY signals, a flood costs a wake-up, a read
//! that finds nothing and a frame for every few KiB (issue 20). So while output streams, after
//! a read pass the PTY rests for [`REST`]: the kernel keeps the output (the program blocks
//! only if its buffer fills), and the next pass takes all of it in one wake-up and a few big
//! frames. What a pass read always goes out in that pass, and output that follows a quiet
//! moment is read at once: an echo, a prompt or a slow log line never waits.
//!
//! Pure bookkeeping on instants, no I/O: the relay asks [`Gather::may_read`] before a read
//! pass and tells [`Gather::after_pass`] what it took; the event loop wakes for
//! [`Gather::deadline`].

use std::time::Instant;

use crate::limits::{QUIET, REST, STREAMING};

/// One session's pacing state.
#[derive(Debug, Default)]
pub struct Gather {
    /// When the last read pass that took output ran, and how much it took.
    last_data: Option<(Instant, usize)>,
    /// The PTY is not read before this (set while output streams).
    rest_until: Option<Instant>,
    /// The PTY's readable interest is off: a resting PTY still signals every few KiB the
    /// program writes, and each signal would wake the loop for nothing. Its rest's end is
    /// then its only wake-up; it is turned back on once the output stops streaming.
    muted: bool,
}

impl Gather {
    /// True if the PTY may be read at `now`.
    pub fn may_read(&self, now: Instant) -> bool {
        self.rest_until.is_none_or(|t| now >= t)
    }

    /// After a read pass at `now` that took `bytes`: while the output streams, the PTY rests.
    /// It starts to stream with output again within [`QUIET`] of the last pass and more than
    /// a trickle between the two; it goes on streaming while each pass after a rest takes
    /// more than a trickle, however late a loaded machine ran the pass. A pass that finds
    /// nothing ends it. `open` is false once the output has ended.
    pub fn after_pass(&mut self, now: Instant, bytes: usize, open: bool) {
        if bytes == 0 {
            self.rest_until = None;
            return;
        }
        let streaming = if self.rest_until.is_some() {
            bytes >= STREAMING
        } else {
            self.last_data.is_some_and(|(at, last)| {
                now.saturating_duration_since(at) <= QUIET && last + bytes >= STREAMING
            })
        };
        self.last_data = Some((now, bytes));
        self.rest_until = (open && streaming).then(|| now + REST);
    }

    /// When the resting PTY must be read again, if it rests past `now`.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        self.rest_until.filter(|&t| t > now)
    }

    /// True if the PTY's readable interest is off.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// What the PTY's readable interest should be after a pass at `now`: `Some(true)` to
    /// turn it off (it rests from now on), `Some(false)` to turn it back on (it rests no
    /// longer), `None` to leave it. Records the change as made.
    pub fn interest_change(&mut self, now: Instant) -> Option<bool> {
        let mute = self.deadline(now).is_some();
        (mute != self.muted).then(|| {
            self.muted = mute;
            mute
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn us(t0: Instant, us: u64) -> Instant {
        t0 + Duration::from_micros(us)
    }

    #[test]
    fn output_after_a_quiet_moment_is_read_at_once() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        // The first output ever, a big one: nothing came before it, so no rest.
        g.after_pass(t0, 4096, true);
        assert!(g.may_read(t0));
        assert_eq!(g.deadline(t0), None);
        // Echoed keys, however close together: a trickle never makes the PTY rest.
        for i in 1..100 {
            let t = us(t0, 5_000 + i * 50);
            g.after_pass(t, 1, true);
            assert!(g.may_read(t), "key {i}");
        }
        // A burst after a pause longer than the quiet gap is read at once too.
        let later = us(t0, 5_000 + 100 * 50) + QUIET + Duration::from_micros(1);
        g.after_pass(later, 4096, true);
        assert!(g.may_read(later));
        assert_eq!(g.deadline(later), None);
    }

    #[test]
    fn streaming_output_rests_between_passes() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        g.after_pass(t0, 3000, true);
        assert!(g.may_read(t0));
        // Output again soon after: streaming, so the PTY rests for REST.
        let t1 = us(t0, 100);
        g.after_pass(t1, 3000, true);
        assert!(!g.may_read(t1));
        assert!(!g.may_read(t1 + REST / 2));
        assert_eq!(g.deadline(t1), Some(t1 + REST));
        assert!(g.may_read(t1 + REST));
        assert_eq!(g.deadline(t1 + REST), None);
        // The pass at the end of the rest took a lot: still streaming, even if a loaded
        // machine ran it late.
        let t2 = t1 + REST + QUIET * 5;
        g.after_pass(t2, 100_000, true);
        assert_eq!(g.deadline(t2), Some(t2 + REST));
        // After a rest, a trickle ends the streaming, and so does a pass that finds nothing;
        // the next output after a quiet moment is read at once.
        let t2b = t2 + REST;
        g.after_pass(t2b, 10, true);
        assert_eq!(g.deadline(t2b), None);
        g.after_pass(t2b, 3000, true);
        g.after_pass(t2b, 3000, true);
        assert!(g.deadline(t2b).is_some());
        g.after_pass(t2 + REST * 2, 0, true);
        assert_eq!(g.deadline(t2 + REST * 2), None);
        let t3 = t2 + REST + QUIET + Duration::from_micros(1);
        g.after_pass(t3, 5000, true);
        assert!(g.may_read(t3));
    }

    #[test]
    fn the_interest_is_off_while_resting_and_back_after() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        g.after_pass(t0, 3000, true);
        assert_eq!(g.interest_change(t0), None);
        let t1 = us(t0, 100);
        g.after_pass(t1, 3000, true);
        assert_eq!(g.interest_change(t1), Some(true));
        assert!(g.muted());
        // A pass at the end of each rest that renews it changes nothing: no system call per
        // rest while the flood lasts.
        for i in 1..10 {
            let t = t1 + REST * i;
            assert!(g.may_read(t));
            g.after_pass(t, 30_000, true);
            assert_eq!(g.interest_change(t), None);
        }
        // The stream stopped: the pass found nothing, so the PTY is heard again.
        let end = t1 + REST * 10;
        g.after_pass(end, 0, true);
        assert_eq!(g.interest_change(end), Some(false));
        assert!(!g.muted());
    }

    #[test]
    fn the_end_of_output_does_not_rest() {
        let t0 = Instant::now();
        let mut g = Gather::default();
        g.after_pass(t0, 3000, true);
        g.after_pass(us(t0, 100), 3000, false);
        assert!(g.may_read(us(t0, 100)));
        assert_eq!(g.deadline(us(t0, 100)), None);
    }
}
