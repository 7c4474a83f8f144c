//! Who may ask: token files and the failed-login limiter (`auth`), and the admission of one
//! request by its Host, Origin, fetch metadata and token (`gate`).

pub mod auth;
pub(crate) mod gate;
