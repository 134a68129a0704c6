//! `serin rbac`: print the ClusterRole rules the controller needs (see `crate::rbac`).
//!
//! `deploy/chart/serin/files/rbac-rules.yaml` is this output, committed; regenerate it with
//! `cargo run -- rbac > deploy/chart/serin/files/rbac-rules.yaml`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct RbacArgs {}

pub fn run(_args: RbacArgs) -> anyhow::Result<ExitCode> {
    std::io::stdout()
        .lock()
        .write_all(crate::rbac::rules_yaml().as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
