//! `serin crds`: print the three CRDs as one multi-document YAML stream.
//!
//! `crds/crds.yaml` is this output, committed; regenerate it with
//! `cargo run -- crds > crds/crds.yaml` (or `SERIN_UPDATE_CRDS=1 cargo test --test offline crds`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {}

pub fn run(_args: CrdsArgs) -> anyhow::Result<ExitCode> {
    let yaml = crate::api::crds_yaml().context("serialising the CRDs")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
