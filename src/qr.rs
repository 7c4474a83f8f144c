//! A QR code encoder for the startup link (ISO/IEC 18004): byte mode, error correction M (L
//! when M does not fit), versions 1 to 10, which holds 213 bytes at L: a LAN URL with a
//! 64-character token needs about 110. A crate for this would be ten times the code for one
//! line of output; this is the algorithm as the standard gives it, checked against another
//! encoder's matrices in the tests.

/// Error correction level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecc {
    /// Recovers about 7% of the symbol.
    L,
    /// Recovers about 15% of the symbol.
    M,
}

impl Ecc {
    fn index(self) -> usize {
        match self {
            Ecc::L => 0,
            Ecc::M => 1,
        }
    }
    /// The two bits of the format information.
    fn format_bits(self) -> u32 {
        match self {
            Ecc::L => 1,
            Ecc::M => 0,
        }
    }
}

const MAX_VERSION: usize = 10;
// Per level (L, M), per version (index 0 unused): error correction codewords in each block,
// and the number of blocks (ISO/IEC 18004 table 9).
const ECC_PER_BLOCK: [[usize; MAX_VERSION + 1]; 2] = [
    [0, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18],
    [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26],
];
const BLOCKS: [[usize; MAX_VERSION + 1]; 2] = [
    [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4],
    [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5],
];

/// A QR symbol: `size` x `size` modules, true for dark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qr {
    /// Modules per side: 17 + 4 * version.
    pub size: usize,
    /// 1 to 10.
    pub version: usize,
    /// The level used.
    pub ecc: Ecc,
    /// The mask pattern chosen (0 to 7).
    pub mask: u8,
    modules: Vec<bool>,
    function: Vec<bool>,
}

/// Encodes `data` at M, or at L when M needs a version past 10; None when it does not fit
/// version 10 at L (213 bytes).
pub fn encode(data: &[u8]) -> Option<Qr> {
    encode_at(data, Ecc::M).or_else(|| encode_at(data, Ecc::L))
}

/// Encodes `data` at level `ecc` in the smallest version that holds it, with the mask of the
/// lowest penalty.
pub fn encode_at(data: &[u8], ecc: Ecc) -> Option<Qr> {
    let version = (1..=MAX_VERSION)
        .find(|&v| data_bits_needed(data.len(), v) <= data_codewords(v, ecc) * 8)?;
    let mut best: Option<(u32, Qr)> = None;
    for mask in 0..8 {
        let qr = build(data, version, ecc, mask);
        let score = qr.penalty();
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, qr));
        }
    }
    best.map(|(_, qr)| qr)
}

fn data_bits_needed(len: usize, version: usize) -> usize {
    4 + count_bits(version) + 8 * len
}

fn count_bits(version: usize) -> usize {
    if version <= 9 { 8 } else { 16 }
}

/// Modules left for data and error correction after the function patterns.
fn raw_data_modules(version: usize) -> usize {
    let v = version;
    let mut n = (16 * v + 128) * v + 64;
    if v >= 2 {
        let align = v / 7 + 2;
        n -= (25 * align - 10) * align - 55;
        if v >= 7 {
            n -= 36;
        }
    }
    n
}

fn data_codewords(version: usize, ecc: Ecc) -> usize {
    raw_data_modules(version) / 8
        - ECC_PER_BLOCK[ecc.index()][version] * BLOCKS[ecc.index()][version]
}

fn build(data: &[u8], version: usize, ecc: Ecc, mask: u8) -> Qr {
    let size = 17 + 4 * version;
    let mut qr = Qr {
        size,
        version,
        ecc,
        mask,
        modules: vec![false; size * size],
        function: vec![false; size * size],
    };
    qr.draw_function_patterns();
    let codewords = add_ecc_and_interleave(&data_codewords_of(data, version, ecc), version, ecc);
    qr.draw_codewords(&codewords);
    qr.apply_mask(mask);
    qr.draw_format(mask);
    qr
}

