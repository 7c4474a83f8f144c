//! The subcommands: `keepty ls`, `attach`, `new`, `drop`, `drop-all`. Each is a client of a
//! running keepty over its public HTTP and WebSocket protocol (nothing private), with
//! blocking std sockets, a WebSocket handshake of its own and tungstenite for the frames: no
//! thread, no runtime. `keepty send` is the exception: run inside a session, it speaks to the
//! server through the session's terminal.
//!
//! - [`args`]: the subcommands' command lines.
//! - [`http`]: the server's URL and one blocking request.
//! - [`ls`]: the list, drop and drop-all.
//! - [`attach`]: the terminal: its pure core (detach key, offsets across reconnects,
//!   banners) and the loop around it.
//! - [`term`]: this process's own terminal: raw mode, size, SIGWINCH.
//! - [`send`]: `keepty send FILE`, the download offer from inside a session.

pub mod args;
pub mod attach;
pub mod http;
pub mod ls;
pub mod send;
pub mod term;

use std::path::Path;

use args::{Args, Verb};

/// Why a subcommand failed, which sets its exit status.
#[derive(Debug)]
pub enum Fail {
    /// A bad command line or argument: exit 2.
    Usage(String),
    /// The server could not be reached, or the connection broke: exit 1.
    Unreachable(String),
    /// The server answered with a refusal: exit 1.
    Refused(String),
}

impl Fail {
    /// The process's exit status for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Fail::Usage(_) => 2,
            Fail::Unreachable(_) | Fail::Refused(_) => 1,
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Usage(m) | Fail::Refused(m) => f.write_str(m),
            Fail::Unreachable(m) => write!(f, "cannot reach keepty at {m}"),
        }
    }
}

/// The token: `--token-file`'s first line that is neither blank nor a `#` comment, else
/// `KEEPTY_TOKEN`, else none (a server without token files takes loopback callers).
pub fn load_token(file: Option<&Path>, env: Option<String>) -> Result<Option<String>, Fail> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Fail::Usage(format!("--token-file {}: {e}", path.display())))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| {
                Fail::Usage(format!("--token-file {}: no token in it", path.display()))
            })?;
        if line.contains(char::is_whitespace) {
            return Err(Fail::Usage(format!(
                "--token-file {}: the first line must be the token alone",
                path.display()
            )));
        }
        return Ok(Some(line.to_string()));
    }
    Ok(env.filter(|t| !t.is_empty()))
}

/// Runs subcommand `name` with `args`; returns the exit status.
pub fn run(name: &str, args: Vec<String>) -> u8 {
    match run_inner(name, &args) {
        Ok(code) => code,
        Err(e @ Fail::Usage(_)) => {
            eprintln!("keepty {name}: {e}\nTry 'keepty {name} --help'.");
            e.exit_code()
        }
        Err(e) => {
            eprintln!("keepty {name}: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(name: &str, args: &[String]) -> Result<u8, Fail> {
    if name == "send" {
        return send::run(args);
    }
    let Args {
        verb,
        url,
        token_file,
        detach,
    } = args::parse(name, args, std::env::var("KEEPTY_URL").ok()).map_err(Fail::Usage)?;
    if verb == Verb::Help {
        print!("{}", args::USAGE);
        return Ok(0);
    }
    let server = http::Server::parse(&url).map_err(Fail::Usage)?;
    let token = load_token(token_file.as_deref(), std::env::var("KEEPTY_TOKEN").ok())?;
    let token = token.as_deref();
    match verb {
        Verb::Ls { all, json } => ls::ls(&server, token, all, json),
        Verb::Drop(id) => ls::drop_one(&server, token, &id),
        Verb::DropAll => ls::drop_all(&server, token),
        Verb::Attach(id) => {
            let id = match id {
                Some(id) => id,
                None => ls::most_recent_detached(&server, token)?,
            };
            attach::run(&server, token, attach::Target::Existing(id), detach)
        }
        Verb::New(name) => attach::run(&server, token, attach::Target::New(name), detach),
        Verb::Help => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources() {
        let dir = std::env::temp_dir().join(format!("keepty-cli-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "# mine\n\n  s3cret  \nignored\n").unwrap();
        assert_eq!(
            load_token(Some(&f), Some("env".into())).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            load_token(None, Some("env".into())).unwrap().as_deref(),
            Some("env")
        );
        assert_eq!(load_token(None, Some(String::new())).unwrap(), None);
        std::fs::write(&f, "alice s3cret\n").unwrap();
        assert_eq!(load_token(Some(&f), None).unwrap_err().exit_code(), 2);
        std::fs::write(&f, "# nothing\n").unwrap();
        assert_eq!(load_token(Some(&f), None).unwrap_err().exit_code(), 2);
        assert_eq!(
            load_token(Some(&dir.join("none")), None)
                .unwrap_err()
                .exit_code(),
            2
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
