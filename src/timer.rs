//! A hashed timer wheel: O(1) insert, poll cost bounded by the ticks that passed, and a cheap
//! [`Wheel::next_deadline`] for the event loop's poll timeout.
//!
//! There is no cancellation. A caller keeps the authoritative deadline on its own object (a
//! session's TTL, a connection's header timeout) and keys the entry by `(slab index,
//! generation)`; when an entry fires it re-checks that deadline and re-inserts if activity
//! pushed it later. That keeps the wheel a plain append-and-drain structure with no handles
//! to invalidate when a session or connection goes away.
//!
//! Time is always passed in: the wheel never reads a clock, so tests drive it with made-up
//! instants and the event loop alone owns `Instant::now()`.

use std::time::{Duration, Instant};

use slab::Slab;

/// Slots in one lap of the wheel.
///
/// 1024 slots at the event loop's 100 ms tick make one lap 102.4 s, longer than every short
/// timer the server arms (3 s kill escalation, 10 s header timeout, 20 s ping, 60 s silence,
/// 1 min auth lockout), so those are visited once, when they fire. Hour-long timers (the 12 h
/// TTL, 24 h tombstones) wait in their slot and are looked at once per lap (about 420 times
/// over 12 h): for the server's few hundred timers that is microseconds a lap, not worth the
/// cascading of a hierarchical wheel. The table is 1024 × 24 bytes = 24 KiB on 64-bit
/// targets, allocated once; a power of two makes the slot of a tick a mask.
const SLOTS: usize = 1024;
const MASK: u64 = SLOTS as u64 - 1;

/// End of a slot's list.
const NIL: usize = usize::MAX;

struct Entry<T> {
    deadline: Instant,
    /// Next entry in the same slot, or [`NIL`].
    next: usize,
    value: T,
}

#[derive(Clone, Copy)]
struct Slot {
    head: usize,
    /// Earliest deadline among this slot's entries, whatever their lap. Kept exact: insert
    /// lowers it, and poll recomputes it from the survivors of every slot it walks (the walk
    /// touches each entry anyway).
    min: Option<Instant>,
}

const EMPTY: Slot = Slot {
    head: NIL,
    min: None,
};

/// A hashed timer wheel holding values of type `T` until their deadline passes.
pub struct Wheel<T> {
    /// Tick 0 starts here; ticks are counted from it so that a slot index is a plain mask.
    origin: Instant,
    tick_ns: u64,
    /// The tick of the last poll (or of creation). Every entry due at or before the last
    /// poll's `now` has fired; an entry inserted with a deadline before this tick's start is
    /// filed under this tick, which the next poll always walks.
    current: u64,
    slots: Box<[Slot]>,
    entries: Slab<Entry<T>>,
    /// The earliest pending deadline, exactly; `None` when empty.
    next: Option<Instant>,
}

impl<T> Wheel<T> {
    /// An empty wheel whose slots are `tick` wide (clamped to at least 1 ns), starting at `now`.
    ///
    /// The tick only sets how entries are spread over slots and how far apart polls must be
    /// to walk a new slot: deadlines themselves are kept exactly, never rounded.
    pub fn new(tick: Duration, now: Instant) -> Self {
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        Wheel {
            origin: now,
            tick_ns,
            current: 0,
            slots: vec![EMPTY; SLOTS].into_boxed_slice(),
            entries: Slab::new(),
            next: None,
        }
    }

    /// Arms `value` to fire at the first poll whose `now` is at or after `deadline`. O(1).
    ///
    /// A deadline already in the past fires on the next poll.
    pub fn insert(&mut self, deadline: Instant, value: T) {
        let tick = self.tick_of(deadline).max(self.current);
        let slot = &mut self.slots[(tick & MASK) as usize];
        let key = self.entries.insert(Entry {
            deadline,
            next: slot.head,
            value,
        });
        slot.head = key;
        slot.min = Some(slot.min.map_or(deadline, |m| m.min(deadline)));
        self.next = Some(self.next.map_or(deadline, |m| m.min(deadline)));
    }

    /// Moves every value whose deadline is at or before `now` into `fired`, in no particular
    /// order; entries due later stay, even when they share a slot or a tick with `now`.
    ///
    /// Cost: one step per tick since the last poll (at most one lap) plus the entries in the
    /// slots walked; when something fired, also a look ahead for the new earliest deadline,
    /// one step per tick up to it (at most one lap). A `now` earlier than a previous poll's is
    /// harmless: it fires only what is due by it and does not move the wheel back.
    pub fn poll(&mut self, now: Instant, fired: &mut Vec<T>) {
        if self.next.is_none_or(|next| next > now) {
            // Nothing is due, so no slot needs walking. Moving `current` on anyway keeps the
            // next walk short: it would otherwise start from the tick of the last firing.
            self.current = self.current.max(self.tick_of(now));
            return;
        }
        let now_tick = self.tick_of(now).max(self.current);
        // Slots `current..=now_tick`; a gap of a lap or more walks each slot once.
        let steps = (now_tick - self.current)
            .saturating_add(1)
            .min(SLOTS as u64);
        for step in 0..steps {
            self.drain_slot(((self.current + step) & MASK) as usize, now, fired);
        }
        self.current = now_tick;
        self.next = self.earliest();
    }

