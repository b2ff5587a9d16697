//! An in-process sidecar on a free port, and small upstream servers to put behind its proxies.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use chaos::{Application, Config};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running sidecar; stopped (with all its proxies) when dropped.
pub struct Sidecar {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn sidecar() -> Sidecar {
    sidecar_with(None).await
}

pub async fn sidecar_with(token: Option<&str>) -> Sidecar {
    distlab_platform::telemetry::init_for_tests();
    let mut config = Config::local();
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.admin_token = token.map(str::to_owned);
    // Switches are not tested here: no config service behind this address.
    config.config_urls = "http://127.0.0.1:9".into();
    let app = Application::build(config).await.expect("sidecar starts");
    let addr = app.local_addr().expect("bound");
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    Sidecar {
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        stop,
    }
}

impl Sidecar {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.send(reqwest::Method::DELETE, path, None).await.0
    }

    /// Creates a proxy on a free port and returns the address it listens on.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr, protocol: &str) -> SocketAddr {
        let (status, body) = self
            .post(
                "/proxies",
                json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(), "protocol": protocol}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["listen"]
            .as_str()
            .expect("listen")
            .parse()
            .expect("address")
    }

    pub async fn toxic(&self, proxy: &str, toxic: Value) {
        let (status, body) = self.post(&format!("/proxies/{proxy}/toxics"), toxic).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Echoes every byte back.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Sends `bytes` to every client in one write, then closes.
pub async fn sender_server(bytes: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                // Wait for the client to close, so the close is the client's to see.
                let mut sink = [0u8; 64];
                let _ = stream.read(&mut sink).await;
            });
        }
    });
    addr
}

/// An HTTP server that answers `upstream <METHOD> <path>` to everything.
pub async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        format!("upstream {} {}", request.method(), request.uri().path())
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Writes `message` and reads until `len` bytes came back (or the connection ends).
pub async fn round_trip(
    stream: &mut TcpStream,
    message: &[u8],
    len: usize,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    read_n(stream, len).await
}

pub async fn read_n(stream: &mut TcpStream, len: usize) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < len {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

/// Reads to the end; the error if the connection was reset.
pub async fn read_to_end(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await?;
    Ok(got)
}

/// Whether nothing arrives on `stream` within `window` (a fault that holds data).
pub async fn silent_for(stream: &mut TcpStream, window: Duration) -> bool {
    let mut buf = [0u8; 16];
    tokio::time::timeout(window, stream.read(&mut buf))
        .await
        .is_err()
}

/// A loopback address with a port nobody listens on right now.
pub fn unused_local_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}
