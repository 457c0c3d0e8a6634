conformance::suite!(fetch_mio::Mio::new());
