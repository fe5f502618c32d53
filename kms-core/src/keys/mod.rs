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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: &str) -> Result<Self, Error> {
        if valid_name(s, Self::MAX_LEN, &['-', '_', '.']) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidInput::new(
                "namespace",
                "use 1 to 64 characters: letters, digits, '-', '_', '.', starting with a letter or digit",
            )
            .into())
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(&s)
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
            Some((ns, alias)) => Ok(Self::Alias(Namespace::new(ns)?, Alias::new(alias)?)),
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
