//! Who is calling. The server records what the connection proves (a verified client
//! certificate) when it accepts it; the pipeline completes the identity per request from its
//! metadata (etcd auth token, static bearer token) and carries it in the request's extensions
//! to every later phase.
//!
//! Precedence follows etcd's: a token (keygate's bearer token, then etcd's auth token) wins
//! over the certificate's CN, which wins over anonymous.

mod tokens;

pub use tokens::{jwt_user, TokenBook};

use crate::config::IdentityConfig;
use crate::metrics::IdentityMetrics;
use http::HeaderMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::{Code, Status};

/// etcd's answer to a request without credentials when auth is on.
pub const USER_EMPTY: &str = "etcdserver: user name is empty";
/// etcd's answer to a token it does not accept.
pub const INVALID_TOKEN: &str = "etcdserver: invalid auth token";

/// What a verified client certificate says: the CN (etcd's user name) and the SANs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub cn: Option<String>,
    pub sans: Vec<String>,
}

/// What the server knows about a connection; put into every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// `peer` as "ip:port", formatted once for all the connection's requests.
    pub peer_text: Arc<str>,
    pub tls: bool,
    pub cert: Option<Arc<CertIdentity>>,
}

impl ConnectionInfo {
    pub fn new(peer: SocketAddr, tls: bool, cert: Option<Arc<CertIdentity>>) -> Self {
        ConnectionInfo {
            peer,
            peer_text: peer.to_string().into(),
            tls,
            cert,
        }
    }
}

/// Where an identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Anonymous,
    Certificate,
    EtcdToken,
    Bearer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Anonymous => "anonymous",
            Source::Certificate => "certificate",
            Source::EtcdToken => "etcd_token",
            Source::Bearer => "bearer",
        }
    }
}

/// The caller of one request.
#[derive(Clone, Debug)]
pub struct Identity {
    pub source: Source,
    /// The user name (certificate CN, etcd user, bearer token name); empty when unknown.
    pub name: String,
    /// The connection's verified certificate, whatever the source.
    pub cert: Option<Arc<CertIdentity>>,
    /// The client's address, "ip:port".
    pub peer: Option<Arc<str>>,
}

impl Identity {
    /// JSON for /debug/identity.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source.as_str(),
            "name": self.name,
            "cn": self.cert.as_ref().and_then(|c| c.cn.clone()),
            "sans": self.cert.as_ref().map(|c| c.sans.clone()).unwrap_or_default(),
            "peer": self.peer.as_deref(),
        })
    }
}

/// Works out identities and counts requests by identity.
pub struct Identifier {
    allow_anonymous: bool,
    bearer: HashMap<String, String>,
    pub tokens: TokenBook,
    metrics: IdentityMetrics,
}

impl Identifier {
    pub fn new(config: &IdentityConfig, metrics: IdentityMetrics) -> Self {
        Self {
            allow_anonymous: config.allow_anonymous,
            bearer: config
                .bearer_tokens
                .iter()
                .map(|b| (b.token.clone(), b.name.clone()))
                .collect(),
            tokens: TokenBook::new(config.max_learned_tokens),
            metrics,
        }
    }

    pub fn metrics(&self) -> &IdentityMetrics {
        &self.metrics
    }

    /// The caller's identity from the connection and the request's headers. A bearer token
    /// is keygate's own credential, so it is removed before the request goes to etcd (which
    /// would otherwise read `authorization` as an etcd token). `anonymous_ok` lets a request
    /// through without identity even where anonymous callers are refused (Authenticate).
    pub fn identify(
        &self,
        headers: &mut HeaderMap,
        conn: Option<&ConnectionInfo>,
        anonymous_ok: bool,
    ) -> Result<Identity, Status> {
        let cert = conn.and_then(|c| c.cert.clone());
        let peer = conn.map(|c| c.peer_text.clone());
        let make = |source, name: String| Identity {
            source,
            name,
            cert: cert.clone(),
            peer: peer.clone(),
        };
        let auth = header(headers, &http::header::AUTHORIZATION);
        if let Some(token) = auth.as_deref().and_then(strip_bearer) {
            let Some(name) = self.bearer.get(token).cloned() else {
                return Err(Status::new(Code::Unauthenticated, INVALID_TOKEN));
            };
            headers.remove(http::header::AUTHORIZATION);
            return Ok(make(Source::Bearer, name));
        }
        // etcd reads its token from `token`, or from `authorization` (its HTTP gateway).
        if let Some(token) = header(headers, &crate::headers::TOKEN).or(auth) {
            let name = self.tokens.user(&token).unwrap_or_default();
            return Ok(make(Source::EtcdToken, name));
        }
        if let Some(cn) = cert.as_ref().and_then(|c| c.cn.clone()) {
            return Ok(make(Source::Certificate, cn));
        }
        if !self.allow_anonymous && !anonymous_ok {
            return Err(Status::new(Code::InvalidArgument, USER_EMPTY));
        }
        Ok(make(Source::Anonymous, String::new()))
    }

    /// Counts a request by its caller.
    pub fn account(&self, identity: &Identity) {
        let name = match (identity.source, identity.name.is_empty()) {
            (Source::Anonymous, _) => "anonymous",
            (_, true) => "unknown",
            (_, false) => identity.name.as_str(),
        };
        self.metrics.request(identity.source.as_str(), name);
    }
}

fn header(headers: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}
