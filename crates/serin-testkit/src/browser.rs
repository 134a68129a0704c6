//! Debian's headless Chromium, driven through chromedriver's W3C WebDriver API, for the
//! dashboard's browser tests (`scripts/setup` installs both). A page is loaded, read, clicked
//! and photographed as a person's browser would.
//!
//! A dozen lines per WebDriver command on the kit's own HTTP client rather than a WebDriver
//! crate: the tests need eight JSON requests to a driver on loopback, and the crates for it
//! bring a TLS stack and a second protocol implementation into every test build.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::http::request;
use crate::wait::Poll;

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session; the driver (and its browser) stop when it is dropped.
pub struct Browser {
    driver: tokio::process::Child,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, a 1280x900 window
    /// and nothing that reaches outside this machine.
    pub async fn start() -> Browser {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (scripts/setup installs Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let poll = Poll::new(Duration::from_secs(30));
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(!poll.expired(), "chromedriver did not listen within 30 s");
            poll.next().await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let (code, body) = request("POST", &format!("{base}/session"), Some(&capabilities)).await;
        assert_eq!(code, 200, "a WebDriver session: {body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        let id = answer["value"]["sessionId"].as_str().expect("a session id");
        Browser {
            driver,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    /// A WebDriver command: its `value`, or a panic with the driver's error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let body = body.unwrap_or_else(|| json!({}));
        let body = (method == "POST").then_some(&body);
        let (code, text) = request(method, &url, body).await;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "{method} {path}: {text}");
        answer["value"].clone()
    }

    /// Loads `url` and waits for it.
    pub async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element `css` selects, now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let body = json!({"using": "css selector", "value": css});
        let url = format!("{}/elements", self.session);
        let (code, text) = request("POST", &url, Some(&body)).await;
        assert_eq!(code, 200, "find {css}: {text}");
        let answer: Value = serde_json::from_str(&text).ok()?;
        answer["value"].as_array()?.first()?[ELEMENT]
            .as_str()
            .map(String::from)
    }

    /// The first element `css` selects, once there is one (within `timeout`).
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let poll = Poll::new(timeout);
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(!poll.expired(), "no {css} within {timeout:?}");
            poll.next().await;
        }
    }

    /// An element's visible text.
    pub async fn text(&self, element: &str) -> String {
        let value = self
            .command("GET", &format!("/element/{element}/text"), None)
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Clicks the first element `css` selects, once there is one (within `timeout`). A live
    /// page may draw the element again between finding and clicking it (the driver then
    /// answers "stale element reference"): it is found again and clicked.
    pub async fn click_on(&self, css: &str, timeout: Duration) {
        let poll = Poll::new(timeout);
        loop {
            if let Some(element) = self.find(css).await {
                let url = format!("{}/element/{element}/click", self.session);
                let (code, text) = request("POST", &url, Some(&json!({}))).await;
                if code == 200 {
                    return;
                }
                assert!(
                    text.contains("stale element reference"),
                    "click {css}: {text}"
                );
            }
            assert!(!poll.expired(), "no {css} to click within {timeout:?}");
            poll.next().await;
        }
    }

    /// Accepts the page's `confirm()` once it shows (within `timeout`); its text.
    pub async fn accept_dialog(&self, timeout: Duration) -> String {
        let poll = Poll::new(timeout);
        loop {
            let url = format!("{}/alert/text", self.session);
            let (code, text) = request("GET", &url, None).await;
            if code == 200 {
                self.command("POST", "/alert/accept", None).await;
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                return answer["value"].as_str().unwrap_or_default().to_string();
            }
            assert!(!poll.expired(), "no dialog within {timeout:?}");
            poll.next().await;
        }
    }

    /// Runs `script` in the page (a function body; `return` gives its value).
    pub async fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.command("POST", "/execute/sync", Some(body)).await
    }

    /// A PNG of the window, written to `path` (for a reviewer to look at).
    pub async fn screenshot(&self, path: &Path) {
        self.write_png("/screenshot", path).await;
    }

    /// A PNG of one element (scrolled into view), written to `path`.
    pub async fn screenshot_of(&self, element: &str, path: &Path) {
        self.write_png(&format!("/element/{element}/screenshot"), path)
            .await;
    }

    async fn write_png(&self, command: &str, path: &Path) {
        let value = self.command("GET", command, None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshots' directory");
        }
        std::fs::write(path, png).expect("writing the screenshot");
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(mut self) {
        let (_, _) = request("DELETE", &self.session, None).await;
        let _ = self.driver.kill().await;
    }
}
