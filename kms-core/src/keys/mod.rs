//! Names of things: key ids, aliases, namespaces, and how callers refer to a key.

pub mod record;
pub mod state;

use core::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, InvalidInput};

/// A key's permanent identifier (a random UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub Uuid);

impl KeyId {
    pub(crate) fn random() -> Result<Self, Error> {
        let mut b = [0u8; 16];
        crate::crypto::rng::fill(&mut b)?;
        Ok(Self(uuid::Builder::from_random_bytes(b).into_uuid()))
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidInput::new("key id", "not a UUID").into())
    }
}

fn valid_name(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// An application namespace: the unit that owns keys and has its own KEK (KEY-6).
///
/// Two rules, because stores written before the strict one must still load:
///
/// - [`Namespace::new`] is for a name a request *introduces* (a key's namespace, an app's
///   namespace, a grantee): `[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?`, that is 1 to 63 lower-case
///   ASCII letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit, and not a
///   reserved name ([`Namespace::RESERVED`]) in any casing or with trailing dots. One spelling
///   per namespace, so `Payments` and `payments` cannot become two tenants that look alike, and
///   `kms-system.` cannot pass for the KMS's own namespace.
/// - [`Namespace::existing`] is the rule before that (any-case letters, digits, `-`, `_`, `.`,
///   1 to 64 characters, starting with a letter or digit). It decodes stored records (serde)
///   and names a namespace that may already exist (`ns:alias`, a listing filter, the grantee of
///   a grant being revoked): such a name only finds what is there, and creates nothing.
///
/// The core re-checks the strict rule ([`Namespace::check_new`]) where a namespace is
/// introduced, whatever constructor the front end used.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// The longest new namespace (a DNS label's length).
    pub const MAX_LEN: usize = 63;
    /// The longest namespace the earlier rule allowed, still accepted from the store.
    pub const MAX_STORED_LEN: usize = 64;
    /// Names no request may introduce: the KMS's own keys live in `kms-system`
    /// ([`SYSTEM_NAMESPACE`](crate::SYSTEM_NAMESPACE)).
    pub const RESERVED: &'static [&'static str] = &[crate::kms::audit_key::SYSTEM_NAMESPACE];

    /// A namespace a request introduces, under the strict rule (see the type's doc).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `namespace`) naming the reserved name or the rule.
    pub fn new(s: &str) -> Result<Self, Error> {
        check_new_namespace(s)?;
        Ok(Self(s.to_owned()))
    }

    /// A namespace that may already exist: the earlier, looser rule (see the type's doc).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `namespace`) when even the earlier rule refuses it.
    pub fn existing(s: &str) -> Result<Self, Error> {
        if valid_name(s, Self::MAX_STORED_LEN, &['-', '_', '.']) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidInput::new(
                "namespace",
                "use 1 to 64 characters: letters, digits, '-', '_', '.', starting with a letter or digit",
            )
            .into())
        }
    }

    /// The KMS's own namespace, which [`Namespace::new`] refuses.
    pub(crate) fn system() -> Self {
        Self(crate::kms::audit_key::SYSTEM_NAMESPACE.to_owned())
    }

    /// Checks the strict rule on a namespace however it was made: the core calls this where a
    /// namespace is introduced (new key, new app principal, new grant).
    ///
    /// # Errors
    /// As [`Namespace::new`].
    pub fn check_new(&self) -> Result<(), Error> {
        check_new_namespace(&self.0)
    }

    /// Whether this is a reserved name in any casing or with trailing dots.
    #[must_use]
    pub fn is_reserved(&self) -> bool {
        is_reserved_namespace(&self.0)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `kms-system`, `KMS-System`, `kms-system.` and `kms-system..` all name the reserved namespace
/// to a reader, so all are refused as such (with a message saying so, not a generic one).
fn is_reserved_namespace(s: &str) -> bool {
    let folded = s.trim_end_matches('.').to_ascii_lowercase();
    Namespace::RESERVED.contains(&folded.as_str())
}

fn check_new_namespace(s: &str) -> Result<(), Error> {
    if is_reserved_namespace(s) {
        return Err(InvalidInput::new(
            "namespace",
            "kms-system is reserved for the KMS's own keys (in any casing, with or without trailing dots)",
        )
        .into());
    }
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !s.is_empty()
        && s.len() <= Namespace::MAX_LEN
        && s.chars()
            .all(|c| lower_alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(lower_alnum)
        && s.chars().last().is_some_and(lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "namespace",
            "use 1 to 63 characters: lower-case letters a-z, digits, '-', '_', '.', starting and ending with a letter or digit",
        )
        .into())
    }
}

