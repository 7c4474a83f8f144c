//! Any bytes as an upgrade's state records (a corrupt memfd, an older or newer writer): every
//! part's reader must refuse or accept without panicking and without allocating past what the
//! input holds, and a session record it accepts must write back to bytes it reads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keepty::upgrade::read_records(data);
});
