//! A request head arriving in pieces must parse exactly as it does whole: the connection
//! re-parses its growing buffer after every read, so a split point must never change the
//! answer (nor may an incomplete prefix be taken for a complete or broken head too early).
#![no_main]
use keepty::net::http::parse_head;
use libfuzzer_sys::fuzz_target;

fn outcome(buf: &[u8]) -> String {
    match parse_head(buf) {
        Ok(Some((req, n))) => format!("ok {n} {req:?}"),
        Ok(None) => "partial".to_string(),
        Err(e) => format!("err {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the split points; the rest is the stream.
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let stream = &stream[..stream.len().min(keepty::limits::MAX_HEAD + 64)];
    let whole = outcome(stream);
    let cuts = [
        usize::from(a) * stream.len() / 256,
        usize::from(b) * stream.len() / 256,
    ];
    let (lo, hi) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
    // What the connection sees: the buffer after each read. Once a prefix gives a final
    // answer (a head or an error), it is what the whole stream must give.
    for end in [lo, hi, stream.len()] {
        let got = outcome(&stream[..end]);
        if got != "partial" {
            assert_eq!(got, whole, "the head parsed differently when cut at {end}");
            return;
        }
    }
    assert_eq!(whole, "partial");
});
