//! keepty: a persistent browser terminal for small boxes.
//!
//! One thread, one `mio::Poll`: the listener, every connection and every PTY master are
//! driven from [`event_loop::Server`]. The pieces below are kept free of I/O and clocks where
//! possible so they can be unit-tested, fuzzed and benchmarked on their own.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

// The /echo endpoint answers anyone without a token: it must never ship.
#[cfg(all(feature = "echo", not(debug_assertions)))]
compile_error!("the `echo` feature is for conformance-test (debug) builds only");

pub mod admin;
pub mod assets;
pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod event_loop;
pub mod http;
pub mod listener;
pub mod modes;
pub mod policy;
pub mod protocol;
pub mod pty;
pub mod ring;
pub mod session;
pub mod signals;
pub mod stream;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;
pub mod tombstones;
pub mod ws;
