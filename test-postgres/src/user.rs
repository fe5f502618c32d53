//! Whom the server runs as: PostgreSQL refuses to start as root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// An unprivileged account to run the server as (only when this process is root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Account {
    /// Makes `command` run as this account. std drops root's supplementary groups too.
    pub(crate) fn apply(self, command: &mut Command) {
        std::os::unix::process::CommandExt::uid(command, self.uid);
        std::os::unix::process::CommandExt::gid(command, self.gid);
    }
}

/// `None` when `own_dir` (a directory this process just created, so owned by its effective
/// user) is not root's; otherwise the `postgres` account, or `nobody` when there is none.
pub(crate) fn account_for(own_dir: &Path) -> Result<Option<Account>, String> {
    let owner = std::fs::metadata(own_dir)
        .map_err(|e| format!("{}: {e}", own_dir.display()))?
        .uid();
    if owner != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| lookup(&passwd, name))
        .map(Some)
        .ok_or_else(|| {
            "the tests run as root, and PostgreSQL refuses to: no `postgres` or `nobody` \
             account in /etc/passwd to run it as"
                .to_owned()
        })
}

/// The uid and gid of `name` in a passwd file's text.
fn lookup(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (uid != 0).then_some(Account { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n\
        toor:x:0:0::/:/bin/sh\n";

    #[test]
    fn finds_the_account_by_name() {
        assert_eq!(
            lookup(PASSWD, "postgres"),
            Some(Account { uid: 101, gid: 104 })
        );
        assert_eq!(
            lookup(PASSWD, "nobody"),
            Some(Account {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(lookup(PASSWD, "absent"), None);
    }

    #[test]
    fn never_returns_a_root_account() {
        assert_eq!(lookup(PASSWD, "toor"), None);
        assert_eq!(lookup(PASSWD, "root"), None);
    }
}