/// Mode, count, data, terminator and padding, as codewords.
fn data_codewords_of(data: &[u8], version: usize, ecc: Ecc) -> Vec<u8> {
    let capacity = data_codewords(version, ecc) * 8;
    let mut bits: Vec<bool> = Vec::with_capacity(capacity);
    let mut push = |value: u32, n: usize| {
        for i in (0..n).rev() {
            bits.push((value >> i) & 1 == 1);
        }
    };
    push(0b0100, 4);
    push(data.len() as u32, count_bits(version));
    for &b in data {
        push(u32::from(b), 8);
    }
    let terminator = (capacity - bits.len()).min(4);
    bits.extend(std::iter::repeat_n(false, terminator));
    bits.extend(std::iter::repeat_n(false, (8 - bits.len() % 8) % 8));
    let mut out: Vec<u8> = bits
        .chunks(8)
        .map(|c| c.iter().fold(0u8, |acc, &b| (acc << 1) | u8::from(b)))
        .collect();
    for pad in [0xEC, 0x11].iter().cycle() {
        if out.len() >= capacity / 8 {
            break;
        }
        out.push(*pad);
    }
    out
}

fn add_ecc_and_interleave(data: &[u8], version: usize, ecc: Ecc) -> Vec<u8> {
    let blocks = BLOCKS[ecc.index()][version];
    let ecc_len = ECC_PER_BLOCK[ecc.index()][version];
    let raw = raw_data_modules(version) / 8;
    let short_blocks = blocks - raw % blocks;
    let short_len = raw / blocks;
    let divisor = rs_divisor(ecc_len);
    let mut split: Vec<Vec<u8>> = Vec::with_capacity(blocks);
    let mut at = 0;
    for i in 0..blocks {
        let len = short_len - ecc_len + usize::from(i >= short_blocks);
        let block = &data[at..at + len];
        at += len;
        let rem = rs_remainder(block, &divisor);
        let mut b = block.to_vec();
        // A short block gets a placeholder where the long ones have their last data byte, so
        // the columns line up; it is skipped when interleaving.
        if i < short_blocks {
            b.push(0);
        }
        b.extend(rem);
        split.push(b);
    }
    let mut out = Vec::with_capacity(raw);
    for col in 0..split[0].len() {
        for (i, b) in split.iter().enumerate() {
            if col != short_len - ecc_len || i >= short_blocks {
                out.push(b[col]);
            }
        }
    }
    out
}

/// GF(2^8) multiplication modulo x^8 + x^4 + x^3 + x^2 + 1.
fn gf_mul(x: u8, y: u8) -> u8 {
    let mut z: u16 = 0;
    for i in (0..8).rev() {
        z = (z << 1) ^ ((z >> 7) * 0x11D);
        z ^= u16::from((y >> i) & 1) * u16::from(x);
    }
    z as u8
}

/// The generator polynomial's coefficients (highest first, leading 1 dropped).
fn rs_divisor(degree: usize) -> Vec<u8> {
    let mut result = vec![0u8; degree];
    result[degree - 1] = 1;
    let mut root: u8 = 1;
    for _ in 0..degree {
        for j in 0..degree {
            result[j] = gf_mul(result[j], root);
            if j + 1 < degree {
                result[j] ^= result[j + 1];
            }
        }
        root = gf_mul(root, 0x02);
    }
    result
}

fn rs_remainder(data: &[u8], divisor: &[u8]) -> Vec<u8> {
    let mut result = vec![0u8; divisor.len()];
    for &b in data {
        let factor = b ^ result[0];
        result.remove(0);
        result.push(0);
        for (r, &d) in result.iter_mut().zip(divisor) {
            *r ^= gf_mul(d, factor);
        }
    }
    result
}

impl Qr {
    /// Whether the module at column `x`, row `y` is dark.
    pub fn dark(&self, x: usize, y: usize) -> bool {
        x < self.size && y < self.size && self.modules[y * self.size + x]
    }

    fn set_function(&mut self, x: usize, y: usize, dark: bool) {
        self.modules[y * self.size + x] = dark;
        self.function[y * self.size + x] = true;
    }

