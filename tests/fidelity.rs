//! Replay fidelity: a client that cannot start at its own `since` gets a replay that starts at
//! a clean boundary (never inside an escape sequence or a UTF-8 character), a `restore` for the
//! modes in force where the replay starts, and a repaint from the program; the session list
//! shows the window title and whether the alternate screen is on.

mod common;

use std::time::Duration;

use common::auth::TempDir;
use common::support::u;
use common::ws::{self, Msg, WAIT};
use common::{Server, http, spawn_server};
use keepty::sessions::modes::ModeTracker;

/// The ring in these tests: small, so that little output overwrites it.
const RING: usize = 4096;

/// Starts a server with a 4 KiB ring running `script` under `/bin/sh -c`.
fn server(script: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--scrollback", "4K"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", common::sh(), "-c", script]);
    spawn_server(&args)
}

/// Creates session `id` and leaves at once, so that what follows is output nobody watches.
fn create_and_leave(srv: &Server, id: &str) {
    let mut c = ws::connect(srv.port, &format!("session={id}&new=1&cols=80&rows=24"));
    let att = c.expect_attached();
    assert_eq!(att["created"], true, "{att}");
    c.abort();
}

/// Waits until session `id` has produced `total` bytes and has no client.
fn wait_total(srv: &Server, id: &str, total: usize) {
    srv.wait_session(id, WAIT * 2, "all output to be produced", |r| {
        r["bytes_total"].as_u64() == Some(total as u64) && r["clients"] == 0
    });
}

/// True if a terminal that read `stream[..at]` is in ground and not inside a character.
fn clean_at(stream: &[u8], at: usize) -> bool {
    let mut t = ModeTracker::new();
    t.feed(&stream[..at]);
    t.is_clean() || (t.clean_point().0 == at as u64 && stream[at] & 0xc0 != 0x80)
}

/// The ring's start falls inside a long escape sequence that is followed by plain text to the
/// end: a fresh client's replay starts right after that sequence (offset and lost say so to
/// the byte), its `restore` carries the modes set long before (alternate screen, hidden
/// cursor, bracketed paste, title), and the program repaints for it without any input, even
/// though the size it asks for is the one the program already set itself (so the kernel sends
/// no SIGWINCH of its own).
#[test]
fn fresh_attach_starts_after_a_cut_sequence_with_modes_and_repaint() {
    let dir = TempDir::new("cut");
    let modes = b"\x1b[?1049h\x1b[?25l\x1b[?2004h\x1b]2;fidelity title\x07";
    // One SGR with 250 parameters: 503 bytes, long enough for the ring's start to fall in.
    let mut seq = b"\x1b[".to_vec();
    for _ in 0..250 {
        seq.extend_from_slice(b"0;");
    }
    seq.push(b'm');
    let mut text = Vec::new();
    let mut line = 0;
    while text.len() < RING - 200 {
        text.extend_from_slice(format!("plain line {line:05} of the tail\n").as_bytes());
        line += 1;
    }
    text.truncate(RING - 200);
    let script = format!(
        "stty -opost cols 100 rows 30; trap 'n=$((n+1)); printf \"REPAINT %d\\n\" $n' WINCH; \
         cat {}; sleep 1; cat {} {}; while :; do sleep 0.1; done",
        dir.shell_file("modes", modes),
        dir.shell_file("seq", &seq),
        dir.shell_file("text", &text)
    );
    let srv = server(&script, &[]);
    create_and_leave(&srv, "cut");
    let total = modes.len() + seq.len() + text.len();
    wait_total(&srv, "cut", total);
    let start = total - RING;
    let seq_end = modes.len() + seq.len();
    assert!(
        start > modes.len() && start < seq_end,
        "the ring's start falls inside the sequence"
    );

    let mut c = ws::connect(srv.port, "session=cut&cols=100&rows=30");
    let att = c.expect_attached();
    assert_eq!(att["created"], false, "{att}");
    assert_eq!(att["role"], "writer", "{att}");
    assert_eq!(
        u(&att["offset"]),
        seq_end as u64,
        "the replay starts right after the cut sequence, not at the ring's start {start}: {att}"
    );
    assert_eq!(u(&att["lost"]), seq_end as u64, "every skipped byte: {att}");
    let restore = att["restore"].as_str().expect("restore");
    for want in [
        "\x1b[?1049h",
        "\x1b[?25l",
        "\x1b[?2004h",
        "\x1b]2;fidelity title\x07",
    ] {
        assert!(restore.contains(want), "restore {restore:?} lacks {want:?}");
    }
    assert!(
        restore.starts_with("\x1b[?1049h"),
        "alternate screen first: {restore:?}"
    );

    let got = c.read_output_at_least(text.len(), WAIT);
    assert_eq!(
        &got[..text.len()],
        &text[..],
        "the replay is the tail, exactly"
    );
    // Nothing was typed: the repaint comes from the SIGWINCH the attach sent.
    let mut after = got[text.len()..].to_vec();
    if ws::find(&after, b"REPAINT 1\n").is_none() {
        after.extend(c.read_output_until(b"REPAINT 1\n", WAIT));
    }
    assert_eq!(
        after, b"REPAINT 1\n",
        "one repaint for the attach, nothing else"
    );
    c.close();
}

