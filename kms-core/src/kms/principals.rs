//! Principals: the certificate subjects the KMS knows, each with one role.

use super::approvals::{Params, Sensitive};
use super::cas::Cas;
use super::{Kms, store_corrupt};
use crate::authz::{Authorized, Principal, Role, ops};
use crate::error::Error;
use crate::store::{Batch, StoreError, Tree};

impl Kms {
    /// A registered principal by certificate subject.
    pub fn principal(&self, subject: &str) -> Result<Option<Principal>, Error> {
        match self.store.get(Tree::Principals, subject.as_bytes())? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|_| store_corrupt("principal"))?,
            )),
            None => Ok(None),
        }
    }

    /// Registers a principal with a role. Apps' namespaces get their KEK now.
    pub fn add_principal(
        &self,
        auth: &Authorized<'_, ops::AddPrincipal>,
        subject: &str,
        role: Role,
    ) -> Result<Principal, Error> {
        let vault = self.begin(auth)?;
        // An app principal introduces its namespace: the strict rule, reserved names refused.
        if let Role::App { namespace } = &role {
            namespace.check_new()?;
        }
        let mut new = Principal::new(subject, role)?;
        if new.role == Role::Admin {
            self.quorum(auth, Sensitive::AddAdmin, || {
                Ok(Params::AddAdmin {
                    subject: subject.to_owned(),
                })
            })?;
        }
        new.created_at = self.now();
        if let Role::App { namespace } = &new.role {
            self.kek(&vault, namespace)?;
        }
        let mut batch = Batch::new();
        batch.require(Tree::Principals, subject.as_bytes(), None);
        batch.put(
            Tree::Principals,
            subject.as_bytes(),
            serde_json::to_vec(&new).map_err(|_| store_corrupt("principal"))?,
        );
        match self.store.apply(&batch) {
            Ok(()) => Ok(new),
            Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists {
                what: "principal",
                name: subject.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a principal. The last administrator cannot be removed (nobody could manage keys).
    pub fn remove_principal(
        &self,
        auth: &Authorized<'_, ops::RemovePrincipal>,
        subject: &str,
    ) -> Result<(), Error> {
        self.begin(auth)?;
        if self
            .principal(subject)?
            .is_some_and(|target| target.role == Role::Admin)
        {
            self.quorum(auth, Sensitive::RemoveAdmin, || {
                Ok(Params::RemoveAdmin {
                    subject: subject.to_owned(),
                })
            })?;
        }
        self.cas_update(|| {
            let Some(old) = self.store.get(Tree::Principals, subject.as_bytes())? else {
                return Err(Error::NotFound {
                    what: "principal",
                    name: subject.to_owned(),
                });
            };
            let target: Principal =
                serde_json::from_slice(&old).map_err(|_| store_corrupt("principal"))?;
            if target.role == Role::Admin {
                let admins = self
                    .list_principals_unchecked()?
                    .iter()
                    .filter(|p| p.role == Role::Admin)
                    .count();
                if admins <= 1 {
                    return Err(Error::FailedPrecondition(
                        "the last administrator cannot be removed".into(),
                    ));
                }
            }
            let mut batch = Batch::new();
            // Only this principal's entry is the precondition, not the set of administrators
            // counted above.
            batch.require(Tree::Principals, subject.as_bytes(), Some(old));
            batch.delete(Tree::Principals, subject.as_bytes());
            Ok(Cas::Write(batch, ()))
        })?
        .ok_or_else(|| {
            Error::FailedPrecondition("the principal is being changed concurrently; retry".into())
        })
    }

    pub fn list_principals(
        &self,
        _proof: &Authorized<'_, ops::ListPrincipals>,
    ) -> Result<Vec<Principal>, Error> {
        self.list_principals_unchecked()
    }

    fn list_principals_unchecked(&self) -> Result<Vec<Principal>, Error> {
        self.store
            .scan_prefix(Tree::Principals, &[])?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| store_corrupt("principal")))
            .collect()
    }
}
