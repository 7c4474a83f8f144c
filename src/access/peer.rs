//! Which local account a loopback peer is: the owner uid of the client's end of the TCP
//! connection, read from `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! Without a token file keepty trusts loopback, but loopback is every account on the box: a
//! web app running as `www-data` or a `nobody` daemon would get keepty's shell. The kernel
//! knows who opened the client socket, and on Linux it says so in the `uid` column of the row
//! whose local address is the peer's address and port. (`SO_PEERCRED` is for Unix sockets
//! only, and an ident-style lookup is this same table read another way.)
//!
//! The cost is one read of the table per request that needs it (only token-less `/ws`,
//! `/api/sessions` and admin requests from loopback): O(sockets on the box). See
//! docs/reliability.md for the measured cost.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid that owns the client socket of a connection from `peer` to our `port`, if the
/// kernel's tables show it. `None` (no /proc, the client already gone) is treated by the
/// caller as a stranger: it fails closed.
pub(crate) fn socket_uid(peer: SocketAddr, port: u16) -> Option<u32> {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    // A v4 client may also be a v6 socket speaking to a v4-mapped address: look in both.
    let files: &[&str] = match peer.ip() {
        IpAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        IpAddr::V6(_) => &["/proc/net/tcp6"],
    };
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        find_uid(&text, peer, port)
    })
}

/// True for the uids a token-less loopback peer may be: keepty's own, and root (who can be
/// keepty anyway).
pub(crate) fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// In the text of `/proc/net/tcp{,6}`, the uid of the socket whose local address is `peer`
/// and whose remote port is `port` (the client's end of a connection to us), skipping
/// listening sockets. Malformed rows are skipped, never trusted.
pub(crate) fn find_uid(text: &str, peer: SocketAddr, port: u16) -> Option<u32> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().take(8).collect();
        let [_, local, remote, state, _, _, _, uid] = f.as_slice() else {
            return None;
        };
        // 0A is TCP_LISTEN: a listener on the peer's port is not the peer.
        if *state == "0A" {
            return None;
        }
        let (local, remote) = (parse_addr(local)?, parse_addr(remote)?);
        let same_ip = local.ip().to_canonical() == peer.ip();
        (same_ip && local.port() == peer.port() && remote.port() == port)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The address is printed as
/// 32-bit words in the kernel's byte order, so each word is read back in native order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    /// A keepty on 127.0.0.1:7700 (0x1E14): its listener, a client of uid 65534 from port
    /// 0xD431 = 54321 with the server's end of it (uid 0), and a root client from 0xD432.
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1E14 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 ffff 0
   1: 0100007F:D431 0100007F:1E14 01 00000000:00000000 00:00000000 00000000 65534        0 2 1 ffff 0
   2: 0100007F:1E14 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 ffff 0
   3: 0100007F:D432 0100007F:1E14 01 00000000:00000000 00:00000000 00000000     0        0 4 1 ffff 0
   4: garbage
   5: 0100007F:ZZZZ 0100007F:1E14 01 0:0 0:0 0 1000
";

    /// [::1]:54321 -> [::1]:7700 as uid 1000, and a v4-mapped client 127.0.0.1:54322 as 33.
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1E14 01 00000000:00000000 00:00000000 00000000  1000        0 7 1 0 0
   1: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:1E14 01 00000000:00000000 00:00000000 00000000    33        0 8 1 0 0
";

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_rows() {
        assert_eq!(find_uid(TCP, at("127.0.0.1:54321"), 7700), Some(65534));
        assert_eq!(find_uid(TCP, at("127.0.0.1:54322"), 7700), Some(0));
        assert_eq!(
            find_uid(TCP, at("127.0.0.1:54321"), 7701),
            None,
            "a connection to another server is not ours"
        );
        assert_eq!(
            find_uid(TCP, at("127.0.0.1:7700"), 0),
            None,
            "the listener is skipped"
        );
        assert_eq!(find_uid(TCP, at("127.0.0.2:54321"), 7700), None);
        assert_eq!(find_uid("", at("127.0.0.1:54321"), 7700), None);
    }

    #[test]
    fn v6_and_mapped_rows() {
        assert_eq!(find_uid(TCP6, at("[::1]:54321"), 7700), Some(1000));
        assert_eq!(find_uid(TCP6, at("127.0.0.1:54322"), 7700), Some(33));
        assert_eq!(find_uid(TCP6, at("[::1]:54322"), 7700), None);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("0100007F:1E14"), Some(at("127.0.0.1:7700")));
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0016"),
            Some(at("[::1]:22"))
        );
        for bad in [
            "",
            "0100007F",
            "0100007:1E14",
            "0100007F:",
            "0100007F:10000",
            "XY00007F:1",
        ] {
            assert_eq!(parse_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn our_own_connection_is_found_with_our_uid() {
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(socket_uid(peer, port), Some(me));
        assert!(trusted_uid(me) && trusted_uid(0));
    }
}