/// The ring's start falls inside a UTF-8 character: the replay starts at the next one.
#[test]
fn fresh_attach_never_starts_inside_a_character() {
    let dir = TempDir::new("utf8");
    let head = b"\x1b[1mhead\x1b[0m";
    let text = "€".repeat(2000).into_bytes();
    let script = format!(
        "stty -opost; sleep 1; cat {} {}; exec sleep 60",
        dir.shell_file("head", head),
        dir.shell_file("text", &text)
    );
    let srv = server(&script, &[]);
    create_and_leave(&srv, "utf8");
    let total = head.len() + text.len();
    wait_total(&srv, "utf8", total);
    let start = total - RING;
    let into = (start - head.len()) % 3;
    assert_ne!(into, 0, "the ring's start falls inside a character");

    let mut c = ws::connect(srv.port, "session=utf8");
    let att = c.expect_attached();
    let want = start + (3 - into);
    assert_eq!(u(&att["offset"]), want as u64, "ring start {start}: {att}");
    assert_eq!(u(&att["lost"]), want as u64, "{att}");
    assert_eq!(att["restore"], "", "no modes are on: {att}");
    let got = c.read_output_at_least(total - want, WAIT);
    assert!(
        std::str::from_utf8(&got).is_ok(),
        "the replay is whole characters"
    );
    assert_eq!(got.len(), total - want);
    c.close();
}

/// The ring holds a program leaving the alternate screen: `restore` describes the modes where
/// the replay starts (still on the alternate screen, cursor hidden), not the ones at the end,
/// and the replay itself then leaves the alternate screen. The title is the current one.
#[test]
fn restore_reflects_the_modes_where_the_replay_starts() {
    let dir = TempDir::new("leave");
    let mut stream = b"\x1b[?1049h\x1b[?25l\x1b]2;vim-ish\x07".to_vec();
    let mut screen = Vec::new();
    for row in 0..200 {
        screen.extend_from_slice(
            format!(
                "\x1b[{};1H\x1b[38;5;130m{row:>4}\x1b[m some text \x1b[K",
                row % 24 + 1
            )
            .as_bytes(),
        );
    }
    let leave = b"\x1b[?25h\x1b[?1049l\x1b]2;shell\x07";
    let tail = b"$ back on the main screen\n".repeat(20);
    let script = format!(
        "stty -opost; sleep 1; cat {} {} {} {}; exec sleep 60",
        dir.shell_file("enter", &stream),
        dir.shell_file("screen", &screen),
        dir.shell_file("leave", leave),
        dir.shell_file("tail", &tail)
    );
    stream.extend_from_slice(&screen);
    let leave_at = stream.len();
    stream.extend_from_slice(leave);
    stream.extend_from_slice(&tail);
    let total = stream.len();
    assert!(total - RING > 40 && total - RING < leave_at - 1000);

    let srv = server(&script, &[]);
    create_and_leave(&srv, "leave");
    wait_total(&srv, "leave", total);

    let mut c = ws::connect(srv.port, "session=leave");
    let att = c.expect_attached();
    let offset = u(&att["offset"]) as usize;
    assert!(
        offset >= total - RING && offset < leave_at,
        "the replay starts in the ring, before the program leaves: {att}"
    );
    assert!(clean_at(&stream, offset), "offset {offset} is not clean");
    assert_eq!(u(&att["lost"]), offset as u64, "{att}");
    assert_eq!(
        att["restore"], "\x1b[?1049h\x1b[?25l\x1b]2;shell\x07",
        "modes at the replay start, the current title: {att}"
    );
    let got = c.read_output_at_least(total - offset, WAIT);
    assert_eq!(got, &stream[offset..], "the replay");
    assert!(ws::find(&got, b"\x1b[?1049l").is_some());
    c.close();
}

