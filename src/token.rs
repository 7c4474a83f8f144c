//! mio token encoding: which table a readiness event belongs to.
//!
//! Connections and PTY masters share the token space: the low bit says which slab the rest
//! indexes. Fixed sources sit at the top of the range, where no slab index can reach.

use mio::Token;

/// The listening socket.
pub const LISTENER: Token = Token(usize::MAX);
/// The signal source.
pub const SIGNALS: Token = Token(usize::MAX - 1);

/// What a token refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The listening socket.
    Listener,
    /// The signal source.
    Signals,
    /// A connection, by its index in the connection slab.
    Conn(usize),
    /// A session's PTY master, by the session's index in the session slab.
    Pty(usize),
}

/// The token for connection `key`.
pub fn conn(key: usize) -> Token {
    Token(key << 1)
}

/// The token for session `key`'s PTY master.
pub fn pty(key: usize) -> Token {
    Token((key << 1) | 1)
}

/// Decodes a token.
pub fn decode(t: Token) -> Source {
    match t {
        LISTENER => Source::Listener,
        SIGNALS => Source::Signals,
        Token(n) if n & 1 == 0 => Source::Conn(n >> 1),
        Token(n) => Source::Pty(n >> 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for k in [0usize, 1, 7, 1 << 20] {
            assert_eq!(decode(conn(k)), Source::Conn(k));
            assert_eq!(decode(pty(k)), Source::Pty(k));
        }
        assert_eq!(decode(LISTENER), Source::Listener);
        assert_eq!(decode(SIGNALS), Source::Signals);
    }
}
