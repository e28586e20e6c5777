//! TLS for the relay itself (rustls): a certificate and key from files, or a self-signed
//! certificate made once and kept in a directory. The relay prints its certificate's pin —
//! base64url(SHA-256(SubjectPublicKeyInfo)) — so clients can pin it in the relay's address
//! (`https://host:port#pin=…`) instead of trusting a certificate authority: self-hosters
//! need neither a domain nor a CA.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// A TLS acceptor and the pin of its certificate.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub pin: String,
}

/// base64url(SHA-256(SPKI)) of a DER certificate.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Result<String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| Error::Config(format!("cannot read the TLS certificate: {e}")))?;
    let spki = ee.subject_public_key_info();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    Ok(samizdat_proto::Bytes::encode(hash.as_ref()))
}

fn config(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Tls> {
    let first = certs
        .first()
        .ok_or_else(|| Error::Config("the TLS certificate file holds no certificate".into()))?;
    let pin = spki_pin(first)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("TLS certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        pin,
    })
}

/// TLS from PEM files.
pub fn from_files(cert: &Path, key: &Path) -> Result<Tls> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", key.display())))?;
    config(certs, key)
}

/// A self-signed certificate kept in `dir` (`cert.pem`, `key.pem`, made on first start).
pub fn self_signed(dir: &Path) -> Result<Tls> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        let made = rcgen::generate_simple_self_signed(vec!["samizdat-relay".to_string()])
            .map_err(|e| Error::Config(format!("cannot make a certificate: {e}")))?;
        write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, made.cert.pem())
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", cert.display())))?;
    }
    from_files(&cert, &key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}
