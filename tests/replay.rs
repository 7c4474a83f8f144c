//! Output replay across reconnects: exactly once after a reload, byte-exact through many
//! abrupt disconnects in block mode, `lost` accounting in drop-oldest mode, and a slow
//! writer throttling the PTY.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::auth::TempDir;
use common::spawn_server;
use common::support::u;
use common::ws::{self, Msg, WAIT};

/// A small deterministic generator, so a failure can be reproduced byte for byte.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `size` bytes of numbered pseudo-random text lines (so a mismatch is easy to place)
/// to `dir/name`; returns the path and the bytes.
fn make_file(dir: &Path, name: &str, size: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = Rng(seed | 1);
    let mut data = Vec::with_capacity(size + 80);
    let mut line = 0u64;
    while data.len() < size {
        data.extend_from_slice(format!("{line:08} ").as_bytes());
        for _ in 0..70 {
            data.push(ALPHABET[rng.below(64) as usize]);
        }
        data.push(b'\n');
        line += 1;
    }
    data.truncate(size);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Where two byte strings first differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let ctx = |s: &[u8]| {
        String::from_utf8_lossy(&s[i.saturating_sub(40)..(i + 40).min(s.len())]).into_owned()
    };
    format!(
        "lengths {} vs {}, first difference at byte {i}: {:?} vs {:?}",
        a.len(),
        b.len(),
        ctx(a),
        ctx(b)
    )
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert!(got == want, "{what}: {}", first_difference(got, want));
}

#[test]
fn reload_replays_missed_output_exactly_once() {
    let srv = spawn_server(&["--", common::sh()]);
    let mut a = ws::connect(srv.port, "new=1&cols=80&rows=24");
    let att = a.expect_attached();
    let id = ws::session_id(&att);
    let mut seen = Vec::new();
    a.send_input(b"export V=xyz\n");
    a.send_input(b"echo ready-$((1+1))\n");
    seen.extend(a.read_output_until(b"ready-2", WAIT));
    let pid = srv.session_record(&id).expect("listed")["pid"].clone();

    // Its output arrives while nobody is attached.
    a.send_input(b"sleep 1; echo later-$((1+1))\n");
    seen.extend(a.read_output_until(b"echo later-$((1+1))", WAIT));
    let since = a.offset;
    assert_eq!(since, seen.len() as u64);
    a.abort();
    srv.wait_session(&id, WAIT, "the server to notice the disconnect", |r| {
        r["clients"] == 0
    });
    std::thread::sleep(Duration::from_millis(1500));

    let mut b = ws::connect(srv.port, &format!("session={id}&since={since}"));
    let att = b.expect_attached();
    assert_eq!(att["created"], false, "{att}");
    assert_eq!(u(&att["offset"]), since, "{att}");
    assert_eq!(att["lost"], 0, "{att}");
    let mut after = b.read_output_until(b"later-2", WAIT);
    b.send_input(b"echo \"[$V]\"\n");
    after.extend(b.read_output_until(b"[xyz]", WAIT));
    assert_eq!(b.offset, since + after.len() as u64);

    let rec = srv.session_record(&id).unwrap();
    assert_eq!(
        rec["pid"], pid,
        "a different process after reconnect: {rec}"
    );
    assert_eq!(
        srv.admin_sessions()["sessions"].as_array().unwrap().len(),
        1
    );

    // A third client replaying from 0 sees what a continuous observer would have seen.
    let mut all = seen.clone();
    all.extend_from_slice(&after);
    let mut c = ws::connect(srv.port, &format!("session={id}&since=0"));
    let att = c.expect_attached();
    assert_eq!((u(&att["offset"]), u(&att["lost"])), (0, 0), "{att}");
    let full = c.read_output_at_least(all.len(), WAIT);
    assert_same(
        &full[..all.len()],
        &all,
        "replay from 0 vs what the two clients saw",
    );
    let texts = b.expect_close(4410);
    assert!(texts.iter().any(|v| v["type"] == "taken_over"), "{texts:?}");
    c.close();
}

