//! HTTPS: a throwaway self-signed certificate and a rustls acceptor.
//!
//! The certificate is made at start (rcgen) rather than shipped, so there is no
//! key file in the repository and no expiry date to trip over. Clients trust it
//! through [`crate::MockServer::root_cert_pem`]; a self-signed certificate is its
//! own root.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) cert_pem: String,
}

pub(crate) fn make() -> io::Result<Tls> {
    // rcgen turns "127.0.0.1" into an IP-address SAN and "localhost" into a DNS
    // SAN, so the certificate is valid for both spellings of the base URL.
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(io::Error::other)?;
    let cert_pem = certified.cert.pem();
    let cert_der = certified.cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));

    // The provider is chosen here, not taken from rustls's process-wide default:
    // with more than one provider compiled in (another crate may enable aws-lc-rs),
    // the default is ambiguous and `ServerConfig::builder()` would panic.
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .map_err(io::Error::other)?;
    // We only speak HTTP/1.1; saying so stops an ALPN-capable client from asking for h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem,
    })
}
