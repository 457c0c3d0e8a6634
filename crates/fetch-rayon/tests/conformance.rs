conformance::suite!(fetch_rayon::Rayon::new());