#[test]
fn long_output_survives_many_abrupt_disconnects_in_block_mode() {
    let dir = TempDir::new("block");
    let (path, data) = make_file(&dir.0, "data.txt", 6 << 20, 0x6b65_6570);
    // -opost keeps the terminal from turning \n into \r\n, so output equals the file.
    let cmd = format!("stty -opost; exec cat '{}'", path.display());
    let srv = spawn_server(&[
        "--detached-output",
        "block",
        "--scrollback",
        "64K",
        "--",
        common::sh(),
        "-c",
        &cmd,
    ]);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut got: Vec<u8> = Vec::with_capacity(data.len());
    let mut disconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = false;
    for round in 0..200 {
        assert!(
            Instant::now() < deadline,
            "gave up after {disconnects} disconnects, {} bytes",
            got.len()
        );
        let q = if round == 0 {
            "session=long&new=1&flow=1".to_string()
        } else {
            format!("session=long&since={}&flow=1", got.len())
        };
        let mut c = ws::connect(srv.port, &q);
        let att = c.expect_attached();
        assert_eq!(u(&att["offset"]), got.len() as u64, "round {round}: {att}");
        assert_eq!(
            att["lost"], 0,
            "round {round}: nothing may be lost in block mode: {att}"
        );
        // Random cut points, some tiny, some past a whole ring's worth.
        let budget = if disconnects >= 24 {
            usize::MAX
        } else if rng.below(4) == 0 {
            1 + rng.below(2000) as usize
        } else {
            1 + rng.below(300_000) as usize
        };
        let mut this = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: still reading at the deadline"
            );
            match c.next_msg(WAIT) {
                Some(Msg::Binary(b)) => {
                    got.extend_from_slice(&b);
                    this += b.len();
                    if this >= budget {
                        break;
                    }
                }
                Some(Msg::Text(v)) if v["type"] == "exited" => {
                    assert_eq!(v["code"], 0, "{v}");
                    let (rest, texts, code) = c.read_to_close(WAIT);
                    assert!(rest.is_empty(), "output after exited");
                    assert_eq!(code, Some(1000), "close after exited; {texts:?}");
                    exited = true;
                    break;
                }
                Some(Msg::Text(v)) => panic!("round {round}: unexpected message {v}"),
                other => panic!("round {round}: after {} bytes: {other:?}", got.len()),
            }
        }
        if exited {
            break;
        }
        c.abort();
        disconnects += 1;
        if disconnects == 5 {
            // Detached and blocked: the ring fills and the program waits; nothing unacked
            // is overwritten, so the end stays within one ring of what we have.
            srv.wait_session("long", WAIT, "the server to notice the disconnect", |r| {
                r["clients"] == 0
            });
            std::thread::sleep(Duration::from_millis(300));
            let rec = srv.session_record("long").unwrap();
            let total = u(&rec["bytes_total"]);
            assert!(
                total <= got.len() as u64 + 65536,
                "detached block mode ran ahead: bytes_total {total}, client has {}: {rec}",
                got.len()
            );
        } else if rng.below(3) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(50)));
        }
    }
    assert!(exited, "the program never exited");
    assert!(disconnects >= 20, "only {disconnects} disconnects");
    assert_same(&got, &data, "output through disconnects vs the file");
}

