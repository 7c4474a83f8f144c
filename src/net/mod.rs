//! Bytes on the wire: accepting connections, the TLS layer, HTTP heads and responses, one
//! HTTP connection's I/O and one WebSocket client. Nothing here knows about sessions beyond
//! a ring to send from.

pub mod accept;
pub mod addr;
pub(crate) mod budget;
pub(crate) mod conn;
pub mod http;
pub(crate) mod interfaces;
pub(crate) mod layer;
pub(crate) mod listener;
#[cfg(test)]
pub(crate) mod script;
pub mod stream;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub mod ws;
