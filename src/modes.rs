//! placeholder: terminal mode tracker (being written). Required API:
//!
//! ```ignore
//! pub struct ModeTracker { .. }
//! impl ModeTracker {
//!     pub fn new() -> Self;
//!     pub fn feed(&mut self, bytes: &[u8]);          // any split of the stream gives the same state
//!     pub fn restore_sequence(&self) -> String;      // escapes that put a blank terminal into these modes
//! }
//! ```
