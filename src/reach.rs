//! First contact: when keepty listens on all interfaces, its startup line says
//! `http://0.0.0.0:7700/`, which no phone can open. This finds the addresses another device
//! can use (the machine's LAN addresses, from `net::interfaces`) and tells the
//! operator:
//!
//! - on stderr, one log line with the plain addresses (SPEC 5, Startup);
//! - on stderr too, and only when stderr is a terminal (SPEC 5): the link with `#token=` for
//!   the first user of the token file (the page moves the token into its storage and out of
//!   the address bar), and a QR code of it for a phone's camera. A stderr that is not a
//!   terminal is a log (a service manager's journal, a test's pipe), and a token is never
//!   logged, so it gets neither the token nor the QR code.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::access::auth;

/// Prints where other devices reach keepty, if it listens on all interfaces; nothing else.
/// `token_file` is `--token-file`, read again here for its first user's token.
pub fn announce(listen: SocketAddr, scheme: &str, token_file: Option<&Path>) {
    if !listen.ip().is_unspecified() {
        return;
    }
    let addrs = lan_addresses(listen.ip());
    if addrs.is_empty() {
        eprintln!("keepty: listening on all interfaces, but this machine has no LAN address yet");
        return;
    }
    let plain = links(scheme, &addrs, listen.port(), None);
    eprintln!(
        "keepty: reachable from other devices at {}",
        plain.join(" ")
    );
    let token = token_file.and_then(first_token);
    let mut out = std::io::stderr().lock();
    if !out.is_terminal() {
        if token.is_some() {
            let _ = writeln!(
                out,
                "keepty: the phone link with a token is shown only when stderr is a terminal"
            );
        }
        return;
    }
    let with_token = links(scheme, &addrs, listen.port(), token.as_deref());
    if token.is_some() {
        let _ = writeln!(
            out,
            "open from your phone (this link logs it in as the first user of the token file):"
        );
    } else {
        let _ = writeln!(out, "open from your phone:");
    }
    for l in &with_token {
        let _ = writeln!(out, "  {l}");
    }
    if let Some(qr) = crate::qr::encode(with_token[0].as_bytes()) {
        let _ = writeln!(out, "or scan this (the first link):");
        let _ = write!(out, "{}", qr.to_half_blocks(2));
    }
    let _ = out.flush();
}

/// The first user's token, or None (no file, unreadable, empty). keepty has already loaded
/// the file once and refused to start if it was bad.
fn first_token(path: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(path).ok()?;
    let users = auth::parse_users(&text).ok()?;
    users.first().map(|u| u.token().to_vec())
}

/// This machine's addresses another device on the LAN can use, of the listening family
/// (`::` also takes IPv4 connections on Linux, so both), IPv4 first.
fn lan_addresses(listen: IpAddr) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = crate::net::interfaces::addresses(listen.is_ipv6())
        .into_iter()
        .filter(|&ip| usable(ip, listen))
        .collect();
    found.sort_by_key(|ip| ip.is_ipv6());
    found
}

/// Whether a peer could open `ip`: not loopback, not unspecified, not IPv4 link-local
/// (169.254/16, no DHCP) and not IPv6 link-local (fe80::/10, which a URL can only name with
/// a zone id browsers do not take); IPv6 only when keepty listens on `::`.
fn usable(ip: IpAddr, listen: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            listen.is_ipv6()
                && !v6.is_loopback()
                && !v6.is_unspecified()
                && (v6.segments()[0] & 0xffc0) != 0xfe80
                && v6.to_ipv4_mapped().is_none()
        }
    }
}

/// One URL per address, with `#token=` when a token is given.
fn links(scheme: &str, addrs: &[IpAddr], port: u16, token: Option<&[u8]>) -> Vec<String> {
    addrs
        .iter()
        .map(|ip| {
            let host = match ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            match token {
                Some(t) => format!("{scheme}://{host}:{port}/#token={}", percent_encode(t)),
                None => format!("{scheme}://{host}:{port}/"),
            }
        })
        .collect()
}

/// Percent-encodes all but RFC 3986's unreserved characters, so any token survives the
/// fragment and the page's decodeURIComponent.
fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

    #[test]
    fn usable_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(usable(ip("192.168.1.20"), ANY4));
        assert!(usable(ip("10.0.0.7"), ANY6));
        assert!(!usable(ip("127.0.0.1"), ANY4));
        assert!(!usable(ip("169.254.3.4"), ANY4));
        assert!(
            !usable(ip("fd00::5"), ANY4),
            "IPv6 while listening on 0.0.0.0"
        );
        assert!(usable(ip("fd00::5"), ANY6));
        assert!(usable(ip("2001:db8::1"), ANY6));
        assert!(!usable(ip("fe80::1"), ANY6));
        assert!(!usable(ip("::1"), ANY6));
        assert!(!usable(ip("::ffff:10.0.0.1"), ANY6));
    }

    #[test]
    fn links_name_the_address_and_carry_the_token() {
        let addrs = ["192.168.1.20".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            links("http", &addrs, 7700, None),
            ["http://192.168.1.20:7700/", "http://[fd00::5]:7700/"]
        );
        assert_eq!(
            links("https", &addrs[..1], 8443, Some(b"~~~???browser-1 +/")),
            ["https://192.168.1.20:8443/#token=~~~%3F%3F%3Fbrowser-1%20%2B%2F"]
        );
    }

    #[test]
    fn this_machine_has_no_loopback_in_its_lan_addresses() {
        for ip in lan_addresses(ANY6) {
            assert!(!ip.is_loopback(), "{ip}");
        }
    }
}
