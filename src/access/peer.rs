//! Which local account a loopback peer is: the owner uid of the client's end of the TCP
//! connection.
//!
//! Without a token file keepty trusts loopback, but loopback is every account on the box: a
//! web app running as `www-data` or a `nobody` daemon would get keepty's shell. The kernel
//! knows who opened the client socket. It says so through `sock_diag` netlink, which looks up
//! one socket by its exact addresses (a hash lookup: O(1) whatever the box holds), and in the
//! `uid` column of `/proc/net/tcp{,6}`, which has to be generated and read whole (O(sockets):
//! 8-12 ms per lookup with 700-1,500 sockets on this shared machine, so it is only the fallback
//! for a kernel without `inet_diag` or a wildcard listen address, where the client's
//! destination address is not known). `SO_PEERCRED` is for Unix sockets only.
//!
//! Only token-less `/ws`, `/api/sessions` and admin requests from loopback are looked up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

/// The uid that owns the client socket of a connection from `peer` to our `server` address
/// (the listen address; its IP may be the wildcard). `None` (not found, no way to ask) is
/// treated by the caller as a stranger: it fails closed.
pub(crate) fn socket_uid(peer: SocketAddr, server: SocketAddr) -> Option<u32> {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let dst = server.ip().to_canonical();
    if !dst.is_unspecified() {
        let server = SocketAddr::new(dst, server.port());
        // Err: no inet_diag here; Ok(None): no such socket, or (under qemu-user, which
        // passes sock_diag messages through untranslated) an answer to a garbled request.
        // Either way the tables are read instead.
        if let Ok(Some(uid)) = diag_uid(peer, server) {
            return Some(uid);
        }
    }
    proc_uid(peer, server.port())
}

