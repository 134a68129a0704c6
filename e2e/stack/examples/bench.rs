//! Measures what the emulator sustains: 10,000 objects, 50 open watches, a mixed
//! get/patch/list load from 64 keep-alive connections.
//!
//! `cargo run -p serin-stack --release --example bench [-- SECONDS]`
//!
//! The load generator runs in the same process, so the RSS printed covers both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serin_stack::{Stack, StackConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NAMESPACES: usize = 10;
const CONFIGMAPS: usize = 9_800;
const DEPLOYMENTS: usize = 200;
const WATCHES: usize = 50;
const WORKERS: usize = 64;

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(url: &str) -> Conn {
        let host = url.trim_start_matches("http://").to_string();
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        Conn { sender, host }
    }

    async fn call(&mut self, method: &str, path: &str, ct: &str, body: String) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let stack = Stack::start(StackConfig {
        admin_port: None,
        ..StackConfig::default()
    })
    .await
    .unwrap();
    let url = stack.url().to_string();

    // Populate.
    let started = Instant::now();
    let mut setup = Conn::open(&url).await;
    for n in 0..NAMESPACES {
        let body = format!(r#"{{"metadata":{{"name":"ns{n}"}}}}"#);
        assert_eq!(
            setup
                .call("POST", "/api/v1/namespaces", "application/json", body)
                .await
                .0,
            201
        );
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut fill = Vec::new();
    for _ in 0..16 {
        let (url, next) = (url.clone(), next.clone());
        fill.push(tokio::spawn(async move {
            let mut c = Conn::open(&url).await;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= CONFIGMAPS + DEPLOYMENTS {
                    break;
                }
                let ns = i % NAMESPACES;
                let (path, body) = if i < CONFIGMAPS {
                    (
                        format!("/api/v1/namespaces/ns{ns}/configmaps"),
                        format!(r#"{{"metadata":{{"name":"cm{i}","labels":{{"app":"a{}","n":"{i}"}}}},"data":{{"key":"value-{i}","other":"some longer value to make the object a realistic size"}}}}"#, i % 20),
                    )
                } else {
                    (
                        format!("/apis/apps/v1/namespaces/ns{ns}/deployments"),
                        format!(r#"{{"metadata":{{"name":"d{i}","labels":{{"app":"d{i}"}}}},"spec":{{"replicas":2,"selector":{{"matchLabels":{{"app":"d{i}"}}}},"template":{{"metadata":{{"labels":{{"app":"d{i}"}}}},"spec":{{"containers":[{{"name":"app","image":"podinfo:6.0.0"}}]}}}}}}}}"#),
                    )
                };
                let (code, _) = c.call("POST", &path, "application/json", body).await;
                assert_eq!(code, 201);
            }
        }));
    }
    for f in fill {
        f.await.unwrap();
    }
    let populate = started.elapsed();
    let objects = CONFIGMAPS + DEPLOYMENTS + NAMESPACES;
    println!(
        "populated {objects} objects in {:.2}s ({:.0} creates/s)",
        populate.as_secs_f64(),
        objects as f64 / populate.as_secs_f64()
    );
    let rss_loaded = rss_kib("VmRSS:");

    // Open watches from the current resourceVersion (as a client does after listing):
    // half per namespace, half cluster-wide with a label selector.
    let (_, list) = setup
        .call(
            "GET",
            "/api/v1/configmaps?limit=1",
            "application/json",
            String::new(),
        )
        .await;
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let events = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for w in 0..WATCHES {
        let (url, events) = (url.clone(), events.clone());
        let path = if w % 2 == 0 {
            format!(
                "/api/v1/namespaces/ns{}/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion={rv}",
                w % NAMESPACES
            )
        } else {
            format!(
                "/api/v1/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&labelSelector=app%3Da{}",
                w % 20
            )
        };
        watchers.push(tokio::spawn(async move {
            let host = url.trim_start_matches("http://").to_string();
            let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
            let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::builder()
                .uri(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let mut body = sender.send_request(req).await.unwrap().into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    events.fetch_add(
                        data.iter().filter(|b| **b == b'\n').count() as u64,
                        Ordering::Relaxed,
                    );
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_before = events.load(Ordering::Relaxed);

    // Mixed load: 80% get, 15% merge patch, 5% list of one app label in a namespace.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut c = Conn::open(&url).await;
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut rng = fastrand::Rng::with_seed(w as u64);
            while Instant::now() < deadline {
                let i = rng.usize(..CONFIGMAPS);
                let ns = i % NAMESPACES;
                let roll = rng.u32(..100);
                let t = Instant::now();
                let (code, _) = if roll < 80 {
                    c.call(
                        "GET",
                        &format!("/api/v1/namespaces/ns{ns}/configmaps/cm{i}"),
                        "application/json",
                        String::new(),
                    )
                    .await
                } else if roll < 95 {
                    let body = format!(r#"{{"data":{{"key":"v{}"}}}}"#, rng.u32(..));
                    c.call(
                        "PATCH",
                        &format!("/api/v1/namespaces/ns{ns}/configmaps/cm{i}"),
                        "application/merge-patch+json",
                        body,
                    )
                    .await
                } else {
                    let path = format!(
                        "/api/v1/namespaces/ns{ns}/configmaps?labelSelector=app%3Da{}&limit=100",
                        rng.usize(..20)
                    );
                    c.call("GET", &path, "application/json", String::new())
                        .await
                };
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if code >= 300 {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let load_start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = load_start.elapsed().as_secs_f64();
    all.sort_unstable();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = events.load(Ordering::Relaxed) - events_before;
    println!(
        "load: {} requests in {:.1}s with {WATCHES} open watches and {WORKERS} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    );
    println!("watch events delivered during the load: {delivered}");
    println!(
        "rss: {} MiB after populating, {} MiB now, peak {} MiB (stack and load generator in one process)",
        rss_loaded / 1024,
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    for w in watchers {
        w.abort();
    }
    stack.shutdown().await;
}
