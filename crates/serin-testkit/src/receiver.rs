//! An HTTP receiver for webhooks and alerts: answers every POST with a settable status code
//! (and, when set, only after a delay: a hanging receiver), recording each JSON body and the
//! request's headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A running receiver; it lives as long as the test's runtime.
pub struct Receiver {
    pub url: String,
    pub status: Arc<AtomicU16>,
    /// Milliseconds to wait before answering.
    pub delay_ms: Arc<AtomicU64>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    /// The header block of each request, lower-cased.
    pub headers: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            status: Arc::new(AtomicU16::new(status)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            bodies: Arc::default(),
            headers: Arc::default(),
        };
        let (status, delay, bodies, headers) = (
            receiver.status.clone(),
            receiver.delay_ms.clone(),
            receiver.bodies.clone(),
            receiver.headers.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (status, delay, bodies, headers) = (
                    status.clone(),
                    delay.clone(),
                    bodies.clone(),
                    headers.clone(),
                );
                tokio::spawn(async move {
                    let (head, body) = read_request(&mut socket).await;
                    headers.lock().await.push(head.to_lowercase());
                    if let Ok(v) = serde_json::from_slice(&body) {
                        bodies.lock().await.push(v);
                    }
                    let wait = delay.load(Ordering::SeqCst);
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await; // not a wait: a hanging receiver on purpose (delay_ms)
                    }
                    let code = status.load(Ordering::SeqCst);
                    let text = if code < 300 { "ok" } else { "not ready to go" };
                    let response = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        receiver
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub async fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().await.clone()
    }
}

/// The header block and the body (by content-length; small bodies, a few reads).
async fn read_request(socket: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(i) = text.find("\r\n\r\n") else {
            if n == 0 {
                return (text, Vec::new());
            }
            continue;
        };
        let len = text[..i]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if buf.len() >= i + 4 + len || n == 0 {
            let end = (i + 4 + len).min(buf.len());
            return (text[..i].to_string(), buf[i + 4..end].to_vec());
        }
    }
}
