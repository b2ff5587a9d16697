//! The links of the local stack: every cross-process connection goes through a proxy of the chaos sidecar,
//! named `client->server` after the two parts it joins. Clients are configured with the proxy's port; the
//! servers keep their own ports (so tests, benchmarks and people still reach them directly).
//!
//! Kafka needs one more step: a broker tells every client the same address to reach it (its advertised
//! listener), and clients connect there after their first metadata request. The broker advertises the
//! `clients->kafka` proxy, which the tests and probes use. The order and inventory services each bootstrap
//! through a link of their own (`order->kafka`, `inventory->kafka`), proxies with `"protocol": "kafka"`
//! that replace the advertised address in the broker's answers by their own: each service stays on its
//! link, so a partition can cut one service from the broker and not the other. The sidecar's own link to
//! the config service (for switches) is not proxied: breaking the switchboard with itself would be a trap.

use serde_json::{Value, json};

/// The chaos sidecar's admin port.
pub const CHAOS_PORT: u16 = 8474;

/// What a link's proxy understands (the sidecar's `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Bytes.
    Tcp,
    /// HTTP/1.1: the HTTP-aware toxics (`http_error`, `http_latency`) too.
    Http,
    /// Kafka: bytes, and the broker's advertised address (`clients->kafka`'s) in its answers replaced by the
    /// proxy's own, so the client stays on this link.
    Kafka,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Kafka => "kafka",
        }
    }
}

/// One proxied link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub name: &'static str,
    /// The proxy's port (17000–17099).
    pub port: u16,
    /// The server's real port.
    pub upstream: u16,
    pub protocol: Protocol,
}

const fn tcp(name: &'static str, port: u16, upstream: u16) -> Link {
    Link {
        name,
        port,
        upstream,
        protocol: Protocol::Tcp,
    }
}

const fn http(name: &'static str, port: u16, upstream: u16) -> Link {
    Link {
        name,
        port,
        upstream,
        protocol: Protocol::Http,
    }
}

const fn kafka(name: &'static str, port: u16) -> Link {
    Link {
        name,
        port,
        upstream: KAFKA_PORT,
        protocol: Protocol::Kafka,
    }
}

/// The broker's own port.
const KAFKA_PORT: u16 = 19092;

/// The link whose address the broker advertises (see `Kind::Kafka` in `stack`): the clients with no link of
/// their own (tests, probes) end up on it.
pub const KAFKA_ADVERTISED: &str = "clients->kafka";

/// Every link, by client.
pub const LINKS: &[Link] = &[
    tcp("order->orders-db", 17000, 15432),
    http("order->coordinator", 17001, 8083),
    http("order->config-1", 17002, 8091),
    http("order->config-2", 17003, 8092),
    http("order->config-3", 17004, 8093),
    http("order->inventory", 17005, 8082),
    tcp("inventory->inventory-db", 17010, 15433),
    tcp("coordinator->orders-db", 17020, 15432),
    http("coordinator->order", 17021, 8081),
    http("coordinator->inventory", 17022, 8082),
    tcp("lock->orders-db", 17030, 15432),
    tcp("lock->redis-16379", 17031, 16379),
    tcp("lock->redis-16380", 17032, 16380),
    tcp("lock->redis-16381", 17033, 16381),
    tcp("lock->zookeeper", 17034, 12181),
    http("config-1->config-2", 17040, 8092),
    http("config-1->config-3", 17041, 8093),
    http("config-2->config-1", 17042, 8091),
    http("config-2->config-3", 17043, 8093),
    http("config-3->config-1", 17044, 8091),
    http("config-3->config-2", 17045, 8092),
    http("gateway->inventory", 17050, 8082),
    http("gateway->order", 17051, 8081),
    tcp(KAFKA_ADVERTISED, 17090, KAFKA_PORT),
    kafka("order->kafka", 17091),
    kafka("inventory->kafka", 17092),
];

/// The proxy port of a link.
pub fn port(name: &str) -> u16 {
    LINKS
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.port)
        .unwrap_or_else(|| panic!("no link {name}"))
}

/// `127.0.0.1:<proxy port>` of a link.
pub fn address(name: &str) -> String {
    format!("127.0.0.1:{}", port(name))
}

