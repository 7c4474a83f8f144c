//! A client connection's byte stream: the TCP socket itself, or (feature `tls`) rustls's
//! sans-I/O `ServerConnection` over it. Everything above (the HTTP reader, tungstenite, the
//! output `writev`) sees one `Read + Write` with the socket's non-blocking contract, so the
//! event loop's drain-until-`WouldBlock` rule carries over unchanged.
//!
//! The TLS side keeps two promises that edge-triggered readiness needs:
//! - `read` hands out plaintext rustls already holds before it touches the socket, and
//!   returns `WouldBlock` only once both are empty, so no decrypted byte waits for an edge
//!   that will not come;
//! - `write` takes new plaintext only when the ciphertext of the last write is on the socket
//!   (else `WouldBlock`), so a connection holds at most one write's worth of records and the
//!   caller learns of a full socket exactly as with plain TCP. [`Stream::flush_tls`] on a
//!   writable event sends what a write left behind.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// A connection's stream.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; boxed, since the rustls state is large and most slots hold plain ones
    /// only when TLS is off.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Shuts down our sending half. For TLS a `close_notify` goes first (best effort).
    pub fn shutdown_write(&mut self) {
        match self {
            Stream::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            #[cfg(feature = "tls")]
            Stream::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.flush_tls();
                let _ = t.sock.shutdown(Shutdown::Write);
            }
        }
    }

    /// Sends TLS records a write left behind (on a writable event). Plain: nothing to do.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.flush_tls(),
        }
    }

    fn sock(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(t) => &mut t.sock,
        }
    }
}

/// What a WebSocket connection runs over: a non-blocking byte stream (`WouldBlock` when the
/// socket is full or empty) that can end its sending half. [`Stream`] in the server; tests put
/// a scripted one in its place, so the connection's state machine is exercised without a
/// socket.
pub trait Transport: Read + Write {
    /// Ends our sending half (best effort): the peer reads the end of the stream.
    fn shutdown_write(&mut self);

    /// Sends bytes an earlier write left inside the stream (TLS records), on a writable
    /// event. A stream that keeps nothing back has nothing to do.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Stream {
    fn shutdown_write(&mut self) {
        Stream::shutdown_write(self);
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Plain: nothing is buffered. TLS: `WouldBlock` until every record is on the socket,
    /// which is what tungstenite's flush and the HTTP writer wait for before closing.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock().register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock().reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock().deregister(r)
    }
}

/// A TLS server connection driven by the event loop's readiness (no thread, no runtime).
#[cfg(feature = "tls")]
pub struct TlsStream {
    sock: TcpStream,
    conn: rustls::ServerConnection,
    /// The peer ended TCP; whatever rustls still holds is read out, then EOF.
    eof: bool,
}

#[cfg(feature = "tls")]
impl TlsStream {
    /// Starts the server side of a handshake on an accepted socket.
    pub fn new(sock: TcpStream, config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        // One whole output frame fits, so a frame is not split across writes for want of room.
        conn.set_buffer_limit(Some(crate::limits::TLS_SEND_LIMIT));
        Ok(TlsStream {
            sock,
            conn,
            eof: false,
        })
    }

    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Handshake records or an alert a read produced, or a write left behind: send them
        // now (a full socket is fine; the writable event comes back here).
        match self.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        loop {
            match self.conn.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP end without close_notify: for us that is just the end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            // rustls reads at most one buffer's worth of records per call and refuses more
            // while its plaintext is unread, which is what bounds a connection's memory.
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.eof = true;
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls has queued an alert (a plain HTTP request on this port, a broken
                // hello): try to send it, then the connection ends.
                let _ = self.flush_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            match self.flush_tls() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The last write's records first: while they wait, take nothing new.
        self.flush_tls()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Plaintext queued before the handshake finished fills the buffer; wait.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_tls() {
            Ok(()) => Ok(n),
            // Taken: the records go out on the next write or writable event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }
}
