//! TLS clients for tests: gRPC (tonic) and a one-shot HTTPS GET that also reports the
//! certificate the server presented.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::pki::CertFiles;
use crate::Clients;

/// gRPC clients to `addr` (`127.0.0.1:PORT`) over TLS, trusting `ca`, presenting `client`.
pub async fn tls_clients(addr: &str, ca: &Path, client: Option<&CertFiles>) -> Result<Clients> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&c.cert)?,
            std::fs::read(&c.key)?,
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("TLS connect to {addr}"))?;
    Ok(Clients::from_channel(channel))
}

/// A rustls client configuration trusting `ca`, presenting `client` when given.
pub fn rustls_config(ca: &Path, client: Option<&CertFiles>) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(&c.key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTPS response, with the server's leaf certificate.
#[derive(Debug, Clone)]
pub struct HttpsResponse {
    pub status: u16,
    pub body: String,
    pub server_cert: Vec<u8>,
}

/// `GET https://{addr}{path}` with extra headers; fails when the TLS handshake fails or the
/// server closes the connection without answering (a refused client certificate).
pub async fn https_get(
    addr: &str,
    path: &str,
    config: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Result<HttpsResponse> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake")?;
        let server_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        tls.read_to_end(&mut raw)
            .await
            .context("reading the response")?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP response: {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
        Ok(HttpsResponse {
            status,
            body: body.to_string(),
            server_cert,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow!("GET https://{addr}{path} timed out"))?
}
