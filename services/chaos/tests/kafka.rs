//! Kafka proxies in front of a real broker (a tansu broker of the test's own, `cargo xtask install` puts
//! tansu in place) laid out as in the stack: the broker advertises a tcp proxy every client would end up
//! on (`clients->kafka`), and each service bootstraps through a kafka proxy of its own, which replaces
//! that address by its own in the broker's answers.
//!
//! - Raw requests: the broker's Metadata, FindCoordinator and DescribeCluster answers name the kafka proxy
//!   the request came through, and the shared address through the tcp proxy.
//! - librdkafka: producers and a consumer group stay on their own proxies (the shared link carries nothing
//!   after the broker started), so a partition between `order` and `kafka` holds the order side's produce
//!   while the inventory side's goes through, and the held produce completes after the heal.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use distlab_testkit::{PrivateBroker, eventually, unused_port};
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "kafka-proxy-test";

/// A kafka proxy in front of `broker` that replaces `advertised` by its own address.
async fn kafka_proxy(
    sidecar: &Sidecar,
    name: &str,
    broker: SocketAddr,
    advertised: SocketAddr,
) -> SocketAddr {
    let (status, body) = sidecar
        .post(
            "/proxies",
            json!({"name": name, "listen": "127.0.0.1:0", "upstream": broker.to_string(),
                   "protocol": "kafka", "advertised": advertised.to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["protocol"], "kafka");
    assert_eq!(body["advertised"], advertised.to_string());
    body["listen"]
        .as_str()
        .expect("listen")
        .parse()
        .expect("address")
}

/// The broker laid out as in the stack: it advertises the tcp proxy `shared_link`; returns the broker, its
/// own address and the shared proxy's.
async fn broker_behind(
    sidecar: &Sidecar,
    shared_link: &str,
) -> (PrivateBroker, SocketAddr, SocketAddr) {
    let port = unused_port();
    let own = SocketAddr::from(([127, 0, 0, 1], port));
    let shared = sidecar.proxy(shared_link, own, "tcp").await;
    (
        PrivateBroker::start_advertising(port, shared).await,
        own,
        shared,
    )
}

/// Sends one request on `stream` and decodes its answer.
async fn ask<Q: Request>(
    stream: &mut TcpStream,
    correlation_id: i32,
    request: &Q,
    version: i16,
) -> Q::Response {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(Q::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("chaos-test")))
        .encode(&mut buf, Q::header_version(version))
        .expect("header encodes");
    request.encode(&mut buf, version).expect("request encodes");
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    stream.write_all(&frame).await.expect("request sent");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.expect("answer length");
    let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).await.expect("answer");
    let mut answer = Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, Q::Response::header_version(version))
        .expect("answer header");
    assert_eq!(header.correlation_id, correlation_id);
    Q::Response::decode(&mut answer, version).expect("answer decodes")
}

/// Every broker address the broker names in its Metadata (v1, v12), FindCoordinator (v2, v4) and
/// DescribeCluster (v0, v1) answers on one connection to `address`.
async fn named_addresses(address: SocketAddr) -> Vec<(String, i32)> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut named = Vec::new();
    for (id, version) in [(1, 1), (2, 12)] {
        let answer: MetadataResponse =
            ask(&mut stream, id, &MetadataRequest::default(), version).await;
        named.extend(answer.brokers.iter().map(|b| (b.host.to_string(), b.port)));
    }
    let group = StrBytes::from_static_str("kafka-proxy-test-group");
    let answer: FindCoordinatorResponse = ask(
        &mut stream,
        3,
        &FindCoordinatorRequest::default().with_key(group.clone()),
        2,
    )
    .await;
    named.push((answer.host.to_string(), answer.port));
    let answer: FindCoordinatorResponse = ask(
        &mut stream,
        4,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![group]),
        4,
    )
    .await;
    named.extend(
        answer
            .coordinators
            .iter()
            .map(|c| (c.host.to_string(), c.port)),
    );
    for (id, version) in [(5, 0), (6, 1)] {
        let answer: DescribeClusterResponse =
            ask(&mut stream, id, &DescribeClusterRequest::default(), version).await;
        named.extend(answer.brokers.iter().map(|b| (b.host.to_string(), b.port)));
    }
    named
}

#[tokio::test]
async fn the_brokers_answers_name_the_kafka_proxy_they_came_through() {
    let sidecar = sidecar().await;
    let (_broker, own, shared) = broker_behind(&sidecar, "everyone->kafka").await;
    let proxy = kafka_proxy(&sidecar, "raw->kafka", own, shared).await;

    let through_shared = named_addresses(shared).await;
    assert_eq!(through_shared.len(), 6, "{through_shared:?}");
    assert!(
        through_shared
            .iter()
            .all(|(host, port)| host == "127.0.0.1" && *port == i32::from(shared.port())),
        "the broker advertises the shared proxy: {through_shared:?}"
    );
    let through_kafka_proxy = named_addresses(proxy).await;
    assert_eq!(through_kafka_proxy.len(), 6, "{through_kafka_proxy:?}");
    assert!(
        through_kafka_proxy
            .iter()
            .all(|(host, port)| host == "127.0.0.1" && *port == i32::from(proxy.port())),
        "a kafka proxy names itself: {through_kafka_proxy:?} (proxy {proxy})"
    );
}

