//! A built-in `hey`: the load test command lines Flagger's docs put in `rollout` webhooks
//! (`hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/`) run in-process, so no `hey`
//! binary is needed. Flags: `-z` duration, `-n` requests (default 200 without `-z`), `-c`
//! workers (default 50), `-q` requests per second per worker (0: no limit), `-m` method,
//! `-H` header (repeatable), `-d` body, `-t` timeout in seconds (default 20), `-T` content
//! type, `-host` the Host header; other flags are refused, so a command that would not run as written does not run.
//! Every value is bounded (`-z` at most 1h, `-t` 300 s, `-c` 1000, `-n` 10,000,000, `-q`
//! 0.001 to 1,000,000 or 0): a command line comes from a webhook body, and an out-of-range
//! value is refused with the flag and the range rather than allowed to panic or exhaust.

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

/// The most a hey flag may ask for. A load test comes from a webhook body anyone who reaches
/// the load tester can send, so every value is checked before it becomes a `Duration` or a
/// number of tasks (`Duration::from_secs_f64` panics on `inf`, NaN and overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// `-t`, in seconds.
pub const MAX_TIMEOUT_SECS: f64 = 300.0;
pub const MAX_WORKERS: u64 = 1000;
pub const MAX_REQUESTS: u64 = 10_000_000;
/// `-q`, requests per second per worker: below this the pause between two requests is longer
/// than any load test may last.
pub const MIN_RATE: f64 = 0.001;
pub const MAX_RATE: f64 = 1_000_000.0;

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
            if !hey.url.is_empty() {
                return Err(format!("hey: more than one URL: {} and {arg}", hey.url));
            }
            hey.url = url(arg)?;
            continue;
        }
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("hey: {arg} needs a value"))
        };
        match arg.as_str() {
            "-z" => hey.duration = duration(&value()?)?,
            "-n" => hey.requests = whole("-n", &value()?, 1, MAX_REQUESTS)?,
            "-c" => hey.workers = whole("-c", &value()?, 1, MAX_WORKERS)?,
            "-q" => hey.rate = rate(&value()?)?,
            "-t" => hey.timeout = timeout(&value()?)?,
            "-m" => hey.method = method(&value()?)?,
            "-d" => hey.body = Some(value()?),
            "-T" => hey.headers.push(header("-T", "content-type", &value()?)?),
            // Flagger's examples through an ingress: `-host app.example.com`.
            "-host" => hey.headers.push(header("-host", "host", &value()?)?),
            "-H" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .ok_or(format!("hey: -H {v}: want `Name: value`"))?;
                hey.headers.push(header("-H", k.trim(), val.trim())?);
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

/// A finite number, or an error naming the flag and what it accepts.
fn number(flag: &str, v: &str, want: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("hey: {flag} {v}: not a finite number; want {want}"))
}

/// `-n`, `-c`: a whole number within `min..=max` (hey's own flags are integers).
fn whole(flag: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    let want = format!("a whole number from {min} to {max}");
    let n = number(flag, v, &want)?;
    // Both bounds are far below 2^53, so the comparison and the cast are exact.
    if n.fract() != 0.0 || n < min as f64 || n > max as f64 {
        return Err(format!("hey: {flag} {v}: want {want}"));
    }
    Ok(n as u64)
}

/// `-q`: 0 is hey's "no limit".
fn rate(v: &str) -> Result<f64, String> {
    let want =
        format!("requests per second per worker from {MIN_RATE} to {MAX_RATE}, or 0 for no limit");
    let n = number("-q", v, &want)?;
    if n != 0.0 && !(MIN_RATE..=MAX_RATE).contains(&n) {
        return Err(format!("hey: -q {v}: want {want}"));
    }
    Ok(n)
}

