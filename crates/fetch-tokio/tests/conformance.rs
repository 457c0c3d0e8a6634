conformance::suite!(fetch_tokio::Tokio::new());
