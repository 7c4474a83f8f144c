//! Who a session runs as: a unix account from the password database (uid, primary and
//! supplementary groups, home, shell), resolved when the token file is read so that the child
//! between fork and exec only makes system calls with what is already here.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User as Passwd, getgrouplist};

/// A unix account a user's sessions run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The login name (`USER`, `LOGNAME`).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Every group it is in (primary included), as `initgroups` would set them; computed here
    /// because reading `/etc/group` is not something a child may do before exec.
    pub groups: Vec<u32>,
    /// Its home directory: `HOME` and the session's working directory.
    pub home: PathBuf,
    /// Its login shell: `SHELL`.
    pub shell: PathBuf,
}

impl Account {
    /// Looks `name` up in the password database. `Err` says why in words for the log, and
    /// never repeats `name`: it comes from a token file, and a line with its fields swapped
    /// would put a token there.
    pub fn resolve(name: &str) -> Result<Account, String> {
        let pw = match Passwd::from_name(name) {
            Ok(Some(pw)) => pw,
            Ok(None) => return Err("that unix user does not exist".to_string()),
            Err(e) => return Err(format!("cannot read the password database: {e}")),
        };
        Account::from_passwd(pw)
    }

    /// The account keepty itself runs as, if the password database knows its uid.
    pub fn own() -> Option<Account> {
        let pw = Passwd::from_uid(Uid::effective()).ok()??;
        Account::from_passwd(pw).ok()
    }

    fn from_passwd(pw: Passwd) -> Result<Account, String> {
        let cname = CString::new(pw.name.as_str()).map_err(|_| "a NUL in its name".to_string())?;
        let groups = getgrouplist(&cname, pw.gid)
            .map_err(|e| format!("cannot list the groups of that unix user: {e}"))?;
        Ok(Account {
            name: pw.name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
            home: pw.dir,
            shell: pw.shell,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_resolve_and_a_stranger_does_not() {
        let root = Account::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        if let Ok(nobody) = Account::resolve("nobody") {
            assert_ne!(nobody.uid, 0);
            assert!(nobody.groups.contains(&nobody.gid));
        }
        let e = Account::resolve("keepty-no-such-user").unwrap_err();
        assert!(
            e.contains("does not exist") && !e.contains("keepty-no"),
            "{e}"
        );
    }
}
