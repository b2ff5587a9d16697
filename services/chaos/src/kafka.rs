//! What a proxy with `"protocol": "kafka"` does besides relaying bytes: it makes the broker's clients come
//! back to *this* proxy. Pure (no IO): [`crate::proxy`] puts a [`Requests`] on the client → broker direction
//! and a [`Responses`] on the broker → client direction of each connection's pumps.
//!
//! A Kafka client is configured with one address (the bootstrap), asks the broker for its metadata, and then
//! connects to the address the broker *advertises* — the same for every client. So a second proxy in front
//! of the same broker would carry the bootstrap request only. A kafka proxy therefore changes the broker's
//! answers that name brokers: in responses to `Metadata` (API key 3), `FindCoordinator` (10) and
//! `DescribeCluster` (60), every broker or coordinator whose host and port are the advertised address
//! ([`Rewrite`]) gets the proxy's own port instead. The client comes back to the proxy it started from, and a
//! partition can cut one service's Kafka traffic and not another's.
//!
//! The framing: every Kafka message is a big-endian `i32` length and that many bytes. A request starts with
//! `api_key: i16, api_version: i16, correlation_id: i32`; a response with the `correlation_id` only, and
//! the responses on one connection come back in the order of their requests. So [`Requests`] reads each
//! request's header as it goes by (the bytes pass at once, untouched) and notes the correlation ids of the
//! three requests above; [`Responses`] reads each response's correlation id: a response to a noted request
//! is held until it is complete and rewritten, every other one passes on as it arrives, byte for byte.
//!
//! The rewrite is made **in place**: in every version of those three responses a broker's host is a string
//! immediately followed by its port as an `i32`, so replacing those 4 bytes changes no length anywhere and
//! leaves every other byte as the broker wrote it (fields this code does not know, tagged fields, the
//! topics and their partitions). The walk reads the response only as far as the last broker entry. A
//! version newer than those known here, or a response that does not parse, is passed on unchanged (and
//! logged): the client then reaches the advertised address, as through a plain tcp proxy.
//!
//! Plaintext Kafka only: TLS or a stream that does not frame as Kafka is noticed (a length out of range) and
//! passed on untouched from there on.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::pump::Transform;

/// API key of `Metadata`.
pub const METADATA: i16 = 3;
/// API key of `FindCoordinator`.
pub const FIND_COORDINATOR: i16 = 10;
/// API key of `DescribeCluster`.
pub const DESCRIBE_CLUSTER: i16 = 60;

/// The newest version of each rewritten response whose layout this module knows (Kafka 4.1).
const NEWEST: [(i16, i16); 3] = [(METADATA, 13), (FIND_COORDINATOR, 6), (DESCRIBE_CLUSTER, 2)];

/// A response frame larger than this is passed on without being read (Kafka's own default limit on a
/// request is 100 MiB; a metadata answer is a few KiB).
pub const MAX_HELD_FRAME: usize = 64 * 1024 * 1024;

/// Requests noted and not answered yet, at most (a client that never reads its answers cannot make the
/// proxy grow without bound; the oldest are forgotten).
const MAX_IN_FLIGHT: usize = 1024;

/// Which broker address to replace in the broker's answers, and the port to put instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The advertised host (compared without regard to ASCII case).
    pub host: String,
    /// The advertised port.
    pub port: u16,
    /// The proxy's own listen port.
    pub to_port: u16,
}

impl Rewrite {
    /// The rewrite of `advertised` (`host:port`, IPv6 hosts in brackets) to `to_port`; `None` when it is
    /// not `host:port`.
    pub fn of(advertised: &str, to_port: u16) -> Option<Rewrite> {
        let (host, port) = advertised.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Rewrite {
            host: host.to_owned(),
            port: port.parse().ok()?,
            to_port,
        })
    }

    fn matches(&self, host: &[u8], port: i32) -> bool {
        port == i32::from(self.port) && host.eq_ignore_ascii_case(self.host.as_bytes())
    }
}

/// A request whose answer may name brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub correlation_id: i32,
    pub api_key: i16,
    pub api_version: i16,
}

/// The noted requests of one connection, oldest first.
#[derive(Debug, Default)]
struct InFlight {
    asked: VecDeque<Asked>,
}

impl InFlight {
    fn note(&mut self, asked: Asked) {
        if self.asked.len() >= MAX_IN_FLIGHT {
            self.asked.pop_front();
        }
        self.asked.push_back(asked);
    }

    /// The noted request that `correlation_id` answers, if any. Answers come in request order, so noted
    /// requests before it will get no answer any more: they are forgotten too.
    fn answered(&mut self, correlation_id: i32) -> Option<Asked> {
        let at = self
            .asked
            .iter()
            .position(|a| a.correlation_id == correlation_id)?;
        self.asked.drain(..at);
        self.asked.pop_front()
    }
}

