//! For tests only (`test-util`): [`TestKms`], a [`System`] whose key, grant and principal
//! methods take the caller's [`Principal`] and authorise it on every call, exactly as the
//! server's handlers do ([`authorize`], then the method of [`Kms`](super::Kms)), so tests read like the API they
//! exercise and still meet every refusal a real caller meets. It dereferences to [`System`] (and
//! that to [`Kms`](super::Kms)) for everything else.

use std::ops::Deref;
use std::sync::Arc;

use super::{
    CreateKeyRequest, DataKeyMode, DataKeyOutput, DecryptOutput, EncryptOutput, KeyInfo, KmsConfig,
    PublicKeyOutput, SignOutput, System, TokenOutput, UnsealProgress, VerifyOutput,
};
use crate::alg::{DataKeySpec, SignatureParams};
use crate::authz::{Grant, GrantOp, Principal, Role, authorize, ops};
use crate::clock::Clock;
use crate::crypto::Message;
use crate::crypto::tokenize::TokenFormat;
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::hierarchy::share::Share;
use crate::hierarchy::wrap::Derived;
use crate::keys::{Alias, KeyRef, Namespace};
use crate::kms::inventory::Inventory;
use crate::secret::SecretBytes;
use crate::signed_request::{RequestParts, RequestScheme};
use crate::store::Store;

/// A KMS for tests whose methods take the principal (see the module docs).
pub struct TestKms {
    system: System,
}

impl Deref for TestKms {
    type Target = System;

    fn deref(&self) -> &System {
        &self.system
    }
}

impl TestKms {
    pub fn open(store: Arc<dyn Store>, config: KmsConfig) -> Self {
        Self {
            system: System::open(store, config),
        }
    }

