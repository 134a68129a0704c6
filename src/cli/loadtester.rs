//! `serin loadtester`: Flagger's load tester (see `crate::loadtester`), with its flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::duration::parse_go_duration;
use crate::loadtester::LoadTester;
use crate::loadtester::tasks::Runner;

#[derive(Debug, clap::Args)]
pub struct LoadtesterArgs {
    /// Port to serve on (0: any free port, logged at start).
    #[arg(long, default_value_t = 9090)]
    pub port: u16,
    /// Address to listen on, with --port: e.g. 127.0.0.1 to serve only this host, or :: for
    /// IPv6 too.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,
    /// When set, requests that change a gate (/gate/open, /gate/close, /rollback/open,
    /// /rollback/close) need `Authorization: Bearer <token>`; checking a gate needs none.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LOADTESTER_GATE_TOKEN",
        hide_env_values = true
    )]
    pub gate_token: Option<String>,
    /// Longest a command or load test may run before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Only canaries of namespaces matching this regular expression may use it.
    #[arg(long, value_name = "REGEXP")]
    pub namespace_regexp: Option<String>,
    /// debug, info, warn or error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

pub fn run(args: LoadtesterArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?} is not a level", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    let namespaces = match &args.namespace_regexp {
        Some(re) => {
            Some(regex::Regex::new(re).with_context(|| format!("--namespace-regexp {re:?}"))?)
        }
        None => None,
    };
    // An empty token would be satisfied by `Authorization: Bearer ` (an empty variable in a
    // manifest, say): refused rather than taken as "no token".
    if args
        .gate_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        anyhow::bail!(
            "--gate-token (or LOADTESTER_GATE_TOKEN) is empty: set a token, or unset it to leave the gates open to anyone"
        );
    }
    let gate_token = args.gate_token.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("serin-loadtester/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        let address = SocketAddr::new(args.bind_address, args.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!(
                    "--bind-address {} --port {}: cannot listen",
                    args.bind_address, args.port
                )
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
        tracing::info!(
            address = %args.bind_address,
            port,
            timeout = ?args.timeout,
            gate_token = gate_token.is_some(),
            "serin loadtester starting"
        );
        let tester = LoadTester::new(Runner::new(args.timeout, http), namespaces)
            .with_gate_token(gate_token);
        let tester = Arc::new(tester);
        tester.serve(listener).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
