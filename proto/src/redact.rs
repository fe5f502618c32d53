//! `Debug` for the messages that carry secrets: plaintext, key bytes, unseal shares, and
//! encryption contexts (which may hold personal data). Lengths and public fields only.
//!
//! build.rs marks exactly these messages `skip_debug`; if one is added there and not here, the
//! crate does not compile (the generated type would have no `Debug`), and the test below checks
//! that no secret byte shows.

use core::fmt;

use crate::v1;

struct Len(usize);

impl fmt::Debug for Len {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

struct Entries(usize);

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} entries>", self.0)
    }
}

macro_rules! redacted {
    ($ty:ident { $($field:ident : $how:ident),* $(,)? }) => {
        impl fmt::Debug for v1::$ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &redacted!(@$how self.$field)))*
                    .finish()
            }
        }
    };
    (@len $e:expr) => { Len($e.len()) };
    (@entries $e:expr) => { Entries($e.len()) };
    (@show $e:expr) => { &$e };
}

redacted!(EncryptRequest {
    key: show,
    plaintext: len,
    context: entries
});
redacted!(DecryptRequest {
    ciphertext: len,
    context: entries
});
redacted!(DecryptResponse {
    plaintext: len,
    key_id: show,
    key_version: show,
    key_compromised: show
});
redacted!(ReEncryptRequest {
    ciphertext: len,
    source_context: entries,
    destination_key: show,
    destination_context: entries,
});
redacted!(GenerateDataKeyRequest {
    key: show,
    key_spec: show,
    context: entries,
    wrap_to_public_key: len
});
redacted!(GenerateDataKeyResponse {
    ciphertext: len,
    plaintext: len,
    plaintext_encrypted: len,
    key_id: show,
    key_version: show,
});
redacted!(SignRequest {
    key: show,
    message: len,
    message_type: show,
    sm2_id: len,
    rsa_scheme: show,
    hash: show
});
redacted!(VerifyRequest {
    key: show,
    message: len,
    message_type: show,
    sm2_id: len,
    rsa_scheme: show,
    hash: show,
    signature: len,
    key_version: show,
});
redacted!(AsymmetricDecryptResponse {
    plaintext: len,
    key_id: show,
    key_version: show,
    key_compromised: show
});
redacted!(GenerateMacRequest {
    key: show,
    data: len
});
redacted!(VerifyMacRequest {
    key: show,
    data: len,
    mac: len,
    key_version: show
});
redacted!(GenerateRandomResponse { random: len });
redacted!(InitResponse {
    shares: len,
    threshold: show,
    admin_subject: show
});
redacted!(UnsealRequest { share: len });
redacted!(RestoreChunk {
    shares: len,
    data: len
});
// The password shield: sealed passwords, stored hashes (material for an offline guess) and user
// identifiers (personal data) are shown as sizes.
redacted!(HashPasswordRequest {
    password_key: show,
    pepper_key: show,
    sealed_password: len,
    identifiers: entries,
});
redacted!(HashPasswordResponse {
    hash: len,
    password_key_id: show,
    password_key_version: show,
    pepper_key_id: show,
    pepper_key_version: show,
});
redacted!(VerifyPasswordRequest {
    password_key: show,
    sealed_password: len,
    stored_hash: len,
    identifiers: entries,
});
redacted!(VerifyPasswordResponse {
    matched: show,
    rehashed: len,
    weak: show,
    password_key_id: show,
    password_key_version: show,
    pepper_key_id: show,
    pepper_key_version: show,
    key_compromised: show,
});

// A partner's signed request: its body may be a payment and is shown as a size, as are the
// nonce and the signature (no use to anyone reading a log).
redacted!(SignedRequest {
    key: show,
    scheme: show,
    signature: len,
    timestamp: show,
    nonce: len,
    method: show,
    path: len,
    body: len,
    body_digest: len,
});

struct Values<'a>(&'a [String]);

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: usize = self.0.iter().map(String::len).sum();
        write!(f, "<{} values, {bytes} bytes>", self.0.len())
    }
}

