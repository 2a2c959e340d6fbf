//! The TLS and identity sections of the configuration: the client port's certificate and
//! client-certificate policy, TLS to the etcd members, and who callers may be.

use serde::Deserialize;

/// TLS on the client port. TLS is on when `cert_file` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain served to clients; setting it turns TLS on.
    pub cert_file: Option<String>,
    /// PEM private key of cert_file (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// PEM CA bundle that client certificates must chain to (etcd's --trusted-ca-file).
    pub client_ca_file: Option<String>,
    /// Client certificates: "off", "optional" (verified when sent) or "required".
    pub client_auth: String,
    /// Lowest TLS version accepted: "1.2" or "1.3".
    pub min_version: String,
    /// Cipher suites allowed (e.g. "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"); empty = rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// How often the certificate, key and CA files are checked for changes.
    pub reload_interval_ms: u64,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout_ms: u64,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: "off".to_string(),
            min_version: "1.2".to_string(),
            cipher_suites: Vec::new(),
            reload_interval_ms: 5000,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl ServerTlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// TLS to the etcd members, used for `https://` endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM CA bundle the members' certificates must chain to; required for https:// endpoints.
    pub ca_file: Option<String>,
    /// PEM client certificate keygate presents to the members (for --client-cert-auth).
    pub cert_file: Option<String>,
    /// PEM private key of cert_file.
    pub key_file: Option<String>,
    /// Name checked against the members' certificates instead of the endpoint's host.
    pub server_name: Option<String>,
}

/// Who callers are, and whether anonymous callers are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Serve requests that carry no identity (no client certificate, token or bearer token).
    pub allow_anonymous: bool,
    /// Static bearer tokens (`authorization: Bearer <token>`) and the names they stand for.
    pub bearer_tokens: Vec<BearerToken>,
    /// Most etcd auth tokens remembered (learned from Authenticate); the oldest are forgotten.
    pub max_learned_tokens: usize,
    /// Most distinct identity names given their own metrics label; the rest count as "other".
    pub max_metric_identities: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            bearer_tokens: Vec::new(),
            max_learned_tokens: 10_000,
            max_metric_identities: 100,
        }
    }
}

/// One static bearer token. Its Debug form hides the token.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BearerToken {
    /// The identity name requests with this token are attributed to.
    pub name: String,
    /// The token itself.
    pub token: String,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("name", &self.name)
            .field("token", &"<hidden>")
            .finish()
    }
}

impl super::Config {
    /// The TLS and identity options that can be checked without reading any file; the files
    /// themselves are read (and their errors reported) when keygate starts.
    pub(super) fn validate_tls(&self) -> Result<(), super::ConfigError> {
        let invalid =
            |option: &'static str, message: String| super::ConfigError::Invalid { option, message };
        let t = &self.server.tls;
        if !matches!(t.client_auth.as_str(), "off" | "optional" | "required") {
            return Err(invalid(
                "server.tls.client_auth",
                format!(
                    "{:?}: expected \"off\", \"optional\" or \"required\"",
                    t.client_auth
                ),
            ));
        }
        if !matches!(t.min_version.as_str(), "1.2" | "1.3") {
            return Err(invalid(
                "server.tls.min_version",
                format!("{:?}: expected \"1.2\" or \"1.3\"", t.min_version),
            ));
        }
        if !t.enabled() && (t.key_file.is_some() || t.client_ca_file.is_some()) {
            return Err(invalid(
                "server.tls.cert_file",
                "required when server.tls.key_file or client_ca_file is set".into(),
            ));
        }
        if t.enabled() && t.key_file.is_none() {
            return Err(invalid(
                "server.tls.key_file",
                "required when server.tls.cert_file is set".into(),
            ));
        }
        if t.client_auth != "off" && t.client_ca_file.is_none() {
            return Err(invalid(
                "server.tls.client_ca_file",
                format!("required when client_auth = {:?}", t.client_auth),
            ));
        }
        if t.client_auth != "off" && !t.enabled() {
            return Err(invalid(
                "server.tls.client_auth",
                "client certificates need TLS: set server.tls.cert_file".into(),
            ));
        }
        if t.reload_interval_ms < 100 {
            return Err(invalid(
                "server.tls.reload_interval_ms",
                "must be at least 100".into(),
            ));
        }
        if t.handshake_timeout_ms == 0 {
            return Err(invalid(
                "server.tls.handshake_timeout_ms",
                "must be greater than 0".into(),
            ));
        }
        let u = &self.upstream.tls;
        let https = self
            .upstream
            .endpoints
            .iter()
            .any(|e| e.starts_with("https://"));
        if https && u.ca_file.is_none() {
            return Err(invalid(
                "upstream.tls.ca_file",
                "required for https:// endpoints".into(),
            ));
        }
        if u.cert_file.is_some() != u.key_file.is_some() {
            return Err(invalid(
                "upstream.tls.cert_file",
                "upstream.tls.cert_file and key_file go together".into(),
            ));
        }
        for (i, b) in self.identity.bearer_tokens.iter().enumerate() {
            if b.name.is_empty() || b.token.is_empty() {
                return Err(invalid(
                    "identity.bearer_tokens",
                    format!("entry {i}: name and token must both be set"),
                ));
            }
        }
        if self.identity.max_metric_identities == 0 {
            return Err(invalid(
                "identity.max_metric_identities",
                "must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}
