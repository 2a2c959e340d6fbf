//! Certificates for TLS tests, made with rcgen: a CA, server certificates for 127.0.0.1 and
//! localhost, client certificates with chosen CNs (valid or expired), written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert_str(&self) -> &str {
        self.cert.to_str().unwrap_or_default()
    }
    pub fn key_str(&self) -> &str {
        self.key.to_str().unwrap_or_default()
    }
}

/// A test CA and the directory its files live in.
pub struct TestPki {
    issuer: CertifiedIssuer<'static, KeyPair>,
    name: String,
    ca: PathBuf,
    dir: TempDir,
}

impl TestPki {
    /// A new CA called `name`, its certificate written to `<dir>/<name>-ca.pem`.
    pub fn new(name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("keygate-pki-").tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, issuer.pem())?;
        Ok(Self {
            issuer,
            name: name.to_string(),
            ca,
            dir,
        })
    }

    /// The CA certificate file.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    pub fn ca_str(&self) -> &str {
        self.ca.to_str().unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for 127.0.0.1 and localhost, usable by servers and clients (etcd members
    /// use theirs both ways), with CN `cn`, written as `<file>.pem` and `<file>-key.pem`.
    pub fn server(&self, file: &str, cn: &str) -> Result<CertFiles> {
        self.issue(file, cn, &["127.0.0.1", "localhost"], false)
    }

    /// keygate's `[server.tls]` table: `server`'s certificate, client certificates verified
    /// against this CA (`client_auth`: "required" or "optional").
    pub fn server_tls(&self, server: &CertFiles, client_auth: &str) -> String {
        format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\
             client_auth = {client_auth:?}\n",
            server.cert, server.key, self.ca
        )
    }

    /// keygate's `[upstream.tls]` table: members verified against this CA, `client` presented
    /// to them.
    pub fn upstream_tls(&self, client: &CertFiles) -> String {
        format!(
            "[upstream.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.ca, client.cert, client.key
        )
    }

    /// A client certificate with CN `cn`.
    pub fn client(&self, file: &str, cn: &str) -> Result<CertFiles> {
        self.issue(file, cn, &[], false)
    }

    /// A client certificate with CN `cn` that expired in 2020.
    pub fn expired_client(&self, file: &str, cn: &str) -> Result<CertFiles> {
        self.issue(file, cn, &[], true)
    }

    fn issue(&self, file: &str, cn: &str, sans: &[&str], expired: bool) -> Result<CertFiles> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {cn} with the {} CA", self.name))?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}
