//! How the CLI's cluster commands connect: `--kubeconfig` (and `--context`), else the usual
//! lookup (`KUBECONFIG`, `~/.kube/config`) or the in-cluster config.

use std::path::PathBuf;

use anyhow::Context as _;

/// The connection flags every cluster command takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or the in-cluster config).
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,
}

/// A client, and the namespace of the kubeconfig's context (`default` when it names none).
pub async fn connect(args: &ClusterArgs) -> anyhow::Result<(kube::Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) or in-cluster config",
        )?,
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    Ok((client, namespace))
}

/// A current-thread runtime for a short CLI command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
