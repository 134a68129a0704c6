//! Benchmark (ignored by default): releases whose truth is known, decided by serin with
//! Flagger-style thresholds and with the canary-vs-primary judge, on the traffic world (noisy,
//! seeded) with a real Prometheus. Prints a confusion table per class and traffic level, and
//! the share of regressions caught, healthy releases rolled back and incidents blamed.
//!
//! ```sh
//! cargo test --release --test benchmarks decisions:: -- --ignored --nocapture
//! SERIN_DECISION_RATES=20 SERIN_DECISION_SEEDS=1 cargo test --release --test benchmarks decisions:: -- --ignored --nocapture
//! # some modes only (t thresholds, j ranks, m means, c counts)
//! SERIN_DECISION_MODES=t,c cargo test --test benchmarks decisions:: -- --ignored --nocapture
//! # the judge's confidence over the whole analysis (default: the field's, 0.99)
//! SERIN_DECISION_CONFIDENCE=0.98 cargo test --test benchmarks decisions:: -- --ignored --nocapture
//! # some classes only, many seeds: the false alarm rate
//! SERIN_DECISION_CLASSES=healthy,incident SERIN_DECISION_SEEDS=25 cargo test --test benchmarks decisions:: -- --ignored --nocapture
//! # longer releases: 18 iterations of 10 s, the judge over 5 minutes
//! SERIN_DECISION_ITERATIONS=18 SERIN_DECISION_WINDOW=5m cargo test --test benchmarks decisions:: -- --ignored --nocapture
//! ```
//!
//! Every case is one Deployment and one Canary (blue/green on the `kubernetes` provider: the
//! apex Service and the `-canary` Service each get the case's request rate, as a load tester
//! against the canary gives it), all released at once in one world.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_core::Phase;
use serin_testkit::{ControlPlane, Poll, World, WorldConfig, deployment, wait_until};

/// The healthy version: 0.5 % errors, latency log-normal with median 100 ms and p99 300 ms.
const BASE_ERROR_RATE: f64 = 0.005;

/// A class of release: how the new version behaves, and what should happen to it.
struct Class {
    name: &'static str,
    /// The new version's behaviour (an `images` rule without `match`), or None: as healthy.
    rule: Option<&'static str>,
    /// An incident (5 % more errors) on both versions for the whole run.
    incident: bool,
    /// Nothing reaches the new version: no data to decide on (it must not be promoted).
    silent: bool,
    /// Should be rolled back.
    regression: bool,
    /// A regression the goals count (>= 2x errors, >= +50 % p99).
    large: bool,
}

