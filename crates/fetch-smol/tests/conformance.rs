conformance::suite!(fetch_smol::Smol::new());
