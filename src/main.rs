use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match serin::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("serin: {error:#}");
            ExitCode::from(2)
        }
    }
}
