//! The state file's encoding: explicit little-endian integers and length-prefixed byte strings,
//! read back with every length checked against what is left. No struct is ever transmuted, so
//! the bytes are the same on a big-endian router, and a hostile or truncated file is an error,
//! never a panic or a huge allocation. The layout of each record is written by the part that
//! owns the state (a session, its ring, its modes...); this file only frames them. The layout
//! is documented in docs/upgrade.md.

use std::fmt;

/// The first bytes of every state file.
pub const MAGIC: &[u8; 8] = b"KEEPTYSV";

/// The format this binary writes.
pub const VERSION: u32 = 1;

/// Every format this binary reads. A newer one is refused by name, before anything is read.
pub const READS: &[u32] = &[1];

/// Why a state could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shorthand for a decoding error.
pub fn bad<T>(what: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(what.into()))
}

/// Appends fields to a growing buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer that starts with the header: magic and version. `capacity` is a guess at the
    /// size, so megabytes of rings are not copied again and again as the buffer grows.
    pub fn with_header(capacity: usize) -> Writer {
        let mut w = Writer {
            buf: Vec::with_capacity(capacity),
        };
        w.buf.extend_from_slice(MAGIC);
        w.u32(VERSION);
        w
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A bool as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// Little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian i32.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A count of items that follow, as u32 (every list here is bounded far below that).
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// A u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.count(v.len());
        self.buf.extend_from_slice(v);
    }

    /// Bytes with no length: the caller wrote the length before (see `Ring::to_record`).
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A string as its UTF-8 bytes.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A length-prefixed section written by `f`: a reader can tell where it ends even when it
    /// cannot read what is inside, so one bad session record does not lose the next.
    pub fn section(&mut self, f: impl FnOnce(&mut Writer)) {
        let at = self.buf.len();
        self.u32(0);
        f(self);
        let len = u32::try_from(self.buf.len() - at - 4).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// Reads fields back, checking every length.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Reads and checks the header: the magic, then a version this binary reads. Returns the
    /// version.
    pub fn header(&mut self) -> Result<u32, FormatError> {
        if self.take(MAGIC.len())? != MAGIC {
            return bad("not a keepty state (bad magic)");
        }
        let v = self.u32()?;
        if !READS.contains(&v) {
            return bad(format!(
                "state format {v} is not one this binary reads (it reads {READS:?})"
            ));
        }
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return bad(format!(
                "truncated: {n} bytes wanted at {}, {left} left",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    /// A bool; anything but 0 or 1 is an error.
    pub fn bool(&mut self) -> Result<bool, FormatError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => bad(format!("bad bool {b}")),
        }
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Little-endian i32.
    pub fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of at most `max` items.
    pub fn count(&mut self, max: usize, what: &str) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n > max {
            return bad(format!("{n} {what}, more than {max}"));
        }
        Ok(n)
    }

    /// Length-prefixed bytes, at most `max`.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let n = self.count(max, what)?;
        self.take(n)
    }

    /// A UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize, what: &str) -> Result<String, FormatError> {
        let b = self.bytes(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError(format!("{what} is not UTF-8")))
    }

    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The next section, as a reader of its own; this reader moves past it whatever happens
    /// inside.
    pub fn section(&mut self) -> Result<Reader<'a>, FormatError> {
        let n = self.u32()? as usize;
        Ok(Reader::new(self.take(n)?))
    }

    /// Checks that everything was read: trailing bytes mean the layout is not the expected one.
    pub fn finish(&self, what: &str) -> Result<(), FormatError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => bad(format!("{n} bytes left over after {what}")),
        }
    }
}

/// The version a state declares, without reading the rest: what `--check-state-version`
/// compares, and what an older binary names when it refuses a newer state.
pub fn declared_version(buf: &[u8]) -> Result<u32, FormatError> {
    let mut r = Reader::new(buf);
    if r.take(MAGIC.len())? != MAGIC {
        return bad("not a keepty state (bad magic)");
    }
    r.u32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let mut w = Writer::default();
        w.u8(7);
        w.bool(true);
        w.u16(0x0102);
        w.u32(0x0304_0506);
        w.i32(-2);
        w.u64(0x0708_090a_0b0c_0d0e);
        w.str("héllo");
        w.section(|w| w.u16(9));
        let b = w.into_bytes();
        // Explicit byte order: the u16 is 02 01 whatever the host.
        assert_eq!(&b[2..4], &[0x02, 0x01]);
        let mut r = Reader::new(&b);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u32(), Ok(0x0304_0506));
        assert_eq!(r.i32(), Ok(-2));
        assert_eq!(r.u64(), Ok(0x0708_090a_0b0c_0d0e));
        assert_eq!(r.str(64, "s").as_deref(), Ok("héllo"));
        let mut s = r.section().unwrap();
        assert_eq!(s.u16(), Ok(9));
        assert!(s.finish("section").is_ok());
        assert!(r.finish("all").is_ok());
    }

    #[test]
    fn truncation_and_lies_are_errors_not_panics() {
        let mut w = Writer::default();
        w.str("abcdef");
        let b = w.into_bytes();
        for cut in 0..b.len() {
            assert!(Reader::new(&b[..cut]).str(64, "s").is_err(), "cut at {cut}");
        }
        assert!(Reader::new(&b).str(3, "s").is_err(), "longer than allowed");
        // A length that claims 4 GiB allocates nothing.
        let lie = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(Reader::new(&lie).bytes(usize::MAX, "b").is_err());
        assert!(Reader::new(&lie).section().is_err());
        assert!(Reader::new(&[2]).bool().is_err());
        assert!(Reader::new(&[2, 0, 0, 0, 0xff, 0xfe]).str(8, "s").is_err());
    }

    #[test]
    fn the_header_names_the_version_and_refuses_a_newer_one() {
        let b = Writer::with_header(0).into_bytes();
        assert_eq!(declared_version(&b), Ok(VERSION));
        assert_eq!(Reader::new(&b).header(), Ok(VERSION));
        let mut newer = b.clone();
        newer[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let e = Reader::new(&newer).header().unwrap_err();
        assert!(e.0.contains("is not one this binary reads"), "{e}");
        assert!(Reader::new(b"KEEPTYXX\x01\0\0\0").header().is_err());
    }
}
