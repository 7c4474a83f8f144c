//! The session's output store: a fixed byte ring addressed by absolute u64 offsets.
//!
//! Offsets count every byte the session ever produced, so a client's position survives any
//! number of wraps and reconnects: it is the same number the client reports back as `since`.
//! The ring overwrites its oldest bytes; whether it is *allowed* to (backpressure) is decided by
//! the caller, which asks for at most [`Ring::write_slot`] bytes at a time.
//!
//! The bytes live in their own anonymous mapping (`sessions/mapping.rs`), not on the heap,
//! so a ring costs RSS only where output reached it, whatever the allocator, and all of it
//! goes back to the kernel when the session ends.

use super::mapping::Mapping;

use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// A fixed-capacity byte ring with absolute offsets.
pub struct Ring {
    buf: Mapping,
    end: u64,
    /// See [`Ring::clean_start`].
    clean_start: u64,
}

impl Ring {
    /// A ring holding at most `capacity` bytes (at least 1). The address space is mapped
    /// here, once; pages cost RSS only once output reaches them. Fails when the kernel will
    /// not map it: the caller refuses the one session that asked.
    pub fn new(capacity: usize) -> std::io::Result<Ring> {
        Ok(Ring {
            buf: Mapping::new(capacity.max(1))?,
            end: 0,
            clean_start: 0,
        })
    }

    /// Bytes the ring can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Offset one past the newest byte: every byte ever written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.end.saturating_sub(self.buf.len() as u64)
    }

    /// Where a reader that lost its place should resume: the oldest offset held at which the
    /// output can be read from a standing start (not inside an escape sequence or a character).
    /// The bytes alone cannot tell, so the owner, which parses them, marks it after each write
    /// ([`Ring::set_clean_start`]); a ring whose mark is stale or was never set (tests,
    /// benches) answers its oldest byte.
    pub fn clean_start(&self) -> u64 {
        if self.holds(self.clean_start) {
            self.clean_start
        } else {
            self.start()
        }
    }

    /// Marks where [`Ring::clean_start`] is now.
    pub fn set_clean_start(&mut self, offset: u64) {
        self.clean_start = offset;
    }

    /// Bytes held now.
    pub fn len(&self) -> usize {
        (self.end - self.start()) as usize
    }

    /// True before the first byte is written.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// True if `offset` can be read from: `start() <= offset <= end()`.
    pub fn holds(&self, offset: u64) -> bool {
        offset >= self.start() && offset <= self.end
    }

    fn pos(&self, offset: u64) -> usize {
        (offset % self.buf.len() as u64) as usize
    }

    /// The bytes from `offset` to the end, as two slices (the second non-empty only when the
    /// range wraps). `None` if `offset` is no longer (or not yet) held.
    pub fn read_at(&self, offset: u64) -> Option<(&[u8], &[u8])> {
        if !self.holds(offset) {
            return None;
        }
        let n = (self.end - offset) as usize;
        let p = self.pos(offset);
        let first = n.min(self.buf.len() - p);
        Some((&self.buf[p..p + first], &self.buf[..n - first]))
    }

    /// Copies up to `max` bytes from `offset` into `out` (cleared first), joining a wrapped
    /// range so a frame is one contiguous buffer. Returns the number of bytes copied, or `None`
    /// if `offset` is not held.
    pub fn copy_at(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> Option<usize> {
        let (a, b) = self.read_at(offset)?;
        out.clear();
        let a_n = a.len().min(max);
        out.extend_from_slice(&a[..a_n]);
        let b_n = b.len().min(max - a_n);
        out.extend_from_slice(&b[..b_n]);
        Some(a_n + b_n)
    }

    /// The contiguous free-or-oldest region at the write position, for reading the PTY
    /// straight into the ring. Bytes written there become visible with [`Ring::commit`];
    /// writing there overwrites the oldest bytes once the ring is full.
    pub fn write_slot(&mut self) -> &mut [u8] {
        let p = self.pos(self.end);
        &mut self.buf[p..]
    }

    /// Makes `n` bytes written into [`Ring::write_slot`] part of the output.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.pos(self.end));
        self.end += n as u64;
    }

    /// Appends `data`, overwriting the oldest bytes when full. Used by tests and benches; the
    /// server reads the PTY straight into [`Ring::write_slot`].
    pub fn push(&mut self, mut data: &[u8]) {
        // Only the last `capacity` bytes can survive; skip the rest without copying it.
        if data.len() > self.buf.len() {
            let skip = data.len() - self.buf.len();
            self.end += skip as u64;
            data = &data[skip..];
        }
        while !data.is_empty() {
            let slot = self.write_slot();
            let n = slot.len().min(data.len());
            slot[..n].copy_from_slice(&data[..n]);
            self.commit(n);
            data = &data[n..];
        }
    }
}

/// The largest ring a state file may ask for: far past any `--scrollback` a small box runs,
/// and small enough that a corrupt length cannot exhaust memory.
const MAX_RECORD_CAPACITY: u64 = 1 << 30;

