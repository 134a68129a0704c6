use std::process::ExitCode;

fn main() -> ExitCode {
    match serin::cli::Cli::from_env().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("serin: {error:#}");
            ExitCode::from(2)
        }
    }
}
