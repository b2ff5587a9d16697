//! A running proxy: a listener whose every accepted connection is joined to a new connection to the
//! upstream, through two [`pump`]s (one per direction) that apply the link's faults.
//!
//! - Disabling a proxy (or deleting it) cancels its token: the listener closes (new connections are
//!   refused) and every open connection is closed.
//! - A connection accepted while a `hold` cut is in force waits, unconnected, until the cut heals; under a
//!   `reset` cut it is reset at once.
//! - A fault that resets (`reset_peer`, a `reset` cut) closes the client's socket with SO_LINGER 0, so the
//!   client gets a TCP RST ("connection reset by peer"), and the upstream's too.
//! - On a proxy with `"protocol": "http"` the upstream side of the pumps is an in-memory pipe to an HTTP/1.1
//!   relay ([`crate::http_proxy`]) that applies the HTTP toxics request by request; byte toxics and cuts
//!   still act on the client's bytes.
//! - On a proxy with `"protocol": "kafka"` the pumps copy bytes as for tcp, and read the Kafka frames on the
//!   way so that the broker's answers naming its advertised address name this proxy instead
//!   ([`crate::kafka`]). Toxics and cuts act exactly as on a tcp proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::faults::LinkFaults;
use crate::kafka::Rewrite;
use crate::partition::CutMode;
use crate::pump::{Context, Ending, Plain, Transform, pump};
use crate::toxic::Stream;

/// What a proxy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Bytes: any TCP protocol (PostgreSQL, Redis, Kafka, ZooKeeper).
    #[default]
    Tcp,
    /// HTTP/1.1: byte toxics plus the per-request `http_error` and `http_latency`.
    Http,
    /// Kafka: bytes like `tcp`, and the broker's advertised address in its metadata answers replaced by the
    /// proxy's, so the clients that bootstrap through the proxy stay on it.
    Kafka,
}

/// Connection ids, unique in the process (they name connections in the logs).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// What a proxy's connections share.
#[derive(Debug)]
pub struct Link {
    pub name: String,
    pub upstream: String,
    pub protocol: Protocol,
    pub faults: watch::Receiver<Arc<LinkFaults>>,
    /// A kafka proxy's rewrite of the advertised address (absent on other protocols).
    pub kafka: Option<Rewrite>,
    metrics: LinkMetrics,
}

#[derive(Debug)]
struct LinkMetrics {
    accepted: metrics::Counter,
    open: metrics::Gauge,
    upstream_bytes: metrics::Counter,
    downstream_bytes: metrics::Counter,
}

impl Link {
    pub fn new(
        name: &str,
        upstream: &str,
        protocol: Protocol,
        faults: watch::Receiver<Arc<LinkFaults>>,
        kafka: Option<Rewrite>,
    ) -> Self {
        let link = || [("link", name.to_owned())];
        let bytes = |stream: &str| {
            let labels = [("link", name.to_owned()), ("stream", stream.to_owned())];
            metrics::counter!("chaos_bytes_total", &labels)
        };
        Link {
            name: name.to_owned(),
            upstream: upstream.to_owned(),
            protocol,
            faults,
            kafka,
            metrics: LinkMetrics {
                accepted: metrics::counter!("chaos_connections_total", &link()),
                open: metrics::gauge!("chaos_open_connections", &link()),
                upstream_bytes: bytes("upstream"),
                downstream_bytes: bytes("downstream"),
            },
        }
    }
}

