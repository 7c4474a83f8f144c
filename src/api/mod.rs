//! What the server offers: the WebSocket messages and close codes, the admin views and the
//! embedded page.

pub(crate) mod admin;
pub(crate) mod assets;
pub mod protocol;
pub(crate) mod routes;
pub(crate) mod text;
