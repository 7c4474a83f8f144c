//! Which client an address stands for: the key every per-address budget counts under (the
//! connection shares, unfinished requests, failed logins), and the client behind a trusted
//! reverse proxy.
//!
//! An IPv4 address is one client. An IPv6 client usually holds a whole /64 (SLAAC, privacy
//! addresses rotate inside it), so per-address budgets keyed by the full address would give
//! one machine 2^64 budgets: the key is the /64.

use std::net::{IpAddr, Ipv6Addr};

use crate::net::http::Request;

/// The budget key of `ip`: an IPv4 address as is (an IPv4-mapped IPv6 address as its IPv4
/// form), an IPv6 address cut to its /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// True when the request names a client behind a proxy: `Forwarded`, `X-Forwarded-For` or
/// `X-Real-IP`. Such a request is never loopback, whatever its socket says: a reverse proxy
/// on the box connects from 127.0.0.1 for every client it serves.
pub fn forwarded(req: &Request) -> bool {
    req.headers
        .iter()
        .any(|(n, _)| matches!(n.as_str(), "forwarded" | "x-forwarded-for" | "x-real-ip"))
}

/// The client a request from `peer` stands for. From a peer in `trusted` (a reverse proxy
/// the operator named with `--trusted-proxy`), the right-most address of `X-Forwarded-For`
/// that is not itself a trusted proxy (each proxy appends the address it got the request
/// from, so everything left of it may be forged by the client), else the same from the
/// `for=` parameters of `Forwarded`, else `X-Real-IP`. From any other peer, or when no
/// header parses, the peer itself.
pub fn client(req: &Request, peer: IpAddr, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| key(*t) == key(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let rightmost = |list: Vec<IpAddr>| list.into_iter().rev().find(|ip| !is_trusted(ip));
    let values = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
    };
    // Several headers of one name count as one list in order (RFC 9110, 5.3).
    let xff: Vec<IpAddr> = values("x-forwarded-for").filter_map(parse_node).collect();
    if let Some(ip) = rightmost(xff) {
        return ip;
    }
    let fwd: Vec<IpAddr> = values("forwarded")
        .flat_map(|elem| elem.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
        })
        .filter_map(parse_node)
        .collect();
    if let Some(ip) = rightmost(fwd) {
        return ip;
    }
    values("x-real-ip")
        .filter_map(parse_node)
        .next_back()
        .filter(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:443"`,
/// `2001:db8::1`. Obfuscated identifiers (`_hidden`, `unknown`) are not addresses.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::http;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn req(headers: &str) -> Request {
        let head = format!("GET / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
        http::parse_head(head.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn keys_cut_ipv6_to_its_64() {
        assert_eq!(key(ip("192.168.1.5")), ip("192.168.1.5"));
        assert_eq!(key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:3::1")));
        assert_eq!(key(ip("::1")), ip("::"));
    }

    #[test]
    fn forwarding_headers_are_seen() {
        assert!(!forwarded(&req("")));
        assert!(forwarded(&req("Forwarded: for=1.2.3.4\r\n")));
        assert!(forwarded(&req("X-Forwarded-For: 1.2.3.4\r\n")));
        assert!(forwarded(&req("x-real-ip: 1.2.3.4\r\n")));
    }

    #[test]
    fn the_client_comes_from_a_trusted_proxy_only() {
        let proxy = ip("127.0.0.1");
        let trusted = [proxy];
        let xff = req("X-Forwarded-For: 6.6.6.6, 10.0.0.7\r\n");
        // Untrusted peer: the header is the client's word and is ignored.
        assert_eq!(client(&xff, ip("10.0.0.9"), &trusted), ip("10.0.0.9"));
        assert_eq!(client(&xff, proxy, &[]), proxy);
        // Trusted: the right-most address, never the forgeable left part.
        assert_eq!(client(&xff, proxy, &trusted), ip("10.0.0.7"));
        // A chain of trusted proxies is skipped over.
        let chain = req("X-Forwarded-For: 6.6.6.6, 10.0.0.7, 127.0.0.1\r\n");
        assert_eq!(client(&chain, proxy, &trusted), ip("10.0.0.7"));
        let two = req("X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.8\r\n");
        assert_eq!(client(&two, proxy, &trusted), ip("10.0.0.8"));
        let fwd =
            req("Forwarded: for=6.6.6.6, for=\"[2001:db8::5]:4711\";proto=https, for=_hidden\r\n");
        assert_eq!(client(&fwd, proxy, &trusted), ip("2001:db8::5"));
        let fwd4 = req("Forwarded: proto=http;For=\"10.0.0.3:555\"\r\n");
        assert_eq!(client(&fwd4, proxy, &trusted), ip("10.0.0.3"));
        assert_eq!(
            client(&req("X-Real-IP: 10.0.0.4\r\n"), proxy, &trusted),
            ip("10.0.0.4")
        );
        // Nothing that parses: the proxy itself.
        assert_eq!(
            client(&req("X-Forwarded-For: unknown\r\n"), proxy, &trusted),
            proxy
        );
        assert_eq!(client(&req(""), proxy, &trusted), proxy);
    }
}
