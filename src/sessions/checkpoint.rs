//! Clean places to start a replay, with the terminal modes in force there.
//!
//! A client that missed output gets the ring's tail, and the ring's oldest byte may sit inside
//! an escape sequence or a UTF-8 character: a fresh terminal would print the rest of that
//! sequence as text, or worse, take text for a sequence. So the session remembers a few points
//! where the output was clean (see [`ModeTracker::is_clean`]) together with the modes in force
//! there, and a replay starts at the first one the ring still holds, with a `restore` for
//! exactly those modes (not the ones at the end, which the replay itself will reach).
//!
//! The points are taken as output is read, at least `capacity / 32` bytes apart, in a fixed
//! array: the memory is fixed when the session is made, whatever the output. Plain text needs
//! no point of its own: each point also says how much plain text led up to it, so a replay can
//! start anywhere inside that run, at the first character boundary, and a session that prints
//! only text loses no more than it did before.

use crate::sessions::modes::{ModeTracker, Modes};
use crate::sessions::ring::Ring;

use crate::limits::CHECKPOINTS;
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// One clean point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Output offset.
    pub offset: u64,
    /// Plain text right before `offset` (saturating, which only makes the run look shorter).
    plain: u32,
    /// The modes in force at `offset`.
    pub modes: Modes,
}

/// The clean points of one session's output, oldest first, all at or after the ring's start.
#[derive(Debug)]
pub struct Checkpoints {
    marks: [Checkpoint; CHECKPOINTS],
    /// Index of the oldest.
    head: usize,
    len: usize,
    /// Least distance between two points.
    spacing: usize,
}

impl Checkpoints {
    /// Points for a ring of `capacity` bytes.
    pub fn new(capacity: usize) -> Checkpoints {
        Checkpoints {
            marks: [Checkpoint::default(); CHECKPOINTS],
            head: 0,
            len: 0,
            spacing: (capacity / CHECKPOINTS).max(1),
        }
    }

    fn get(&self, i: usize) -> &Checkpoint {
        &self.marks[(self.head + i) % CHECKPOINTS]
    }

    fn newest(&self) -> Option<&Checkpoint> {
        self.len.checked_sub(1).map(|i| self.get(i))
    }

    /// The points held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Checkpoint> {
        (0..self.len).map(|i| self.get(i))
    }

    /// The latest clean point of what `tracker` has read.
    fn latest(tracker: &ModeTracker) -> Checkpoint {
        let (offset, plain) = tracker.clean_point();
        Checkpoint {
            offset,
            plain: u32::try_from(plain).unwrap_or(u32::MAX),
            modes: tracker.modes(),
        }
    }

    /// Records the latest clean point of what `tracker` has read (the end, when the output
    /// ends clean; else where the unfinished sequence or character began) if it is far enough
    /// from the last point recorded; with the array full, the oldest point goes.
    pub fn note(&mut self, tracker: &ModeTracker) {
        let mark = Self::latest(tracker);
        if self
            .newest()
            .is_some_and(|c| mark.offset < c.offset + self.spacing as u64)
        {
            return;
        }
        if self.len == CHECKPOINTS {
            self.head = (self.head + 1) % CHECKPOINTS;
            self.len -= 1;
        }
        self.marks[(self.head + self.len) % CHECKPOINTS] = mark;
        self.len += 1;
    }

    /// Forgets the points the ring no longer holds: they can never be a replay start again.
    pub fn forget_before(&mut self, start: u64) {
        while self.len > 0 && self.get(0).offset < start {
            self.head = (self.head + 1) % CHECKPOINTS;
            self.len -= 1;
        }
    }

    /// Where a replay of `ring` starts, and the modes in force there: the first clean point at
    /// or after the ring's start, among those recorded and the tracker's latest one (which the
    /// spacing may have kept from being recorded). `tracker` has read the output up to
    /// `ring.end()`.
    pub fn replay_point(&self, ring: &Ring, tracker: &ModeTracker) -> (u64, Modes) {
        let start = ring.start();
        if start == 0 {
            // Nothing was ever overwritten: the replay is the whole output, from a blank
            // terminal's own state.
            return (0, Modes::default());
        }
        let latest = Self::latest(tracker);
        let Some(c) = self
            .iter()
            .chain(std::iter::once(&latest))
            .find(|c| c.offset >= start)
        else {
            // No clean point in the whole ring: the sequence or string still open (a huge
            // image, a program that opened a DCS and never closed it) began before it.
            // Starting at the end is exact about what is lost and replays nothing that could
            // be taken for what it is not; the modes are the ones in force now. Only the rest
            // of that one sequence, as it arrives, may show as text.
            return (ring.end(), tracker.modes());
        };
        // Inside the plain text before the point, any character boundary is as good: start
        // as early as the ring allows, past the continuation bytes of a character whose lead
        // byte is gone (no character has more than three).
        let mut at = (c.offset - u64::from(c.plain)).max(start);
        if let Some((a, b)) = ring.read_at(at) {
            for &byte in a.iter().chain(b).take(3) {
                if at >= c.offset || byte & 0xc0 != 0x80 {
                    break;
                }
                at += 1;
            }
        }
        (at, c.modes)
    }

    /// Feeds one read of output to `tracker`, noting clean points along the way.
    ///
    /// A read (a Linux PTY gives up to 4 KiB) can be as long as a small ring, and points only at
    /// read ends could then all lie past the ring's start, losing most of the ring. So the
    /// read is fed in pieces of the spacing, with a point noted after each: the points are
    /// never further apart than the spacing plus the sequence open at the time. With the
    /// default ring the spacing (8 KiB) exceeds any read and this is one `feed`.
    pub fn feed(&mut self, tracker: &mut ModeTracker, bytes: &[u8]) {
        for piece in bytes.chunks(self.spacing) {
            tracker.feed(piece);
            self.note(tracker);
        }
    }

    /// After output fed through [`Checkpoints::feed`] was committed to `ring`: forgets the
    /// points the ring lost, and tells the ring where a reader that lost its place (a lagging
    /// viewer) should resume.
    pub fn after_write(&mut self, ring: &mut Ring, tracker: &ModeTracker) {
        self.forget_before(ring.start());
        let (at, _) = self.replay_point(ring, tracker);
        ring.set_clean_start(at);
    }
}

