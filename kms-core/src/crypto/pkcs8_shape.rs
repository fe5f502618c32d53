//! What an imported private key document must look like before its algorithm's parser sees it
//! (issue 19 item 6). The RustCrypto parsers skip PKCS#8 attributes silently and call an
//! encrypted PKCS#8 merely "malformed"; an administrator moving a key in needs to hear which of
//! the two it was, and attributes (which could carry anything) are refused, not dropped.

use rsa::pkcs8::der::asn1::AnyRef;
use rsa::pkcs8::der::{Decode, Reader, SliceReader, Tag, Tagged};

/// A private key file as people have it: PEM (`PRIVATE KEY`, PKCS#8) or DER. Other PEM labels
/// are named (`EC PRIVATE KEY` and `RSA PRIVATE KEY` are the SEC1 and PKCS#1 forms, which
/// `openssl pkcs8 -topk8 -nocrypt` converts). Bytes that are not PEM are returned as they are.
/// The PEM label is parsed only to find the block; the key is never echoed.
///
/// # Errors
/// INVALID_ARGUMENT for damaged PEM or another label.
pub fn der_from_pem_or_der(bytes: &[u8]) -> Result<crate::SecretBytes, crate::Error> {
    use rsa::pkcs8::der::pem;
    const BEGIN: &str = "-----BEGIN ";
    let Some(text) = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.trim_start().starts_with(BEGIN))
    else {
        return Ok(crate::SecretBytes::copy_from_slice(bytes));
    };
    // A file may hold several blocks (`openssl ecparam -genkey` writes EC PARAMETERS first):
    // take the PKCS#8 one, or name what is there.
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(BEGIN) {
        let block = &rest[at..];
        let label = block[BEGIN.len()..]
            .split("-----")
            .next()
            .unwrap_or_default();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            break;
        };
        let whole = &block[..end + end_marker.len()];
        if label == "PRIVATE KEY" {
            let (_, der) = pem::decode_vec(whole.as_bytes())
                .map_err(|_| crate::InvalidInput::new("private key", "damaged PEM"))?;
            return Ok(crate::SecretBytes::from_vec(der));
        }
        labels.push(label.to_owned());
        rest = &block[end + end_marker.len()..];
    }
    Err(crate::InvalidInput::new(
        "private key",
        format!(
            "no PKCS#8 (\"PRIVATE KEY\") PEM block, only {labels:?}: convert the key with \
             openssl pkcs8 -topk8 -nocrypt"
        ),
    )
    .into())
}

