//! The output path's memory work, each next to a plain `copy_from_slice` of the same bytes in
//! the same group, so the ratio to a bare memory copy reads straight off the report:
//! PTY bytes into the ring, reading the ring back from an offset, and building output frames.
use std::hint::black_box;
use std::io::IoSlice;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keepty::limits::MAX_HEADER;
use keepty::net::ws;
use keepty::sessions::ring::Ring;

const RING: usize = 256 << 10;
const MIB: usize = 1 << 20;

fn write(c: &mut Criterion) {
    let chunk = vec![b'x'; 4096];
    let big = vec![b'x'; 64 << 10];
    let mut g = c.benchmark_group("ring_write_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("baseline_copy_from_slice_4KiB", |b| {
        let mut buf = vec![0u8; RING];
        b.iter(|| {
            for i in 0..MIB / 4096 {
                let at = (i * 4096) % RING;
                buf[at..at + 4096].copy_from_slice(black_box(&chunk));
            }
            black_box(&buf);
        })
    });
    g.bench_function("push_4KiB", |b| {
        let mut r = Ring::new(RING).expect("map the ring");
        b.iter(|| {
            for _ in 0..MIB / 4096 {
                r.push(black_box(&chunk));
            }
        })
    });
    // What the server does: a PTY read lands in write_slot(), up to the slot's end.
    g.bench_function("write_slot_commit_64KiB", |b| {
        let mut r = Ring::new(RING).expect("map the ring");
        b.iter(|| {
            let mut left = MIB;
            while left > 0 {
                let slot = r.write_slot();
                let n = slot.len().min(big.len()).min(left);
                slot[..n].copy_from_slice(black_box(&big[..n]));
                r.commit(n);
                left -= n;
            }
        })
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut r = Ring::new(RING).expect("map the ring");
    // Wrapped, so some reads come back as two slices.
    r.push(&vec![b'y'; RING + 3000]);
    let mut g = c.benchmark_group("ring_read_1MiB_from_offsets");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("baseline_copy_from_slice_16KiB", |b| {
        let src = vec![b'y'; RING];
        let mut out = vec![0u8; 16 << 10];
        b.iter(|| {
            for i in 0..MIB / (16 << 10) {
                let at = (i % 15) * (16 << 10);
                out.copy_from_slice(black_box(&src[at..at + (16 << 10)]));
            }
            black_box(&out);
        })
    });
    g.bench_function("copy_at_16KiB", |b| {
        let mut out = Vec::with_capacity(16 << 10);
        b.iter(|| {
            for i in 0..(MIB / (16 << 10)) as u64 {
                let off = r.start() + (i % 16) * (16 << 10);
                black_box(r.copy_at(off, 16 << 10, &mut out));
            }
        })
    });
    g.finish();
}

/// One output frame as the server builds it: header plus the ring's slices, ready for one
/// `writev`; no bytes are copied, so this is per-frame overhead, not per-byte work. Beside
/// it, the copying design it replaced: the payload joined into a buffer behind a header.
fn frames(c: &mut Criterion) {
    let mut r = Ring::new(RING).expect("map the ring");
    r.push(&vec![b'z'; RING + 3000]);
    let mut g = c.benchmark_group("output_frame_64KiB");
    g.throughput(Throughput::Bytes(64 << 10));
    g.bench_function("header_and_ring_slices", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % 3;
            let off = r.start() + i * (64 << 10) + 1000;
            let (a, bb) = r.read_at(off).unwrap();
            let a = &a[..a.len().min(64 << 10)];
            let bb = &bb[..bb.len().min((64 << 10) - a.len())];
            let mut header = [0u8; MAX_HEADER];
            let n = ws::frame_header(a.len() + bb.len(), &mut header);
            let parts = [
                IoSlice::new(&header[..n]),
                IoSlice::new(a),
                IoSlice::new(bb),
            ];
            black_box(&parts);
        })
    });
    g.bench_function("copied_into_a_frame_buffer", |b| {
        let mut out: Vec<u8> = Vec::with_capacity(MAX_HEADER + (64 << 10));
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % 3;
            let off = r.start() + i * (64 << 10) + 1000;
            let (a, bb) = r.read_at(off).unwrap();
            let a = &a[..a.len().min(64 << 10)];
            let bb = &bb[..bb.len().min((64 << 10) - a.len())];
            let mut header = [0u8; MAX_HEADER];
            let n = ws::frame_header(a.len() + bb.len(), &mut header);
            out.clear();
            out.extend_from_slice(&header[..n]);
            out.extend_from_slice(a);
            out.extend_from_slice(bb);
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, write, read, frames);
criterion_main!(benches);
