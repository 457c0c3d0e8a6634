conformance::suite!(fetch_threads::Threads::new());
