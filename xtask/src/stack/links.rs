//! The links of the local stack: every cross-process connection goes through a proxy of the chaos sidecar,
//! named `client->server` after the two parts it joins. Clients are configured with the proxy's port; the
//! servers keep their own ports (so tests, benchmarks and people still reach them directly).
//!
//! Kafka is the exception that shares: a broker tells its clients one address to reach it (its advertised
//! listener), so the broker advertises the proxy's address and every Kafka client — the services, the
//! tests, the probes — goes through one link, `clients->kafka`. The sidecar's own link to the config
//! service (for switches) is not proxied: breaking the switchboard with itself would be a trap.

use serde_json::{Value, json};

/// The chaos sidecar's admin port.
pub const CHAOS_PORT: u16 = 8474;

/// One proxied link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub name: &'static str,
    /// The proxy's port (17000–17099).
    pub port: u16,
    /// The server's real port.
    pub upstream: u16,
    /// `http` links get the HTTP-aware toxics (`http_error`, `http_latency`).
    pub http: bool,
}

const fn tcp(name: &'static str, port: u16, upstream: u16) -> Link {
    Link {
        name,
        port,
        upstream,
        http: false,
    }
}

const fn http(name: &'static str, port: u16, upstream: u16) -> Link {
    Link {
        name,
        port,
        upstream,
        http: true,
    }
}

/// Every link, by client.
pub const LINKS: &[Link] = &[
    tcp("order->orders-db", 17000, 15432),
    http("order->coordinator", 17001, 8083),
    http("order->config-1", 17002, 8091),
    http("order->config-2", 17003, 8092),
    http("order->config-3", 17004, 8093),
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
    tcp("clients->kafka", 17090, 19092),
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

/// The sidecar's start-up file: every link as a Toxiproxy proxy.
pub fn proxies_json() -> Value {
    Value::Array(
        LINKS
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "listen": format!("127.0.0.1:{}", l.port),
                    "upstream": format!("127.0.0.1:{}", l.upstream),
                    "enabled": true,
                    "protocol": if l.http { "http" } else { "tcp" },
                })
            })
            .collect(),
    )
}

/// The environment that points a service at its links (the variables each service's `--help` names).
pub fn service_env(binary: &str) -> Vec<(&'static str, String)> {
    let pg = |link: &str, db: &str| format!("postgres://postgres@{}/{db}", address(link));
    let kafka = ("KAFKA_BROKERS", address("clients->kafka"));
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
            kafka,
        ],
        "distlab-inventory" => vec![
            ("DATABASE_URL", pg("inventory->inventory-db", "inventory")),
            kafka,
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
        ] {
            assert!(!service_env(binary).is_empty());
        }
        assert_eq!(config_peer_routes(2), "1=127.0.0.1:17042,3=127.0.0.1:17043");
    }
}
