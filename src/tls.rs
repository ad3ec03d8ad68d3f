//! HTTPS: loading the certificate and key into a rustls server configuration.
//!
//! Cloud66 delivers to HTTPS endpoints with certificate verification disabled, so a
//! self-signed certificate is enough to keep the token in the URL off the wire.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    Certificate(PathBuf, String),
    /// The key file is unreadable or holds no PEM private key.
    Key(PathBuf, String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    Pair(String),
}

impl TlsError {
    /// The flag to blame.
    pub fn flag(&self) -> &'static str {
        match self {
            TlsError::Certificate(..) | TlsError::Pair(_) => "web.tls-cert-file",
            TlsError::Key(..) => "web.tls-key-file",
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate(path, why) => {
                write!(f, "no usable certificate in {}: {why}", path.display())
            }
            TlsError::Key(path, why) => {
                write!(f, "no usable private key in {}: {why}", path.display())
            }
            TlsError::Pair(why) => write!(f, "certificate and key do not work together: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A server configuration (HTTP/1.1 over TLS 1.2 or 1.3) from PEM files.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |why: String| TlsError::Certificate(cert_file.to_owned(), why);
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("the file holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError::Key(key_file.to_owned(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
