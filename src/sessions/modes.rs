//! Terminal modes a session's program has switched on, for the `restore` string of the
//! `attached` message (SPEC section 3).
//!
//! A client whose replay starts later than its own `since` gets a blank terminal plus a tail of
//! output; the program may have entered the alternate screen, hidden the cursor or turned on
//! mouse reporting long before that tail. [`ModeTracker`] watches every output byte for those
//! few sequences and [`ModeTracker::restore_sequence`] replays their net effect.
//!
//! The parser is the DEC/ANSI state machine (vt100.net's, as xterm.js implements it) reduced
//! to what matters here: it knows where every CSI, OSC, DCS, SOS, PM and APC string begins and
//! ends, so nothing inside one is mistaken for a mode change, and it interprets only DECSET /
//! DECRST, DECSTR, RIS, DECKPAM / DECKPNM, OSC 0 / 2 and keepty's own OSC 7337 (the offer of
//! `keepty send`, see `offer.rs`). Following xterm.js matters because the browser's terminal
//! is xterm.js: the aim is that a fresh page ends up where an attached page already is. Every buffer is fixed or capped, and the state is carried across `feed`
//! calls byte by byte, so any split of the stream gives the same result.
//!
//! It runs on every output byte of every session, so the ground state (plain text, nearly all
//! output) only searches for the next ESC, a block at a time, and a whole CSI found within one
//! chunk is read in a single straight run (see `after_esc`). The 8-bit C1 forms (0x9B CSI,
//! 0x9D OSC, ...) are not recognised: in a UTF-8 stream those bytes are continuation bytes.
//!
//! A replay that starts late must also start at a point where a fresh terminal parses the
//! rest exactly as the attached one did: [`ModeTracker::is_clean`] says whether the output read
//! so far ends at such a point, and [`ModeTracker::modes`] is the snapshot to keep with it
//! (see `checkpoint.rs`). Whether a UTF-8 character is cut is worked out once per `feed` from
//! its last few bytes, so the per-byte path does no extra work for it.

use std::fmt::Write as _;

const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

use crate::limits::{MAX_CSI_PARAMS, MAX_TITLE};
use crate::sessions::offer::{self, Offer};
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// Where the parser is within the escape-sequence grammar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Text; only ESC leaves it.
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// `ESC` + intermediate bytes (charset designations and the like), awaiting a final byte.
    EscIntermediate,
    /// After `ESC [`.
    CsiEntry,
    /// Reading a CSI's parameters.
    CsiParam,
    /// Reading a CSI's intermediate bytes.
    CsiIntermediate,
    /// A malformed CSI: skipped up to its final byte.
    CsiIgnore,
    /// After `ESC ]`, reading the OSC's number.
    OscId,
    /// The payload of OSC 0 or 2: a window title.
    OscTitle,
    /// The payload of OSC 7337 (keepty's own: a `keepty send` offer, see `offer.rs`).
    OscSend,
    /// The payload of any other OSC.
    OscIgnore,
    /// DCS, SOS, PM or APC payload: nothing in it is interpreted.
    StringIgnore,
}

/// The modes in force at one point of the output: small and `Copy`, so that checkpoints can
/// keep one each. `Default` is a freshly reset terminal, so the flags are named for their
/// non-default side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    /// 0 on the main screen, else the DECSET (47, 1047 or 1049) that switched to the alternate
    /// one, so that the restore uses the same one (1049 also saves the cursor and clears).
    alt_screen: u16,
    /// DECTCEM (25) reset.
    cursor_hidden: bool,
    /// DECAWM (7) reset.
    no_autowrap: bool,
    /// DECCKM (1).
    app_cursor: bool,
    /// DECKPAM (`ESC =`) or DECNKM (66).
    app_keypad: bool,
    /// 2004.
    bracketed_paste: bool,
    /// 1004.
    focus: bool,
    /// 0, or the mouse tracking mode in force (9, 1000, 1002 or 1003): they exclude each
    /// other, the last one set wins and resetting any of them turns tracking off (xterm and
    /// xterm.js agree).
    mouse: u16,
    /// 0, or the mouse coordinate encoding in force (1005, 1006, 1015 or 1016). Also
    /// exclusive; as in xterm, a reset only undoes the encoding it names.
    mouse_encoding: u16,
}

impl Modes {
    /// True on the alternate screen (a full-screen program is running).
    pub fn alt_screen(&self) -> bool {
        self.alt_screen != 0
    }

    fn set_private(&mut self, mode: u16, on: bool) {
        match mode {
            1 => self.app_cursor = on,
            7 => self.no_autowrap = !on,
            25 => self.cursor_hidden = !on,
            66 => self.app_keypad = on,
            1004 => self.focus = on,
            2004 => self.bracketed_paste = on,
            47 | 1047 | 1049 => {
                if !on {
                    self.alt_screen = 0;
                } else if self.alt_screen == 0 {
                    self.alt_screen = mode;
                }
            }
            9 | 1000 | 1002 | 1003 => self.mouse = if on { mode } else { 0 },
            1005 | 1006 | 1015 | 1016 => {
                if on {
                    self.mouse_encoding = mode;
                } else if self.mouse_encoding == mode {
                    self.mouse_encoding = 0;
                }
            }
            _ => {}
        }
    }

    /// DECSTR, as xterm and xterm.js apply it to the modes tracked here.
    fn soft_reset(&mut self) {
        self.cursor_hidden = false;
        self.no_autowrap = false;
        self.app_cursor = false;
        self.app_keypad = false;
    }
}

/// Follows a session's output and knows which terminal modes are in force.
#[derive(Debug, Clone, Default)]
pub struct ModeTracker {
    modes: Modes,
    /// The last window title set, at most [`MAX_TITLE`] bytes, not necessarily UTF-8.
    title: Vec<u8>,

    state: State,
    /// CSI private marker (`?`, `>`, ...), 0 if none.
    prefix: u8,
    /// CSI intermediate byte (`!`, `$`, ...), 0 if none, 0xff if more than one.
    intermediate: u8,
    params: [u16; MAX_CSI_PARAMS],
    /// Parameters completed by a `;`, at most [`MAX_CSI_PARAMS`].
    nparams: u8,
    /// The parameter being read; saturates, so any digit count needs no buffer.
    param: u16,
    /// Inside a `:` sub-parameter, whose digits do not belong to `param`.
    subparam: bool,
    /// The OSC number being read.
    osc_id: u16,
    osc_has_digits: bool,
    /// A title being read, committed only when its OSC ends properly.
    pending_title: Vec<u8>,
    pending_truncated: bool,
    /// An OSC 7337 payload being read (allocated on the first one), at most
    /// [`offer::MAX_PAYLOAD`] bytes; `send_overflow` once it was longer, which no offer is.
    pending_send: Vec<u8>,
    send_overflow: bool,
    /// The latest offer read and not yet taken ([`ModeTracker::take_offer`]). Not in the
    /// upgrade record: an offer pending across an upgrade is dropped (docs/upgrade.md).
    offer: Option<Box<Offer>>,

    /// Bells rung in plain text (not the BEL that ends an OSC), ever.
    bells: u64,
    /// Bytes read in all.
    fed: u64,
    /// Where the parser last came back to ground, and where it last left it (the ESC that
    /// opened the sequence it is in, if it is in one): see [`ModeTracker::clean_point`].
    ground_at: u64,
    left_ground_at: u64,
    /// The UTF-8 character cut at the end of the output: bytes of it present, bytes it lacks.
    utf8_have: u8,
    utf8_need: u8,
}

