//! HTTPS with the self-signed certificate, and the keep-alive idle timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::title;
use mock_server::{MockConfig, MockServer, ServerCert};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

fn tls_agent(roots: RootCerts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

#[test]
fn https_works_when_the_root_cert_is_trusted_and_fails_otherwise() {
    let server = MockServer::start(MockConfig {
        tls: true,
        ..MockConfig::default()
    })
    .expect("start server");
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let pem = server.root_cert_pem().expect("a TLS server has a cert");
    let cert = Certificate::from_pem(pem.as_bytes()).expect("valid PEM");

    // Without our certificate: the handshake fails on the client side...
    let untrusted = tls_agent(RootCerts::WebPki);
    assert!(untrusted.get(&server.page_url(1)).call().is_err());

    // ...and the server is unharmed by it.
    let trusted = tls_agent(RootCerts::Specific(Arc::new(vec![cert])));
    for url in [
        server.page_url(1),
        // The certificate also names "localhost".
        format!("https://localhost:{}/page/2", server.addr().port()),
    ] {
        let mut resp = trusted.get(&url).call().expect("trusted request");
        assert_eq!(resp.status(), 200);
        let body = resp.body_mut().read_to_string().expect("body");
        assert!(title(&body).is_some_and(|t| t.starts_with("Page ")));
    }
    let stats = server.stats();
    assert_eq!(stats.total_requests, 2);
    // One TCP connection for the failed handshake, at least one for the others.
    assert!(stats.connections >= 2);
}

#[test]
fn a_self_signed_ca_cert_is_served_as_openssl_makes_it() {
    // CA:TRUE, so webpki refuses it as the server's own certificate even when
    // it is trusted: the case fetch_core::tls exists for.
    let cert = ServerCert::self_signed_ca(&["127.0.0.1"]).expect("make cert");
    let server =
        MockServer::start_with_cert(MockConfig::default(), cert.clone()).expect("start server");
    assert!(server.config().tls);
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    assert_eq!(server.root_cert_pem().as_deref(), Some(cert.pem()));
    let root = Certificate::from_pem(cert.pem().as_bytes()).expect("valid PEM");
    let agent = tls_agent(RootCerts::Specific(Arc::new(vec![root])));
    let err = agent.get(&server.page_url(1)).call().unwrap_err();
    assert!(err.to_string().contains("CaUsedAsEndEntity"), "{err}");

    // The expired one: refused for its dates first.
    let cert = ServerCert::expired_self_signed_ca(&["127.0.0.1"]).expect("make cert");
    let server =
        MockServer::start_with_cert(MockConfig::default(), cert.clone()).expect("start server");
    let root = Certificate::from_pem(cert.pem().as_bytes()).expect("valid PEM");
    let agent = tls_agent(RootCerts::Specific(Arc::new(vec![root])));
    let err = agent.get(&server.page_url(1)).call().unwrap_err();
    assert!(err.to_string().contains("certificate expired"), "{err}");
    assert_eq!(server.stats().total_requests, 0);
}

#[test]
fn plain_server_has_no_cert() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(server.root_cert_pem().is_none());
}

/// Sends one keep-alive request and reads exactly its response.
fn request_on(s: &mut TcpStream) {
    write!(s, "GET /page/1?body_bytes=100 HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the head, then exactly the 100-byte body, and not a byte more.
    let complete = |data: &[u8]| {
        data.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|p| data.len() >= p + 4 + 100)
    };
    while !complete(&data) {
        let n = s.read(&mut buf).expect("read response");
        assert!(n > 0, "connection closed early");
        data.extend_from_slice(&buf[..n]);
    }
    assert!(data.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let server = MockServer::start(MockConfig {
        keep_alive_idle: Some(Duration::from_millis(100)),
        ..MockConfig::default()
    })
    .expect("start server");
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    // Activity keeps it open: requests 50 ms apart outlive the 100 ms limit.
    for _ in 0..3 {
        request_on(&mut s);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then, idle: the server closes it (a read returns EOF, not a timeout).
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).expect("EOF, not an error"), 0);
    assert_eq!(server.stats().connections, 1);
}

#[test]
fn without_idle_limit_connections_stay_open() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    request_on(&mut s);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set timeout");
    let mut buf = [0u8; 16];
    let err = s
        .read(&mut buf)
        .expect_err("still open: the read times out");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    request_on(&mut s);
}
