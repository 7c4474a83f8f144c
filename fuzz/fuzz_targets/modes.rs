//! Arbitrary terminal output, fed whole and split at an arbitrary point, leaves the tracker in
//! the same state (modes, clean point, everything); the restore string stays bounded; the
//! clean point really is clean; and a replay from the checkpoints of a small ring, after its
//! `restore`, brings a fresh tracker to the same modes as one that saw everything.
#![no_main]
use keepty::sessions::checkpoint::Checkpoints;
use keepty::sessions::modes::ModeTracker;
use keepty::sessions::ring::Ring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[split, cap, read], bytes)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mut whole = ModeTracker::new();
    whole.feed(bytes);
    let at = usize::from(split).min(bytes.len());
    let mut parts = ModeTracker::new();
    parts.feed(&bytes[..at]);
    parts.feed(&bytes[at..]);
    let r = whole.restore_sequence();
    assert_eq!(r, parts.restore_sequence());
    assert!(r.len() < 4096);
    assert_eq!(format!("{whole:?}"), format!("{parts:?}"));

    // The clean point: the modes there are the current ones, and a terminal that read up to
    // it is clean, or at least about to read a character's first byte.
    let (point, plain) = whole.clean_point();
    let point = point as usize;
    assert!(point <= bytes.len() && plain as usize <= point);
    if whole.is_clean() {
        assert_eq!(point, bytes.len());
    }
    let mut upto = ModeTracker::new();
    upto.feed(&bytes[..point]);
    assert_eq!(upto.modes(), whole.modes());
    assert!(upto.is_clean() || bytes[point] & 0xc0 != 0x80);

    // A ring of 16..=271 bytes, fed in reads of 1..=256 bytes.
    let cap = 16 + usize::from(cap);
    let read = 1 + usize::from(read);
    let Ok(mut ring) = Ring::new(cap) else {
        return;
    };
    let mut tracker = ModeTracker::new();
    let mut points = Checkpoints::new(cap);
    for chunk in bytes.chunks(read.min(cap)) {
        points.feed(&mut tracker, chunk);
        ring.push(chunk);
        points.after_write(&mut ring, &tracker);
    }
    let (start, modes) = points.replay_point(&ring, &tracker);
    assert!(start >= ring.start() && start <= ring.end());
    assert_eq!(ring.clean_start(), start);
    let Some((a, b)) = ring.read_at(start) else {
        panic!("replay start {start} not held");
    };
    let mut fresh = ModeTracker::new();
    fresh.feed(tracker.restore_sequence_for(&modes).as_bytes());
    fresh.feed(a);
    fresh.feed(b);
    assert_eq!(fresh.modes(), tracker.modes());
});
