//! `serin dashboard [-n NS] [--port N]`: the web dashboard (see `crate::dashboard`) on
//! `127.0.0.1`, with the user's kubeconfig, until interrupted.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Api;

use crate::api::Canary;
use crate::cli::cluster::{self, ClusterArgs};
use crate::dashboard::{Dashboard, Live};

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Only this namespace's Canaries (default: every namespace the user may list).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Port on 127.0.0.1 (0: any free port). Only this machine can reach it.
    #[arg(long, default_value_t = 3100)]
    pub port: u16,
    #[command(flatten)]
    pub planning: crate::cli::plan::ControllerDefaults,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let (client, _) = cluster::connect(&args.cluster).await?;
    let api: Api<Canary> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--port {}: cannot listen on {address}", args.port))?;
    let port = listener.local_addr().map_or(args.port, |a| a.port());
    let dashboard = Arc::new(Dashboard {
        client,
        live: Live::start(api),
        mesh_provider: args.planning.mesh_provider,
        min_interval: args.planning.min_analysis_interval,
    });
    let router = crate::dashboard::router(dashboard, port);
    println!("serin dashboard: http://127.0.0.1:{port}/ (Ctrl-C to stop)");
    tokio::select! {
        () = crate::http_server::serve(listener, router, crate::http_server::HEADER_READ_TIMEOUT, "dashboard") => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
