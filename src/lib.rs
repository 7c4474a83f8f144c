//! keepty: a persistent browser terminal for small boxes.
//!
//! One thread, one `mio::Poll`: the listener, every connection and every PTY master are
//! driven from [`event_loop::Server`], which only conducts. Each piece of state has a type
//! that owns it, in a folder named for its layer:
//!
//! - [`net`]: bytes on the wire: accepting, TLS, one HTTP connection's I/O, HTTP heads and
//!   responses, one WebSocket client.
//! - [`access`]: who may ask: hosts, origins, fetch metadata, tokens, failure limits.
//! - [`sessions`]: a shell and everything it owns: PTY, ring, modes, replay points, seats.
//! - [`api`]: what the server offers: routes, the WebSocket messages, the admin views, the
//!   embedded page.
//! - `files`: file transfers to and from a session's directory: the helper process that
//!   opens files as the session's user, the streaming transfer, download tickets.
//! - [`cli`]: the subcommands (`ls`, `attach`, ...), clients of a running keepty.
//!
//! The pure parts (ring, modes, wheel, HTTP parsing, protocol, policy) are public so the
//! benches, fuzz targets and tests can drive them; the rest is `pub(crate)`, so rustc finds
//! what nothing uses.

// The /echo endpoint answers anyone without a token: it must never ship.
#[cfg(all(feature = "echo", not(debug_assertions)))]
compile_error!("the `echo` feature is for conformance-test (debug) builds only");

pub mod access;
pub(crate) mod agenda;
pub mod api;
pub mod base64;
pub mod cli;
pub mod config;
pub mod error;
pub mod event_loop;
pub(crate) mod files;
pub mod limits;
pub mod net;
pub mod qr;
pub(crate) mod random;
pub mod reach;
pub(crate) mod relay;
pub mod sessions;
pub(crate) mod signals;
pub mod startup;
pub mod timer;
pub(crate) mod token;
pub mod upgrade;
