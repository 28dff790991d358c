//! The `ferry` binary: everything lives in the library ([`ferry::cli`]).

/// jemalloc as the server's allocator (see its entry in `Cargo.toml`): measured
/// against the system's malloc in `docs/benchmarks.md`, "the allocator, jemalloc".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    ferry::cli::main_entry()
}