    fn draw_function_patterns(&mut self) {
        let size = self.size;
        for i in 0..size {
            self.set_function(6, i, i % 2 == 0);
            self.set_function(i, 6, i % 2 == 0);
        }
        self.draw_finder(3, 3);
        self.draw_finder(size - 4, 3);
        self.draw_finder(3, size - 4);
        let pos = self.alignment_positions();
        let n = pos.len();
        for i in 0..n {
            for j in 0..n {
                // Not over the three finder patterns.
                let corner = |a: usize, b: usize| i == a && j == b;
                if corner(0, 0) || corner(0, n - 1) || corner(n - 1, 0) {
                    continue;
                }
                self.draw_alignment(pos[i], pos[j]);
            }
        }
        // Reserve the format areas (drawn for real once the mask is known).
        self.draw_format(0);
        self.draw_version();
    }

    fn draw_finder(&mut self, cx: usize, cy: usize) {
        for dy in -4i32..=4 {
            for dx in -4i32..=4 {
                let (x, y) = (cx as i32 + dx, cy as i32 + dy);
                if x < 0 || y < 0 || x >= self.size as i32 || y >= self.size as i32 {
                    continue;
                }
                let d = dx.abs().max(dy.abs());
                self.set_function(x as usize, y as usize, d != 2 && d != 4);
            }
        }
    }

    fn draw_alignment(&mut self, cx: usize, cy: usize) {
        for dy in -2i32..=2 {
            for dx in -2i32..=2 {
                let d = dx.abs().max(dy.abs());
                self.set_function((cx as i32 + dx) as usize, (cy as i32 + dy) as usize, d != 1);
            }
        }
    }

    fn alignment_positions(&self) -> Vec<usize> {
        let v = self.version;
        if v == 1 {
            return Vec::new();
        }
        let n = v / 7 + 2;
        let step = (v * 8 + n * 3 + 5) / (n * 4 - 4) * 2;
        let mut pos = vec![6; n];
        for i in (1..n).rev() {
            pos[i] = self.size - 7 - (n - 1 - i) * step;
        }
        pos
    }

    fn draw_format(&mut self, mask: u8) {
        let data = (self.ecc.format_bits() << 3) | u32::from(mask);
        let mut rem = data;
        for _ in 0..10 {
            rem = (rem << 1) ^ ((rem >> 9) * 0x537);
        }
        let bits = ((data << 10) | rem) ^ 0x5412;
        let bit = |i: usize| (bits >> i) & 1 == 1;
        let size = self.size;
        for i in 0..=5 {
            self.set_function(8, i, bit(i));
        }
        self.set_function(8, 7, bit(6));
        self.set_function(8, 8, bit(7));
        self.set_function(7, 8, bit(8));
        for i in 9..15 {
            self.set_function(14 - i, 8, bit(i));
        }
        for i in 0..8 {
            self.set_function(size - 1 - i, 8, bit(i));
        }
        for i in 8..15 {
            self.set_function(8, size - 15 + i, bit(i));
        }
        self.set_function(8, size - 8, true);
    }

    fn draw_version(&mut self) {
        if self.version < 7 {
            return;
        }
        let v = self.version as u32;
        let mut rem = v;
        for _ in 0..12 {
            rem = (rem << 1) ^ ((rem >> 11) * 0x1F25);
        }
        let bits = (v << 12) | rem;
        for i in 0..18 {
            let dark = (bits >> i) & 1 == 1;
            let a = self.size - 11 + i % 3;
            let b = i / 3;
            self.set_function(a, b, dark);
            self.set_function(b, a, dark);
        }
    }

