conformance::suite!(fetch_local::Local::per_core());
