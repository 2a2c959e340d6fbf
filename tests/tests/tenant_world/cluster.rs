//! The cluster-wide RPCs, refused inside a namespace and to a user without a tenant.

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::{
    AlarmRequest, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, CompactionRequest,
    DefragmentRequest, DowngradeRequest, HashKvRequest, HashRequest, LeaseGrantRequest,
    LeaseLeasesRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    SnapshotRequest, StatusRequest, WatchCreateRequest,
};
use keygate_proto::v3lockpb::LockRequest;
use keygate_tests::tenants::as_user;
use keygate_tests::Clients;
use tonic::{Code, Status};

use super::watch::WatchStream;
use super::{code_of, ALICE};

/// Cluster-wide RPCs are refused to A (Status and MemberList are not), and everything to
/// mallory, who has a token and no tenant.
pub async fn check_refused(c: &mut Clients) -> Result<()> {
    // Cluster-wide RPCs are refused inside a namespace; Status and MemberList are not.
    let denied = cluster_wide_codes(c, ALICE).await;
    for (rpc, r) in &denied {
        ensure!(
            r.as_ref().err().map(|s| (s.code(), s.message()))
                == Some((Code::PermissionDenied, "etcdserver: permission denied")),
            "{rpc} as alice: {r:?}"
        );
    }
    (c.maintenance)
        .status(as_user(ALICE, StatusRequest {}))
        .await?;
    (c.cluster)
        .member_list(as_user(ALICE, MemberListRequest { linearizable: true }))
        .await?;
    // mallory has a token and no tenant: denied everything.
    let denied = cluster_wide_codes(c, "mallory").await;
    let mut m = Vec::new();
    m.push((
        "Status",
        (c.maintenance)
            .status(as_user("mallory", StatusRequest {}))
            .await
            .map(drop),
    ));
    m.push((
        "MemberList",
        (c.cluster)
            .member_list(as_user("mallory", MemberListRequest::default()))
            .await
            .map(drop),
    ));
    m.push((
        "Range",
        (c.kv)
            .range(as_user(
                "mallory",
                RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    m.push((
        "Put",
        (c.kv)
            .put(as_user(
                "mallory",
                PutRequest {
                    key: "k".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    m.push((
        "LeaseGrant",
        (c.lease)
            .lease_grant(as_user("mallory", LeaseGrantRequest { ttl: 5, id: 0 }))
            .await
            .map(drop),
    ));
    m.push((
        "Lock",
        (c.lock)
            .lock(as_user(
                "mallory",
                LockRequest {
                    name: "n".into(),
                    lease: 0,
                },
            ))
            .await
            .map(drop),
    ));
    let watch = async {
        let first = WatchCreateRequest {
            key: "k".into(),
            ..Default::default()
        };
        WatchStream::open(&mut c.clone(), Some("mallory"), first)
            .await
            .map(|(_, id)| id)
    }
    .await;
    ensure!(
        !matches!(watch, Ok(id) if id >= 0),
        "mallory's watch: {watch:?}"
    );
    for (rpc, r) in denied.iter().chain(&m) {
        ensure!(
            code_of(r) == Some(Code::PermissionDenied),
            "{rpc} as mallory: {r:?}"
        );
    }
    Ok(())
}

/// Every cluster-wide RPC, made as `user`; the results with their payload dropped.
pub async fn cluster_wide_codes(
    c: &mut Clients,
    user: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let u = |m| as_user(user, m);
    let mut out: Vec<(&'static str, Result<(), Status>)> = Vec::new();
    out.push((
        "Compact",
        c.kv.compact(u(CompactionRequest {
            revision: 1,
            physical: false,
        }))
        .await
        .map(drop),
    ));
    out.push((
        "LeaseLeases",
        c.lease
            .lease_leases(as_user(user, LeaseLeasesRequest {}))
            .await
            .map(drop),
    ));
    let snap = match c
        .maintenance
        .snapshot(as_user(user, SnapshotRequest {}))
        .await
    {
        Ok(s) => s.into_inner().message().await.map(drop),
        Err(e) => Err(e),
    };
    out.push(("Snapshot", snap));
    out.push((
        "Defragment",
        c.maintenance
            .defragment(as_user(user, DefragmentRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "Hash",
        c.maintenance
            .hash(as_user(user, HashRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "HashKV",
        c.maintenance
            .hash_kv(as_user(user, HashKvRequest { revision: 0 }))
            .await
            .map(drop),
    ));
    out.push((
        "MoveLeader",
        c.maintenance
            .move_leader(as_user(user, MoveLeaderRequest { target_id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "Alarm",
        c.maintenance
            .alarm(as_user(user, AlarmRequest::default()))
            .await
            .map(drop),
    ));
    out.push((
        "Downgrade",
        c.maintenance
            .downgrade(as_user(user, DowngradeRequest::default()))
            .await
            .map(drop),
    ));
    out.push((
        "MemberAdd",
        c.cluster
            .member_add(as_user(
                user,
                MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    is_learner: true,
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "MemberRemove",
        c.cluster
            .member_remove(as_user(user, MemberRemoveRequest { id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "MemberUpdate",
        c.cluster
            .member_update(as_user(
                user,
                MemberUpdateRequest {
                    id: 1,
                    peer_ur_ls: vec![],
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "MemberPromote",
        c.cluster
            .member_promote(as_user(user, MemberPromoteRequest { id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "AuthEnable",
        c.auth
            .auth_enable(as_user(user, AuthEnableRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "AuthDisable",
        c.auth
            .auth_disable(as_user(user, AuthDisableRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "AuthStatus",
        c.auth
            .auth_status(as_user(user, AuthStatusRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "UserAdd",
        c.auth
            .user_add(as_user(
                user,
                AuthUserAddRequest {
                    name: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserGet",
        c.auth
            .user_get(as_user(
                user,
                AuthUserGetRequest {
                    name: "root".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserList",
        c.auth
            .user_list(as_user(user, AuthUserListRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "UserDelete",
        c.auth
            .user_delete(as_user(user, AuthUserDeleteRequest { name: "u".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "UserChangePassword",
        c.auth
            .user_change_password(as_user(
                user,
                AuthUserChangePasswordRequest {
                    name: "u".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserGrantRole",
        c.auth
            .user_grant_role(as_user(
                user,
                AuthUserGrantRoleRequest {
                    user: "u".into(),
                    role: "r".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserRevokeRole",
        c.auth
            .user_revoke_role(as_user(
                user,
                AuthUserRevokeRoleRequest {
                    name: "u".into(),
                    role: "r".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "RoleAdd",
        c.auth
            .role_add(as_user(user, AuthRoleAddRequest { name: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleGet",
        c.auth
            .role_get(as_user(user, AuthRoleGetRequest { role: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleList",
        c.auth
            .role_list(as_user(user, AuthRoleListRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "RoleDelete",
        c.auth
            .role_delete(as_user(user, AuthRoleDeleteRequest { role: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleGrantPermission",
        c.auth
            .role_grant_permission(as_user(
                user,
                AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: None,
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "RoleRevokePermission",
        c.auth
            .role_revoke_permission(as_user(
                user,
                AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out
}
