//! proto ↔ core conversions. Byte fields that hold secrets are moved (`mem::take`), not copied.

use std::collections::{BTreeMap, HashMap};

use crate::status::Refusal;
use kms_core::KeyInfo;
use kms_core::alg::{KeySpec, Purpose, SignatureParams};
use kms_core::authz::{Grant, Principal, Role};
use kms_core::crypto::Message;
use kms_core::envelope::EncryptionContext;
use kms_core::keys::state::KeyState;
use kms_core::keys::{KeyRef, Namespace};
use kms_core::policy::names;
use kms_proto::v1;

/// The namespace keys are created in when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";

fn bad(message: &'static str) -> Refusal {
    Refusal::BadRequest(message.into())
}

/// A key reference as a caller typed it, resolved against the caller's namespace.
pub fn key_ref(input: &str, principal: &Principal) -> Result<KeyRef, Refusal> {
    if input.is_empty() {
        return Err(bad("key is required: give a key id or an alias"));
    }
    let home = match &principal.role {
        Role::App { namespace } => namespace.clone(),
        Role::Admin | Role::Auditor | Role::Custodian => Namespace::new(DEFAULT_NAMESPACE)?,
    };
    Ok(KeyRef::parse(input, &home)?)
}

/// A namespace as a request names it (empty: the default one). Parsed with the looser rule
/// of names that may already exist (`Namespace::existing`), so namespaces stored before the
/// strict rule stay reachable; where a request *introduces* a namespace (a new key, an app
/// principal, a grantee) the core applies the strict rule and refuses reserved names.
pub fn namespace(input: &str) -> Result<Namespace, Refusal> {
    let s = if input.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        input
    };
    Ok(Namespace::existing(s)?)
}

pub fn context(map: HashMap<String, String>) -> EncryptionContext {
    EncryptionContext::new(map.into_iter().collect::<BTreeMap<_, _>>())
}

pub fn purpose(p: i32) -> Result<Purpose, Refusal> {
    match v1::Purpose::try_from(p) {
        Ok(v1::Purpose::Encrypt) => Ok(Purpose::Encrypt),
        Ok(v1::Purpose::Sign) => Ok(Purpose::Sign),
        Ok(v1::Purpose::AsymmetricDecrypt) => Ok(Purpose::AsymmetricDecrypt),
        Ok(v1::Purpose::Mac) => Ok(Purpose::Mac),
        Ok(v1::Purpose::Password) => Ok(Purpose::Password),
        Ok(v1::Purpose::Pepper) => Ok(Purpose::Pepper),
        Ok(v1::Purpose::Tokenize) => Ok(Purpose::Tokenize),
        Ok(v1::Purpose::Unspecified) | Err(_) => Err(bad(
            "purpose is required: encrypt, sign, asymmetric-decrypt, mac, password, pepper or tokenize",
        )),
    }
}

fn purpose_out(p: Purpose) -> v1::Purpose {
    match p {
        Purpose::Encrypt => v1::Purpose::Encrypt,
        Purpose::Sign => v1::Purpose::Sign,
        Purpose::AsymmetricDecrypt => v1::Purpose::AsymmetricDecrypt,
        Purpose::Mac => v1::Purpose::Mac,
        Purpose::Password => v1::Purpose::Password,
        Purpose::Pepper => v1::Purpose::Pepper,
        Purpose::Tokenize => v1::Purpose::Tokenize,
    }
}

fn state_out(s: KeyState) -> v1::KeyState {
    match s {
        KeyState::Enabled => v1::KeyState::Enabled,
        KeyState::Disabled => v1::KeyState::Disabled,
        KeyState::Compromised => v1::KeyState::Compromised,
        KeyState::PendingDestruction => v1::KeyState::PendingDestruction,
        KeyState::Destroyed => v1::KeyState::Destroyed,
        KeyState::PendingImport => v1::KeyState::PendingImport,
    }
}

pub fn key_spec(input: &str) -> Result<KeySpec, Refusal> {
    Ok(names::parse_key_spec(input)?)
}

/// A caller-supplied public key, SubjectPublicKeyInfo as PEM or DER, under the policy in force.
pub fn public_key(
    policy: kms_core::policy::Policy,
    bytes: &[u8],
) -> Result<kms_core::crypto::PublicKey, Refusal> {
    use kms_core::crypto::PublicKey;
    Ok(match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => PublicKey::from_spki_pem(policy, text)?,
        Ok(_) | Err(_) => PublicKey::from_spki_der(policy, bytes)?,
    })
}

