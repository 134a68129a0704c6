use std::process::ExitCode;

// Benchmarks only (`--features heap-profile`): every allocation is recorded with its call
// site, and dhat-heap.json (the heap at its peak and at exit, by site) is written when the
// process exits cleanly (SIGTERM). Several times slower; never in a release.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::new_heap();
    match serin::cli::Cli::from_env().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("serin: {}", serin::cli::describe(&error));
            ExitCode::from(2)
        }
    }
}