    /// Places the codewords in the two-column zigzag from the bottom right, skipping the
    /// function modules and the vertical timing column.
    fn draw_codewords(&mut self, data: &[u8]) {
        let size = self.size;
        let mut i = 0usize;
        let mut right = size as i32 - 1;
        while right >= 1 {
            if right == 6 {
                right = 5;
            }
            for vert in 0..size {
                for j in 0..2 {
                    let x = (right - j) as usize;
                    let upward = (right + 1) & 2 == 0;
                    let y = if upward { size - 1 - vert } else { vert };
                    if !self.function[y * size + x] && i < data.len() * 8 {
                        self.modules[y * size + x] = (data[i >> 3] >> (7 - (i & 7))) & 1 == 1;
                        i += 1;
                    }
                }
            }
            right -= 2;
        }
    }

    fn apply_mask(&mut self, mask: u8) {
        let size = self.size;
        for y in 0..size {
            for x in 0..size {
                let flip = match mask {
                    0 => (x + y) % 2 == 0,
                    1 => y % 2 == 0,
                    2 => x % 3 == 0,
                    3 => (x + y) % 3 == 0,
                    4 => (x / 3 + y / 2) % 2 == 0,
                    5 => x * y % 2 + x * y % 3 == 0,
                    6 => (x * y % 2 + x * y % 3) % 2 == 0,
                    _ => ((x + y) % 2 + x * y % 3) % 2 == 0,
                };
                if flip && !self.function[y * size + x] {
                    self.modules[y * size + x] ^= true;
                }
            }
        }
    }

    /// The standard's penalty score (N1 runs, N2 blocks, N3 finder-like patterns, N4
    /// balance); the mask with the lowest is used.
    fn penalty(&self) -> u32 {
        let n = self.size;
        let mut score = 0u32;
        let line = |i: usize, horizontal: bool| -> Vec<bool> {
            (0..n)
                .map(|j| {
                    if horizontal {
                        self.dark(j, i)
                    } else {
                        self.dark(i, j)
                    }
                })
                .collect()
        };
        for i in 0..n {
            for horizontal in [true, false] {
                let l = line(i, horizontal);
                let mut run = 1;
                for j in 1..=n {
                    if j < n && l[j] == l[j - 1] {
                        run += 1;
                    } else {
                        if run >= 5 {
                            score += 3 + (run - 5) as u32;
                        }
                        run = 1;
                    }
                }
                const A: [bool; 11] = [
                    true, false, true, true, true, false, true, false, false, false, false,
                ];
                for w in l.windows(11) {
                    if w == A || w.iter().rev().eq(A.iter()) {
                        score += 40;
                    }
                }
            }
        }
        for y in 0..n - 1 {
            for x in 0..n - 1 {
                let c = self.dark(x, y);
                if c == self.dark(x + 1, y)
                    && c == self.dark(x, y + 1)
                    && c == self.dark(x + 1, y + 1)
                {
                    score += 3;
                }
            }
        }
        let dark = self.modules.iter().filter(|&&m| m).count();
        let total = n * n;
        let k = (dark * 20)
            .abs_diff(total * 10)
            .div_ceil(total)
            .saturating_sub(1);
        score + 10 * k as u32
    }

