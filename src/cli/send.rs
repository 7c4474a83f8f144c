//! `keepty send FILE`: run inside a session, it makes the attached page offer FILE for
//! download. It talks to no server: it writes the offer sequence (`sessions/offer.rs`) to its
//! terminal, which is the session's PTY, and the server sees it in the output. So it needs no
//! URL and no token, and works as whatever user the shell runs as (after `su`, too); the
//! download then goes through the file routes as the session's owner.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::Fail;
use crate::limits::MAX_OFFER_PATH;
use crate::sessions::offer;

/// `keepty send --help`.
pub const USAGE: &str = "\
Usage: keepty send FILE

Run inside a keepty session: the page attached to it offers FILE for download
(\"Download NAME (SIZE)?\"). With nobody attached, the next page to attach offers it.
FILE must be a regular file you can read; it is named to the page by its absolute path.
The offer goes out as an escape sequence on this terminal (/dev/tty): under tmux or
screen, which keep unknown sequences to themselves, it does not reach the page.

Exit status: 0 once offered; 1 when FILE cannot be offered or there is no terminal;
2 for a bad command line.
";

/// What the command line asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// `--help`.
    Help,
    /// Offer this file.
    Send(PathBuf),
}

/// Parses the arguments after `send`: one FILE, `--` before a name that starts with `-`.
pub fn parse(args: &[String]) -> Result<Ask, String> {
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => return Ok(Ask::Help),
            "--" => {
                files.extend(it.by_ref().cloned());
                break;
            }
            o if o.starts_with('-') && o != "-" => {
                return Err(format!(
                    "unknown option {o} for keepty send (a file named so goes after --)"
                ));
            }
            _ => files.push(a.clone()),
        }
    }
    match files.as_slice() {
        [f] if !f.is_empty() => Ok(Ask::Send(PathBuf::from(f))),
        [] => Err("send needs a FILE".into()),
        [_] => Err("send needs a FILE (got an empty name)".into()),
        [_, extra, ..] => Err(format!(
            "unexpected argument {extra:?}: keepty send takes one FILE"
        )),
    }
}

/// The absolute path and size of `file`, checked the way the download will need it: a
/// regular file (after symlinks), readable by this user, named in UTF-8 within
/// [`MAX_OFFER_PATH`] bytes.
pub fn resolve(file: &Path) -> Result<(String, u64), String> {
    let shown = file.display();
    let abs = std::fs::canonicalize(file).map_err(|e| format!("{shown}: {}", plain(&e)))?;
    let meta = std::fs::metadata(&abs).map_err(|e| format!("{shown}: {}", plain(&e)))?;
    if meta.is_dir() {
        return Err(format!(
            "{shown} is a directory: send a file (an archive of it, say: tar czf dir.tgz dir)"
        ));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    // Opening is the only honest test of "readable" (ACLs, capabilities, root's view).
    std::fs::File::open(&abs).map_err(|e| format!("{shown}: {}", plain(&e)))?;
    let path = abs.to_str().ok_or_else(|| {
        format!(
            "{}: the path is not valid UTF-8, which the page cannot name; rename or copy it",
            abs.display()
        )
    })?;
    if path.len() > MAX_OFFER_PATH {
        return Err(format!(
            "{shown}: the absolute path is {} bytes, more than {MAX_OFFER_PATH}",
            path.len()
        ));
    }
    Ok((path.to_string(), meta.len()))
}

/// An I/O error's text without Rust's " (os error N)".
fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Sizes as people read them: bytes below 1 KiB, else one decimal in KiB, MiB or GiB.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The terminal to write the offer to: `/dev/tty` (stdout may be a pipe: `keepty send f |
/// tee`), else stdout when it is a terminal.
fn terminal() -> Result<Box<dyn Write>, Fail> {
    if let Ok(tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        return Ok(Box::new(tty));
    }
    if std::io::stdout().is_terminal() {
        return Ok(Box::new(std::io::stdout()));
    }
    Err(Fail::Refused(
        "no terminal to send the offer on (no /dev/tty, stdout is not a terminal): run it \
         in a shell of a keepty session"
            .into(),
    ))
}

/// Runs `keepty send ARGS`; returns the exit status or why it failed.
pub fn run(args: &[String]) -> Result<u8, Fail> {
    let file = match parse(args).map_err(Fail::Usage)? {
        Ask::Help => {
            print!("{USAGE}");
            return Ok(0);
        }
        Ask::Send(f) => f,
    };
    let (path, size) = resolve(&file).map_err(Fail::Refused)?;
    let mut tty = terminal()?;
    tty.write_all(offer::sequence(&path, size).as_bytes())
        .and_then(|()| tty.flush())
        .map_err(|e| Fail::Refused(format!("writing to the terminal: {}", plain(&e))))?;
    let hint = if std::env::var_os("KEEPTY_SESSION").is_some() {
        ""
    } else {
        " (KEEPTY_SESSION is not set: if this is not a keepty session, nothing will offer it)"
    };
    println!(
        "keepty: the page will offer {path} ({}) for download{hint}",
        human(size)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Ask, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn command_lines() {
        assert_eq!(p(&["f.txt"]), Ok(Ask::Send("f.txt".into())));
        assert_eq!(p(&["--", "-odd"]), Ok(Ask::Send("-odd".into())));
        assert_eq!(p(&["-"]), Ok(Ask::Send("-".into())));
        assert_eq!(p(&["--help"]), Ok(Ask::Help));
        assert_eq!(p(&["a", "-h"]), Ok(Ask::Help));
        assert_eq!(p(&[]), Err("send needs a FILE".into()));
        assert!(p(&[""]).unwrap_err().contains("empty"));
        assert!(
            p(&["a", "b"])
                .unwrap_err()
                .contains("unexpected argument \"b\"")
        );
        assert!(p(&["-x"]).unwrap_err().starts_with("unknown option -x"));
        assert!(p(&["--", "a", "b"]).is_err());
    }

    #[test]
    fn files_are_checked_as_the_download_needs() {
        let dir = std::env::temp_dir().join(format!("keepty-send-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("data.bin");
        std::fs::write(&f, [7u8; 1500]).unwrap();
        std::os::unix::fs::symlink(&f, dir.join("link")).unwrap();
        let canon = std::fs::canonicalize(&f).unwrap();
        let want = (canon.to_str().unwrap().to_string(), 1500);
        assert_eq!(resolve(&f), Ok(want.clone()));
        assert_eq!(
            resolve(&dir.join("link")),
            Ok(want.clone()),
            "a symlink: its target"
        );
        // Resolved as the kernel would: x does not exist, so x/.. does not either.
        assert!(resolve(&dir.join("x/../data.bin")).is_err());
        assert_eq!(resolve(&dir.join(".").join("data.bin")), Ok(want));
        assert!(resolve(&dir).unwrap_err().contains("is a directory"));
        let missing = resolve(&dir.join("nope")).unwrap_err();
        assert!(missing.ends_with("No such file or directory"), "{missing}");
        assert!(
            resolve(Path::new("/dev/null"))
                .unwrap_err()
                .contains("not a regular file")
        );
        // Non-UTF-8 names cannot go in the JSON the page reads.
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        std::fs::write(&odd, b"x").unwrap();
        assert!(resolve(&odd).unwrap_err().contains("not valid UTF-8"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_in_words() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(50 * 1024 * 1024), "50.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
