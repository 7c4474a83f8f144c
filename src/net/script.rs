//! A scripted stand-in for a non-blocking socket, for unit tests of connection code.
//!
//! The bugs a connection can have live in what the kernel does between calls: a read that
//! brings half a frame, a write that takes 3 bytes of 300, a `WouldBlock` between a header and
//! its payload. A real socket does these when it likes; this one does them when the test says.
//!
//! - Reads follow a script of steps: bytes from the peer ([`Script::feed`], a read returns at
//!   most one chunk), one `WouldBlock` ([`Script::read_block`]), the end of the stream
//!   ([`Script::eof`], for good) or an error ([`Script::read_fail`]). With the script used up a
//!   read says `WouldBlock`, like a quiet peer.
//! - Each write call takes one step of a second script: at most `n` bytes
//!   ([`Script::accept`], a short write when `n` is less than offered; a vectored write takes
//!   across its slices, as `writev` does), `WouldBlock` ([`Script::block`]) or an error
//!   ([`Script::write_fail`]). With the script used up a write takes everything. After
//!   [`Transport::shutdown_write`] every write fails with `BrokenPipe`.
//! - Everything written is recorded ([`Script::written`]), and where the write half was shut
//!   ([`Script::shut_at`]).
//!
//! A [`Script`] is a handle: its clones share one stream, so the test keeps one and hands the
//! other to the connection it drives, and can go on scripting while the connection owns it.
//!
//! ```ignore
//! let sock = Script::new();
//! let mut w = WsConn::new(sock.clone(), Vec::new(), peer);
//! sock.accept(3).block(); // the next write takes 3 bytes, the one after says WouldBlock
//! w.pump_write(Some(&ring));
//! assert_eq!(sock.written().len(), 3);
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;

use crate::net::stream::Transport;

enum ReadStep {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
    Fail(io::ErrorKind),
}

enum WriteStep {
    Take(usize),
    WouldBlock,
    Fail(io::ErrorKind),
}

#[derive(Default)]
struct State {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
    written: Vec<u8>,
    shut_at: Option<usize>,
}

/// A scripted non-blocking stream; see the module doc.
#[derive(Clone, Default)]
pub(crate) struct Script(Rc<RefCell<State>>);

impl Script {
    /// A stream with empty scripts: reads say `WouldBlock`, writes take everything.
    pub(crate) fn new() -> Script {
        Script::default()
    }

    fn read_step(&self, step: ReadStep) -> &Script {
        self.0.borrow_mut().reads.push_back(step);
        self
    }

    fn write_step(&self, step: WriteStep) -> &Script {
        self.0.borrow_mut().writes.push_back(step);
        self
    }

    /// The peer sends `bytes`: later reads return them, in order, at most this chunk per read.
    pub(crate) fn feed(&self, bytes: &[u8]) -> &Script {
        if bytes.is_empty() {
            // An empty chunk would read as the end of the stream.
            return self;
        }
        self.read_step(ReadStep::Data(bytes.to_vec()))
    }

    /// One read says `WouldBlock` before whatever is scripted after it.
    pub(crate) fn read_block(&self) -> &Script {
        self.read_step(ReadStep::WouldBlock)
    }

    /// The peer ends its half: once what was fed before is read, every read returns 0.
    pub(crate) fn eof(&self) -> &Script {
        self.read_step(ReadStep::Eof)
    }

    /// One read fails with `kind`.
    pub(crate) fn read_fail(&self, kind: io::ErrorKind) -> &Script {
        self.read_step(ReadStep::Fail(kind))
    }

    /// The next write call takes at most `n` bytes.
    pub(crate) fn accept(&self, n: usize) -> &Script {
        self.write_step(WriteStep::Take(n))
    }

    /// The next write call says `WouldBlock` and takes nothing.
    pub(crate) fn block(&self) -> &Script {
        self.write_step(WriteStep::WouldBlock)
    }

    /// The next write call fails with `kind`.
    pub(crate) fn write_fail(&self, kind: io::ErrorKind) -> &Script {
        self.write_step(WriteStep::Fail(kind))
    }

    /// Every byte written so far.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.0.borrow().written.clone()
    }

    /// The bytes written since the last call (all of them, the first time).
    pub(crate) fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().written)
    }

    /// How many bytes had been written when the write half was shut; `None` while it is open.
    /// Counts from the last [`Script::take_written`], as [`Script::written`] does.
    pub(crate) fn shut_at(&self) -> Option<usize> {
        self.0.borrow().shut_at
    }

    /// Bytes fed that no read has taken yet.
    pub(crate) fn unread(&self) -> usize {
        let s = self.0.borrow();
        s.reads
            .iter()
            .map(|r| match r {
                ReadStep::Data(d) => d.len(),
                _ => 0,
            })
            .sum()
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        match s.reads.pop_front() {
            None | Some(ReadStep::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Some(ReadStep::Eof) => {
                s.reads.push_front(ReadStep::Eof);
                Ok(0)
            }
            Some(ReadStep::Fail(kind)) => Err(kind.into()),
            Some(ReadStep::Data(mut data)) => {
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    data.drain(..n);
                    s.reads.push_front(ReadStep::Data(data));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if s.shut_at.is_some() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if bufs.iter().all(|b| b.is_empty()) {
            // Takes no step: a script counts the writes that offer something.
            return Ok(0);
        }
        let mut left = match s.writes.pop_front() {
            None => usize::MAX,
            Some(WriteStep::Take(n)) => n,
            Some(WriteStep::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(WriteStep::Fail(kind)) => return Err(kind.into()),
        };
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(left);
            s.written.extend_from_slice(&b[..n]);
            taken += n;
            left -= n;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Script {
    fn shutdown_write(&mut self) {
        let mut s = self.0.borrow_mut();
        if s.shut_at.is_none() {
            s.shut_at = Some(s.written.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_script() {
        let mut sock = Script::new();
        sock.feed(b"hello").read_block().feed(b"!").eof();
        assert_eq!(sock.unread(), 6);
        let mut buf = [0u8; 3];
        assert_eq!(sock.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(sock.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        let e = sock.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(sock.read(&mut buf).unwrap(), 1);
        assert_eq!(sock.read(&mut buf).unwrap(), 0);
        assert_eq!(sock.read(&mut buf).unwrap(), 0, "the end stays");
        assert_eq!(
            Script::new().read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let mut sock = Script::new();
        sock.read_fail(io::ErrorKind::ConnectionReset);
        let e = sock.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn writes_follow_the_script() {
        let mut sock = Script::new();
        let handle = sock.clone();
        sock.accept(4)
            .block()
            .write_fail(io::ErrorKind::Interrupted);
        let parts = [IoSlice::new(b"ab"), IoSlice::new(b"cdef")];
        assert_eq!(sock.write_vectored(&parts).unwrap(), 4, "across slices");
        let e = sock.write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let e = sock.write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert_eq!(sock.write(b"rest").unwrap(), 4, "used up: takes everything");
        assert_eq!(handle.written(), b"abcdrest");
        assert_eq!(handle.take_written(), b"abcdrest");
        sock.write_all(b"xy").unwrap();
        sock.shutdown_write();
        assert_eq!(handle.shut_at(), Some(2));
        let e = sock.write(b"z").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(handle.written(), b"xy");
    }
}