/// Why `der` is not a plain, attribute-free PKCS#8 `PrivateKeyInfo`, if it is not.
#[must_use]
pub fn problem(der: &[u8]) -> Option<&'static str> {
    const NOT_DER: &str = "not a DER PKCS#8 PrivateKeyInfo (PEM must be converted to DER first)";
    let Ok(outer) = AnyRef::from_der(der) else {
        return Some(NOT_DER);
    };
    if outer.tag() != Tag::Sequence {
        return Some(NOT_DER);
    }
    let Ok(mut inner) = SliceReader::new(outer.value()) else {
        return Some(NOT_DER);
    };
    let Ok(first) = inner.decode::<AnyRef<'_>>() else {
        return Some(NOT_DER);
    };
    match first.tag() {
        Tag::Integer => {}
        // EncryptedPrivateKeyInfo starts with its encryption AlgorithmIdentifier.
        Tag::Sequence => {
            return Some(
                "an encrypted PKCS#8 (EncryptedPrivateKeyInfo): decrypt it and wrap the plain \
                 PKCS#8 (the wrapping is its protection in transit)",
            );
        }
        Tag::Boolean
        | Tag::BitString
        | Tag::OctetString
        | Tag::Null
        | Tag::ObjectIdentifier
        | Tag::Real
        | Tag::Enumerated
        | Tag::Utf8String
        | Tag::RelativeOid
        | Tag::Set
        | Tag::NumericString
        | Tag::PrintableString
        | Tag::TeletexString
        | Tag::VideotexString
        | Tag::Ia5String
        | Tag::UtcTime
        | Tag::GeneralizedTime
        | Tag::VisibleString
        | Tag::GeneralString
        | Tag::BmpString
        | Tag::Application { .. }
        | Tag::ContextSpecific { .. }
        | Tag::Private { .. }
        | _ => return Some(NOT_DER),
    }
    // algorithm, privateKey
    for _ in 0..2 {
        if inner.decode::<AnyRef<'_>>().is_err() {
            return Some(NOT_DER);
        }
    }
    while !inner.is_finished() {
        let Ok(field) = inner.decode::<AnyRef<'_>>() else {
            return Some(NOT_DER);
        };
        if let Tag::ContextSpecific { number, .. } = field.tag()
            && number.value() == 0
        {
            return Some(
                "PKCS#8 attributes are not accepted: export the key without them \
                 (openssl pkcs8 -topk8 -nocrypt)",
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::problem;

    /// An SM2 PKCS#8 as OpenSSL 3 writes it (`openssl genpkey -algorithm SM2`, then `openssl pkcs8
    /// -topk8 -nocrypt -outform DER`).
    const SM2_PKCS8: &str = "308187020100301306072a8648ce3d020106082a811ccf5501822d046d306b0201010420004c136639293823\
        21383f87d0132e033be807c362e9b9947cce496a8f3d8638a1440342000497b79023e3fe5c55763c6d96c192\
        700c821e4b41a4e222a2c6ffeae4a82faa1eca2abfd070a041fcc3c507e89677f5dffd51c1c0b71325e92d41\
        712d9ff0c80d";

    fn der(hex_text: &str) -> Vec<u8> {
        hex::decode(hex_text).expect("test vector is hex")
    }

    #[test]
    fn pem_files_give_their_pkcs8_block_or_name_what_they_hold() {
        let der = der(SM2_PKCS8);
        let pem = rsa::pkcs8::der::pem::encode_string(
            "PRIVATE KEY",
            rsa::pkcs8::der::pem::LineEnding::LF,
            &der,
        )
        .unwrap();
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqgRzPVQGCLQ==\n-----END EC PARAMETERS-----\n{pem}"
        );
        for text in [pem.as_str(), with_params.as_str()] {
            let got = super::der_from_pem_or_der(text.as_bytes()).unwrap();
            assert_eq!(got.expose_secret(), der.as_slice());
        }
        let sec1 = "-----BEGIN EC PARAMETERS-----\nBggqgRzPVQGCLQ==\n-----END EC PARAMETERS-----\n\
                    -----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let e = super::der_from_pem_or_der(sec1.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("EC PRIVATE KEY") && e.contains("pkcs8 -topk8"),
            "{e}"
        );
        // Not PEM: as it is.
        assert_eq!(
            super::der_from_pem_or_der(&[1, 2, 3])
                .unwrap()
                .expose_secret(),
            [1, 2, 3]
        );
    }

    #[test]
    fn a_plain_pkcs8_passes() {
        assert_eq!(problem(&der(SM2_PKCS8)), None);
    }

    #[test]
    fn attributes_are_refused_by_name() {
        // The same document with an empty [0] attributes set appended inside the SEQUENCE.
        let mut d = der(SM2_PKCS8);
        d.extend_from_slice(&[0xa0, 0x00]);
        d[2] += 2;
        assert!(
            problem(&d).is_some_and(|p| p.contains("attributes")),
            "{:?}",
            problem(&d)
        );
    }

    #[test]
    fn an_encrypted_pkcs8_is_named() {
        // EncryptedPrivateKeyInfo: SEQUENCE { AlgorithmIdentifier, OCTET STRING }.
        let d = der("3012300906052b0e03021a0500040500010203ff");
        assert!(problem(&d).is_some_and(|p| p.contains("encrypted PKCS#8")));
    }

    #[test]
    fn garbage_pem_and_truncation_are_not_der() {
        for bad in [
            b"-----BEGIN PRIVATE KEY-----".to_vec(),
            Vec::new(),
            der(SM2_PKCS8)[..40].to_vec(),
            vec![0x30, 0x03, 0x04, 0x01, 0x00],
        ] {
            assert!(
                problem(&bad).is_some_and(|p| p.contains("not a DER")),
                "{bad:02x?}"
            );
        }
    }
}