/// The two directions of one proxied Kafka connection, sharing the requests in flight.
pub fn session(rewrite: Rewrite, link: &str, connection: u64) -> (Requests, Responses) {
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    (
        Requests {
            in_flight: in_flight.clone(),
            head: Head::default(),
            skip: 0,
            lost: false,
            link: link.to_owned(),
            connection,
        },
        Responses {
            in_flight,
            rewrite,
            head: Head::default(),
            reading: Reading::Head,
            link: link.to_owned(),
            connection,
        },
    )
}

/// The first `N` bytes of a frame, gathered across reads.
#[derive(Debug)]
struct Head<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Head<N> {
    fn default() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Head<N> {
    /// Takes what it still lacks from `input`; returns how many bytes it took.
    fn fill(&mut self, input: &[u8]) -> usize {
        let n = (N - self.len).min(input.len());
        self.bytes[self.len..self.len + n].copy_from_slice(&input[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == N
    }

    fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    fn i16_at(&self, at: usize) -> i16 {
        i16::from_be_bytes([self.bytes[at], self.bytes[at + 1]])
    }
}

/// The client → broker direction: bytes pass at once and unchanged; the header of each request is read
/// on the way (length, API key, version, correlation id) and the requests whose answers name brokers are
/// noted for [`Responses`].
#[derive(Debug)]
pub struct Requests {
    in_flight: Arc<Mutex<InFlight>>,
    /// Length, API key, API version, correlation id.
    head: Head<12>,
    /// Bytes of the current request after its header, still to come.
    skip: usize,
    /// The stream stopped looking like Kafka: nothing more is read.
    lost: bool,
    link: String,
    connection: u64,
}

impl Requests {
    /// Reads the request headers in `bytes` (any piece of the stream).
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = self.head.fill(bytes);
            bytes = &bytes[n..];
            if !self.head.is_full() {
                return;
            }
            let size = self.head.i32_at(0);
            let asked = Asked {
                api_key: self.head.i16_at(4),
                api_version: self.head.i16_at(6),
                correlation_id: self.head.i32_at(8),
            };
            self.head = Head::default();
            let Some(rest) = usize::try_from(size).ok().and_then(|s| s.checked_sub(8)) else {
                tracing::warn!(link = %self.link, connection = self.connection, size,
                    "not a Kafka request: this connection is relayed without rewriting from here on");
                self.lost = true;
                return;
            };
            self.skip = rest;
            if is_rewritten(asked.api_key) {
                lock(&self.in_flight).note(asked);
            }
        }
    }
}

impl Transform for Requests {
    fn feed<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        self.observe(bytes);
        Cow::Borrowed(bytes)
    }

    fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

fn is_rewritten(api_key: i16) -> bool {
    matches!(api_key, METADATA | FIND_COORDINATOR | DESCRIBE_CLUSTER)
}

fn lock(in_flight: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    // The lock is never held across a panic that matters: a poisoned one is still consistent.
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the broker → client direction is in the stream.
#[derive(Debug)]
enum Reading {
    /// Gathering the next frame's length and correlation id.
    Head,
    /// Passing on the rest of a frame nobody rewrites.
    Passing { left: usize },
    /// Holding a frame that answers a noted request until it is complete.
    Holding {
        asked: Asked,
        frame: Vec<u8>,
        left: usize,
    },
    /// The stream stopped looking like Kafka: everything passes.
    Lost,
}

/// The broker → client direction: every response passes byte for byte, except those answering a noted
/// request, which are held until complete and rewritten ([`rewrite_response`]).
#[derive(Debug)]
pub struct Responses {
    in_flight: Arc<Mutex<InFlight>>,
    rewrite: Rewrite,
    /// Length and correlation id.
    head: Head<8>,
    reading: Reading,
    link: String,
    connection: u64,
}

impl Responses {
    /// The bytes to pass on for `input`: the same bytes (borrowed) unless part of a frame is held back, a
    /// held frame is released, or a frame was rewritten.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out = Out::new(input);
        let mut at = 0;
        while at < input.len() {
            match &mut self.reading {
                Reading::Lost => {
                    out.pass(at..input.len());
                    at = input.len();
                }
                Reading::Passing { left } => {
                    let n = (*left).min(input.len() - at);
                    out.pass(at..at + n);
                    at += n;
                    *left -= n;
                    if *left == 0 {
                        self.reading = Reading::Head;
                    }
                }
                Reading::Holding { frame, left, .. } => {
                    let n = (*left).min(input.len() - at);
                    frame.extend_from_slice(&input[at..at + n]);
                    at += n;
                    *left -= n;
                    self.release_if_complete(&mut out);
                }
                Reading::Head => {
                    let started_here = self.head.len == 0;
                    let start = at;
                    at += self.head.fill(&input[at..]);
                    if !self.head.is_full() {
                        continue;
                    }
                    let head = std::mem::take(&mut self.head);
                    // The head goes on as it came: straight from this input when it lies within it.
                    let pass_head = |out: &mut Out<'a>| {
                        if started_here {
                            out.pass(start..at);
                        } else {
                            out.put(&head.bytes);
                        }
                    };
                    let size = head.i32_at(0);
                    let body = usize::try_from(size).ok().filter(|s| *s >= 4);
                    let Some(body) = body else {
                        tracing::warn!(link = %self.link, connection = self.connection, size,
                            "not a Kafka response: this connection is relayed without rewriting from here on");
                        pass_head(&mut out);
                        self.reading = Reading::Lost;
                        continue;
                    };
                    let asked = lock(&self.in_flight).answered(head.i32_at(4));
                    match asked {
                        Some(asked) if body <= MAX_HELD_FRAME => {
                            let mut frame = Vec::with_capacity(4 + body);
                            frame.extend_from_slice(&head.bytes);
                            self.reading = Reading::Holding {
                                asked,
                                frame,
                                left: body - 4,
                            };
                            self.release_if_complete(&mut out);
                        }
                        _ => {
                            pass_head(&mut out);
                            self.reading = match body - 4 {
                                0 => Reading::Head,
                                left => Reading::Passing { left },
                            };
                        }
                    }
                }
            }
        }
        out.done()
    }

