//! The subcommands' own command lines: `keepty ls|attach|new|drop|drop-all [ARGS]`.

use std::path::PathBuf;

/// Which subcommand, with its own argument.
#[derive(Debug, PartialEq, Eq)]
pub enum Verb {
    /// `ls [--all] [--json]`.
    Ls {
        /// Every user's sessions, from the admin list.
        all: bool,
        /// The JSON list rather than the table.
        json: bool,
    },
    /// `attach [ID]`: `None` means the most recent detached session.
    Attach(Option<String>),
    /// `new [NAME]`: `None` lets the server pick the id.
    New(Option<String>),
    /// `drop ID`.
    Drop(String),
    /// `drop-all`.
    DropAll,
    /// `SUBCOMMAND --help`.
    Help,
}

/// A subcommand's whole command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// What to do.
    pub verb: Verb,
    /// `--url`, else `KEEPTY_URL`, else the default listen address.
    pub url: String,
    /// `--token-file`: the token is this file's first line that is not blank or a comment.
    pub token_file: Option<PathBuf>,
    /// The detach key (`-e KEY`), a byte; `None` with `-e none`.
    pub detach: Option<u8>,
}

/// The server a subcommand talks to when neither `--url` nor `KEEPTY_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700/";

/// Ctrl-\, the detach key of dtach and abduco.
pub const DEFAULT_DETACH: u8 = 0x1c;

/// The subcommands' help text.
pub const USAGE: &str = "\
Usage: keepty ls [--all] [--json]          your sessions (--all: everyone's; admin token)
       keepty attach [-e KEY] [ID]         attach (no ID: the most recent detached session)
       keepty new [-e KEY] [NAME]          create a session and attach
       keepty drop ID                      end one session (admin token)
       keepty drop-all                     end every session (admin token)
       keepty send FILE                    inside a session: the page offers FILE for download
                                           (see keepty send --help; no --url or token needed)

