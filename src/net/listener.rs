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

/// The listening socket and what it is doing: it stops for good at shutdown, and pauses
/// after running out of file descriptors until a timer retries it.
pub struct Acceptor {
    listener: Option<TcpListener>,
    paused: bool,
    /// The last accept failed for lack of file descriptors (to log the transitions only).
    out_of_fds: bool,
}

/// What [`Acceptor::next`] got.
pub enum Next {
    /// A connection to serve.
    Conn(TcpStream, SocketAddr),
    /// Nothing more for now (drained, paused or closed).
    Done,
    /// Out of file descriptors: call [`Acceptor::resume`] from a timer.
    Paused,
}

impl Acceptor {
    /// Serves `listener`.
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener: Some(listener),
            paused: false,
            out_of_fds: false,
        }
    }

    /// Stops accepting for good; the listener, for deregistration.
    pub fn close(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    /// The retry timer fired.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Accepts the next connection; the caller loops until `Done` or `Paused`.
    pub fn next(&mut self) -> Next {
        let Some(l) = self.listener.as_ref().filter(|_| !self.paused) else {
            return Next::Done;
        };
        match accept(l) {
            Ok(Accepted::Conn(stream, peer)) => {
                if std::mem::take(&mut self.out_of_fds) {
                    eprintln!("keepty: file descriptors available again; accepting");
                }
                Next::Conn(stream, peer)
            }
            Ok(Accepted::Drained) => Next::Done,
            Ok(Accepted::OutOfFds) => {
                // One line when it starts, not one per retry.
                if !std::mem::replace(&mut self.out_of_fds, true) {
                    eprintln!("keepty: out of file descriptors; retrying accept every 500 ms");
                }
                self.paused = true;
                Next::Paused
            }
            Err(e) => {
                eprintln!("keepty: accept failed: {e}");
                Next::Done
            }
        }
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
