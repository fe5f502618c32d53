//! Cases that need the crate-private issuance knobs: a leaf key signing like a CA, and CAs
//! without a path length limit. The public-API tests are in `tests/x509_chain.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_leaf_used_as_a_ca_is_refused() {
    let ca = Sm2Ca::generate("Unit Root", 30).unwrap();
    let leaf = ca
        .issue(&LeafSpec::new("leaf-as-ca", Usage::TlsServer, 20))
        .unwrap();

    // The public loader refuses the leaf outright.
    let err = Sm2Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");

    // Signed with the leaf's key anyway, the grandchild does not verify through it.
    let rogue = Sm2Ca::from_pem_unchecked(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let grandchild = rogue
        .issue(&LeafSpec::new("grandchild", Usage::TlsServer, 10))
        .unwrap();
    let err = verify_chain(
        &grandchild.cert_der,
        &[&leaf.cert_der],
        &[ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    let Error::NotCa { subject, reason } = err else {
        panic!("expected NotCa, got {err}");
    };
    assert_eq!(subject, "CN=leaf-as-ca");
    assert_eq!(reason, "basicConstraints cA is false");
}

/// Root, `n` intermediates without a path length limit, and a leaf under the last one.
fn chain(n: usize) -> (Sm2Ca, Vec<Vec<u8>>, Sm2CertifiedKey) {
    let root = Sm2Ca::generate("Chain Root", 30).unwrap();
    let mut intermediates = Vec::new();
    let mut issuer = Sm2Ca::from_pem(root.cert_pem(), &root.key_pem()).unwrap();
    for i in 0..n {
        // Each CA must outlive what it issues; a second's tick between issuances would make
        // equal lifetimes fail.
        let days = 25 - u32::try_from(i).unwrap();
        let spec = LeafSpec::new(format!("Chain Intermediate {i}"), Usage::Ca, days);
        let ca = issuer.issue_with_path_len(&spec, None).unwrap();
        intermediates.push(ca.cert_der.clone());
        issuer = Sm2Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
    }
    let leaf = issuer
        .issue(&LeafSpec::new("chain-leaf", Usage::TlsClient, 5))
        .unwrap();
    (root, intermediates, leaf)
}

#[test]
fn chain_length_is_bounded_at_max_chain_len() {
    // Leaf + 6 intermediates + root = 8 certificates: the longest accepted.
    let (root, intermediates, leaf) = chain(MAX_CHAIN_LEN - 2);
    let refs: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
    let ok = verify_chain(
        &leaf.cert_der,
        &refs,
        &[root.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap();
    assert_eq!(
        ok.intermediates_used,
        (0..MAX_CHAIN_LEN - 2).rev().collect::<Vec<_>>()
    );

    // One more intermediate makes 9.
    let (root, intermediates, leaf) = chain(MAX_CHAIN_LEN - 1);
    let refs: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
    let err = verify_chain(
        &leaf.cert_der,
        &refs,
        &[root.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::ChainTooLong { max: MAX_CHAIN_LEN }),
        "{err}"
    );
}

#[test]
fn path_search_gives_up_on_a_pile_of_look_alike_cas() {
    // Twelve distinct self-signed certificates for one key and one name: each is a valid
    // issuer of the leaf and of every other, so an unbounded search would try every ordering.
    let secret = {
        use sm2::elliptic_curve::Generate as _;
        sm2::SecretKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap()
    };
    let pile: Vec<Vec<u8>> = (0..12)
        .map(|_| issue::self_signed(&secret, "Look-alike CA", 30).unwrap())
        .collect();
    let key_pem = {
        use sm2::pkcs8::EncodePrivateKey as _;
        secret.to_pkcs8_pem(der::pem::LineEnding::LF).unwrap()
    };
    let cert_pem =
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &pile[0]).unwrap();
    let signer = Sm2Ca::from_pem(&cert_pem, &key_pem).unwrap();
    let leaf = signer
        .issue(&LeafSpec::new("leaf", Usage::TlsServer, 10))
        .unwrap();
    let unrelated = Sm2Ca::generate("Unrelated Root", 30).unwrap();
    let refs: Vec<&[u8]> = pile.iter().map(Vec::as_slice).collect();

    let err = verify_chain(
        &leaf.cert_der,
        &refs,
        &[unrelated.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    assert!(matches!(err, Error::PathSearchExhausted { .. }), "{err}");

    // The same pile with one of them trusted verifies at once.
    verify_chain(
        &leaf.cert_der,
        &refs,
        &[&pile[3]],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap();
}