Options for all of them:
  --url URL           the keepty to talk to (default $KEEPTY_URL, else http://127.0.0.1:7700/)
  --token-file PATH   read the token from this file (default $KEEPTY_TOKEN)
  -e KEY              the detach key: ^\\ (default), ^X for another control key, or none

Exit status: that of the program when it exits while attached; 0 after a detach or a
successful command; 1 when the server is unreachable or refuses; 2 for a bad command line.
";

/// Parses a detach key: `^\`, `^]`, `^a` (control keys), `none`, or one ASCII character.
pub fn parse_key(s: &str) -> Result<Option<u8>, String> {
    if s == "none" {
        return Ok(None);
    }
    match s.as_bytes() {
        [b'^', c] if (b'?'..=b'_').contains(&c.to_ascii_uppercase()) => {
            Ok(Some(c.to_ascii_uppercase() ^ 0x40))
        }
        [c] if c.is_ascii() => Ok(Some(*c)),
        _ => Err(format!(
            "-e: expected a key like ^\\, ^] or ^a, one character, or none; got {s:?}"
        )),
    }
}

/// Parses `args` (after the subcommand's name); `env_url` is `KEEPTY_URL`.
pub fn parse(name: &str, args: &[String], env_url: Option<String>) -> Result<Args, String> {
    let mut url = None;
    let mut token_file = None;
    let mut detach = Some(DEFAULT_DETACH);
    let mut seen_e = false;
    let (mut all, mut json) = (false, false);
    let mut words: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match opt {
            "--help" | "-h" => return Ok(help()),
            "--url" if url.is_none() => url = Some(value("--url")?),
            "--token-file" if token_file.is_none() => {
                token_file = Some(PathBuf::from(value("--token-file")?))
            }
            "--url" | "--token-file" | "-e" | "--all" | "--json" if has(args, opt) > 1 => {
                return Err(format!("{opt} given twice"));
            }
            "-e" if matches!(name, "attach" | "new") && !seen_e => {
                seen_e = true;
                detach = parse_key(&value("-e")?)?;
            }
            "--all" | "-a" if name == "ls" => all = true,
            "--json" if name == "ls" => json = true,
            o if o.starts_with('-') && o != "-" => {
                return Err(format!("unknown option {o} for keepty {name}"));
            }
            _ => words.push(arg.clone()),
        }
    }
    let verb = match (name, words.as_slice()) {
        ("ls", []) => Verb::Ls { all, json },
        ("attach", []) => Verb::Attach(None),
        ("attach", [id]) => Verb::Attach(Some(valid_id(id)?)),
        ("new", []) => Verb::New(None),
        ("new", [id]) => Verb::New(Some(valid_id(id)?)),
        ("drop", [id]) => Verb::Drop(valid_id(id)?),
        ("drop", []) => return Err("drop needs a session ID".into()),
        ("drop-all", []) => Verb::DropAll,
        (_, [_, extra, ..]) | ("ls" | "drop-all", [extra, ..]) => {
            return Err(format!("unexpected argument {extra:?} for keepty {name}"));
        }
        _ => return Err(format!("unknown subcommand {name:?}")),
    };
    let url = url
        .or(env_url.filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    Ok(Args {
        verb,
        url,
        token_file,
        detach,
    })
}

fn help() -> Args {
    Args {
        verb: Verb::Help,
        url: String::new(),
        token_file: None,
        detach: None,
    }
}

/// How often `opt` appears in `args`, in either form.
fn has(args: &[String], opt: &str) -> usize {
    args.iter()
        .filter(|a| *a == opt || a.strip_prefix(opt).is_some_and(|r| r.starts_with('=')))
        .count()
}

/// Session ids as the server takes them (SPEC section 3), refused here with a clear line.
fn valid_id(id: &str) -> Result<String, String> {
    if crate::api::protocol::valid_id(id) {
        Ok(id.to_string())
    } else {
        Err(format!("bad session id {id:?}: 1 to 64 of A-Z a-z 0-9 _ -"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, args: &[&str]) -> Result<Args, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(name, &args, None)
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("^\\"), Ok(Some(0x1c)));
        assert_eq!(parse_key("^]"), Ok(Some(0x1d)));
        assert_eq!(parse_key("^a"), Ok(Some(0x01)));
        assert_eq!(parse_key("^A"), Ok(Some(0x01)));
        assert_eq!(parse_key("^?"), Ok(Some(0x7f)));
        assert_eq!(parse_key("q"), Ok(Some(b'q')));
        assert_eq!(parse_key("none"), Ok(None));
        assert_eq!(parse_key("^"), Ok(Some(b'^')));
        assert!(parse_key("ab").is_err());
        assert!(parse_key("é").is_err());
    }

    #[test]
    fn verbs() {
        let a = p("attach", &["-e", "^a", "work", "--url", "http://h:1/"]).unwrap();
        assert_eq!(a.verb, Verb::Attach(Some("work".into())));
        assert_eq!(a.detach, Some(1));
        assert_eq!(a.url, "http://h:1/");
        assert_eq!(p("attach", &[]).unwrap().verb, Verb::Attach(None));
        assert_eq!(p("attach", &[]).unwrap().detach, Some(DEFAULT_DETACH));
        assert_eq!(p("new", &[]).unwrap().verb, Verb::New(None));
        assert_eq!(
            p("ls", &["--json", "-a"]).unwrap().verb,
            Verb::Ls {
                all: true,
                json: true
            }
        );
        assert_eq!(p("drop", &["x1"]).unwrap().verb, Verb::Drop("x1".into()));
        assert_eq!(p("drop-all", &["--help"]).unwrap().verb, Verb::Help);
    }

    #[test]
    fn url_sources() {
        assert_eq!(p("ls", &[]).unwrap().url, DEFAULT_URL);
        let env = Some("http://e:2/".to_string());
        assert_eq!(parse("ls", &[], env.clone()).unwrap().url, "http://e:2/");
        let args = vec!["--url=http://a:3/".to_string()];
        assert_eq!(parse("ls", &args, env).unwrap().url, "http://a:3/");
    }

    #[test]
    fn mistakes() {
        assert_eq!(p("drop", &[]).unwrap_err(), "drop needs a session ID");
        assert!(
            p("drop", &["a", "b"])
                .unwrap_err()
                .contains("unexpected argument \"b\"")
        );
        assert!(p("ls", &["x"]).unwrap_err().contains("unexpected argument"));
        assert!(
            p("ls", &["-e", "^a"])
                .unwrap_err()
                .contains("unknown option -e")
        );
        assert!(
            p("attach", &["--json"])
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            p("attach", &["bad id!"])
                .unwrap_err()
                .starts_with("bad session id")
        );
        assert_eq!(p("ls", &["--url"]).unwrap_err(), "--url needs a value");
        assert_eq!(
            p("ls", &["--url", "a", "--url", "b"]).unwrap_err(),
            "--url given twice"
        );
        assert_eq!(
            p("attach", &["-e", "^a", "-e", "^b"]).unwrap_err(),
            "-e given twice"
        );
    }
}