    /// What is still held when the broker closes: an incomplete frame, passed on as it is.
    pub fn finish(&mut self) -> Vec<u8> {
        let head = std::mem::take(&mut self.head);
        match std::mem::replace(&mut self.reading, Reading::Head) {
            Reading::Holding { frame, .. } => frame,
            _ => head.bytes[..head.len].to_vec(),
        }
    }

    fn release_if_complete(&mut self, out: &mut Out<'_>) {
        let Reading::Holding { left: 0, .. } = self.reading else {
            return;
        };
        let Reading::Holding {
            asked, mut frame, ..
        } = std::mem::replace(&mut self.reading, Reading::Head)
        else {
            return;
        };
        match rewrite_response(asked, &mut frame[4..], &self.rewrite) {
            Ok(0) => {}
            Ok(rewritten) => {
                tracing::debug!(link = %self.link, connection = self.connection,
                    api_key = asked.api_key, api_version = asked.api_version, rewritten,
                    port = self.rewrite.to_port, "advertised broker address rewritten");
            }
            Err(why) => {
                tracing::warn!(link = %self.link, connection = self.connection,
                    api_key = asked.api_key, api_version = asked.api_version, %why,
                    "response passed on unchanged: its clients will reach the advertised address");
            }
        }
        out.put(&frame);
    }
}

impl Transform for Responses {
    fn feed<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        Responses::feed(self, bytes)
    }

    fn finish(&mut self) -> Vec<u8> {
        Responses::finish(self)
    }
}

/// The output of one [`Responses::feed`]: a prefix of the input as long as it can, a copy from the first
/// byte that differs.
struct Out<'a> {
    input: &'a [u8],
    end: usize,
    owned: Option<Vec<u8>>,
}

impl<'a> Out<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            end: 0,
            owned: None,
        }
    }

    /// Passes `range` of the input on.
    fn pass(&mut self, range: Range<usize>) {
        match &mut self.owned {
            None if range.start == self.end => self.end = range.end,
            None => {
                let mut owned = self.input[..self.end].to_vec();
                owned.extend_from_slice(&self.input[range]);
                self.owned = Some(owned);
            }
            Some(owned) => owned.extend_from_slice(&self.input[range]),
        }
    }

    /// Passes other bytes on (held ones, a rewritten frame).
    fn put(&mut self, bytes: &[u8]) {
        let (input, end) = (self.input, self.end);
        self.owned
            .get_or_insert_with(|| input[..end].to_vec())
            .extend_from_slice(bytes);
    }

    fn done(self) -> Cow<'a, [u8]> {
        match self.owned {
            Some(owned) => Cow::Owned(owned),
            None => Cow::Borrowed(&self.input[..self.end]),
        }
    }
}

/// Why a response was not rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("version {version} of API {api_key} is newer than this proxy knows")]
    UnknownVersion { api_key: i16, version: i16 },
    #[error("API {0} is not one whose answers name brokers")]
    NotRewritten(i16),
    #[error("the response ends before its broker list does (at byte {0})")]
    Truncated(usize),
}

