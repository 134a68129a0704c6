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
    // Started as `wget` (the image links it to serin): Flagger's chart's probe command.
    let mut args = std::env::args_os();
    if let Some(program) = args.next()
        && serin::cli::wget::invoked_as_wget(&program)
    {
        let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return serin::cli::wget::run(&args);
    }
    match serin::cli::Cli::from_env().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("serin: {}", serin::error_chain(error.as_ref()));
            ExitCode::from(2)
        }
    }
}
