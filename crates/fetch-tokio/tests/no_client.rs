//! A run whose client cannot be built still reports one outcome per URL.
//! The conformance suite cannot see this path: every model it drives builds
//! its client. Here an extra root that rustls cannot read fails the client,
//! so nothing is requested and each URL says why.

use fetch_core::{CancelToken, ErrorKind, Model, Options};
use fetch_tokio::Tokio;

#[test]
fn a_client_that_cannot_be_built_still_reports_every_url() {
    // Options keep DER roots as given; the TLS setup is what parses them.
    let options = Options::builder()
        .add_root_der(b"not a certificate".to_vec())
        .build()
        .expect("DER roots are checked by the client, not the builder");
    // Port 9 (discard): never contacted, since no client exists to do it.
    let urls = ["http://127.0.0.1:9/a", "not a url", "http://127.0.0.1:9/b"].map(String::from);
    let mut seen = 0;
    let outcomes = Tokio::new().run(&urls, &options, &mut |_| seen += 1, &CancelToken::new());
    assert_eq!(seen, 3, "on_outcome once per URL");
    let kinds: Vec<_> = outcomes.iter().map(|o| (o.index, o.error_kind())).collect();
    assert_eq!(
        kinds,
        [
            (0, Some(ErrorKind::Tls)),
            (1, Some(ErrorKind::InvalidUrl)),
            (2, Some(ErrorKind::Tls)),
        ]
    );
    assert!(outcomes.iter().all(|o| o.attempts == 0), "{outcomes:?}");
}
