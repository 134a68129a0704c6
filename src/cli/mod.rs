//! The `serin` command line. One module per subcommand; each exposes an `Args` struct (clap)
//! and `run(args) -> anyhow::Result<ExitCode>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod analyze;
pub mod check;
pub mod cluster;
pub mod control;
pub mod controller;
pub mod crds;
pub mod dashboard;
pub mod flagger_flags;
pub mod loadtester;
pub mod plan;
pub mod rbac;
pub mod report;
pub mod status;
pub mod undo;
pub mod wget;

/// Progressive delivery for Kubernetes, speaking Flagger's API.
#[derive(Debug, Parser)]
#[command(name = "serin", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions (Canary, MetricTemplate, AlertProvider) as YAML.
    Crds(crds::CrdsArgs),
    /// Print the ClusterRole rules the controller needs (the chart's RBAC).
    Rbac(rbac::RbacArgs),
    /// Validate Canary, MetricTemplate and AlertProvider manifests offline.
    Check(check::CheckArgs),
    /// Show the steps a Canary would take.
    Plan(plan::PlanArgs),
    /// Run a Canary's metric checks once, now, against the real providers.
    Analyze(analyze::AnalyzeArgs),
    /// Run the controller: watch Canaries and drive their releases.
    Controller(Box<controller::ControllerArgs>),
    /// Show releases: phase, weight, steps, checks, metrics, what each waits for.
    Status(status::StatusArgs),
    /// Finish a running release now (skip the remaining steps; readiness still checked).
    Promote(control::ControlArgs),
    /// Roll a running release back now.
    Abort(control::ControlArgs),
    /// Release a failed revision again.
    Retry(control::ControlArgs),
    /// Hold a Canary where it is.
    Pause(control::ControlArgs),
    /// Continue a paused Canary.
    Resume(control::ControlArgs),
    /// Serve a live web page of the Canaries, with buttons, on 127.0.0.1.
    Dashboard(dashboard::DashboardArgs),
    /// Write a release report (HTML, or Markdown with `--format md`).
    Report(report::ReportArgs),
    /// Set the target back to an earlier revision (default: the one the primary runs).
    Undo(undo::UndoArgs),
    /// Flagger's load tester: webhook commands, `hey` load, and manual gates.
    Loadtester(loadtester::LoadtesterArgs),
}

impl Cli {
    /// Parses the process's arguments, Flagger's controller flags included (see
    /// `flagger_flags`).
    pub fn from_env() -> Cli {
        let (args, notes) = flagger_flags::normalize(std::env::args_os().collect());
        let mut cli = Cli::parse_from(args);
        if let Command::Controller(c) = &mut cli.command {
            c.flagger_notes = notes;
        }
        cli
    }

    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Crds(args) => crds::run(args),
            Command::Rbac(args) => rbac::run(args),
            Command::Check(args) => check::run(args),
            Command::Plan(args) => plan::run(args),
            Command::Analyze(args) => analyze::run(args),
            Command::Controller(args) => controller::run(*args),
            Command::Status(args) => status::run(args),
            Command::Promote(args) => control::run(control::Action::Promote, args),
            Command::Abort(args) => control::run(control::Action::Abort, args),
            Command::Retry(args) => control::run(control::Action::Retry, args),
            Command::Pause(args) => control::run(control::Action::Pause, args),
            Command::Undo(args) => undo::run(args),
            Command::Report(args) => report::run(args),
            Command::Dashboard(args) => dashboard::run(args),
            Command::Resume(args) => control::run(control::Action::Resume, args),
            Command::Loadtester(args) => loadtester::run(args),
        }
    }
}
