//! Trust for the hub's TLS certificate, shared by the Rust clients: the platform's roots for a real hub, or a
//! given CA (the emulator's `ca.pem`). Only with the `tls` feature.

use std::sync::Arc;

/// Which certificate authorities a client trusts for the hub's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// The operating system's roots: what a real Azure IoT Hub needs.
    #[default]
    PlatformRoots,
    /// Only the CA certificates in this PEM text, e.g. the emulator's `ca.pem`.
    CaPem(String),
}

/// Why no TLS configuration could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The PEM text holds something that is not a usable certificate.
    #[error("the CA PEM is not usable: {0}")]
    BadPem(String),
    /// No certificate to trust at all.
    #[error("no trusted CA certificates (the CA PEM or the platform store is empty)")]
    Empty,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

impl Trust {
    /// A rustls client configuration (ring provider, TLS 1.2 and 1.3) trusting these roots and offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TrustError> {
        let mut roots = rustls::RootCertStore::empty();
        match self {
            Self::CaPem(pem) => {
                use rustls_pki_types::pem::PemObject as _;
                for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| TrustError::BadPem(e.to_string()))?;
                    roots.add(cert).map_err(|e| TrustError::BadPem(e.to_string()))?;
                }
            }
            Self::PlatformRoots => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if roots.is_empty() {
            return Err(TrustError::Empty);
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TrustError::Rustls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert_eq!(Trust::CaPem("nothing here".into()).client_config(&[]).err(), Some(TrustError::Empty));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(Trust::CaPem(broken.into()).client_config(&[]), Err(TrustError::BadPem(_))));
    }
}
