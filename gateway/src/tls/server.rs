//! The client port's TLS: a rustls server configuration built from the configured files, and
//! rebuilt when they change. Each new connection takes the configuration current at accept,
//! so a rotated certificate reaches new connections while open ones keep theirs.

use super::files::{PemFile, TlsFileError};
use crate::config::ServerTlsConfig;
use crate::identity::CertIdentity;
use crate::shutdown::Shutdown;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Terminates TLS on the client port with the current certificate.
pub struct TlsTerminator {
    config: ServerTlsConfig,
    current: RwLock<(Vec<PemFile>, TlsAcceptor)>,
}

impl TlsTerminator {
    /// Reads and checks every file; any problem stops start-up with the option and file named.
    pub fn load(config: &ServerTlsConfig) -> Result<Arc<Self>, TlsFileError> {
        let files = read_files(config)?;
        let acceptor = build(config, &files)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            current: RwLock::new((files, acceptor)),
        }))
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(c) => c.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }

    /// Re-reads the files every reload interval and swaps in a new configuration when they
    /// changed. Files caught half-written (a key that does not match its certificate yet) keep
    /// the old configuration until a later check sees them consistent.
    pub async fn watch(self: Arc<Self>, shutdown: Shutdown) {
        let interval = Duration::from_millis(self.config.reload_interval_ms);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.reload_if_changed();
        }
    }

    /// Returns whether a new configuration was swapped in.
    pub fn reload_if_changed(&self) -> bool {
        let files = match read_files(&self.config) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "TLS files unreadable; keeping the current certificate");
                return false;
            }
        };
        let unchanged = match self.current.read() {
            Ok(c) => c.0 == files,
            Err(poisoned) => poisoned.into_inner().0 == files,
        };
        if unchanged {
            return false;
        }
        match build(&self.config, &files) {
            Ok(acceptor) => {
                match self.current.write() {
                    Ok(mut c) => *c = (files, acceptor),
                    Err(poisoned) => *poisoned.into_inner() = (files, acceptor),
                }
                tracing::info!("TLS certificate files changed; new connections use them");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "changed TLS files are not usable (yet); keeping the current certificate");
                false
            }
        }
    }
}

fn read_files(config: &ServerTlsConfig) -> Result<Vec<PemFile>, TlsFileError> {
    let mut files = Vec::with_capacity(3);
    if let Some(path) = &config.cert_file {
        files.push(PemFile::read("server.tls.cert_file", path)?);
    }
    if let Some(path) = &config.key_file {
        files.push(PemFile::read("server.tls.key_file", path)?);
    }
    if let Some(path) = &config.client_ca_file {
        files.push(PemFile::read("server.tls.client_ca_file", path)?);
    }
    Ok(files)
}

fn find<'a>(files: &'a [PemFile], option: &str) -> Option<&'a PemFile> {
    files.iter().find(|f| f.option == option)
}

fn build(config: &ServerTlsConfig, files: &[PemFile]) -> Result<TlsAcceptor, TlsFileError> {
    let general = |option, message: String| TlsFileError::new(option, "-", message);
    let (Some(cert_file), Some(key_file)) = (
        find(files, "server.tls.cert_file"),
        find(files, "server.tls.key_file"),
    ) else {
        return Err(general(
            "server.tls.cert_file",
            "cert_file and key_file are both required".into(),
        ));
    };
    let mut provider = super::provider();
    if !config.cipher_suites.is_empty() {
        let wanted: Vec<String> = config.cipher_suites.iter().map(|s| normalize(s)).collect();
        for w in &wanted {
            if !provider
                .cipher_suites
                .iter()
                .any(|s| &normalize(&format!("{:?}", s.suite())) == w)
            {
                return Err(general(
                    "server.tls.cipher_suites",
                    format!("unknown or unsupported cipher suite {w:?}"),
                ));
            }
        }
        provider
            .cipher_suites
            .retain(|s| wanted.contains(&normalize(&format!("{:?}", s.suite()))));
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if config.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            general(
                "server.tls.cipher_suites",
                format!("no cipher suite for the allowed TLS versions: {e}"),
            )
        })?;
    let builder = match (
        config.client_auth.as_str(),
        find(files, "server.tls.client_ca_file"),
    ) {
        ("optional" | "required", Some(ca)) => {
            let roots = Arc::new(ca.roots()?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if config.client_auth == "optional" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| {
                TlsFileError::new(ca.option, &ca.path, format!("not a usable CA: {e}"))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let certs = cert_file.certs()?;
    let key = key_file.key()?;
    let mut server = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsFileError::new(
            key_file.option,
            &key_file.path,
            format!("does not match the certificate in {}", cert_file.path),
        ),
        other => TlsFileError::new(key_file.option, &key_file.path, other.to_string()),
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Go (and etcd) name TLS 1.3 suites TLS_AES_..., rustls TLS13_AES_...: accept both.
fn normalize(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => upper,
    }
}

/// The identity in a verified client certificate: its CN, as etcd uses it, and its SANs.
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<CertIdentity> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) => sans.push(format!("DNS:{s}")),
                GeneralName::RFC822Name(s) => sans.push(format!("email:{s}")),
                GeneralName::URI(s) => sans.push(format!("URI:{s}")),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertIdentity { cn, sans })
}
