//! etcdserverpb.Auth: authentication and user and role management, passed through to etcd.

use super::unary;
use crate::method;
use crate::pipeline::Gateway;
use keygate_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuthService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> AuthServer<AuthService> {
    AuthServer::new(AuthService(gw.clone())).max_decoding_message_size(max_recv)
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, r: Request<AuthEnableRequest>) -> R<AuthEnableResponse> {
        unary!(self.0, method::AUTH_ENABLE, r)
    }
    async fn auth_disable(&self, r: Request<AuthDisableRequest>) -> R<AuthDisableResponse> {
        unary!(self.0, method::AUTH_DISABLE, r)
    }
    async fn auth_status(&self, r: Request<AuthStatusRequest>) -> R<AuthStatusResponse> {
        unary!(self.0, method::AUTH_STATUS, r)
    }
    /// Passes through to etcd, and remembers which user the token etcd issued belongs to.
    async fn authenticate(&self, r: Request<AuthenticateRequest>) -> R<AuthenticateResponse> {
        let user = r.get_ref().name.clone();
        let response: Response<AuthenticateResponse> = unary!(self.0, method::AUTHENTICATE, r)?;
        self.0
            .identity
            .tokens
            .learn(&response.get_ref().token, &user);
        Ok(response)
    }
    async fn user_add(&self, r: Request<AuthUserAddRequest>) -> R<AuthUserAddResponse> {
        unary!(self.0, method::USER_ADD, r)
    }
    async fn user_get(&self, r: Request<AuthUserGetRequest>) -> R<AuthUserGetResponse> {
        unary!(self.0, method::USER_GET, r)
    }
    async fn user_list(&self, r: Request<AuthUserListRequest>) -> R<AuthUserListResponse> {
        unary!(self.0, method::USER_LIST, r)
    }
    async fn user_delete(&self, r: Request<AuthUserDeleteRequest>) -> R<AuthUserDeleteResponse> {
        unary!(self.0, method::USER_DELETE, r)
    }
    async fn user_change_password(
        &self,
        r: Request<AuthUserChangePasswordRequest>,
    ) -> R<AuthUserChangePasswordResponse> {
        unary!(self.0, method::USER_CHANGE_PASSWORD, r)
    }
    async fn user_grant_role(
        &self,
        r: Request<AuthUserGrantRoleRequest>,
    ) -> R<AuthUserGrantRoleResponse> {
        unary!(self.0, method::USER_GRANT_ROLE, r)
    }
    async fn user_revoke_role(
        &self,
        r: Request<AuthUserRevokeRoleRequest>,
    ) -> R<AuthUserRevokeRoleResponse> {
        unary!(self.0, method::USER_REVOKE_ROLE, r)
    }
    async fn role_add(&self, r: Request<AuthRoleAddRequest>) -> R<AuthRoleAddResponse> {
        unary!(self.0, method::ROLE_ADD, r)
    }
    async fn role_get(&self, r: Request<AuthRoleGetRequest>) -> R<AuthRoleGetResponse> {
        unary!(self.0, method::ROLE_GET, r)
    }
    async fn role_list(&self, r: Request<AuthRoleListRequest>) -> R<AuthRoleListResponse> {
        unary!(self.0, method::ROLE_LIST, r)
    }
    async fn role_delete(&self, r: Request<AuthRoleDeleteRequest>) -> R<AuthRoleDeleteResponse> {
        unary!(self.0, method::ROLE_DELETE, r)
    }
    async fn role_grant_permission(
        &self,
        r: Request<AuthRoleGrantPermissionRequest>,
    ) -> R<AuthRoleGrantPermissionResponse> {
        unary!(self.0, method::ROLE_GRANT_PERMISSION, r)
    }
    async fn role_revoke_permission(
        &self,
        r: Request<AuthRoleRevokePermissionRequest>,
    ) -> R<AuthRoleRevokePermissionResponse> {
        unary!(self.0, method::ROLE_REVOKE_PERMISSION, r)
    }
}
