//! Token files are read on every SIGHUP: no content may panic the parser, a rejected file's
//! error must never quote the file (a token), and every accepted user has a name.
#![no_main]
use keepty::access::auth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match auth::parse_users(text) {
        Ok(users) => {
            for u in &users {
                assert!(!u.name.is_empty());
            }
        }
        Err(msg) => {
            // Nothing from the file is quoted: the message is a line number and fixed text.
            let rest = msg
                .strip_prefix("line ")
                .and_then(|m| m.split_once(": "))
                .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
                .map(|(_, r)| r);
            assert!(
                matches!(
                    rest,
                    Some(
                        "expected NAME TOKEN [MAX_SESSIONS [UNIX_USER]]"
                            | "MAX_SESSIONS must be a positive number"
                            | "too many fields"
                            | "NAME must be 1-64 characters of A-Z a-z 0-9 _ -"
                    )
                ),
                "unexpected error text: {msg}"
            );
        }
    }
    for t in auth::parse_admins(text) {
        assert!(!t.is_empty());
    }
});