/// A viewer the ring overtakes jumps to a clean boundary: every `gap` offset is the start of
/// an escape sequence or of plain text, the bytes from there on are the true ones, and `lost`
/// counts exactly what was skipped. The output is nearly all escape sequences, so the ring's
/// raw start is almost never such a place.
#[test]
fn lagging_viewer_gap_lands_on_a_clean_boundary() {
    let dir = TempDir::new("gap");
    let mut stream = Vec::new();
    let mut i = 0;
    while stream.len() < 2 << 20 {
        stream.extend_from_slice(b"\x1b[");
        for _ in 0..40 {
            stream.extend_from_slice(b"1;");
        }
        stream.extend_from_slice(format!("{}m\u{20ac}\n", i % 50).as_bytes());
        i += 1;
    }
    let script = format!(
        "stty -opost; printf start; sleep 1; cat {}; exec sleep 60",
        dir.shell_file("out", &stream)
    );
    stream.splice(0..0, b"start".iter().copied());
    let srv = spawn_server(&[
        "--attach-policy",
        "multi",
        "--scrollback",
        "64K",
        "--",
        common::sh(),
        "-c",
        &script,
    ]);
    let mut writer = ws::connect(srv.port, "session=gap&new=1&flow=1");
    writer.expect_attached();
    writer.read_output_until(b"start", WAIT);
    let mut viewer = ws::connect(srv.port, "session=gap&since=0&flow=1");
    viewer.auto_ack = false;
    assert_eq!(viewer.expect_attached()["role"], "viewer");
    let all = writer.read_output_at_least(stream.len() - 5, WAIT * 3);
    assert_eq!(all.len(), stream.len() - 5);

    viewer.auto_ack = true;
    let mut pos = 0usize;
    let mut gaps = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while pos < stream.len() && std::time::Instant::now() < deadline {
        match viewer.next_msg(Duration::from_millis(500)) {
            Some(Msg::Binary(b)) => {
                assert!(b[..] == stream[pos..pos + b.len()], "bytes at {pos}");
                pos += b.len();
            }
            Some(Msg::Text(v)) if v["type"] == "gap" => {
                let offset = u(&v["offset"]) as usize;
                assert_eq!((offset - pos) as u64, u(&v["lost"]), "{v}");
                assert!(
                    clean_at(&stream, offset),
                    "gap to {offset} is not clean: {v}"
                );
                pos = offset;
                gaps += 1;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    assert_eq!(pos, stream.len(), "the viewer reached the end");
    assert!(gaps > 0, "the ring overtook the viewer");
    writer.close();
    viewer.close();
}

/// The session list (`/admin/sessions`, its text table, and `/api/sessions`) shows the window
/// title, without its control characters, and whether the alternate screen is on; both follow
/// the program.
#[test]
fn session_records_show_title_and_alt_screen() {
    let dir = TempDir::new("record");
    let script = format!(
        "stty -opost -echo; cat {}; read x; cat {}; exec sleep 60",
        dir.shell_file("a", b"\x1b[?1049h\x1b]0;rec\xc2\x9b \xff title\x07ready\n"),
        dir.shell_file("b", b"\x1b[?1049l\x1b]2;after\x07done\n")
    );
    let srv = spawn_server(&["--", common::sh(), "-c", &script]);
    let addr = srv.addr();
    let mut c = ws::connect(srv.port, "session=rec&new=1&cols=80&rows=24");
    c.expect_attached();
    c.read_output_until(b"ready\n", WAIT);

    let check = |title: &str, alt: bool| {
        let rec = srv.session_record("rec").expect("listed");
        assert_eq!(rec["title"], title, "{rec}");
        assert_eq!(rec["alt_screen"], alt, "{rec}");
        let api = http::get(&addr, "/api/sessions").json();
        let mine = &api["sessions"][0];
        assert_eq!(mine["id"], "rec", "{api}");
        assert_eq!(mine["title"], title, "{api}");
        assert_eq!(mine["alt_screen"], alt, "{api}");
        let text = http::get(&addr, "/admin/sessions?format=text").text();
        let row = text
            .lines()
            .find(|l| l.contains(" rec "))
            .unwrap_or_else(|| panic!("no row in {text}"));
        assert!(row.ends_with(title), "{row:?}");
        assert_eq!(row.contains("80x24*"), alt, "{row:?}");
    };
    check("rec \u{fffd} title", true);

    c.send_input(b"go\n");
    c.read_output_until(b"done\n", WAIT);
    check("after", false);
    c.close();
}
