//! Who may ask: token files and the failed-login limiter (`auth`), the unix accounts sessions
//! run as (`account`), the owner of a loopback peer's socket (`peer`), and the admission of
//! one request by its Host, Origin, fetch metadata and token (`gate`).

pub mod account;
pub mod auth;
pub(crate) mod gate;
pub(crate) mod peer;
