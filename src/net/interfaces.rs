//! This machine's interface addresses, for the first-contact links (`reach.rs`) and the
//! names of a self-signed certificate (`tls.rs`): IPv4 from the `SIOCGIFCONF` ioctl, IPv6
//! from `/proc/net/if_inet6`.
//!
//! Not getifaddrs: musl's walks the rtnetlink dump with `RTA_OK`/`NLMSG_OK` macros that
//! never check a length against the bytes left, so one bad attribute length sends it past
//! the message, and a zero length read there makes it loop forever (at startup, before the
//! event loop). qemu-user 7.2 delivers such a dump to a big-endian guest: its byte swapper
//! stops while more than a header is left, so a last attribute of only a header (the empty
//! nested `IFLA_DPLL_PIN` this machine's kernel ends each link with) stays little-endian,
//! and its length 4 reads as 1024. A real kernel does not send that, but nothing here may be
//! able to hold startup up, and these two sources are bounded, need no netlink and read the
//! same on every byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// At most this many IPv4 addresses are listed (`SIOCGIFCONF` entries); a router has a few.
const MAX_V4: usize = 256;
/// At most this many bytes of `/proc/net/if_inet6` are read (about 5,000 addresses).
const MAX_IF_INET6: u64 = 256 << 10;

/// Every address of this machine's interfaces, loopback and link-local included, IPv4 first;
/// IPv6 only when `v6`. An address on two interfaces appears once. Empty when the kernel
/// does not say.
pub(crate) fn addresses(v6: bool) -> Vec<IpAddr> {
    let mut all: Vec<IpAddr> = ipv4().into_iter().map(IpAddr::V4).collect();
    if v6 {
        all.extend(ipv6().into_iter().map(IpAddr::V6));
    }
    let mut seen = Vec::with_capacity(all.len());
    for ip in all {
        if !seen.contains(&ip) {
            seen.push(ip);
        }
    }
    seen
}

mod ioctl {
    #![allow(missing_docs)]
    nix::ioctl_readwrite_bad!(get_ifconf, nix::libc::SIOCGIFCONF, nix::libc::ifconf);
}

/// The IPv4 address of every interface that has one (`SIOCGIFCONF` on a datagram socket).
fn ipv4() -> Vec<Ipv4Addr> {
    let Ok(sock) = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return Vec::new();
    };
    // SAFETY: `ifreq` is a C struct of integers, arrays and unions of them: all zeroes is a
    // valid value.
    let mut reqs: Vec<libc::ifreq> = vec![unsafe { std::mem::zeroed() }; MAX_V4];
    let mut conf = libc::ifconf {
        ifc_len: (reqs.len() * size_of::<libc::ifreq>()) as libc::c_int,
        ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
            ifcu_req: reqs.as_mut_ptr(),
        },
    };
    // SAFETY: SIOCGIFCONF writes at most `ifc_len` bytes of `ifreq`s through `ifcu_req`,
    // which points at `reqs`, alive and that long for the call, and sets `ifc_len` to the
    // bytes written; a failure is an error return.
    if unsafe { ioctl::get_ifconf(sock.as_raw_fd(), &mut conf) }.is_err() {
        return Vec::new();
    }
    let n = (conf.ifc_len.max(0) as usize / size_of::<libc::ifreq>()).min(reqs.len());
    reqs[..n]
        .iter()
        .filter_map(|r| {
            // SAFETY: SIOCGIFCONF fills the `ifru_addr` member of each entry's union.
            let sa = unsafe { r.ifr_ifru.ifru_addr };
            ipv4_of(sa.sa_family, &sa.sa_data)
        })
        .collect()
}

/// The address in a `sockaddr` of family `family` whose bytes after `sa_family` are
/// `data`: for AF_INET, the port (2 bytes) then the address, both in network order, so the
/// same bytes on every host. The family is native, as the kernel wrote it.
fn ipv4_of(family: libc::sa_family_t, data: &[libc::c_char; 14]) -> Option<Ipv4Addr> {
    if libc::c_int::from(family) != libc::AF_INET {
        return None;
    }
    let b = |i: usize| data[i] as u8;
    Some(Ipv4Addr::new(b(2), b(3), b(4), b(5)))
}

/// Every IPv6 address in `/proc/net/if_inet6`.
fn ipv6() -> Vec<Ipv6Addr> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open("/proc/net/if_inet6")
        .and_then(|f| f.take(MAX_IF_INET6).read_to_string(&mut text));
    if read.is_err() {
        return Vec::new();
    }
    parse_if_inet6(&text)
}

/// The addresses of `/proc/net/if_inet6`: one line per address, its first field the address
/// as 32 hex digits (then index, prefix length, scope, flags, name). Lines that do not
/// start so are skipped.
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> [libc::c_char; 14] {
        let mut d = [0 as libc::c_char; 14];
        for (i, b) in bytes.iter().enumerate() {
            d[i] = *b as libc::c_char;
        }
        d
    }

    #[test]
    fn an_ipv4_sockaddr_reads_the_same_on_every_byte_order() {
        // Port 0x1f90 then 192.168.1.20, network order, as in any host's sockaddr_in.
        let d = data(&[0x1f, 0x90, 192, 168, 1, 20]);
        let inet = libc::AF_INET as libc::sa_family_t;
        assert_eq!(ipv4_of(inet, &d), Some(Ipv4Addr::new(192, 168, 1, 20)));
        assert_eq!(ipv4_of(libc::AF_INET6 as libc::sa_family_t, &d), None);
        assert_eq!(ipv4_of(0, &d), None);
    }

    #[test]
    fn if_inet6_lines() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000002155dfffe0a0b0c 02 40 20 80     eth0
20010db8000000000000000000000042 02 40 00 00     eth0
short 02 40 00 00 eth1
2001zdb8000000000000000000000042 02 40 00 00     eth1

";
        assert_eq!(
            parse_if_inet6(text),
            [
                Ipv6Addr::LOCALHOST,
                "fe80::215:5dff:fe0a:b0c".parse::<Ipv6Addr>().unwrap(),
                "2001:db8::42".parse::<Ipv6Addr>().unwrap(),
            ]
        );
    }

    #[test]
    fn this_machine_lists_what_getifaddrs_lists() {
        // The ioctl and the /proc file against the libc walk they replace, on this (native)
        // machine, where the netlink dump is sound.
        let mut ours = addresses(true);
        let mut theirs: Vec<IpAddr> = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs().expect("getifaddrs") {
            let Some(a) = ifa.address else { continue };
            let ip = if let Some(v4) = a.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = a.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !theirs.contains(&ip) {
                theirs.push(ip);
            }
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        assert!(ours.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ours:?}");
        assert!(addresses(false).iter().all(IpAddr::is_ipv4));
    }
}
