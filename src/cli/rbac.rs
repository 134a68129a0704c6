//! `serin rbac`: the RBAC rules the controller needs (see `crate::rbac`), as the chart's rule
//! files.
//!
//! `deploy/chart/serin/files/rbac-*.yaml` are this output, committed; regenerate them with
//! `serin rbac --write deploy/chart/serin/files` (scripts/render-manifests does).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct RbacArgs {
    /// Write each rule file into this directory instead of printing them all.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

pub fn run(args: RbacArgs) -> anyhow::Result<ExitCode> {
    let files = crate::rbac::files();
    match args.write {
        Some(dir) => {
            for (name, text) in files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("--write {}: cannot write {name}", dir.display()))?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for (name, text) in files {
                writeln!(out, "# ==> files/{name} <==")
                    .and_then(|()| out.write_all(text.as_bytes()))
                    .context("writing to stdout")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
