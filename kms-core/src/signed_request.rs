//! Signed requests (issue 22 item 3; 002 §6.4.3 b–c, 004 §5.5.3.5): what a gateway hands the
//! KMS to check that a partner's request is authentic, unaltered and not a replay.
//!
//! A partner signs the canonical string of its request (docs/FORMATS.md, "The signed request"):
//!
//! ```text
//! KMS-REQUEST-V1 LF METHOD LF path LF timestamp LF hex(nonce) LF hex(body digest)
//! ```
//!
//! with no trailing line feed. The body digest is SM3 for the `sm2` and `hmac-sm3` schemes and
//! SHA-256 for `rsa-pss`; the signature is SM2 (GM/T 0009 default ID, SM3 over Z and the
//! string), HMAC-SM3 (32 bytes) or RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt,
//! always over the whole canonical string, so any tool that signs bytes can make one.
//!
//! The shape rules below make the string unambiguous: a method is a bare upper-case word, a
//! path has no spaces or control characters (so no line feed can shift a field), the
//! timestamp is decimal Unix seconds and the other two fields are fixed-alphabet hex. A request
//! that breaks them is *malformed* before any key is used.

use sha2::Sha256;
use sm3::{Digest, Sm3};

use crate::replay::ReplayGuard;

/// The first line of every canonical string: its version.
pub const CANONICAL_PREFIX: &str = "KMS-REQUEST-V1";
/// Longest method: the longest registered HTTP method is 17 letters
/// (`VERSION-CONTROL` has a hyphen and is not accepted); 16 covers every common one.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest path (with its query): what common gateways accept on a request line.
pub const MAX_PATH_LEN: usize = 8192;
/// Longest signature accepted: an RSA-4096 signature is 512 bytes.
pub const MAX_SIGNATURE_LEN: usize = 1024;
/// A body digest is 32 bytes under every scheme (SM3, SHA-256).
pub const BODY_DIGEST_LEN: usize = 32;

/// How a request is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestScheme {
    /// SM2 with SM3 (GM/T 0009, default distinguishing ID) by a sign key.
    Sm2,
    /// HMAC-SM3 with a MAC key shared with the partner.
    HmacSm3,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt, by an RSA sign key.
    RsaPss,
}

impl RequestScheme {
    pub const ALL: [Self; 3] = [Self::Sm2, Self::HmacSm3, Self::RsaPss];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm2 => "sm2",
            Self::HmacSm3 => "hmac-sm3",
            Self::RsaPss => "rsa-pss",
        }
    }

    /// The scheme of a name as [`RequestScheme::name`] spells it (any case).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }

    /// SM3 for the GM schemes, SHA-256 for RSA-PSS.
    #[must_use]
    pub fn body_digest(self, body: &[u8]) -> [u8; BODY_DIGEST_LEN] {
        match self {
            Self::Sm2 | Self::HmacSm3 => Sm3::digest(body).into(),
            Self::RsaPss => Sha256::digest(body).into(),
        }
    }

    /// The digest's name, for messages and documentation.
    #[must_use]
    pub fn body_digest_name(self) -> &'static str {
        match self {
            Self::Sm2 | Self::HmacSm3 => "SM3",
            Self::RsaPss => "SHA-256",
        }
    }
}

impl core::fmt::Display for RequestScheme {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The body as the gateway gives it: the bytes, or their digest under the scheme's hash.
/// `Debug` shows which and its length: a body may be a payment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RequestBody<'a> {
    Bytes(&'a [u8]),
    Digest(&'a [u8]),
}

impl core::fmt::Debug for RequestBody<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            Self::Digest(d) => write!(f, "Digest(<{} bytes>)", d.len()),
        }
    }
}

/// The parts of a partner's request that its signature covers. `Debug` shows the method, the
/// timestamp and lengths (a path's query may hold an account number).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Unix seconds.
    pub timestamp: u64,
    pub nonce: &'a [u8],
    pub body: RequestBody<'a>,
}

