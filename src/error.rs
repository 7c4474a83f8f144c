//! Start-up errors.
