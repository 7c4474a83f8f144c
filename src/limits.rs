//! Every cap in one place.