/// `-t`, in seconds: hey's 0 (no timeout) is the longest this hey allows.
fn timeout(v: &str) -> Result<Duration, String> {
    let want = format!("seconds from more than 0 to {MAX_TIMEOUT_SECS}, or 0 for the longest");
    let n = number("-t", v, &want)?;
    if n == 0.0 {
        return Ok(Duration::from_secs_f64(MAX_TIMEOUT_SECS));
    }
    if !(n > 0.0 && n <= MAX_TIMEOUT_SECS) {
        return Err(format!("hey: -t {v}: want {want}"));
    }
    Duration::try_from_secs_f64(n).map_err(|e| format!("hey: -t {v}: {e}; want {want}"))
}

/// `-z`: Go's duration syntax, at most [`MAX_DURATION`]; 0 is hey's "not set".
fn duration(v: &str) -> Result<Option<Duration>, String> {
    let want = "a duration of at most 1h, e.g. 30s or 5m";
    let d = parse_go_duration(v).map_err(|e| format!("hey: -z {v}: {e}; want {want}"))?;
    if d > MAX_DURATION {
        return Err(format!("hey: -z {v}: want {want}"));
    }
    Ok((!d.is_zero()).then_some(d))
}

fn method(v: &str) -> Result<String, String> {
    let upper = v.to_uppercase();
    reqwest::Method::from_bytes(upper.as_bytes())
        .map(|_| upper.clone())
        .map_err(|_| format!("hey: -m {v}: not an HTTP method, e.g. GET or POST"))
}

/// Checked here so that a request that could never be sent is refused at once.
fn header(flag: &str, name: &str, value: &str) -> Result<(String, String), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("hey: {flag}: {name:?} is not a header name"))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| format!("hey: {flag}: the value of {name} is not a header value"))?;
    Ok((name.to_string(), value.to_string()))
}

