//! Differential etcdctl runs: the same command against etcd directly and through the target
//! under test (keygate), each in front of its own fresh cluster, outputs normalized and
//! compared.
//!
//! Both clusters start empty and receive the same commands in the same order, so revisions,
//! versions, counts and keys line up exactly; only ids, addresses and timings are masked.

use anyhow::{bail, Result};

use crate::normalize::normalize;
use crate::pki::TestPki;
use crate::{CmdOutput, EtcdCluster, EtcdTls, Etcdctl, GrpcProxy, Keygate};

/// What stands in front of the second cluster. `KEYGATE_E2E_FRONT` picks it: `keygate` (the
/// default), or `direct` / `grpc-proxy` to check the tests themselves against etcd.
enum Front {
    Keygate(Keygate),
    GrpcProxy(GrpcProxy),
    Direct,
}

/// Two fresh clusters: `reference` used directly, `under_test` behind the front.
pub struct DiffPair {
    pub reference: EtcdCluster,
    pub backend: EtcdCluster,
    front: Front,
    /// etcdctl against the reference cluster's first member.
    pub direct: Etcdctl,
    /// etcdctl against the front (keygate).
    pub gw: Etcdctl,
    /// etcdctl against the backend cluster's first member, bypassing the front.
    pub backend_direct: Etcdctl,
}

impl DiffPair {
    /// Starts two `members`-member clusters (concurrently) and keygate in front of the second.
    pub async fn start(members: usize) -> Result<Self> {
        let (reference, backend) =
            tokio::try_join!(EtcdCluster::start(members), EtcdCluster::start(members))?;
        let kind = std::env::var("KEYGATE_E2E_FRONT").unwrap_or_else(|_| "keygate".into());
        let front = match kind.as_str() {
            "keygate" => Front::Keygate(Keygate::start(&backend.client_urls(), &[]).await?),
            "grpc-proxy" => Front::GrpcProxy(GrpcProxy::start(&backend.client_urls()).await?),
            "direct" => Front::Direct,
            other => bail!("KEYGATE_E2E_FRONT={other}: want keygate, grpc-proxy or direct"),
        };
        let front_endpoint = match &front {
            Front::Keygate(k) => k.addr().to_string(),
            Front::GrpcProxy(p) => p.addr().to_string(),
            Front::Direct => backend.addr(0),
        };
        Ok(Self {
            direct: Etcdctl::new(&[reference.addr(0)])?,
            gw: Etcdctl::new(&[front_endpoint])?,
            backend_direct: Etcdctl::new(&[backend.addr(0)])?,
            reference,
            backend,
            front,
        })
    }

    /// [`Self::start`] over TLS everywhere: both clusters serve TLS and require client
    /// certificates (etcd's --client-cert-auth); keygate terminates TLS the same way and
    /// reaches its cluster over TLS with a certificate of its own; every etcdctl presents a
    /// client certificate with CN `client_cn`. The certificates come from `pki`.
    pub async fn start_tls(members: usize, pki: &TestPki, client_cn: &str) -> Result<Self> {
        let member = pki.server("diff-etcd", "etcd-member")?;
        let etcd_tls = EtcdTls {
            ca: pki.ca().to_path_buf(),
            cert: member.cert,
            key: member.key,
            plain_local: false,
        };
        let (reference, backend) = tokio::try_join!(
            EtcdCluster::start_tls(members, etcd_tls.clone()),
            EtcdCluster::start_tls(members, etcd_tls)
        )?;
        let server = pki.server("diff-keygate", "keygate")?;
        let upstream = pki.client("diff-keygate-upstream", "keygate")?;
        let toml = pki.server_tls(&server, "required") + &pki.upstream_tls(&upstream);
        let keygate = Keygate::start_with_config(&backend.client_urls(), &toml, &[]).await?;
        let client = pki.client("diff-etcdctl", client_cn)?;
        let ctl = |endpoint: String| -> Result<Etcdctl> {
            Ok(Etcdctl::new(&[endpoint])?.with_tls(pki.ca(), &client))
        };
        Ok(Self {
            direct: ctl(reference.endpoint(0))?,
            gw: ctl(format!("https://{}", keygate.addr()))?,
            backend_direct: ctl(backend.endpoint(0))?,
            reference,
            backend,
            front: Front::Keygate(keygate),
        })
    }

    /// keygate, when it is the front.
    pub fn keygate(&self) -> Option<&Keygate> {
        match &self.front {
            Front::Keygate(k) => Some(k),
            _ => None,
        }
    }

    /// The front's log tail, for failure messages.
    pub fn front_log(&self) -> String {
        match &self.front {
            Front::Keygate(k) => format!("keygate log tail:\n{}", k.log_tail(30)),
            Front::GrpcProxy(p) => {
                format!(
                    "grpc-proxy log tail:\n{}",
                    crate::process::log_tail(p.log_path(), 30)
                )
            }
            Front::Direct => String::new(),
        }
    }

    /// Runs `etcdctl <args>` directly and through the front; fails unless the normalized
    /// results are equal. Returns the (raw) result through the front.
    pub async fn same(&self, args: &[&str]) -> Result<CmdOutput> {
        self.same_with_stdin(args, "").await
    }

    /// [`Self::same`] with a standard input.
    pub async fn same_with_stdin(&self, args: &[&str], stdin: &str) -> Result<CmdOutput> {
        let direct = self.direct.run_with_stdin(args, stdin).await?;
        let gw = self.gw.run_with_stdin(args, stdin).await?;
        check_same(args, &direct, &gw).map_err(|e| e.context(self.front_log()))?;
        Ok(gw)
    }

    /// Runs different argument lists on each side (e.g. each side's own lease id) and compares.
    pub async fn same_each(&self, direct_args: &[&str], gw_args: &[&str]) -> Result<CmdOutput> {
        let direct = self.direct.run(direct_args).await?;
        let gw = self.gw.run(gw_args).await?;
        check_same(gw_args, &direct, &gw).map_err(|e| e.context(self.front_log()))?;
        Ok(gw)
    }
}

/// Fails, showing both sides raw and normalized, unless they normalize to the same thing.
pub fn check_same(what: &[&str], direct: &CmdOutput, gw: &CmdOutput) -> Result<()> {
    let (nd, ng) = (normalize(direct), normalize(gw));
    if nd != ng {
        bail!(
            "etcdctl {what:?} differs through the front.\n\
             direct (normalized): {nd:#?}\nfront  (normalized): {ng:#?}\n\
             direct (raw): {direct:#?}\nfront  (raw): {gw:#?}"
        );
    }
    Ok(())
}