    /// The earliest pending deadline, or `None` when the wheel is empty. O(1): it is kept
    /// up to date by `insert` and `poll`.
    ///
    /// Use `next_deadline() - now` (saturating) as the poll timeout. It is exact, so it is
    /// never later than a pending deadline, and after `poll(now)` it is later than `now`
    /// unless a past deadline was inserted since.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Entries pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tick that `t` falls in; instants before the origin count as tick 0.
    fn tick_of(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        // Whole seconds and nanoseconds separately: a u128 division per insert costs more
        // than the rest of the insert.
        let ns = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        ns / self.tick_ns
    }

    /// Fires the due entries of one slot and recomputes its minimum from the rest.
    fn drain_slot(&mut self, index: usize, now: Instant, fired: &mut Vec<T>) {
        let slot = self.slots[index];
        if slot.min.is_none_or(|m| m > now) {
            return;
        }
        let mut min: Option<Instant> = None;
        let mut prev = NIL;
        let mut key = slot.head;
        while key != NIL {
            let entry = &self.entries[key];
            let next = entry.next;
            if entry.deadline <= now {
                if prev == NIL {
                    self.slots[index].head = next;
                } else {
                    self.entries[prev].next = next;
                }
                fired.push(self.entries.remove(key).value);
            } else {
                min = Some(min.map_or(entry.deadline, |m| m.min(entry.deadline)));
                prev = key;
            }
            key = next;
        }
        self.slots[index].min = min;
    }

