//! TLS for every model that uses rustls (all but async-std): one
//! [`ClientConfig`] built from [`Options`], around one certificate verifier
//! (feature `rustls`).
//!
//! # Why a verifier of our own
//! The certificate most people make for a test server,
//! `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext
//! subjectAltName=IP:127.0.0.1`, is self-signed *and* marked as a CA
//! (basicConstraints CA:TRUE). Passed with `--root-cert`, webpki (rustls's
//! verifier) refuses it: a CA certificate may sign a server's certificate but
//! not be one (`CaUsedAsEndEntity`). curl (`--cacert`) and OpenSSL (the
//! async-std model) accept it. [`PinningVerifier`] makes every rustls model
//! accept it too, as a *pinned* certificate:
//!
//! 1. The platform's verifier decides first (rustls-platform-verifier: the
//!    OS's roots, plus [`Options::extra_roots`] as extra roots). Everything it
//!    accepts is accepted, as before.
//! 2. When it refuses, the chain is still accepted if the server's own
//!    certificate is byte for byte one of [`Options::extra_roots`], it is
//!    valid for the host in the URL (checked as for any certificate, so an IP
//!    address needs an IP SAN, as curl requires), and its validity period
//!    covers now. An expired pinned certificate is refused, as OpenSSL (so
//!    curl and the async-std model) refuses it.
//! 3. Otherwise the platform's error stands: a certificate the user did not
//!    pass is refused as before.
//!
//! The server still proves that it holds the pinned certificate's key: the
//! handshake signature is checked with the crypto provider, as always. Not
//! checked for a pinned certificate: key usage and extended key usage (the
//! user vouched for this exact certificate) and intermediates (none are
//! needed to trust it).
//!
//! The provider is ring, passed in explicitly rather than taken from rustls's
//! process-wide default, which is ambiguous when another crate in the build
//! turns on aws-lc-rs.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_name;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_platform_verifier::Verifier as PlatformVerifier;

use crate::Options;

/// The configuration every rustls model uses: ring, TLS 1.2 and 1.3,
/// HTTP/1.1 offered by ALPN (no model speaks h2), and [`PinningVerifier`].
/// Fails when the platform verifier cannot be built: an extra root that is
/// not a certificate, or no root at all (no system store, no extra root).
pub fn client_config(options: &Options) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinningVerifier::new(options.extra_roots(), Arc::clone(&provider))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        // "Dangerous" is rustls's name for any verifier other than its own;
        // this one only adds the pinned certificates to what it accepts.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform's verifier, plus the user's own certificates accepted as
/// pinned server certificates (see the [module documentation](self)).
#[derive(Debug)]
pub struct PinningVerifier {
    platform: PlatformVerifier,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    /// Trusts the platform's roots plus `extra`, and pins each of `extra`.
    pub fn new(
        extra: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, Error> {
        Ok(PinningVerifier {
            platform: PlatformVerifier::new_with_extra_roots(
                extra.iter().cloned(),
                Arc::clone(&provider),
            )?,
            pinned: extra.to_vec(),
            provider,
        })
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let refused = match self.platform.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(err) => err,
        };
        let pinned = self
            .pinned
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref());
        if !pinned {
            return Err(refused);
        }
        check_pinned(end_entity, server_name, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An error and the causes under it, outermost first, as every client's
/// `map_error` searches them. rustls reports a failed handshake (an
/// untrusted certificate, say) as an `io::Error` wrapping a
/// `rustls::Error`, on the first read or write, and `io::Error::source()`
/// skips the error it wraps: the chain steps into it.
pub fn error_chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
    .collect()
}

/// Whether a TLS handshake failure (a rustls error) is in `chain`, from
/// [`error_chain`]: the `tls` kind, whatever the client wrapped it in.
pub fn is_tls_failure(chain: &[&(dyn StdError + 'static)]) -> bool {
    chain.iter().any(|e| e.is::<Error>())
}

/// What is left to check on a certificate trusted as itself rather than
/// through a chain, as OpenSSL checks a trusted self-signed certificate: the
/// name and the dates.
fn check_pinned(
    cert: &CertificateDer<'_>,
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    verify_server_name(&ParsedCertificate::try_from(cert)?, name)?;
    let (not_before, not_after) = validity(cert).ok_or(CertificateError::BadEncoding)?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if now > not_after {
        return Err(CertificateError::Expired.into());
    }
    Ok(())
}

/// A certificate's validity period (notBefore, notAfter) in seconds since the
/// Unix epoch. webpki checks it on every certificate of a chain but does not
/// expose it, and a pinned certificate skips the chain, so it is read here
/// (RFC 5280, 4.1): Certificate, TBSCertificate, then past the version,
/// serial number, signature algorithm and issuer. Only called on a
/// certificate webpki has already parsed.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = der(cert, 0x30)?;
    let (mut tbs, _) = der(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der(tbs, tag)?.1;
    }
    let (validity, _) = der(tbs, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// The DER element at the start of `input`, which must have tag `tag`:
/// (its contents, what follows it).
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&len, mut rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let len = if len < 0x80 {
        usize::from(len)
    } else {
        // Long form: the low bits say how many length bytes follow.
        let (bytes, after) = rest.split_at_checked(usize::from(len & 0x7f))?;
        rest = after;
        bytes
            .iter()
            .try_fold(0usize, |n, &b| n.checked_mul(256)?.checked_add(b.into()))?
    };
    rest.split_at_checked(len)
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), the two forms RFC 5280 allows, as seconds since the
/// Unix epoch, and what follows it.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let tag = *input.first()?;
    let (value, rest) = der(input, tag)?;
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, fields) = match (tag, value.len()) {
        (0x17, 13) => {
            let yy = number(&value[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &value[2..])
        }
        (0x18, 15) => (number(&value[..4])?, &value[4..]),
        _ => return None,
    };
    let (fields, b"Z") = fields.split_at(10) else {
        return None;
    };
    let field = |i: usize| number(&fields[2 * i..2 * i + 2]);
    let (month, day) = (field(0)?, field(1)?);
    let seconds = field(2)? * 3600 + field(3)? * 60 + field(4)?;
    Some((days_from_civil(year, month, day) * 86_400 + seconds, rest))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(feature = "blocking")]
pub(crate) use ureq_tls::UreqTls;

/// ureq's TLS step, with [`client_config`]. ureq's own `RustlsConnector`
/// builds its rustls configuration from a `TlsConfig`, which takes root lists
/// only, never a verifier; so this connector takes its place in the chain,
/// after ureq's TCP connector. It is ureq's `RustlsConnector` and
/// `RustlsTransport` (ureq 3.5, src/tls/rustls.rs), cut down to one config.
#[cfg(feature = "blocking")]
mod ureq_tls {
    use std::fmt;
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, StreamOwned};
    use ureq::Error;
    use ureq::unversioned::transport::time::{Duration, Instant};
    use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, Either};
    use ureq::unversioned::transport::{LazyBuffers, NextTimeout, Transport, TransportAdapter};

