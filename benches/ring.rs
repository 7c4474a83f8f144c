//! The output path's copies: PTY bytes into the ring, ring into 16 KiB frames.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keepty::ring::Ring;

fn ring(c: &mut Criterion) {
    let chunk = vec![b'x'; 4096];
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("push_1MiB_in_4KiB", |b| {
        let mut r = Ring::new(256 << 10);
        b.iter(|| {
            for _ in 0..256 {
                r.push(black_box(&chunk));
            }
        })
    });
    g.bench_function("frame_1MiB_in_16KiB", |b| {
        let mut r = Ring::new(256 << 10);
        r.push(&vec![b'y'; 256 << 10]);
        let mut out = Vec::with_capacity(16 << 10);
        b.iter(|| {
            for i in 0..64u64 {
                let off = r.start() + (i % 16) * (16 << 10);
                black_box(r.copy_at(off, 16 << 10, &mut out));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
