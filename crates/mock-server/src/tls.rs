//! HTTPS: a throwaway self-signed certificate and a rustls acceptor.
//!
//! The certificate is made at start (rcgen) rather than shipped, so there is no
//! key file in the repository and no expiry date to trip over. Clients trust it
//! through [`crate::MockServer::root_cert_pem`]; a self-signed certificate is its
//! own root. [`ServerCert`] makes the other kinds a client must handle, for
//! [`crate::MockServer::start_with_cert`].

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key for an HTTPS mock server, made by rcgen
/// when called.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pem: String,
    der: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl ServerCert {
    /// rcgen's default: an end-entity certificate (CA:FALSE) for `127.0.0.1`
    /// and `localhost`. What a server started with `tls: true` presents.
    pub fn end_entity() -> io::Result<ServerCert> {
        // rcgen turns "127.0.0.1" into an IP-address SAN and "localhost" into
        // a DNS SAN, so the certificate is valid for both spellings of the
        // base URL.
        make(&["127.0.0.1", "localhost"], |_| {})
    }

    /// A self-signed certificate marked as a CA (basicConstraints CA:TRUE),
    /// valid for `names` only (each an IP address or a DNS name): what
    /// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext
    /// subjectAltName=IP:127.0.0.1` makes, and what webpki refuses as a
    /// server's own certificate even when it is trusted (`CaUsedAsEndEntity`).
    pub fn self_signed_ca(names: &[&str]) -> io::Result<ServerCert> {
        make(names, |params| {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        })
    }

    /// [`ServerCert::self_signed_ca`], but expired: valid during 2000 only.
    pub fn expired_self_signed_ca(names: &[&str]) -> io::Result<ServerCert> {
        make(names, |params| {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
    }

    /// The certificate as PEM, for a client to trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

fn make(
    names: &[&str],
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> io::Result<ServerCert> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(io::Error::other)?;
    adjust(&mut params);
    let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
    let cert = params.self_signed(&key).map_err(io::Error::other)?;
    Ok(ServerCert {
        pem: cert.pem(),
        der: cert.der().clone(),
        key_pkcs8: key.serialize_der(),
    })
}

pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) cert_pem: String,
}

pub(crate) fn make_acceptor(cert: ServerCert) -> io::Result<Tls> {
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8));

    // The provider is chosen here, not taken from rustls's process-wide default:
    // with more than one provider compiled in (another crate may enable aws-lc-rs),
    // the default is ambiguous and `ServerConfig::builder()` would panic.
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der], key_der)
        .map_err(io::Error::other)?;
    // We only speak HTTP/1.1; saying so stops an ALPN-capable client from asking for h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem: cert.pem,
    })
}
