conformance::suite!(fetch_sequential::Sequential::new());