const CLASSES: &[Class] = &[
    Class {
        name: "healthy",
        rule: None,
        incident: false,
        silent: false,
        regression: false,
        large: false,
    },
    Class {
        name: "err1x5",
        rule: Some("errorRate: 0.0075"),
        incident: false,
        silent: false,
        regression: true,
        large: false,
    },
    Class {
        name: "err2x",
        rule: Some("errorRate: 0.01"),
        incident: false,
        silent: false,
        regression: true,
        large: true,
    },
    Class {
        name: "err5x",
        rule: Some("errorRate: 0.025"),
        incident: false,
        silent: false,
        regression: true,
        large: true,
    },
    Class {
        name: "lat1x2",
        rule: Some("errorRate: 0.005\n      latency: 120ms\n      p99: 360ms"),
        incident: false,
        silent: false,
        regression: true,
        large: false,
    },
    Class {
        name: "lat1x5",
        rule: Some("errorRate: 0.005\n      latency: 150ms\n      p99: 450ms"),
        incident: false,
        silent: false,
        regression: true,
        large: true,
    },
    Class {
        name: "lat3x",
        rule: Some("errorRate: 0.005\n      latency: 300ms\n      p99: 900ms"),
        incident: false,
        silent: false,
        regression: true,
        large: true,
    },
    Class {
        name: "flaky",
        rule: Some("errorRate: 0.05\n      intermittent: {period: 30s, duty: 0.2}"),
        incident: false,
        silent: false,
        regression: true,
        large: true,
    },
    Class {
        name: "silent",
        rule: None,
        incident: false,
        silent: true,
        regression: true,
        large: false,
    },
    Class {
        name: "incident",
        rule: None,
        incident: true,
        silent: false,
        regression: false,
        large: false,
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Thresholds,
    /// The judge with its default test, Mann-Whitney U.
    Judge,
    /// The judge with `test: permutation` (difference of means).
    JudgeMeans,
    /// The judge with `test: counts` for the success rate (every error and request of the
    /// window), Mann-Whitney for the latency.
    JudgeCounts,
}

const ALL_MODES: [Mode; 4] = [
    Mode::Thresholds,
    Mode::Judge,
    Mode::JudgeMeans,
    Mode::JudgeCounts,
];

/// The modes to run: `SERIN_DECISION_MODES` (tags, e.g. `t,j,c`), else all.
fn modes() -> Vec<Mode> {
    let tags = env_list("SERIN_DECISION_MODES", "t,j,m,c");
    ALL_MODES
        .into_iter()
        .filter(|m| tags.iter().any(|t| t == m.tag()))
        .collect()
}

impl Mode {
    fn tag(self) -> &'static str {
        match self {
            Mode::Thresholds => "t",
            Mode::Judge => "j",
            Mode::JudgeMeans => "m",
            Mode::JudgeCounts => "c",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Mode::Thresholds => "thresholds",
            Mode::Judge => "judge (ranks)",
            Mode::JudgeMeans => "judge (means)",
            Mode::JudgeCounts => "judge (counts)",
        }
    }

    /// The metrics as users write them: Flagger's documented thresholds, or the same two
    /// builtins judged against the primary.
    fn metrics(self) -> Value {
        match self {
            Mode::Thresholds => json!([
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}
            ]),
            Mode::Judge | Mode::JudgeMeans | Mode::JudgeCounts => {
                let test = match self {
                    Mode::JudgeMeans => "permutation",
                    _ => "mannWhitney",
                };
                let mut judge = json!({"step": "5s", "minSamples": 12, "test": test});
                // Counts need requests, not samples: a minute's worth at 1 rps.
                let mut errors = match self {
                    Mode::JudgeCounts => json!({"test": "counts", "minSamples": 60}),
                    _ => judge.clone(),
                };
                if let Some(confidence) = confidence() {
                    judge["confidence"] = json!(confidence);
                    errors["confidence"] = json!(confidence);
                }
                json!([
                    {"name": "request-success-rate", "interval": window(), "noDataPolicy": "hold",
                     "judge": errors},
                    {"name": "request-duration", "interval": window(), "noDataPolicy": "hold",
                     "judge": judge}
                ])
            }
        }
    }
}

struct Case {
    name: String,
    class: &'static Class,
    rate: u32,
    mode: Mode,
}

fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cases() -> Vec<Case> {
    let rates: Vec<u32> = env_list("SERIN_DECISION_RATES", "1,20,200")
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let seeds: u32 = std::env::var("SERIN_DECISION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let classes = env_list("SERIN_DECISION_CLASSES", "");
    let mut cases = Vec::new();
    for class in CLASSES
        .iter()
        .filter(|c| classes.is_empty() || classes.iter().any(|n| n == c.name))
    {
        for &rate in &rates {
            for seed in 0..seeds {
                for mode in modes() {
                    cases.push(Case {
                        // The incident rule matches workload names starting with "inc-".
                        name: format!(
                            "{}-r{rate}-s{seed}-{}",
                            if class.incident { "inc" } else { class.name },
                            mode.tag()
                        ),
                        class,
                        rate,
                        mode,
                    });
                }
            }
        }
    }
    cases
}

/// The stack's scenario: load on each case's apex and canary Services (in the world's
/// namespace, where a load without one goes), one image rule per class, the incident, seeded
/// noise.
fn scenario(cases: &[Case], seed: u64) -> String {
    let mut s = format!(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: kubernetes\n  noise: {{seed: {seed}}}\n  services:\n"
    );
    for case in cases {
        let mut loaded = vec![case.name.clone()];
        if !case.class.silent {
            loaded.push(format!("{}-canary", case.name));
        }
        for service in loaded {
            s.push_str(&format!(
                "    - name: {service}\n      rate: {}\n",
                case.rate
            ));
        }
    }
    s.push_str("  incidents:\n    - match: inc-\n      start: 0s\n      duration: 120m\n      errorRate: 0.05\n");
    s.push_str("  images:\n");
    for class in CLASSES {
        if let Some(rule) = class.rule {
            s.push_str(&format!(
                "    - match: bench:2-{}\n      {rule}\n",
                class.name
            ));
        }
    }
    s.push_str(&format!(
        "    - match: \"bench:\"\n      errorRate: {BASE_ERROR_RATE}\n      latency: 100ms\n      p99: 300ms\n"
    ));
    s
}

/// `SERIN_DECISION_ITERATIONS`: analysis steps of 10 s per release (default 6).
fn iterations() -> u32 {
    std::env::var("SERIN_DECISION_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// `SERIN_DECISION_CONFIDENCE`: the judge's confidence; unset, the field's default.
fn confidence() -> Option<f64> {
    std::env::var("SERIN_DECISION_CONFIDENCE")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// `SERIN_DECISION_WINDOW`: the judge's window, the metrics' `interval` (default `2m`).
fn window() -> String {
    std::env::var("SERIN_DECISION_WINDOW").unwrap_or_else(|_| "2m".into())
}

fn canary(case: &Case) -> Value {
    serin_testkit::canary(&case.name)
        .deadline(240)
        .analysis(
            json!({"interval": "10s", "threshold": 2, "iterations": iterations(),
                         "metrics": case.mode.metrics()}),
        )
        .build()
}

/// How many primaries have a request rate in Prometheus.
async fn primaries_in_prometheus(prometheus: &str) -> usize {
    // The app's own histogram (the kubernetes provider's builtins), by the primary its pod
    // belongs to.
    let query = r#"count(count by (w) (label_replace(rate(http_request_duration_seconds_count{kubernetes_pod_name=~".+-primary-.+"}[1m]), "w", "$1", "kubernetes_pod_name", "(.+-primary)-.+")))"#;
    let response = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await;
    let Ok(body) = response else { return 0 };
    let Ok(body) = body.json::<Value>().await else {
        return 0;
    };
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `done` holds for every case's phase; the seconds each took to get there.
async fn wait_all(
    world: &World,
    cases: &[Case],
    timeout: Duration,
    done: impl Fn(Phase) -> bool,
) -> BTreeMap<String, (Phase, f64)> {
    // Every second: the times are reported in seconds.
    let poll = Poll::new(timeout).every(Duration::from_secs(1));
    let mut seen: BTreeMap<String, (Phase, f64)> = BTreeMap::new();
    while seen.len() < cases.len() && !poll.expired() {
        for (name, phase) in world.phases().await {
            if done(phase) {
                seen.entry(name)
                    .or_insert((phase, poll.elapsed().as_secs_f64()));
            }
        }
        poll.next().await;
    }
    seen
}

#[derive(Default)]
struct Tally {
    promoted: u32,
    rolled_back: u32,
    undecided: u32,
    seconds: Vec<f64>,
}

impl Tally {
    fn cell(&self) -> String {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        let median = s
            .get(s.len() / 2)
            .map_or("-".into(), |m| format!("{m:.0}s"));
        let undecided = match self.undecided {
            0 => String::new(),
            n => format!(" ({n}?)"),
        };
        format!("{}/{}{undecided} {median}", self.promoted, self.rolled_back)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn decision_benchmark() {
    let cases = cases();
    let seed: u64 = std::env::var("SERIN_DECISION_NOISE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // The kit's flags, quieter, and a client rate that never delays 180 releases.
    let mut args = serin_testkit::controller_args();
    if let Some(i) = args.iter().position(|a| a == "--log-level") {
        args[i + 1] = "info".into();
    }
    args.extend(["--kubeconfig-qps", "500", "--kubeconfig-burst", "1000"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .scenario(&scenario(&cases, seed))
        .prometheus()
        .controller_args(&args)
        .start()
        .await;
    println!(
        "{} releases ({} classes), noise seed {seed}, {} iterations of 10 s, judge window {}, \
         confidence {}",
        cases.len(),
        {
            let mut names: Vec<&str> = cases.iter().map(|c| c.class.name).collect();
            names.dedup();
            names.len()
        },
        iterations(),
        window(),
        confidence().map_or("default".into(), |c| c.to_string())
    );
    for case in &cases {
        world
            .apply(&world.deployments(), deployment(&case.name, "bench:1", 1))
            .await;
        world.apply(&world.canaries(), canary(case)).await;
    }
    let init = wait_all(&world, &cases, Duration::from_secs(300), |p| {
        p == Phase::Initialized
    })
    .await;
    assert_eq!(init.len(), cases.len(), "not all initialized",);
    // The primaries' series in Prometheus (a rate, so two scrapes each) before the releases
    // start.
    let prometheus = world.stack.prometheus_url().unwrap().to_string();
    wait_until(
        Duration::from_secs(120),
        "every primary's request rate in Prometheus",
        || async { primaries_in_prometheus(&prometheus).await >= cases.len() },
    )
    .await;
    let started = Instant::now();
    for case in &cases {
        let image = match case.class.rule {
            Some(_) => format!("bench:2-{}", case.class.name),
            None => "bench:2".to_string(),
        };
        world.set_image(&case.name, "app", &image).await;
    }
    let terminal = |p: Phase| matches!(p, Phase::Succeeded | Phase::Failed);
    let ended = wait_all(&world, &cases, Duration::from_secs(900), terminal).await;
    println!(
        "all decided or timed out after {:.0}s",
        started.elapsed().as_secs_f64()
    );
    report(&cases, &ended);
    false_alarms(&world, &cases, &ended).await;
}

/// The releases rolled back that should have been promoted (healthy, incident), with the
/// checks that failed them (the Canary's Warning events), so that a false alarm can be read.
async fn false_alarms(world: &World, cases: &[Case], ended: &BTreeMap<String, (Phase, f64)>) {
    for case in cases {
        let rolled_back = ended
            .get(&case.name)
            .is_some_and(|(p, _)| *p == Phase::Failed);
        if case.class.regression || !rolled_back {
            continue;
        }
        println!("\nfalse alarm: {} ({})", case.name, case.mode.title());
        let events = world.events(&case.name).await;
        for event in events.iter().filter(|e| e.starts_with("Warning")).take(4) {
            println!("  {event}");
        }
    }
}

/// The confusion table (promoted/rolled back, median seconds to the decision) and the goals.
fn report(cases: &[Case], ended: &BTreeMap<String, (Phase, f64)>) {
    let mut tallies: BTreeMap<(usize, u32, Mode), Tally> = BTreeMap::new();
    let mut goals: BTreeMap<(String, Mode), (u32, u32)> = BTreeMap::new();
    for case in cases {
        let class = CLASSES
            .iter()
            .position(|c| c.name == case.class.name)
            .unwrap();
        let tally = tallies.entry((class, case.rate, case.mode)).or_default();
        let outcome = ended.get(&case.name).map(|(p, _)| *p);
        match ended.get(&case.name) {
            Some((Phase::Succeeded, s)) => {
                tally.promoted += 1;
                tally.seconds.push(*s);
            }
            Some((_, s)) => {
                tally.rolled_back += 1;
                tally.seconds.push(*s);
            }
            None => tally.undecided += 1,
        }
        let goal = if case.class.silent {
            Some((
                "promotions without data".to_string(),
                outcome == Some(Phase::Succeeded),
            ))
        } else if case.class.large {
            Some((
                format!("large regressions caught at {} rps", case.rate),
                outcome == Some(Phase::Failed),
            ))
        } else if case.class.incident {
            Some((
                "incidents blamed on the canary".to_string(),
                outcome == Some(Phase::Failed),
            ))
        } else if !case.class.regression {
            Some((
                "healthy releases rolled back".to_string(),
                outcome == Some(Phase::Failed),
            ))
        } else {
            Some((
                "small regressions caught".to_string(),
                outcome == Some(Phase::Failed),
            ))
        };
        if let Some((goal, hit)) = goal {
            let g = goals.entry((goal, case.mode)).or_default();
            g.0 += u32::from(hit);
            g.1 += 1;
        }
    }
    let rates: Vec<u32> = {
        let mut r: Vec<u32> = cases.iter().map(|c| c.rate).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let mut header = "| class | truth |".to_string();
    let mut rule = "|---|---|".to_string();
    for rate in &rates {
        for mode in modes() {
            header.push_str(&format!(" {rate} rps {} |", mode.title()));
            rule.push_str("---|");
        }
    }
    println!(
        "\npromoted/rolled back (undecided?) median seconds from the new revision to the decision\n"
    );
    println!("{header}\n{rule}");
    for (i, class) in CLASSES.iter().enumerate() {
        if !cases.iter().any(|c| c.class.name == class.name) {
            continue;
        }
        let truth = if class.regression {
            "roll back"
        } else {
            "promote"
        };
        let mut row = format!("| {} | {truth} |", class.name);
        for rate in &rates {
            for mode in modes() {
                let cell = tallies
                    .get(&(i, *rate, mode))
                    .map_or("-".into(), Tally::cell);
                row.push_str(&format!(" {cell} |"));
            }
        }
        println!("{row}");
    }
    let titles: Vec<&str> = modes().into_iter().map(Mode::title).collect();
    println!(
        "\n| goal | {} |\n|---|{}",
        titles.join(" | "),
        "---|".repeat(titles.len())
    );
    let names: Vec<String> = {
        let mut n: Vec<String> = goals.keys().map(|(g, _)| g.clone()).collect();
        n.dedup();
        n
    };
    for goal in names {
        let cell = |mode| {
            goals
                .get(&(goal.clone(), mode))
                .map_or("-".into(), |(hit, n)| {
                    format!(
                        "{hit}/{n} ({:.0} %)",
                        100.0 * f64::from(*hit) / f64::from(*n)
                    )
                })
        };
        let cells: Vec<String> = modes().into_iter().map(cell).collect();
        println!("| {goal} | {} |", cells.join(" | "));
    }
}
