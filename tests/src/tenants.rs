//! Multi-tenant keygate for tests: bearer-token identities (`alice`, `bob`, `carol`, the admin
//! `root`), the tenant-isolation plugin in namespace mode, and gRPC requests made as one of them.

use crate::plugins::plugin_path;
use crate::{EtcdCluster, Keygate};
use anyhow::Result;
use tonic::metadata::MetadataValue;
use tonic::Request;

/// Tenants and their namespaces. `/a/` and `/ab/` share a leading "/a", so keys of one sort
/// right next to the other's.
pub const TENANTS: &[(&str, &str)] = &[("alice", "/a/"), ("bob", "/ab/"), ("carol", "/c/")];
/// The admin identity, which sees the whole keyspace.
pub const ADMIN: &str = "root";

/// The bearer token of `name`.
pub fn token(name: &str) -> String {
    format!("token-of-{name}")
}

/// The `[identity]` and `[[plugins.authorizers]]` tables of a multi-tenant keygate.
pub fn tenant_config() -> Result<String> {
    let mut tokens: Vec<String> = TENANTS
        .iter()
        .map(|(name, _)| *name)
        .chain([ADMIN])
        .map(|name| format!("{{ name = {name:?}, token = {:?} }}", token(name)))
        .collect();
    tokens.push(format!(
        "{{ name = \"mallory\", token = {:?} }}",
        token("mallory")
    ));
    let tenants: Vec<String> = TENANTS
        .iter()
        .map(|(name, prefix)| format!("{name} = {prefix:?}"))
        .collect();
    Ok(format!(
        "[identity]\nbearer_tokens = [{}]\n\n\
         [[plugins.authorizers]]\nname = \"tenants\"\npath = {}\n\
         config = {{ mode = \"namespace\", admins = [{ADMIN:?}], tenants = {{ {} }} }}\n",
        tokens.join(", "),
        plugin_path("tenant_isolation")?,
        tenants.join(", "),
    ))
}

/// keygate in front of `etcd` with the tenants configured, plus `extra` TOML (e.g.
/// `[tenants.namespaces."/a/"]` quotas) and `args`.
pub async fn start(etcd: &EtcdCluster, extra: &str, args: &[&str]) -> Result<Keygate> {
    let toml = format!("{}\n{extra}\n", tenant_config()?);
    Keygate::start_with_config(&etcd.client_urls(), &toml, args).await
}

/// `message` as a request made by `name` (its bearer token in `authorization`).
pub fn as_user<T>(name: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {}", token(name))) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