impl Checkpoints {
    /// Writes the points for an upgrade: the spacing, then each point oldest first.
    pub fn to_record(&self, w: &mut Writer) {
        w.u64(self.spacing as u64);
        w.count(self.len);
        for c in self.iter() {
            w.u64(c.offset);
            w.u32(c.plain);
            c.modes.to_record(w);
        }
    }

    /// Reads points written by [`Checkpoints::to_record`].
    pub fn from_record(r: &mut Reader<'_>) -> Result<Checkpoints, FormatError> {
        let spacing = r.u64()?;
        if spacing == 0 || spacing > 1 << 30 {
            return bad(format!("checkpoint spacing {spacing} out of range"));
        }
        let len = r.count(CHECKPOINTS, "checkpoints")?;
        let mut marks = [Checkpoint::default(); CHECKPOINTS];
        for m in marks.iter_mut().take(len) {
            *m = Checkpoint {
                offset: r.u64()?,
                plain: r.u32()?,
                modes: Modes::from_record(r)?,
            };
        }
        Ok(Checkpoints {
            marks,
            head: 0,
            len,
            spacing: spacing as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A session's output path without the PTY: ring, tracker and points, fed in `reads`.
    struct Out {
        ring: Ring,
        modes: ModeTracker,
        points: Checkpoints,
    }

    impl Out {
        fn new(capacity: usize) -> Out {
            Out {
                ring: Ring::new(capacity).expect("a small mapping"),
                modes: ModeTracker::new(),
                points: Checkpoints::new(capacity),
            }
        }

        fn read(&mut self, chunk: &[u8]) {
            // The session never reads more than the ring's write slot at once.
            for part in chunk.chunks(self.ring.capacity()) {
                self.points.feed(&mut self.modes, part);
                self.ring.push(part);
                self.points.after_write(&mut self.ring, &self.modes);
            }
        }

        fn replay(&self) -> (u64, Modes) {
            self.points.replay_point(&self.ring, &self.modes)
        }
    }

    fn alt(m: &Modes) -> bool {
        m.alt_screen()
    }

    #[test]
    fn fixed_and_small() {
        assert!(std::mem::size_of::<Checkpoints>() <= 1024);
        assert_eq!(std::mem::size_of::<Checkpoint>(), 24);
    }

    #[test]
    fn start_of_output_is_clean() {
        let mut o = Out::new(64);
        assert_eq!(o.replay(), (0, Modes::default()));
        // Even mid-sequence: nothing was lost, the replay is everything.
        o.read(b"\x1b[?1049h\x1b]2;ti");
        assert_eq!(o.replay(), (0, Modes::default()));
        assert_eq!(o.ring.clean_start(), 0);
    }

    #[test]
    fn skips_a_sequence_cut_by_the_ring() {
        let mut o = Out::new(64);
        o.read(b"\x1b[?1049h");
        o.read(&[b'a'; 40]);
        // A title set across two reads; the ring's start will fall inside it.
        o.read(b"\x1b]2;a long window title here");
        o.read(b" and more of it\x07");
        let end_of_title = o.ring.end();
        o.read(b"after the title, some text");
        assert!(o.ring.start() > 48, "start {}", o.ring.start());
        assert!(o.ring.start() < end_of_title);
        let (at, modes) = o.replay();
        assert_eq!(at, end_of_title, "starts right after the title");
        assert!(alt(&modes));
        assert_eq!(o.ring.clean_start(), at);
    }

    #[test]
    fn plain_text_starts_at_the_ring_start() {
        let mut o = Out::new(100);
        for i in 0..50 {
            o.read(format!("line {i}\r\n").as_bytes());
        }
        let (at, modes) = o.replay();
        assert_eq!(at, o.ring.start());
        assert_eq!(modes, Modes::default());
    }

    #[test]
    fn plain_run_after_a_sequence() {
        let mut o = Out::new(100);
        o.read(b"\x1b[?25l");
        o.read(&[b'x'; 150]);
        // All of the ring is plain text now, though the run began before the ring's start.
        let (at, modes) = o.replay();
        assert_eq!(at, o.ring.start());
        assert_eq!(o.modes.restore_sequence_for(&modes), "\x1b[?25l");
    }

    #[test]
    fn skips_continuation_bytes() {
        for pad in 0..4 {
            let mut o = Out::new(32);
            o.read(&vec![b'a'; pad]);
            o.read("€€€€€€€€€€€€€€€€€€€€".as_bytes()); // 60 bytes, 3 each
            let (at, _) = o.replay();
            let start = o.ring.start();
            assert!(at >= start && at < start + 3, "pad {pad}: {at} vs {start}");
            let (a, b) = o.ring.read_at(at).unwrap();
            let rest = [a, b].concat();
            assert!(std::str::from_utf8(&rest).is_ok(), "pad {pad}: {rest:?}");
        }
    }

    #[test]
    fn a_cut_character_is_not_a_point() {
        let mut o = Out::new(64);
        o.read(&[b'a'; 10]);
        let euro = "€".as_bytes();
        o.read(&euro[..1]);
        assert!(!o.modes.is_clean());
        assert_eq!(
            o.modes.clean_point(),
            (10, 10),
            "the cut character's first byte"
        );
        o.read(&euro[1..]);
        assert!(o.modes.is_clean());
        assert!(
            o.points.iter().all(|c| c.offset != 11),
            "{:?}",
            o.points.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn endless_sequence_starts_at_the_end() {
        let mut o = Out::new(64);
        o.read(b"\x1b[?1049h\x1bPq");
        for _ in 0..10 {
            o.read(&[b'#'; 50]);
        }
        let (at, modes) = o.replay();
        assert_eq!(at, o.ring.end());
        assert!(alt(&modes), "the modes in force now");
        assert_eq!(o.ring.clean_start(), o.ring.end());
        // Once the string ends, its end is the next point.
        o.read(b"\x1b\\");
        let end = o.ring.end();
        o.read(b"z");
        assert_eq!(o.replay().0, end);
    }

    #[test]
    fn modes_at_the_replay_start_not_the_end() {
        let mut o = Out::new(256);
        o.read(b"\x1b[?1049h\x1b[?25l\x1b]2;vim\x07");
        for _ in 0..20 {
            o.read(b"\x1b[H\x1b[2Jscreen of a full-screen program\r\n");
        }
        // The program leaves the alternate screen inside what the ring will hold.
        o.read(b"\x1b[?25h\x1b[?1049l\x1b]2;sh\x07$ ");
        o.read(&[b'.'; 100]);
        assert!(!o.modes.alt_screen());
        let (at, modes) = o.replay();
        assert!(at > o.ring.start() || at == o.ring.start());
        assert!(alt(&modes), "the replay starts on the alternate screen");
        assert_eq!(
            o.modes.restore_sequence_for(&modes),
            "\x1b[?1049h\x1b[?25l\x1b]2;sh\x07",
            "current title, modes of the start"
        );
        assert_eq!(o.modes.restore_sequence(), "\x1b]2;sh\x07");
    }

    #[test]
    fn reads_as_long_as_the_ring_keep_points_close() {
        let mut o = Out::new(4096);
        let mut data = Vec::new();
        while data.len() < 20 * 4096 {
            data.extend_from_slice(b"\x1b[38;5;208mx\x1b[0m\x1b[2;1H\xe2\x82\xac");
        }
        for read in data.chunks(4096) {
            o.read(read);
            let (at, _) = o.replay();
            // The spacing, plus what a piece may add, plus one sequence.
            assert!(
                at - o.ring.start() < 2 * 128 + 16,
                "{at} vs {}",
                o.ring.start()
            );
        }
    }

    #[test]
    fn bounded_and_spaced() {
        let mut o = Out::new(3200);
        for _ in 0..10_000 {
            o.read(b"\x1b[1mab\x1b[0m");
        }
        assert!(o.points.len <= CHECKPOINTS);
        let offs: Vec<u64> = o.points.iter().map(|c| c.offset).collect();
        assert!(offs.windows(2).all(|w| w[1] >= w[0] + 100), "{offs:?}");
        assert!(offs.iter().all(|&x| x >= o.ring.start()), "{offs:?}");
    }

    #[test]
    fn oldest_point_is_overwritten_when_full() {
        let mut c = Checkpoints::new(CHECKPOINTS); // spacing 1
        let mut t = ModeTracker::new();
        for _ in 1..=(CHECKPOINTS as u64 + 5) {
            t.feed(b"a");
            c.note(&t);
        }
        let offs: Vec<u64> = c.iter().map(|m| m.offset).collect();
        assert_eq!(offs, (6..=CHECKPOINTS as u64 + 5).collect::<Vec<_>>());
        c.forget_before(30);
        assert_eq!(c.iter().next().map(|m| m.offset), Some(30));
        c.forget_before(u64::MAX);
        assert_eq!(c.iter().count(), 0);
    }

    const PIECES: &[&[u8]] = &[
        b"\x1b[?1049h",
        b"\x1b[?1049l",
        b"\x1b[?25l",
        b"\x1b[?25h",
        b"\x1b[?2004h",
        b"\x1b[?1000;1006h",
        b"\x1b[?1000l",
        b"\x1b=",
        b"\x1b>",
        b"\x1bc",
        b"\x1b[1;31m",
        b"\x1b]2;title\x07",
        b"\x1b]0;t\xc3\xa9",
        b"\x1bPq####",
        b"\x1b\\",
        b"\x1b",
        b"\x1b[",
        b"?1049h",
        b"\x07",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xe2",
        b"\x82",
        b"\xff",
        b"plain text ",
        b"\r\n",
    ];

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => proptest::sample::select(PIECES).prop_map(|p| p.to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
            1 => (0usize..120).prop_map(|n| vec![b'z'; n]),
        ]
    }

    proptest! {
        /// A fresh terminal given the restore and then the replay ends up in the same modes
        /// and parser state as one that saw everything, and the replay start is in the ring
        /// and never later than it must be for plain text.
        #[test]
        fn replay_reproduces_the_state(
            cap in 16usize..400,
            frags in proptest::collection::vec(fragment(), 0..80),
            cuts in proptest::collection::vec(1usize..200, 1..20),
        ) {
            let stream: Vec<u8> = frags.concat();
            let mut o = Out::new(cap);
            let mut from = 0;
            let mut k = 0;
            while from < stream.len() {
                let n = cuts[k % cuts.len()].min(stream.len() - from);
                o.read(&stream[from..from + n]);
                from += n;
                k += 1;
            }
            let (at, modes) = o.replay();
            let (start, end) = (o.ring.start(), o.ring.end());
            prop_assert!(at >= start && at <= end);
            prop_assert_eq!(o.ring.clean_start(), at);
            prop_assert!(o.points.iter().all(|c| c.offset >= start));
            let (latest, _) = o.modes.clean_point();
            if latest < start {
                // Only a sequence still open since before the ring's start leaves no choice.
                prop_assert_eq!((at, modes), (end, o.modes.modes()));
                return Ok(());
            }
            prop_assert!(at <= latest);

            let restore = o.modes.restore_sequence_for(&modes);
            let mut fresh = ModeTracker::new();
            fresh.feed(restore.as_bytes());
            let (a, b) = o.ring.read_at(at).unwrap();
            fresh.feed(a);
            fresh.feed(b);
            prop_assert_eq!(fresh.modes(), o.modes.modes());
            prop_assert_eq!(fresh.is_clean(), o.modes.is_clean());
            let fresh_end = (restore.len() + a.len() + b.len()) as u64;
            prop_assert_eq!(fresh_end - fresh.clean_point().0, end - latest);

            // The modes at the start are exactly those of a tracker that read up to there.
            let mut upto = ModeTracker::new();
            upto.feed(&stream[..at as usize]);
            prop_assert_eq!(upto.modes(), modes);
            // And the parser is in ground there, at a character boundary.
            prop_assert!(format!("{upto:?}").contains("state: Ground"), "{:?}", upto);
            if at < end {
                prop_assert!(
                    upto.is_clean() || stream[at as usize] & 0xc0 != 0x80,
                    "at {} in {}..{}: {:?}", at, start, end, upto
                );
            }
            // Plain text is never cut short: the replay starts within 3 bytes of the ring's
            // start when the whole ring is one plain run.
            if end - latest == 0 && o.modes.clean_point().1 >= end - start {
                prop_assert!(at < start + 4);
            }
        }
    }
}