impl fmt::Debug for v1::TokenizeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenizeRequest")
            .field("key", &self.key)
            .field("format", &self.format)
            .field("context", &Entries(self.context.len()))
            .field("values", &Values(&self.values))
            .finish()
    }
}

impl fmt::Debug for v1::DetokenizeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetokenizeRequest")
            .field("key", &self.key)
            .field("key_version", &self.key_version)
            .field("format", &self.format)
            .field("context", &Entries(self.context.len()))
            .field("tokens", &Values(&self.tokens))
            .finish()
    }
}

/// A token or a value prints as its length; an error as itself (it never holds a value).
impl fmt::Debug for v1::TokenResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Some(v1::token_result::Result::Ok(s)) => f
                .debug_tuple("TokenResult::Ok")
                .field(&Len(s.len()))
                .finish(),
            Some(v1::token_result::Result::Error(e)) => {
                f.debug_tuple("TokenResult::Error").field(e).finish()
            }
            None => f.write_str("TokenResult(None)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn secrets_print_as_lengths() {
        let secret = "TOPSECRETVALUE";
        let shown = [
            format!(
                "{:?}",
                v1::EncryptRequest {
                    key: "k".into(),
                    plaintext: secret.as_bytes().to_vec(),
                    context: [("user".to_string(), secret.to_string())].into(),
                }
            ),
            format!(
                "{:?}",
                v1::DecryptResponse {
                    plaintext: secret.as_bytes().to_vec(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::UnsealRequest {
                    share: secret.into()
                }
            ),
            format!(
                "{:?}",
                v1::InitResponse {
                    shares: vec![secret.into()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::GenerateDataKeyResponse {
                    plaintext: secret.as_bytes().to_vec(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::GenerateRandomResponse {
                    random: secret.as_bytes().to_vec()
                }
            ),
            format!(
                "{:?}",
                v1::HashPasswordRequest {
                    sealed_password: secret.as_bytes().to_vec(),
                    identifiers: vec![secret.into()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::HashPasswordResponse {
                    hash: secret.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::VerifyPasswordRequest {
                    sealed_password: secret.as_bytes().to_vec(),
                    stored_hash: secret.into(),
                    identifiers: vec![secret.into()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::VerifyPasswordResponse {
                    rehashed: secret.into(),
                    ..Default::default()
                }
            ),
            // Batches print their items through the items' own redacted Debug.
            format!(
                "{:?}",
                v1::BatchEncryptRequest {
                    items: vec![v1::EncryptRequest {
                        key: "k".into(),
                        plaintext: secret.as_bytes().to_vec(),
                        context: [("user".to_string(), secret.to_string())].into(),
                    }],
                }
            ),
            format!(
                "{:?}",
                v1::BatchDecryptResponse {
                    results: vec![v1::BatchDecryptResult {
                        result: Some(v1::batch_decrypt_result::Result::Ok(v1::DecryptResponse {
                            plaintext: secret.as_bytes().to_vec(),
                            ..Default::default()
                        })),
                    }],
                }
            ),
            format!(
                "{:?}",
                v1::SignedRequest {
                    signature: secret.as_bytes().to_vec(),
                    nonce: secret.as_bytes().to_vec(),
                    path: format!("/pay?acct={secret}"),
                    body: secret.as_bytes().to_vec(),
                    body_digest: secret.as_bytes().to_vec(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::TokenizeRequest {
                    key: "k".into(),
                    format: "pan".into(),
                    context: [("user".to_string(), secret.to_string())].into(),
                    values: vec![secret.into()],
                }
            ),
            format!(
                "{:?}",
                v1::DetokenizeRequest {
                    tokens: vec![secret.into()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::TokenizeResponse {
                    results: vec![v1::TokenResult {
                        result: Some(v1::token_result::Result::Ok(secret.into())),
                    }],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::DetokenizeResponse {
                    results: vec![v1::TokenResult {
                        result: Some(v1::token_result::Result::Ok(secret.into())),
                    }],
                    ..Default::default()
                }
            ),
        ];
        for s in &shown {
            assert!(!s.contains(secret) && !s.contains("84, 79, 80"), "{s}");
            assert!(s.contains("bytes>") || s.contains("entries>"), "{s}");
        }
    }
}
