//! Any bytes a peer sends as a request head: parsing, routing, the forwarding headers and
//! the answer must not panic, and a complete head never claims more bytes than were given.
#![no_main]
use keepty::net::http::{self, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(keepty::limits::MAX_HEAD)];
    if let Ok(Some((req, n))) = parse_head(data) {
        assert!(n <= data.len());
        let _ = req.keep_alive();
        let _ = req.accepts_gzip();
        let _ = req.is_upgrade();
        let _ = req.has_body();
        let _ = http::route(&req);
        let _ = keepty::api::protocol::parse_ws_query(&req.query);
        // The forwarding headers, as a trusted proxy's (the client named is the proxy, an
        // address it names, or nothing else).
        let proxy: std::net::IpAddr = [127, 0, 0, 1].into();
        let _ = keepty::net::addr::forwarded(&req);
        let client = keepty::net::addr::client(&req, proxy, &[proxy]);
        let _ = keepty::net::addr::key(client);
    } else if let Err(e) = parse_head(data) {
        let r = e.response();
        assert!(r.status >= 400);
    }
});
