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
        let (made, signing_key) = ordinary_certificate()
            .map_err(|e| Error::Config(format!("cannot make a certificate: {e}")))?;
        write_private(&key, signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, made.pem())
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", cert.display())))?;
    }
    from_files(&cert, &key)
}

/// A self-signed certificate that says nothing about what it serves (security review 3, M12):
/// a random host name as its subject and only name, a random serial, and the validity of an
/// ordinary certificate (issued up to two months ago, for 397 days) — not rcgen's defaults
/// (`CN=rcgen self signed cert`, 1975 to 4096), which one probe recognises.
fn ordinary_certificate() -> std::result::Result<(rcgen::Certificate, rcgen::KeyPair), rcgen::Error>
{
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| rcgen::Error::RingUnspecified)?;
    let letters: String = random[..10]
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let tld = ["com", "net", "org", "io"][usize::from(random[10] % 4)];
    let host = format!("{}.{tld}", &letters[..6 + usize::from(random[11] % 5)]);
    let mut params = rcgen::CertificateParams::new(vec![host.clone()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let mut serial = random[12..28].to_vec();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let today = crate::now_secs() / 86_400;
    let issued = today.saturating_sub(u64::from(random[28] % 60) + 1);
    let ((y0, m0, d0), (y1, m1, d1)) = (ymd(issued), ymd(issued + 397));
    params.not_before = rcgen::date_time_ymd(y0, m0, d0);
    params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

/// The date `days` after 1970-01-01 (the proleptic Gregorian calendar; Howard Hinnant's
/// `civil_from_days`).
fn ymd(days: u64) -> (i32, u8, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
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