impl ModeTracker {
    /// A tracker for a terminal in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads more output. The stream may be cut anywhere: any split of it between calls gives
    /// the same state.
    pub fn feed(&mut self, bytes: &[u8]) {
        let base = self.fed;
        self.fed += bytes.len() as u64;
        (self.utf8_have, self.utf8_need) = utf8_cut_after((self.utf8_have, self.utf8_need), bytes);
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            match self.state {
                State::Ground => match find_esc(rest) {
                    // A bell in plain text rings; one that ends an OSC does not get here.
                    // It stays plain text for the clean point: `ground_at` does not move.
                    Some(p) if rest[p] == BEL => {
                        self.bells += 1;
                        i += p + 1;
                        continue;
                    }
                    Some(p) => {
                        self.left_ground_at = base + (i + p) as u64;
                        i += p + 1;
                        i += self.after_esc(&bytes[i..]);
                    }
                    None => return,
                },
                // Skip payloads in bulk; the terminator itself goes through `step`.
                State::StringIgnore => {
                    match rest.iter().position(|&b| matches!(b, ESC | CAN | SUB)) {
                        Some(p) => i += p,
                        None => return,
                    }
                    self.step(bytes[i]);
                    i += 1;
                }
                State::OscIgnore => {
                    match rest
                        .iter()
                        .position(|&b| matches!(b, ESC | CAN | SUB | BEL))
                    {
                        Some(p) => i += p,
                        None => return,
                    }
                    self.step(bytes[i]);
                    i += 1;
                }
                _ => {
                    self.step(rest[0]);
                    i += 1;
                }
            }
            if self.state == State::Ground {
                self.ground_at = base + i as u64;
            }
        }
    }

    /// Bells the program rang so far (BEL outside any escape sequence or string).
    pub fn bells(&self) -> u64 {
        self.bells
    }

    /// True if the output read so far ends where a freshly reset terminal could start reading
    /// and parse the rest exactly as one that saw everything: not inside an escape sequence or
    /// string, nor inside a UTF-8 character.
    pub fn is_clean(&self) -> bool {
        self.state == State::Ground && self.utf8_need == 0
    }

    /// The latest clean point (as [`is_clean`](Self::is_clean) means it) of the output read so
    /// far, as an offset counted from the first byte fed, and how many bytes of plain text lead
    /// up to it: any character boundary among those is just as clean. The modes in force there
    /// are the current ones, since modes change only where a sequence ends.
    ///
    /// It is the end when the output ends clean; else the ESC that opened the unfinished
    /// sequence, or the first byte of the cut character.
    pub fn clean_point(&self) -> (u64, u64) {
        let at = if self.state != State::Ground {
            self.left_ground_at
        } else if self.utf8_need > 0 {
            let lead = self.fed - u64::from(self.utf8_have);
            if lead < self.ground_at {
                // The lead byte ended an escape sequence, as garbage: the character began
                // inside it. Such an ending dispatches nothing, so the modes at the ESC that
                // opened the sequence are the current ones; the plain text before it is no
                // longer known.
                return (self.left_ground_at, 0);
            }
            lead
        } else {
            self.fed
        };
        (at, at - self.ground_at)
    }

    /// The modes in force now, to keep with a checkpoint.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// True on the alternate screen now.
    pub fn alt_screen(&self) -> bool {
        self.modes.alt_screen()
    }

    /// The window title last set, as the program sent it (at most 256 bytes, maybe not UTF-8,
    /// maybe with controls in it); empty if none.
    pub fn title(&self) -> &[u8] {
        &self.title
    }

    /// True while an offer read from the output waits to be taken.
    pub fn has_offer(&self) -> bool {
        self.offer.is_some()
    }

    /// The latest download offer read from the output (`keepty send`), once: it is then
    /// forgotten, so the same bytes replayed from the ring never offer again.
    pub fn take_offer(&mut self) -> Option<Offer> {
        self.offer.take().map(|o| *o)
    }

    /// Escape sequences that put a blank, freshly reset terminal into the modes in force now;
    /// "" when every mode is at its default and no title was set.
    pub fn restore_sequence(&self) -> String {
        self.restore_sequence_for(&self.modes)
    }

    /// Escape sequences that put a blank, freshly reset terminal into `modes` (a snapshot
    /// taken where a replay starts), with the current window title.
    ///
    /// The title is the current one, not the snapshot's: it is not kept per checkpoint, and a
    /// replay that sets titles sets them again anyway. The alternate screen comes first, so
    /// that the modes after it (and the replay) land on the right screen; the window title
    /// comes last, as `OSC 2 ; title BEL`.
    pub fn restore_sequence_for(&self, modes: &Modes) -> String {
        let m = modes;
        let mut out = String::new();
        let mut set = |mode: u16, on: bool| {
            let _ = write!(out, "\x1b[?{mode}{}", if on { 'h' } else { 'l' });
        };
        if m.alt_screen != 0 {
            set(m.alt_screen, true);
        }
        if m.cursor_hidden {
            set(25, false);
        }
        if m.no_autowrap {
            set(7, false);
        }
        if m.app_cursor {
            set(1, true);
        }
        if m.bracketed_paste {
            set(2004, true);
        }
        if m.mouse != 0 {
            set(m.mouse, true);
        }
        if m.mouse_encoding != 0 {
            set(m.mouse_encoding, true);
        }
        if m.focus {
            set(1004, true);
        }
        if m.app_keypad {
            out.push_str("\x1b=");
        }
        if !self.title.is_empty() {
            out.push_str("\x1b]2;");
            // xterm.js treats U+0080..U+009F as C1 controls (U+009C ends the OSC, U+009B opens
            // a CSI), so they could turn the rest of the title into output; drop them.
            let title = String::from_utf8_lossy(&self.title);
            out.extend(title.chars().filter(|c| !matches!(c, '\u{80}'..='\u{9f}')));
            out.push('\x07');
        }
        out
    }

    /// Reads what follows an ESC met in ground, returning how many bytes it took, and leaves
    /// the parser exactly where byte-by-byte [`step`](Self::step)s would have.
    ///
    /// Most sequences in real output are whole CSIs (SGR colours, cursor moves) inside one
    /// chunk. Reading those in one straight run, instead of one state dispatch per byte, saves
    /// a mispredicted indirect jump per byte; anything else (another kind of sequence, a C0
    /// control or intermediate inside the CSI, the end of the chunk) is left to `step`.
    #[inline]
    fn after_esc(&mut self, rest: &[u8]) -> usize {
        self.state = State::Escape;
        if rest.first() != Some(&b'[') {
            return 0;
        }
        self.csi_start();
        let mut state = State::CsiEntry;
        let mut j = 1;
        if let Some(&b @ 0x3c..=0x3f) = rest.get(j) {
            self.prefix = b;
            state = State::CsiParam;
            j += 1;
        }
        while let Some(&b) = rest.get(j) {
            match b {
                b'0'..=b'9' => self.param_digit(b),
                b';' => self.param_end(),
                b':' => self.subparam = true,
                0x40..=0x7e => {
                    self.csi_dispatch(b);
                    self.state = State::Ground;
                    return j + 1;
                }
                _ => break,
            }
            state = State::CsiParam;
            j += 1;
        }
        self.state = state;
        j
    }

    fn csi_start(&mut self) {
        self.prefix = 0;
        self.intermediate = 0;
        self.nparams = 0;
        self.param = 0;
        self.subparam = false;
    }

    /// One byte in any state but ground.
    #[inline]
    fn step(&mut self, b: u8) {
        // Anywhere: CAN and SUB abandon the sequence (an unfinished title is dropped), and
        // ESC starts a new one (finishing a title: xterm.js takes any ESC as its end).
        match b {
            CAN | SUB => {
                self.state = State::Ground;
                return;
            }
            ESC => {
                match self.state {
                    State::OscTitle => self.commit_title(),
                    State::OscSend => self.commit_offer(),
                    _ => {}
                }
                self.state = State::Escape;
                return;
            }
            _ => {}
        }
        let c0 = b < 0x20 || b == DEL;
        self.state = match self.state {
            State::Ground => State::Ground,
            State::Escape => match b {
                _ if c0 => State::Escape,
                b'[' => {
                    self.csi_start();
                    State::CsiEntry
                }
                b']' => {
                    self.osc_id = 0;
                    self.osc_has_digits = false;
                    State::OscId
                }
                b'P' | b'X' | b'^' | b'_' => State::StringIgnore,
                0x20..=0x2f => State::EscIntermediate,
                0x30..=0x7e => {
                    self.esc_dispatch(b);
                    State::Ground
                }
                _ => State::Ground,
            },
            // No sequence with an intermediate (charset designations, DECALN, ...) is tracked.
            State::EscIntermediate => match b {
                _ if c0 => State::EscIntermediate,
                0x20..=0x2f => State::EscIntermediate,
                _ => State::Ground,
            },
            State::CsiEntry => match b {
                _ if c0 => State::CsiEntry,
                0x3c..=0x3f => {
                    self.prefix = b;
                    State::CsiParam
                }
                _ => self.csi_param_byte(b),
            },
            State::CsiParam => match b {
                _ if c0 => State::CsiParam,
                // A private marker anywhere but first makes the sequence meaningless.
                0x3c..=0x3f => State::CsiIgnore,
                _ => self.csi_param_byte(b),
            },
            State::CsiIntermediate => match b {
                _ if c0 => State::CsiIntermediate,
                0x20..=0x2f => {
                    self.intermediate = 0xff;
                    State::CsiIntermediate
                }
                0x30..=0x3f => State::CsiIgnore,
                0x40..=0x7e => {
                    self.csi_dispatch(b);
                    State::Ground
                }
                _ => State::Ground,
            },
            State::CsiIgnore => match b {
                0x40..=0x7e => State::Ground,
                _ => State::CsiIgnore,
            },
            State::OscId => match b {
                BEL => State::Ground,
                _ if c0 && b != DEL => State::OscId,
                b'0'..=b'9' => {
                    self.osc_id = self
                        .osc_id
                        .saturating_mul(10)
                        .saturating_add(u16::from(b - b'0'));
                    self.osc_has_digits = true;
                    State::OscId
                }
                b';' if self.osc_has_digits && matches!(self.osc_id, 0 | 2) => {
                    self.pending_title.clear();
                    self.pending_truncated = false;
                    State::OscTitle
                }
                b';' if self.osc_has_digits && self.osc_id == offer::OSC_ID => {
                    self.pending_send.clear();
                    self.send_overflow = false;
                    State::OscSend
                }
                _ => State::OscIgnore,
            },
            State::OscSend => match b {
                BEL => {
                    self.commit_offer();
                    State::Ground
                }
                _ => {
                    if self.pending_send.len() < offer::MAX_PAYLOAD {
                        self.pending_send.push(b);
                    } else {
                        self.send_overflow = true;
                    }
                    State::OscSend
                }
            },
            State::OscTitle => match b {
                BEL => {
                    self.commit_title();
                    State::Ground
                }
                // xterm.js drops C0 controls from an OSC payload but keeps DEL.
                _ if b < 0x20 => State::OscTitle,
                _ => {
                    if self.pending_title.len() < MAX_TITLE {
                        self.pending_title.push(b);
                    } else {
                        self.pending_truncated = true;
                    }
                    State::OscTitle
                }
            },
            State::OscIgnore => match b {
                BEL => State::Ground,
                _ => State::OscIgnore,
            },
            State::StringIgnore => State::StringIgnore,
        };
    }

    /// A parameter, intermediate or final byte of a CSI, after its first byte.
    fn csi_param_byte(&mut self, b: u8) -> State {
        match b {
            b'0'..=b'9' => {
                self.param_digit(b);
                State::CsiParam
            }
            b';' => {
                self.param_end();
                State::CsiParam
            }
            b':' => {
                self.subparam = true;
                State::CsiParam
            }
            0x20..=0x2f => {
                self.intermediate = b;
                State::CsiIntermediate
            }
            0x40..=0x7e => {
                self.csi_dispatch(b);
                State::Ground
            }
            _ => State::Ground,
        }
    }

    #[inline]
    fn param_digit(&mut self, b: u8) {
        if !self.subparam {
            self.param = self
                .param
                .saturating_mul(10)
                .saturating_add(u16::from(b - b'0'));
        }
    }

    #[inline]
    fn param_end(&mut self) {
        if usize::from(self.nparams) < MAX_CSI_PARAMS {
            self.params[usize::from(self.nparams)] = self.param;
            self.nparams += 1;
        }
        self.param = 0;
        self.subparam = false;
    }

    fn csi_dispatch(&mut self, fin: u8) {
        match (self.prefix, self.intermediate, fin) {
            (b'?', 0, b'h' | b'l') => {
                // The parameter still open counts too, unless the list was already full.
                let n = usize::from(self.nparams);
                if n < MAX_CSI_PARAMS {
                    self.params[n] = self.param;
                }
                let on = fin == b'h';
                for &mode in &self.params[..(n + 1).min(MAX_CSI_PARAMS)] {
                    self.modes.set_private(mode, on);
                }
            }
            (0, b'!', b'p') => self.modes.soft_reset(),
            _ => {}
        }
    }

    fn esc_dispatch(&mut self, fin: u8) {
        match fin {
            b'=' => self.modes.app_keypad = true,
            b'>' => self.modes.app_keypad = false,
            // RIS resets every mode but not the window title: neither xterm nor xterm.js
            // clears it, so an attached page keeps showing it and a fresh one should too.
            b'c' => self.modes = Modes::default(),
            _ => {}
        }
    }

    /// An OSC 7337 ended: a well-formed offer replaces any earlier one not yet taken.
    fn commit_offer(&mut self) {
        if !self.send_overflow
            && let Some(o) = offer::parse(&self.pending_send)
        {
            self.offer = Some(Box::new(o));
        }
        self.pending_send.clear();
        self.send_overflow = false;
    }

    fn commit_title(&mut self) {
        if self.pending_truncated {
            let keep = utf8_complete_len(&self.pending_title);
            self.pending_title.truncate(keep);
        }
        std::mem::swap(&mut self.title, &mut self.pending_title);
        self.pending_title.clear();
    }
}

