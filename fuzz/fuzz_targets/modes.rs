//! Arbitrary terminal output, fed whole and split at an arbitrary point, gives the same modes;
//! the restore string stays bounded.
#![no_main]
use keepty::modes::ModeTracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let mut whole = ModeTracker::new();
    whole.feed(bytes);
    let at = usize::from(split).min(bytes.len());
    let mut parts = ModeTracker::new();
    parts.feed(&bytes[..at]);
    parts.feed(&bytes[at..]);
    let r = whole.restore_sequence();
    assert_eq!(r, parts.restore_sequence());
    assert!(r.len() < 4096);
});