/// Replaces, in `body` (a response frame without its length: correlation id first), the port of every
/// broker or coordinator entry at the advertised address; returns how many it replaced. Nothing is changed
/// unless the whole broker list could be read.
pub fn rewrite_response(
    asked: Asked,
    body: &mut [u8],
    rewrite: &Rewrite,
) -> Result<usize, Unreadable> {
    let addresses = broker_addresses(asked.api_key, asked.api_version, body)?;
    let mut rewritten = 0;
    for address in addresses {
        let port_bytes = &body[address.port..address.port + 4];
        let port = i32::from_be_bytes([port_bytes[0], port_bytes[1], port_bytes[2], port_bytes[3]]);
        if rewrite.matches(&body[address.host], port) {
            body[address.port..address.port + 4]
                .copy_from_slice(&i32::from(rewrite.to_port).to_be_bytes());
            rewritten += 1;
        }
    }
    Ok(rewritten)
}

/// Where a broker entry's host and port lie in a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: Range<usize>,
    /// Offset of the 4 bytes of the port.
    pub port: usize,
}

/// Every broker (or coordinator) address of a `Metadata`, `FindCoordinator` or `DescribeCluster` response
/// body of `version`.
pub fn broker_addresses(
    api_key: i16,
    version: i16,
    body: &[u8],
) -> Result<Vec<Address>, Unreadable> {
    let newest = NEWEST
        .iter()
        .find(|(key, _)| *key == api_key)
        .map(|(_, newest)| *newest)
        .ok_or(Unreadable::NotRewritten(api_key))?;
    if !(0..=newest).contains(&version) {
        return Err(Unreadable::UnknownVersion { api_key, version });
    }
    let mut r = Reader { body, at: 0 };
    let mut found = Vec::new();
    match api_key {
        METADATA => {
            let flexible = version >= 9;
            r.response_header(flexible)?;
            if version >= 3 {
                r.skip(4)?; // throttle_time_ms
            }
            for _ in 0..r.array_len(flexible)? {
                r.skip(4)?; // node_id
                found.push(r.address(flexible)?);
                if version >= 1 {
                    r.string(flexible)?; // rack
                }
                if flexible {
                    r.tagged_fields()?;
                }
            }
        }
        FIND_COORDINATOR if version <= 3 => {
            let flexible = version >= 3;
            r.response_header(flexible)?;
            if version >= 1 {
                r.skip(4)?; // throttle_time_ms
            }
            r.skip(2)?; // error_code
            if version >= 1 {
                r.string(flexible)?; // error_message
            }
            r.skip(4)?; // node_id
            found.push(r.address(flexible)?);
        }
        FIND_COORDINATOR => {
            r.response_header(true)?;
            r.skip(4)?; // throttle_time_ms
            for _ in 0..r.array_len(true)? {
                r.string(true)?; // key
                r.skip(4)?; // node_id
                found.push(r.address(true)?);
                r.skip(2)?; // error_code
                r.string(true)?; // error_message
                r.tagged_fields()?;
            }
        }
        _ => {
            // DescribeCluster: flexible in every version.
            r.response_header(true)?;
            r.skip(4 + 2)?; // throttle_time_ms, error_code
            r.string(true)?; // error_message
            if version >= 1 {
                r.skip(1)?; // endpoint_type
            }
            r.string(true)?; // cluster_id
            r.skip(4)?; // controller_id
            for _ in 0..r.array_len(true)? {
                r.skip(4)?; // broker_id
                found.push(r.address(true)?);
                r.string(true)?; // rack
                if version >= 2 {
                    r.skip(1)?; // is_fenced
                }
                r.tagged_fields()?;
            }
        }
    }
    Ok(found)
}