/// Position of the first ESC or BEL in `hay`.
///
/// Plain text is most of what a terminal prints and this is the only work done on it, so it
/// looks at 64-byte blocks with a branch-free test the compiler turns into SIMD compares and
/// one mask (SSE2, NEON) or a few word operations elsewhere, and only then finds the byte
/// within the block; the tail goes 16 bytes at a time. 16-byte blocks alone cost about 2.2
/// instructions per byte of plain text, which made this the server's largest cost per relayed
/// byte (issue 20); 64-byte ones about 0.3. ESC (0x1b) and BEL (0x07) are the bytes with
/// `b | 0x1c == 0x1f`, together with six other C0 controls that text rarely holds (0x03, 0x0b,
/// 0x0f, 0x13, 0x17, 0x1f): one OR and one compare per byte serve both, and a block that
/// matched only those is passed over.
fn find_esc(hay: &[u8]) -> Option<usize> {
    fn maybe(block: &[u8]) -> bool {
        block
            .iter()
            .fold(0u8, |seen, &b| seen | u8::from(b | 0x1c == 0x1f))
            != 0
    }
    fn within(block: &[u8], base: usize) -> Option<usize> {
        block
            .iter()
            .position(|&b| b == ESC || b == BEL)
            .map(|p| base + p)
    }
    let (blocks, rest) = hay.as_chunks::<64>();
    for (n, block) in blocks.iter().enumerate() {
        if maybe(block)
            && let Some(p) = within(block, n * 64)
        {
            return Some(p);
        }
    }
    let base = blocks.len() * 64;
    let (small, tail) = rest.as_chunks::<16>();
    for (n, block) in small.iter().enumerate() {
        if maybe(block)
            && let Some(p) = within(block, base + n * 16)
        {
            return Some(p);
        }
    }
    within(tail, base + small.len() * 16)
}

