//! Real TCP and HTTP traffic through an in-process sidecar: each toxic's effect, measured within a
//! tolerance; enabling and disabling; partitions in both modes; HTTP toxics by path and method on
//! keep-alive and pipelined connections; the fault log; bad input on the admin API.
//!
//! Durations are asserted from below exactly (a fault never acts early) and from above with a generous
//! margin (a loaded CI machine is slow, not wrong).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MARGIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_clean_proxy_passes_bytes_both_ways() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back = round_trip(&mut stream, &big, big.len())
        .await
        .expect("echo");
    assert_eq!(back, big);
}

#[tokio::test]
async fn latency_is_added_to_each_direction() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    round_trip(&mut stream, b"warm", 4).await.expect("echo");
    sidecar
        .toxic(
            "test->echo",
            json!({"type": "latency", "attributes": {"latency": 150}}),
        )
        .await;
    sidecar
        .toxic(
            "test->echo",
            json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 100, "jitter": 0}}),
        )
        .await;
    // An open connection takes the toxic from its next chunk.
    let started = Instant::now();
    round_trip(&mut stream, b"ping", 4).await.expect("echo");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(250) + MARGIN, "{took:?}");
}

#[tokio::test]
async fn bandwidth_limits_the_rate() {
    let sidecar = sidecar().await;
    let payload = vec![7u8; 100_000];
    let listen = sidecar
        .proxy("test->sender", sender_server(payload).await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->sender",
            json!({"type": "bandwidth", "attributes": {"rate": 200}}),
        )
        .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let got = read_to_end(&mut stream).await.expect("read");
    let took = started.elapsed();
    assert_eq!(got.len(), 100_000);
    // 100 KB at 200 KB/s: half a second.
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_millis(500) + MARGIN, "{took:?}");
}

#[tokio::test]
async fn timeout_zero_holds_data_until_removed() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->echo",
            json!({"type": "timeout", "attributes": {"timeout": 0}}),
        )
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream.write_all(b"held").await.expect("write");
    assert!(silent_for(&mut stream, Duration::from_millis(300)).await);
    assert_eq!(
        sidecar
            .delete("/proxies/test->echo/toxics/timeout_downstream")
            .await,
        204
    );
    assert_eq!(read_n(&mut stream, 4).await.expect("released"), b"held");
}

#[tokio::test]
async fn timeout_closes_the_connection_after_its_time() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->echo",
            json!({"type": "timeout", "attributes": {"timeout": 200}}),
        )
        .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream.write_all(b"lost").await.expect("write");
    let got = read_to_end(&mut stream).await.unwrap_or_default();
    let took = started.elapsed();
    assert!(got.is_empty(), "nothing passes a timeout toxic");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(200) + MARGIN, "{took:?}");
}

#[tokio::test]
async fn reset_peer_resets_the_connection() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->echo",
            json!({"type": "reset_peer", "attributes": {"timeout": 100}}),
        )
        .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let error = read_to_end(&mut stream).await.expect_err("reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn slicer_splits_writes() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->sender", sender_server(vec![1u8; 1000]).await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->sender",
            json!({"type": "slicer", "attributes": {"average_size": 10, "size_variation": 0, "delay": 2000}}),
        )
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let mut reads = 0;
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
            .await
            .expect("read");
        if n == 0 {
            break;
        }
        assert!(
            n <= 100,
            "a read of {n} bytes: the slices were not kept apart"
        );
        reads += 1;
        total += n;
    }
    assert_eq!(total, 1000);
    // 100 slices 2 ms apart; a busy reader may see a few together, never all.
    assert!(reads >= 20, "{reads} reads");
}

#[tokio::test]
async fn limit_data_closes_after_the_limit() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy(
            "test->sender",
            sender_server(vec![3u8; 10_000]).await,
            "tcp",
        )
        .await;
    sidecar
        .toxic(
            "test->sender",
            json!({"type": "limit_data", "attributes": {"bytes": 1000}}),
        )
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let got = read_to_end(&mut stream).await.expect("closed, not reset");
    assert_eq!(got.len(), 1000);
}