impl Ring {
    /// Writes the ring for an upgrade: capacity, offsets and the bytes held, oldest first.
    pub fn to_record(&self, w: &mut Writer) {
        w.u64(self.buf.len() as u64);
        w.u64(self.end);
        w.u64(self.clean_start);
        let (a, b) = self.read_at(self.start()).unwrap_or((&[], &[]));
        w.count(a.len() + b.len());
        for part in [a, b] {
            for chunk in part.chunks(1 << 16) {
                w.raw(chunk);
            }
        }
    }

    /// Reads a ring written by [`Ring::to_record`]: the same offsets and bytes, so every
    /// `since` a client holds means what it meant before.
    pub fn from_record(r: &mut Reader<'_>) -> Result<Ring, FormatError> {
        let capacity = r.u64()?;
        let end = r.u64()?;
        let clean_start = r.u64()?;
        if capacity == 0 || capacity > MAX_RECORD_CAPACITY {
            return bad(format!("ring capacity {capacity} out of range"));
        }
        let held = r.bytes(capacity as usize, "ring bytes")?;
        if held.len() as u64 != end.min(capacity) {
            return bad(format!(
                "ring holds {} bytes, its offsets say {}",
                held.len(),
                end.min(capacity)
            ));
        }
        let mut ring = Ring::new(capacity as usize)
            .map_err(|e| FormatError(format!("cannot map a ring of {capacity} bytes: {e}")))?;
        ring.end = end - held.len() as u64;
        ring.push(held);
        ring.clean_start = clean_start;
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn joined(r: &Ring, off: u64) -> Option<Vec<u8>> {
        r.read_at(off).map(|(a, b)| [a, b].concat())
    }

    #[test]
    fn empty_ring() {
        let r = Ring::new(8).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.start(), 0);
        assert_eq!(r.end(), 0);
        assert_eq!(joined(&r, 0), Some(vec![]));
        assert_eq!(r.read_at(1), None);
    }

    #[test]
    fn wraps_and_reports_two_slices() {
        let mut r = Ring::new(8).unwrap();
        r.push(b"abcdef");
        r.push(b"ghij");
        assert_eq!(r.start(), 2);
        assert_eq!(r.end(), 10);
        let (a, b) = r.read_at(3).unwrap();
        assert_eq!(a, b"defgh");
        assert_eq!(b, b"ij");
        assert_eq!(r.read_at(1), None);
        assert_eq!(joined(&r, 10), Some(vec![]));
        assert_eq!(r.read_at(11), None);
    }

    #[test]
    fn oversized_push_keeps_tail() {
        let mut r = Ring::new(4).unwrap();
        r.push(b"0123456789");
        assert_eq!(r.end(), 10);
        assert_eq!(joined(&r, 6).unwrap(), b"6789");
    }

    #[test]
    fn copy_at_limits_and_joins() {
        let mut r = Ring::new(8).unwrap();
        r.push(b"abcdefghij");
        let mut out = Vec::new();
        assert_eq!(r.copy_at(4, 5, &mut out), Some(5));
        assert_eq!(out, b"efghi");
        assert_eq!(r.copy_at(0, 5, &mut out), None);
    }

    #[test]
    fn write_slot_commit() {
        let mut r = Ring::new(8).unwrap();
        r.push(b"abcdef");
        let slot = r.write_slot();
        assert_eq!(slot.len(), 2);
        slot.copy_from_slice(b"XY");
        r.commit(2);
        assert_eq!(r.write_slot().len(), 8);
        assert_eq!(joined(&r, 0).unwrap(), b"abcdefXY");
    }

    #[test]
    fn a_record_keeps_offsets_and_bytes() {
        for pushed in [0usize, 5, 8, 13, 100] {
            let mut r = Ring::new(8).unwrap();
            r.push(&(0..pushed).map(|i| i as u8).collect::<Vec<_>>());
            r.set_clean_start(r.start() + 1);
            let mut w = Writer::default();
            r.to_record(&mut w);
            let b = w.into_bytes();
            let back = Ring::from_record(&mut Reader::new(&b)).unwrap();
            assert_eq!(
                (back.start(), back.end(), back.capacity()),
                (r.start(), r.end(), 8)
            );
            assert_eq!(joined(&back, back.start()), joined(&r, r.start()));
            assert_eq!(back.clean_start(), r.clean_start());
            for cut in 0..b.len() {
                assert!(Ring::from_record(&mut Reader::new(&b[..cut])).is_err());
            }
        }
    }

    proptest! {
        /// The ring behaves like a VecDeque that keeps only the last `cap` bytes.
        #[test]
        fn matches_model(cap in 1usize..64, ops in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..100).prop_map(Ok),
                (0u64..400).prop_map(Err),
            ], 0..60)) {
            let mut r = Ring::new(cap).unwrap();
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut total = 0u64;
            for op in ops {
                match op {
                    Ok(data) => {
                        r.push(&data);
                        total += data.len() as u64;
                        model.extend(data);
                        while model.len() > cap { model.pop_front(); }
                    }
                    Err(off) => {
                        let start = total - model.len() as u64;
                        let expect = (off >= start && off <= total)
                            .then(|| model.iter().skip((off - start) as usize).copied().collect::<Vec<_>>());
                        prop_assert_eq!(joined(&r, off), expect);
                    }
                }
                prop_assert_eq!(r.end(), total);
                prop_assert_eq!(r.len(), model.len());
            }
        }
    }
}
