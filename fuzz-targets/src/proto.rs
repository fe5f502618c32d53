//! gRPC request messages: decode arbitrary bytes with prost as each request type, then run the
//! conversions the services run on it (`kms_server::convert`, limits, names, shares, keys).

use kms_core::authz::{GrantOp, Principal, Role};
use kms_core::crypto::PublicKey;
use kms_core::hierarchy::share::{self, Share};
use kms_core::keys::{Alias, Namespace};
use kms_core::policy::{Policy, names};
use kms_proto::v1;
use kms_server::convert;
use kms_server::limits::Limits;
use prost::Message;

/// The request types, in the order of the selector byte (the input's first byte, modulo
/// [`REQUESTS`]).
pub const REQUESTS: usize = 29;

fn principals() -> [Principal; 2] {
    let app = Namespace::new("fuzz")
        .and_then(|namespace| Principal::new("kms://fuzz-app", Role::App { namespace }));
    let admin = Principal::new("kms://fuzz-admin", Role::Admin);
    match (app, admin) {
        (Ok(app), Ok(admin)) => [app, admin],
        (Err(e), _) | (_, Err(e)) => panic!("fixture principal: {e}"),
    }
}

/// Decodes `bytes` as `M`; if that works, checks the wire round trip and runs `convert`.
fn check<M: Message + Default + PartialEq>(bytes: &[u8], convert: impl Fn(&M)) {
    let Ok(m) = M::decode(bytes) else {
        return;
    };
    let encoded = m.encode_to_vec();
    match M::decode(encoded.as_slice()) {
        Ok(back) => assert!(back == m, "protobuf round trip changed the message"),
        Err(e) => panic!("our own encoding does not decode: {e}"),
    }
    convert(&m);
}

fn key_ref(key: &str) {
    for p in &principals() {
        let _ = convert::key_ref(key, p);
    }
}

fn context(map: &std::collections::HashMap<String, String>) {
    let _ = Limits::default().check_context(map);
    let ctx = convert::context(map.clone());
    let _ = ctx.canonical_bytes();
}

fn signature(sm2_id: &str, scheme: &str, hash: &str, message: &[u8], message_type: i32) {
    let _ = convert::signature_params(sm2_id, scheme, hash);
    if let Ok(kind) = convert::message_kind(message_type) {
        let _ = kind.of(message);
    }
    let _ = Limits::default().check_payload("message", message.len());
}

fn public_key(bytes: &[u8]) {
    // As `services::crypto::parse_public_key` reads `wrap_to_public_key`.
    let policy = Policy::default();
    let _ = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => PublicKey::from_spki_pem(policy, text),
        Ok(_) | Err(_) => PublicKey::from_spki_der(policy, bytes),
    };
}

fn alias(s: &str) {
    let _ = Alias::new(s);
}

