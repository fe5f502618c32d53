//! Key administration (`kms.v1.KeyAdmin`).

use kms_core::authz::GrantOp;
use kms_core::authz::authorize;
use kms_core::keys::{Alias, KeyRef};
use kms_core::{
    CreateKeyRequest, ExportKeyRequest, ImportMaterialRequest, ImportPublicKeyRequest, KeyOptions,
};
use kms_proto::v1::{self, key_admin_server::KeyAdmin};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::convert;

fn alias(s: &str) -> Result<Alias, kms_core::Error> {
    Alias::new(s)
}

/// `CreateKeyRequest.origin`: whether the key is made without material, for import.
fn origin(name: &str) -> Result<bool, kms_core::Error> {
    match name.trim().to_ascii_lowercase().as_str() {
        "" | "generated" => Ok(false),
        "external" => Ok(true),
        _ => Err(kms_core::InvalidInput::new(
            "origin",
            "must be \"generated\" (made here) or \"external\" (imported later)",
        )
        .into()),
    }
}

fn key_response(k: &kms_core::KeyInfo) -> Response<v1::KeyResponse> {
    Response::new(v1::KeyResponse {
        key: Some(convert::key_metadata(k)),
    })
}

impl Shared {
    /// The handlers that take a key and return it differ only in the core method they call.
    async fn key_op<F>(
        &self,
        req: Request<v1::KeyRequest>,
        f: F,
    ) -> Result<Response<v1::KeyResponse>, Status>
    where
        F: FnOnce(
                &kms_core::Kms,
                &kms_core::authz::Principal,
                &KeyRef,
            ) -> Result<kms_core::KeyInfo, kms_core::Error>
            + Send
            + 'static,
    {
        let call = self.identify(&req).await?;
        let key = call.check(convert::key_ref(&req.into_inner().key, &call.principal))?;
        let k = self.run(&call, move |kms, p| f(kms, p, &key)).await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }
}

