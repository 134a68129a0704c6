//! The kubeconfig a client needs to reach the emulator.

use anyhow::{Context, Result};
use std::path::Path;

pub fn render(url: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: serin-stack\n  cluster:\n    server: {url}\n\
         contexts:\n- name: serin-stack\n  context:\n    cluster: serin-stack\n    user: serin-stack\n    namespace: default\n\
         current-context: serin-stack\nusers:\n- name: serin-stack\n{user}preferences: {{}}\n"
    )
}

pub fn write(path: &Path, url: &str, token: Option<&str>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, render(url, token))
        .with_context(|| format!("writing kubeconfig {}", path.display()))
}
