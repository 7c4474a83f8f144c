//! placeholder: embedded web assets (being written). Required API:
//!
//! ```ignore
//! pub struct Asset { pub content_type: &'static str, pub body: &'static [u8], pub gzip: &'static [u8], pub etag: &'static str }
//! pub fn get(path: &str) -> Option<&'static Asset>; // "/" and "/assets/..."
//! ```
