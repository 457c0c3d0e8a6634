conformance::suite!(fetch_processes::Processes::new(
    env!("CARGO_BIN_EXE_fetch-processes-worker").into()
));
