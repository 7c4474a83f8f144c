//! The browser page, embedded at build time by `build.rs`: our own `assets/` files plus
//! xterm.js and its fit addon from `node_modules/`, each raw and gzipped.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The `Content-Type` header value (text types carry `; charset=utf-8`).
    pub content_type: &'static str,
    /// The file as served without compression.
    pub body: &'static [u8],
    /// The same file gzipped (best compression), for clients that accept gzip.
    pub gzip: &'static [u8],
    /// A quoted strong ETag of `body`, e.g. `"0123456789abcdef"`; the gzip variant is a
    /// different representation, so a server sending it should weaken or suffix this tag.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Looks up "/" or "/assets/NAME"; None for anything else.
pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_html_page() {
        let a = get("/").expect("/ is embedded");
        assert_eq!(a.content_type, "text/html; charset=utf-8");
        let html = std::str::from_utf8(a.body).unwrap();
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
        for (path, a) in ASSETS {
            assert!(!a.body.is_empty(), "{path}");
            assert!(a.gzip.starts_with(&[0x1f, 0x8b, 8]), "{path}: gzip magic");
            // The gzip trailer ends with the uncompressed length mod 2^32.
            let isize = u32::from_le_bytes(a.gzip[a.gzip.len() - 4..].try_into().unwrap());
            assert_eq!(
                isize as usize,
                a.body.len() % (1 << 32),
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
    fn etags_differ_between_files() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|(_, a)| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[test]
    fn everything_the_page_references_is_embedded() {
        let html = std::str::from_utf8(get("/").unwrap().body).unwrap();
        let mut refs = 0;
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let rest = &html[i + attr.len()..];
                let url = &rest[..rest.find('"').unwrap()];
                if url.starts_with("data:") {
                    continue;
                }
                // Relative on purpose, so the page works under a reverse-proxy prefix.
                assert!(url.starts_with("assets/"), "{url} should be relative");
                assert!(get(&format!("/{url}")).is_some(), "{url} is not embedded");
                refs += 1;
            }
        }
        assert!(refs >= 5, "found only {refs} references");
    }

    #[test]
    fn scripts_do_not_point_at_missing_source_maps() {
        for path in ["/assets/xterm.js", "/assets/addon-fit.js"] {
            let body = std::str::from_utf8(get(path).unwrap().body).unwrap();
            assert!(!body.contains("sourceMappingURL"), "{path}");
        }
    }
}
