//! Accepting connections: drained to `WouldBlock`, refused cleanly past the cap.

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};

/// What one `accept` produced.
pub enum Accepted {
    /// A connection to serve.
    Conn(TcpStream, SocketAddr),
    /// Nothing more queued.
    Drained,
    /// Out of file descriptors (EMFILE/ENFILE): retry later from a timer, since an
    /// edge-triggered listener with a queue does not fire again.
    OutOfFds,
}

/// Accepts one connection.
pub fn accept(listener: &TcpListener) -> io::Result<Accepted> {
    loop {
        return match listener.accept() {
            Ok((s, peer)) => Ok(Accepted::Conn(s, peer)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accepted::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(24 /* EMFILE */) | Some(23 /* ENFILE */)
                ) =>
            {
                Ok(Accepted::OutOfFds)
            }
            // A connection that died in the queue (ECONNABORTED etc.) is not the listener's
            // failure: go on with the next one.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(e) => Err(e),
        };
    }
}

/// Turns away a connection past a cap with an answer it can read, without keeping any state
/// for it: one best-effort non-blocking write, then close.
pub fn refuse(mut stream: TcpStream, status: u16, code: &str, message: &str) {
    let resp = crate::net::http::Response::error(status, code, message);
    let mut msg = resp.encode_head(false);
    msg.extend_from_slice(&resp.body);
    let _ = stream.write(&msg);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