    /// The symbol as text for a terminal: two module rows per line in Unicode half blocks,
    /// black on white whatever the terminal's colours (a dark theme would otherwise invert
    /// it), with a quiet zone of `quiet` modules.
    pub fn to_half_blocks(&self, quiet: usize) -> String {
        let span = self.size + 2 * quiet;
        let at = |x: usize, y: usize| -> bool {
            x >= quiet && y >= quiet && self.dark(x - quiet, y - quiet)
        };
        let mut out = String::new();
        for y in (0..span).step_by(2) {
            out.push_str("\x1b[30;47m");
            for x in 0..span {
                let top = at(x, y);
                let bottom = y + 1 < span && at(x, y + 1);
                out.push(match (top, bottom) {
                    (true, true) => '\u{2588}',
                    (true, false) => '\u{2580}',
                    (false, true) => '\u{2584}',
                    (false, false) => ' ',
                });
            }
            out.push_str("\x1b[0m\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(qr: &Qr) -> Vec<String> {
        (0..qr.size)
            .map(|y| {
                (0..qr.size)
                    .map(|x| if qr.dark(x, y) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    /// Matrices made by another encoder (python-qrcode 8, byte mode, `border=0`, the version
    /// and mask it chose itself): versions 1, 5, 6 and 7 (7 has the version information
    /// blocks), both levels. Each header is `LEVEL VERSION MASK DATA`.
    #[test]
    fn matrices_match_another_encoder() {
        let text = include_str!("qr_vectors.txt");
        let mut cases = 0;
        for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
            let mut lines = block.lines();
            let head: Vec<&str> = lines.next().unwrap().splitn(4, ' ').collect();
            let ecc = if head[0] == "L" { Ecc::L } else { Ecc::M };
            let version: usize = head[1].parse().unwrap();
            let mask: u8 = head[2].parse().unwrap();
            let data = head[3].as_bytes();
            let want: Vec<String> = lines.map(str::to_string).collect();
            assert_eq!(rows(&build(data, version, ecc, mask)), want, "{}", head[3]);
            // The same version. The mask may differ: encoders score the penalty rules each in
            // their own way (python-qrcode's is not the standard's), and any mask is valid.
            assert_eq!(
                encode_at(data, ecc).unwrap().version,
                version,
                "{}",
                head[3]
            );
            cases += 1;
        }
        assert_eq!(cases, 4);
    }

    #[test]
    fn capacities_match_the_standard() {
        // ISO/IEC 18004 table 7, byte mode: data bytes per version at L and M.
        let l = [17, 32, 53, 78, 106, 134, 154, 192, 230, 271];
        let m = [14, 26, 42, 62, 84, 106, 122, 152, 180, 213];
        for v in 1..=MAX_VERSION {
            let fits = |ecc, len| data_bits_needed(len, v) <= data_codewords(v, ecc) * 8;
            assert!(
                fits(Ecc::L, l[v - 1]) && !fits(Ecc::L, l[v - 1] + 1),
                "L v{v}"
            );
            assert!(
                fits(Ecc::M, m[v - 1]) && !fits(Ecc::M, m[v - 1] + 1),
                "M v{v}"
            );
        }
    }

    #[test]
    fn reed_solomon_of_the_standards_example() {
        // ISO/IEC 18004 annex I: "01234567" at 1-M, its 16 data codewords and 10 EC codewords.
        let data = [
            0x10, 0x20, 0x0C, 0x56, 0x61, 0x80, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11,
            0xEC, 0x11,
        ];
        let ecc = rs_remainder(&data, &rs_divisor(10));
        assert_eq!(
            ecc,
            [0xA5, 0x24, 0xD4, 0xC1, 0xED, 0x36, 0xC7, 0x87, 0x2C, 0x55]
        );
    }

    #[test]
    fn too_long_is_refused() {
        assert!(encode(&[b'a'; 271]).is_some());
        assert!(encode(&[b'a'; 272]).is_none());
        assert_eq!(
            encode(&[b'a'; 213]).map(|q| (q.version, q.ecc)),
            Some((10, Ecc::M))
        );
        assert_eq!(
            encode(&[b'a'; 214]).map(|q| (q.version, q.ecc)),
            Some((9, Ecc::L))
        );
    }

    #[test]
    fn half_blocks_cover_the_symbol_and_its_quiet_zone() {
        let qr = encode(b"http://192.168.1.20:7700/").unwrap();
        let text = qr.to_half_blocks(2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), (qr.size + 4).div_ceil(2));
        for l in &lines {
            assert!(l.starts_with("\x1b[30;47m") && l.ends_with("\x1b[0m"));
            let body = &l["\x1b[30;47m".len()..l.len() - "\x1b[0m".len()];
            assert_eq!(body.chars().count(), qr.size + 4);
        }
        // The top-left finder: padded rows 2 and 3 are line 1; its top edge is dark, the row
        // below only at the ends.
        let line1: Vec<char> = lines[1]["\x1b[30;47m".len()..].chars().collect();
        let edge: String = line1[2..9].iter().collect();
        assert_eq!(
            edge,
            "\u{2588}\u{2580}\u{2580}\u{2580}\u{2580}\u{2580}\u{2588}"
        );
    }
}
