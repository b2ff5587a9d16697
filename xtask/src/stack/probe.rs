//! Readiness probes: each exercises the part itself, over its own protocol.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use distlab_messaging::kafka;

use crate::install;

use super::parts::{Kind, Part};
use super::{KAFKA_PROBE_TIMEOUT, Stack, block_on};

impl Stack {
    /// Whether the part does its job, and if not, why. Each probe exercises the part itself: PostgreSQL
    /// accepts connections, Redis answers PING, ZooKeeper `ruok`, the broker stores a record and serves it
    /// back, a service's `/readyz` is 200 (its own dependencies included), a config node is alive.
    pub(super) fn check(&self, part: &Part) -> anyhow::Result<()> {
        match part.kind {
            Kind::Postgres { .. } => {
                let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
                let ready = Command::new(bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &part.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                anyhow::ensure!(ready, "pg_isready: not accepting connections");
                Ok(())
            }
            Kind::Redis => {
                let answer = tcp_exchange(
                    part.port,
                    b"PING\r\n",
                    |answer| answer.ends_with(b"\r\n"),
                    Duration::from_secs(1),
                )
                .context("no answer to PING")?;
                anyhow::ensure!(answer.starts_with("+PONG"), "PING answered {answer:?}");
                Ok(())
            }
            Kind::ZooKeeper => {
                let answer = tcp_exchange(part.port, b"ruok", |_| false, Duration::from_secs(1))
                    .context("no answer to ruok")?;
                anyhow::ensure!(answer == "imok", "ruok answered {answer:?}");
                Ok(())
            }
            Kind::Kafka => {
                anyhow::ensure!(port_open(part.port), "not listening");
                block_on(kafka::round_trip(
                    &format!("127.0.0.1:{}", part.port),
                    KAFKA_PROBE_TIMEOUT,
                ))
                .map(drop)
                .context("a produce and fetch round trip failed")
            }
            Kind::Service { .. } | Kind::Chaos => {
                let (status, body) =
                    http_get(part.port, "/readyz").context("/readyz: no answer")?;
                anyhow::ensure!(status == 200, "/readyz answered {status}: {body}");
                Ok(())
            }
            // Alive; whether the cluster has a leader is `after_ready`'s and `status`'s business.
            Kind::ConfigNode { .. } => {
                let (status, _) = http_get(part.port, "/healthz").context("/healthz: no answer")?;
                anyhow::ensure!(status == 200, "/healthz answered {status}");
                Ok(())
            }
        }
    }
}

pub(super) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Sends `request` and returns what comes back before `complete` says it is all there, the peer closes or
/// `wait` passes (at most 16 KiB).
pub(super) fn tcp_exchange(
    port: u16,
    request: &[u8],
    complete: fn(&[u8]) -> bool,
    wait: Duration,
) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while answer.len() < 16 * 1024 {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if complete(&answer) {
                    break;
                }
            }
            Err(_) if !answer.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&answer).trim().to_owned())
}

/// The status code and body of `GET path` on the port, if it answers HTTP.
pub(super) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    // A service's /readyz asks its own dependencies (Kafka with a 1.5 s deadline) before it answers.
    let response = tcp_exchange(port, request.as_bytes(), |_| false, Duration::from_secs(3))?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body.trim());
    Some((status, body.to_owned()))
}
