//! A TCP relay in front of a Kafka broker that reads the request headers going through it, so a test can act
//! at the moment a given kind of request reaches the broker — for example kill the broker while a produce,
//! a fetch or an offset commit is in flight.
//!
//! Kafka frames every request as a 4-byte big-endian length followed by the request, whose first two bytes
//! are the API key (0 produce, 1 fetch, 8 offset commit, …). The tap forwards each client's bytes frame by
//! frame and the broker's answers unchanged. The broker must advertise the tap's address (see
//! [`crate::PrivateBroker::start_tapped`]), or clients would bypass it after their first metadata request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Kafka API keys a test may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKey {
    Produce,
    Fetch,
    OffsetCommit,
}

impl ApiKey {
    /// The key's number on the wire.
    pub fn code(self) -> i16 {
        match self {
            Self::Produce => 0,
            Self::Fetch => 1,
            Self::OffsetCommit => 8,
        }
    }
}

type Waiters = Arc<Mutex<Vec<(i16, oneshot::Sender<()>)>>>;

/// The relay. Dropping it stops accepting connections (open ones end with their broker connection).
#[derive(Debug)]
pub struct KafkaTap {
    addr: SocketAddr,
    waiters: Waiters,
    accept: JoinHandle<()>,
}

impl KafkaTap {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Kafka tap");
        let addr = listener.local_addr().expect("the tap's address");
        let waiters: Waiters = Arc::default();
        let accept = tokio::spawn({
            let waiters = waiters.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream, waiters.clone()));
                }
            }
        });
        Self {
            addr,
            waiters,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves once the next request of kind `api` has been passed on to the broker. The broker's answers
    /// on that connection are held back from then on, so its client cannot learn the request's outcome.
    pub fn next_request(&self, api: ApiKey) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("the tap's waiters")
            .push((api.code(), tx));
        rx
    }
}

impl Drop for KafkaTap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays one client connection; ends when either side closes. Once a waited-for request went through it,
/// the broker's answers on this connection are held back, so its client cannot learn the outcome.
async fn relay(client: TcpStream, upstream: SocketAddr, waiters: Waiters) {
    let Ok(broker) = TcpStream::connect(upstream).await else {
        return; // the broker is down: the client sees its connection closed
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_broker, mut to_broker) = broker.into_split();
    let fired = AtomicBool::new(false);
    tokio::select! {
        _ = forward_requests(&mut from_client, &mut to_broker, &waiters, &fired) => {}
        _ = forward_answers(&mut from_broker, &mut to_client, &fired) => {}
    }
}

/// Passes the client's requests on, frame by frame, and wakes whoever waits for each one's API key.
async fn forward_requests(
    from_client: &mut (impl AsyncReadExt + Unpin),
    to_broker: &mut (impl AsyncWriteExt + Unpin),
    waiters: &Waiters,
    fired: &AtomicBool,
) -> std::io::Result<()> {
    let mut frame = Vec::new();
    loop {
        let mut length = [0u8; 4];
        from_client.read_exact(&mut length).await?;
        let size = usize::try_from(i32::from_be_bytes(length)).unwrap_or(0);
        frame.resize(size, 0);
        from_client.read_exact(&mut frame).await?;
        let key = match frame[..] {
            [a, b, ..] => Some(i16::from_be_bytes([a, b])),
            _ => None,
        };
        let due: Vec<oneshot::Sender<()>> = {
            let mut waiting = waiters.lock().expect("the tap's waiters");
            let (due, rest): (Vec<_>, Vec<_>) =
                waiting.drain(..).partition(|(code, _)| Some(*code) == key);
            *waiting = rest;
            due.into_iter().map(|(_, tx)| tx).collect()
        };
        if !due.is_empty() {
            fired.store(true, Ordering::SeqCst);
        }
        to_broker.write_all(&length).await?;
        to_broker.write_all(&frame).await?;
        for tx in due {
            let _ = tx.send(());
        }
    }
}

/// Passes the broker's answers back until a waited-for request went through this connection, then drops
/// them; ends when the broker closes the connection (or dies), which the client then sees.
async fn forward_answers(
    from_broker: &mut (impl AsyncReadExt + Unpin),
    to_client: &mut (impl AsyncWriteExt + Unpin),
    fired: &AtomicBool,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = from_broker.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        if !fired.load(Ordering::SeqCst) {
            to_client.write_all(&buffer[..n]).await?;
        }
    }
}
