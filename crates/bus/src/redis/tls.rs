//! TLS to Redis (`rediss://`): what a connection trusts and how it proves
//! who it is, read and checked once when the engine is configured, and the
//! handshake of single mode's connections.
//!
//! Trust is either one CA bundle (PEM), which is then the only root, or
//! the system's CA certificates (rustls-native-certs: `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` when set, else the distribution's bundle). A client
//! certificate and its key are optional, for servers started with
//! `tls-auth-clients yes`.
//!
//! Single mode opens its sockets itself (see `socket`) and runs the
//! handshake here, with the configuration built once. Cluster mode hands
//! the same roots and client certificate to redis-rs
//! (`ClusterClientBuilder::certs`), which builds the equivalent
//! configuration for each node it connects to. The roots are always
//! handed over, the system's too (as PEM), so both modes trust exactly the
//! same certificates, read once. Both use rustls with the ring provider,
//! installed once as the process default because redis-rs asks rustls for
//! the default.

use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use ::redis::{ClientTlsConfig, TlsCertificates};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Largest file read as a CA bundle, certificate or key. A system bundle
/// is about 200 KiB; past this the file is certainly not what was meant
/// (a device, a log) and is refused instead of read.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Where the TLS material lives; every part optional.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// A PEM CA bundle: when set, the only roots trusted; when not, the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), presented when the server asks for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Which file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    ClientCert,
    ClientKey,
}

/// TLS material that cannot be used. Messages name the file, never its
/// content: a key's bytes never reach an error or a log.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read, or is larger than [`MAX_PEM_FILE_BYTES`].
    #[error("cannot read {path:?}: {why}")]
    Read {
        file: TlsFile,
        path: PathBuf,
        why: String,
    },
    /// The file holds no usable certificate or key, or the key does not
    /// belong to the certificate.
    #[error("{path:?} {why}")]
    Invalid {
        file: TlsFile,
        path: PathBuf,
        why: String,
    },
    /// No CA file was given and the system's CA certificates cannot be
    /// loaded, or there are none.
    #[error("no CA file given, and the system's CA certificates cannot be used: {0}")]
    SystemRoots(String),
}

impl TlsError {
    /// The file the error is about; the CA file's place for a failure of
    /// the system's roots (setting one is the way around it).
    pub fn file(&self) -> TlsFile {
        match self {
            Self::Read { file, .. } | Self::Invalid { file, .. } => *file,
            Self::SystemRoots(_) => TlsFile::Ca,
        }
    }
}

/// The checked TLS material: a rustls configuration for single mode's
/// handshakes, and the PEM it came from for redis-rs's cluster
/// connections. Cheap to clone.
#[derive(Clone)]
pub struct RedisTls(Arc<Material>);

struct Material {
    connector: TlsConnector,
    /// The trusted roots as PEM: the CA file as read, or the system's
    /// roots that rustls accepted.
    roots_pem: Vec<u8>,
    /// Whether the roots come from a CA file rather than the system.
    from_ca_file: bool,
    /// The client certificate (chain) and its key, as read.
    client_pem: Option<ClientPem>,
}

