//! Which Kubernetes API the stack serves: its own emulator (fast, fault injection) or a real
//! control plane, `kube-local` (e2e/kube-local: etcd, kube-apiserver and
//! kube-controller-manager built from Kubernetes' Go modules), started as a child process.
//!
//! Over the real control plane the stack plays only what a cluster's nodes and add-ons would:
//! the kubelet and scheduler (`kubelet.rs`), the gateway controller (`mirror.rs`), and the
//! traffic world, which reads a mirror of the routing objects (`mirror.rs`).

use anyhow::{Context, Result, bail};
use serde_json::json;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How many of kube-local's last stderr lines [`KubeLocal::recent_log`] keeps.
pub const LOG_LINES: usize = 60;

/// The API server behind a stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControlPlane {
    /// serin-stack's own API emulator and workload simulator, in process.
    #[default]
    Emulator,
    /// kube-local: a real kube-apiserver and kube-controller-manager.
    Real,
}

impl std::str::FromStr for ControlPlane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulator" => Ok(ControlPlane::Emulator),
            "real" => Ok(ControlPlane::Real),
            other => Err(format!(
                "unknown control plane {other:?}: expected emulator or real"
            )),
        }
    }
}

impl std::fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControlPlane::Emulator => "emulator",
            ControlPlane::Real => "real",
        })
    }
}

/// Where `scripts/setup` puts the kube-local binary; `$SERIN_KUBE_LOCAL` overrides it.
pub fn kube_local_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SERIN_KUBE_LOCAL") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kube-local/kube-local")
}

/// A running kube-local. Dropping it kills it (the data directory is its own temp dir).
pub struct KubeLocal {
    child: Child,
    url: String,
    /// The last lines kube-local wrote to stderr, for a failing test's message.
    log: Arc<Mutex<VecDeque<String>>>,
    /// Held open: kube-local (`--exit-with-stdin`) stops when it closes, so a test process
    /// killed outright leaves no control plane behind.
    _stdin: tokio::process::ChildStdin,
    /// kube-local's data directory (etcd, about 120 MiB).
    dir: PathBuf,
    /// The data directory, owned here and removed on drop, because a killed kube-local
    /// cannot remove it itself. Declared after `child` so the process is killed first.
    /// `None` for a [`Shared`] one, which is never dropped: the next process to start one
    /// removes it ([`remove_stale_shared`]).
    _data: Option<tempfile::TempDir>,
}

