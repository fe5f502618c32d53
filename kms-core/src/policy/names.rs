//! Turning the names people type into algorithms, and explaining every refusal (ALG-3).
//!
//! Names are matched in any case, with or without `-`, `_`, `/`, `.` or spaces. A forbidden name
//! gets an error naming the algorithm, the reason, the rule and the standard's clause; an unknown
//! name gets the list of what is offered.

use crate::alg::{DataKeySpec, DigestAlg, KeySpec, RsaSigScheme};

use super::PolicyError;

/// The standard clause for weak algorithms: "不应使用已知的弱密码算法，例如：DES、RC2、RC4、
/// BLOWFISH、MD4、MD5、SHA1 等".
const CLAUSE_WEAK: &str = "T/NIFA 33-2025 §6.5.1 b";
/// Key too short: "密钥长度不足，例如 RSA 密钥长度小于 2048".
const CLAUSE_SHORT_KEY: &str = "T/NIFA 33-2025 §6.5.1 c 1)";
/// Weak block modes: "选择安全性低的分组模式，例如 ECB 模式".
const CLAUSE_WEAK_MODE: &str = "T/NIFA 33-2025 §6.5.1 c 2)";
/// Configurations outside industry best practice.
const CLAUSE_BEST_PRACTICE: &str = "T/NIFA 33-2025 §6.5.1 c";
/// Custom (private) algorithms: §6.5.1 c 5) and the insurance standard's §6.1.8.
const CLAUSE_CUSTOM: &str = "T/NIFA 33-2025 §6.5.1 c 5); insurance app standard §6.1.8";

/// One entry of the deny table: a normalized pattern and why it is refused.
struct Denied {
    pattern: Match,
    algorithm: &'static str,
    reason: &'static str,
    clause: &'static str,
}

