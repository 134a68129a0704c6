//! The `serin controller` of a test, its log kept across restarts: the binary in a process
//! of its own, or the same code in the test's runtime (virtual time, see
//! [`crate::in_virtual_time`]).

use crate::wait::Poll;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `serin controller` against a kubeconfig; restartable, killed on drop.
pub struct Controller {
    binary: PathBuf,
    kubeconfig: PathBuf,
    args: Vec<String>,
    /// Environment variables set for the process, beside the test's own.
    env: Vec<(String, String)>,
    /// Run as a task of the test's runtime instead of a process.
    in_process: bool,
    child: Option<Child>,
    task: Option<tokio::task::JoinHandle<()>>,
    logs: tempfile::TempDir,
    starts: usize,
}

impl Controller {
    /// A controller not started yet: `binary` (the test's `CARGO_BIN_EXE_serin`) with
    /// `args` after `controller --kubeconfig FILE`.
    pub fn new(binary: &Path, kubeconfig: &Path, args: Vec<String>) -> Controller {
        Controller {
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            args,
            env: Vec::new(),
            in_process: false,
            child: None,
            task: None,
            logs: tempfile::tempdir().unwrap(),
            starts: 0,
        }
    }

    /// Sets environment variables for every run (the controller's cloud credentials).
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Controller {
        self.env = env;
        self
    }

    /// Runs it in the test's runtime rather than as a process: the runtime's clock is the
    /// controller's, so under paused time the release runs in virtual time. Its log goes to
    /// the same file a process's would (with the stack's, which runs on the same thread).
    pub fn in_process(mut self) -> Controller {
        assert!(
            self.env.is_empty(),
            "an in-process controller shares the test process's environment: set no \
             variables for it (run the scenario in real time)"
        );
        self.in_process = true;
        self
    }

    /// Starts it (again) with its arguments plus `extra`.
    pub fn start(&mut self, extra: &[&str]) {
        self.kill();
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).unwrap();
        if self.in_process {
            return self.spawn(extra, log);
        }
        let child = Command::new(&self.binary)
            .args(["controller", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(&self.args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// The controller as a task of the current runtime, logging to `log` (the thread's
    /// default subscriber: a current-thread runtime polls every task on the test's thread).
    fn spawn(&mut self, extra: &[&str], log: File) {
        let mut words = vec![
            "--kubeconfig".to_string(),
            self.kubeconfig.display().to_string(),
        ];
        words.extend(self.args.iter().cloned());
        words.extend(extra.iter().map(|w| w.to_string()));
        let args = serin::cli::controller::ControllerArgs::parse_words(&words)
            .unwrap_or_else(|e| panic!("the controller's arguments {words:?}: {e:#}"));
        crate::logs::to_file(log);
        let run = serin::cli::controller::serve(
            args,
            serin::clock::Clock::Runtime,
            std::future::pending(),
        );
        self.task = Some(tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!("the controller stopped: {e:#}");
            }
        }));
    }

    /// The `serin` binary under test.
    /// The arguments after `controller --kubeconfig FILE` (each start's `extra` follow them).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has ended by itself (a replica that lost its leader election
    /// Lease exits, for its Deployment to restart it).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Kills it without warning (SIGKILL), as a crashed node would. In process, its task
    /// is dropped (what it spawned runs on until the runtime ends: a scenario that kills
    /// the controller runs it as a process).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// The port the current run serves `/metrics` on, from its startup log line (tests
    /// start it with `--port 0`); waits up to `LONG` for that line.
    pub async fn port(&self) -> u16 {
        let poll = Poll::new(crate::LONG).every(std::time::Duration::from_millis(100));
        loop {
            let text = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let plain = strip_ansi(&text);
            let port = plain
                .lines()
                .find(|l| l.contains("serin controller starting"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("port=")))
                .and_then(|p| p.parse().ok());
            if let Some(port) = port {
                return port;
            }
            assert!(
                !poll.expired(),
                "the controller logged no port:\n{}",
                self.logs(40)
            );
            poll.next().await;
        }
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.logs.path().join(format!("controller-{n}.log"))
    }

    /// Every run's log, whole.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    /// The last `lines` lines of each run's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!(
                "--- controller run {n} (last {lines} lines) ---\n"
            ));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Controller {
    /// Stops it; a test failing with it running prints its log's tail (its log directory
    /// goes with it).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && self.starts > 0 {
            eprintln!("{}", self.logs(60));
        }
    }
}