#[tokio::test]
async fn slow_close_delays_the_close() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->sender", sender_server(b"bye".to_vec()).await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->sender",
            json!({"type": "slow_close", "attributes": {"delay": 300}}),
        )
        .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let got = read_to_end(&mut stream).await.expect("read");
    let took = started.elapsed();
    assert_eq!(got, b"bye");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(300) + MARGIN, "{took:?}");
}

#[tokio::test]
async fn toxicity_zero_never_applies_and_one_always_does() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    sidecar
        .toxic(
            "test->echo",
            json!({"name": "never", "type": "timeout", "toxicity": 0.0, "attributes": {"timeout": 0}}),
        )
        .await;
    for _ in 0..5 {
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(
            round_trip(&mut stream, b"ok", 2).await.expect("echo"),
            b"ok"
        );
    }
    sidecar
        .toxic(
            "test->echo",
            json!({"name": "always", "type": "timeout", "toxicity": 1.0, "attributes": {"timeout": 0}}),
        )
        .await;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        stream.write_all(b"no").await.expect("write");
        assert!(silent_for(&mut stream, Duration::from_millis(100)).await);
    }
    let (_, events) = sidecar.get("/events?link=test->echo").await;
    let hits = |name: &str| {
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["fault"]["name"] == name)
            .map(|e| e["connections"].as_u64().unwrap_or(0))
    };
    assert_eq!(hits("never"), Some(0));
    // At least the three new connections; an earlier one still closing may have seen it too.
    assert!(hits("always").is_some_and(|n| n >= 3), "{events}");
}

#[tokio::test]
async fn a_disabled_proxy_closes_its_connections_and_refuses_new_ones() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    let mut open = TcpStream::connect(listen).await.expect("connect");
    round_trip(&mut open, b"hi", 2).await.expect("echo");
    let (status, body) = sidecar
        .post("/proxies/test->echo", json!({"enabled": false}))
        .await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)));
    assert!(read_to_end(&mut open).await.unwrap_or_default().is_empty());
    assert!(
        TcpStream::connect(listen).await.is_err(),
        "the listener is closed"
    );
    let (status, _) = sidecar
        .post("/proxies/test->echo", json!({"enabled": true}))
        .await;
    assert_eq!(status, 200);
    let mut again = TcpStream::connect(listen)
        .await
        .expect("same address again");
    assert_eq!(
        round_trip(&mut again, b"back", 4).await.expect("echo"),
        b"back"
    );
}

/// Three parts: a talks to b and to c; b talks to a.
async fn triangle(
    sidecar: &Sidecar,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let echo = echo_server().await;
    (
        sidecar.proxy("a->b", echo, "tcp").await,
        sidecar.proxy("b->a", echo, "tcp").await,
        sidecar.proxy("a->c", echo, "tcp").await,
    )
}

