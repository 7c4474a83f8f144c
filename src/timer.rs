//! placeholder: hashed timer wheel (being written). Required API:
//!
//! ```ignore
//! pub struct Wheel<T> { .. }
//! impl<T> Wheel<T> {
//!     pub fn new(tick: Duration, now: Instant) -> Self;
//!     pub fn insert(&mut self, deadline: Instant, value: T);   // O(1)
//!     pub fn poll(&mut self, now: Instant, fired: &mut Vec<T>); // every entry with deadline <= now
//!     pub fn next_deadline(&self) -> Option<Instant>;          // never later than the true earliest
//!     pub fn len(&self) -> usize;
//!     pub fn is_empty(&self) -> bool;
//! }
//! ```
