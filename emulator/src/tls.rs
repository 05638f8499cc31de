//! The emulator's local certificate authority and the TLS server configurations built from it.
//!
//! The CA (ECDSA P-256) is made once per data dir and reused on every start, so a user trusts it once. The
//! server certificate is issued afresh at each start (it is cheap) with SANs for localhost, 127.0.0.1, ::1 and
//! the configured host name, and is served with the CA in the chain. TLS 1.2 is offered beside 1.3 because the
//! Python device SDK speaks only 1.2.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File names inside the data dir.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Problems with the CA files or certificate generation.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "{present} exists but {missing} does not; the CA is incomplete. Restore the missing file, or remove both to make a new CA (clients must then trust the new {ca})"
    )]
    Incomplete { present: PathBuf, missing: PathBuf, ca: &'static str },
    #[error("{path} does not hold a usable CA ({detail}); restore it, or remove {ca} and {key} to make a new CA")]
    Unreadable { path: PathBuf, detail: String, ca: &'static str, key: &'static str },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The local CA: its PEM (what users trust) and its signing key.
pub struct LocalCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// Where the CA certificate is kept; `None` for an ephemeral CA (in-process tests).
    cert_path: Option<PathBuf>,
}

impl LocalCa {
    /// Loads the CA kept in `dir`, or makes one and writes it there (key file mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => {
                let ca = Self::generate()?;
                write_file(&key_path, ca.issuer.key().serialize_pem().as_bytes(), true)?;
                write_file(&cert_path, ca.cert_pem.as_bytes(), false)?;
                Ok(Self { cert_path: Some(cert_path), ..ca })
            }
            (true, false) => Err(TlsError::Incomplete { present: cert_path, missing: key_path, ca: CA_CERT_FILE }),
            (false, true) => Err(TlsError::Incomplete { present: key_path, missing: cert_path, ca: CA_CERT_FILE }),
        }
    }

    /// Makes a CA that lives only in memory.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "iothub-emulator local CA");
        name.push(DnType::OrganizationName, "iothub-emulator");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365 * 20);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        Ok(Self { cert_pem, cert_der, issuer: Issuer::new(params, key), cert_path: None })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let unreadable = |path: &Path, detail: String| TlsError::Unreadable {
            path: path.to_owned(),
            detail,
            ca: CA_CERT_FILE,
            key: CA_KEY_FILE,
        };
        let cert_pem = read_file(cert_path)?;
        let key_pem = read_file(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| unreadable(key_path, e.to_string()))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| unreadable(cert_path, format!("not a PEM certificate: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| unreadable(cert_path, e.to_string()))?;
        Ok(Self { cert_pem, cert_der, issuer, cert_path: Some(cert_path.to_owned()) })
    }

    /// The CA certificate in PEM form, for clients to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA certificate file is, when it is kept on disk.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// Issues a server certificate for `host_names` (plus the loopback names) and builds a rustls config
    /// offering `alpn` protocols.
    pub fn server_config(&self, host_names: &[String], alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for name in host_names {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.clone());
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.last().cloned().unwrap_or_default());
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(397);
        let leaf = params.signed_by(&key, &self.issuer)?;

        let chain = vec![leaf.der().clone(), self.cert_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io { action: "read", path: path.to_owned(), source })
}

/// Writes a file, creating it with mode 0600 when `secret` (Unix).
pub(crate) fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    write_private(path, contents, secret).map_err(|source| TlsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to a temporary file beside `path`, syncs it and renames it into place, so a crash never
/// leaves a half-written file behind.
pub(crate) fn write_private(path: &Path, contents: &[u8], secret: bool) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = LocalCa::load_or_create(dir.path()).expect("create");
        let second = LocalCa::load_or_create(dir.path()).expect("reload");
        assert_eq!(first.cert_pem(), second.cert_pem());
        assert_eq!(second.cert_path(), Some(dir.path().join(CA_CERT_FILE).as_path()));
        second.server_config(&["myhub.local".into()], &[b"http/1.1"]).expect("server config from reloaded CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(CA_KEY_FILE)).expect("key file").permissions().mode();
            assert_eq!(mode & 0o077, 0, "CA key must not be readable by others");
        }
    }

    #[test]
    fn half_a_ca_or_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        LocalCa::load_or_create(dir.path()).expect("create");
        fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("remove key");
        let err = LocalCa::load_or_create(dir.path()).err().expect("incomplete CA must fail");
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err}");

        fs::write(dir.path().join(CA_KEY_FILE), "not a key").expect("write");
        let err = LocalCa::load_or_create(dir.path()).err().expect("garbage key must fail");
        assert!(err.to_string().contains("does not hold a usable CA"), "{err}");
    }
}