#[tonic::async_trait]
impl KeyAdmin for Shared {
    async fn describe_key(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| kms.describe_key(&authorize(p)?, key))
            .await
    }

    async fn rotate_key(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| kms.rotate_key(&authorize(p)?, key))
            .await
    }

    async fn enable_key(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| kms.enable_key(&authorize(p)?, key))
            .await
    }

    async fn disable_key(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| kms.disable_key(&authorize(p)?, key))
            .await
    }

    async fn mark_compromised(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| kms.mark_compromised(&authorize(p)?, key))
            .await
    }

    async fn cancel_key_destruction(
        &self,
        req: Request<v1::KeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        self.key_op(req, |kms, p, key| {
            kms.cancel_destruction(&authorize(p)?, key)
        })
        .await
    }

    async fn create_key(
        &self,
        req: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let request = CreateKeyRequest {
            namespace: call.check(convert::namespace(&m.namespace))?,
            purpose: call.check(convert::purpose(m.purpose))?,
            spec: call.check(convert::key_spec(&m.algorithm))?,
            alias: if m.alias.is_empty() {
                None
            } else {
                Some(call.check(alias(&m.alias))?)
            },
            rotation_period: m.rotation_period_seconds,
            description: m.description,
        };
        let options = KeyOptions {
            external: call.check(origin(&m.origin))?,
            exportable: m.exportable,
        };
        let k = self
            .run(&call, move |kms, p| {
                kms.create_key_with(&authorize(p)?, request, options)
            })
            .await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }

    async fn import_public_key(
        &self,
        req: Request<v1::ImportPublicKeyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let public_key = call.check(convert::public_key(self.kms.policy(), &m.public_key))?;
        let request = ImportPublicKeyRequest {
            namespace: call.check(convert::namespace(&m.namespace))?,
            purpose: call.check(convert::purpose(m.purpose))?,
            public_key,
            alias: if m.alias.is_empty() {
                None
            } else {
                Some(call.check(alias(&m.alias))?)
            },
            description: m.description,
        };
        let k = self
            .run(&call, move |kms, p| {
                kms.import_public_key(&authorize(p)?, request)
            })
            .await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }

    async fn get_import_parameters(
        &self,
        req: Request<v1::GetImportParametersRequest>,
    ) -> Result<Response<v1::ImportParametersResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let spec = call.check(convert::wrapping_spec(&m.wrapping_spec))?;
        let wrapping_key_spec = if m.wrapping_key_spec.is_empty() {
            None
        } else {
            Some(call.check(convert::key_spec(&m.wrapping_key_spec))?)
        };
        let params = self
            .run(&call, move |kms, p| {
                kms.get_import_parameters(&authorize(p)?, &key, spec, wrapping_key_spec)
            })
            .await?;
        call.note_key(&params.key_id, None);
        Ok(Response::new(v1::ImportParametersResponse {
            key_id: params.key_id.to_string(),
            import_token: params.token,
            wrapping_spec: params.wrapping_spec.name().to_owned(),
            wrapping_public_key_pem: params.wrapping_public_key.to_pem(),
            expires_at: params.expires_at,
        }))
    }

    async fn import_key_material(
        &self,
        req: Request<v1::ImportKeyMaterialRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let request = ImportMaterialRequest {
            key: call.check(convert::key_ref(&m.key, &call.principal))?,
            token: m.import_token,
            wrapped: m.wrapped_material,
            expires_at: m.expires_at,
        };
        let done = self
            .run(&call, move |kms, p| {
                kms.import_key_material(&authorize(p)?, request)
            })
            .await?;
        call.note_key(&done.info.id, Some(done.info.current_version()));
        call.note_transfer(done.wrapping_spec.name(), &done.wrapping_key_sm3);
        Ok(key_response(&done.info))
    }

    async fn export_key(
        &self,
        req: Request<v1::ExportKeyRequest>,
    ) -> Result<Response<v1::ExportKeyResponse>, Status> {
        let call = self.identify(&req).await?;
        // Under dual control the export is made with its released approval, like a backup.
        let approval = call.check(super::approvals::approval_of(&req))?;
        let m = req.into_inner();
        let request = ExportKeyRequest {
            key: call.check(convert::key_ref(&m.key, &call.principal))?,
            version: (m.version != 0).then_some(m.version),
            recipient: call.check(convert::public_key(
                self.kms.policy(),
                &m.recipient_public_key,
            ))?,
            wrapping_spec: call.check(convert::wrapping_spec(&m.wrapping_spec))?,
        };
        let out = self
            .run(&call, move |kms, p| match approval {
                Some(id) => kms.export_key(&kms.release(&authorize(p)?, &id)?, request),
                None => kms.export_key(&authorize(p)?, request),
            })
            .await?;
        call.note_key(&out.key_id, Some(out.version));
        call.note_transfer(out.wrapping_spec.name(), &out.recipient_sm3);
        Ok(Response::new(v1::ExportKeyResponse {
            key_id: out.key_id.to_string(),
            version: out.version,
            algorithm: out.spec.name().to_owned(),
            wrapping_spec: out.wrapping_spec.name().to_owned(),
            wrapped_material: out.wrapped,
            recipient_sm3: out.recipient_sm3,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let ns = if m.namespace.is_empty() {
            None
        } else {
            Some(call.check(convert::namespace(&m.namespace))?)
        };
        let keys = self
            .run(&call, move |kms, p| {
                kms.list_keys(&authorize(p)?, ns.as_ref())
            })
            .await?;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.iter().map(convert::key_metadata).collect(),
        }))
    }

    async fn set_rotation_policy(
        &self,
        req: Request<v1::SetRotationPolicyRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let k = self
            .run(&call, move |kms, p| {
                kms.set_rotation_period(&authorize(p)?, &key, m.rotation_period_seconds)
            })
            .await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }

    async fn schedule_key_destruction(
        &self,
        req: Request<v1::ScheduleKeyDestructionRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let days = (m.pending_days != 0).then_some(m.pending_days);
        let k = self
            .run(&call, move |kms, p| {
                kms.schedule_destruction(&authorize(p)?, &key, days)
            })
            .await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }

    async fn create_alias(
        &self,
        req: Request<v1::CreateAliasRequest>,
    ) -> Result<Response<v1::KeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let a = call.check(alias(&m.alias))?;
        let k = self
            .run(&call, move |kms, p| {
                kms.create_alias(&authorize(p)?, &key, a)
            })
            .await?;
        call.note_key(&k.id, Some(k.current_version()));
        Ok(key_response(&k))
    }

    async fn delete_alias(
        &self,
        req: Request<v1::DeleteAliasRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let ns = call.check(convert::namespace(&m.namespace))?;
        let a = call.check(alias(&m.alias))?;
        self.run(&call, move |kms, p| {
            kms.delete_alias(&authorize(p)?, &ns, &a)
        })
        .await?;
        Ok(Response::new(v1::Empty {}))
    }

    async fn create_grant(
        &self,
        req: Request<v1::CreateGrantRequest>,
    ) -> Result<Response<v1::GrantInfo>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let grantee = call.check(convert::namespace(&m.grantee_namespace))?;
        let ops = call.check(
            m.operations
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| GrantOp::parse(s.trim()))
                .collect::<Result<Vec<_>, _>>(),
        )?;
        let g = self
            .run(&call, move |kms, p| {
                kms.create_grant(&authorize(p)?, &key, grantee, ops)
            })
            .await?;
        call.note_key(&g.key_id, None);
        Ok(Response::new(convert::grant_info(&g)))
    }

    async fn revoke_grant(
        &self,
        req: Request<v1::RevokeGrantRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let grantee = call.check(convert::namespace(&m.grantee_namespace))?;
        self.run(&call, move |kms, p| {
            kms.revoke_grant(&authorize(p)?, &key, &grantee)
        })
        .await?;
        Ok(Response::new(v1::Empty {}))
    }

    async fn list_grants(
        &self,
        req: Request<v1::ListGrantsRequest>,
    ) -> Result<Response<v1::ListGrantsResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = if m.key.is_empty() {
            None
        } else {
            Some(call.check(convert::key_ref(&m.key, &call.principal))?)
        };
        let grants = self
            .run(&call, move |kms, p| {
                kms.list_grants(&authorize(p)?, key.as_ref())
            })
            .await?;
        Ok(Response::new(v1::ListGrantsResponse {
            grants: grants.iter().map(convert::grant_info).collect(),
        }))
    }

    async fn add_principal(
        &self,
        req: Request<v1::AddPrincipalRequest>,
    ) -> Result<Response<v1::PrincipalInfo>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let role = call.check(convert::role(&m.role, &m.namespace))?;
        let added = self
            .run(&call, move |kms, p| {
                kms.add_principal(&authorize(p)?, &m.subject, role)
            })
            .await?;
        Ok(Response::new(convert::principal_info(&added)))
    }

    async fn remove_principal(
        &self,
        req: Request<v1::RemovePrincipalRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let call = self.identify(&req).await?;
        let subject = req.into_inner().subject;
        self.run(&call, move |kms, p| {
            kms.remove_principal(&authorize(p)?, &subject)
        })
        .await?;
        Ok(Response::new(v1::Empty {}))
    }

    async fn list_principals(
        &self,
        req: Request<v1::Empty>,
    ) -> Result<Response<v1::ListPrincipalsResponse>, Status> {
        let call = self.identify(&req).await?;
        let all = self
            .run(&call, move |kms, p| kms.list_principals(&authorize(p)?))
            .await?;
        Ok(Response::new(v1::ListPrincipalsResponse {
            principals: all.iter().map(convert::principal_info).collect(),
        }))
    }

    async fn approve(
        &self,
        req: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::ApprovalInfo>, Status> {
        self.approve_call(req).await
    }

    async fn reject(
        &self,
        req: Request<v1::RejectRequest>,
    ) -> Result<Response<v1::ApprovalInfo>, Status> {
        self.reject_call(req).await
    }

    async fn list_approvals(
        &self,
        req: Request<v1::ListApprovalsRequest>,
    ) -> Result<Response<v1::ListApprovalsResponse>, Status> {
        self.list_approvals_call(req).await
    }
}