struct ClientPem {
    certificate: Vec<u8>,
    key: Vec<u8>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which parts are set, never their bytes.
        f.debug_struct("RedisTls")
            .field(
                "roots",
                &if self.0.from_ca_file {
                    "CA file"
                } else {
                    "system"
                },
            )
            .field("client_certificate", &self.0.client_pem.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Reads and checks every file of `files`, or the system's roots when
    /// no CA file is given: whatever is wrong is found now, at start, not
    /// at the first connection.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        install_crypto_provider();
        let (roots, roots_pem) = match &files.ca_file {
            Some(path) => {
                let pem = read(TlsFile::Ca, path)?;
                (ca_roots(path, &pem)?, pem)
            }
            None => system_roots()?,
        };
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let (config, client_pem) = match &files.client_cert {
            Some((cert_path, key_path)) => {
                let cert_pem = read(TlsFile::ClientCert, cert_path)?;
                let key_pem = read(TlsFile::ClientKey, key_path)?;
                let chain = certificates(&cert_pem).map_err(|why| TlsError::Invalid {
                    file: TlsFile::ClientCert,
                    path: cert_path.clone(),
                    why,
                })?;
                // The parser's own error is left out: it may quote a line
                // of the file, and this file is secret.
                let key =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Invalid {
                        file: TlsFile::ClientKey,
                        path: key_path.clone(),
                        why: "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
                    })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|error| {
                    TlsError::Invalid {
                        file: TlsFile::ClientKey,
                        path: key_path.clone(),
                        why: match error {
                            rustls::Error::InconsistentKeys(_) => {
                                format!("is not the key of the certificate in {cert_path:?}")
                            }
                            other => format!("cannot be used as a client key: {other}"),
                        },
                    }
                })?;
                let client = ClientPem {
                    certificate: cert_pem,
                    key: key_pem,
                };
                (config, Some(client))
            }
            None => (builder.with_no_client_auth(), None),
        };
        Ok(Self(Arc::new(Material {
            connector: TlsConnector::from(Arc::new(config)),
            roots_pem,
            from_ca_file: files.ca_file.is_some(),
            client_pem,
        })))
    }

    /// The system's roots, no client certificate: what a `rediss://` URL
    /// gets when nothing else is configured.
    pub fn system() -> Result<Self, TlsError> {
        Self::load(&TlsFiles::default())
    }

    /// Whether a CA file replaces the system's roots.
    pub fn has_ca_file(&self) -> bool {
        self.0.from_ca_file
    }

    /// Whether a client certificate is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.0.client_pem.is_some()
    }

    /// The same material in the form redis-rs's cluster client takes.
    /// The roots are always set, so redis-rs never falls back to roots of
    /// its own.
    pub(super) fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.0.client_pem.as_ref().map(|pem| ClientTlsConfig {
                client_cert: pem.certificate.clone(),
                client_key: pem.key.clone(),
            }),
            root_cert: Some(self.0.roots_pem.clone()),
        }
    }

    /// Runs the TLS handshake on `stream`, checking that the server's
    /// certificate names `host` (a DNS name or an IP address) and chains
    /// to a trusted root. The error says with whom; [`explain`] adds what
    /// it likely means where it is logged.
    pub(super) async fn handshake(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is neither a host name nor an IP address a certificate can name"),
            )
        })?;
        self.0
            .connector
            .connect(name, stream)
            .await
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("TLS handshake with {host} failed: {error}"),
                )
            })
    }
}

