//! [`Certificates`]: a throwaway PKI made with the `openssl` CLI for tests
//! of TLS to Redis, and the arguments that make `redis-server` and
//! `redis-cli` use it.
//!
//! A test CA signs a server certificate (for `127.0.0.1` and `localhost`
//! unless told otherwise) and a client certificate; a second, unrelated CA
//! signs nothing the server trusts, and has a client certificate of its
//! own. Keys are EC P-256 (fast to make). Everything lives in a temporary
//! directory, removed when the last clone is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Whether a TLS server asks for client certificates
/// (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `no`: no client certificate is asked for.
    No,
    /// `optional`: one is checked if presented.
    Optional,
    /// `yes`: a client without one signed by the test CA is refused.
    Required,
}

impl ClientAuth {
    fn arg(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Optional => "optional",
            Self::Required => "yes",
        }
    }
}

/// The files of a test PKI. Cheap to clone; the directory goes with the
/// last clone.
#[derive(Debug, Clone)]
pub struct Certificates {
    dir: Arc<Dir>,
}

#[derive(Debug)]
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Certificates {
    /// A CA, a server certificate for `127.0.0.1` and `localhost`, a
    /// client certificate, and an unrelated CA with its own client
    /// certificate.
    ///
    /// # Panics
    /// If `openssl` is missing or fails.
    pub fn generate() -> Self {
        Self::generate_for(&["IP:127.0.0.1", "DNS:localhost"])
    }

    /// As [`Certificates::generate`], with the server certificate naming
    /// exactly `server_names` (`subjectAltName` entries such as
    /// `DNS:redis.example` or `IP:10.0.0.1`).
    pub fn generate_for(server_names: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("es-tls-{}", crate::unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let certificates = Self {
            dir: Arc::new(Dir(dir)),
        };
        certificates.make_ca("ca", "event-stream test CA");
        certificates.make_ca("other-ca", "an unrelated CA");
        let san = format!("subjectAltName={}", server_names.join(","));
        // Cluster nodes present the server certificate to each other as
        // clients too (tls-cluster, tls-replication): both usages.
        certificates.make_leaf("server", "ca", "redis test server", &san);
        certificates.make_leaf("client", "ca", "event-stream test client", "");
        certificates.make_leaf("other-client", "other-ca", "a stranger", "");
        certificates
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The test CA's certificate (PEM): what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A CA that signed nothing the server uses.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    /// A client certificate the test CA signed.
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }

    /// The key of [`Certificates::client_cert`] (PKCS#8 PEM).
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// A client certificate the unrelated CA signed: a server of the test
    /// CA refuses it.
    pub fn other_client_cert(&self) -> PathBuf {
        self.file("other-client.crt")
    }

    pub fn other_client_key(&self) -> PathBuf {
        self.file("other-client.key")
    }

    /// `redis-server` arguments serving TLS only, on `port`, with these
    /// files (`--port 0` turns the plain port off).
    pub fn server_args(&self, port: u16, clients: ClientAuth) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(self.server_cert()),
            "--tls-key-file",
            &path(self.server_key()),
            "--tls-ca-cert-file",
            &path(self.ca()),
            "--tls-auth-clients",
            clients.arg(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `redis-cli` arguments for a TLS server of this PKI: the CA and the
    /// client certificate (presented only when a server asks).
    pub fn cli_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(self.ca()),
            "--cert".into(),
            path(self.client_cert()),
            "--key".into(),
            path(self.client_key()),
        ]
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A self-signed CA `<name>.crt` with its key `<name>.key`.
    fn make_ca(&self, name: &str, common_name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-days",
            "30",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A certificate `<name>.crt` with key `<name>.key`, signed by CA
    /// `ca`, for servers and clients alike, with `extra` as one more
    /// extension (or none when empty).
    fn make_leaf(&self, name: &str, ca: &str, common_name: &str, extra: &str) {
        let mut args = vec![
            "req".to_owned(),
            "-x509".into(),
            "-days".into(),
            "30".into(),
            "-subj".into(),
            format!("/CN={common_name}"),
            "-keyout".into(),
            format!("{name}.key"),
            "-out".into(),
            format!("{name}.crt"),
            "-CA".into(),
            format!("{ca}.crt"),
            "-CAkey".into(),
            format!("{ca}.key"),
            "-addext".into(),
            "basicConstraints=critical,CA:FALSE".into(),
            "-addext".into(),
            "keyUsage=critical,digitalSignature".into(),
            "-addext".into(),
            "extendedKeyUsage=serverAuth,clientAuth".into(),
        ];
        if !extra.is_empty() {
            args.extend(["-addext".into(), extra.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl(&args);
    }

    /// Runs `openssl <args>` with a new EC P-256 key and no passphrase, in
    /// the directory.
    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_chains_to_the_ca_and_not_to_the_other() {
        let certificates = Certificates::generate();
        let verify = |ca: PathBuf, leaf: PathBuf| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .arg(leaf)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(certificates.ca(), certificates.server_cert()));
        assert!(verify(certificates.ca(), certificates.client_cert()));
        assert!(!verify(certificates.other_ca(), certificates.server_cert()));
        assert!(verify(
            certificates.other_ca(),
            certificates.other_client_cert()
        ));
        let dir = certificates.dir().to_owned();
        drop(certificates);
        assert!(!dir.exists(), "the files go with the last clone");
    }
}