/// The `/proc/net/tcp{,6}` way: every row read, the client's found by address and port.
fn proc_uid(peer: SocketAddr, port: u16) -> Option<u32> {
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

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the socket id.
const REQ_LEN: usize = 56;
/// Where `idiag_uid` sits in `struct inet_diag_msg` (after family..retrans, the 48-byte id,
/// expires, rqueue and wqueue).
const MSG_UID: usize = 64;
const MSG_LEN: usize = 72;

/// Asks the kernel for the one TCP socket from `peer` to `server` (the client's end) and
/// returns its owner: `Ok(None)` when there is no such socket, `Err` when the kernel cannot
/// be asked. A v4 peer is looked for as a v4 socket, then as a v6 one speaking to a
/// v4-mapped address.
fn diag_uid(peer: SocketAddr, server: SocketAddr) -> Result<Option<u32>, Errno> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkSockDiag,
    )?;
    let mut asks = vec![(peer.ip(), server.ip())];
    if let (IpAddr::V4(p), IpAddr::V4(s)) = (peer.ip(), server.ip()) {
        asks.push((
            IpAddr::V6(p.to_ipv6_mapped()),
            IpAddr::V6(s.to_ipv6_mapped()),
        ));
    }
    for (seq, (src, dst)) in asks.into_iter().enumerate() {
        let req = diag_request(seq as u32 + 1, (src, peer.port()), (dst, server.port()));
        nix::unistd::write(fd.as_fd(), &req)?;
        let mut buf = [0u8; 512];
        // The kernel answers within the write: nothing to wait for.
        let n = nix::unistd::read(fd.as_fd(), &mut buf)?;
        match parse_diag_reply(&buf[..n]) {
            Reply::Uid(uid) => return Ok(Some(uid)),
            Reply::NotFound => continue,
            Reply::Error(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A `SOCK_DIAG_BY_FAMILY` request for the TCP socket with source `src` and destination
/// `dst` (an exact lookup: no dump flag, no cookie).
fn diag_request(seq: u32, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Vec<u8> {
    let family = match src.0 {
        IpAddr::V4(_) => 2u8,  // AF_INET
        IpAddr::V6(_) => 10u8, // AF_INET6
    };
    let addr = |ip: IpAddr| -> [u8; 16] {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        b
    };
    let len = NLMSG_HDR + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    m.extend_from_slice(&[family, 6, 0, 0]); // IPPROTO_TCP, no extensions
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&src.1.to_be_bytes());
    m.extend_from_slice(&dst.1.to_be_bytes());
    m.extend_from_slice(&addr(src.0));
    m.extend_from_slice(&addr(dst.0));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    m
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Uid(u32),
    NotFound,
    Error(Errno),
}

/// The kernel's answer: an `inet_diag_msg` with the owner, or an error message (`ENOENT`:
/// no such socket). Anything short or odd is an error, never a uid.
fn parse_diag_reply(b: &[u8]) -> Reply {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let Some(ty) = b.get(4..6).map(|t| u16::from_ne_bytes([t[0], t[1]])) else {
        return Reply::Error(Errno::EPROTO);
    };
    match ty {
        NLMSG_ERROR => match u32_at(NLMSG_HDR).map(|e| e as i32) {
            Some(e) if -e == Errno::ENOENT as i32 => Reply::NotFound,
            Some(e) => Reply::Error(Errno::from_raw(-e)),
            None => Reply::Error(Errno::EPROTO),
        },
        SOCK_DIAG_BY_FAMILY if b.len() >= NLMSG_HDR + MSG_LEN => {
            u32_at(NLMSG_HDR + MSG_UID).map_or(Reply::Error(Errno::EPROTO), Reply::Uid)
        }
        _ => Reply::Error(Errno::EPROTO),
    }
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
    // The words are in this kernel's byte order. Under qemu-user for a target of the other
    // endianness (the big-endian mips CI run on an x86 host) the table is the host's, so
    // only when no row matches in native order is the swapped order tried: on a real box
    // the client's own socket is always there in native order and this second pass never
    // runs.
    find_uid_in(text, peer, port, false).or_else(|| find_uid_in(text, peer, port, true))
}

fn find_uid_in(text: &str, peer: SocketAddr, port: u16, swapped: bool) -> Option<u32> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().take(8).collect();
        let [_, local, remote, state, _, _, _, uid] = f.as_slice() else {
            return None;
        };
        // 0A is TCP_LISTEN: a listener on the peer's port is not the peer.
        if *state == "0A" {
            return None;
        }
        let (local, remote) = (parse_addr(local, swapped)?, parse_addr(remote, swapped)?);
        let same_ip = local.ip().to_canonical() == peer.ip();
        (same_ip && local.port() == peer.port() && remote.port() == port)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The address is printed as
/// 32-bit words in the kernel's byte order, so each word is read back in native order
/// (`swapped`: in the other one, see [`find_uid`]).
fn parse_addr(s: &str, swapped: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        let w = u32::from_str_radix(hex, 16).ok()?;
        Some(if swapped { w.swap_bytes() } else { w }.to_ne_bytes())
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

    /// What a big-endian binary reads under qemu-user on a little-endian host: the host's
    /// table, its words in the other byte order. Native rows win when both would match.
    #[test]
    fn rows_of_the_other_byte_order_are_the_fallback() {
        let host = |ne: bool| {
            let ip = if ne == cfg!(target_endian = "little") {
                "0100007F"
            } else {
                "7F000001"
            };
            format!("{ip}:D433 {ip}:1E14 01 00000000:00000000 00:00000000 00000000")
        };
        let other = format!("  sl header\n   0: {} 42 0 9 1 0 0\n", host(false));
        assert_eq!(find_uid(&other, at("127.0.0.1:54323"), 7700), Some(42));
        let both = format!(
            "  sl header\n   0: {} 42 0 9 1 0 0\n   1: {} 7 0 9 1 0 0\n",
            host(false),
            host(true)
        );
        assert_eq!(find_uid(&both, at("127.0.0.1:54323"), 7700), Some(7));
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
        assert_eq!(
            parse_addr("0100007F:1E14", false),
            Some(at("127.0.0.1:7700"))
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0016", false),
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
            assert_eq!(parse_addr(bad, false), None, "{bad}");
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
        let server = l.local_addr().unwrap();
        assert_eq!(socket_uid(peer, server), Some(me), "by sock_diag");
        assert_eq!(diag_uid(peer, server), Ok(Some(me)));
        assert_eq!(proc_uid(peer, port), Some(me), "by /proc/net/tcp");
        let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        assert_eq!(
            socket_uid(peer, wildcard),
            Some(me),
            "a wildcard listen reads /proc"
        );
        // A port nobody connects from: not found, not guessed.
        let stranger = SocketAddr::new(peer.ip(), 1);
        assert_eq!(diag_uid(stranger, server), Ok(None));
        assert_eq!(socket_uid(stranger, server), None);
        assert!(trusted_uid(me) && trusted_uid(0));
    }

    #[test]
    fn diag_messages() {
        let req = diag_request(
            7,
            ("127.0.0.1".parse().unwrap(), 54321),
            ("127.0.0.1".parse().unwrap(), 7700),
        );
        assert_eq!(req.len(), NLMSG_HDR + REQ_LEN);
        assert_eq!(&req[0..4], &72u32.to_ne_bytes());
        assert_eq!(
            &req[24..28],
            &[0xd4, 0x31, 0x1e, 0x14],
            "ports in network order"
        );
        assert_eq!(&req[28..32], &[127, 0, 0, 1]);
        assert_eq!(&req[64..72], &[0xff; 8]);
        let mut reply = vec![0u8; NLMSG_HDR + MSG_LEN];
        reply[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        reply[NLMSG_HDR + MSG_UID..NLMSG_HDR + MSG_UID + 4]
            .copy_from_slice(&65534u32.to_ne_bytes());
        assert_eq!(parse_diag_reply(&reply), Reply::Uid(65534));
        assert_eq!(
            parse_diag_reply(&reply[..NLMSG_HDR + MSG_LEN - 1]),
            Reply::Error(Errno::EPROTO),
            "a short message is no uid"
        );
        let mut err = vec![0u8; NLMSG_HDR + 4];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-(Errno::ENOENT as i32)).to_ne_bytes());
        assert_eq!(parse_diag_reply(&err), Reply::NotFound);
        err[16..20].copy_from_slice(&(-(Errno::EINVAL as i32)).to_ne_bytes());
        assert_eq!(parse_diag_reply(&err), Reply::Error(Errno::EINVAL));
        assert_eq!(parse_diag_reply(&[]), Reply::Error(Errno::EPROTO));
    }
}
