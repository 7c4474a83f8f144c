//! The download offer `keepty send FILE` makes from inside a session (issue 19): a private
//! OSC sequence in the terminal's output,
//!
//! ```text
//! ESC ] 7337 ; send ; BASE64URL(ABSOLUTE_PATH) ; SIZE BEL
//! ```
//!
//! which the mode tracker picks out of the PTY output (see `modes.rs`) and the relay turns
//! into the WebSocket message `{"type":"offer","path":...,"size":...}`. The path is base64url
//! so that no byte of it can end the sequence or be taken for a control; the size is what the
//! file measured when it was offered (the download tells the real one).
//!
//! Both ends live here, so the encoding and its parse are tested against each other. Anything
//! a program prints is output a hostile program could print too: the parse accepts only an
//! absolute UTF-8 path of at most [`MAX_OFFER_PATH`] bytes with no NUL, and a decimal size;
//! nothing else offers anything. An offer only shows the user a question on the page: the
//! download itself goes through the owner-only file routes, with the session user's rights.

use crate::limits::MAX_OFFER_PATH;

/// The OSC number of keepty's own sequences: not assigned by xterm or any terminal we know.
pub const OSC_ID: u16 = 7337;

/// The payload bytes the tracker keeps at most: `send;`, the base64url of the longest path,
/// `;` and a 20-digit size. A longer payload cannot be a valid offer and is ignored.
pub const MAX_PAYLOAD: usize = 5 + (MAX_OFFER_PATH * 4).div_ceil(3) + 1 + 20;

/// A file a program in the session offers for download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Absolute path, as the program resolved it.
    pub path: String,
    /// Its size in bytes when offered.
    pub size: u64,
}

/// The sequence that offers `path` (absolute) of `size` bytes.
pub fn sequence(path: &str, size: u64) -> String {
    format!(
        "\x1b]{OSC_ID};send;{};{size}\x07",
        crate::base64::url(path.as_bytes())
    )
}

/// Parses an OSC 7337 payload (the bytes after `7337;`, before the terminator); `None` for
/// anything that is not a well-formed offer.
pub fn parse(payload: &[u8]) -> Option<Offer> {
    let rest = payload.strip_prefix(b"send;")?;
    let semi = rest.iter().position(|&b| b == b';')?;
    let (encoded, size) = (&rest[..semi], &rest[semi + 1..]);
    if size.is_empty() || size.len() > 20 || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(size).ok()?.parse::<u64>().ok()?;
    let path = crate::base64::url_decode(std::str::from_utf8(encoded).ok()?)?;
    if path.len() > MAX_OFFER_PATH || path.first() != Some(&b'/') || path.contains(&0) {
        return None;
    }
    Some(Offer {
        path: String::from_utf8(path).ok()?,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: &str) -> &[u8] {
        let s = seq.as_bytes();
        assert!(s.starts_with(b"\x1b]7337;"), "{seq:?}");
        assert_eq!(s.last(), Some(&0x07));
        &s[7..s.len() - 1]
    }

    #[test]
    fn a_sequence_parses_back() {
        for (path, size) in [
            ("/tmp/a.txt", 0),
            ("/home/pi/backup 2026-12-01.tar.gz", 123_456_789),
            ("/srv/ünïcødé/файл;with;semicolons\u{7}bell", u64::MAX),
            ("/", 1),
        ] {
            let seq = sequence(path, size);
            assert!(
                seq[2..seq.len() - 1].bytes().all(|b| b.is_ascii_graphic()),
                "nothing in it can end it early: {seq:?}"
            );
            assert_eq!(
                parse(payload(&seq)),
                Some(Offer {
                    path: path.into(),
                    size
                })
            );
        }
    }

    #[test]
    fn the_longest_path_fits_and_a_longer_one_is_refused() {
        let longest = format!("/{}", "a".repeat(MAX_OFFER_PATH - 1));
        let seq = sequence(&longest, 7);
        assert!(payload(&seq).len() <= MAX_PAYLOAD);
        assert_eq!(parse(payload(&seq)).map(|o| o.path.len()), Some(4096));
        let longer = format!("/{}", "a".repeat(MAX_OFFER_PATH));
        assert_eq!(parse(payload(&sequence(&longer, 7))), None);
    }

    #[test]
    fn malformed_offers_are_nothing() {
        let rel = crate::base64::url(b"relative/path");
        let nul = crate::base64::url(b"/a\0b");
        let latin1 = crate::base64::url(b"/caf\xe9");
        let ok = crate::base64::url(b"/ok");
        for bad in [
            "".to_string(),
            "send".into(),
            "send;".into(),
            format!("send;{ok}"),
            format!("send;{ok};"),
            format!("send;{ok};-1"),
            format!("send;{ok};1x"),
            format!("send;{ok};+1"),
            format!("send;{ok};1;2"),
            format!("send;{ok};18446744073709551616"),
            format!("send;{ok};000000000000000000001"),
            format!("send;{ok}=;1"),
            format!("send;{rel};1"),
            format!("send;{nul};1"),
            format!("send;{latin1};1"),
            format!("recv;{ok};1"),
            format!("SEND;{ok};1"),
            "send;;1".into(),
            "send;a;1".into(),
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(
            parse(format!("send;{ok};00012").as_bytes()),
            Some(Offer {
                path: "/ok".into(),
                size: 12
            })
        );
    }
}