pub fn key_metadata(k: &KeyInfo) -> v1::KeyMetadata {
    v1::KeyMetadata {
        key_id: k.id.to_string(),
        namespace: k.namespace.to_string(),
        purpose: purpose_out(k.purpose).into(),
        algorithm: k.spec.name().to_owned(),
        state: state_out(k.state).into(),
        description: k.description.clone(),
        aliases: k.aliases.iter().map(ToString::to_string).collect(),
        created_at: k.created_at,
        versions: k
            .versions
            .iter()
            .map(|v| v1::KeyVersionInfo {
                version: v.version,
                created_at: v.created_at,
                destroyed: v.destroyed,
                public_key_der: v.public_key_der.clone().unwrap_or_default(),
            })
            .collect(),
        rotation_period_seconds: k.rotation_period,
        last_rotated_at: k.last_rotated_at,
        next_rotation_at: k.next_rotation_at,
        compromised_at: k.compromised_at,
        destroy_at: k.destroy_at,
        destroyed_at: k.destroyed_at,
        current_version: k.current_version(),
        origin: k.origin.name().to_owned(),
        exportable: k.exportable,
        material_fingerprint: k
            .import
            .as_ref()
            .map(|i| i.fingerprint.clone())
            .unwrap_or_default(),
        imported_at: k.import.as_ref().map(|i| i.imported_at),
        material_expires_at: k.import.as_ref().and_then(|i| i.expires_at),
        exports: u32::try_from(k.exports).unwrap_or(u32::MAX),
    }
}

/// A wrapping spec name (`sm2`, `rsa-oaep-sha256`, `rsa-aes-kwp`).
pub fn wrapping_spec(name: &str) -> Result<kms_core::crypto::transport::WrappingSpec, Refusal> {
    use kms_core::crypto::transport::WrappingSpec;
    WrappingSpec::parse(name).ok_or_else(|| {
        let names: Vec<&str> = WrappingSpec::ALL.iter().map(|s| s.name()).collect();
        Refusal::from(kms_core::InvalidInput::new(
            "wrapping_spec",
            format!("unknown; use one of: {}", names.join(", ")),
        ))
    })
}

pub fn grant_info(g: &Grant) -> v1::GrantInfo {
    v1::GrantInfo {
        key_id: g.key_id.to_string(),
        grantee_namespace: g.grantee.to_string(),
        operations: g.ops.iter().map(|o| o.name().to_owned()).collect(),
        created_at: g.created_at,
    }
}

pub fn principal_info(p: &Principal) -> v1::PrincipalInfo {
    v1::PrincipalInfo {
        subject: p.subject.clone(),
        role: p.role.name().to_owned(),
        namespace: match &p.role {
            Role::App { namespace } => namespace.to_string(),
            Role::Admin | Role::Auditor | Role::Custodian => String::new(),
        },
        created_at: p.created_at,
    }
}

/// A role and, for an app, its namespace. Admins and auditors act on every namespace, so a
/// namespace given with them would be silently meaningless: it is refused instead.
pub fn role(role: &str, namespace: &str) -> Result<Role, Refusal> {
    match names::normalize(role).as_str() {
        "app" => Ok(Role::App {
            namespace: self::namespace(namespace)?,
        }),
        "admin" | "auditor" if !namespace.is_empty() => Err(bad(
            "a namespace is given only with role app: admins and auditors are not bound to one",
        )),
        "admin" => Ok(Role::Admin),
        "auditor" => Ok(Role::Auditor),
        _ => Err(bad("role must be app, admin or auditor")),
    }
}

/// The signature parameters a request asks for; empty fields take the key's defaults.
pub fn signature_params(
    sm2_id: &str,
    scheme: &str,
    hash: &str,
) -> Result<SignatureParams, Refusal> {
    Ok(SignatureParams {
        sm2_id: (!sm2_id.is_empty()).then(|| sm2_id.to_owned()),
        rsa_scheme: if scheme.is_empty() {
            None
        } else {
            Some(names::parse_rsa_sig_scheme(scheme)?)
        },
        hash: if hash.is_empty() {
            None
        } else {
            Some(names::parse_digest(hash)?)
        },
    })
}

/// What a sign or verify request's bytes are, checked before the bytes are touched.
#[derive(Clone, Copy, Debug)]
pub enum MessageKind {
    Raw,
    Digest,
}

impl MessageKind {
    #[must_use]
    pub fn of(self, bytes: &[u8]) -> Message<'_> {
        match self {
            Self::Raw => Message::Raw(bytes),
            Self::Digest => Message::Digest(bytes),
        }
    }
}

pub fn message_kind(message_type: i32) -> Result<MessageKind, Refusal> {
    match v1::MessageType::try_from(message_type) {
        Ok(v1::MessageType::Raw) => Ok(MessageKind::Raw),
        Ok(v1::MessageType::Digest) => Ok(MessageKind::Digest),
        Err(_) => Err(bad("message_type must be RAW or DIGEST")),
    }
}