    pub fn with_clock(store: Arc<dyn Store>, config: KmsConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            system: System::with_clock(store, config, clock),
        }
    }

    /// A KMS on `store` initialised with 3 shares (2 unseal) and unsealed: the KMS, its first
    /// administrator (`admin`) and the shares.
    ///
    /// # Errors
    /// What `init` or `unseal` return.
    pub fn unsealed(
        store: Arc<dyn Store>,
        config: KmsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Principal, Vec<Share>), Error> {
        let kms = Self::with_clock(store, config, clock);
        let out = kms.init(3, 2, "admin")?;
        for s in out.shares.iter().take(2) {
            kms.unseal_with(s)?;
        }
        let admin = kms.principal("admin")?.ok_or(Error::NotFound {
            what: "principal",
            name: "admin".to_owned(),
        })?;
        Ok((kms, admin, out.shares))
    }

    /// Registers an app principal `subject` of namespace `namespace`, as `admin`.
    ///
    /// # Errors
    /// What `add_principal` returns, or a malformed namespace.
    pub fn add_app(
        &self,
        admin: &Principal,
        subject: &str,
        namespace: &str,
    ) -> Result<Principal, Error> {
        let role = Role::App {
            namespace: Namespace::new(namespace)?,
        };
        self.add_principal(admin, subject, role)
    }

    #[must_use]
    pub fn system(&self) -> &System {
        &self.system
    }

    /// The raw bytes of a key derived from the root key, for tests that search memory and
    /// disk for every secret the KMS holds.
    pub fn derived_key_bytes(&self, what: Derived) -> Result<SecretBytes, Error> {
        Ok(SecretBytes::copy_from_slice(
            self.kms().derived_key(what)?.expose_secret(),
        ))
    }

    pub fn encrypt(
        &self,
        who: &Principal,
        key: &KeyRef,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<EncryptOutput, Error> {
        self.kms()
            .encrypt(&authorize::<ops::Encrypt>(who)?, key, context, plaintext)
    }

    pub fn decrypt(
        &self,
        who: &Principal,
        context: &EncryptionContext,
        ciphertext: &[u8],
    ) -> Result<DecryptOutput, Error> {
        self.kms()
            .decrypt(&authorize::<ops::Decrypt>(who)?, context, ciphertext)
    }

    pub fn reencrypt(
        &self,
        who: &Principal,
        ciphertext: &[u8],
        source_context: &EncryptionContext,
        destination: Option<&KeyRef>,
        destination_context: &EncryptionContext,
    ) -> Result<EncryptOutput, Error> {
        self.kms().reencrypt(
            &authorize::<ops::ReEncrypt>(who)?,
            ciphertext,
            source_context,
            destination,
            destination_context,
        )
    }

    pub fn generate_data_key(
        &self,
        who: &Principal,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
        mode: DataKeyMode,
    ) -> Result<DataKeyOutput, Error> {
        // The operation follows the mode, as the server's handler chooses it.
        if matches!(mode, DataKeyMode::WithoutPlaintext) {
            self.kms().generate_data_key(
                &authorize::<ops::GenerateDataKeyWithoutPlaintext>(who)?,
                key,
                spec,
                context,
                mode,
            )
        } else {
            self.kms().generate_data_key(
                &authorize::<ops::GenerateDataKey>(who)?,
                key,
                spec,
                context,
                mode,
            )
        }
    }

    pub fn sign(
        &self,
        who: &Principal,
        key: &KeyRef,
        message: Message<'_>,
        params: &SignatureParams,
    ) -> Result<SignOutput, Error> {
        self.kms()
            .sign(&authorize::<ops::Sign>(who)?, key, message, params)
    }

    pub fn verify(
        &self,
        who: &Principal,
        key: &KeyRef,
        message: Message<'_>,
        signature: &[u8],
        params: &SignatureParams,
        version: Option<u32>,
    ) -> Result<VerifyOutput, Error> {
        self.kms().verify(
            &authorize::<ops::Verify>(who)?,
            key,
            message,
            signature,
            params,
            version,
        )
    }

    pub fn asymmetric_decrypt(
        &self,
        who: &Principal,
        key: &KeyRef,
        ciphertext: &[u8],
        version: Option<u32>,
    ) -> Result<DecryptOutput, Error> {
        self.kms().asymmetric_decrypt(
            &authorize::<ops::AsymmetricDecrypt>(who)?,
            key,
            ciphertext,
            version,
        )
    }

    pub fn get_public_key(
        &self,
        who: &Principal,
        key: &KeyRef,
        version: Option<u32>,
    ) -> Result<PublicKeyOutput, Error> {
        self.kms()
            .get_public_key(&authorize::<ops::GetPublicKey>(who)?, key, version)
    }

    pub fn generate_mac(
        &self,
        who: &Principal,
        key: &KeyRef,
        data: &[u8],
    ) -> Result<SignOutput, Error> {
        self.kms()
            .generate_mac(&authorize::<ops::GenerateMac>(who)?, key, data)
    }

    pub fn verify_mac(
        &self,
        who: &Principal,
        key: &KeyRef,
        data: &[u8],
        tag: &[u8],
        version: Option<u32>,
    ) -> Result<VerifyOutput, Error> {
        self.kms()
            .verify_mac(&authorize::<ops::VerifyMac>(who)?, key, data, tag, version)
    }

    pub fn hash_password(
        &self,
        who: &Principal,
        password_key: &KeyRef,
        pepper_key: &KeyRef,
        sealed: &[u8],
        identifiers: &[String],
    ) -> Result<super::HashPasswordOutput, Error> {
        self.kms().hash_password(
            &authorize::<ops::HashPassword>(who)?,
            password_key,
            pepper_key,
            sealed,
            identifiers,
        )
    }

    pub fn verify_password(
        &self,
        who: &Principal,
        password_key: &KeyRef,
        sealed: &[u8],
        stored: &str,
        identifiers: &[String],
    ) -> Result<super::VerifyPasswordOutput, Error> {
        self.kms().verify_password(
            &authorize::<ops::VerifyPassword>(who)?,
            password_key,
            sealed,
            stored,
            identifiers,
        )
    }

    pub fn verify_request(
        &self,
        who: &Principal,
        key: &KeyRef,
        scheme: RequestScheme,
        parts: &RequestParts<'_>,
        signature: &[u8],
    ) -> Result<super::VerifyRequestOutput, Error> {
        self.kms().verify_request(
            &authorize::<ops::VerifyRequest>(who)?,
            key,
            scheme,
            parts,
            signature,
        )
    }

    pub fn tokenize(
        &self,
        who: &Principal,
        key: &KeyRef,
        format: TokenFormat,
        context: &EncryptionContext,
        values: &[SecretBytes],
    ) -> Result<TokenOutput, Error> {
        self.kms().tokenize(
            &authorize::<ops::Tokenize>(who)?,
            key,
            format,
            context,
            values,
        )
    }

    pub fn detokenize(
        &self,
        who: &Principal,
        key: &KeyRef,
        version: u32,
        format: TokenFormat,
        context: &EncryptionContext,
        tokens: &[SecretBytes],
    ) -> Result<TokenOutput, Error> {
        self.kms().detokenize(
            &authorize::<ops::Detokenize>(who)?,
            key,
            version,
            format,
            context,
            tokens,
        )
    }

    pub fn generate_random(&self, who: &Principal, len: usize) -> Result<SecretBytes, Error> {
        self.kms()
            .generate_random(&authorize::<ops::GenerateRandom>(who)?, len)
    }

    pub fn create_key(&self, who: &Principal, req: CreateKeyRequest) -> Result<KeyInfo, Error> {
        self.kms()
            .create_key(&authorize::<ops::CreateKey>(who)?, req)
    }

    pub fn describe_key(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .describe_key(&authorize::<ops::DescribeKey>(who)?, key)
    }

    pub fn list_keys(
        &self,
        who: &Principal,
        namespace: Option<&Namespace>,
    ) -> Result<Vec<KeyInfo>, Error> {
        self.kms()
            .list_keys(&authorize::<ops::ListKeys>(who)?, namespace)
    }

    pub fn rotate_key(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .rotate_key(&authorize::<ops::RotateKey>(who)?, key)
    }

    pub fn set_rotation_period(
        &self,
        who: &Principal,
        key: &KeyRef,
        period: Option<u64>,
    ) -> Result<KeyInfo, Error> {
        self.kms()
            .set_rotation_period(&authorize::<ops::SetRotationPolicy>(who)?, key, period)
    }

    pub fn enable_key(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .enable_key(&authorize::<ops::EnableKey>(who)?, key)
    }

    pub fn disable_key(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .disable_key(&authorize::<ops::DisableKey>(who)?, key)
    }

    pub fn mark_compromised(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .mark_compromised(&authorize::<ops::MarkCompromised>(who)?, key)
    }

    pub fn schedule_destruction(
        &self,
        who: &Principal,
        key: &KeyRef,
        days: Option<u32>,
    ) -> Result<KeyInfo, Error> {
        self.kms()
            .schedule_destruction(&authorize::<ops::ScheduleKeyDestruction>(who)?, key, days)
    }

    pub fn cancel_destruction(&self, who: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.kms()
            .cancel_destruction(&authorize::<ops::CancelKeyDestruction>(who)?, key)
    }

    pub fn create_alias(
        &self,
        who: &Principal,
        key: &KeyRef,
        alias: Alias,
    ) -> Result<KeyInfo, Error> {
        self.kms()
            .create_alias(&authorize::<ops::CreateAlias>(who)?, key, alias)
    }

    pub fn delete_alias(
        &self,
        who: &Principal,
        namespace: &Namespace,
        alias: &Alias,
    ) -> Result<(), Error> {
        self.kms()
            .delete_alias(&authorize::<ops::DeleteAlias>(who)?, namespace, alias)
    }

    pub fn create_grant(
        &self,
        who: &Principal,
        key: &KeyRef,
        grantee: Namespace,
        ops: Vec<GrantOp>,
    ) -> Result<Grant, Error> {
        self.kms()
            .create_grant(&authorize::<ops::CreateGrant>(who)?, key, grantee, ops)
    }

    pub fn revoke_grant(
        &self,
        who: &Principal,
        key: &KeyRef,
        grantee: &Namespace,
    ) -> Result<(), Error> {
        self.kms()
            .revoke_grant(&authorize::<ops::RevokeGrant>(who)?, key, grantee)
    }

    pub fn list_grants(&self, who: &Principal, key: Option<&KeyRef>) -> Result<Vec<Grant>, Error> {
        self.kms()
            .list_grants(&authorize::<ops::ListGrants>(who)?, key)
    }

    pub fn add_principal(
        &self,
        who: &Principal,
        subject: &str,
        role: Role,
    ) -> Result<Principal, Error> {
        self.kms()
            .add_principal(&authorize::<ops::AddPrincipal>(who)?, subject, role)
    }

    pub fn remove_principal(&self, who: &Principal, subject: &str) -> Result<(), Error> {
        self.kms()
            .remove_principal(&authorize::<ops::RemovePrincipal>(who)?, subject)
    }

    pub fn list_principals(&self, who: &Principal) -> Result<Vec<Principal>, Error> {
        self.kms()
            .list_principals(&authorize::<ops::ListPrincipals>(who)?)
    }

    pub fn inventory(&self, who: &Principal) -> Result<Inventory, Error> {
        self.kms()
            .inventory(&authorize::<ops::ExportInventory>(who)?)
    }

    pub fn backup(&self, who: &Principal) -> Result<Vec<u8>, Error> {
        self.kms().backup(&authorize::<ops::Backup>(who)?)
    }

    pub fn unseal(&self, who: &Principal, share_text: &Share) -> Result<UnsealProgress, Error> {
        self.kms()
            .unseal(&authorize::<ops::Unseal>(who)?, share_text)
            .map(|u| u.progress)
    }

    pub fn import_public_key(
        &self,
        who: &Principal,
        req: crate::ImportPublicKeyRequest,
    ) -> Result<KeyInfo, Error> {
        self.kms()
            .import_public_key(&authorize::<ops::ImportPublicKey>(who)?, req)
    }

    pub fn seal(&self, who: &Principal) -> Result<(), Error> {
        self.kms().seal(&authorize::<ops::Seal>(who)?)
    }

    pub fn create_key_with(
        &self,
        who: &Principal,
        req: CreateKeyRequest,
        options: crate::KeyOptions,
    ) -> Result<KeyInfo, Error> {
        self.kms()
            .create_key_with(&authorize::<ops::CreateKey>(who)?, req, options)
    }

    pub fn get_import_parameters(
        &self,
        who: &Principal,
        key: &KeyRef,
        spec: crate::crypto::transport::WrappingSpec,
        wrapping_key_spec: Option<crate::alg::KeySpec>,
    ) -> Result<crate::ImportParameters, Error> {
        self.kms().get_import_parameters(
            &authorize::<ops::GetImportParameters>(who)?,
            key,
            spec,
            wrapping_key_spec,
        )
    }

    pub fn import_key_material(
        &self,
        who: &Principal,
        req: crate::ImportMaterialRequest,
    ) -> Result<crate::ImportedKey, Error> {
        self.kms()
            .import_key_material(&authorize::<ops::ImportKeyMaterial>(who)?, req)
    }

    pub fn export_key(
        &self,
        who: &Principal,
        req: crate::ExportKeyRequest,
    ) -> Result<crate::ExportOutput, Error> {
        self.kms()
            .export_key(&authorize::<ops::ExportKey>(who)?, req)
    }
}