    /// The earliest deadline, found by walking slots forward from `current`.
    ///
    /// Called at the end of a poll, when every remaining entry is due after `now` and so is
    /// filed under its own tick, at or after `current`. The first slot (in tick order) whose
    /// minimum falls within the tick being looked at ends the walk: every slot after it holds
    /// only later ticks. The walk is therefore as long as the distance to the next deadline,
    /// capped at one lap.
    fn earliest(&self) -> Option<Instant> {
        if self.entries.is_empty() {
            return None;
        }
        let mut best: Option<Instant> = None;
        for step in 0..SLOTS as u64 {
            let tick = self.current + step;
            if let Some(m) = self.slots[(tick & MASK) as usize].min {
                best = Some(best.map_or(m, |b| b.min(m)));
                if self.tick_of(m) <= tick {
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const TICK: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn polled(w: &mut Wheel<u32>, now: Instant) -> Vec<u32> {
        let mut fired = Vec::new();
        w.poll(now, &mut fired);
        fired.sort_unstable();
        fired
    }

    #[test]
    fn idle_wheel_has_no_deadline() {
        let t0 = Instant::now();
        let mut w: Wheel<u32> = Wheel::new(TICK, t0);
        assert_eq!(w.next_deadline(), None);
        assert!(w.is_empty());
        assert!(polled(&mut w, t0 + ms(10_000)).is_empty());
        assert_eq!(w.next_deadline(), None);

        w.insert(t0 + ms(20_000), 1);
        assert_eq!(polled(&mut w, t0 + ms(20_000)), [1]);
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn fires_at_deadline_never_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(TICK, t0);
        // Mid-tick deadline: polls in the same tick but before it must not fire it.
        let d = t0 + ms(250);
        w.insert(d, 7);
        assert_eq!(w.next_deadline(), Some(d));
        assert!(polled(&mut w, t0 + ms(200)).is_empty());
        assert!(polled(&mut w, d - Duration::from_nanos(1)).is_empty());
        assert_eq!(w.next_deadline(), Some(d));
        assert_eq!(polled(&mut w, d), [7]);
        assert!(w.is_empty());
    }

    #[test]
    fn late_poll_fires_everything_due() {
        let t0 = Instant::now();
        let mut w = Wheel::new(TICK, t0);
        for i in 0..50u32 {
            w.insert(t0 + ms(u64::from(i) * 37), i);
        }
        // Far more than a lap later: every slot is walked once.
        assert_eq!(
            polled(&mut w, t0 + ms(1_000_000)),
            (0..50).collect::<Vec<_>>()
        );
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn same_slot_different_rounds() {
        let t0 = Instant::now();
        let lap = TICK * SLOTS as u32;
        let mut w = Wheel::new(TICK, t0);
        for round in 0..5u32 {
            w.insert(t0 + ms(300) + lap * round, round);
        }
        assert_eq!(w.next_deadline(), Some(t0 + ms(300)));
        assert_eq!(polled(&mut w, t0 + ms(300)), [0]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(300) + lap));
        // Walking the slot again a tick before the second round fires nothing.
        assert!(polled(&mut w, t0 + ms(200) + lap).is_empty());
        assert_eq!(polled(&mut w, t0 + ms(300) + lap), [1]);
        assert_eq!(polled(&mut w, t0 + ms(300) + lap * 3), [2, 3]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(300) + lap * 4));
        assert_eq!(polled(&mut w, t0 + lap * 10), [4]);
    }

    #[test]
    fn past_deadline_fires_on_next_poll() {
        let t0 = Instant::now();
        let mut w = Wheel::new(TICK, t0);
        assert!(polled(&mut w, t0 + ms(5_000)).is_empty());
        w.insert(t0 + ms(1_000), 1);
        w.insert(t0, 2);
        assert_eq!(w.next_deadline(), Some(t0));
        // Same `now` as the last poll: still due.
        assert_eq!(polled(&mut w, t0 + ms(5_000)), [1, 2]);
    }

    #[test]
    fn long_deadlines_with_short_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(TICK, t0);
        let ttl = t0 + Duration::from_secs(12 * 3600);
        let tomb = t0 + Duration::from_secs(24 * 3600);
        w.insert(tomb, 2);
        w.insert(ttl, 1);
        assert_eq!(w.next_deadline(), Some(ttl));
        // An event loop waking once a minute, then sleeping right up to the deadline.
        let mut now = t0;
        while now + Duration::from_secs(60) < ttl {
            now += Duration::from_secs(60);
            assert!(polled(&mut w, now).is_empty());
            assert_eq!(w.next_deadline(), Some(ttl));
        }
        assert_eq!(polled(&mut w, ttl), [1]);
        assert_eq!(w.next_deadline(), Some(tomb));
        assert!(polled(&mut w, tomb - Duration::from_nanos(1)).is_empty());
        assert_eq!(polled(&mut w, tomb), [2]);
    }

    #[test]
    fn next_deadline_is_after_now_once_polled() {
        let t0 = Instant::now();
        let mut w = Wheel::new(TICK, t0);
        w.insert(t0 + ms(120), 1);
        w.insert(t0 + ms(150), 2);
        assert_eq!(polled(&mut w, t0 + ms(130)), [1]);
        // The entry left in the current tick must not make the loop spin.
        assert_eq!(w.next_deadline(), Some(t0 + ms(150)));
    }

    #[test]
    fn deadlines_before_origin() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = Wheel::new(TICK, t0);
        w.insert(t0 - ms(500), 1);
        assert_eq!(polled(&mut w, t0), [1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at `now + offset_ms`; offsets below 0 land in the past.
        Insert(i64),
        /// Advance `now` by this many microseconds, then poll.
        Poll(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-2_000i64..300_000).prop_map(Op::Insert),
            1 => (-2_000i64..20_000_000).prop_map(Op::Insert),
            2 => (0u64..400_000).prop_map(Op::Poll),
            1 => (0u64..200_000_000).prop_map(Op::Poll),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreemap_model(
            tick_ms in 1u64..200,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let tick = ms(tick_ms);
            let t0 = Instant::now();
            let mut w = Wheel::new(tick, t0);
            let mut model: BTreeMap<(Instant, u32), ()> = BTreeMap::new();
            let mut now = t0;
            for (id, op) in (0u32..).zip(ops) {
                match op {
                    Op::Insert(off) => {
                        let deadline = if off < 0 {
                            now.checked_sub(ms(off.unsigned_abs())).unwrap_or(now)
                        } else {
                            now + ms(off as u64)
                        };
                        w.insert(deadline, id);
                        model.insert((deadline, id), ());
                    }
                    Op::Poll(us) => {
                        now += Duration::from_micros(us);
                        let mut fired = Vec::new();
                        w.poll(now, &mut fired);
                        fired.sort_unstable();
                        let rest = model.split_off(&(now + Duration::from_nanos(1), 0));
                        let mut due: Vec<u32> = model.keys().map(|&(_, id)| id).collect();
                        due.sort_unstable();
                        model = rest;
                        prop_assert_eq!(fired, due);
                        if let Some(next) = w.next_deadline() {
                            prop_assert!(next > now);
                        }
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                match model.keys().next() {
                    None => prop_assert_eq!(w.next_deadline(), None),
                    Some(&(min, _)) => {
                        let next = w.next_deadline().expect("pending entries");
                        prop_assert!(next <= min);
                        prop_assert!(next + tick >= min);
                    }
                }
            }
        }
    }
}