/// Where the stack runs: which addresses the sidecar's proxies listen on and reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// `cargo xtask up`: every part on 127.0.0.1, on its own port.
    Local,
    /// `deploy/docker-compose.yml`: every part in its own container, reached by its compose service name
    /// on its port inside the container; the sidecar is the container `chaos`.
    Compose,
}

/// The compose service and in-container port of the part a local-stack port belongs to.
fn compose_address(local_port: u16) -> String {
    let (host, port) = match local_port {
        15432 => ("orders-db", 5432),
        15433 => ("inventory-db", 5432),
        KAFKA_PORT => ("kafka", 9092),
        16379 => ("redis-1", 6379),
        16380 => ("redis-2", 6379),
        16381 => ("redis-3", 6379),
        12181 => ("zookeeper", 2181),
        8081 => ("order", 8081),
        8082 => ("inventory", 8082),
        8083 => ("coordinator", 8083),
        8084 => ("lock", 8084),
        CHAOS_PORT => ("chaos", CHAOS_PORT),
        8091 => ("config-1", 8091),
        8092 => ("config-2", 8092),
        8093 => ("config-3", 8093),
        other => panic!("no compose service has local port {other}"),
    };
    format!("{host}:{port}")
}

/// The sidecar's start-up file of the local stack: every link as a Toxiproxy proxy.
pub fn proxies_json() -> Value {
    proxies_json_for(Network::Local)
}

/// The sidecar's start-up file: every link as a Toxiproxy proxy, for the local stack or for compose
/// (`deploy/chaos-proxies.json`, which a test keeps equal to this).
pub fn proxies_json_for(network: Network) -> Value {
    let (listen_host, sidecar) = match network {
        Network::Local => ("127.0.0.1", "127.0.0.1"),
        Network::Compose => ("0.0.0.0", "chaos"),
    };
    Value::Array(
        LINKS
            .iter()
            .map(|l| {
                let upstream = match network {
                    Network::Local => format!("127.0.0.1:{}", l.upstream),
                    Network::Compose => compose_address(l.upstream),
                };
                let mut proxy = json!({
                    "name": l.name,
                    "listen": format!("{listen_host}:{}", l.port),
                    "upstream": upstream,
                    "enabled": true,
                    "protocol": l.protocol.as_str(),
                });
                if l.protocol == Protocol::Kafka {
                    proxy["advertised"] = json!(format!("{sidecar}:{}", port(KAFKA_ADVERTISED)));
                }
                proxy
            })
            .collect(),
    )
}

/// The environment that points a service at its links (the variables each service's `--help` names).
pub fn service_env(binary: &str) -> Vec<(&'static str, String)> {
    let pg = |link: &str, db: &str| format!("postgres://postgres@{}/{db}", address(link));
    let kafka = |link: &str| ("KAFKA_BROKERS", address(link));
    match binary {
        "distlab-order" => vec![
            ("DATABASE_URL", pg("order->orders-db", "orders")),
            (
                "COORDINATOR_URL",
                format!("http://{}", address("order->coordinator")),
            ),
            (
                "CONFIG_URLS",
                ["order->config-1", "order->config-2", "order->config-3"]
                    .map(|l| format!("http://{}", address(l)))
                    .join(","),
            ),
            kafka("order->kafka"),
            (
                "INVENTORY_URL",
                format!("http://{}", address("order->inventory")),
            ),
        ],
        "distlab-inventory" => vec![
            ("DATABASE_URL", pg("inventory->inventory-db", "inventory")),
            kafka("inventory->kafka"),
        ],
        "distlab-coordinator" => vec![
            ("DATABASE_URL", pg("coordinator->orders-db", "coordinator")),
            (
                "PARTICIPANTS",
                format!(
                    "order=http://{},inventory=http://{}",
                    address("coordinator->order"),
                    address("coordinator->inventory")
                ),
            ),
        ],
        "distlab-lock" => {
            let redis = |port: u16| format!("redis://{}", address(&format!("lock->redis-{port}")));
            vec![
                ("DATABASE_URL", pg("lock->orders-db", "locks")),
                ("REDIS_URL", redis(16379)),
                ("REDLOCK_URLS", [16379, 16380, 16381].map(redis).join(",")),
                ("ZOOKEEPER", address("lock->zookeeper")),
            ]
        }
        "distlab-gateway" => vec![
            (
                "INVENTORY_URL",
                format!("http://{}", address("gateway->inventory")),
            ),
            ("ORDER_URL", format!("http://{}", address("gateway->order"))),
            // The console watches the stack directly, not through links a fault could cut.
            ("CHAOS_URL", format!("http://127.0.0.1:{CHAOS_PORT}")),
            ("COORDINATOR_URL", "http://127.0.0.1:8083".into()),
            ("LOCK_URL", "http://127.0.0.1:8084".into()),
            ("CONSOLE_ORDER_URL", "http://127.0.0.1:8081".into()),
        ],
        _ => Vec::new(),
    }
}

