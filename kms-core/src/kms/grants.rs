//! Aliases (names for a key, unique per namespace) and grants (another namespace's use of a
//! key, KEY-9).

use super::lifecycle::{KeyInfo, refuse_system_key};
use super::{Kms, layout, store_corrupt};
use crate::authz::{Authorized, Grant, GrantOp, ops};
use crate::error::Error;
use crate::keys::{Alias, KeyRef, Namespace};
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
    pub fn create_grant(
        &self,
        auth: &Authorized<'_, ops::CreateGrant>,
        key: &KeyRef,
        grantee: Namespace,
        ops: Vec<GrantOp>,
    ) -> Result<Grant, Error> {
        self.begin(auth)?;
        refuse_system_key(
            &self.reach(auth.principal(), key, GrantOp::Describe)?.0,
            "grant",
        )?;
        if ops.is_empty() {
            return Err(
                crate::InvalidInput::new("operations", "name at least one operation").into(),
            );
        }
        let (record, _) = self.reach(auth.principal(), key, GrantOp::Describe)?;
        let mut ops = ops;
        ops.sort();
        ops.dedup();
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