#[tokio::test]
async fn without_an_advertised_address_a_kafka_proxy_replaces_its_upstreams() {
    let sidecar = sidecar().await;
    let broker = PrivateBroker::start().await;
    let own: SocketAddr = broker.brokers().parse().expect("address");
    let proxy = sidecar.proxy("plain->kafka", own, "kafka").await;
    let named = named_addresses(proxy).await;
    assert!(
        named
            .iter()
            .all(|(_, port)| *port == i32::from(proxy.port())),
        "{named:?} (proxy {proxy})"
    );
}

/// Bytes a link has carried, both directions (the sidecar's metrics).
async fn bytes(sidecar: &Sidecar, link: &str) -> u64 {
    let text = sidecar
        .http
        .get(format!("{}/metrics", sidecar.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("chaos_bytes_total{") && l.contains(&format!("link=\"{link}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn producer(bootstrap: SocketAddr) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap.to_string())
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "0")
        .create()
        .expect("a producer")
}

async fn deliver(producer: &FutureProducer, payload: &str) {
    producer
        .send(
            FutureRecord::<(), str>::to(TOPIC).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|(error, _)| panic!("{payload} not delivered: {error}"));
}

#[tokio::test]
async fn each_client_stays_on_its_kafka_proxy_so_a_partition_cuts_one_side_only() {
    let sidecar = sidecar().await;
    let (broker, own, shared) = broker_behind(&sidecar, "clients->kafka").await;
    let order = kafka_proxy(&sidecar, "order->kafka", own, shared).await;
    let inventory = kafka_proxy(&sidecar, "inventory->kafka", own, shared).await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", inventory.to_string())
        .create()
        .expect("an admin client");
    admin
        .create_topics(
            &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("topic created");
    let shared_before = bytes(&sidecar, "clients->kafka").await;

    let order_side = producer(order);
    let inventory_side = producer(inventory);
    deliver(&order_side, "order 1").await;
    deliver(&inventory_side, "inventory 1").await;

    let (status, made) = sidecar
        .post(
            "/partitions",
            json!({"name": "order-from-kafka", "sides": [["order"], ["kafka"]], "mode": "hold"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["links"], json!(["order->kafka"]));
    let held = tokio::spawn({
        let order_side = order_side.clone();
        async move { deliver(&order_side, "order 2").await }
    });
    // The inventory side is not cut: its produce goes through while the order side's waits.
    deliver(&inventory_side, "inventory 2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !held.is_finished(),
        "the order side's produce got through a partition of its link (did it reach the broker by another link?)"
    );
    assert_eq!(sidecar.delete("/partitions/order-from-kafka").await, 204);
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the held produce completes after the heal")
        .expect("delivered");

    // A consumer group through the inventory's proxy: its coordinator is found and reached there too.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", inventory.to_string())
        .set("group.id", "kafka-proxy-test-group")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribed");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {seen:?} consumed; broker log:\n{}",
                    broker.log_tail(20)
                )
            })
            .expect("a message");
        use rdkafka::Message;
        seen.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
    }
    seen.sort();
    assert_eq!(seen, ["inventory 1", "inventory 2", "order 1", "order 2"]);

    assert_eq!(
        bytes(&sidecar, "clients->kafka").await,
        shared_before,
        "a client left its kafka proxy for the advertised address"
    );
    assert!(bytes(&sidecar, "order->kafka").await > 0);
    let events = eventually(
        "the cut in the fault log",
        Duration::from_secs(5),
        || async {
            let (_, events) = sidecar.get("/events?link=order-%3Ekafka").await;
            let cut = events["events"]
                .as_array()?
                .iter()
                .find(|e| e["fault"]["name"] == "order-from-kafka")?
                .clone();
            Some(cut)
        },
    )
    .await;
    assert!(events["connections"].as_u64().unwrap_or(0) >= 1, "{events}");
    assert!(events["ended_at"].is_string(), "{events}");
    let (_, inventory_events) = sidecar.get("/events?link=inventory-%3Ekafka").await;
    assert_eq!(
        inventory_events["events"],
        json!([]),
        "the inventory's link was never cut"
    );

    // Dropping a client joins its threads: not on the runtime's.
    tokio::task::spawn_blocking(move || drop((admin, consumer, order_side, inventory_side)))
        .await
        .expect("clients closed");
}

/// A stand-in broker that advertises `127.0.0.1:9092`: a Metadata request (any version) gets the one broker
/// at that address; any other request gets its own bytes back as the answer's body.
async fn fake_broker() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut length = [0u8; 4];
                    if stream.read_exact(&mut length).await.is_err() {
                        return;
                    }
                    let mut request = vec![0u8; i32::from_be_bytes(length) as usize];
                    if stream.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let mut header_bytes = Bytes::copy_from_slice(&request);
                    let api_key = i16::from_be_bytes([request[0], request[1]]);
                    let version = i16::from_be_bytes([request[2], request[3]]);
                    let correlation_id =
                        i32::from_be_bytes([request[4], request[5], request[6], request[7]]);
                    let mut answer = BytesMut::new();
                    if api_key == MetadataRequest::KEY {
                        RequestHeader::decode(
                            &mut header_bytes,
                            MetadataRequest::header_version(version),
                        )
                        .expect("request header");
                        ResponseHeader::default()
                            .with_correlation_id(correlation_id)
                            .encode(&mut answer, MetadataResponse::header_version(version))
                            .expect("header");
                        MetadataResponse::default()
                            .with_brokers(vec![
                                kafka_protocol::messages::metadata_response::MetadataResponseBroker::default()
                                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                                    .with_port(9092),
                            ])
                            .encode(&mut answer, version)
                            .expect("metadata");
                    } else {
                        answer.extend_from_slice(&correlation_id.to_be_bytes());
                        answer.extend_from_slice(&request);
                    }
                    let mut frame = (answer.len() as i32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&answer);
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_kafka_proxy_rewrites_only_the_metadata_answer_and_its_toxics_act_as_on_tcp() {
    let sidecar = sidecar().await;
    let broker = fake_broker().await;
    let proxy = kafka_proxy(
        &sidecar,
        "fake->kafka",
        broker,
        "127.0.0.1:9092".parse().expect("address"),
    )
    .await;
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let answer: MetadataResponse = ask(&mut stream, 1, &MetadataRequest::default(), 12).await;
    assert_eq!(answer.brokers[0].port, i32::from(proxy.port()));

    // A Produce (API key 0) whose bytes hold the advertised address as a Metadata answer spells it: its
    // answer comes back byte for byte.
    let pattern = b"\x00\x09127.0.0.1\x00\x00\x23\x84";
    let mut produce = vec![0, 0, 0, 9, 0, 0, 0, 2];
    produce.extend_from_slice(pattern);
    produce.extend_from_slice(pattern);
    let mut frame = (produce.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&produce);
    stream.write_all(&frame).await.expect("sent");
    let back = read_n(&mut stream, 4 + 4 + produce.len())
        .await
        .expect("answer");
    assert_eq!(&back[8..], &produce[..]);

    // A latency toxic delays a rewritten answer like any chunk.
    sidecar
        .toxic(
            "fake->kafka",
            json!({"type": "latency", "attributes": {"latency": 200}}),
        )
        .await;
    let started = std::time::Instant::now();
    let answer: MetadataResponse = ask(&mut stream, 3, &MetadataRequest::default(), 1).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(answer.brokers[0].port, i32::from(proxy.port()));
}

#[tokio::test]
async fn kafka_proxies_are_made_changed_and_refused_like_the_others() {
    let sidecar = sidecar().await;
    let upstream = unused_local_address();
    let (status, body) = sidecar
        .post(
            "/proxies",
            json!({"name": "a->kafka", "upstream": upstream, "protocol": "kafka"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("advertised").is_none(),
        "absent: the upstream's address: {body}"
    );
    for (body, field) in [
        (
            json!({"name": "b->kafka", "upstream": upstream, "protocol": "kafka", "advertised": "no-port"}),
            "advertised",
        ),
        (
            json!({"name": "b->kafka", "upstream": upstream, "advertised": "127.0.0.1:9092"}),
            "advertised",
        ),
        (
            json!({"name": "b->kafka", "upstream": upstream, "protocol": "amqp"}),
            "protocol",
        ),
    ] {
        let (status, answer) = sidecar.post("/proxies", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_proxy");
        assert_eq!(
            answer["error"]["details"]["errors"][0]["field"], field,
            "{answer}"
        );
    }
    let (status, body) = sidecar
        .post("/proxies/a->kafka", json!({"advertised": "127.0.0.1:9092"}))
        .await;
    assert_eq!(
        (status, &body["advertised"]),
        (200, &json!("127.0.0.1:9092")),
        "{body}"
    );
    // Leaving kafka drops the advertised address; asking for one on a tcp proxy is refused.
    let (status, body) = sidecar
        .post("/proxies/a->kafka", json!({"protocol": "tcp"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("advertised").is_none(), "{body}");
    let (status, body) = sidecar
        .post("/proxies/a->kafka", json!({"advertised": "127.0.0.1:9092"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, proxies) = sidecar.get("/proxies").await;
    assert_eq!(proxies["a->kafka"]["protocol"], "tcp");
    assert_eq!(
        sidecar.delete("/proxies/b->kafka").await,
        404,
        "nothing refused was made"
    );
}