/// Decoding (stored records, principals, grants) uses the earlier rule, so a namespace stored
/// before the strict one still loads; see the type's doc.
impl TryFrom<String> for Namespace {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::existing(&s)
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> Self {
        n.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A friendly, unique-per-namespace name for a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Alias(String);

impl Alias {
    pub const MAX_LEN: usize = 128;

    pub fn new(s: &str) -> Result<Self, Error> {
        if valid_name(s, Self::MAX_LEN, &['-', '_', '.', '/']) && Uuid::parse_str(s).is_err() {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidInput::new(
                "alias",
                "use 1 to 128 characters: letters, digits, '-', '_', '.', '/', starting with a letter or digit, and not a UUID",
            )
            .into())
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Alias {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(&s)
    }
}

impl From<Alias> for String {
    fn from(a: Alias) -> Self {
        a.0
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a caller names a key: by id, or by alias in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    Id(KeyId),
    Alias(Namespace, Alias),
}

impl KeyRef {
    /// Parses what a caller typed: a UUID is an id; anything else is an alias in `namespace`
    /// (`ns:alias` names another namespace's alias explicitly).
    pub fn parse(input: &str, namespace: &Namespace) -> Result<Self, Error> {
        if let Ok(id) = Uuid::parse_str(input) {
            return Ok(Self::Id(KeyId(id)));
        }
        match input.split_once(':') {
            // Naming a namespace to find a key in it: the looser rule, so keys of namespaces
            // stored before the strict rule stay reachable.
            Some((ns, alias)) => Ok(Self::Alias(Namespace::existing(ns)?, Alias::new(alias)?)),
            None => Ok(Self::Alias(namespace.clone(), Alias::new(input)?)),
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Alias(ns, a) => write!(f, "{ns}:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `r` is the refusal of an invalid `field` (the message says what a valid one is).
    fn invalid<T>(r: Result<T, Error>, field: &str) -> bool {
        matches!(r, Err(Error::InvalidArgument(InvalidInput { field: f, .. })) if f == field)
    }

    #[test]
    fn names_are_validated() {
        assert!(Namespace::new("payments-prod").is_ok());
        for bad in ["", "-x", "a b", &"a".repeat(65)] {
            assert!(invalid(Namespace::new(bad), "namespace"), "{bad:?}");
        }
        assert!(Alias::new("orders/card-pan").is_ok());
        assert!(invalid(
            Alias::new("6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11"),
            "alias"
        ));
    }

    #[test]
    fn new_namespaces_are_lower_case_and_not_reserved_but_stored_ones_still_parse() {
        for good in ["a", "0", "payments-prod", "a.b_c-1", &"a".repeat(63)] {
            assert!(Namespace::new(good).is_ok(), "{good:?}");
        }
        for bad in [
            "Payments",
            "pAyments",
            "a.",
            "a-",
            "_a",
            "a b",
            "ä",
            &"a".repeat(64),
        ] {
            let r = Namespace::new(bad);
            assert!(
                matches!(&r, Err(Error::InvalidArgument(e)) if e.field == "namespace" && e.problem.contains("lower-case")),
                "{bad:?}: {r:?}"
            );
        }
        for reserved in [
            "kms-system",
            "KMS-SYSTEM",
            "Kms-System",
            "kms-system.",
            "kms-system..",
        ] {
            let r = Namespace::new(reserved);
            assert!(
                matches!(&r, Err(Error::InvalidArgument(e)) if e.problem.contains("reserved")),
                "{reserved:?}: {r:?}"
            );
            // Naming it to find something is still possible (the audit key lives there).
            let named = Namespace::existing(reserved).unwrap();
            assert!(named.is_reserved());
            assert!(named.check_new().is_err());
        }
        // The earlier rule, for stored records and references: upper case and 64 characters.
        for stored in ["Payments", "a.", &"A".repeat(64)] {
            let n = Namespace::existing(stored).unwrap();
            let decoded: Namespace = serde_json::from_str(&format!("{stored:?}")).unwrap();
            assert_eq!(decoded, n);
        }
        assert!(invalid(Namespace::existing(&"a".repeat(65)), "namespace"));
        assert!(matches!(
            KeyRef::parse("Legacy:orders", &Namespace::new("a").unwrap()),
            Ok(KeyRef::Alias(ns, _)) if ns.as_str() == "Legacy"
        ));
    }

    #[test]
    fn key_refs_parse_ids_aliases_and_qualified_aliases() {
        let ns = Namespace::new("default").unwrap();
        let id = "6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11";
        assert!(matches!(KeyRef::parse(id, &ns).unwrap(), KeyRef::Id(_)));
        assert_eq!(
            KeyRef::parse("orders", &ns).unwrap().to_string(),
            "default:orders"
        );
        assert_eq!(
            KeyRef::parse("other:orders", &ns).unwrap().to_string(),
            "other:orders"
        );
        assert!(invalid(KeyRef::parse("bad alias!", &ns), "alias"));
        assert!(invalid(KeyRef::parse("bad ns:orders", &ns), "namespace"));
    }
}
