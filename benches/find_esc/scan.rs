//! The plain-text scan of src/sessions/modes.rs (find_esc) in three forms, for callgrind:
//! rustc -C opt-level=3 -g benches/find_esc/scan.rs -o target/scan && for w in old new mask; do
//! valgrind --tool=callgrind --callgrind-out-file=target/cg.$w --toggle-collect="scan::find_$w" target/scan $w; done
//! (old: ESC only; new: ESC or BEL with two compares; mask: ESC or BEL with one OR and one compare, the one in use).

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
#[inline(never)]
fn find_old(hay: &[u8]) -> Option<usize> {
    const BLOCK: usize = 16;
    let mut blocks = hay.chunks_exact(BLOCK);
    let mut base = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |seen, &b| seen | (b == ESC)) {
            return block.iter().position(|&b| b == ESC).map(|p| base + p);
        }
        base += BLOCK;
    }
    blocks.remainder().iter().position(|&b| b == ESC).map(|p| base + p)
}
#[inline(never)]
fn find_new(hay: &[u8]) -> Option<usize> {
    const BLOCK: usize = 16;
    let mut blocks = hay.chunks_exact(BLOCK);
    let mut base = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |seen, &b| seen | (b == ESC) | (b == BEL)) {
            return block.iter().position(|&b| b == ESC || b == BEL).map(|p| base + p);
        }
        base += BLOCK;
    }
    blocks.remainder().iter().position(|&b| b == ESC || b == BEL).map(|p| base + p)
}
#[inline(never)]
fn find_mask(hay: &[u8]) -> Option<usize> {
    const BLOCK: usize = 16;
    // ESC (0x1b) and BEL (0x07) are the bytes b with b | 0x1c == 0x1f, with six other C0
    // controls, rare in text: one compare per byte finds a block worth a closer look.
    let maybe = |b: u8| b | 0x1c == 0x1f;
    let exact = |b: &u8| *b == ESC || *b == BEL;
    let mut blocks = hay.chunks_exact(BLOCK);
    let mut base = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |seen, &b| seen | maybe(b)) {
            if let Some(p) = block.iter().position(exact) {
                return Some(base + p);
            }
        }
        base += BLOCK;
    }
    blocks.remainder().iter().position(exact).map(|p| base + p)
}
fn main() {
    let which = std::env::args().nth(1).unwrap();
    // 16 MiB of base64-like text with a newline every 76 bytes, no ESC.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v = Vec::with_capacity(16 << 20);
    let mut x: u32 = 1;
    while v.len() < 16 << 20 {
        for _ in 0..76 { x = x.wrapping_mul(1103515245).wrapping_add(12345); v.push(alphabet[(x >> 16) as usize % 64]); }
        v.push(b'\n');
    }
    let f = match which.as_str() { "old" => find_old, "mask" => find_mask, _ => find_new };
    let mut hits = 0usize;
    for _ in 0..4 { if let Some(p) = f(std::hint::black_box(&v)) { hits += p; } }
    println!("{hits}");
}
