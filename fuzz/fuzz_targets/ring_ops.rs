//! Random pushes and reads against a model that keeps the last `capacity` bytes.
#![no_main]
use keepty::sessions::ring::Ring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, mut rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(cap % 64) + 1;
    let Ok(mut ring) = Ring::new(cap) else {
        return;
    };
    let mut model: Vec<u8> = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        let n = usize::from(op & 0x7f).min(tail.len());
        if op & 0x80 == 0 {
            ring.push(&tail[..n]);
            model.extend_from_slice(&tail[..n]);
        } else {
            let off = (n as u64).min(ring.end());
            let off = ring.end() - off;
            let held = ring.read_at(off).map(|(a, b)| [a, b].concat());
            let start = model.len().saturating_sub(cap) as u64;
            let expect = (off >= start).then(|| model[off as usize..].to_vec());
            assert_eq!(held, expect);
        }
        rest = &tail[n..];
        assert_eq!(ring.end(), model.len() as u64);
    }
});
