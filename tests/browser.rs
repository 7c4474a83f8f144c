//! The real page in a real browser: tests/browser/page.mjs (the terminal),
//! tests/browser/token.mjs (the token flow), tests/browser/links.mjs (links and pages of
//! other sites), tests/browser/notify.mjs (notifications) and tests/browser/files.mjs
//! (uploads, downloads and offers) drive headless Chromium (Debian's
//! `/usr/bin/chromium`, through `playwright-core` from `npm ci`) against a real keepty.
//!
//! Missing prerequisites fail the test rather than skip it, so CI cannot go green without
//! the browser side having run.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// page.mjs and token.mjs give up by themselves (150 s, 90 s); this only catches a wedged
/// node or browser.
const BOUND: Duration = Duration::from_secs(200);

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The terminal page against three servers: the defaults (handoff), a 2 s TTL with the multi
/// policy and a 16 KiB ring, and the reject policy with room for two sessions.
#[test]
fn page_in_headless_chromium() {
    let root = require_prerequisites();
    let main = common::spawn_server(&[]);
    let short = common::spawn_server(&[
        "--ttl",
        "2s",
        "--attach-policy",
        "multi",
        "--scrollback",
        "16K",
    ]);
    let reject = common::spawn_server(&["--attach-policy", "reject", "--max-sessions", "2"]);
    run_node(
        root,
        "tests/browser/page.mjs",
        &[&main.url(), &short.url(), &reject.url()],
        &[&main, &short, &reject],
    );
}

/// The page on a phone and its phone features (tests/browser/phone.mjs): touch scroll, the
/// paging keys, Select text, the compose bar and IME input, OSC 52 (writer only), links, find
/// and named sessions; a multi-policy server for the viewer.
#[test]
fn phone_features_in_headless_chromium() {
    let root = require_prerequisites();
    let main = common::spawn_server(&[]);
    let multi = common::spawn_server(&["--attach-policy", "multi"]);
    run_node(
        root,
        "tests/browser/phone.mjs",
        &[&main.url(), &multi.url()],
        &[&main, &multi],
    );
}

/// The page across an upgrade in place: told, reconnected with `since`, output continuing
/// with every line once.
#[test]
fn page_across_an_upgrade_in_headless_chromium() {
    let root = require_prerequisites();
    let server = common::spawn_server(&["--", common::sh()]);
    run_node(
        root,
        "tests/browser/upgrade.mjs",
        &[&server.url()],
        &[&server],
    );
}

/// The token flow of the page (SPEC 2, Auth): `#token=`, the stored token, the "Set token"
/// prompt, and a wrong token that must not turn into a retry loop.
#[test]
fn token_flow_in_headless_chromium() {
    let root = require_prerequisites();
    let dir = common::auth::TempDir::new("browser-token");
    // "~~~" and "???" encode to base64 with '+' and '/', so the subprotocol needs base64url.
    let token = format!(
        "~~~???browser-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let token_file = dir.write("tokens", &format!("browser {token}\n"), 0o600);
    let server = common::spawn_server(&["--token-file", &token_file, "--", common::sh()]);
    run_node(
        root,
        "tests/browser/token.mjs",
        &[&server.url(), &token],
        &[&server],
    );
}

/// What another site can do through this browser (issue 15): a `#token=` link to another
/// user's token is asked about (naming both users) before it replaces the stored one, a link
/// opened in a tab that needs a token is taken on hashchange, and a foreign page's images
/// and sockets with junk tokens do not lock the operator out.
#[test]
fn token_links_and_foreign_pages_in_headless_chromium() {
    let root = require_prerequisites();
    let dir = common::auth::TempDir::new("browser-links");
    let n = std::process::id();
    let (token, other, admin) = (
        format!("links-user-{n}"),
        format!("links-other-{n}"),
        format!("links-admin-{n}"),
    );
    let users = dir.write(
        "tokens",
        &format!("browser {token}\nother {other}\n"),
        0o600,
    );
    let admins = dir.write("admins", &format!("{admin}\n"), 0o600);
    let server = common::spawn_server(&[
        "--token-file",
        &users,
        "--admin-token-file",
        &admins,
        "--",
        common::sh(),
    ]);
    run_node(
        root,
        "tests/browser/links.mjs",
        &[&server.url(), &token, &other, &admin],
        &[&server],
    );
}

/// Notifications (issue 18): a detached session's bell and exit reach the page, with the
/// permission granted through CDP.
#[test]
fn notifications_in_headless_chromium() {
    let root = require_prerequisites();
    let server = common::spawn_server(&["--", common::sh()]);
    run_node(
        root,
        "tests/browser/notify.mjs",
        &[&server.url()],
        &[&server],
    );
}

/// Files through the page (issue 19, tests/browser/files.mjs), on a desktop and a phone:
/// upload by the file picker and by a drop, the 409 question, download by the menu and by an
/// offer from `keepty send`, each compared byte for byte on disk.
#[test]
fn files_in_headless_chromium() {
    let root = require_prerequisites();
    let server = common::spawn_server(&["--", common::sh()]);
    run_node(
        root,
        "tests/browser/files.mjs",
        &[&server.url(), common::bin(), &server.child.id().to_string()],
        &[&server],
    );
}

/// The repo root, after checking that Chromium, playwright-core and node are there. Missing
/// prerequisites fail the test rather than skip it.
fn require_prerequisites() -> &'static Path {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} (`apt-get install -y chromium`)"));
    }
    if !root
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("node_modules/playwright-core (`npm ci` in the repo root)".to_string());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (`apt-get install -y nodejs`)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}; `tests/all.sh` (the test command) installs them before \
         running `cargo test`",
        missing.join(", ")
    );
    root
}

/// Runs `node SCRIPT ARGS...` in the repo root within [`BOUND`], echoing its stdout; panics
/// with its output and the servers' logs if it fails or hangs. Screenshots and measurements
/// land in `target/browser/`.
fn run_node(root: &Path, script: &str, args: &[&str], servers: &[&common::Server]) {
    let mut cmd = Command::new("node");
    cmd.arg(root.join(script))
        .args(args)
        .current_dir(root)
        .env("KEEPTY_ARTIFACTS", root.join("target/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can take Chromium down along with node.
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn node");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for node") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group of a child we spawned; no memory involved.
            unsafe {
                libc_kill(-(child.id() as i32), 9);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    print!("{stdout}");
    match status {
        Some(st) if st.success() => {}
        _ => {
            let server_log = servers
                .iter()
                .map(|s| s.stderr_lines().join("\n"))
                .collect::<Vec<_>>()
                .join("\n--- next server ---\n");
            panic!(
                "{script} {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
                 --- keepty stderr ---\n{server_log}",
                match status {
                    Some(st) => format!("failed ({st})"),
                    None => format!("did not finish within {} s", BOUND.as_secs()),
                }
            );
        }
    }
}
