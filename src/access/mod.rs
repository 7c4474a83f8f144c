//! Who may ask: token files, the failed-login limiter and (in `gate`) the admission of one
//! request by its Host, Origin, fetch metadata and token.

pub mod auth;
// Wired into the event loop at merge.
#[allow(dead_code)]
pub(crate) mod gate;
