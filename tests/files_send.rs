//! `keepty send FILE` inside a real session (issue 19): the offer reaches the attached client
//! as `{"type":"offer","path","size"}`; made while nobody is attached, it goes once to the
//! next client to attach; a replay of the ring (since=0) never offers again; mistakes exit
//! non-zero with a line that says why.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::auth::TempDir;
use common::ws::{self, Msg, WAIT};
use serde_json::Value;

fn offers(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|v| v["type"] == "offer").collect()
}

/// A session of `sh` attached as a writer, its prompt read.
fn shell(srv: &common::Server, name: &str) -> ws::Ws {
    let mut c = ws::connect(srv.port, &format!("session={name}&new=1&flow=1"));
    c.expect_attached();
    c.send_input(b"echo up-$((6*7))\n");
    c.read_output_until(b"up-42", WAIT);
    c
}

/// The canonical path of `p`, as `keepty send` names it.
fn canon(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_offer_reaches_the_attached_client_once() {
    let dir = TempDir::new("send-live");
    let file = dir.path("report 1.txt");
    std::fs::write(&file, vec![b'x'; 3000]).unwrap();
    let srv = common::spawn_server(&["--", common::sh()]);
    let mut c = shell(&srv, "send-live");
    let bin = common::keepty_words();
    c.send_input(
        format!(
            "cd '{}' && {bin} send 'report 1.txt'; echo rc-$?-$((6*7))\n",
            dir.0.display()
        )
        .as_bytes(),
    );
    let out = c.read_output_until(b"rc-0-42", WAIT);
    let text = String::from_utf8_lossy(&out);
    let path = canon(&file);
    assert!(
        text.contains(&format!(
            "the page will offer {path} (2.9 KiB) for download"
        )),
        "the line it prints: {text:?}"
    );
    assert!(
        !text.contains("KEEPTY_SESSION is not set"),
        "sessions have KEEPTY_SESSION"
    );
    // The offer message may come with the output or just before it; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while offers(&c.events).is_empty() && Instant::now() < deadline {
        if let Some(Msg::Text(v)) = c.next_msg(Duration::from_millis(100)) {
            c.events.push(v);
        }
    }
    let got = offers(&c.events);
    assert_eq!(got.len(), 1, "one offer: {:?}", c.events);
    assert_eq!(got[0]["path"], path.as_str());
    assert_eq!(got[0]["size"], 3000);
    assert_eq!(
        got[0].as_object().map(|o| o.len()),
        Some(3),
        "type, path, size"
    );

    // The same client reconnecting with the whole ring replayed is not offered it again,
    // nor is one that resumes where it was.
    let end = c.offset;
    c.close();
    let mut again = ws::connect(srv.port, "session=send-live&since=0&flow=1");
    again.expect_attached();
    again.read_output_until(b"rc-0-42", WAIT);
    again.send_input(b"echo after-$((6*7))\n");
    again.read_output_until(b"after-42", WAIT);
    assert!(offers(&again.events).is_empty(), "{:?}", again.events);
    again.close();
    let mut resumed = ws::connect(srv.port, &format!("session=send-live&since={end}"));
    resumed.expect_attached();
    resumed.read_output_until(b"after-42", WAIT);
    assert!(offers(&resumed.events).is_empty(), "{:?}", resumed.events);
}

#[test]
fn an_offer_made_while_detached_goes_to_the_next_attach_once() {
    let dir = TempDir::new("send-later");
    let file = dir.path("later.bin");
    std::fs::write(&file, [1u8, 2, 3]).unwrap();
    let mark = dir.path("sent");
    let srv = common::spawn_server(&["--", common::sh()]);
    let mut c = shell(&srv, "send-later");
    let bin = common::keepty_words();
    // Runs once the client is gone; the mark says the offer was written.
    c.send_input(
        format!(
            "sleep 1; {bin} send '{}'; echo done-$((6*7)); touch '{}'\n",
            file.display(),
            mark.display()
        )
        .as_bytes(),
    );
    // The echo of the command line shows the shell took it.
    c.read_output_until(b"sleep 1", WAIT);
    c.close();
    let deadline = Instant::now() + WAIT;
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the detached send did not run");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut next = ws::connect(srv.port, "session=send-later&since=0&flow=1");
    next.expect_attached();
    next.read_output_until(b"done-42", WAIT);
    next.send_input(b"echo sync-$((6*7))\n");
    next.read_output_until(b"sync-42", WAIT);
    let got = offers(&next.events);
    assert_eq!(got.len(), 1, "{:?}", next.events);
    assert_eq!(got[0]["path"], canon(&file).as_str());
    assert_eq!(got[0]["size"], 3);
    next.close();

    // Delivered once: the one after that, replaying everything, gets none.
    let mut third = ws::connect(srv.port, "session=send-later&since=0&flow=1");
    third.expect_attached();
    third.send_input(b"echo third-$((6*7))\n");
    third.read_output_until(b"third-42", WAIT);
    assert!(offers(&third.events).is_empty(), "{:?}", third.events);
}

#[test]
fn what_cannot_be_offered_is_refused_in_words() {
    let dir = TempDir::new("send-bad");
    let srv = common::spawn_server(&["--", common::sh()]);
    let mut c = shell(&srv, "send-bad");
    let bin = common::keepty_words();
    let d = dir.0.display();
    c.send_input(
        format!(
            "{bin} send '{d}/none'; echo a-$?-$((6*7)); {bin} send '{d}'; echo b-$?-$((6*7)); \
             {bin} send; echo c-$?-$((6*7)); {bin} send /dev/null; echo d-$?-$((6*7))\n"
        )
        .as_bytes(),
    );
    let out = c.read_output_until(b"d-1-42", WAIT);
    let text = String::from_utf8_lossy(&out);
    for want in [
        "No such file or directory",
        "a-1-42",
        "is a directory",
        "b-1-42",
        "send needs a FILE",
        "c-2-42",
        "not a regular file",
    ] {
        assert!(text.contains(want), "{want:?} in {text:?}");
    }
    c.send_input(b"echo sync-$((6*7))\n");
    c.read_output_until(b"sync-42", WAIT);
    assert!(offers(&c.events).is_empty(), "{:?}", c.events);
}

#[test]
fn without_a_terminal_it_says_so() {
    let dir = TempDir::new("send-notty");
    let file = dir.path("f");
    std::fs::write(&file, b"x").unwrap();
    if common::skip_under_runner("without_a_terminal_it_says_so", "setsid runs the host's") {
        return;
    }
    // setsid: no controlling terminal, so no /dev/tty; stdout a pipe.
    let out = Command::new("setsid")
        .arg("-w")
        .arg(common::bin())
        .arg("send")
        .arg(&file)
        .output()
        .expect("run setsid keepty send");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no terminal"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");

    let help = common::keepty().args(["send", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Usage: keepty send FILE"));
}