#[test]
fn drop_oldest_reports_lost_bytes() {
    let dir = TempDir::new("lost");
    let (path, data) = make_file(&dir.0, "data.txt", 1 << 20, 0x4c4f_5354);
    // The delay lets the client leave before the output starts.
    let cmd = format!(
        "stty -opost; printf start; sleep 2; cat '{}'; exec sleep 60",
        path.display()
    );
    let srv = spawn_server(&["--scrollback", "64K", "--", common::sh(), "-c", &cmd]);
    let mut a = ws::connect(srv.port, "session=lost&new=1");
    a.expect_attached();
    let mut stream = a.read_output_until(b"start", WAIT);
    assert_eq!(stream, b"start", "unexpected output before the file");
    let since = a.offset;
    a.abort();

    stream.extend_from_slice(&data);
    let total = stream.len() as u64;
    let rec = srv.wait_session(
        "lost",
        Duration::from_secs(30),
        "all output to be produced",
        |r| r["bytes_total"].as_u64() == Some(total),
    );
    assert_eq!(rec["clients"], 0, "{rec}");
    assert_eq!(u(&rec["bytes_buffered"]), 65536, "{rec}");

    let mut b = ws::connect(srv.port, &format!("session=lost&since={since}"));
    let att = b.expect_attached();
    let offset = u(&att["offset"]);
    assert_eq!(
        offset,
        total - 65536,
        "replay starts at the oldest byte held: {att}"
    );
    assert_eq!(u(&att["lost"]), offset - since, "{att}");
    // `end` is the ring's end at attach time (an extension of SPEC's message).
    assert_eq!(att["end"].as_u64(), Some(total), "{att}");
    assert!(
        att["restore"].is_string(),
        "a replay with a gap carries restore: {att}"
    );
    let tail = b.read_output_at_least(65536, WAIT);
    assert_same(
        &tail,
        &stream[offset as usize..],
        "replayed tail vs the file's tail",
    );
    match b.next_msg(Duration::from_millis(300)) {
        None => {}
        Some(m) => panic!("nothing should follow the replay, got {m:?}"),
    }
    b.close();
    assert!(
        att["restore"].is_string(),
        "a replay with a gap carries restore: {att}"
    );
}

#[test]
fn slow_writer_throttles_the_pty() {
    let dir = TempDir::new("slow");
    let size = 32 << 20;
    let (path, data) = make_file(&dir.0, "data.txt", size, 0x534c_4f57);
    let cmd = format!("stty -opost; exec cat '{}'", path.display());
    let srv = spawn_server(&["--scrollback", "64K", "--", common::sh(), "-c", &cmd]);
    let mut c = ws::connect(srv.port, "session=slow&new=1");
    let att = c.expect_attached();
    assert_eq!((u(&att["offset"]), u(&att["lost"])), (0, 0), "{att}");

    // Read nothing and wait until the output stops growing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    let mut stable = 0;
    let stalled = loop {
        assert!(
            Instant::now() < deadline,
            "output never stalled (last bytes_total {last})"
        );
        std::thread::sleep(Duration::from_millis(300));
        let rec = srv.session_record("slow").unwrap();
        let total = u(&rec["bytes_total"]);
        stable = if total == last { stable + 1 } else { 0 };
        last = total;
        if stable == 3 {
            break total;
        }
    };
    // What may be in flight: the 64 KiB ring plus the socket buffers on both ends (the
    // sender's is at most tcp_wmem's 4 MiB here; the receiver's stays small because this
    // client never read) plus the server's own write buffer.
    assert!(
        stalled < 12 << 20,
        "a writer that reads nothing let the PTY produce {stalled} of {size} bytes"
    );
    let rec = srv.session_record("slow").unwrap();
    assert_eq!(rec["clients"], 1, "{rec}");
    assert_eq!(rec["state"], "running", "{rec}");

    let (out, texts, code) = c.read_to_close(Duration::from_secs(90));
    assert_same(&out, &data, "what the slow client got vs the file");
    assert!(
        texts
            .iter()
            .any(|v| v["type"] == "exited" && v["code"] == 0),
        "no exited(0): {texts:?}"
    );
    assert!(
        !texts.iter().any(|v| v["type"] == "gap"),
        "the writer skipped output: {texts:?}"
    );
    assert_eq!(code, Some(1000));
}
