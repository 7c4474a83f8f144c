//! The browser page, embedded at build time by `build.rs`: our own `assets/` files plus
//! xterm.js and its fit and web-links addons from `node_modules/`, gzipped.
//!
//! Only the gzip bytes are embedded. Every browser asks for gzip, and the raw copies were
//! 550 KB of a 1.4 MB binary, on boxes where flash is small. A client that does not take gzip
//! (curl without `--compressed`, a script) still gets the plain file, as the SPEC says: it is
//! inflated on the first such request and kept, so the cost is paid once per file and only
//! on servers that see such clients. The inflater is `miniz_oxide`, already in the lock file
//! as flate2's backend (so no new code to trust), pure safe Rust, and about 30 KB in the
//! binary against the 550 KB it saves.

use std::sync::OnceLock;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The `Content-Type` header value (text types carry `; charset=utf-8`).
    pub content_type: &'static str,
    /// The file gzipped (best compression), as sent to clients that accept gzip.
    pub gzip: &'static [u8],
    /// A quoted strong ETag of the plain file, e.g. `"0123456789abcdef"`; the gzip variant is
    /// a different representation, so a server sending it should weaken or suffix this tag.
    pub etag: &'static str,
    plain: OnceLock<Box<[u8]>>,
}

impl Asset {
    /// The file without compression, inflated on first use and kept for the process's life.
    pub fn body(&self) -> &[u8] {
        self.plain.get_or_init(|| {
            gunzip(self.gzip)
                .unwrap_or_else(|| {
                    // build.rs made these bytes and a unit test inflates every one of them.
                    eprintln!("keepty: embedded asset does not inflate; serving it empty");
                    Vec::new()
                })
                .into_boxed_slice()
        })
    }
}

/// Inflates a gzip member as build.rs writes it (RFC 1952: a 10-byte header, optional
/// fields by flag, raw deflate, CRC-32 and length). The length is checked, not the CRC: the
/// input is our own, embedded in the binary; a damaged binary fails the length check or the
/// inflate itself.
fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if gz.len() < 18 || gz[..3] != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = gz[3];
    let (body, trailer) = gz.split_at(gz.len() - 8);
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let n = u16::from_le_bytes([*body.get(at)?, *body.get(at + 1)?]) as usize;
        at += 2 + n;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += body.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let len = u32::from_le_bytes(trailer[4..].try_into().ok()?) as usize;
    let out = miniz_oxide::inflate::decompress_to_vec_with_limit(body.get(at..)?, len).ok()?;
    (out.len() == len).then_some(out)
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Looks up "/" or "/assets/NAME"; None for anything else.
pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn root_is_the_html_page() {
        let a = get("/").expect("/ is embedded");
        assert_eq!(a.content_type, "text/html; charset=utf-8");
        let html = std::str::from_utf8(a.body()).unwrap();
        assert!(html.contains("<!doctype html>"));
    }

    #[test]
    fn unknown_paths_are_none() {
        for p in [
            "/nope",
            "",
            "/assets/",
            "/assets",
            "/index.html",
            "/assets/../Cargo.toml",
            "/assets/app.js/",
        ] {
            assert!(get(p).is_none(), "{p:?}");
        }
    }

    #[test]
    fn every_asset_is_gzipped_and_tagged() {
        for (path, a) in &ASSETS {
            assert!(!a.body().is_empty(), "{path}");
            assert!(a.gzip.starts_with(&[0x1f, 0x8b, 8]), "{path}: gzip magic");
            // The gzip trailer ends with the uncompressed length mod 2^32.
            let isize = u32::from_le_bytes(a.gzip[a.gzip.len() - 4..].try_into().unwrap());
            assert_eq!(
                isize as usize,
                a.body().len() % (1 << 32),
                "{path}: gzip length"
            );
            assert!(
                a.etag.len() == 18 && a.etag.starts_with('"') && a.etag.ends_with('"'),
                "{path}"
            );
            assert!(a.content_type.ends_with("; charset=utf-8"), "{path}");
        }
    }

    #[test]
    fn every_asset_inflates_to_the_file_its_etag_names() {
        for (path, a) in &ASSETS {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in a.body() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            assert_eq!(a.etag, format!("\"{h:016x}\""), "{path}");
        }
    }

    #[test]
    fn gunzip_handles_optional_header_fields_and_refuses_damage() {
        // "hi" gzipped with FNAME "x" (gzip -n would omit it; other tools do not).
        let mut gz = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, b'x', 0];
        gz.extend_from_slice(&[0xcb, 0xc8, 0x04, 0x00]); // raw deflate of "hi"
        gz.extend_from_slice(&[0xac, 0x2a, 0x93, 0xd8, 2, 0, 0, 0]);
        assert_eq!(gunzip(&gz).as_deref(), Some(&b"hi"[..]));
        let mut wrong_len = gz.clone();
        let n = wrong_len.len();
        wrong_len[n - 4] = 3;
        assert_eq!(gunzip(&wrong_len), None);
        assert_eq!(gunzip(&gz[..gz.len() - 1]), None);
        assert_eq!(gunzip(b"not gzip at all, not at all"), None);
    }

    #[test]
    fn etags_differ_between_files() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|(_, a)| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    /// Checks that every `src`/`href` of `html` (but `data:`) is relative and embedded;
    /// returns how many there are. Shared with the admin page's test.
    pub(crate) fn assert_references_embedded(html: &str) -> usize {
        let mut refs = 0;
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let rest = &html[i + attr.len()..];
                let url = &rest[..rest.find('"').unwrap()];
                if url.starts_with("data:") {
                    continue;
                }
                // Relative on purpose, so the pages work under a reverse-proxy prefix.
                assert!(url.starts_with("assets/"), "{url} should be relative");
                assert!(get(&format!("/{url}")).is_some(), "{url} is not embedded");
                refs += 1;
            }
        }
        refs
    }

    #[test]
    fn everything_the_page_references_is_embedded() {
        let html = std::str::from_utf8(get("/").unwrap().body()).unwrap();
        let refs = assert_references_embedded(html);
        assert!(refs >= 5, "found only {refs} references");
    }

    #[test]
    fn scripts_do_not_point_at_missing_source_maps() {
        for path in [
            "/assets/xterm.js",
            "/assets/addon-fit.js",
            "/assets/addon-web-links.js",
        ] {
            let body = std::str::from_utf8(get(path).unwrap().body()).unwrap();
            assert!(!body.contains("sourceMappingURL"), "{path}");
        }
    }
}