    use crate::Options;

    pub(crate) struct UreqTls {
        /// Built once per agent. An error (no roots at all, say) is kept and
        /// becomes each https request's `tls` error, as ureq itself does.
        config: Result<Arc<rustls::ClientConfig>, rustls::Error>,
    }

    impl UreqTls {
        pub(crate) fn new(options: &Options) -> Self {
            UreqTls {
                config: super::client_config(options).map(Arc::new),
            }
        }
    }

    impl<In: Transport> Connector<In> for UreqTls {
        type Out = Either<In, TlsTransport>;

        fn connect(
            &self,
            details: &ConnectionDetails,
            chained: Option<In>,
        ) -> Result<Option<Self::Out>, Error> {
            let Some(transport) = chained else {
                return Ok(None);
            };
            if !details.needs_tls() || transport.is_tls() {
                return Ok(Some(Either::A(transport)));
            }
            let config = self.config.clone()?;
            // `host()` keeps an IPv6 literal's brackets; ServerName wants the
            // bare address.
            let host = details.uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host)
                .map_err(|_| Error::Tls("host is not a valid TLS server name"))?;
            let mut conn = ClientConnection::new(config, name.to_owned())?;
            let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
            // The connect timeout started with TCP: the handshake gets what
            // is left of it.
            let mut timeout: NextTimeout = details.timeout;
            if let (Duration::Exact(after), Instant::Exact(start), Instant::Exact(now)) =
                (timeout.after, details.now, (details.current_time)())
            {
                timeout.after = Duration::Exact(after.saturating_sub(now - start));
            }
            sock.set_timeout(timeout);
            // A refused certificate surfaces here, as an io::Error wrapping
            // the rustls::Error (see `io_kind` in blocking.rs).
            conn.complete_io(&mut sock)?;
            let buffers = LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            );
            let stream = StreamOwned::new(conn, sock);
            Ok(Some(Either::B(TlsTransport { buffers, stream })))
        }
    }

    impl fmt::Debug for UreqTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UreqTls").finish_non_exhaustive()
        }
    }

    pub(crate) struct TlsTransport {
        buffers: LazyBuffers,
        stream: StreamOwned<ClientConnection, TransportAdapter>,
    }

    impl Transport for TlsTransport {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
            self.stream.get_mut().set_timeout(timeout);
            self.stream.write_all(&self.buffers.output()[..amount])?;
            Ok(())
        }

        fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
            self.stream.get_mut().set_timeout(timeout);
            let amount = self.stream.read(self.buffers.input_append_buf())?;
            self.buffers.input_appended(amount);
            Ok(amount > 0)
        }

        fn is_open(&mut self) -> bool {
            self.stream.get_mut().get_mut().is_open()
        }

        fn is_tls(&self) -> bool {
            true
        }
    }

    impl fmt::Debug for TlsTransport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TlsTransport")
                .field("chained", &self.stream.sock.inner())
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, made the way `openssl req -x509`
    /// makes one (CA:TRUE) unless `ca` is false, valid from `from` to `until`
    /// (years, January 1st).
    fn self_signed(names: &[&str], ca: bool, (from, until): (i32, i32)) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("valid names");
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().clone()
    }

    const CURRENT: (i32, i32) = (2020, 2090);

    fn ring() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify(
        verifier: &dyn ServerCertVerifier,
        cert: &CertificateDer<'_>,
        host: &str,
    ) -> Result<ServerCertVerified, Error> {
        let name = ServerName::try_from(host).expect("valid name");
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn the_platform_verifier_alone_refuses_a_self_signed_ca() {
        // The bug this module exists for: trusted as a root, still refused.
        let cert = self_signed(&["127.0.0.1"], true, CURRENT);
        let platform = PlatformVerifier::new_with_extra_roots([cert.clone()], ring()).unwrap();
        let err = verify(&platform, &cert, "127.0.0.1").unwrap_err();
        assert!(format!("{err:?}").contains("CaUsedAsEndEntity"), "{err:?}");
    }

    #[test]
    fn a_pinned_self_signed_ca_is_accepted_for_its_name_only() {
        let cert = self_signed(&["127.0.0.1"], true, CURRENT);
        let verifier = PinningVerifier::new(std::slice::from_ref(&cert), ring()).unwrap();
        verify(&verifier, &cert, "127.0.0.1").expect("pinned and named");
        for other_name in ["localhost", "127.0.0.2"] {
            let err = verify(&verifier, &cert, other_name).unwrap_err();
            let wrong_name = matches!(
                err,
                Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            );
            assert!(wrong_name, "{err:?}");
        }
    }

    #[test]
    fn a_certificate_not_passed_is_still_refused() {
        let pinned = self_signed(&["127.0.0.1"], true, CURRENT);
        let other = self_signed(&["127.0.0.1"], true, CURRENT);
        let verifier = PinningVerifier::new(&[pinned], ring()).unwrap();
        let err = verify(&verifier, &other, "127.0.0.1").unwrap_err();
        assert!(matches!(err, Error::InvalidCertificate(_)), "{err:?}");
        let verifier = PinningVerifier::new(&[], ring()).unwrap();
        assert!(verify(&verifier, &other, "127.0.0.1").is_err());
    }

    #[test]
    fn a_pinned_certificate_outside_its_dates_is_refused() {
        let expired = self_signed(&["127.0.0.1"], true, (2000, 2001));
        let verifier = PinningVerifier::new(std::slice::from_ref(&expired), ring()).unwrap();
        let err = verify(&verifier, &expired, "127.0.0.1").unwrap_err();
        assert_eq!(err, Error::InvalidCertificate(CertificateError::Expired));
        let future = self_signed(&["127.0.0.1"], true, (2080, 2090));
        let verifier = PinningVerifier::new(std::slice::from_ref(&future), ring()).unwrap();
        let err = verify(&verifier, &future, "127.0.0.1").unwrap_err();
        assert_eq!(
            err,
            Error::InvalidCertificate(CertificateError::NotValidYet)
        );
    }

    #[test]
    fn what_webpki_accepts_is_accepted_as_before() {
        // rcgen's default (CA:FALSE), the mock server's usual certificate: a
        // self-signed end entity is its own root for webpki.
        let leaf = self_signed(&["127.0.0.1", "localhost"], false, CURRENT);
        let verifier = PinningVerifier::new(std::slice::from_ref(&leaf), ring()).unwrap();
        verify(&verifier, &leaf, "localhost").expect("valid for localhost");
        verify(&verifier, &leaf, "127.0.0.1").expect("valid for 127.0.0.1");
    }

    #[test]
    fn validity_is_read_in_both_time_forms() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1) * 86_400, 951_868_800);
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        let cert = self_signed(&["a.test"], true, (2000, 2060));
        assert_eq!(validity(&cert), Some((946_684_800, 2_840_140_800)));
        let cert = self_signed(&["a.test"], true, (1960, 2049));
        assert_eq!(validity(&cert), Some((-315_619_200, 2_493_072_000)));
        assert_eq!(validity(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(validity(&cert[..cert.len() / 2]), None);
    }

    #[test]
    fn config_builds_with_and_without_extra_roots() {
        // No extra roots: the platform verifier on the system's store alone.
        let config = client_config(&Options::default()).expect("system roots load");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let cert = self_signed(&["127.0.0.1"], true, CURRENT);
        let options = Options::builder()
            .add_root_der(cert.to_vec())
            .build()
            .unwrap();
        assert!(client_config(&options).is_ok());
        // Not a certificate: refused when the config is built, not per URL.
        let options = Options::builder()
            .add_root_der(b"junk".to_vec())
            .build()
            .unwrap();
        assert!(client_config(&options).is_err());
    }
}