fn url(v: &str) -> Result<String, String> {
    match reqwest::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(v.to_string()),
        Ok(u) => Err(format!(
            "hey: {v}: scheme {} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!("hey: {v}: not a URL: {e}")),
    }
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
    // `parse` bounds both; checked anyway, as `Hey`'s fields are public.
    let deadline = hey.duration.and_then(|d| Instant::now().checked_add(d));
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
            // A pause too long for a `Duration` is longer than any load test anyway.
            let pause = (hey.rate > 0.0)
                .then(|| Duration::try_from_secs_f64(1.0 / hey.rate).unwrap_or(MAX_DURATION));
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

    fn refused(line: &str) -> String {
        match parse(line) {
            Some(Err(e)) => e,
            other => panic!("{line}: want an error, got {other:?}"),
        }
    }

    /// Each of these panicked (`-t`: `Duration::from_secs_f64`; `-q`: the pause between
    /// requests when the load ran) or asked for unbounded work: now each is refused with its
    /// flag and the accepted range, which the load tester answers as 400.
    #[test]
    fn hostile_values_are_refused_with_the_flag_and_its_range() {
        for (flag, value, range) in [
            ("-t", "inf", "to 300"),
            ("-t", "NaN", "to 300"),
            ("-t", "-1", "to 300"),
            ("-t", "1e300", "to 300"),
            ("-t", "301", "to 300"),
            ("-q", "1e-300", "from 0.001"),
            ("-q", "inf", "from 0.001"),
            ("-q", "nan", "from 0.001"),
            ("-q", "-5", "from 0.001"),
            ("-q", "1e300", "to 1000000"),
            ("-c", "1e300", "from 1 to 1000"),
            ("-c", "1001", "from 1 to 1000"),
            ("-c", "0", "from 1 to 1000"),
            ("-c", "-3", "from 1 to 1000"),
            ("-c", "2.5", "from 1 to 1000"),
            ("-c", "inf", "from 1 to 1000"),
            ("-n", "18446744073709551616", "from 1 to 10000000"),
            ("-n", "10000001", "from 1 to 10000000"),
            ("-n", "nan", "from 1 to 10000000"),
            ("-n", "-1", "from 1 to 10000000"),
            ("-z", "2h", "at most 1h"),
            ("-z", "-1s", "at most 1h"),
            ("-z", "99999999999999999999h", "at most 1h"),
            ("-z", "inf", "at most 1h"),
        ] {
            let line = format!("hey {flag} {value} http://127.0.0.1:1/");
            let e = refused(&line);
            assert!(
                e.contains(&format!("{flag} {value}")) && e.contains(range),
                "{line}: {e}"
            );
        }
        assert!(refused("hey -m 'GE T' http://127.0.0.1/").contains("-m"));
        assert!(refused("hey -H 'Bad Name: x' http://127.0.0.1/").contains("-H"));
        assert!(refused("hey -H 'X: a\nb' http://127.0.0.1/").contains("-H"));
        assert!(refused("hey file:///etc/passwd").contains("scheme file"));
        assert!(refused("hey not-a-url").contains("not a URL"));
        assert!(refused("hey http://127.0.0.1/a http://127.0.0.1/b").contains("more than one URL"));
        assert!(refused("hey -c").contains("-c needs a value"));
    }

    #[test]
    fn the_bounds_themselves_and_heys_zeros_are_accepted() {
        let hey = parse("hey -z 1h -t 300 -c 1000 -q 0.001 http://127.0.0.1/")
            .unwrap()
            .unwrap();
        assert_eq!(hey.duration, Some(MAX_DURATION));
        assert_eq!(hey.timeout, Duration::from_secs(300));
        assert_eq!((hey.workers, hey.rate), (1000, 0.001));
        let hey = parse("hey -n 10000000 -q 1000000 -t 0.5 http://127.0.0.1/")
            .unwrap()
            .unwrap();
        assert_eq!((hey.requests, hey.rate), (MAX_REQUESTS, MAX_RATE));
        assert_eq!(hey.timeout, Duration::from_millis(500));
        // hey's 0s: no -z, no rate limit, and (bounded here) no timeout.
        let hey = parse("hey -z 0 -q 0 -t 0 -m post http://127.0.0.1/")
            .unwrap()
            .unwrap();
        assert_eq!(hey.duration, None);
        assert_eq!(hey.rate, 0.0);
        assert_eq!(hey.timeout, Duration::from_secs(300));
        assert_eq!(hey.method, "POST");
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Whatever value follows a flag, parsing answers (an error or a load within the
        /// bounds) and never panics.
        #[test]
        fn no_flag_value_panics(
            flag in proptest::sample::select(vec!["-z", "-n", "-c", "-q", "-t", "-m", "-H", "-T", "-d"]),
            value in proptest::prop_oneof![
                proptest::num::f64::ANY.prop_map(|f| f.to_string()),
                proptest::num::i64::ANY.prop_map(|i| i.to_string()),
                "[0-9a-zA-Z.:+ -]{0,24}",
            ],
        ) {
            if let Some(Ok(hey)) = parse(&format!("hey {flag} '{value}' http://127.0.0.1/")) {
                proptest::prop_assert!(hey.duration.is_none_or(|d| d <= MAX_DURATION));
                proptest::prop_assert!(hey.timeout <= Duration::from_secs(300));
                proptest::prop_assert!((1..=MAX_WORKERS).contains(&hey.workers));
                proptest::prop_assert!((1..=MAX_REQUESTS).contains(&hey.requests));
                proptest::prop_assert!(hey.rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&hey.rate));
            }
        }
    }

    #[tokio::test]
    async fn a_load_sends_its_method_headers_and_host_to_the_url() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).to_lowercase()
        });
        let line = format!("hey -n 1 -c 1 -m delete -host app.example.com -H 'X-Test: 1' {url}");
        let hey = parse(&line).unwrap().unwrap();
        let report = run(hey, crate::loadtester::test_client()).await;
        assert_eq!(report.sent.load(Ordering::Relaxed), 1);
        assert_eq!(report.errors.load(Ordering::Relaxed), 0);
        let request = server.await.unwrap();
        assert!(request.starts_with("delete / http/1.1"), "{request}");
        assert!(request.contains("host: app.example.com\r\n"), "{request}");
        assert!(request.contains("x-test: 1\r\n"), "{request}");
    }
}
