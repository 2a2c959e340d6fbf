//! TLS to the etcd members: tonic's client TLS for gRPC, and a rustls client configuration
//! from the same files for the HTTP endpoints (/health, /version) keygate asks members.

use super::files::{PemFile, TlsFileError};
use crate::config::UpstreamTlsConfig;
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The TLS keygate uses to reach https:// members.
#[derive(Clone)]
pub struct UpstreamTls {
    pub grpc: ClientTlsConfig,
    pub rustls: Arc<rustls::ClientConfig>,
    pub server_name: Option<String>,
}

impl UpstreamTls {
    /// None when no upstream TLS is configured. Every file is read and checked now, so that a
    /// bad one stops start-up rather than failing each connection.
    pub fn load(config: &UpstreamTlsConfig) -> Result<Option<Self>, TlsFileError> {
        let Some(ca_path) = &config.ca_file else {
            return Ok(None);
        };
        let ca = PemFile::read("upstream.tls.ca_file", ca_path)?;
        let roots = ca.roots()?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(super::provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError::new("upstream.tls", "-", e.to_string()))?
            .with_root_certificates(roots);
        let mut grpc = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.bytes));
        let mut client = match (&config.cert_file, &config.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert = PemFile::read("upstream.tls.cert_file", cert_path)?;
                let key = PemFile::read("upstream.tls.key_file", key_path)?;
                let config = builder
                    .with_client_auth_cert(cert.certs()?, key.key()?)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => TlsFileError::new(
                            key.option,
                            &key.path,
                            format!("does not match the certificate in {}", cert.path),
                        ),
                        other => TlsFileError::new(key.option, &key.path, other.to_string()),
                    })?;
                grpc = grpc.identity(Identity::from_pem(&cert.bytes, &key.bytes));
                config
            }
            _ => builder.with_no_client_auth(),
        };
        if let Some(name) = &config.server_name {
            grpc = grpc.domain_name(name.clone());
        }
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            grpc,
            rustls: Arc::new(client),
            server_name: config.server_name.clone(),
        }))
    }
}