/// Reads Kafka's primitive types from a response body.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn skip(&mut self, n: usize) -> Result<Range<usize>, Unreadable> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.body.len())
            .ok_or(Unreadable::Truncated(self.at))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn int16(&mut self) -> Result<i16, Unreadable> {
        let r = self.skip(2)?;
        Ok(i16::from_be_bytes([
            self.body[r.start],
            self.body[r.start + 1],
        ]))
    }

    fn int32(&mut self) -> Result<i32, Unreadable> {
        let r = self.skip(4)?;
        let b = &self.body[r];
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn unsigned_varint(&mut self) -> Result<u32, Unreadable> {
        let mut value: u32 = 0;
        for shift in [0, 7, 14, 21, 28] {
            let r = self.skip(1)?;
            let byte = self.body[r.start];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Unreadable::Truncated(self.at))
    }

    /// A (nullable) string: an `i16` length, or in flexible versions an unsigned varint length + 1; null
    /// is an empty range.
    fn string(&mut self, flexible: bool) -> Result<Range<usize>, Unreadable> {
        let len = if flexible {
            i64::from(self.unsigned_varint()?) - 1
        } else {
            i64::from(self.int16()?)
        };
        match usize::try_from(len) {
            Ok(len) => self.skip(len),
            Err(_) => Ok(self.at..self.at), // null
        }
    }

    /// An array's length: an `i32`, or in flexible versions an unsigned varint length + 1; null is empty.
    fn array_len(&mut self, flexible: bool) -> Result<usize, Unreadable> {
        let len = if flexible {
            i64::from(self.unsigned_varint()?) - 1
        } else {
            i64::from(self.int32()?)
        };
        Ok(usize::try_from(len).unwrap_or(0))
    }

    fn tagged_fields(&mut self) -> Result<(), Unreadable> {
        for _ in 0..self.unsigned_varint()? {
            self.unsigned_varint()?; // tag
            let size = self.unsigned_varint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }

    /// The response header: the correlation id, then tagged fields in flexible versions.
    fn response_header(&mut self, flexible: bool) -> Result<(), Unreadable> {
        self.skip(4)?;
        if flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    /// A host string and the port right after it.
    fn address(&mut self, flexible: bool) -> Result<Address, Unreadable> {
        let host = self.string(flexible)?;
        let port = self.skip(4)?.start;
        Ok(Address { host, port })
    }
}

#[cfg(test)]
mod tests {
    //! Frames encoded by the `kafka-protocol` crate (an encoder written apart from this module), fed through
    //! both directions as a proxy would, then decoded again.

    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{
        BrokerId, DescribeClusterResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
        FindCoordinatorResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, RequestHeader, ResponseHeader, TopicName, describe_cluster_response,
        fetch_response, find_coordinator_response, metadata_response, produce_response,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

    /// The broker advertises 127.0.0.1:17090; the proxy listens on 17091.
    fn rewrite() -> Rewrite {
        Rewrite::of("127.0.0.1:17090", 17091).expect("host:port")
    }

    fn s(text: &'static str) -> StrBytes {
        StrBytes::from_static_str(text)
    }

    /// A response frame: length, header, body.
    fn response<T: Encodable + HeaderVersion>(
        correlation_id: i32,
        body: &T,
        version: i16,
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, T::header_version(version))
            .expect("header encodes");
        body.encode(&mut buf, version).expect("body encodes");
        framed(&buf)
    }

    /// A request frame: length, header, body.
    fn request<T: Request>(correlation_id: i32, body: &T, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(T::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(s("rdkafka")))
            .encode(&mut buf, T::header_version(version))
            .expect("header encodes");
        body.encode(&mut buf, version).expect("body encodes");
        framed(&buf)
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    /// Decodes a response frame's body (after the length and header) at `version`.
    fn decode<T: Decodable + HeaderVersion>(frame: &[u8], version: i16) -> T {
        let mut bytes = Bytes::copy_from_slice(&frame[4..]);
        ResponseHeader::decode(&mut bytes, T::header_version(version)).expect("header decodes");
        let decoded = T::decode(&mut bytes, version).expect("body decodes");
        assert!(bytes.is_empty(), "the whole frame was read");
        decoded
    }

    /// Three brokers: the advertised one, one on another port of the same host, one on another host with
    /// the advertised port.
    fn metadata(version: i16, port: i32) -> MetadataResponse {
        let broker = |id: i32, host: &'static str, port: i32| {
            metadata_response::MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(s(host))
                .with_port(port)
                .with_rack((version >= 1).then(|| s("rack-a")))
        };
        let topic = metadata_response::MetadataResponseTopic::default()
            .with_name(Some(TopicName(s("order-events"))))
            .with_partitions(vec![
                metadata_response::MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(0))
                    .with_replica_nodes(vec![BrokerId(0)])
                    .with_isr_nodes(vec![BrokerId(0)]),
            ]);
        let mut response = MetadataResponse::default()
            .with_brokers(vec![
                broker(0, "127.0.0.1", port),
                broker(1, "127.0.0.1", 19092),
                broker(2, "10.0.0.7", 17090),
            ])
            .with_topics(vec![topic])
            .with_controller_id(BrokerId(0));
        if version >= 2 {
            response = response.with_cluster_id(Some(s("distlab-cluster")));
        }
        if version >= 9 {
            response = response.with_unknown_tagged_field(7, Bytes::from_static(b"kept"));
        }
        response
    }

    fn metadata_asked(version: i16) -> Asked {
        Asked {
            correlation_id: 7,
            api_key: METADATA,
            api_version: version,
        }
    }

    #[test]
    fn metadata_responses_of_every_version_name_the_proxy_instead_of_the_advertised_address() {
        for version in 0..=13 {
            let mut frame = response(7, &metadata(version, 17090), version);
            let before = frame.clone();
            let rewritten = rewrite_response(metadata_asked(version), &mut frame[4..], &rewrite());
            assert_eq!(rewritten, Ok(1), "v{version}");
            assert_eq!(frame.len(), before.len(), "v{version}: no length changes");
            let changed = frame.iter().zip(&before).filter(|(a, b)| a != b).count();
            assert!(
                changed <= 4,
                "v{version}: only port bytes change ({changed})"
            );
            // Byte for byte what the broker would have sent advertising the proxy's port…
            assert_eq!(
                frame,
                response(7, &metadata(version, 17091), version),
                "v{version}"
            );
            // …which decodes as such: only the advertised broker changed.
            let ports: Vec<i32> = decode::<MetadataResponse>(&frame, version)
                .brokers
                .iter()
                .map(|b| b.port)
                .collect();
            assert_eq!(ports, [17091, 19092, 17090], "v{version}");
        }
    }

    #[test]
    fn find_coordinator_responses_of_every_version_are_rewritten() {
        let single = |port: i32| {
            FindCoordinatorResponse::default()
                .with_error_message(Some(s("none")))
                .with_node_id(BrokerId(0))
                .with_host(s("127.0.0.1"))
                .with_port(port)
        };
        let many = |port: i32| {
            let coordinator = |key: &'static str, host: &'static str, port: i32| {
                find_coordinator_response::Coordinator::default()
                    .with_key(s(key))
                    .with_node_id(BrokerId(0))
                    .with_host(s(host))
                    .with_port(port)
            };
            FindCoordinatorResponse::default().with_coordinators(vec![
                coordinator("group-a", "127.0.0.1", port),
                coordinator("group-b", "LOCALHOST", 17090),
                coordinator("group-c", "127.0.0.1", port),
            ])
        };
        for version in 0..=6 {
            let (before, after, count) = if version <= 3 {
                (single(17090), single(17091), 1)
            } else {
                (many(17090), many(17091), 2)
            };
            let mut frame = response(3, &before, version);
            let asked = Asked {
                correlation_id: 3,
                api_key: FIND_COORDINATOR,
                api_version: version,
            };
            assert_eq!(
                rewrite_response(asked, &mut frame[4..], &rewrite()),
                Ok(count),
                "v{version}"
            );
            assert_eq!(frame, response(3, &after, version), "v{version}");
            let decoded = decode::<FindCoordinatorResponse>(&frame, version);
            if version <= 3 {
                assert_eq!(decoded.port, 17091);
            } else {
                let ports: Vec<i32> = decoded.coordinators.iter().map(|c| c.port).collect();
                assert_eq!(ports, [17091, 17090, 17091], "v{version}");
            }
        }
    }

    #[test]
    fn describe_cluster_responses_of_every_version_are_rewritten() {
        let cluster = |version: i16, port: i32| {
            let mut broker = describe_cluster_response::DescribeClusterBroker::default()
                .with_broker_id(BrokerId(0))
                .with_host(s("127.0.0.1"))
                .with_port(port)
                .with_rack(Some(s("rack-a")));
            if version >= 2 {
                broker = broker.with_is_fenced(true);
            }
            DescribeClusterResponse::default()
                .with_error_message(Some(s("fine")))
                .with_cluster_id(s("distlab-cluster"))
                .with_brokers(vec![broker])
        };
        for version in 0..=2 {
            let mut frame = response(9, &cluster(version, 17090), version);
            let asked = Asked {
                correlation_id: 9,
                api_key: DESCRIBE_CLUSTER,
                api_version: version,
            };
            assert_eq!(rewrite_response(asked, &mut frame[4..], &rewrite()), Ok(1));
            assert_eq!(frame, response(9, &cluster(version, 17091), version));
            assert_eq!(
                decode::<DescribeClusterResponse>(&frame, version).brokers[0].port,
                17091,
                "v{version}"
            );
        }
    }

    #[test]
    fn unknown_versions_and_truncated_bodies_change_nothing() {
        let mut frame = response(7, &metadata(12, 17090), 12);
        let before = frame.clone();
        let newer = Asked {
            api_version: 14,
            ..metadata_asked(12)
        };
        assert!(matches!(
            rewrite_response(newer, &mut frame[4..], &rewrite()),
            Err(Unreadable::UnknownVersion { .. })
        ));
        assert_eq!(frame, before);
        // Cut inside the last broker entry: nothing is rewritten, not even the entries read before.
        let broker_list_end = broker_addresses(METADATA, 12, &frame[4..])
            .expect("reads")
            .last()
            .expect("brokers")
            .port
            + 4;
        let mut cut = frame[4..4 + broker_list_end - 1].to_vec();
        let cut_before = cut.clone();
        assert!(matches!(
            rewrite_response(metadata_asked(12), &mut cut, &rewrite()),
            Err(Unreadable::Truncated(_))
        ));
        assert_eq!(cut, cut_before);
    }

    #[test]
    fn advertised_addresses_parse() {
        assert_eq!(
            Rewrite::of("[::1]:9092", 17091),
            Some(Rewrite {
                host: "::1".into(),
                port: 9092,
                to_port: 17091
            })
        );
        assert_eq!(Rewrite::of("no-port", 1), None);
        assert_eq!(Rewrite::of("host:99999", 1), None);
    }

    /// A connection's traffic: the client's requests, and the broker's answers before and after the rewrite.
    struct Traffic {
        requests: Vec<u8>,
        responses: Vec<u8>,
        expected: Vec<u8>,
    }

    /// Pipelined requests (a Produce with acks=0, which gets no answer, among them) and their answers: a
    /// Produce response carrying the advertised address in its leader endpoints (KIP-951) and a Fetch
    /// response whose records hold its exact bytes, neither of which may change; Metadata v12 and v0 and
    /// FindCoordinator v3 and v4, which must.
    fn traffic() -> Traffic {
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        let mut expected = Vec::new();
        let mut answer = |before: Vec<u8>, after: Vec<u8>| {
            responses.extend_from_slice(&before);
            expected.extend_from_slice(&after);
        };
        // The bytes a broker entry of the advertised address is made of, in a flexible version.
        let pattern: &[u8] = b"\x0a127.0.0.1\x00\x00\x42\xc2";
        let produce = ProduceResponse::default()
            .with_responses(vec![
                produce_response::TopicProduceResponse::default()
                    .with_name(TopicName(s("127.0.0.1")))
                    .with_partition_responses(vec![
                        produce_response::PartitionProduceResponse::default(),
                    ]),
            ])
            .with_node_endpoints(vec![
                produce_response::NodeEndpoint::default()
                    .with_host(s("127.0.0.1"))
                    .with_port(17090),
            ]);
        let fetch = FetchResponse::default().with_responses(vec![
            fetch_response::FetchableTopicResponse::default()
                .with_topic(TopicName(s("order-events")))
                .with_partitions(vec![
                    fetch_response::PartitionData::default()
                        .with_records(Some(Bytes::from([pattern, pattern].concat()))),
                ]),
        ]);
        let find = |version: i16, port: i32| {
            if version <= 3 {
                FindCoordinatorResponse::default()
                    .with_host(s("127.0.0.1"))
                    .with_port(port)
            } else {
                FindCoordinatorResponse::default().with_coordinators(vec![
                    find_coordinator_response::Coordinator::default()
                        .with_key(s("group"))
                        .with_host(s("127.0.0.1"))
                        .with_port(port),
                ])
            }
        };

        requests.extend(request(1, &MetadataRequest::default(), 12));
        answer(
            response(1, &metadata(12, 17090), 12),
            response(1, &metadata(12, 17091), 12),
        );
        requests.extend(request(2, &ProduceRequest::default().with_acks(0), 10));
        requests.extend(request(3, &ProduceRequest::default().with_acks(-1), 10));
        let produced = response(3, &produce, 10);
        assert!(produced.windows(pattern.len()).any(|w| w == pattern));
        answer(produced.clone(), produced);
        requests.extend(request(4, &FindCoordinatorRequest::default(), 3));
        answer(
            response(4, &find(3, 17090), 3),
            response(4, &find(3, 17091), 3),
        );
        requests.extend(request(5, &FetchRequest::default(), 16));
        let fetched = response(5, &fetch, 16);
        answer(fetched.clone(), fetched);
        requests.extend(request(6, &FindCoordinatorRequest::default(), 4));
        answer(
            response(6, &find(4, 17090), 4),
            response(6, &find(4, 17091), 4),
        );
        requests.extend(request(7, &MetadataRequest::default(), 0));
        answer(
            response(7, &metadata(0, 17090), 0),
            response(7, &metadata(0, 17091), 0),
        );
        // A Metadata answer to a request the proxy did not see (a correlation id never asked) passes.
        let unasked = response(99, &metadata(12, 17090), 12);
        answer(unasked.clone(), unasked);
        Traffic {
            requests,
            responses,
            expected,
        }
    }

    /// Feeds `bytes` to `feed` in the given pieces and gathers what comes out.
    fn through(bytes: &[u8], cuts: &[usize], mut feed: impl FnMut(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([bytes.len()].iter()) {
            out.extend(feed(&bytes[from..cut]));
            from = cut;
        }
        out
    }

    /// Runs a connection: every request first (a proxy notes a request before the broker can answer it),
    /// then the answers, each direction cut into pieces at `cuts`.
    fn run(traffic: &Traffic, request_cuts: &[usize], response_cuts: &[usize]) -> Vec<u8> {
        let (mut requests, mut responses) = session(rewrite(), "test->kafka", 1);
        let passed = through(&traffic.requests, request_cuts, |piece| {
            requests.feed(piece).into_owned()
        });
        assert_eq!(passed, traffic.requests, "requests pass unchanged");
        let mut out = through(&traffic.responses, response_cuts, |piece| {
            responses.feed(piece).into_owned()
        });
        out.extend(responses.finish());
        out
    }

    #[test]
    fn a_connection_gets_exactly_the_rewritten_answers() {
        let traffic = traffic();
        assert_ne!(traffic.responses, traffic.expected);
        assert_eq!(run(&traffic, &[], &[]), traffic.expected);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_come_out_the_same() {
        let traffic = traffic();
        for cut in 0..=traffic.responses.len() {
            assert_eq!(
                run(&traffic, &[], &[cut]),
                traffic.expected,
                "answers cut at {cut}"
            );
        }
        for cut in 0..=traffic.requests.len() {
            assert_eq!(
                run(&traffic, &[cut], &[]),
                traffic.expected,
                "requests cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..traffic.responses.len()).collect();
        let every_request_byte: Vec<usize> = (1..traffic.requests.len()).collect();
        assert_eq!(
            run(&traffic, &every_request_byte, &every_byte),
            traffic.expected,
            "one byte at a time"
        );
    }

    #[test]
    fn chunks_of_frames_nobody_rewrites_pass_without_a_copy() {
        let (_, mut responses) = session(rewrite(), "test->kafka", 1);
        let fetch = response(5, &FetchResponse::default().with_session_id(42), 16);
        let two = [fetch.clone(), fetch.clone()].concat();
        assert!(matches!(responses.feed(&two), Cow::Borrowed(b) if b == two));
        // A frame cut in its middle: its first part passes at once, the rest with the next read.
        assert!(matches!(responses.feed(&fetch[..20]), Cow::Borrowed(b) if b == &fetch[..20]));
        assert!(matches!(responses.feed(&fetch[20..]), Cow::Borrowed(b) if b == &fetch[20..]));
        // A head cut in its middle is held until it is whole.
        assert_eq!(&*responses.feed(&fetch[..5]), b"");
        assert_eq!(&*responses.feed(&fetch[5..]), &fetch[..]);
    }

    #[test]
    fn a_stream_that_is_not_kafka_passes_untouched() {
        let (mut requests, mut responses) = session(rewrite(), "test->kafka", 1);
        let garbage = b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(&*requests.feed(&garbage), &garbage[..]);
        assert!(requests.lost);
        let answer = b"\x80\x00\x00\x00HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        assert_eq!(&*responses.feed(&answer), &answer[..]);
        // Even a Metadata answer passes from then on.
        let later = response(1, &metadata(12, 17090), 12);
        assert_eq!(&*responses.feed(&later), &later[..]);
        assert!(responses.finish().is_empty());
    }

    #[test]
    fn a_connection_closed_inside_a_held_answer_passes_what_came() {
        let (mut requests, mut responses) = session(rewrite(), "test->kafka", 1);
        requests.observe(&request(1, &MetadataRequest::default(), 12));
        let answer = response(1, &metadata(12, 17090), 12);
        assert_eq!(&*responses.feed(&answer[..30]), b"");
        assert_eq!(responses.finish(), &answer[..30]);
    }

    #[test]
    fn noted_requests_are_bounded_and_forgotten_once_passed() {
        let mut in_flight = InFlight::default();
        for id in 0..(MAX_IN_FLIGHT as i32 + 10) {
            in_flight.note(Asked {
                correlation_id: id,
                api_key: METADATA,
                api_version: 12,
            });
        }
        assert_eq!(in_flight.asked.len(), MAX_IN_FLIGHT);
        assert_eq!(
            in_flight.answered(3),
            None,
            "forgotten: the oldest went first"
        );
        assert_eq!(in_flight.answered(500).map(|a| a.correlation_id), Some(500));
        assert_eq!(in_flight.answered(400), None, "answers come in order");
        assert_eq!(in_flight.asked.front().map(|a| a.correlation_id), Some(501));
    }
}
