//! Commands from webhook metadata. `cmd` (the default type) starts the command and answers at
//! once, as Flagger's load tester does (a load test outlives the webhook call); the same
//! canary and command are not started twice while running. `bash` runs the command to the
//! end and answers with its outcome. Every command is killed after `--timeout`. A `hey`
//! command line runs on the built-in load generator instead of a `hey` binary. At most
//! [`MAX_TASKS`] commands run at once, of both types: anyone who reaches the load tester can
//! ask for one, and each may hold a process or a thousand load workers for an hour.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::hey;

/// Commands (of both types) running at once, by default.
pub const MAX_TASKS: usize = 64;

#[derive(Debug)]
pub struct Runner {
    pub timeout: Duration,
    pub http: reqwest::Client,
    running: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    max_tasks: usize,
}

/// Why a command was not started.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The command line is wrong (a `hey` flag out of range): the caller's to fix.
    #[error("{0}")]
    Invalid(String),
    /// Every slot is taken: the caller may retry later.
    #[error("{0} commands are running, the most this load tester runs at once: retry later")]
    Busy(usize),
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
            slots: Arc::new(Semaphore::new(MAX_TASKS)),
            max_tasks: MAX_TASKS,
        }
    }

    /// At most `n` commands at once instead of [`MAX_TASKS`].
    pub fn with_max_tasks(mut self, n: usize) -> Runner {
        self.slots = Arc::new(Semaphore::new(n));
        self.max_tasks = n;
        self
    }

    fn slot(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy(self.max_tasks))
    }

    /// Starts `cmd` for `canary` unless the same one runs; `false` when it already did.
    /// A malformed `hey` line is an error at once, and so is a full runner.
    pub fn start(
        self: &Arc<Self>,
        canary: &str,
        cmd: &str,
        log_output: bool,
    ) -> Result<bool, Refusal> {
        let parsed = hey::parse(cmd).transpose().map_err(Refusal::Invalid)?;
        let key = format!("{canary}/{cmd}");
        // A poisoned set only means a panic elsewhere while it was held; its contents are
        // still a set of strings, so it is used as it is.
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains(&key) {
            return Ok(false);
        }
        let slot = self.slot()?;
        running.insert(key);
        drop(running);
        let this = self.clone();
        let (canary, cmd) = (canary.to_string(), cmd.to_string());
        tokio::spawn(async move {
            let _slot = slot;
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
            this.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&format!("{canary}/{cmd}"));
        });
        Ok(true)
    }

    /// [`Runner::shell`] in one of the runner's slots.
    pub async fn run(&self, shell: &str, cmd: &str) -> Result<Outcome, Refusal> {
        let _slot = self.slot()?;
        Ok(self.shell(shell, cmd).await)
    }

    /// Runs `program` with `cmd` split on whitespace as its arguments (no shell, as Flagger's
    /// `helm` and `kubectl` tasks run them), to the end or `--timeout`.
    pub async fn exec(&self, program: &str, cmd: &str) -> Result<Outcome, Refusal> {
        let _slot = self.slot()?;
        let mut command = Command::new(program);
        command.args(cmd.split_whitespace());
        Ok(self.to_the_end(program, command).await)
    }

    /// Runs `cmd` with `shell -c` to the end (or `--timeout`): its status and output.
    pub async fn shell(&self, shell: &str, cmd: &str) -> Outcome {
        let mut command = Command::new(shell);
        command.arg("-c").arg(cmd);
        self.to_the_end(shell, command).await
    }

    /// Runs `command` (the program `name`) to the end or `--timeout`: its status and output.
    async fn to_the_end(&self, name: &str, mut command: Command) -> Outcome {
        let child = command
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
                    output: format!("cannot start {name}: {e}"),
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
        let runner = Runner::new(Duration::from_millis(500), crate::loadtester::test_client());
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
    async fn exec_passes_the_words_as_arguments_without_a_shell() {
        let runner = Runner::new(Duration::from_secs(5), crate::loadtester::test_client());
        // No shell: `$HOME` and `;` reach the program as they are.
        let echoed = runner.exec("echo", "a  $HOME ; b").await.unwrap();
        assert_eq!(echoed.output, "a $HOME ; b\n");
        let missing = runner.exec("serin-no-such-binary", "x").await.unwrap();
        assert!(!missing.ok);
        assert!(
            missing
                .output
                .starts_with("cannot start serin-no-such-binary"),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn the_same_command_is_not_started_twice_while_it_runs() {
        let runner = Arc::new(Runner::new(
            Duration::from_secs(5),
            crate::loadtester::test_client(),
        ));
        assert_eq!(runner.start("podinfo.test", "sleep 1", false), Ok(true));
        assert_eq!(runner.start("podinfo.test", "sleep 1", false), Ok(false));
        assert_eq!(runner.start("other.test", "sleep 1", false), Ok(true));
        assert!(
            runner
                .start("podinfo.test", "hey -bad http://x/", false)
                .is_err()
        );
    }

    #[tokio::test]
    async fn commands_beyond_the_limit_are_refused_until_a_slot_frees() {
        let runner = Arc::new(
            Runner::new(Duration::from_millis(300), crate::loadtester::test_client())
                .with_max_tasks(1),
        );
        assert_eq!(runner.start("podinfo.test", "sleep 5", false), Ok(true));
        // The same command is still "already running", not refused.
        assert_eq!(runner.start("podinfo.test", "sleep 5", false), Ok(false));
        assert_eq!(
            runner.start("other.test", "sleep 5", false),
            Err(Refusal::Busy(1))
        );
        assert_eq!(runner.run("bash", "true").await, Err(Refusal::Busy(1)));
        // --timeout kills the first command, which gives its slot back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match runner.run("bash", "echo free").await {
                Ok(outcome) => {
                    assert_eq!(outcome.output, "free\n");
                    break;
                }
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
