//! One direction of a proxied connection: read a chunk, apply the direction's [`Effects`], write it on.
//!
//! With no fault on the link the loop is a plain copy (one read, one write per chunk) — the benchmark
//! holds it to that. Before every chunk, and while it waits for one, the pump looks at the link's current
//! faults, so a toxic added to an open connection acts from its next chunk, and a hold (a `timeout`
//! toxic, a `hold` cut) stops the reading at once: the bytes stay in the sender's socket buffers, as they
//! would in a real network, and flow on when the hold goes. Delays apply per chunk in arrival order
//! (a `latency` of 100 ms adds 100 ms to each request and each answer).
//!
//! A pump may pass what it reads through a [`Transform`] before the faults act on it: a `kafka` proxy's
//! pumps read the Kafka frames and rewrite the broker's address ([`crate::kafka`]). Plain pumps use
//! [`Plain`], which passes the chunk it was given, so their loop stays a plain copy.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::faults::{Decisions, Effects, LinkFaults, jittered, slices, transmission_time};
use crate::toxic::Stream;

/// Size of one read.
pub const CHUNK: usize = 32 * 1024;

/// How a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The sender closed its side; the close was passed on.
    Eof,
    /// A fault closes the whole connection (`timeout`, `limit_data`).
    Close,
    /// A fault resets the whole connection (`reset_peer`, a `reset` cut).
    Reset,
    /// The other direction or the proxy stopped the connection.
    Stopped,
    /// A socket failed.
    Error,
}

/// What a pump needs to know about its connection.
#[derive(Debug, Clone)]
pub struct Context {
    pub connection: u64,
    pub stream: Stream,
    pub bytes: metrics::Counter,
}

/// What a pump makes of the bytes it reads, before the faults act on them.
pub trait Transform: Send {
    /// The bytes to pass on for `bytes`, just read: usually `bytes` themselves; fewer when some are held
    /// back, more when bytes held before are released.
    fn feed<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]>;

    /// What is still held back when the sender closes its side (passed on before the close).
    fn finish(&mut self) -> Vec<u8>;
}

/// Passes every chunk on as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Transform for Plain {
    #[inline]
    fn feed<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        Cow::Borrowed(bytes)
    }

    fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// Copies `from` to `to`, through `transform` then the link's faults, until one side ends.
pub async fn pump<R, W, T>(
    mut from: R,
    mut to: W,
    mut faults: watch::Receiver<Arc<LinkFaults>>,
    stop: CancellationToken,
    context: Context,
    mut transform: T,
) -> Ending
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    T: Transform,
{
    let mut decisions = Decisions::default();
    let mut passed: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let snapshot = faults.borrow_and_update().clone();
        let now = Instant::now();
        let effects = if snapshot.is_clean() {
            Effects::default()
        } else {
            Effects::of(
                &snapshot,
                context.stream,
                &mut decisions,
                now,
                rand::random::<f64>,
                context.connection,
            )
        };
        drop(snapshot);
        if effects.reset_at.is_some_and(|t| t <= now) {
            return Ending::Reset;
        }
        if effects.close_at.is_some_and(|t| t <= now) {
            return Ending::Close;
        }
        let reset_timer = at(effects.reset_at);
        let close_timer = at(effects.close_at);
        if effects.hold {
            tokio::select! {
                _ = stop.cancelled() => return Ending::Stopped,
                changed = faults.changed() => {
                    if changed.is_err() { return Ending::Stopped; }
                    continue;
                }
                _ = reset_timer => return Ending::Reset,
                _ = close_timer => return Ending::Close,
            }
        }
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ending::Stopped,
            changed = faults.changed() => {
                if changed.is_err() { return Ending::Stopped; }
                continue;
            }
            _ = reset_timer => return Ending::Reset,
            read = from.read(&mut buf) => match read {
                Ok(n) => n,
                Err(_) => return Ending::Error,
            },
        };
        if n == 0 {
            let held = transform.finish();
            if !held.is_empty() {
                if let Err(ending) = write(&mut to, &held, &stop).await {
                    return ending;
                }
                context.bytes.increment(held.len() as u64);
            }
            if !effects.slow_close.is_zero()
                && !nap(Instant::now() + effects.slow_close, &stop).await
            {
                return Ending::Stopped;
            }
            let _ = to.shutdown().await;
            return Ending::Eof;
        }
        let arrived = Instant::now();
        let fed = transform.feed(&buf[..n]);
        if fed.is_empty() {
            // All held back (part of a frame): read on.
            continue;
        }
        let mut chunk: &[u8] = &fed;
        let mut close_after = false;
        if let Some(limit) = effects.limit {
            let left = usize::try_from(limit.saturating_sub(passed)).unwrap_or(usize::MAX);
            if chunk.len() >= left {
                chunk = &chunk[..left];
                close_after = true;
            }
        }
        if (!effects.latency.is_zero() || !effects.jitter.is_zero())
            && !nap(
                arrived + jittered(effects.latency, effects.jitter, rand::random()),
                &stop,
            )
            .await
        {
            return Ending::Stopped;
        }
        let written = if effects.slicer.is_none() && effects.rate.is_none() {
            write(&mut to, chunk, &stop).await
        } else {
            write_shaped(&mut to, chunk, &effects, &stop).await
        };
        if let Err(ending) = written {
            return ending;
        }
        passed += chunk.len() as u64;
        context.bytes.increment(chunk.len() as u64);
        if close_after {
            return Ending::Close;
        }
    }
}

/// A timer that never fires when there is no deadline.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `until`; false when the connection was stopped first.
async fn nap(until: Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = sleep_until(until) => true,
    }
}

async fn write<W: AsyncWrite + Unpin>(
    to: &mut W,
    bytes: &[u8],
    stop: &CancellationToken,
) -> Result<(), Ending> {
    tokio::select! {
        _ = stop.cancelled() => Err(Ending::Stopped),
        written = to.write_all(bytes) => written.map_err(|_| Ending::Error),
    }
}

/// Writes through a `slicer` and/or a `bandwidth` toxic: small pieces, each followed by its pause. Without
/// a slicer, pieces are a tenth of a second's worth at the rate, so the rate holds over short spans too.
async fn write_shaped<W: AsyncWrite + Unpin>(
    to: &mut W,
    chunk: &[u8],
    effects: &Effects,
    stop: &CancellationToken,
) -> Result<(), Ending> {
    let sizes = match (effects.slicer, effects.rate) {
        (Some((average, variation, _)), _) => slices(chunk.len(), average, variation, rand::random),
        (None, Some(rate)) => {
            let piece = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
            slices(chunk.len(), piece as u64, 0, || 0.0)
        }
        (None, None) => vec![chunk.len()],
    };
    let mut offset = 0;
    for size in sizes {
        let piece = &chunk[offset..offset + size];
        offset += size;
        let started = Instant::now();
        write(to, piece, stop).await?;
        to.flush().await.map_err(|_| Ending::Error)?;
        let mut pause = effects
            .rate
            .map(|rate| transmission_time(size, rate))
            .unwrap_or_default();
        if let Some((_, _, delay)) = effects.slicer {
            pause += delay;
        }
        if !pause.is_zero() && !nap(started + pause, stop).await {
            return Err(Ending::Stopped);
        }
    }
    Ok(())
}
