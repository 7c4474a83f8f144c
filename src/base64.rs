//! Base64 (RFC 4648), the one encoder and decoder every part uses: the URL alphabet without
//! padding for session ids, upload suffixes, download tickets, the token subprotocol and
//! `keepty send`'s offers; the standard alphabet with padding for `Sec-WebSocket-Accept`.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Unpadded base64url (section 5).
pub fn url(bytes: &[u8]) -> String {
    encode(bytes, URL, false)
}

/// Standard base64 with padding (section 4).
pub fn standard(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

/// Decodes unpadded base64url; `None` for any other character or a malformed end.
pub fn url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be padding zeros of a well-formed encoding.
    (bits < 6 && acc & ((1 << bits) - 1) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        // Section 10; the URL form is the same without its padding.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(standard(plain.as_bytes()), enc);
            let unpadded = enc.trim_end_matches('=');
            assert_eq!(url(plain.as_bytes()), unpadded);
            assert_eq!(url_decode(unpadded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(standard(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn the_alphabets_differ_in_two_characters() {
        assert_eq!(url(&[0xfb, 0xff]), "-_8");
        assert_eq!(standard(&[0xfb, 0xff]), "+/8=");
        assert_eq!(url(&[0u8; 32]).len(), 43);
        assert_eq!(url(&[0xff; 16]).len(), 22);
    }

    #[test]
    fn decoding_refuses_what_no_encoder_writes() {
        for bad in ["Zg=", "Z", "Zh", "a+b", "a/b", "é"] {
            assert_eq!(url_decode(bad), None, "{bad:?}");
        }
    }
}
