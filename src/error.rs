//! Why keepty could not start, and the exit code each reason gets: a mistake in what the
//! operator asked for is 2 (like a bad option), anything the system refused is 1.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// A failure before the server serves its first request.
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot work (a token file or certificate that does not load, a
    /// setting that is refused): exit 2.
    Config(String),
    /// The listening socket could not be made: exit 1, naming the address.
    Listen(SocketAddr, io::Error),
    /// The event loop or signal handling could not be set up: exit 1.
    System(io::Error),
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => 2,
            StartError::Listen(..) | StartError::System(_) => 1,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(why) => f.write_str(why),
            StartError::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::System(e) => write!(f, "cannot start the event loop: {e}"),
        }
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::System(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_cause_not_the_errno() {
        // A real EINVAL from bind is the system's answer, not a configuration mistake.
        let addr: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let einval = io::Error::from(io::ErrorKind::InvalidInput);
        assert_eq!(StartError::Listen(addr, einval).exit_code(), 1);
        assert_eq!(StartError::Config("bad token file".into()).exit_code(), 2);
        let e = StartError::Listen(addr, io::Error::from(io::ErrorKind::AddrInUse));
        assert!(
            e.to_string()
                .starts_with("cannot listen on 127.0.0.1:7700: ")
        );
    }
}