#[tokio::test]
async fn a_hold_partition_cuts_both_directions_and_heals() {
    let sidecar = sidecar().await;
    let (a_b, b_a, a_c) = triangle(&sidecar).await;
    let mut before = TcpStream::connect(a_b).await.expect("connect");
    round_trip(&mut before, b"1", 1).await.expect("echo");
    let (status, body) = sidecar
        .post(
            "/partitions",
            json!({"name": "split", "sides": [["a"], ["b"]]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["links"], json!(["a->b", "b->a"]));
    // Open connection: held. New connections both ways: accepted, held.
    before.write_all(b"2").await.expect("write");
    let mut new_ab = TcpStream::connect(a_b).await.expect("accepted");
    new_ab.write_all(b"3").await.expect("write");
    let mut new_ba = TcpStream::connect(b_a).await.expect("accepted");
    new_ba.write_all(b"4").await.expect("write");
    assert!(silent_for(&mut before, Duration::from_millis(300)).await);
    assert!(silent_for(&mut new_ab, Duration::from_millis(50)).await);
    assert!(silent_for(&mut new_ba, Duration::from_millis(50)).await);
    // The link to c is not cut.
    let mut to_c = TcpStream::connect(a_c).await.expect("connect");
    assert_eq!(round_trip(&mut to_c, b"c", 1).await.expect("echo"), b"c");
    assert_eq!(sidecar.delete("/partitions/split").await, 204);
    assert_eq!(read_n(&mut before, 1).await.expect("released"), b"2");
    assert_eq!(read_n(&mut new_ab, 1).await.expect("released"), b"3");
    assert_eq!(read_n(&mut new_ba, 1).await.expect("released"), b"4");
    let (_, events) = sidecar.get("/events?link=a->b").await;
    let cut = &events["events"][0];
    assert_eq!(cut["fault"]["name"], "split");
    assert_eq!(cut["connections"], 2);
    assert!(cut["ended_at"].is_string());
}

#[tokio::test]
async fn a_reset_partition_resets_open_and_new_connections() {
    let sidecar = sidecar().await;
    let (a_b, b_a, _) = triangle(&sidecar).await;
    let mut before = TcpStream::connect(a_b).await.expect("connect");
    round_trip(&mut before, b"1", 1).await.expect("echo");
    let (status, _) = sidecar
        .post(
            "/partitions",
            json!({"name": "firewall", "sides": [["a"], ["b"]], "mode": "reset"}),
        )
        .await;
    assert_eq!(status, 201);
    let error = read_to_end(&mut before).await.expect_err("reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    let mut new_ba = TcpStream::connect(b_a).await.expect("accepted, then reset");
    let error = read_to_end(&mut new_ba).await.expect_err("reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(sidecar.delete("/partitions/firewall").await, 204);
    let mut after = TcpStream::connect(a_b).await.expect("connect");
    assert_eq!(round_trip(&mut after, b"ok", 2).await.expect("echo"), b"ok");
}

#[tokio::test]
async fn http_error_answers_matching_requests_only() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("client->web", http_server().await, "http")
        .await;
    sidecar
        .toxic(
            "client->web",
            json!({"name": "orders-down", "type": "http_error", "stream": "upstream",
                   "attributes": {"status": 503, "path_prefix": "/orders", "method": "POST"}}),
        )
        .await;
    // One keep-alive client: every request on the same connection, judged one by one.
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    for _ in 0..3 {
        let hit = client
            .post(format!("{base}/orders/1"))
            .header("x-request-id", "req-42")
            .send()
            .await
            .expect("answer");
        assert_eq!(hit.status(), 503);
        assert_eq!(
            hit.headers()["x-distlab-chaos-fault"],
            "client->web/orders-down"
        );
        let body: Value = hit.json().await.expect("error body");
        assert_eq!(body["error"]["code"], "chaos_http_error");
        let miss = client
            .get(format!("{base}/orders/1"))
            .send()
            .await
            .expect("answer");
        assert_eq!(miss.text().await.expect("body"), "upstream GET /orders/1");
        let other = client
            .post(format!("{base}/stock"))
            .send()
            .await
            .expect("answer");
        assert_eq!(other.text().await.expect("body"), "upstream POST /stock");
    }
    let (_, events) = sidecar.get("/events?link=client->web").await;
    assert_eq!(events["events"][0]["requests"], 3);
}

#[tokio::test]
async fn pipelined_requests_are_judged_one_by_one_and_answered_in_order() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("client->web", http_server().await, "http")
        .await;
    sidecar
        .toxic(
            "client->web",
            json!({"type": "http_error", "attributes": {"status": 418, "body": "teapot", "path_prefix": "/b"}}),
        )
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream
        .write_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\nGET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    let answer = String::from_utf8(read_to_end(&mut stream).await.expect("read")).expect("text");
    let a = answer.find("upstream GET /a").expect("first answer");
    let b = answer.find("teapot").expect("second answer");
    let c = answer.find("upstream GET /c").expect("third answer");
    assert!(a < b && b < c, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 418").count(), 1, "{answer}");
}

#[tokio::test]
async fn http_latency_delays_matching_paths() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("client->web", http_server().await, "http")
        .await;
    sidecar
        .toxic(
            "client->web",
            json!({"type": "http_latency", "attributes": {"latency": 300, "path_prefix": "/slow"}}),
        )
        .await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let slow = client
        .get(format!("http://{listen}/slow/x"))
        .send()
        .await
        .expect("answer");
    let took = started.elapsed();
    assert_eq!(
        slow.headers()["x-distlab-chaos-fault"],
        "client->web/http_latency_downstream"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let started = Instant::now();
    let fast = client
        .get(format!("http://{listen}/fast"))
        .send()
        .await
        .expect("answer");
    assert!(fast.headers().get("x-distlab-chaos-fault").is_none());
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn http_toxics_need_an_http_proxy() {
    let sidecar = sidecar().await;
    sidecar
        .proxy("client->db", echo_server().await, "tcp")
        .await;
    let (status, body) = sidecar
        .post(
            "/proxies/client->db/toxics",
            json!({"type": "http_error", "attributes": {"status": 500}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_toxic"))
    );
}

#[tokio::test]
async fn a_proxy_given_a_new_upstream_listens_again_on_its_port_at_once() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("test->echo", echo_server().await, "tcp")
        .await;
    let sender = sender_server(b"from the new upstream".to_vec()).await;
    // The old listener must be closed before the new one binds the same port.
    let (status, body) = sidecar
        .post(
            "/proxies/test->echo",
            json!({"upstream": sender.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["listen"], listen.to_string());
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    assert_eq!(
        read_to_end(&mut stream).await.expect("read"),
        b"from the new upstream"
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let sidecar = sidecar().await;
    let echo = echo_server().await;
    let listen = sidecar.proxy("a->b", echo, "tcp").await;
    let (_, before) = sidecar.get("/proxies").await;
    let raw = |path: &str, body: &'static str| {
        let request = sidecar
            .http
            .post(format!("{}{path}", sidecar.base))
            .body(body);
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    assert_eq!(raw("/proxies", "{not json").await, 400);
    assert_eq!(raw("/proxies/a->b/toxics", "{not json").await, 400);
    let cases: [(&str, Value, u16, &str); 9] = [
        (
            "/proxies/a->b/toxics",
            json!({"type": "gremlin"}),
            400,
            "invalid_toxic_type",
        ),
        (
            "/proxies/a->b/toxics",
            json!({"type": "latency", "attributes": {"latency": -5}}),
            400,
            "invalid_toxic",
        ),
        (
            "/proxies/a->b/toxics",
            json!({"type": "latency", "toxicity": 1.5}),
            400,
            "invalid_toxic",
        ),
        (
            "/proxies/nope/toxics",
            json!({"type": "latency"}),
            404,
            "proxy_not_found",
        ),
        (
            "/proxies",
            json!({"name": "a->b", "upstream": echo.to_string()}),
            409,
            "proxy_exists",
        ),
        (
            "/proxies",
            json!({"name": "x->y", "listen": listen.to_string(), "upstream": echo.to_string()}),
            409,
            "listen_address_in_use",
        ),
        ("/proxies", json!({"name": "x->y"}), 400, "invalid_proxy"),
        (
            "/partitions",
            json!({"name": "p", "sides": [["a"], ["mars"]]}),
            422,
            "validation_failed",
        ),
        (
            "/partitions",
            json!({"name": "p", "sides": [["a"]]}),
            422,
            "validation_failed",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = sidecar.post(path, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(sidecar.delete("/proxies/a->b/toxics/none").await, 404);
    assert_eq!(sidecar.delete("/partitions/none").await, 404);
    let (_, after) = sidecar.get("/proxies").await;
    assert_eq!(before, after);
    let (_, partitions) = sidecar.get("/partitions").await;
    assert_eq!(partitions, json!({"partitions": []}));
}

#[tokio::test]
async fn reset_enables_everything_and_removes_every_fault() {
    let sidecar = sidecar().await;
    let (a_b, _, _) = triangle(&sidecar).await;
    sidecar.toxic("a->b", json!({"type": "timeout"})).await;
    sidecar
        .post("/proxies/a->c", json!({"enabled": false}))
        .await;
    sidecar
        .post("/partitions", json!({"name": "p", "sides": [["a"], ["b"]]}))
        .await;
    let (status, _) = sidecar.post("/reset", Value::Null).await;
    assert_eq!(status, 204);
    let (_, proxies) = sidecar.get("/proxies").await;
    for proxy in proxies.as_object().expect("map").values() {
        assert_eq!(proxy["enabled"], true);
        assert_eq!(proxy["toxics"], json!([]));
        assert_eq!(proxy["cut_by"], json!([]));
    }
    let mut stream = TcpStream::connect(a_b).await.expect("connect");
    assert_eq!(
        round_trip(&mut stream, b"ok", 2).await.expect("echo"),
        b"ok"
    );
}

#[tokio::test]
async fn an_admin_token_protects_everything_but_health() {
    let sidecar = sidecar_with(Some("s3cret")).await;
    let (status, body) = sidecar.get("/proxies").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(sidecar.get("/healthz").await.0, 200);
    let ok = sidecar
        .http
        .get(format!("{}/proxies", sidecar.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn metrics_count_links_and_faults() {
    let sidecar = sidecar().await;
    let listen = sidecar
        .proxy("metered->echo", echo_server().await, "tcp")
        .await;
    sidecar
        .toxic(
            "metered->echo",
            json!({"type": "latency", "attributes": {"latency": 1}}),
        )
        .await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    round_trip(&mut stream, b"count me", 8).await.expect("echo");
    let text = sidecar
        .http
        .get(format!("{}/metrics", sidecar.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for expected in [
        "chaos_connections_total{link=\"metered->echo\"}",
        "chaos_bytes_total{link=\"metered->echo\",stream=\"upstream\"}",
        "chaos_fault_hits_total{link=\"metered->echo\",fault=\"latency\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}

#[tokio::test]
async fn the_active_faults_gauge_follows_toxics_and_disabling() {
    let sidecar = sidecar().await;
    // A link name of its own: tests in one process share the metrics recorder.
    sidecar
        .proxy("faulted->echo", echo_server().await, "tcp")
        .await;
    let active = |kind: &str| {
        let series = format!("chaos_active_faults{{link=\"faulted->echo\",kind=\"{kind}\"}} ");
        let sidecar = &sidecar;
        async move {
            let text = sidecar
                .http
                .get(format!("{}/metrics", sidecar.base))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
                .trim()
                .parse::<f64>()
                .expect("a number")
        }
    };
    // Exported before the first fault.
    for kind in ["toxic", "partition", "disabled"] {
        assert_eq!(active(kind).await, 0.0, "{kind}");
    }
    for name in ["slow", "slower"] {
        sidecar
            .toxic(
                "faulted->echo",
                json!({"name": name, "type": "latency", "attributes": {"latency": 1}}),
            )
            .await;
    }
    assert_eq!(active("toxic").await, 2.0);
    // An update replaces the toxic: still two.
    let (status, body) = sidecar
        .post(
            "/proxies/faulted->echo/toxics/slow",
            json!({"attributes": {"latency": 2}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(active("toxic").await, 2.0);
    assert_eq!(
        sidecar.delete("/proxies/faulted->echo/toxics/slow").await,
        204
    );
    assert_eq!(active("toxic").await, 1.0);
    let (status, body) = sidecar
        .post("/proxies/faulted->echo", json!({"enabled": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(active("disabled").await, 1.0);
    // Deleting the proxy ends all of its faults.
    assert_eq!(sidecar.delete("/proxies/faulted->echo").await, 204);
    assert_eq!(active("toxic").await, 0.0);
    assert_eq!(active("disabled").await, 0.0);
}
