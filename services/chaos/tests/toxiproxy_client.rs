//! The sidecar driven by a Toxiproxy client library nobody here wrote — the `toxiproxy_rust` crate from
//! crates.io (blocking, its own HTTP client) — and the effect checked on real traffic.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::ProxyPack;

#[test]
fn a_published_toxiproxy_client_creates_adds_toxics_disables_and_resets() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (sidecar, echo) = runtime.block_on(async {
        let sidecar = support::sidecar().await;
        let echo = support::echo_server().await;
        (sidecar, echo)
    });
    let client = Client::new(sidecar.addr);
    assert!(client.is_running());
    assert!(client.version().expect("version").contains("2.12.0"));

    let listen = support::unused_local_address();
    let proxies = client
        .populate(vec![ProxyPack::new(
            "client->echo".into(),
            listen.clone(),
            echo.to_string(),
        )])
        .expect("populate");
    assert_eq!(proxies[0].proxy_pack.name, "client->echo");
    assert_eq!(client.all().expect("all").len(), 1);

    let round_trip = || -> std::io::Result<Duration> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&listen)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"ping")?;
        let mut back = [0u8; 4];
        stream.read_exact(&mut back)?;
        assert_eq!(&back, b"ping");
        Ok(started.elapsed())
    };
    assert!(round_trip().expect("clean") < Duration::from_millis(200));

    let proxy = client.find_proxy("client->echo").expect("found");
    proxy
        .with_latency("downstream".into(), 300, 0, 1.0)
        .apply(|| {
            let took = round_trip().expect("slow but through");
            assert!(took >= Duration::from_millis(300), "{took:?}");
        })
        .expect("apply");
    assert!(
        proxy.toxics().expect("toxics").is_empty(),
        "apply removes its toxics"
    );

    proxy
        .with_down(|| assert!(round_trip().is_err(), "a disabled proxy refuses"))
        .expect("down");
    assert!(round_trip().is_ok());

    proxy.with_limit_data("downstream".into(), 2, 1.0);
    assert!(round_trip().is_err(), "only two of four bytes come back");
    client.reset().expect("reset");
    assert!(proxy.toxics().expect("toxics").is_empty());
    assert!(round_trip().is_ok());
    drop(sidecar);
}