/// Any bytes as any request message (the first byte picks the type).
pub fn proto_request(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(selector) % REQUESTS {
        0 => check(bytes, |m: &v1::EncryptRequest| {
            key_ref(&m.key);
            context(&m.context);
            let _ = Limits::default().check_payload("plaintext", m.plaintext.len());
        }),
        1 => check(bytes, |m: &v1::DecryptRequest| {
            context(&m.context);
            let _ = kms_core::envelope::parse(&m.ciphertext);
        }),
        2 => check(bytes, |m: &v1::ReEncryptRequest| {
            context(&m.source_context);
            context(&m.destination_context);
            if !m.destination_key.is_empty() {
                key_ref(&m.destination_key);
            }
            let _ = kms_core::envelope::parse(&m.ciphertext);
        }),
        3 => check(bytes, |m: &v1::GenerateDataKeyRequest| {
            key_ref(&m.key);
            context(&m.context);
            let _ = names::parse_data_key_spec(if m.key_spec.is_empty() {
                "sm4"
            } else {
                &m.key_spec
            });
            if !m.wrap_to_public_key.is_empty() {
                public_key(&m.wrap_to_public_key);
            }
        }),
        4 => check(bytes, |m: &v1::SignRequest| {
            key_ref(&m.key);
            signature(
                &m.sm2_id,
                &m.rsa_scheme,
                &m.hash,
                &m.message,
                m.message_type,
            );
        }),
        5 => check(bytes, |m: &v1::VerifyRequest| {
            key_ref(&m.key);
            signature(
                &m.sm2_id,
                &m.rsa_scheme,
                &m.hash,
                &m.message,
                m.message_type,
            );
        }),
        6 => check(bytes, |m: &v1::AsymmetricDecryptRequest| {
            key_ref(&m.key);
            let _ = Limits::default().check_payload("ciphertext", m.ciphertext.len());
        }),
        7 => check(bytes, |m: &v1::GetPublicKeyRequest| key_ref(&m.key)),
        8 => check(bytes, |m: &v1::GenerateMacRequest| {
            key_ref(&m.key);
            let _ = Limits::default().check_payload("data", m.data.len());
        }),
        9 => check(bytes, |m: &v1::VerifyMacRequest| {
            key_ref(&m.key);
            let _ = Limits::default().check_payload("data", m.data.len());
        }),
        10 => check(bytes, |m: &v1::GenerateRandomRequest| {
            let _ = usize::try_from(m.length);
        }),
        11 => check(bytes, |m: &v1::KeyRequest| key_ref(&m.key)),
        12 => check(bytes, |m: &v1::CreateKeyRequest| {
            let _ = convert::namespace(&m.namespace);
            let _ = convert::purpose(m.purpose);
            let _ = convert::key_spec(&m.algorithm);
            if !m.alias.is_empty() {
                alias(&m.alias);
            }
        }),
        13 => check(bytes, |m: &v1::ListKeysRequest| {
            let _ = convert::namespace(&m.namespace);
        }),
        14 => check(bytes, |m: &v1::SetRotationPolicyRequest| key_ref(&m.key)),
        15 => check(bytes, |m: &v1::ScheduleKeyDestructionRequest| {
            key_ref(&m.key)
        }),
        16 => check(bytes, |m: &v1::CreateAliasRequest| {
            key_ref(&m.key);
            alias(&m.alias);
        }),
        17 => check(bytes, |m: &v1::DeleteAliasRequest| {
            let _ = convert::namespace(&m.namespace);
            alias(&m.alias);
        }),
        18 => check(bytes, |m: &v1::CreateGrantRequest| {
            key_ref(&m.key);
            let _ = convert::namespace(&m.grantee_namespace);
            for op in m.operations.iter().flat_map(|s| s.split(',')) {
                let _ = GrantOp::parse(op.trim());
            }
        }),
        19 => check(bytes, |m: &v1::RevokeGrantRequest| {
            key_ref(&m.key);
            let _ = convert::namespace(&m.grantee_namespace);
        }),
        20 => check(bytes, |m: &v1::ListGrantsRequest| {
            if !m.key.is_empty() {
                key_ref(&m.key);
            }
        }),
        21 => check(bytes, |m: &v1::AddPrincipalRequest| {
            let _ = convert::role(&m.role, &m.namespace);
            let _ = Principal::new(&m.subject, Role::Auditor);
        }),
        22 => check(bytes, |m: &v1::RemovePrincipalRequest| {
            let _ = Principal::new(&m.subject, Role::Auditor);
        }),
        23 => check(bytes, |m: &v1::InitRequest| {
            let _ = u8::try_from(m.shares);
            let _ = u8::try_from(m.threshold);
            if !m.admin_subject.is_empty() {
                let _ = Principal::new(&m.admin_subject, Role::Admin);
            }
        }),
        24 => check(bytes, |m: &v1::UnsealRequest| {
            let _ = share::parse(&Share::from_text(&m.share));
        }),
        25 => check(bytes, |m: &v1::RestoreChunk| {
            for s in m.shares.iter().take(8) {
                let _ = share::parse(&Share::from_text(s));
            }
        }),
        26 => check(bytes, |_: &v1::StatusRequest| {}),
        27 => check(bytes, |_: &v1::ExportAuditRequest| {}),
        _ => check(bytes, |_: &v1::Empty| {}),
    }
}
