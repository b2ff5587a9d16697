//! Partitions by part name (pure: no IO).
//!
//! Every proxy is named after the link it carries, `client->server` (`order->orders-db`,
//! `config-1->config-2`); the two names are the link's *parts*. A partition lists sides, each a set of
//! parts: `{"name": "split", "sides": [["order", "orders-db"], ["inventory"]]}`. It cuts every link whose
//! two parts lie on different sides — both directions, open connections and new ones. Parts a partition
//! does not name are not affected, so a link between a listed and an unlisted part keeps working.
//!
//! What a cut does on the wire ([`CutMode`]):
//! - `hold` (default): nothing passes, nothing is closed. Bytes wait in the proxy and new connections are
//!   accepted but not connected onward, as when cables are pulled: TCP keeps its connections and
//!   retransmits, so clients see time-outs, not errors; on heal the held bytes flow on (unless a peer gave
//!   up first). This is the partition of the CAP theorem.
//! - `reset`: open connections are reset (TCP RST) and new ones reset at once, as when a firewall rejects:
//!   clients fail fast with "connection reset".

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::toxic::{Problem, check_name};

/// What a cut does to the bytes and connections of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CutMode {
    #[default]
    Hold,
    Reset,
}

/// A proxy's name split into its two parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkName<'a> {
    pub client: &'a str,
    pub server: &'a str,
}

impl<'a> LinkName<'a> {
    /// `client->server`; a proxy named otherwise (e.g. by a Toxiproxy client) has no parts and is never cut.
    pub fn parse(name: &'a str) -> Option<Self> {
        let (client, server) = name.split_once("->")?;
        (!client.is_empty() && !server.is_empty() && !server.contains("->"))
            .then_some(LinkName { client, server })
    }
}

/// A partition as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Partition {
    pub name: String,
    pub sides: Vec<BTreeSet<String>>,
    pub mode: CutMode,
}

impl Partition {
    /// Checks a request against the parts of the links that exist. Every problem is reported.
    pub fn parse(
        name: &str,
        sides: Vec<Vec<String>>,
        mode: CutMode,
        known_parts: &BTreeSet<String>,
    ) -> Result<Partition, Vec<Problem>> {
        let mut problems = Vec::new();
        check_name(name, "name", &mut problems);
        if sides.iter().filter(|side| !side.is_empty()).count() < 2 {
            problems.push(problem("sides", "needs at least two non-empty sides"));
        }
        let mut seen = BTreeSet::new();
        let mut unknown = Vec::new();
        let mut twice = Vec::new();
        for part in sides.iter().flatten() {
            if !known_parts.contains(part) {
                unknown.push(part.clone());
            }
            if !seen.insert(part.clone()) {
                twice.push(part.clone());
            }
        }
        if !unknown.is_empty() {
            problems.push(problem(
                "sides",
                &format!(
                    "unknown part(s): {}; known parts: {}",
                    unknown.join(", "),
                    known_parts.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !twice.is_empty() {
            problems.push(problem(
                "sides",
                &format!("part(s) on more than one side: {}", twice.join(", ")),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Partition {
            name: name.to_owned(),
            sides: sides
                .into_iter()
                .filter(|side| !side.is_empty())
                .map(|side| side.into_iter().collect())
                .collect(),
            mode,
        })
    }

    fn side_of(&self, part: &str) -> Option<usize> {
        self.sides.iter().position(|side| side.contains(part))
    }

    /// Whether this partition cuts the link named `link`.
    pub fn cuts(&self, link: &str) -> bool {
        let Some(link) = LinkName::parse(link) else {
            return false;
        };
        match (self.side_of(link.client), self.side_of(link.server)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }
}

fn problem(field: &str, message: &str) -> Problem {
    Problem {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// The parts named by a set of links.
pub fn parts<'a>(links: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    links
        .into_iter()
        .filter_map(LinkName::parse)
        .flat_map(|l| [l.client.to_owned(), l.server.to_owned()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: [&str; 5] = [
        "order->orders-db",
        "order->inventory",
        "inventory->inventory-db",
        "order->kafka",
        "inventory->kafka",
    ];

    fn sides(sides: &[&[&str]]) -> Vec<Vec<String>> {
        sides
            .iter()
            .map(|s| s.iter().map(|p| (*p).to_owned()).collect())
            .collect()
    }

    #[test]
    fn link_names_have_two_parts() {
        assert_eq!(
            LinkName::parse("order->orders-db"),
            Some(LinkName {
                client: "order",
                server: "orders-db"
            })
        );
        assert_eq!(LinkName::parse("redis"), None);
        assert_eq!(LinkName::parse("->x"), None);
        assert_eq!(LinkName::parse("a->b->c"), None);
    }

    #[test]
    fn a_partition_cuts_exactly_the_links_between_its_sides() {
        let known = parts(LINKS);
        let p = Partition::parse(
            "split",
            sides(&[&["order", "orders-db"], &["inventory", "inventory-db"]]),
            CutMode::Hold,
            &known,
        )
        .expect("valid");
        let cut: Vec<_> = LINKS.into_iter().filter(|l| p.cuts(l)).collect();
        // kafka is on no side: both services keep their broker link.
        assert_eq!(cut, ["order->inventory"]);
        assert!(p.cuts("inventory->order"), "both directions are cut");
        assert!(!p.cuts("toxiproxy-style-name"));
    }

    #[test]
    fn bad_partitions_are_refused_with_every_reason() {
        let known = parts(LINKS);
        let problems = Partition::parse(
            "",
            sides(&[&["order", "nowhere"], &["order"]]),
            CutMode::Reset,
            &known,
        )
        .expect_err("invalid");
        let messages: Vec<_> = problems.iter().map(|p| p.message.clone()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[1].contains("nowhere"));
        assert!(messages[2].contains("order"));
        assert!(
            Partition::parse("one-side", sides(&[&["order"], &[]]), CutMode::Hold, &known).is_err()
        );
    }
}
