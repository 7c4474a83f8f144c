//! File transfers to and from a session's directory (issue 19, docs/protocol.md "Files"):
//! the routes' pure parts ([`wire`]), the helper process that does every path operation with
//! the session user's rights ([`helper`]), one streaming transfer on an HTTP connection
//! ([`transfer`]), and download tickets ([`tickets`]).

pub(crate) mod helper;
pub(crate) mod tickets;
pub(crate) mod transfer;
pub(crate) mod wire;