/// Installs ring as rustls's process-wide provider, once. redis-rs builds
/// its configurations with rustls's default provider, which exists only
/// if exactly one provider is compiled in or one was installed; installing
/// it keeps that true whatever another crate enables.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err: another provider was installed first; it is used instead.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `path`'s bytes, at most [`MAX_PEM_FILE_BYTES`].
fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    let failed = |why: String| TlsError::Read {
        file,
        path: path.to_owned(),
        why,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|opened| opened.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|error| failed(error.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(failed(format!(
            "larger than {MAX_PEM_FILE_BYTES} bytes; not a PEM file"
        )));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file, at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("is not a PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certificates)
}

/// The roots of a CA bundle: every certificate in it must be a usable CA.
fn ca_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let invalid = |why: String| TlsError::Invalid {
        file: TlsFile::Ca,
        path: path.to_owned(),
        why,
    };
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates(pem).map_err(invalid)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            invalid(format!(
                "certificate {} cannot be a trust root: {error}",
                index + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The system's CA certificates, and those rustls accepts as PEM (for
/// redis-rs). A file that cannot be read is an error even when others
/// could be (a half-read trust store is a misconfiguration to fix, not to
/// run with); no certificate at all is one too (nothing could ever be
/// trusted). A certificate rustls cannot use as a root is skipped, as
/// every TLS client does with a distribution's bundle.
fn system_roots() -> Result<(RootCertStore, Vec<u8>), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::SystemRoots(errors.join("; ")));
    }
    let mut roots = RootCertStore::empty();
    let mut pem = Vec::new();
    for certificate in found.certs {
        if roots.add(certificate.clone()).is_ok() {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let base64 = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
            for line in base64.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
    }
    if roots.is_empty() {
        return Err(TlsError::SystemRoots(
            "none found (install the ca-certificates package, or point SSL_CERT_FILE at a bundle)"
                .into(),
        ));
    }
    Ok((roots, pem))
}

/// `text` (a connection error) with what it most likely means appended,
/// when it is one of the TLS failures an operator meets: an untrusted
/// certificate, one for another name, a server that does not speak TLS,
/// a server that wants a client certificate. Works on text because
/// redis-rs's cluster connection hands its node errors on as text; the
/// patterns are rustls's own messages, taken from rustls itself.
pub(super) fn explain(text: String) -> String {
    use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
    let untrusted = Error::InvalidCertificate(CertificateError::UnknownIssuer).to_string();
    let not_tls = Error::InvalidMessage(InvalidMessage::InvalidContentType).to_string();
    let alert = Error::AlertReceived(AlertDescription::CertificateRequired).to_string();
    let alert_prefix = alert.trim_end_matches("CertificateRequired");
    let hint = if text.contains(&untrusted) {
        "the server's certificate is not signed by a CA this client trusts: \
         the configured CA file, or else the system's roots"
    } else if text.contains("certificate not valid for name")
        || text.contains(&Error::InvalidCertificate(CertificateError::NotValidForName).to_string())
    {
        "the server's certificate does not name the host connected to; \
         connect by a name or an address it lists"
    } else if text.contains(&not_tls) {
        "the server did not answer in TLS: a plain port? rediss:// needs the server's tls-port"
    } else if [
        AlertDescription::CertificateRequired,
        AlertDescription::BadCertificate,
        AlertDescription::UnknownCA,
        AlertDescription::HandshakeFailure,
        AlertDescription::AccessDenied,
    ]
    .iter()
    .any(|description| text.contains(&format!("{alert_prefix}{description:?}")))
    {
        "the server wants a client certificate signed by a CA it trusts, \
         and got none or another"
    } else {
        return text;
    };
    format!("{text} (likely: {hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_tls_failures_are_explained_and_others_left_alone() {
        use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
        let cases = [
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer).to_string(),
                "not signed by a CA this client trusts",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidForName).to_string(),
                "does not name the host",
            ),
            (
                Error::InvalidMessage(InvalidMessage::InvalidContentType).to_string(),
                "did not answer in TLS",
            ),
            (
                Error::AlertReceived(AlertDescription::CertificateRequired).to_string(),
                "wants a client certificate",
            ),
            (
                Error::AlertReceived(AlertDescription::UnknownCA).to_string(),
                "wants a client certificate",
            ),
        ];
        for (error, hint) in cases {
            let explained = explain(format!("connect: {error}"));
            assert!(explained.starts_with("connect: "), "{explained}");
            assert!(explained.contains(hint), "{error}: {explained}");
        }
        assert_eq!(
            explain("Connection refused (os error 111)".into()),
            "Connection refused (os error 111)"
        );
    }

    #[test]
    fn the_system_roots_handed_to_redis_rs_are_the_ones_single_mode_trusts() {
        // This machine has Debian's ca-certificates (the Dockerfile's
        // runtime image installs it too).
        let tls = RedisTls::system().unwrap();
        assert!(!tls.has_ca_file() && !tls.has_client_certificate());
        let (roots, pem) = system_roots().unwrap();
        let again = certificates(&pem).unwrap();
        assert_eq!(again.len(), roots.len(), "every root survives as PEM");
        let passed = tls.certificates();
        assert_eq!(passed.root_cert.as_deref(), Some(pem.as_slice()));
        assert!(passed.client_tls.is_none());
    }

    #[test]
    fn missing_and_oversized_files_are_refused_naming_them() {
        let error = RedisTls::load(&TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            client_cert: None,
        })
        .unwrap_err();
        assert_eq!(error.file(), TlsFile::Ca);
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

        // Read through a bounded reader: never more than the limit plus one.
        let error = read(TlsFile::Ca, Path::new("/dev/zero")).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
    }
}
