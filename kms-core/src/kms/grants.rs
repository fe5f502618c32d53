//! Aliases (names for a key, unique per namespace) and grants (another namespace's use of a
//! key, KEY-9).

use super::approvals::{Params, Sensitive};
use super::lifecycle::{KeyInfo, refuse_system_key};
use super::{Kms, layout, store_corrupt};
use crate::authz::{Authorized, Grant, GrantOp, ops};
use crate::error::{Error, InvalidInput};
use crate::keys::{Alias, KeyRef, Namespace};
use crate::kms::audit_key::SYSTEM_NAMESPACE;
use crate::store::{Batch, Tree};

impl Kms {
    /// Adds an alias in the key's own namespace (unique per namespace).
    pub fn create_alias(
        &self,
        auth: &Authorized<'_, ops::CreateAlias>,
        key: &KeyRef,
        alias: Alias,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        let (record, ()) = self
            .update(auth.principal(), key, GrantOp::Describe, |r, batch| {
                let k = layout::alias(&r.namespace, alias.as_str());
                batch.require(Tree::Aliases, k.clone(), None);
                batch.put(Tree::Aliases, k, r.id.as_bytes().to_vec());
                if !r.aliases.contains(&alias) {
                    r.aliases.push(alias.clone());
                }
                Ok(())
            })
            .map_err(|e| {
                // The alias precondition keeps failing on every retry: it exists already.
                if matches!(e, Error::FailedPrecondition(_)) {
                    Error::AlreadyExists {
                        what: "alias",
                        name: alias.to_string(),
                    }
                } else {
                    e
                }
            })?;
        Ok(KeyInfo::from_record(&record))
    }

    pub fn delete_alias(
        &self,
        auth: &Authorized<'_, ops::DeleteAlias>,
        namespace: &Namespace,
        alias: &Alias,
    ) -> Result<(), Error> {
        self.begin(auth)?;
        let key = KeyRef::Alias(namespace.clone(), alias.clone());
        self.update(auth.principal(), &key, GrantOp::Describe, |r, batch| {
            refuse_system_key(r, "deleting an alias")?;
            batch.delete(Tree::Aliases, layout::alias(namespace, alias.as_str()));
            r.aliases.retain(|a| a != alias);
            Ok(())
        })?;
        Ok(())
    }

    /// Lets namespace `grantee` perform `ops` with a key (KEY-9). Replaces an existing grant.
    ///
    /// A grant must mean what it says (the rules are in [`crate::authz`]'s module doc). All of
    /// these are `InvalidArgument`, because the request itself is what is wrong: a key's
    /// purpose and namespace never change, so the same request could never succeed later.
    /// - no operation, or one that does not fit the key's purpose (field `grant operation`);
    /// - a grantee that is reserved (`kms-system`, any casing or trailing dot), is not a valid
    ///   new namespace, or is the key's own namespace (field `grantee`).
    ///
    /// A grant *on* the KMS's own key stays `FailedPrecondition` (see `refuse_system_key`).
    pub fn create_grant(
        &self,
        auth: &Authorized<'_, ops::CreateGrant>,
        key: &KeyRef,
        grantee: Namespace,
        ops: Vec<GrantOp>,
    ) -> Result<Grant, Error> {
        self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), key, GrantOp::Describe)?;
        refuse_system_key(&record, "grant")?;
        if ops.is_empty() {
            return Err(InvalidInput::new("operations", "name at least one operation").into());
        }
        if grantee.is_reserved() {
            return Err(InvalidInput::new(
                "grantee",
                format!(
                    "{grantee} is reserved for the KMS's own keys (namespace {SYSTEM_NAMESPACE}); \
                     no application can use a grant to it"
                ),
            )
            .into());
        }
        // A grant introduces its grantee: the strict namespace rule applies.
        grantee.check_new()?;
        if grantee == record.namespace {
            return Err(InvalidInput::new(
                "grantee",
                format!(
                    "key {} belongs to namespace {grantee}, whose apps use it without a grant; \
                     grant to another namespace",
                    record.id
                ),
            )
            .into());
        }
        if let Some(bad) = ops.iter().find(|op| !op.fits(record.purpose)) {
            let fitting: Vec<&str> = GrantOp::fitting(record.purpose)
                .into_iter()
                .map(GrantOp::name)
                .collect();
            return Err(InvalidInput::new(
                "grant operation",
                format!(
                    "{} does not fit key {}, whose purpose is {} (KEY-5); it can be granted: {}",
                    bad.name(),
                    record.id,
                    record.purpose,
                    fitting.join(", ")
                ),
            )
            .into());
        }
        let mut ops = ops;
        ops.sort();
        ops.dedup();
        self.quorum(auth, Sensitive::CreateGrant, || {
            Ok(Params::CreateGrant {
                key: record.id,
                grantee: grantee.clone(),
                ops: ops.clone(),
            })
        })?;
        let grant = Grant {
            key_id: record.id,
            grantee,
            ops,
            created_at: self.now(),
        };
        let mut batch = Batch::new();
        batch.put(
            Tree::Grants,
            layout::grant(&record.id, &grant.grantee),
            serde_json::to_vec(&grant).map_err(|_| store_corrupt("grant"))?,
        );
        self.store.apply(&batch)?;
        Ok(grant)
    }

    pub fn revoke_grant(
        &self,
        auth: &Authorized<'_, ops::RevokeGrant>,
        key: &KeyRef,
        grantee: &Namespace,
    ) -> Result<(), Error> {
        self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), key, GrantOp::Describe)?;
        let k = layout::grant(&record.id, grantee);
        if self.store.get(Tree::Grants, &k)?.is_none() {
            return Err(Error::NotFound {
                what: "grant",
                name: format!("{} to {grantee}", record.id),
            });
        }
        let mut batch = Batch::new();
        batch.delete(Tree::Grants, k);
        self.store.apply(&batch)?;
        Ok(())
    }

    /// Grants on one key, or on every key.
    pub fn list_grants(
        &self,
        auth: &Authorized<'_, ops::ListGrants>,
        key: Option<&KeyRef>,
    ) -> Result<Vec<Grant>, Error> {
        self.begin(auth)?;
        let prefix = match key {
            Some(k) => self
                .reach(auth.principal(), k, GrantOp::Describe)?
                .0
                .id
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        self.store
            .scan_prefix(Tree::Grants, &prefix)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| store_corrupt("grant")))
            .collect()
    }
}
