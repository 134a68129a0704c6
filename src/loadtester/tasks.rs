//! Commands from webhook metadata. `cmd` (the default type) starts the command and answers at
//! once, as Flagger's load tester does (a load test outlives the webhook call); the same
//! canary and command are not started twice while running. `bash` runs the command to the
//! end and answers with its outcome. Every command is killed after `--timeout`. A `hey`
//! command line runs on the built-in load generator instead of a `hey` binary.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

use super::hey;

#[derive(Debug)]
pub struct Runner {
    pub timeout: Duration,
    pub http: reqwest::Client,
    running: Mutex<HashSet<String>>,
}

/// What a blocking task answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub output: String,
}

impl Runner {
    pub fn new(timeout: Duration, http: reqwest::Client) -> Runner {
        Runner {
            timeout,
            http,
            running: Mutex::default(),
        }
    }

    /// Starts `cmd` for `canary` unless the same one runs; `false` when it already did.
    /// A malformed `hey` line is an error at once.
    pub fn start(
        self: &Arc<Self>,
        canary: &str,
        cmd: &str,
        log_output: bool,
    ) -> Result<bool, String> {
        let parsed = hey::parse(cmd).transpose()?;
        let key = format!("{canary}/{cmd}");
        let started = self
            .running
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key.clone());
        if !started {
            return Ok(false);
        }
        let this = self.clone();
        let (canary, cmd) = (canary.to_string(), cmd.to_string());
        tokio::spawn(async move {
            match parsed {
                Some(load) => {
                    let run = hey::run(load, this.http.clone());
                    match tokio::time::timeout(this.timeout, run).await {
                        Ok(report) => tracing::info!(
                            canary,
                            cmd,
                            sent = report.sent.load(std::sync::atomic::Ordering::Relaxed),
                            errors = report.errors.load(std::sync::atomic::Ordering::Relaxed),
                            "load test finished"
                        ),
                        Err(_) => tracing::warn!(canary, cmd, "load test stopped at --timeout"),
                    }
                }
                None => {
                    let outcome = this.shell("sh", &cmd).await;
                    if log_output || !outcome.ok {
                        tracing::info!(canary, cmd, ok = outcome.ok, output = %outcome.output, "command finished");
                    }
                }
            }
            if let Ok(mut running) = this.running.lock() {
                running.remove(&format!("{canary}/{cmd}"));
            }
        });
        Ok(true)
    }

    /// Runs `cmd` with `shell -c` to the end (or `--timeout`): its status and output.
    pub async fn shell(&self, shell: &str, cmd: &str) -> Outcome {
        let child = Command::new(shell)
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                return Outcome {
                    ok: false,
                    output: format!("cannot start {shell}: {e}"),
                };
            }
        };
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Outcome {
                ok: out.status.success(),
                output: String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            },
            Ok(Err(e)) => Outcome {
                ok: false,
                output: e.to_string(),
            },
            Err(_) => Outcome {
                ok: false,
                output: format!("killed after --timeout {}s", self.timeout.as_secs()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shell_commands_report_status_output_and_timeout() {
        let runner = Runner::new(Duration::from_millis(500), reqwest::Client::new());
        let ok = runner.shell("sh", "echo hello").await;
        assert_eq!(
            ok,
            Outcome {
                ok: true,
                output: "hello\n".into()
            }
        );
        let failed = runner.shell("sh", "echo oops >&2; exit 3").await;
        assert!(!failed.ok);
        assert_eq!(failed.output, "oops\n");
        let slow = runner.shell("sh", "sleep 5").await;
        assert!(slow.output.contains("--timeout"), "{slow:?}");
    }

    #[tokio::test]
    async fn the_same_command_is_not_started_twice_while_it_runs() {
        let runner = Arc::new(Runner::new(Duration::from_secs(5), reqwest::Client::new()));
        assert_eq!(runner.start("podinfo.test", "sleep 1", false), Ok(true));
        assert_eq!(runner.start("podinfo.test", "sleep 1", false), Ok(false));
        assert_eq!(runner.start("other.test", "sleep 1", false), Ok(true));
        assert!(
            runner
                .start("podinfo.test", "hey -bad http://x/", false)
                .is_err()
        );
    }
}
