//! The timer wheel against a sorted-map model: every poll fires exactly the entries due by
//! then, none early, none twice, none lost, whatever the mix of deadlines (past, same tick,
//! laps away) and polling gaps; `next_deadline` is always the model's earliest.
#![no_main]
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keepty::timer::Wheel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&tick, mut rest)) = data.split_first() else {
        return;
    };
    let tick = Duration::from_millis(u64::from(tick % 16) + 1);
    let origin = Instant::now();
    let mut wheel = Wheel::new(tick, origin);
    let mut model: BTreeMap<(Instant, u32), ()> = BTreeMap::new();
    let mut now = origin;
    let mut id = 0u32;
    let mut fired = Vec::new();
    while let Some((&[op, a, b], tail)) = rest.split_first_chunk::<3>() {
        rest = tail;
        let amount = u64::from(u16::from_le_bytes([a, b]));
        if op & 1 == 0 {
            // A deadline up to ~65 s ahead, or (op bit 1) up to ~6.5 s in the past.
            let deadline = if op & 2 == 0 {
                now + Duration::from_millis(amount)
            } else {
                now.checked_sub(Duration::from_millis(amount / 10))
                    .unwrap_or(now)
            };
            wheel.insert(deadline, id);
            model.insert((deadline, id), ());
            id += 1;
        } else {
            // Time moves on by up to ~65 s (several laps of a short tick), then a poll.
            now += Duration::from_millis(amount >> (op >> 4));
            fired.clear();
            wheel.poll(now, &mut fired);
            fired.sort_unstable();
            let mut due: Vec<u32> = model
                .keys()
                .filter(|(d, _)| *d <= now)
                .map(|&(_, i)| i)
                .collect();
            model.retain(|(d, _), _| *d > now);
            due.sort_unstable();
            assert_eq!(
                fired,
                due,
                "poll at {:?} fired the wrong entries",
                now - origin
            );
        }
        assert_eq!(wheel.len(), model.len());
        assert_eq!(wheel.next_deadline(), model.keys().next().map(|&(d, _)| d));
    }
});
