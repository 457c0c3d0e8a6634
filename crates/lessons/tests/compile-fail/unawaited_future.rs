// The mistake of src/unawaited_future.rs, in a crate that denies the lint.
#![deny(unused_must_use)]

use reqwest::Client;

async fn save(client: &Client, url: &str, outcomes: &mut Vec<reqwest::Result<String>>) {
    let page = async { client.get(url).send().await?.error_for_status()?.text().await };
    outcomes.push(page.await);
}

pub async fn mistake(client: &Client, urls: &[String]) -> Vec<reqwest::Result<String>> {
    let mut outcomes = Vec::new();
    for url in urls {
        save(client, url, &mut outcomes);
    }
    outcomes
}

fn main() {}
