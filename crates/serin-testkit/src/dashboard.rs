//! `serin dashboard` as a process for the tests and benchmarks: started on a free port with a
//! kubeconfig, its address read from what it prints, stopped when dropped.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use crate::LONG;
use crate::http::request_with;

/// A running `serin dashboard`, stopped when dropped.
pub struct Dashboard {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
}

impl Dashboard {
    /// Starts `binary dashboard` with `kubeconfig` and `extra` flags, and waits for the
    /// address it prints.
    pub async fn start(binary: &str, kubeconfig: &Path, extra: &[&str]) -> Dashboard {
        let mut child = tokio::process::Command::new(binary)
            .args(["dashboard", "--port", "0", "--mesh-provider", "kubernetes"])
            .args(["--min-analysis-interval", "1s", "--kubeconfig"])
            .arg(kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("serin dashboard");
        let stdout = child.stdout.take().expect("its output");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(LONG, lines.next_line())
            .await
            .expect("the dashboard's address within LONG")
            .expect("its output")
            .expect("a first line");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .trim_end_matches('/')
            .to_string();
        Dashboard { child, url }
    }

    /// Its process id (for its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// GETs `path`: `(status, body)`.
    pub async fn get(&self, path: &str) -> (u16, String) {
        request_with("GET", &format!("{}{path}", self.url), &[], "").await
    }

    /// A button's request for the Canary `ns/name`, as the dashboard's script sends it.
    pub async fn press(&self, ns: &str, name: &str, action: &str) -> (u16, String) {
        let url = format!("{}/api/canaries/{ns}/{name}/{action}", self.url);
        let origin = format!("http://{}", self.host());
        let headers = [("X-Serin-Dashboard", "1"), ("Origin", origin.as_str())];
        request_with("POST", &url, &headers, "").await
    }
}
