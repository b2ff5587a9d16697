//! The parts of the local stack: name, port, and what kind of process each is.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The chaos sidecar: started first, with a proxy for every link (see `links`).
    Chaos,
    Postgres {
        databases: &'static [&'static str],
    },
    Kafka,
    Redis,
    ZooKeeper,
    Service {
        binary: &'static str,
        package: &'static str,
    },
    /// A node of the Raft config service; node 3 initialises the cluster once all three run.
    ConfigNode {
        id: u64,
    },
}

/// The chaos sidecar's binary and package.
pub(super) const CHAOS_BINARY: &str = "distlab-chaos";
pub(super) const CHAOS_PACKAGE: &str = "chaos";

/// The config service's binary and package.
pub(super) const CONFIG_BINARY: &str = "distlab-config";
pub(super) const CONFIG_PACKAGE: &str = "config";

#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub name: &'static str,
    pub port: u16,
    pub(super) kind: Kind,
}

impl Part {
    pub(super) fn is_service(&self) -> bool {
        matches!(self.kind, Kind::Service { .. } | Kind::ConfigNode { .. })
    }

    pub(super) fn binary(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Service { binary, .. } => Some(binary),
            Kind::ConfigNode { .. } => Some(CONFIG_BINARY),
            Kind::Chaos => Some(CHAOS_BINARY),
            _ => None,
        }
    }
}

/// Every part, in start order (stopped in reverse).
pub const PARTS: &[Part] = &[
    Part {
        name: "chaos",
        port: super::links::CHAOS_PORT,
        kind: Kind::Chaos,
    },
    Part {
        name: "orders-db",
        port: 15432,
        kind: Kind::Postgres {
            databases: &["orders", "coordinator", "locks"],
        },
    },
    Part {
        name: "inventory-db",
        port: 15433,
        kind: Kind::Postgres {
            databases: &["inventory"],
        },
    },
    Part {
        name: "kafka",
        port: 19092,
        kind: Kind::Kafka,
    },
    Part {
        name: "redis-16379",
        port: 16379,
        kind: Kind::Redis,
    },
    Part {
        name: "redis-16380",
        port: 16380,
        kind: Kind::Redis,
    },
    Part {
        name: "redis-16381",
        port: 16381,
        kind: Kind::Redis,
    },
    Part {
        name: "zookeeper",
        port: 12181,
        kind: Kind::ZooKeeper,
    },
    Part {
        name: "config-1",
        port: 8091,
        kind: Kind::ConfigNode { id: 1 },
    },
    Part {
        name: "config-2",
        port: 8092,
        kind: Kind::ConfigNode { id: 2 },
    },
    Part {
        name: "config-3",
        port: 8093,
        kind: Kind::ConfigNode { id: 3 },
    },
    Part {
        name: "inventory",
        port: 8082,
        kind: Kind::Service {
            binary: "distlab-inventory",
            package: "inventory",
        },
    },
    Part {
        name: "order",
        port: 8081,
        kind: Kind::Service {
            binary: "distlab-order",
            package: "order",
        },
    },
    Part {
        name: "coordinator",
        port: 8083,
        kind: Kind::Service {
            binary: "distlab-coordinator",
            package: "coordinator",
        },
    },
    Part {
        name: "lock",
        port: 8084,
        kind: Kind::Service {
            binary: "distlab-lock",
            package: "lock",
        },
    },
    Part {
        name: "gateway",
        port: 8080,
        kind: Kind::Service {
            binary: "distlab-gateway",
            package: "gateway",
        },
    },
];