/// The UTF-8 character cut at the end of the output after `bytes`, as (bytes of it present,
/// bytes it lacks), given the one cut before them. Decoders (xterm.js's included) drop a cut
/// character at the first byte that cannot continue it, so only the last lead byte matters,
/// and no character is longer than four bytes: at most the last four bytes are looked at,
/// whatever the length.
fn utf8_cut_after((have, need): (u8, u8), bytes: &[u8]) -> (u8, u8) {
    for (after, &b) in bytes.iter().rev().take(4).enumerate() {
        if b & 0xc0 != 0x80 {
            let len: usize = match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if after + 1 < len {
                ((after + 1) as u8, (len - 1 - after) as u8)
            } else {
                (0, 0)
            };
        }
    }
    match u8::try_from(bytes.len()) {
        Ok(n) if n < need => (have + n, need - n),
        _ => (0, 0),
    }
}

/// `bytes.len()`, less a UTF-8 sequence cut short at the end.
fn utf8_complete_len(bytes: &[u8]) -> usize {
    // A lead byte within the last three bytes whose sequence runs past the end.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 != 0x80 {
            let need = match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if need > back {
                bytes.len() - back
            } else {
                bytes.len()
            };
        }
    }
    bytes.len()
}

// ---- upgrade records ----------------------------------------------------------------------

/// The parser states in the order of their number in a state file (docs/upgrade.md).
const STATES: [State; 11] = [
    State::Ground,
    State::Escape,
    State::EscIntermediate,
    State::CsiEntry,
    State::CsiParam,
    State::CsiIntermediate,
    State::CsiIgnore,
    State::OscId,
    State::OscTitle,
    State::OscIgnore,
    State::StringIgnore,
];

impl Modes {
    /// Writes the modes: the alternate screen, a byte of flags, the mouse mode and encoding.
    pub fn to_record(&self, w: &mut Writer) {
        w.u16(self.alt_screen);
        let flags = [
            self.cursor_hidden,
            self.no_autowrap,
            self.app_cursor,
            self.app_keypad,
            self.bracketed_paste,
            self.focus,
        ]
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, &on)| acc | (u8::from(on) << i));
        w.u8(flags);
        w.u16(self.mouse);
        w.u16(self.mouse_encoding);
    }

    /// Reads modes written by [`Modes::to_record`].
    pub fn from_record(r: &mut Reader<'_>) -> Result<Modes, FormatError> {
        let alt_screen = r.u16()?;
        let flags = r.u8()?;
        if flags >> 6 != 0 {
            return bad(format!("unknown mode flags {flags:#x}"));
        }
        let bit = |i: u8| flags & (1 << i) != 0;
        Ok(Modes {
            alt_screen,
            cursor_hidden: bit(0),
            no_autowrap: bit(1),
            app_cursor: bit(2),
            app_keypad: bit(3),
            bracketed_paste: bit(4),
            focus: bit(5),
            mouse: r.u16()?,
            mouse_encoding: r.u16()?,
        })
    }
}

impl ModeTracker {
    /// Writes the whole parser, a sequence half-read included, so output after the upgrade
    /// is parsed exactly as if the process had never changed.
    pub fn to_record(&self, w: &mut Writer) {
        self.modes.to_record(w);
        w.bytes(&self.title);
        // The format has no state for an offer half-read: it is skipped like any other OSC,
        // and so lost, as is one read but not yet taken (docs/upgrade.md).
        let recorded = match self.state {
            State::OscSend => State::OscIgnore,
            s => s,
        };
        let state = STATES.iter().position(|s| *s == recorded).unwrap_or(0);
        w.u8(state as u8);
        w.u8(self.prefix);
        w.u8(self.intermediate);
        w.count(self.params.len());
        for p in self.params {
            w.u16(p);
        }
        w.u8(self.nparams);
        w.u16(self.param);
        w.bool(self.subparam);
        w.u16(self.osc_id);
        w.bool(self.osc_has_digits);
        w.bytes(&self.pending_title);
        w.bool(self.pending_truncated);
        w.u64(self.fed);
        w.u64(self.ground_at);
        w.u64(self.left_ground_at);
        w.u8(self.utf8_have);
        w.u8(self.utf8_need);
        w.u64(self.bells);
    }

