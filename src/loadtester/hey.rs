//! A built-in `hey`: the load test command lines Flagger's docs put in `rollout` webhooks
//! (`hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/`) run in-process, so no `hey`
//! binary is needed. Flags: `-z` duration, `-n` requests (default 200 without `-z`), `-c`
//! workers (default 50), `-q` requests per second per worker (0: no limit), `-m` method,
//! `-H` header (repeatable), `-d` body, `-t` timeout in seconds (default 20), `-T` content
//! type; other flags are refused, so a command that would not run as written does not run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::duration::parse_go_duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Hey {
    pub url: String,
    pub duration: Option<Duration>,
    pub requests: u64,
    pub workers: u64,
    pub rate: f64,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout: Duration,
}

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: AtomicU64,
    pub errors: AtomicU64,
}

/// Parses a `hey ...` command line; `None` when it is not one.
pub fn parse(cmd: &str) -> Option<Result<Hey, String>> {
    let words = shell_words(cmd);
    let (program, args) = words.split_first()?;
    if program != "hey" && !program.ends_with("/hey") {
        return None;
    }
    Some(parse_args(args))
}

fn parse_args(args: &[String]) -> Result<Hey, String> {
    let mut hey = Hey {
        url: String::new(),
        duration: None,
        requests: 200,
        workers: 50,
        rate: 0.0,
        method: "GET".into(),
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(20),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with('-') {
            hey.url = arg.clone();
            continue;
        }
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("hey: {arg} needs a value"))
        };
        let number = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("hey: {arg} {v}: not a number"))
        };
        match arg.as_str() {
            "-z" => {
                let v = value()?;
                hey.duration =
                    Some(parse_go_duration(&v).map_err(|e| format!("hey: -z {v}: {e}"))?);
            }
            "-n" => hey.requests = number(value()?)? as u64,
            "-c" => hey.workers = (number(value()?)? as u64).max(1),
            "-q" => hey.rate = number(value()?)?,
            "-t" => hey.timeout = Duration::from_secs_f64(number(value()?)?.max(0.001)),
            "-m" => hey.method = value()?.to_uppercase(),
            "-d" => hey.body = Some(value()?),
            "-T" => hey.headers.push(("content-type".into(), value()?)),
            "-H" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .ok_or(format!("hey: -H {v}: want `Name: value`"))?;
                hey.headers.push((k.trim().into(), val.trim().into()));
            }
            other => {
                return Err(format!(
                    "hey: flag {other} is not supported by serin's built-in hey"
                ));
            }
        }
    }
    if hey.url.is_empty() {
        return Err("hey: no URL".into());
    }
    Ok(hey)
}

/// Words of a command line, with single and double quotes.
fn shell_words(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in cmd.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Runs the load: `workers` loops, each at most `rate` requests per second, until the
/// duration is over or `requests` are sent.
pub async fn run(hey: Hey, http: reqwest::Client) -> Arc<Report> {
    let report = Arc::new(Report::default());
    let deadline = hey.duration.map(|d| Instant::now() + d);
    let budget = Arc::new(AtomicU64::new(if deadline.is_some() {
        u64::MAX
    } else {
        hey.requests
    }));
    let hey = Arc::new(hey);
    let mut workers = Vec::new();
    for _ in 0..hey.workers {
        let (hey, http, report, budget) =
            (hey.clone(), http.clone(), report.clone(), budget.clone());
        workers.push(tokio::spawn(async move {
            let pause = (hey.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / hey.rate));
            let method =
                reqwest::Method::from_bytes(hey.method.as_bytes()).unwrap_or(reqwest::Method::GET);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                if budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                    .is_err()
                {
                    return;
                }
                let started = Instant::now();
                let mut request = http.request(method.clone(), &hey.url).timeout(hey.timeout);
                for (k, v) in &hey.headers {
                    request = request.header(k, v);
                }
                if let Some(body) = &hey.body {
                    request = request.body(body.clone());
                }
                report.sent.fetch_add(1, Ordering::Relaxed);
                match request.send().await {
                    Ok(r) if !r.status().is_server_error() => {}
                    _ => {
                        report.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause.saturating_sub(started.elapsed())).await;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaggers_documented_command_lines_parse() {
        let hey = parse("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")
            .unwrap()
            .unwrap();
        assert_eq!(hey.duration, Some(Duration::from_secs(60)));
        assert_eq!((hey.rate, hey.workers), (10.0, 2));
        assert_eq!(hey.url, "http://podinfo-canary.test:9898/");
        let post = parse(
            r#"hey -z 30s -m POST -H "Content-Type: application/json" -d '{"a": 1}' http://x/"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(post.method, "POST");
        assert_eq!(
            post.headers,
            [("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(post.body.as_deref(), Some(r#"{"a": 1}"#));
        assert!(parse("curl http://x/").is_none());
        assert!(parse("hey -z 1m").unwrap().unwrap_err().contains("no URL"));
        assert!(
            parse("hey -cpus 2 http://x/")
                .unwrap()
                .unwrap_err()
                .contains("-cpus")
        );
    }
}
