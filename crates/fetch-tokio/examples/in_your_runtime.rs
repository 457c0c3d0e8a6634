//! `fetch_all` inside a program that already runs tokio: no `Model`, no
//! second runtime, just the async function and a client.
//!
//! `cargo run -p fetch-tokio --example in_your_runtime` fetches 50 pages from
//! a mock server started on 127.0.0.1 for the purpose.

use fetch_core::{CancelToken, Options};
use mock_server::{Latency, MockConfig, MockServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The mock runs its own runtime on its own threads; a real program would
    // read its URLs from a file or a queue instead.
    let latency = Latency::Fixed(std::time::Duration::from_millis(20));
    let server = MockServer::start(MockConfig {
        latency,
        ..MockConfig::default()
    })?;
    let options = Options::builder().max_in_flight(8).build()?;
    let client = fetch_tokio::build_client(&options)?;

    let mut urls = server.page_urls(50).into_iter();
    let mut pages = 0;
    let mut on_outcome = |outcome: fetch_core::Outcome| match outcome.result {
        Ok(page) => pages += usize::from(page.title.is_some()),
        Err(error) => eprintln!("{}: {error}", outcome.url),
    };
    let cancel = CancelToken::new();
    let read = fetch_tokio::fetch_all(&client, &mut urls, &options, &mut on_outcome, &cancel).await;
    println!("{read} URLs read, {pages} pages with a title");
    println!(
        "server saw at most {} in flight",
        server.stats().max_in_flight
    );
    Ok(())
}
