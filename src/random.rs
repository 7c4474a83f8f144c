//! Bytes from the kernel's random source, for everything that must not be guessed: session
//! ids, download tickets, upload suffixes, WebSocket keys. Read from /dev/urandom rather than
//! a user-space generator: nothing to seed, and rand's thread-local generator crashed on mips
//! (musl, static PIE) under qemu-user.

use std::io::Read;

/// `N` bytes from /dev/urandom.
pub fn bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        let (a, b) = (super::bytes::<16>().unwrap(), super::bytes::<16>().unwrap());
        assert_ne!(a, b);
    }
}
