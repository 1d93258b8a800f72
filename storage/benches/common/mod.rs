//! What the storage benches share: where their data lives and their runtime.

/// Where bench data files go: `STRATA_BENCH_DIR`, else `target/bench-data` (never tmpfs:
/// O_DIRECT and device speed are what is measured).
pub(crate) fn bench_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("STRATA_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data")
        });
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// The runtime every bench drives the store from: two workers, as on the 2-core reference
/// machine.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
