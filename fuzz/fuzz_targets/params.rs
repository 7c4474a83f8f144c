//! Everything parsed from a query string or the command line: the /ws parameters, session
//! ids, sizes, durations, base64url tokens, single query parameters. None may panic, and what
//! is accepted must be within the documented bounds.
#![no_main]
use keepty::api::protocol;
use keepty::config;
use keepty::net::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = protocol::parse_ws_query(s) {
        if let Some(id) = &p.session {
            assert!(protocol::valid_id(id), "accepted a bad id {id:?}");
        }
        for d in [p.cols, p.rows].into_iter().flatten() {
            assert!(protocol::valid_dim(d), "accepted a size of {d}");
        }
    }
    if protocol::valid_id(s) {
        assert!((1..=64).contains(&s.len()));
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    let _ = config::parse_size(s);
    let _ = config::parse_duration(s);
    if let Some(bytes) = keepty::base64::url_decode(s) {
        assert!(bytes.len() <= s.len());
    }
    for key in ["session", "since", "token", "id", "confirm"] {
        if let Some(v) = http::query_param(s, key) {
            assert!(v.len() <= s.len());
        }
    }
});
