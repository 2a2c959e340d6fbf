//! Reading PEM files, with errors that name the configuration option and the file.

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot be used; names the option and the file.
#[derive(Debug, thiserror::Error)]
#[error("{option} = {path}: {message}")]
pub struct TlsFileError {
    pub option: &'static str,
    pub path: String,
    pub message: String,
}

impl TlsFileError {
    pub fn new(option: &'static str, path: &str, message: impl Into<String>) -> Self {
        Self {
            option,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// A file's bytes, read for the option that names it.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub option: &'static str,
    pub path: String,
    pub bytes: Vec<u8>,
}

impl PemFile {
    pub fn read(option: &'static str, path: &str) -> Result<Self, TlsFileError> {
        let bytes = std::fs::read(path)
            .map_err(|e| TlsFileError::new(option, path, format!("cannot read: {e}")))?;
        Ok(Self {
            option,
            path: path.to_string(),
            bytes,
        })
    }

    fn error(&self, message: impl Into<String>) -> TlsFileError {
        TlsFileError::new(self.option, &self.path, message)
    }

    /// Every certificate in the file; at least one.
    pub fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(self.error("holds no PEM certificate"));
        }
        Ok(certs)
    }

    /// The private key in the file.
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, TlsFileError> {
        PrivateKeyDer::from_pem_slice(&self.bytes)
            .map_err(|e| self.error(format!("holds no usable PEM private key: {e}")))
    }

    /// The certificates in the file as trust anchors.
    pub fn roots(&self) -> Result<RootCertStore, TlsFileError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs()? {
            roots
                .add(cert)
                .map_err(|e| self.error(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}
