//! A real Prometheus (the `prometheus` binary from Debian's package, installed by
//! `scripts/setup`), started on a free loopback port with a temporary data directory,
//! scraping the traffic world every second. It is killed when the stack stops or is dropped,
//! and by a watchdog if the stack's process dies without stopping it.
//!
//! The binary is `$SERIN_PROMETHEUS` if set, else `prometheus` from `PATH`.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub struct Prometheus {
    url: String,
    child: Child,
    /// Holds the data directory, config and log; removed on drop.
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("SERIN_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `GET path` with HTTP/1.0; the status code, or `None` if nothing answers.
async fn status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.ok()?;
    let head = std::str::from_utf8(buf.get(..n)?).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Kills Prometheus within a second if this process dies without stopping it (SIGKILL, a
/// panic in a signal handler...): a detached shell polling both processes. It exits by
/// itself once Prometheus is gone. (No `prctl(PR_SET_PDEATHSIG)`: that needs unsafe code.)
fn watchdog(prometheus: Option<u32>) {
    let Some(prom) = prometheus else { return };
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {prom} 2>/dev/null; do sleep 1; done; kill {prom} 2>/dev/null"
    );
    // Not kill_on_drop: it must outlive us. Tokio reaps it if we are still running.
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no watchdog for prometheus: it outlives a killed stack");
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `scrape` (`host:port`) at `metrics_path` every second and
    /// waits until it is ready (at most 30 s).
    pub async fn start(scrape: &str, metrics_path: &str) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("serin-stack-prometheus-")
            .tempdir()
            .context("creating Prometheus's data directory")?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: serin-stack\n    metrics_path: {metrics_path}\n    \
                 static_configs:\n      - targets: [\"{scrape}\"]\n"
            ),
        )
        .context("writing Prometheus's config")?;
        let log_path = dir.path().join("prometheus.log");
        // The port is free when probed; if someone takes it before Prometheus binds it,
        // Prometheus exits and we try another.
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(&log_path).context("creating Prometheus's log")?;
            let mut child = Command::new(binary())
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=2h")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (install it with scripts/setup, or set SERIN_PROMETHEUS)",
                        binary().display()
                    )
                })?;
            watchdog(child.id());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(code) = child.try_wait()? {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_err = Some(anyhow::anyhow!(
                        "prometheus exited with {code}: {}",
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    ));
                    break;
                }
                if status(&addr, "/-/ready").await == Some(200) {
                    tracing::info!(url = %format!("http://{addr}"), "prometheus ready");
                    return Ok(Prometheus {
                        url: format!("http://{addr}"),
                        child,
                        _dir: dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    bail!(
                        "prometheus did not become ready within 30 s (log: {})",
                        log_path.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("prometheus did not start")))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills Prometheus and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
