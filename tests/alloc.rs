//! The output path allocates nothing per frame once warm: output is the one thing keepty does
//! per byte, for every client, so an allocation there is paid thousands of times a second.
//!
//! A counting global allocator (counting only on the test's own thread, so the harness and
//! other tests do not disturb it) watches a real `WsConn` write frames from a `Ring` to a
//! loopback socket, both when the socket takes every frame whole and when it backs up and
//! frames are part-written. The client side parses the frames and checks every byte, so the
//! fast path is also shown to produce a valid WebSocket stream.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};

use keepty::api::protocol::Role;
use keepty::net::ws::WsConn;
use keepty::sessions::ring::Ring;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc() {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(|a| a.get())
}

/// The output byte at absolute offset `o`: a pattern that does not repeat at any power of
/// two, so a misplaced or repeated slice of the ring shows.
fn pattern(o: u64) -> u8 {
    (o % 251) as u8
}

/// Parses server frames byte by byte without allocating and checks that they are final
/// unmasked binary frames carrying the pattern.
#[derive(Default)]
struct Checker {
    header: [u8; 10],
    have: usize,
    payload_left: u64,
    offset: u64,
    frames: u64,
}

impl Checker {
    fn header_len(&self) -> usize {
        match self.header[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = data.len().min(self.payload_left as usize);
                for &b in &data[..n] {
                    assert_eq!(b, pattern(self.offset), "byte at offset {}", self.offset);
                    self.offset += 1;
                }
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have >= 2 && self.have == self.header_len() {
                assert_eq!(self.header[0], 0x82, "FIN + binary");
                assert_eq!(self.header[1] & 0x80, 0, "server frames are not masked");
                let len = match self.have {
                    2 => u64::from(self.header[1]),
                    4 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                    _ => u64::from_be_bytes(self.header[2..10].try_into().unwrap()),
                };
                assert!(len > 0, "empty output frame");
                self.payload_left = len;
                self.have = 0;
                self.frames += 1;
            }
        }
    }
}

/// A server-side `WsConn` attached to a ring, and the client end of its socket.
fn pair() -> (WsConn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let mut w = WsConn::new(
        keepty::net::stream::Stream::Plain(mio::net::TcpStream::from_std(server)),
        Vec::new(),
        peer,
    );
    w.attach((0, 1), 0, false, Role::Writer);
    (w, client)
}

/// Appends `n` pattern bytes to the ring.
fn produce(ring: &mut Ring, mut n: usize) {
    while n > 0 {
        let start = ring.end();
        let slot = ring.write_slot();
        let k = slot.len().min(n);
        for (i, b) in slot[..k].iter_mut().enumerate() {
            *b = pattern(start + i as u64);
        }
        ring.commit(k);
        n -= k;
    }
}

#[test]
fn whole_frames_allocate_nothing() {
    let (mut w, mut client) = pair();
    let mut ring = Ring::new(256 << 10).expect("map the ring");
    let mut checker = Checker::default();
    let mut buf = [0u8; 16 << 10];
    // Sizes that cover every header length and, over time, every wrap of the ring.
    let sizes = [1usize, 125, 126, 4096, 65535, 65536, 70_000, 3000, 16 << 10];
    let mut round = |w: &mut WsConn, ring: &mut Ring, checker: &mut Checker, i: usize| {
        produce(ring, sizes[i % sizes.len()]);
        assert!(w.pump_write(Some(ring)), "connection broke");
        // Read everything the server wrote before the next round, so the socket never backs
        // up in this test.
        while checker.offset < ring.end() || checker.payload_left > 0 {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "client saw EOF");
            checker.feed(&buf[..n]);
        }
        assert_eq!(w.cursor(), ring.end());
    };
    for i in 0..20 {
        round(&mut w, &mut ring, &mut checker, i);
    }
    let frames_before = checker.frames;
    let allocs = allocations_in(|| {
        for i in 20..2020 {
            round(&mut w, &mut ring, &mut checker, i);
        }
    });
    let frames = checker.frames - frames_before;
    assert!(frames >= 2000, "only {frames} frames");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations over {frames} output frames"
    );
}

#[test]
fn part_written_frames_allocate_nothing_after_the_first() {
    let (mut w, mut client) = pair();
    client.set_nonblocking(true).unwrap();
    let mut ring = Ring::new(256 << 10).expect("map the ring");
    let mut checker = Checker::default();
    let mut buf = [0u8; 16 << 10];
    let mut cycle = |w: &mut WsConn, ring: &mut Ring, checker: &mut Checker| {
        // Write until the socket pushes back, so the last frame is usually part-written.
        for _ in 0..100_000 {
            if w.cursor() == ring.end() {
                produce(ring, 64 << 10);
            }
            assert!(w.pump_write(Some(ring)), "connection broke");
            if !w.can_take_frame() {
                break;
            }
        }
        assert!(!w.can_take_frame(), "the socket never pushed back");
        // Then take what is there, as a slow client would, and say the socket is writable.
        let mut got = 0;
        loop {
            match client.read(&mut buf) {
                Ok(0) => panic!("client saw EOF"),
                Ok(n) => {
                    checker.feed(&buf[..n]);
                    got += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && got > 0 => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("client read: {e}"),
            }
        }
        w.on_writable();
    };
    for _ in 0..3 {
        cycle(&mut w, &mut ring, &mut checker);
    }
    let allocs = allocations_in(|| {
        for _ in 0..30 {
            cycle(&mut w, &mut ring, &mut checker);
        }
    });
    assert_eq!(
        allocs, 0,
        "{allocs} allocations over {} frames",
        checker.frames
    );
    // Finish: everything handed to the socket arrives intact.
    while w.cursor() < ring.end() || !w.can_take_frame() {
        w.on_writable();
        assert!(w.pump_write(Some(&ring)), "connection broke");
        while let Ok(n) = client.read(&mut buf) {
            assert!(n > 0, "client saw EOF");
            checker.feed(&buf[..n]);
        }
    }
    client.set_nonblocking(false).unwrap();
    while checker.offset < ring.end() {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "client saw EOF");
        checker.feed(&buf[..n]);
    }
    assert_eq!(checker.offset, ring.end(), "bytes lost or repeated");
    assert_eq!(
        (checker.payload_left, checker.have),
        (0, 0),
        "a frame was cut"
    );
}