/// Accepts connections on `listener` until `stop` is cancelled.
pub async fn run(listener: TcpListener, link: Arc<Link>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                tokio::spawn(connection(client, peer, link.clone(), stop.child_token()));
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(link = %link.name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    link: Arc<Link>,
    stop: CancellationToken,
) {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    link.metrics.accepted.increment(1);
    link.metrics.open.increment(1.0);
    tracing::debug!(link = %link.name, connection = id, %peer, "accepted");
    let ending = through_cuts_then_relay(&mut client, &link, &stop, id).await;
    if ending == Ending::Reset {
        reset(&client);
    }
    link.metrics.open.decrement(1.0);
    tracing::debug!(link = %link.name, connection = id, ?ending, "closed");
}

async fn through_cuts_then_relay(
    client: &mut TcpStream,
    link: &Link,
    stop: &CancellationToken,
    id: u64,
) -> Ending {
    let mut faults = link.faults.clone();
    let mut held = false;
    loop {
        let cut = faults
            .borrow_and_update()
            .cut()
            .map(|cut| (cut.mode, cut.event.clone()));
        match cut {
            None => break,
            Some((CutMode::Reset, event)) => {
                event.hit_connection(id);
                return Ending::Reset;
            }
            Some((CutMode::Hold, event)) => {
                if !held {
                    event.hit_connection(id);
                    held = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ending::Stopped,
                    changed = faults.changed() => if changed.is_err() { return Ending::Stopped },
                }
            }
        }
    }
    let mut upstream = tokio::select! {
        _ = stop.cancelled() => return Ending::Stopped,
        connected = TcpStream::connect(&link.upstream) => match connected {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::info!(link = %link.name, connection = id, upstream = %link.upstream, %error,
                    "upstream refused; closing the client");
                return Ending::Error;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let ending = match (link.protocol, &link.kafka) {
        (Protocol::Kafka, Some(rewrite)) => {
            let (requests, responses) = crate::kafka::session(rewrite.clone(), &link.name, id);
            let (server_read, server_write) = upstream.split();
            let transforms = (requests, responses);
            relay(
                client,
                server_read,
                server_write,
                link,
                stop,
                id,
                transforms,
            )
            .await
        }
        (Protocol::Tcp | Protocol::Kafka, _) => {
            let (server_read, server_write) = upstream.split();
            relay(
                client,
                server_read,
                server_write,
                link,
                stop,
                id,
                (Plain, Plain),
            )
            .await
        }
        (Protocol::Http, _) => {
            let (near, far) = tokio::io::duplex(64 * 1024);
            let http = tokio::spawn(crate::http_proxy::serve(
                far,
                upstream,
                link.name.clone(),
                link.faults.clone(),
                id,
            ));
            let (server_read, server_write) = tokio::io::split(near);
            let ending = relay(
                client,
                server_read,
                server_write,
                link,
                stop,
                id,
                (Plain, Plain),
            )
            .await;
            http.abort();
            return ending;
        }
    };
    if ending == Ending::Reset {
        reset(&upstream);
    }
    ending
}

/// Runs both directions, each through its transform (client → server, server → client); a direction that
/// closes or resets the connection stops the other.
async fn relay<R, W, U, D>(
    client: &mut TcpStream,
    server_read: R,
    server_write: W,
    link: &Link,
    stop: &CancellationToken,
    id: u64,
    (upward, downward): (U, D),
) -> Ending
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    U: Transform,
    D: Transform,
{
    let (client_read, client_write) = client.split();
    let both = stop.child_token();
    let context = |stream, bytes: &metrics::Counter| Context {
        connection: id,
        stream,
        bytes: bytes.clone(),
    };
    let ends = |ending: Ending| {
        if matches!(ending, Ending::Close | Ending::Reset | Ending::Error) {
            both.cancel();
        }
        ending
    };
    let up = async {
        ends(
            pump(
                client_read,
                server_write,
                link.faults.clone(),
                both.clone(),
                context(Stream::Upstream, &link.metrics.upstream_bytes),
                upward,
            )
            .await,
        )
    };
    let down = async {
        ends(
            pump(
                server_read,
                client_write,
                link.faults.clone(),
                both.clone(),
                context(Stream::Downstream, &link.metrics.downstream_bytes),
                downward,
            )
            .await,
        )
    };
    let (up, down) = tokio::join!(up, down);
    [up, down]
        .into_iter()
        .find(|e| *e == Ending::Reset)
        .or([up, down].into_iter().find(|e| *e == Ending::Close))
        .unwrap_or(up)
}

/// Closes with a TCP RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
