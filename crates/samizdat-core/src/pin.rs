//! Pinned relay certificates: a relay address may carry `#pin=BASE64URL`, the SHA-256 of the
//! relay certificate's SubjectPublicKeyInfo (the relay prints it). A client with a pin
//! accepts exactly that key — no certificate authority, no host name — and still checks
//! the TLS handshake's signatures with rustls. Without a pin, normal WebPKI validation.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Error, Result};

/// Split `https://host:port#pin=X` into the address and the pin (32 bytes).
pub fn split(base: &str) -> Result<(&str, Option<[u8; 32]>)> {
    let Some((addr, frag)) = base.split_once('#') else {
        return Ok((base, None));
    };
    let bad = || {
        Error::Usage(format!(
            "{base:?}: the only thing after # may be pin=<the relay's 43-character pin>"
        ))
    };
    let pin = frag.strip_prefix("pin=").ok_or_else(bad)?;
    let bytes = samizdat_proto::Bytes::decode(pin).map_err(|_| bad())?;
    let pin: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
    if !addr.starts_with("https://") {
        return Err(Error::Usage(format!(
            "{base:?}: a pin needs an https:// address"
        )));
    }
    Ok((addr, Some(pin)))
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_hash(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(crate::sha256(ee.subject_public_key_info().as_ref()))
}

#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match spki_hash(end_entity) {
            Some(h) if self.pins.contains(&h) => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::General(
                "the relay's certificate does not match the pin in its address (a different server, or the relay's key changed)"
                    .into(),
            )),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration that trusts exactly the certificates with these pins.
pub fn client_config(pins: Vec<[u8; 32]>) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pins, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS client configuration trusting the system's certificate authorities (an `https://`
/// relay without a pin): every HTTP client, WebSocket and call tunnel of the process shares
/// the one loaded first.
pub fn system_roots() -> Result<Arc<rustls::ClientConfig>> {
    static SYSTEM: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(cfg) = SYSTEM.get() {
        return Ok(cfg.clone());
    }
    let cfg = load_system_roots()?;
    Ok(SYSTEM.get_or_init(|| cfg).clone())
}

/// A TLS client configuration that trusts no certificate, shared by the clients of relays
/// reached over plain HTTP (which never use it).
pub fn no_roots() -> Result<Arc<rustls::ClientConfig>> {
    static NONE: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(cfg) = NONE.get() {
        return Ok(cfg.clone());
    }
    let cfg = with_roots(rustls::RootCertStore::empty())?;
    Ok(NONE.get_or_init(|| cfg).clone())
}

fn load_system_roots() -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    with_roots(roots)
}

fn with_roots(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_from_addresses() {
        let pin = samizdat_proto::Bytes::encode(&[7u8; 32]);
        let url = format!("https://10.0.0.1:7700#pin={pin}");
        let (addr, p) = split(&url).unwrap();
        assert_eq!((addr, p), ("https://10.0.0.1:7700", Some([7u8; 32])));
        assert_eq!(split("http://h:1").unwrap(), ("http://h:1", None));
        assert!(
            split(&format!("http://h:1#pin={pin}")).is_err(),
            "pin without TLS"
        );
        assert!(split("https://h:1#pin=short").is_err());
        assert!(split("https://h:1#other").is_err());
    }
}