impl core::fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RequestParts")
            .field("method", &self.method)
            .field("path_len", &self.path.len())
            .field("timestamp", &self.timestamp)
            .field("nonce_len", &self.nonce.len())
            .field("body", &self.body)
            .finish()
    }
}

/// Why a request is malformed: a field and what is wrong with it. Says nothing about keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub field: &'static str,
    pub problem: String,
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

fn malformed(field: &'static str, problem: impl Into<String>) -> Malformed {
    Malformed {
        field,
        problem: problem.into(),
    }
}

/// Checks the method: 1 to [`MAX_METHOD_LEN`] upper-case ASCII letters (`GET`, `POST`).
pub fn check_method(method: &str) -> Result<(), Malformed> {
    if method.is_empty() || method.len() > MAX_METHOD_LEN {
        return Err(malformed(
            "method",
            format!(
                "must be 1 to {MAX_METHOD_LEN} letters; it is {} bytes",
                method.len()
            ),
        ));
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(malformed(
            "method",
            "must be upper-case ASCII letters (GET, POST)",
        ));
    }
    Ok(())
}

/// Checks the path: starts with `/`, at most [`MAX_PATH_LEN`] bytes of visible ASCII (query
/// included, percent-encoded as sent; no spaces, no control characters).
pub fn check_path(path: &str) -> Result<(), Malformed> {
    if !path.starts_with('/') {
        return Err(malformed("path", "must start with '/'"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(malformed(
            "path",
            format!(
                "must be at most {MAX_PATH_LEN} bytes; it is {} bytes",
                path.len()
            ),
        ));
    }
    if let Some(at) = path.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(malformed(
            "path",
            format!("must be visible ASCII (percent-encode the rest); byte {at} is not"),
        ));
    }
    Ok(())
}

/// Checks the signed fields' shapes, in the order of the string, and returns the body digest.
fn check_fields(
    scheme: RequestScheme,
    parts: &RequestParts<'_>,
) -> Result<[u8; BODY_DIGEST_LEN], Malformed> {
    check_method(parts.method)?;
    check_path(parts.path)?;
    ReplayGuard::check_nonce(parts.nonce).map_err(|e| malformed("nonce", e.problem))?;
    match parts.body {
        RequestBody::Bytes(b) => Ok(scheme.body_digest(b)),
        RequestBody::Digest(d) => <[u8; BODY_DIGEST_LEN]>::try_from(d).map_err(|_| {
            malformed(
                "body digest",
                format!(
                    "must be the {BODY_DIGEST_LEN}-byte {} of the body; it is {} bytes",
                    scheme.body_digest_name(),
                    d.len()
                ),
            )
        }),
    }
}

/// Checks every field's shape (not the signature's validity).
pub fn check_shape(
    scheme: RequestScheme,
    parts: &RequestParts<'_>,
    signature: &[u8],
) -> Result<(), Malformed> {
    check_fields(scheme, parts)?;
    if signature.is_empty() || signature.len() > MAX_SIGNATURE_LEN {
        return Err(malformed(
            "signature",
            format!(
                "must be 1 to {MAX_SIGNATURE_LEN} bytes; it is {} bytes",
                signature.len()
            ),
        ));
    }
    Ok(())
}

/// The canonical string of a request under `scheme` (module docs).
///
/// # Errors
/// The first field whose shape is wrong.
pub fn canonical(scheme: RequestScheme, parts: &RequestParts<'_>) -> Result<Vec<u8>, Malformed> {
    let digest = check_fields(scheme, parts)?;
    let mut s = String::with_capacity(
        CANONICAL_PREFIX.len() + parts.method.len() + parts.path.len() + 20 + 2 * 64 + 2 * 32 + 5,
    );
    s.push_str(CANONICAL_PREFIX);
    s.push('\n');
    s.push_str(parts.method);
    s.push('\n');
    s.push_str(parts.path);
    s.push('\n');
    s.push_str(&parts.timestamp.to_string());
    s.push('\n');
    s.push_str(&hex::encode(parts.nonce));
    s.push('\n');
    s.push_str(&hex::encode(digest));
    Ok(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(body: RequestBody<'a>) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            path: "/v1/transfer?id=7",
            timestamp: 1_764_806_400,
            nonce: b"0123456789abcdef",
            body,
        }
    }

    /// The example of docs/FORMATS.md, byte for byte (the digests are SM3("abc") and
    /// SHA-256("abc"), GB/T 32905's and FIPS 180-2's own examples).
    #[test]
    fn canonical_string_is_the_documented_one() {
        let sm2 = canonical(RequestScheme::Sm2, &parts(RequestBody::Bytes(b"abc"))).unwrap();
        assert_eq!(
            String::from_utf8(sm2).unwrap(),
            "KMS-REQUEST-V1\nPOST\n/v1/transfer?id=7\n1764806400\n\
             30313233343536373839616263646566\n\
             66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let rsa = canonical(RequestScheme::RsaPss, &parts(RequestBody::Bytes(b"abc"))).unwrap();
        assert!(
            String::from_utf8(rsa)
                .unwrap()
                .ends_with("\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn a_digest_stands_for_its_body() {
        let d = Sm3::digest(b"abc");
        assert_eq!(
            canonical(RequestScheme::HmacSm3, &parts(RequestBody::Digest(&d))).unwrap(),
            canonical(RequestScheme::HmacSm3, &parts(RequestBody::Bytes(b"abc"))).unwrap()
        );
    }

    #[test]
    fn shapes_that_could_shift_a_field_are_malformed() {
        let ok = parts(RequestBody::Bytes(b""));
        let field = |p: RequestParts<'_>, sig: &[u8]| {
            check_shape(RequestScheme::Sm2, &p, sig).unwrap_err().field
        };
        assert_eq!(
            field(
                RequestParts {
                    method: "post",
                    ..ok
                },
                b"s"
            ),
            "method"
        );
        assert_eq!(field(RequestParts { method: "", ..ok }, b"s"), "method");
        assert_eq!(
            field(
                RequestParts {
                    method: "GET\n",
                    ..ok
                },
                b"s"
            ),
            "method"
        );
        assert_eq!(field(RequestParts { path: "v1", ..ok }, b"s"), "path");
        assert_eq!(field(RequestParts { path: "/a b", ..ok }, b"s"), "path");
        assert_eq!(
            field(
                RequestParts {
                    path: "/a\n1",
                    ..ok
                },
                b"s"
            ),
            "path"
        );
        assert_eq!(field(RequestParts { path: "/é", ..ok }, b"s"), "path");
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(field(RequestParts { path: &long, ..ok }, b"s"), "path");
        assert_eq!(
            field(
                RequestParts {
                    nonce: b"short",
                    ..ok
                },
                b"s"
            ),
            "nonce"
        );
        let huge = vec![0u8; 1 << 20];
        assert_eq!(field(RequestParts { nonce: &huge, ..ok }, b"s"), "nonce");
        let short = RequestParts {
            body: RequestBody::Digest(&[0; 31]),
            ..ok
        };
        assert_eq!(field(short, b"s"), "body digest");
        assert_eq!(field(ok, b""), "signature");
        assert_eq!(field(ok, &huge), "signature");
        assert!(check_shape(RequestScheme::Sm2, &ok, b"s").is_ok());
    }

    #[test]
    fn debug_shows_lengths_not_the_body_or_path() {
        let p = RequestParts {
            path: "/pay?acct=6222020000001237",
            ..parts(RequestBody::Bytes(b"{\"card\":\"6222020000001237\"}"))
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("6222"), "{shown}");
        assert!(
            shown.contains("path_len: 26") && shown.contains("Bytes(<27 bytes>)"),
            "{shown}"
        );
    }

    #[test]
    fn scheme_names_round_trip() {
        for s in RequestScheme::ALL {
            assert_eq!(RequestScheme::parse(s.name()), Some(s));
            assert_eq!(RequestScheme::parse(&s.name().to_uppercase()), Some(s));
        }
        assert_eq!(RequestScheme::parse("ecdsa"), None);
    }
}