/// One POST to etcd's JSON gateway (plain HTTP on loopback).
async fn etcd_post(
    authority: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to etcd at {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("etcd {path}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

type Lines<R> = tokio::io::Lines<BufReader<R>>;

/// Whether kube-local printed `ready` on stdout within three minutes.
async fn wait_ready(stdout: &mut Lines<tokio::process::ChildStdout>) -> bool {
    let ready = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = stdout.next_line().await? {
            if line.trim() == "ready" {
                return Ok(true);
            }
        }
        Ok::<_, std::io::Error>(false)
    })
    .await;
    matches!(ready, Ok(Ok(true)))
}

/// What a failed kube-local wrote to stderr, until it stops writing for two seconds.
async fn drain_for_a_moment(stderr: &mut Lines<tokio::process::ChildStderr>) -> String {
    let mut text = String::new();
    while let Ok(Ok(Some(l))) =
        tokio::time::timeout(Duration::from_secs(2), stderr.next_line()).await
    {
        text.push_str(&l);
        text.push('\n');
    }
    text
}

/// The API server's URL, from the first stderr line (which names it and the start time).
async fn read_url(stderr: &mut Lines<tokio::process::ChildStderr>) -> String {
    let Ok(Ok(Some(first))) =
        tokio::time::timeout(Duration::from_secs(2), stderr.next_line()).await
    else {
        return String::new();
    };
    tracing::info!("{first}");
    first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_default()
        .to_string()
}

/// Reads stderr to its end, so a full pipe never blocks kube-local, keeping the last
/// [`LOG_LINES`] lines in `log`.
async fn keep_last_lines(
    mut stderr: Lines<tokio::process::ChildStderr>,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    while let Ok(Some(l)) = stderr.next_line().await {
        tracing::debug!(target: "kube_local", "{l}");
        let mut kept = log.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == LOG_LINES {
            kept.pop_front();
        }
        kept.push_back(l);
    }
}

impl KubeLocal {
    /// Starts kube-local writing its admin kubeconfig to `kubeconfig` and waits for `ready`.
    /// `crds`: YAML files of CRDs it installs before starting the controllers.
    /// `watch_cache: false` has watches read etcd directly (see [`KubeLocal::compact`]).
    pub async fn start(
        kubeconfig: &Path,
        crds: &[PathBuf],
        watch_cache: bool,
    ) -> Result<KubeLocal> {
        let data = tempfile::Builder::new()
            .prefix("kube-local-")
            .tempdir()
            .context("creating kube-local's data directory")?;
        let dir = data.path().to_path_buf();
        KubeLocal::spawn(kubeconfig, crds, watch_cache, &dir, Some(data)).await
    }

    async fn spawn(
        kubeconfig: &Path,
        crds: &[PathBuf],
        watch_cache: bool,
        dir: &Path,
        data: Option<tempfile::TempDir>,
    ) -> Result<KubeLocal> {
        let binary = kube_local_binary();
        if !binary.exists() {
            bail!(
                "{} not found: run scripts/setup to build the real control plane (Go), or set SERIN_KUBE_LOCAL",
                binary.display()
            );
        }
        let mut child = Command::new(&binary)
            .arg("--dir")
            .arg(dir)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--exit-with-stdin")
            .arg(format!("--watch-cache={watch_cache}"))
            .args(
                crds.iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--crds"), f.as_os_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdin = child.stdin.take().context("kube-local stdin")?;
        let stdout = child.stdout.take().context("kube-local stdout")?;
        let stderr = child.stderr.take().context("kube-local stderr")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut err_lines = BufReader::new(stderr).lines();
        if !wait_ready(&mut lines).await {
            let _ = child.start_kill();
            let text = drain_for_a_moment(&mut err_lines).await;
            bail!("kube-local did not become ready:\n{text}");
        }
        let url = read_url(&mut err_lines).await;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        tokio::spawn(keep_last_lines(err_lines, log.clone()));
        // The rest of stdout is drained so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(KubeLocal {
            child,
            url,
            log,
            _stdin: stdin,
            dir: dir.to_path_buf(),
            _data: data,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last lines (at most [`LOG_LINES`]) kube-local wrote to stderr.
    pub fn recent_log(&self) -> Vec<String> {
        let kept = self.log.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }

    /// Compacts etcd at its current revision, through the JSON gateway of the client URL
    /// kube-local wrote into its data directory: a watch then resumed from an earlier
    /// resourceVersion (past the API server's watch cache, if it has one) gets 410 Gone.
    pub async fn compact(&self) -> Result<()> {
        if self._data.is_none() {
            bail!("a shared control plane is not compacted: start the stack with its own");
        }
        let path = self.dir.join("etcd-url");
        let url = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let authority = url.trim().trim_start_matches("http://").to_string();
        // Any key: the answer's header carries the store's revision.
        let range = etcd_post(&authority, "/v3/kv/range", json!({"key": "AA=="})).await?;
        let revision = range["header"]["revision"]
            .as_str()
            .context("etcd's range answer has no header.revision")?
            .to_string();
        etcd_post(
            &authority,
            "/v3/kv/compaction",
            json!({"revision": revision, "physical": true}),
        )
        .await?;
        tracing::info!("compacted etcd at revision {revision}");
        Ok(())
    }

    /// Stops it with SIGTERM (a clean etcd shutdown), killing it after 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // The workspace forbids unsafe code, so no libc: the `kill` command signals.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// A kube-local shared by every stack of this process that asks for the same CRDs
/// ([`crate::StackConfig::shared_control_plane`]): a real control plane costs about 4 s of
/// CPU to start, more than most scenarios spend on it, so the scenarios of one test
/// process share one, each in a namespace of its own. It runs on a thread of its own, whose
/// runtime keeps reading its output after the test that started it has ended, and stops when
/// the process exits (its standard input closes).
pub struct Shared {
    url: String,
    kubeconfig: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
}

type SharedSlot = Arc<tokio::sync::OnceCell<Result<Arc<Shared>, String>>>;

/// The shared control planes started so far, by the CRD files installed in them.
static SHARED: Mutex<Vec<(Vec<PathBuf>, SharedSlot)>> = Mutex::new(Vec::new());

impl Shared {
    /// This process's kube-local with `crds` installed, started on first use.
    pub async fn get(crds: &[PathBuf]) -> Result<Arc<Shared>> {
        let slot = {
            let mut started = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            match started.iter().find(|(c, _)| c.as_slice() == crds) {
                Some((_, slot)) => slot.clone(),
                None => {
                    let slot = SharedSlot::default();
                    started.push((crds.to_vec(), slot.clone()));
                    slot
                }
            }
        };
        let shared = slot.get_or_init(|| Shared::start(crds.to_vec())).await;
        shared
            .clone()
            .map_err(|e| anyhow::anyhow!("the shared control plane did not start: {e}"))
    }

    async fn start(crds: Vec<PathBuf>) -> Result<Arc<Shared>, String> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        remove_stale_shared();
        // Its data and kubeconfig, in a directory named after this process: kube-local, whose
        // output pipes close when the process exits, is not sure to clean up after itself.
        let dir = std::env::temp_dir().join(format!("{SHARED_PREFIX}{}-{n}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Err(format!("creating {}: {e}", dir.display()));
        }
        let kubeconfig = dir.join("kubeconfig");
        let (ready, started) = tokio::sync::oneshot::channel();
        let path = kubeconfig.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shared-kube-local-{n}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(format!("its runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match KubeLocal::spawn(&path, &crds, true, &dir, None).await {
                        Ok(kl) => {
                            let shared = Shared {
                                url: kl.url.clone(),
                                kubeconfig: path,
                                log: kl.log.clone(),
                            };
                            let _ = ready.send(Ok(Arc::new(shared)));
                            // Until the process exits: the runtime reads kube-local's output.
                            std::future::pending::<()>().await;
                            drop(kl);
                        }
                        Err(e) => {
                            let _ = ready.send(Err(format!("{e:#}")));
                        }
                    }
                })
            });
        if let Err(e) = thread {
            return Err(format!("its thread: {e}"));
        }
        started
            .await
            .unwrap_or_else(|_| Err("its thread ended".into()))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig kube-local wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The last lines (at most [`LOG_LINES`]) kube-local wrote to stderr, for every scenario
    /// sharing it.
    pub fn recent_log(&self) -> Vec<String> {
        let kept = self.log.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }
}

const SHARED_PREFIX: &str = "serin-shared-kube-local-";

/// What the shared control planes of processes that have ended left in the temporary
/// directory (a process that exits drops no statics, so its own are removed by the next).
fn remove_stale_shared() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SHARED_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            let _ = match path.is_dir() {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
        }
    }
}