/// `PEER_ROUTES` of config node `id`: each peer through the link `config-<id>->config-<peer>`.
pub fn config_peer_routes(id: u64) -> String {
    (1..=3)
        .filter(|peer| *peer != id)
        .map(|peer| format!("{peer}={}", address(&format!("config-{id}->config-{peer}"))))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_in_the_proxy_range() {
        let mut ports: Vec<u16> = LINKS.iter().map(|l| l.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), LINKS.len());
        assert!(ports.iter().all(|p| (17000..=17099).contains(p)));
    }

    #[test]
    fn every_link_a_service_is_given_exists() {
        for binary in [
            "distlab-order",
            "distlab-inventory",
            "distlab-coordinator",
            "distlab-lock",
            "distlab-gateway",
        ] {
            assert!(!service_env(binary).is_empty());
        }
        assert_eq!(config_peer_routes(2), "1=127.0.0.1:17042,3=127.0.0.1:17043");
    }

    #[test]
    fn each_service_reaches_kafka_through_its_own_link_which_replaces_the_advertised_address() {
        let brokers = |binary| {
            service_env(binary)
                .into_iter()
                .find(|(name, _)| *name == "KAFKA_BROKERS")
                .map(|(_, value)| value)
        };
        assert_eq!(brokers("distlab-order").as_deref(), Some("127.0.0.1:17091"));
        assert_eq!(
            brokers("distlab-inventory").as_deref(),
            Some("127.0.0.1:17092")
        );
        let proxies = proxies_json();
        let kafka: Vec<&Value> = proxies
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["protocol"] == "kafka")
            .collect();
        assert_eq!(kafka.len(), 2);
        for proxy in kafka {
            assert_eq!(proxy["upstream"], "127.0.0.1:19092");
            assert_eq!(proxy["advertised"], "127.0.0.1:17090");
        }
        assert!(proxies[0].get("advertised").is_none());
    }

    fn deploy_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_compose_sidecar_file_is_the_link_table() {
        let committed: Value = serde_json::from_str(&deploy_file("chaos-proxies.json")).unwrap();
        assert_eq!(
            committed,
            proxies_json_for(Network::Compose),
            "deploy/chaos-proxies.json is out of date: run `cargo xtask compose proxies`"
        );
    }

    #[test]
    fn compose_gives_each_service_the_links_of_the_local_stack() {
        let compose = deploy_file("docker-compose.yml");
        // A link's proxy port is the sidecar's in compose; any other port is its part's own service.
        let in_compose = |value: &str| {
            let mut out = String::new();
            let mut rest = value;
            while let Some(at) = rest.find("127.0.0.1:") {
                out.push_str(&rest[..at]);
                rest = &rest[at + "127.0.0.1:".len()..];
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let port: u16 = rest[..digits].parse().unwrap();
                if (17000..=17099).contains(&port) {
                    out.push_str(&format!("chaos:{port}"));
                } else {
                    out.push_str(&compose_address(port));
                }
                rest = &rest[digits..];
            }
            out.push_str(rest);
            out
        };
        for binary in [
            "distlab-order",
            "distlab-inventory",
            "distlab-coordinator",
            "distlab-lock",
            "distlab-gateway",
        ] {
            for (name, value) in service_env(binary) {
                let line = format!("{name}: {}", in_compose(&value));
                assert!(compose.contains(&line), "{binary}: compose lacks `{line}`");
            }
        }
        for id in 1..=3 {
            let line = format!("PEER_ROUTES: {}", in_compose(&config_peer_routes(id)));
            assert!(
                compose.contains(&line),
                "config-{id}: compose lacks `{line}`"
            );
        }
    }
}
