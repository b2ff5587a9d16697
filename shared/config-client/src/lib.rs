//! The client side of the config service (`services/config`, the seed's Raft section 六): what a service
//! needs to read its runtime switches from the replicated key-value store and to obey them without a
//! restart — and the one place where the config service's wire contract is written down.
//!
//! **The contract** ([`wire`]). The config nodes serve, and every client speaks, the same paths, headers
//! (`x-distlab-revision`, `x-distlab-forwarded-by`/`-to`), bodies, watch events and error codes. Services
//! never link each other's crates, so both sides link this one: a field renamed here is renamed for both.
//!
//! **Reading and writing** ([`ConfigClient`]). `get` (linearizable, or stale from any node), `put`,
//! compare-and-set `put_if` and `delete`, against a list of nodes tried in turn: any node serves any
//! request because followers forward writes and linearizable reads to the leader. A node that cannot serve
//! (unreachable, 503 on the minority side of a partition) is skipped; a write whose fate is unknown is
//! repeated only when repeating it is harmless. Errors are a [`ClientError`].
//!
//! **Following a key** ([`Follower`], [`FollowedKey`]). A background task that keeps one key's latest
//! value in memory, so that a request handler reads it without waiting on the network:
//!
//! 1. it reads the key from a node with a stale read (any node answers, even one cut off from the
//!    majority), noting the node's store revision;
//! 2. it watches the key from that revision (`GET /v1/watch`, Server-Sent Events, parsed by [`sse`]), so
//!    no change after the read is missed, and applies each `put` and `delete`;
//! 3. when the node stops answering — refused, an error status, the stream ending, or silence longer than
//!    [`IDLE_TIMEOUT`] although nodes send a keep-alive every 5 s — it moves to the next node after a
//!    backoff and resumes the watch after the last revision it saw, without a gap; a `410 compacted`
//!    makes it read the key again.
//!
//! While no node answers, the last known value stays in force — availability over freshness — and the
//! handle's [`FollowStatus`] says so (`following: false`, `stale_since`, `last_error`), for `/readyz`
//! ([`FollowedKey::detail`], [`FollowedKey::readiness_check`]). Each value goes through the key's parser
//! ([`FollowedKey::parsed`]): a value it refuses is ignored, the last good one stays, and the refusal is
//! reported; a value older than the one in force (from a lagging node) is ignored.
//!
//! **Switches** ([`switches`]). The keys `distlab/switches/{name}` ([`SWITCH_PREFIX`], [`switch_key`])
//! hold JSON strings such as `"CP"`/`"AP"` or `"off"`/`"auto"`/`"on"`: set with
//! [`ConfigClient::put_switch`], followed with [`Follower::switch`].
//!
//! The order service follows its default order mode (`distlab/order/default_mode`) this way; see
//! docs/raft-config.md.

pub mod client;
pub mod followed;
pub mod follower;
pub mod sse;
pub mod switches;
pub mod wire;

pub use client::{
    ATTEMPT_TIMEOUT, BuildError, CONNECT_TIMEOUT, ClientError, ConfigClient, NodeFailure,
};
pub use followed::{FollowStatus, FollowedKey, InvalidValue, KeyState, Latest, Versioned};
pub use follower::{FollowError, Follower, IDLE_TIMEOUT, RECONNECT_BACKOFF, REQUEST_TIMEOUT};
pub use switches::{SWITCH_PREFIX, SwitchValueError, parse_switch, switch_key};
pub use wire::{Consistency, KeyValue, Revision, Written};

/// The config service nodes' base URLs from a comma-separated list (as `CONFIG_URLS` gives them): blanks
/// dropped, no trailing `/`. An empty list means "do not follow the config service".
pub fn node_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|url| url.trim().trim_end_matches('/'))
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_urls_drop_blanks_and_trailing_slashes() {
        assert_eq!(
            super::node_urls(" http://a:1/ ,,http://b:2"),
            ["http://a:1", "http://b:2"]
        );
        assert!(super::node_urls("").is_empty());
    }
}
