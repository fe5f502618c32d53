//! Who may initialise (or restore into) an empty KMS (issue 18 item 1).
//!
//! Before init there are no principals, so the matrix cannot decide. Two ways in, either enough:
//! - a **bootstrap identity**: a certificate subject listed in the server's `bootstrap_admins`;
//! - the **init token**: 32 random bytes the server writes owner-only (0600) to
//!   `DATA_DIR/init-token` when it starts on an uninitialised store. Whoever can read the
//!   server's data directory (the operator on its host) can initialise; a certificate alone,
//!   from a CA that issues to every application, cannot. The token works once: a successful init
//!   or restore removes the file and forgets it.
//!
//! A server with neither refuses every init: it must be configured, never open by default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::status::Refusal;

/// The file the init token is written to, in the data directory.
pub const TOKEN_FILE: &str = "init-token";

/// The bootstrap rules a server runs with.
#[derive(Clone, Default)]
pub struct Bootstrap {
    /// Certificate subjects that may initialise or restore without the token.
    pub admins: Vec<String>,
    token: Option<InitToken>,
}

/// The one-time init token: its value (wiped when forgotten) and the file holding it.
#[derive(Clone)]
struct InitToken {
    value: Arc<Mutex<Option<Zeroizing<String>>>>,
    file: PathBuf,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("admins", &self.admins)
            .field("token_file", &self.token.as_ref().map(|t| &t.file))
            .finish()
    }
}

impl Bootstrap {
    /// Bootstrap identities only, no token.
    #[must_use]
    pub fn admins(admins: Vec<String>) -> Self {
        Self {
            admins,
            token: None,
        }
    }

    /// Writes a fresh init token owner-only to `dir/init-token` (replacing an older one: only
    /// the running server's token works) and accepts it from now on.
    ///
    /// # Errors
    /// The randomness source or the file failed.
    pub fn with_new_token(mut self, dir: &Path) -> std::io::Result<Self> {
        let mut raw = Zeroizing::new([0u8; 32]);
        kms_core::crypto::rng::fill(raw.as_mut())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let value = Zeroizing::new(hex::encode(raw.as_ref()));
        let file = dir.join(TOKEN_FILE);
        write_private(&file, value.as_bytes())?;
        self.token = Some(InitToken {
            value: Arc::new(Mutex::new(Some(value))),
            file,
        });
        Ok(self)
    }

    /// The token file, when this server wrote one.
    #[must_use]
    pub fn token_file(&self) -> Option<&Path> {
        self.token.as_ref().map(|t| t.file.as_path())
    }

    /// Whether `subject`, presenting `token` (empty: none), may `what` (initialise, restore).
    ///
    /// # Errors
    /// [`Refusal::NotBootstrap`] naming the subject.
    pub fn admit(&self, subject: &str, token: &str, what: &'static str) -> Result<(), Refusal> {
        if self.admins.iter().any(|a| a == subject) {
            return Ok(());
        }
        if let Some(t) = &self.token
            && !token.is_empty()
        {
            let held = t
                .value
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(v) = held.as_ref()
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    v.as_bytes(),
                    token.trim().as_bytes(),
                ))
            {
                return Ok(());
            }
        }
        Err(Refusal::NotBootstrap {
            subject: subject.to_owned(),
            what,
        })
    }

    /// After a successful init or restore: the token is spent (forgotten, its file removed).
    pub fn spend(&self) {
        if let Some(t) = &self.token {
            *t.value
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            if let Err(e) = std::fs::remove_file(&t.file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %t.file.display(), error = %e, "could not remove the spent init token");
            }
        }
    }
}

/// Writes `bytes` to a new file readable by its owner only, whatever the umask.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn bootstrap_identities_and_the_token_admit_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bootstrap::admins(vec!["kms://root".into()])
            .with_new_token(dir.path())
            .unwrap();
        let file = b.token_file().unwrap().to_owned();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&file).unwrap();
        assert_eq!(token.trim().len(), 64);

        assert!(b.admit("kms://root", "", "initialise the KMS").is_ok());
        assert!(b.admit("kms://app", &token, "initialise the KMS").is_ok());
        for wrong in ["", "00", &token.trim()[1..]] {
            assert!(matches!(
                b.admit("kms://app", wrong, "initialise the KMS"),
                Err(Refusal::NotBootstrap { subject, .. }) if subject == "kms://app"
            ));
        }
        // Spent: the token no longer admits and its file is gone.
        b.spend();
        assert!(!file.exists());
        assert!(matches!(
            b.admit("kms://app", &token, "initialise the KMS"),
            Err(Refusal::NotBootstrap { .. })
        ));
        assert!(b.admit("kms://root", "", "initialise the KMS").is_ok());
    }

    #[test]
    fn with_neither_nobody_initialises() {
        let b = Bootstrap::default();
        assert!(matches!(
            b.admit("kms://admin", "anything", "initialise the KMS"),
            Err(Refusal::NotBootstrap { .. })
        ));
    }

    #[test]
    fn debug_shows_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bootstrap::default().with_new_token(dir.path()).unwrap();
        let token = std::fs::read_to_string(b.token_file().unwrap()).unwrap();
        assert!(!format!("{b:?}").contains(token.trim()));
    }
}
