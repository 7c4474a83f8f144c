//! Timer wheel: filling it with 100k timers and draining them, and the steady state of an
//! event loop that re-arms what fires every tick.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keepty::timer::Wheel;

const TICK: Duration = Duration::from_millis(100);

/// A fixed xorshift stream, so every run arms the same deadlines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 100k deadlines spread over `spread`, drained by polls `step` apart.
fn fill_and_drain_case(c: &mut Criterion, name: &str, spread: Duration, step: Duration) {
    const N: usize = 100_000;
    let t0 = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let spread_ms = spread.as_millis() as u64;
    let deadlines: Vec<Instant> = (0..N)
        .map(|_| t0 + Duration::from_millis(rng.below(spread_ms)))
        .collect();

    let mut g = c.benchmark_group("wheel");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(format!("insert_100k_{name}"), |b| {
        b.iter_batched(
            || Wheel::new(TICK, t0),
            |mut w| {
                for (i, &d) in deadlines.iter().enumerate() {
                    w.insert(d, i);
                }
                w
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("insert_100k_{name}_then_poll_through"), |b| {
        let mut fired = Vec::with_capacity(N);
        b.iter(|| {
            let mut w = Wheel::new(TICK, t0);
            for (i, &d) in deadlines.iter().enumerate() {
                w.insert(d, i);
            }
            let mut now = t0;
            while !w.is_empty() {
                now += step;
                fired.clear();
                w.poll(now, &mut fired);
                black_box(&fired);
            }
            black_box(w.next_deadline())
        })
    });
    g.finish();
}

fn fill_and_drain(c: &mut Criterion) {
    // Within one lap (102.4 s at a 100 ms tick), polled every tick: each entry is looked at
    // once, when it fires.
    fill_and_drain_case(c, "over_60s", Duration::from_secs(60), TICK);
    // Over two hours, polled every second: most entries are many laps away, as TTLs are, and
    // are looked at once per lap until they fire.
    fill_and_drain_case(
        c,
        "over_2h",
        Duration::from_secs(2 * 3600),
        Duration::from_secs(1),
    );
}

fn steady_state(c: &mut Criterion) {
    // 10k timers re-armed 0..60 s ahead as they fire, polled every tick: about 17 fire per
    // poll, the rest wait.
    const PENDING: usize = 10_000;
    let t0 = Instant::now();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut w = Wheel::new(TICK, t0);
    for i in 0..PENDING {
        w.insert(t0 + Duration::from_millis(rng.below(60_000)), i);
    }
    let mut now = t0;
    let mut fired = Vec::new();
    let mut g = c.benchmark_group("wheel");
    g.throughput(Throughput::Elements(1));
    g.bench_function("steady_10k_poll_tick_rearm", |b| {
        b.iter(|| {
            now += TICK;
            fired.clear();
            w.poll(now, &mut fired);
            for &v in &fired {
                w.insert(now + Duration::from_millis(rng.below(60_000)), v);
            }
            black_box(w.next_deadline())
        })
    });
    g.finish();
}

criterion_group!(benches, fill_and_drain, steady_state);
criterion_main!(benches);
