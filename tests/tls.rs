//! TLS tests (feature `tls`).
