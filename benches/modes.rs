//! Mode tracker throughput: it sees every output byte of every session. And the whole
//! per-read path of a session's output (tracker, checkpoints, ring), in PTY-sized reads.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keepty::sessions::checkpoint::Checkpoints;
use keepty::sessions::modes::ModeTracker;
use keepty::sessions::ring::Ring;

const SIZE: usize = 1 << 20;
/// A typical PTY read.
const CHUNK: usize = 16 * 1024;

/// `base64 /dev/urandom`: 76-column lines of plain text, no escapes at all.
fn plain_base64() -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(ALPHABET[(x & 63) as usize]);
        }
        out.push(b'\n');
    }
    out.truncate(SIZE);
    out
}

/// `ls --color` listings and vim-style redraws: a sequence every few bytes.
fn escape_heavy() -> Vec<u8> {
    let mut out = Vec::with_capacity(SIZE + 4096);
    let mut row = 0;
    while out.len() < SIZE {
        for name in [
            "src",
            "target",
            "Cargo.toml",
            "README.md",
            "build.sh",
            "link",
        ] {
            let color = match name {
                "src" | "target" => "01;34",
                "build.sh" => "01;32",
                "link" => "01;36",
                _ => "00",
            };
            out.extend_from_slice(format!("\x1b[0m\x1b[{color}m{name}\x1b[0m  ").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        row = row % 50 + 1;
        out.extend_from_slice(
            format!(
                "\x1b[?25l\x1b[{row};1H\x1b[38;5;130m{row:>3} \x1b[m\x1b[38;5;81mlet\x1b[m x = \
                 \x1b[38;5;208m42\x1b[m; \x1b[34m// note\x1b[m\x1b[K\x1b[51;1H\x1b[1m-- INSERT --\x1b[m\
                 \x1b]2;main.rs - VIM\x07\x1b[{row};9H\x1b[?25h"
            )
            .as_bytes(),
        );
    }
    out.truncate(SIZE);
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("modes");
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, input) in [
        ("plain_base64_1MiB", plain_base64()),
        ("escape_heavy_1MiB", escape_heavy()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = ModeTracker::new();
                for chunk in input.chunks(CHUNK) {
                    t.feed(black_box(chunk));
                }
                black_box(t.restore_sequence())
            })
        });
    }
    g.finish();

    // What `Session::read_output` does per PTY read (at most 4 KiB on Linux), without the
    // read itself: feed the tracker with checkpoints, store, then update the replay start.
    // `ring_copy` is the ring alone and `tracker` adds the tracker: the floors that
    // `tracker_checkpoints` is measured against.
    const READ: usize = 4096;
    let mut g = c.benchmark_group("read_path");
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, input) in [("plain", plain_base64()), ("escape_heavy", escape_heavy())] {
        for ring_size in [256 << 10, 4 << 10] {
            let id = format!("{name}_ring{}K", ring_size >> 10);
            g.bench_function(format!("ring_copy_{id}"), |b| {
                let mut ring = Ring::new(ring_size).expect("map the ring");
                b.iter(|| {
                    for read in input.chunks(READ) {
                        ring.push(black_box(read));
                    }
                    black_box(ring.end())
                })
            });
            g.bench_function(format!("tracker_{id}"), |b| {
                let mut ring = Ring::new(ring_size).expect("map the ring");
                let mut tracker = ModeTracker::new();
                b.iter(|| {
                    for read in input.chunks(READ) {
                        tracker.feed(black_box(read));
                        ring.push(read);
                    }
                    black_box(ring.end())
                })
            });
            g.bench_function(format!("tracker_checkpoints_{id}"), |b| {
                let mut ring = Ring::new(ring_size).expect("map the ring");
                let mut tracker = ModeTracker::new();
                let mut points = Checkpoints::new(ring_size);
                b.iter(|| {
                    for read in input.chunks(READ) {
                        points.feed(&mut tracker, black_box(read));
                        ring.push(read);
                        points.after_write(&mut ring, &tracker);
                    }
                    black_box(ring.clean_start())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
