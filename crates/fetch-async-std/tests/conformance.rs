conformance::suite!(fetch_async_std::AsyncStd::new());
