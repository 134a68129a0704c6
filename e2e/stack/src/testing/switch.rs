//! A TCP proxy that can be switched off: an outage of whatever is behind it, as its clients
//! see one. Switched off, it refuses new connections (accepts and closes them at once) and
//! cuts the open ones, so pooled keep-alive connections fail too; switched on, it forwards
//! again.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Switch {
    /// `http://127.0.0.1:PORT`, to use in place of the target's address.
    pub url: String,
    up: Arc<watch::Sender<bool>>,
}

impl Switch {
    /// Starts forwarding to `target` (`host:port`), switched on.
    pub async fn start(target: &str) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(watch::channel(true).0);
        let target = target.to_string();
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target.clone(), state.subscribe()));
            }
        });
        Switch { url, up }
    }

    /// Switches the target off (`false`) or back on (`true`).
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn forward(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}