enum Match {
    /// The normalized name contains this text.
    Contains(&'static str),
    /// The normalized name starts with this text.
    Prefix(&'static str),
    /// The normalized name is exactly this text.
    Exact(&'static str),
}

impl Match {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Contains(p) => name.contains(p),
            Self::Prefix(p) => name.starts_with(p),
            Self::Exact(p) => name == *p,
        }
    }
}

const fn deny(
    pattern: Match,
    algorithm: &'static str,
    reason: &'static str,
    clause: &'static str,
) -> Denied {
    Denied {
        pattern,
        algorithm,
        reason,
        clause,
    }
}

/// Order matters: the first match explains the refusal, so specific entries come first.
const DENY: &[Denied] = &[
    deny(
        Match::Contains("tdea"),
        "3DES",
        "Triple DES has a 64-bit block and at most 112-bit security",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("tdes"),
        "3DES",
        "Triple DES has a 64-bit block and at most 112-bit security",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("3des"),
        "3DES",
        "Triple DES has a 64-bit block and at most 112-bit security",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("desede"),
        "3DES",
        "Triple DES has a 64-bit block and at most 112-bit security",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("tripledes"),
        "3DES",
        "Triple DES has a 64-bit block and at most 112-bit security",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("des"),
        "DES",
        "DES has a 56-bit key",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("rc2"),
        "RC2",
        "RC2 is a broken 64-bit block cipher",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("arcfour"),
        "RC4",
        "RC4 keystreams are biased",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("arc4"),
        "RC4",
        "RC4 keystreams are biased",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("rc4"),
        "RC4",
        "RC4 keystreams are biased",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("blowfish"),
        "Blowfish",
        "Blowfish has a 64-bit block",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Prefix("bf"),
        "Blowfish",
        "Blowfish has a 64-bit block",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("md4"),
        "MD4",
        "MD4 collisions are trivial",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("md5"),
        "MD5",
        "MD5 collisions are practical",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("sha1"),
        "SHA-1",
        "SHA-1 collisions are practical",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Exact("sha"),
        "SHA-1",
        "SHA-1 collisions are practical",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("sha0"),
        "SHA-0",
        "SHA-0 is broken",
        CLAUSE_WEAK,
    ),
    deny(
        Match::Contains("ecb"),
        "ECB mode",
        "ECB leaks equal plaintext blocks",
        CLAUSE_WEAK_MODE,
    ),
    deny(
        Match::Contains("cbc"),
        "CBC mode",
        "unauthenticated modes are not allowed for data; use a GCM spec",
        CLAUSE_WEAK_MODE,
    ),
    deny(
        Match::Contains("ctr"),
        "CTR mode",
        "unauthenticated modes are not allowed for data; use a GCM spec",
        CLAUSE_WEAK_MODE,
    ),
    deny(
        Match::Contains("cfb"),
        "CFB mode",
        "unauthenticated modes are not allowed for data; use a GCM spec",
        CLAUSE_WEAK_MODE,
    ),
    deny(
        Match::Contains("ofb"),
        "OFB mode",
        "unauthenticated modes are not allowed for data; use a GCM spec",
        CLAUSE_WEAK_MODE,
    ),
    deny(
        Match::Contains("rsaes"),
        "RSA PKCS#1 v1.5 encryption",
        "PKCS#1 v1.5 encryption padding is open to padding-oracle attacks; use RSA-OAEP",
        CLAUSE_BEST_PRACTICE,
    ),
    deny(
        Match::Contains("pkcs1v15enc"),
        "RSA PKCS#1 v1.5 encryption",
        "PKCS#1 v1.5 encryption padding is open to padding-oracle attacks; use RSA-OAEP",
        CLAUSE_BEST_PRACTICE,
    ),
    deny(
        Match::Contains("custom"),
        "custom algorithm",
        "home-made algorithms are not allowed",
        CLAUSE_CUSTOM,
    ),
];

/// Lower-case and drop separators, so `AES_256-GCM`, `aes 256 gcm` and `Aes256Gcm` are one name.
#[must_use]
pub fn normalize(input: &str) -> String {
    input
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '/' | '.' | ' ' | '\t'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A printable, bounded copy of what the user typed, for error messages.
fn shown(input: &str) -> String {
    let mut s: String = input
        .chars()
        .take(64)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().count() > 64 {
        s.push('…');
    }
    s
}

/// Refuses forbidden names (and RSA sizes below 2048) with their reason.
fn check_denied(input: &str, norm: &str) -> Result<(), PolicyError> {
    if let Some(bits) = rsa_bits(norm)
        && bits < 2048
    {
        return Err(PolicyError::Forbidden {
            input: shown(input),
            algorithm: "RSA below 2048 bits",
            reason: "RSA keys under 2048 bits are too short",
            rule: "ALG-3",
            clause: CLAUSE_SHORT_KEY,
        });
    }
    match DENY.iter().find(|d| d.pattern.matches(norm)) {
        Some(d) => Err(PolicyError::Forbidden {
            input: shown(input),
            algorithm: d.algorithm,
            reason: d.reason,
            rule: "ALG-3",
            clause: d.clause,
        }),
        None => Ok(()),
    }
}

/// `rsa1024`, `rsa1024sha256`… → 1024.
fn rsa_bits(norm: &str) -> Option<usize> {
    let rest = norm.strip_prefix("rsa")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn unknown(input: &str, kind: &'static str, allowed: &[&str]) -> PolicyError {
    PolicyError::Unknown {
        input: shown(input),
        kind,
        allowed: allowed.join(", "),
    }
}

/// A key spec, e.g. `sm4-gcm`, `SM4`, `aes256gcm`, `RSA_3072`, `hmac-sm3`.
pub fn parse_key_spec(input: &str) -> Result<KeySpec, PolicyError> {
    let norm = normalize(input);
    check_denied(input, &norm)?;
    let spec = match norm.as_str() {
        "sm4gcm" | "sm4" => KeySpec::Sm4Gcm,
        "aes256gcm" | "aes256" => KeySpec::Aes256Gcm,
        "sm2" => KeySpec::Sm2,
        "rsa2048" => KeySpec::Rsa2048,
        "rsa3072" => KeySpec::Rsa3072,
        "rsa4096" => KeySpec::Rsa4096,
        "hmacsm3" => KeySpec::HmacSm3,
        "hmacsha256" => KeySpec::HmacSha256,
        "hmacsha384" => KeySpec::HmacSha384,
        "hmacsha512" => KeySpec::HmacSha512,
        "sm4ff1" => KeySpec::Sm4Ff1,
        "aes256ff1" => KeySpec::Aes256Ff1,
        _ => {
            let names: Vec<&str> = KeySpec::ALL.iter().map(|s| s.name()).collect();
            return Err(unknown(input, "key spec", &names));
        }
    };
    Ok(spec)
}

/// A digest name: `sm3`, `sha256`, `SHA-384`, `sha512`.
pub fn parse_digest(input: &str) -> Result<DigestAlg, PolicyError> {
    let norm = normalize(input);
    check_denied(input, &norm)?;
    match norm.as_str() {
        "sm3" => Ok(DigestAlg::Sm3),
        "sha256" | "sha2256" => Ok(DigestAlg::Sha256),
        "sha384" | "sha2384" => Ok(DigestAlg::Sha384),
        "sha512" | "sha2512" => Ok(DigestAlg::Sha512),
        _ => Err(unknown(
            input,
            "digest",
            &["sm3", "sha256", "sha384", "sha512"],
        )),
    }
}

/// An RSA signature scheme: `pss` or `pkcs1v15`.
pub fn parse_rsa_sig_scheme(input: &str) -> Result<RsaSigScheme, PolicyError> {
    let norm = normalize(input);
    check_denied(input, &norm)?;
    match norm.as_str() {
        "pss" | "rsapss" | "rsassapss" => Ok(RsaSigScheme::Pss),
        "pkcs1v15" | "pkcs1" | "rsassapkcs1v15" => Ok(RsaSigScheme::Pkcs1v15),
        _ => Err(unknown(input, "RSA signature scheme", &["pss", "pkcs1v15"])),
    }
}

/// An RSA encryption padding: only OAEP with SHA-256 is offered; PKCS#1 v1.5 is refused.
pub fn parse_rsa_encryption_padding(input: &str) -> Result<(), PolicyError> {
    let norm = normalize(input);
    if matches!(
        norm.as_str(),
        "pkcs1v15" | "pkcs1" | "rsapkcs1v15" | "rsapkcs1"
    ) {
        return Err(PolicyError::Forbidden {
            input: shown(input),
            algorithm: "RSA PKCS#1 v1.5 encryption",
            reason: "PKCS#1 v1.5 encryption padding is open to padding-oracle attacks; use RSA-OAEP",
            rule: "ALG-3",
            clause: CLAUSE_BEST_PRACTICE,
        });
    }
    check_denied(input, &norm)?;
    match norm.as_str() {
        "oaep" | "oaepsha256" | "rsaoaep" | "rsaoaepsha256" => Ok(()),
        _ => Err(unknown(input, "RSA encryption padding", &["oaep-sha256"])),
    }
}

/// A data-key spec: `sm4` or `aes-256`.
pub fn parse_data_key_spec(input: &str) -> Result<DataKeySpec, PolicyError> {
    let norm = normalize(input);
    check_denied(input, &norm)?;
    match norm.as_str() {
        "sm4" | "sm4gcm" | "sm4128" => Ok(DataKeySpec::Sm4),
        "aes256" | "aes256gcm" => Ok(DataKeySpec::Aes256),
        _ => Err(unknown(input, "data key spec", &["sm4", "aes-256"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_parse_to_themselves() {
        for spec in KeySpec::ALL {
            assert_eq!(parse_key_spec(spec.name()).unwrap(), spec);
            assert_eq!(parse_key_spec(&spec.name().to_uppercase()).unwrap(), spec);
            assert_eq!(parse_key_spec(&spec.name().replace('-', "")).unwrap(), spec);
            assert_eq!(
                parse_key_spec(&spec.name().replace('-', "_")).unwrap(),
                spec
            );
        }
        for d in DigestAlg::ALL {
            assert_eq!(parse_digest(d.name()).unwrap(), d);
        }
        assert_eq!(parse_digest("SHA-256").unwrap(), DigestAlg::Sha256);
        assert_eq!(parse_rsa_sig_scheme("PSS").unwrap(), RsaSigScheme::Pss);
        assert_eq!(
            parse_rsa_sig_scheme("pkcs1-v1_5").unwrap(),
            RsaSigScheme::Pkcs1v15
        );
        assert_eq!(parse_data_key_spec("AES-256").unwrap(), DataKeySpec::Aes256);
        assert_eq!(parse_data_key_spec("sm4").unwrap(), DataKeySpec::Sm4);
        parse_rsa_encryption_padding("OAEP-SHA256").unwrap();
    }

    #[test]
    fn forbidden_names_name_the_algorithm_rule_and_clause() {
        let e = parse_key_spec("DES").unwrap_err().to_string();
        assert!(
            e.contains("DES") && e.contains("ALG-3") && e.contains("§6.5.1 b"),
            "{e}"
        );
        let e = parse_key_spec("rsa-1024").unwrap_err().to_string();
        assert!(e.contains("2048") && e.contains("§6.5.1 c 1)"), "{e}");
        let e = parse_key_spec("SM4-ECB").unwrap_err().to_string();
        assert!(e.contains("ECB") && e.contains("c 2)"), "{e}");
        let e = parse_key_spec("aes-256-cbc").unwrap_err().to_string();
        assert!(e.contains("CBC") && e.contains("unauthenticated"), "{e}");
        let e = parse_digest("sha-1").unwrap_err().to_string();
        assert!(e.contains("SHA-1"), "{e}");
        let e = parse_rsa_encryption_padding("pkcs1v15")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PKCS#1 v1.5 encryption"), "{e}");
        let e = parse_key_spec("DESede").unwrap_err().to_string();
        assert!(e.contains("3DES"), "{e}");
    }

    #[test]
    fn unknown_names_list_what_is_offered() {
        let e = parse_key_spec("aes-128-gcm").unwrap_err().to_string();
        assert!(e.contains("sm4-gcm") && e.contains("aes-256-gcm"), "{e}");
        let e = parse_key_spec("rsa-8192").unwrap_err().to_string();
        assert!(e.contains("rsa-4096"), "{e}");
    }

    #[test]
    fn error_messages_are_bounded_and_printable() {
        let long = "x".repeat(10_000);
        let e = parse_key_spec(&long).unwrap_err().to_string();
        assert!(e.len() < 600, "{}", e.len());
        let e = parse_key_spec("a\u{0}\u{1b}[31m").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && !e.contains('\u{0}'), "{e:?}");
    }
}
