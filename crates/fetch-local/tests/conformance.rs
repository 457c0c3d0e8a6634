conformance::suite!(fetch_local::Local::new());
