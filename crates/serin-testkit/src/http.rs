//! A bare HTTP/1.1 client for tests (plain `http://` only): enough to call the controller's,
//! the load tester's and the dashboard's endpoints (server-sent events included) without
//! pulling an HTTP client into every test.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `method url` with an optional JSON body: `(status, body)`.
pub async fn request(method: &str, url: &str, body: Option<&serde_json::Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request_with(method, url, &[("content-type", "application/json")], &body).await
}

/// `method url` with these request headers (a `Host` among them replaces the URL's) and
/// body: `(status, body)`.
pub async fn request_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (host, path) = split(url);
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let request = format!("{head}content-length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.unwrap();
    // The body ends at its Content-Length when the answer gives one (some servers, such as
    // chromedriver, say `Connection: close` and keep the connection open), else at the close.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&raw);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// `(host:port, /path)` of an `http://` URL.
fn split(url: &str) -> (&str, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    rest.split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")))
}

/// A server-sent event stream (`text/event-stream`), read as the server sends it over one
/// connection: what a page's `EventSource` receives without reloading.
pub struct EventStream {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet decoded (chunked transfer encoding).
    raw: Vec<u8>,
    /// Decoded body not yet taken as messages.
    body: Vec<u8>,
}

impl EventStream {
    /// GETs `url` and reads the answer's head: it must be 200 and an event stream.
    pub async fn open(url: &str) -> EventStream {
        let (host, path) = split(url);
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = EventStream {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
        };
        let head = loop {
            if let Some(end) = find(&events.raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&events.raw[..end]).into_owned();
                events.raw.drain(..end + 4);
                break head;
            }
            events.read().await;
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
        assert!(
            head.to_lowercase().contains("text/event-stream"),
            "{url}: {head}"
        );
        assert!(
            head.to_lowercase().contains("transfer-encoding: chunked"),
            "{url}: {head}"
        );
        events
    }

    /// The data of the next message (comments skipped), waiting at most `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> String {
        match tokio::time::timeout(timeout, self.message()).await {
            Ok(message) => message,
            Err(_) => panic!("no server-sent event within {timeout:?}"),
        }
    }

    async fn message(&mut self) -> String {
        loop {
            self.decode();
            if let Some(end) = find(&self.body, b"\n\n") {
                let text = String::from_utf8_lossy(&self.body[..end]).into_owned();
                self.body.drain(..end + 2);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    return data.join("\n");
                }
                continue;
            }
            self.read().await;
        }
    }

    /// Moves every complete chunk from `raw` to `body`.
    fn decode(&mut self) {
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {size_text:?}"));
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            assert!(size > 0, "the server ended the event stream");
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    async fn read(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        let n = self.stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the event stream");
        self.raw.extend_from_slice(&buf[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
