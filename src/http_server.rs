//! What serin's two HTTP servers share (the controller's `/metrics`, `/healthz` and `/readyz`,
//! and `serin loadtester`): an accept loop that backs off when `accept()` fails, and HTTP/1.1
//! on each connection, routed by an axum [`Router`], with a bound on the time a client takes
//! to send a request's headers.
//!
//! Not `axum::serve`: it has no header read timeout, so a client that opens connections and
//! never finishes a request would hold each one, with its task and buffers, for as long as it
//! likes. hyper's HTTP/1 connection has that timeout, and serves the Router as its service.
//! HTTP/1 only: the clients of both servers (Prometheus' scrapes, the kubelet's probes,
//! Flagger's webhooks) speak it, and HTTP/2 would need bounds of its own.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The longest a client may take to send a request's headers; a connection that sends
/// nothing is closed after it too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where connections come from: a TCP listener, or in tests one whose `accept` fails.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The pause after a failed `accept()`: a failure that repeats at once (EMFILE when the
/// process is out of file descriptors) would otherwise spin a core and flood the log.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// The next connection of `listener`. A failed `accept()` is logged and retried after the
/// backoff's pause; a success resets the backoff. `server` names the server in the log.
pub async fn accept<L: Listener>(
    listener: &mut L,
    backoff: &mut Backoff,
    server: &str,
) -> L::Stream {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                backoff.reset();
                return stream;
            }
            Err(e) => {
                let pause = backoff.pause();
                tracing::warn!(server, error = %e, ?pause, "cannot accept a connection");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Serves every connection of `listener` with `router`, each in its own task, until the
/// process ends.
pub async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    server: &'static str,
) {
    let mut backoff = Backoff::new();
    loop {
        let stream = accept(&mut listener, &mut backoff, server).await;
        let connection =
            serve_connection(stream, router.clone(), header_read_timeout, true, server);
        tokio::spawn(connection);
    }
}

/// Serves HTTP/1.1 on one connection with `router` until either side closes it. A client
/// that takes longer than `header_read_timeout` to send a request's headers is disconnected;
/// without `keep_alive` the connection closes after its first answer.
pub async fn serve_connection<S>(
    stream: S,
    router: Router,
    header_read_timeout: Duration,
    keep_alive: bool,
    server: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(keep_alive);
    let service = TowerToHyperService::new(router);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        // A client gone mid-request, or timed out: theirs to know, not the operator's.
        tracing::debug!(server, "connection: {e}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `request` as it is and reads the answer until the server closes the connection,
    /// failing the test if that takes longer than 10 s.
    pub(crate) async fn exchange(stream: &mut TcpStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
            Err(_) => panic!("no end of answer to {request:?} within 10 s"),
        }
    }

    async fn serving(header_read_timeout: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hello" }));
        tokio::spawn(serve(listener, router, header_read_timeout, "test"));
        address
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let timeout = Duration::from_millis(300);
        let address = serving(timeout).await;
        for partial in ["", "GET / HT", "GET / HTTP/1.1\r\nhost: x\r\n"] {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let started = std::time::Instant::now();
            // `exchange` returns at the server's close (or fails the test after 10 s).
            let answer = exchange(&mut stream, partial).await;
            assert!(!answer.contains("hello"), "{partial:?}: {answer}");
            // Closed by the timeout, not at once (the server's clock starts at its accept,
            // which may come a moment before `started`).
            assert!(
                started.elapsed() >= timeout / 2,
                "{partial:?}: closed early"
            );
        }
        // A whole request is answered, and the connection kept for the next one.
        let mut stream = TcpStream::connect(address).await.unwrap();
        let answer = exchange(
            &mut stream,
            "GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(answer.matches("hello").count(), 2, "{answer}");
    }

    /// A listener whose `accept` always fails, as with EMFILE, recording when it was called.
    pub(crate) struct Failing {
        calls: Vec<std::time::Instant>,
        done: Option<tokio::sync::oneshot::Sender<Vec<std::time::Instant>>>,
    }

    impl Failing {
        /// The listener, and the times of its first six calls once they were made.
        pub(crate) fn new() -> (
            Failing,
            tokio::sync::oneshot::Receiver<Vec<std::time::Instant>>,
        ) {
            let (done, calls) = tokio::sync::oneshot::channel();
            let failing = Failing {
                calls: Vec::new(),
                done: Some(done),
            };
            (failing, calls)
        }
    }

    impl Listener for Failing {
        type Stream = TcpStream;
        async fn accept(&mut self) -> std::io::Result<TcpStream> {
            self.calls.push(std::time::Instant::now());
            if self.calls.len() == 6 {
                if let Some(done) = self.done.take() {
                    let _ = done.send(self.calls.clone());
                }
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::other("too many open files"))
        }
    }

    /// Waits for the six calls of a `Failing` listener and checks they were paused apart:
    /// 5, 10, 20, 40 and 80 ms; a spinning loop takes microseconds.
    pub(crate) async fn assert_backed_off(
        calls: tokio::sync::oneshot::Receiver<Vec<std::time::Instant>>,
    ) {
        let calls = tokio::time::timeout(Duration::from_secs(10), calls)
            .await
            .unwrap()
            .unwrap();
        let elapsed = calls[5] - calls[0];
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    }

    #[tokio::test]
    async fn failing_accepts_back_off_instead_of_spinning() {
        let (failing, calls) = Failing::new();
        let server = tokio::spawn(serve(failing, Router::new(), HEADER_READ_TIMEOUT, "test"));
        assert_backed_off(calls).await;
        server.abort();

        let mut backoff = Backoff::new();
        let pauses: Vec<_> = (0..10).map(|_| backoff.pause()).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[9], Backoff::MAX);
        backoff.reset();
        assert_eq!(backoff.pause(), Backoff::FIRST);
    }
}