    /// Reads a parser written by [`ModeTracker::to_record`].
    pub fn from_record(r: &mut Reader<'_>) -> Result<ModeTracker, FormatError> {
        let modes = Modes::from_record(r)?;
        let title = r.bytes(MAX_TITLE, "title bytes")?.to_vec();
        let state = *STATES
            .get(r.u8()? as usize)
            .ok_or_else(|| FormatError("unknown parser state".into()))?;
        let prefix = r.u8()?;
        let intermediate = r.u8()?;
        if r.count(MAX_CSI_PARAMS, "CSI parameters")? != MAX_CSI_PARAMS {
            return bad("a different number of CSI parameters");
        }
        let mut params = [0u16; MAX_CSI_PARAMS];
        for p in &mut params {
            *p = r.u16()?;
        }
        let t = ModeTracker {
            modes,
            title,
            state,
            prefix,
            intermediate,
            params,
            nparams: r.u8()?,
            param: r.u16()?,
            subparam: r.bool()?,
            osc_id: r.u16()?,
            osc_has_digits: r.bool()?,
            pending_title: r.bytes(MAX_TITLE, "pending title")?.to_vec(),
            pending_truncated: r.bool()?,
            pending_send: Vec::new(),
            send_overflow: false,
            offer: None,
            fed: r.u64()?,
            ground_at: r.u64()?,
            left_ground_at: r.u64()?,
            utf8_have: r.u8()?,
            utf8_need: r.u8()?,
            bells: r.u64()?,
        };
        if usize::from(t.nparams) > MAX_CSI_PARAMS || t.utf8_have > 4 || t.utf8_need > 4 {
            return bad("parser counters out of range");
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn restore(stream: &[u8]) -> String {
        let mut t = ModeTracker::new();
        t.feed(stream);
        t.restore_sequence()
    }

    #[test]
    fn defaults_restore_nothing() {
        assert_eq!(ModeTracker::new().restore_sequence(), "");
        assert_eq!(
            restore(b"hello \x1b[1;31mworld\x1b[0m\r\n\x1b[2J\x1b[H"),
            ""
        );
    }

    #[test]
    fn each_mode() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x1b[?1049h", "\x1b[?1049h"),
            (b"\x1b[?1047h", "\x1b[?1047h"),
            (b"\x1b[?47h", "\x1b[?47h"),
            (b"\x1b[?25l", "\x1b[?25l"),
            (b"\x1b[?7l", "\x1b[?7l"),
            (b"\x1b[?1h", "\x1b[?1h"),
            (b"\x1b[?2004h", "\x1b[?2004h"),
            (b"\x1b[?9h", "\x1b[?9h"),
            (b"\x1b[?1000h", "\x1b[?1000h"),
            (b"\x1b[?1002h", "\x1b[?1002h"),
            (b"\x1b[?1003h", "\x1b[?1003h"),
            (b"\x1b[?1005h", "\x1b[?1005h"),
            (b"\x1b[?1006h", "\x1b[?1006h"),
            (b"\x1b[?1015h", "\x1b[?1015h"),
            (b"\x1b[?1016h", "\x1b[?1016h"),
            (b"\x1b[?1004h", "\x1b[?1004h"),
            (b"\x1b=", "\x1b="),
            (b"\x1b[?66h", "\x1b="),
            (b"\x1b]2;my title\x07", "\x1b]2;my title\x07"),
            (b"\x1b]0;my title\x1b\\", "\x1b]2;my title\x07"),
        ];
        for &(input, want) in cases {
            assert_eq!(
                restore(input),
                want,
                "input {:?}",
                input.escape_ascii().to_string()
            );
        }
        // And each one undone.
        let undone: &[&[u8]] = &[
            b"\x1b[?1049h\x1b[?1049l",
            b"\x1b[?47h\x1b[?47l",
            b"\x1b[?1047h\x1b[?1047l",
            b"\x1b[?9h\x1b[?9l",
            b"\x1b[?1000h\x1b[?1000l",
            b"\x1b[?1002h\x1b[?1002l",
            b"\x1b[?1005h\x1b[?1005l",
            b"\x1b[?1015h\x1b[?1015l",
            b"\x1b[?1016h\x1b[?1016l",
            b"\x1b[?25l\x1b[?25h",
            b"\x1b[?7l\x1b[?7h",
            b"\x1b[?1h\x1b[?1l",
            b"\x1b[?2004h\x1b[?2004l",
            b"\x1b[?1003h\x1b[?1000l",
            b"\x1b[?1006h\x1b[?1006l",
            b"\x1b[?1004h\x1b[?1004l",
            b"\x1b=\x1b>",
            b"\x1b[?66h\x1b[?66l",
            b"\x1b]2;x\x07\x1b]2;\x07",
        ];
        for &input in undone {
            assert_eq!(
                restore(input),
                "",
                "input {:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn several_params_and_order() {
        assert_eq!(
            restore(b"\x1b]0;t\x07\x1b=\x1b[?1000;1006;2004h\x1b[?25;7l\x1b[?1049h"),
            "\x1b[?1049h\x1b[?25l\x1b[?7l\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b=\x1b]2;t\x07"
        );
    }

    #[test]
    fn mouse_modes_exclude_each_other() {
        assert_eq!(restore(b"\x1b[?1000h\x1b[?1003h"), "\x1b[?1003h");
        assert_eq!(restore(b"\x1b[?1003h\x1b[?9l"), "");
        assert_eq!(restore(b"\x1b[?1006h\x1b[?1015h"), "\x1b[?1015h");
        // A reset of another encoding leaves the one in force.
        assert_eq!(restore(b"\x1b[?1006h\x1b[?1005l"), "\x1b[?1006h");
    }

    #[test]
    fn alt_screen_keeps_the_mode_that_entered_it() {
        assert_eq!(restore(b"\x1b[?47h\x1b[?1049h"), "\x1b[?47h");
        assert_eq!(restore(b"\x1b[?1049h\x1b[?47l"), "");
        assert_eq!(restore(b"\x1b[?1049h\x1b[?1047l\x1b[?1047h"), "\x1b[?1047h");
    }

    #[test]
    fn other_sequences_are_not_modes() {
        let inert: &[&[u8]] = &[
            b"\x1b[1049h",                // ANSI SM, not DEC private
            b"\x1b[>1049h",               // other private marker
            b"\x1b[?1049$h",              // intermediate
            b"\x1b[?1049$p",              // DECRQM query
            b"\x1b[1?049h",               // marker not first
            b"\x1b[?10 49h",              // parameter after intermediate
            b"\x1b(B\x1b)0",              // charset designations
            b"\x1b[?1049\x80h",           // non-ASCII aborts the CSI
            b"\x1b[?65535h\x1b[?104900h", // saturated numbers match nothing
            b"\x1b]1;icon\x07",           // icon name only
            b"\x1b]22;x\x07",
            b"\x1b];x\x07",
            b"\x1b]2x;y\x07",
        ];
        for &input in inert {
            assert_eq!(
                restore(input),
                "",
                "input {:?}",
                input.escape_ascii().to_string()
            );
        }
        assert_eq!(
            restore(b"\x1b[?1049:3h"),
            "\x1b[?1049h",
            "sub-parameters are skipped"
        );
    }

    #[test]
    fn strings_hide_their_contents() {
        let inert: &[&[u8]] = &[
            b"\x1bP1$r?1049h?25l\x1b\\",
            b"\x1bPq#0;2;0;0;0?1049h\x07?25l\x1b\\", // BEL does not end a DCS
            b"\x1b_?1049h\x1b\\",
            b"\x1b^?1049h\x1b\\",
            b"\x1bX?1049h\x1b\\",
            b"\x1b]8;;http://x/?1049h\x07",
            b"\x1b]52;c;P1s/MTA0OWg=\x07",
        ];
        for &input in inert {
            assert_eq!(
                restore(input),
                "",
                "input {:?}",
                input.escape_ascii().to_string()
            );
        }
        // A title that looks like a mode change is only a title.
        assert_eq!(restore(b"\x1b]2;\x1b[?1049h"), "\x1b[?1049h");
        assert_eq!(restore(b"\x1b]2;[?1049h\x07"), "\x1b]2;[?1049h\x07");
        // Parsing resumes right after the string.
        assert_eq!(restore(b"\x1bPxyz\x1b\\\x1b[?25l"), "\x1b[?25l");
        assert_eq!(restore(b"\x1b_abc\x1b[?25l"), "\x1b[?25l");
    }

    #[test]
    fn cancel_and_restart() {
        assert_eq!(restore(b"\x1b[?10\x1849h"), "");
        assert_eq!(restore(b"\x1b[?10\x1a49h"), "");
        assert_eq!(restore(b"\x1b]2;old\x07\x1b]2;new\x18"), "\x1b]2;old\x07");
        assert_eq!(restore(b"\x1bP?1049h\x18[?1049h"), "");
        // ESC inside a CSI starts over.
        assert_eq!(restore(b"\x1b[?10\x1b[?1049h"), "\x1b[?1049h");
        // C0 controls inside a CSI are executed without ending it.
        assert_eq!(restore(b"\x1b[?10\r\n49h"), "\x1b[?1049h");
        // C0 controls in a title are dropped.
        assert_eq!(restore(b"\x1b]2;a\tb\x07"), "\x1b]2;ab\x07");
    }

    #[test]
    fn full_reset_and_soft_reset() {
        let all = b"\x1b[?1049h\x1b[?25l\x1b[?7l\x1b[?1h\x1b=\x1b[?2004;1002;1006;1004h";
        let mut stream = all.to_vec();
        stream.extend_from_slice(b"\x1b]2;kept\x07\x1bc");
        assert_eq!(restore(&stream), "\x1b]2;kept\x07");

        let mut stream = all.to_vec();
        stream.extend_from_slice(b"\x1b[!p");
        assert_eq!(
            restore(&stream),
            "\x1b[?1049h\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?1004h"
        );
    }

    #[test]
    fn caps_hold() {
        // A parameter of a thousand digits.
        let mut s = b"\x1b[?".to_vec();
        s.extend(std::iter::repeat_n(b'9', 1000));
        s.extend_from_slice(b"h\x1b[?25l");
        assert_eq!(restore(&s), "\x1b[?25l");

        // Parameters past the 32nd are dropped, earlier ones still apply.
        let mut s = b"\x1b[?25".to_vec();
        for _ in 0..40 {
            s.extend_from_slice(b";0");
        }
        s.extend_from_slice(b";1049l");
        assert_eq!(restore(&s), "\x1b[?25l");

        // Exactly 32 parameters: the last one counts.
        let mut s = b"\x1b[?".to_vec();
        for _ in 0..31 {
            s.extend_from_slice(b"0;");
        }
        s.extend_from_slice(b"1049h");
        assert_eq!(restore(&s), "\x1b[?1049h");

        // A long title is cut at 256 bytes without splitting a character.
        let mut s = b"\x1b]2;".to_vec();
        s.push(b'a');
        for _ in 0..1000 {
            s.extend_from_slice("é".as_bytes());
        }
        s.push(BEL);
        let mut t = ModeTracker::new();
        t.feed(&s);
        assert_eq!(t.title.len(), 255);
        let r = t.restore_sequence();
        assert!(r.starts_with("\x1b]2;aé"));
        assert!(!r.contains('\u{fffd}'));

        // Megabytes inside a DCS cost no memory and parsing carries on.
        let mut t = ModeTracker::new();
        t.feed(b"\x1bPq");
        for _ in 0..64 {
            t.feed(&[b'#'; 65536]);
        }
        t.feed(b"\x1b\\\x1b[?25l");
        assert_eq!(t.restore_sequence(), "\x1b[?25l");
        assert!(t.pending_title.capacity() <= MAX_TITLE);
    }

    #[test]
    fn non_utf8_title_is_lossy() {
        assert_eq!(restore(b"\x1b]2;a\xffb\x07"), "\x1b]2;a\u{fffd}b\x07");
        // C1 controls written as UTF-8 are not carried into the restore.
        assert_eq!(
            restore(b"\x1b]2;a\xc2\x9c\xc2\x9b?25lb\x07"),
            "\x1b]2;a?25lb\x07"
        );
    }

    #[test]
    fn vim_like_session() {
        let start = b"\x1b[?1049h\x1b[22;0;0t\x1b[>4;2m\x1b[?1h\x1b=\x1b[H\x1b[2J\x1b]2;file.rs - VIM\x07\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?25l\x1b[1;1H\x1b[38;5;130m  1 \x1b[m fn main() {}\x1b[?25h\x1b[?25l";
        let during = restore(start);
        assert_eq!(
            during,
            "\x1b[?1049h\x1b[?25l\x1b[?1h\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b=\x1b]2;file.rs - VIM\x07"
        );
        let mut t = ModeTracker::new();
        t.feed(start);
        t.feed(b"\x1b[?2004l\x1b[?1002l\x1b[?1006l\x1b[?1l\x1b>\x1b[?25h\x1b[?1049l\x1b[23;0;0t\x1b]2;bash\x07");
        assert_eq!(t.restore_sequence(), "\x1b]2;bash\x07");
    }

    #[test]
    fn less_and_htop_like() {
        assert_eq!(
            restore(b"\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\rfoo\r\n"),
            "\x1b[?1049h\x1b[?1h\x1b="
        );
        assert_eq!(
            restore(b"\x1b[?1049h\x1b[22;0;0t\x1b[1;24r\x1b(B\x1b[m\x1b[4l\x1b[?7h\x1b[?1h\x1b=\x1b[?25l\x1b[39;49m\x1b[?1000h"),
            "\x1b[?1049h\x1b[?25l\x1b[?1h\x1b[?1000h\x1b="
        );
    }

    const SAMPLE: &[u8] = b"plain\x1b[?1049h\x1b[1;31mred\x1b[0m\x1b]0;ti\xc3\xa9tle\x1b\\\x1bP1$r?25l\x07x\x1b\\\x1b[?25;1l\x1b[?1002;1006h\x1b(B\x1b=\x1b[!p\x1b[?2004h\x1b]2;ab\x18\x1b[?10\x1b[?1004h\x1b_apc\x1b\\\x1bc\x1b[?7l\x1b[?99999999h\x1b]2;end\x07tail";

    #[test]
    fn every_split_point_gives_the_same_state() {
        let mut whole = ModeTracker::new();
        whole.feed(SAMPLE);
        let want = format!("{whole:?}");
        for cut in 0..=SAMPLE.len() {
            let mut t = ModeTracker::new();
            t.feed(&SAMPLE[..cut]);
            t.feed(&SAMPLE[cut..]);
            assert_eq!(format!("{t:?}"), want, "cut at {cut}");
        }
        let mut t = ModeTracker::new();
        for b in SAMPLE {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!(format!("{t:?}"), want);
    }

    const PIECES: &[&[u8]] = &[
        b"\x1b[?1049h",
        b"\x1b[?1049l",
        b"\x1b[?47h",
        b"\x1b[?25l",
        b"\x1b[?25h",
        b"\x1b[?7l",
        b"\x1b[?1;2004h",
        b"\x1b[?1000h",
        b"\x1b[?1003l",
        b"\x1b[?1006h",
        b"\x1b=",
        b"\x1b>",
        b"\x1bc",
        b"\x1b[!p",
        b"\x1b]2;",
        b"\x1b]0;x",
        b"\x07",
        b"\x1b\\",
        b"\x1bP",
        b"\x1b_",
        b"\x1b]",
        b"\x1b[",
        b"\x1b[?",
        b"\x18",
        b"\x1a",
        b"\x1b",
        b"1049",
        b";",
        b"h",
        b"l",
        b"?",
        b":",
        b"$",
        b"!",
        b"\xc3\xa9",
        b"\xff",
        b"\x1b]7337;send;",
        b"L3RtcC9m",
        b";42",
        b"text ",
        b"\r\n",
    ];

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => proptest::sample::select(PIECES).prop_map(|p| p.to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..8),
            1 => (0usize..600).prop_map(|n| vec![b'z'; n]),
        ]
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_state(
            frags in proptest::collection::vec(fragment(), 0..60),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let stream: Vec<u8> = frags.concat();
            let mut whole = ModeTracker::new();
            whole.feed(&stream);

            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut t = ModeTracker::new();
            let mut from = 0;
            for p in points {
                t.feed(&stream[from..p]);
                from = p;
            }
            t.feed(&stream[from..]);
            prop_assert_eq!(format!("{t:?}"), format!("{whole:?}"));

            // One byte at a time never takes the whole-CSI fast path.
            let mut bytewise = ModeTracker::new();
            for b in &stream {
                bytewise.feed(std::slice::from_ref(b));
            }
            prop_assert_eq!(format!("{bytewise:?}"), format!("{whole:?}"));
            prop_assert!(whole.title.len() <= MAX_TITLE);
            prop_assert!(usize::from(whole.nparams) <= MAX_CSI_PARAMS);
        }
    }

    /// Streams that end anywhere in the grammar, and in and around UTF-8 characters.
    const CORPUS: &[&[u8]] = &[
        b"",
        b"plain text only\r\n",
        "héllo wörld €uro 😀 end".as_bytes(),
        b"\x1b[?1049h\x1b[?25l\x1b[?2004h\x1b]2;title\x07text",
        b"\x1b[1;31mred\x1b[0m\x1b[38;5;130mx\x1b[m",
        b"\x1b]0;ti\xc3\xa9tle\x1b\\after",
        b"\x1b]2;cut short",
        b"\x1bPq#0;2;0;0;0#0~~@@\x1b\\done",
        b"\x1b_apc\x07still apc\x1b\\x",
        b"\x1b[?10\x1849h\x1a\x1b",
        b"\x1b(B\x1b)0\x1b#8\x1b=\x1b>\x1bc",
        b"\x1b[?1049:3h\x1b[?$p\x1b[1?049h\x1b[!p",
        b"\x1b\xc3\xa9\x1b[\xe2\x82\xac\x1b(\xf0\x9f\x98\x80z",
        b"\xe2\x82\x1b[?25l\xac\x82\x82\x82\x82\xff\xc3",
        b"\xf0\x9f\x98",
        b"\x1b[?1000;1006h\x1b[?1003l\x1b]8;;http://x/\x07link\x1b]8;;\x07",
    ];

    /// The parts of the state that say where a replay may start.
    fn clean_state(t: &ModeTracker) -> (bool, (u64, u64), Modes) {
        (t.is_clean(), t.clean_point(), t.modes())
    }

    #[test]
    fn corpus_split_at_every_byte_agrees() {
        for &seq in CORPUS {
            let mut whole = ModeTracker::new();
            whole.feed(seq);
            let want = format!("{whole:?}");
            let mut bytewise = ModeTracker::new();
            for cut in 0..=seq.len() {
                let mut t = ModeTracker::new();
                t.feed(&seq[..cut]);
                // The answers after a prefix do not depend on how the prefix was fed.
                assert_eq!(
                    clean_state(&t),
                    clean_state(&bytewise),
                    "{:?} after {cut}",
                    seq.escape_ascii().to_string()
                );
                t.feed(&seq[cut..]);
                assert_eq!(
                    format!("{t:?}"),
                    want,
                    "{:?} cut at {cut}",
                    seq.escape_ascii().to_string()
                );
                if let Some(&b) = seq.get(cut) {
                    bytewise.feed(&[b]);
                }
            }
            assert_eq!(format!("{bytewise:?}"), want);
        }
    }

    #[test]
    fn clean_points() {
        // (stream, is_clean, clean point, plain text before it)
        let cases: &[(&[u8], bool, u64, u64)] = &[
            (b"", true, 0, 0),
            (b"abc", true, 3, 3),
            (b"ab\x1b", false, 2, 2),
            (b"ab\x1b[?10", false, 2, 2),
            (b"ab\x1b[?1049h", true, 10, 0),
            (b"ab\x1b[?1049hcd", true, 12, 2),
            (b"x\x1b]2;title", false, 1, 1),
            (b"x\x1b]2;title\x07y", true, 12, 1),
            (b"x\x1bP1$r", false, 1, 1),
            (b"x\x1b[1m\x1b[2", false, 5, 0),
            // Cut characters: the point is their first byte.
            (b"ab\xc3", false, 2, 2),
            (b"ab\xe2\x82", false, 2, 2),
            (b"ab\xe2\x82\xac", true, 5, 5),
            (b"ab\xf0\x9f\x98", false, 2, 2),
            // Stray continuation bytes and invalid leads cut nothing.
            (b"\x82\x82", true, 2, 2),
            (b"a\xff", true, 2, 2),
            // A lead byte that ends a sequence (as garbage) starts a character inside it.
            (b"a\x1b\xe2\x82", false, 1, 0),
            (b"a\x1b\xe2\x82\xac", true, 5, 2),
            // CAN ends any sequence.
            (b"a\x1b]2;x\x18", true, 7, 0),
        ];
        for &(input, clean, at, plain) in cases {
            let mut t = ModeTracker::new();
            t.feed(input);
            assert_eq!(
                (t.is_clean(), t.clean_point()),
                (clean, (at, plain)),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn modes_at_the_clean_point_are_the_current_ones() {
        let mut t = ModeTracker::new();
        t.feed(b"\x1b[?1049h\x1b[?25l");
        let at = t.modes();
        t.feed(b"\x1b[?1049"); // not complete: nothing changed yet
        assert_eq!(t.modes(), at);
        assert_eq!(t.clean_point(), (14, 0));
        t.feed(b"l");
        assert!(!t.alt_screen());
        assert_eq!(
            t.restore_sequence_for(&at),
            "\x1b[?1049h\x1b[?25l",
            "a snapshot restores what it saw"
        );
        t.feed(b"\x1b]2;now\x07");
        assert_eq!(
            t.restore_sequence_for(&at),
            "\x1b[?1049h\x1b[?25l\x1b]2;now\x07"
        );
        assert_eq!(t.title(), b"now");
    }

    #[test]
    fn endless_sequences_stay_bounded() {
        let mib = vec![b'7'; 1 << 20];
        for opener in [
            &b"\x1b]2;"[..],
            b"\x1b]52;c;",
            b"\x1bP",
            b"\x1b_",
            b"\x1b[?",
            b"\x1b]",
        ] {
            let mut t = ModeTracker::new();
            t.feed(b"ok ");
            t.feed(opener);
            for _ in 0..8 {
                t.feed(&mib);
            }
            assert!(!t.is_clean(), "{opener:?}");
            assert_eq!(t.clean_point(), (3, 3), "{opener:?}");
            assert!(t.pending_title.capacity() <= MAX_TITLE, "{opener:?}");
            assert!(t.title.len() <= MAX_TITLE);
            let size = std::mem::size_of_val(&t) + t.title.capacity() + t.pending_title.capacity();
            assert!(size < 1024, "{opener:?}: {size}");
            // Still follows the stream once it ends.
            t.feed(b"\x1b\\\x1b[?25l");
            assert!(t.is_clean());
            assert!(t.restore_sequence().starts_with("\x1b[?25l"), "{opener:?}");
        }
    }

    #[test]
    fn long_title_is_capped_and_restored() {
        let mut s = b"\x1b]0;".to_vec();
        s.extend(std::iter::repeat_n(b'T', 10_000));
        s.push(BEL);
        let mut t = ModeTracker::new();
        for chunk in s.chunks(7) {
            t.feed(chunk);
        }
        assert_eq!(t.title(), &[b'T'; MAX_TITLE][..]);
        assert_eq!(
            t.restore_sequence(),
            format!("\x1b]2;{}\x07", "T".repeat(MAX_TITLE))
        );
        assert!(t.is_clean());
    }

    #[test]
    fn utf8_cut_matches_a_byte_by_byte_decoder() {
        // The reference: one byte at a time, a lead byte starts a character and a
        // continuation byte fills it (or is a stray).
        fn reference(bytes: &[u8]) -> (u8, u8) {
            let (mut have, mut need) = (0u8, 0u8);
            for &b in bytes {
                if b & 0xc0 == 0x80 {
                    if need > 0 {
                        have += 1;
                        need -= 1;
                    }
                } else {
                    need = match b {
                        0xc0..=0xdf => 1,
                        0xe0..=0xef => 2,
                        0xf0..=0xf7 => 3,
                        _ => 0,
                    };
                    have = 1;
                }
                if need == 0 {
                    have = 0;
                }
            }
            (have, need)
        }
        let alphabet = [b'a', 0x80, 0xbf, 0xc3, 0xe2, 0xf0, 0xf8, 0xff];
        // Every string of up to 6 bytes over the alphabet, fed whole and in two parts.
        for len in 0..=6u32 {
            for mut code in 0..alphabet.len().pow(len) {
                let mut bytes = Vec::new();
                for _ in 0..len {
                    bytes.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let want = reference(&bytes);
                assert_eq!(utf8_cut_after((0, 0), &bytes), want, "{bytes:x?}");
                for cut in 0..=bytes.len() {
                    let mid = utf8_cut_after((0, 0), &bytes[..cut]);
                    assert_eq!(
                        utf8_cut_after(mid, &bytes[cut..]),
                        want,
                        "{bytes:x?} at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_bell_is_plain_text_for_the_clean_point() {
        let mut a = ModeTracker::new();
        a.feed(b"\x1b[1mab\x07cd");
        let mut b = ModeTracker::new();
        b.feed(b"\x1b[1mabXcd");
        assert_eq!(a.clean_point(), b.clean_point());
    }

    #[test]
    fn bells_ring_outside_sequences_only() {
        let mut m = ModeTracker::new();
        m.feed(b"done\x07 \x1b]2;title\x07 \x1b]0;x\x1b\\ \x1bPq\x07\x1b\\");
        assert_eq!(m.bells(), 1);
        assert_eq!(m.title(), b"x");
        // Split anywhere, the count is the same.
        let all = b"a\x07b\x1b]2;t\x07\x07\x1b[1m\x07";
        for cut in 0..all.len() {
            let mut m = ModeTracker::new();
            m.feed(&all[..cut]);
            m.feed(&all[cut..]);
            assert_eq!(m.bells(), 3, "cut at {cut}");
        }
    }

    fn offer_of(stream: &[u8]) -> Option<Offer> {
        let mut m = ModeTracker::new();
        m.feed(stream);
        m.take_offer()
    }

    #[test]
    fn an_offer_is_read_and_taken_once() {
        let seq = offer::sequence("/tmp/f.bin", 42);
        let mut m = ModeTracker::new();
        m.feed(format!("before{seq}after").as_bytes());
        assert!(m.has_offer());
        let want = Offer {
            path: "/tmp/f.bin".into(),
            size: 42,
        };
        assert_eq!(m.take_offer(), Some(want.clone()));
        assert_eq!(m.take_offer(), None, "taken once");
        assert!(m.is_clean());
        assert_eq!(m.bells(), 0, "its BEL ends the OSC, it does not ring");
        assert_eq!(
            m.restore_sequence(),
            "",
            "nothing of it is a mode or a title"
        );
        // Split anywhere, the same offer; ended by ST too, as xterm.js ends any OSC on ESC.
        let st = seq.replace('\x07', "\x1b\\");
        for s in [&seq, &st] {
            for cut in 0..=s.len() {
                let mut m = ModeTracker::new();
                m.feed(&s.as_bytes()[..cut]);
                m.feed(&s.as_bytes()[cut..]);
                assert_eq!(m.take_offer(), Some(want.clone()), "{s:?} cut at {cut}");
            }
        }
        // The latest of several wins.
        let two = format!("{}{}", offer::sequence("/a", 1), offer::sequence("/b", 2));
        assert_eq!(offer_of(two.as_bytes()).map(|o| o.path), Some("/b".into()));
    }

    #[test]
    fn what_is_not_an_offer_offers_nothing() {
        let seq = offer::sequence("/tmp/f.bin", 42);
        let body = &seq[2..seq.len() - 1];
        for bad in [
            // Cancelled, another OSC number, inside a DCS, the title's OSC.
            format!("\x1b]{body}\x18"),
            format!("\x1b]{body}\x1a"),
            format!("\x1b]73370;{}\x07", &body[5..]),
            format!("\x1b]733;{}\x07", &body[5..]),
            format!("\x1bP{}\x1b\\", &seq[2..]),
            format!("\x1b]2;{}\x07", &body[5..]),
            // Not ended yet.
            format!("\x1b]{body}"),
            // A control inside.
            format!("\x1b]{}\r{}\x07", &body[..9], &body[9..]),
        ] {
            assert_eq!(offer_of(bad.as_bytes()), None, "{bad:?}");
        }
        // The title around it is untouched, and a broken offer leaves the last good one.
        let mut m = ModeTracker::new();
        m.feed(format!("\x1b]2;t\x07{seq}\x1b]7337;send;!!;1\x07").as_bytes());
        assert_eq!(m.title(), b"t");
        assert_eq!(m.take_offer().map(|o| o.size), Some(42));
    }

    #[test]
    fn an_endless_offer_stays_bounded_and_is_ignored() {
        let mut m = ModeTracker::new();
        m.feed(b"\x1b]7337;send;");
        for _ in 0..100 {
            m.feed(&[b'A'; 4096]);
        }
        assert!(m.pending_send.len() <= offer::MAX_PAYLOAD);
        m.feed(b";1\x07");
        assert_eq!(m.take_offer(), None, "too long to be an offer");
        // And the next one is read again.
        m.feed(offer::sequence("/x", 3).as_bytes());
        assert_eq!(m.take_offer().map(|o| o.size), Some(3));
    }

    #[test]
    fn an_upgrade_drops_the_offer_and_keeps_the_format() {
        use crate::upgrade::format::{Reader, Writer};
        let seq = offer::sequence("/tmp/f.bin", 42);
        let round = |m: &ModeTracker| {
            let mut w = Writer::default();
            m.to_record(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            ModeTracker::from_record(&mut r).expect("reads back")
        };
        // Read and not taken: not carried.
        let mut m = ModeTracker::new();
        m.feed(seq.as_bytes());
        assert!(!round(&m).has_offer());
        // Half-read: the rest is skipped as another OSC's payload, and offers nothing.
        let (head, tail) = seq.split_at(12);
        let mut m = ModeTracker::new();
        m.feed(head.as_bytes());
        let mut after = round(&m);
        after.feed(tail.as_bytes());
        after.feed(b"x");
        assert_eq!(after.take_offer(), None);
        assert!(after.is_clean());
        // Nothing about a tracker without offers changed in the record.
        let mut plain = ModeTracker::new();
        plain.feed(b"\x1b[?1049h\x1b]2;t\x07");
        let mut w = Writer::default();
        plain.to_record(&mut w);
        let mut v = Writer::default();
        round(&plain).to_record(&mut v);
        assert_eq!(w.into_bytes(), v.into_bytes());
    }

    #[test]
    fn find_esc_finds_the_first() {
        // Past two 64-byte blocks and the 16-byte tail blocks, at every position.
        for len in 0..200 {
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = ESC;
                if at + 3 < len {
                    v[at + 3] = ESC;
                }
                assert_eq!(find_esc(&v), Some(at));
            }
            assert_eq!(find_esc(&vec![b'a'; len]), None);
            // The other bytes the block test lets through are passed over.
            let mut v = vec![0x0f; len];
            for (i, b) in v.iter_mut().enumerate() {
                *b = [0x03, 0x0b, 0x0f, 0x13, 0x17, 0x1f, b'x'][i % 7];
            }
            assert_eq!(find_esc(&v), None);
            for at in 0..len {
                let mut w = v.clone();
                w[at] = if at % 2 == 0 { ESC } else { BEL };
                assert_eq!(find_esc(&w), Some(at));
            }
        }
    }
}
