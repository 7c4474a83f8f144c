//! The mode tracker over three kinds of output, for callgrind (issue 19: did the OSC 7337
//! branch cost the hot path anything?). Built with rustc alone, around the real modes.rs:
//!
//! ```text
//! rustc --edition 2024 -C opt-level=3 -g benches/modes_osc/feed.rs -o target/feed
//! git show e21d81a:src/sessions/modes.rs > target/modes-before.rs   # before the offer
//! rustc --edition 2024 -C opt-level=3 -g --cfg before benches/modes_osc/feed.rs -o target/feed-before
//! for k in plain sgr osc; do for b in feed feed-before; do
//!   valgrind --tool=callgrind --callgrind-out-file=target/cg.$b.$k --toggle-collect='feed::run' target/$b $k
//! done; done
//! ```
//!
//! 8 MiB of each, in 16 KiB reads: `plain` text lines, `sgr` (a colour and a reset around
//! every word), `osc` (an OSC 8 hyperlink and an OSC 2 title every 60 bytes).
#![allow(dead_code, unused_imports)]

mod limits {
    pub const MAX_CSI_PARAMS: usize = 32;
    pub const MAX_TITLE: usize = 256;
    pub const MAX_OFFER_PATH: usize = 4096;
}
// Inline modules take #[path] relative to a directory of their own name, which does not
// exist here: the files are modules at the top, re-exported where the crate has them.
#[path = "../../src/upgrade/format.rs"]
mod format_rs;
#[cfg_attr(before, path = "../../target/modes-before.rs")]
#[cfg_attr(not(before), path = "../../src/sessions/modes.rs")]
mod modes_rs;
#[cfg(not(before))]
#[path = "../../src/sessions/offer.rs"]
mod offer_rs;
mod upgrade {
    pub(crate) use super::format_rs as format;
}
mod access {
    pub mod auth {
        pub fn base64url_decode(_: &str) -> Option<Vec<u8>> {
            None
        }
    }
}
mod sessions {
    pub(crate) use super::modes_rs as modes;
    #[cfg(not(before))]
    pub(crate) use super::offer_rs as offer;
}

use sessions::modes::ModeTracker;

#[inline(never)]
fn run(t: &mut ModeTracker, data: &[u8]) {
    for c in data.chunks(16 * 1024) {
        t.feed(c);
    }
}

fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let mut data = Vec::new();
    let mut i = 0u32;
    while data.len() < 8 << 20 {
        match kind.as_str() {
            "sgr" => {
                data.extend_from_slice(format!("\x1b[38;5;{}mword{i} \x1b[0m", i % 256).as_bytes())
            }
            "osc" => data.extend_from_slice(
                format!("\x1b]8;;http://x/{i}\x07link\x1b]8;;\x07 \x1b]2;title {i}\x07text ")
                    .as_bytes(),
            ),
            _ => {
                data.extend_from_slice(b"plain text line of some length, nothing special in it\r\n")
            }
        }
        i += 1;
    }
    let mut t = ModeTracker::new();
    run(&mut t, &data);
    println!("{}", t.bells() + t.title().len() as u64);
}
