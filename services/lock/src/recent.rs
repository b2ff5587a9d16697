//! The lock names this service instance granted lately, per backend: what `GET /locks` looks up.
//!
//! None of the four stores can be asked "which locks are held?" cheaply and in the same way (a Redis scan,
//! a ZooKeeper tree walk, a table), and a listing must never slow the locks down. So the instance remembers
//! the names it granted (the last [`Recent::CAPACITY`]), and a listing asks each backend who holds each of
//! them now — the holder is always the store's answer. A lock taken only through another instance is not
//! listed here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::lease::{Backend, LockName};

/// One remembered name, with the number of the grant that noted it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    pub backend: Backend,
    pub name: LockName,
    /// Grows with every [`Recent::note`]: a listing forgets a name only if no grant noted it again since.
    pub seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Most recently granted first.
    names: VecDeque<Noted>,
    next_seq: u64,
}

/// The names granted lately (shared by every handler).
#[derive(Debug, Clone, Default)]
pub struct Recent(Arc<Mutex<Inner>>);

impl Recent {
    /// How many names are remembered; the oldest grant is forgotten first.
    pub const CAPACITY: usize = 256;

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The list is never left half-changed by a panic: take it anyway.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A lease on `name` was granted (or renewed) through `backend`.
    pub fn note(&self, backend: Backend, name: &LockName) {
        let mut inner = self.inner();
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner
            .names
            .retain(|n| !(n.backend == backend && n.name == *name));
        inner.names.push_front(Noted {
            backend,
            name: name.clone(),
            seq,
        });
        inner.names.truncate(Self::CAPACITY);
    }

    /// The remembered names of `backend` (all backends when `None`), most recently granted first.
    pub fn list(&self, backend: Option<Backend>) -> Vec<Noted> {
        self.inner()
            .names
            .iter()
            .filter(|n| backend.is_none_or(|b| b == n.backend))
            .cloned()
            .collect()
    }

    /// Forgets a name a listing found free, unless a grant noted it again after the listing read it.
    pub fn forget(&self, noted: &Noted) {
        self.inner().names.retain(|n| {
            !(n.backend == noted.backend && n.name == noted.name && n.seq == noted.seq)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> LockName {
        LockName::parse(text).expect("a valid name")
    }

    #[test]
    fn names_are_listed_most_recent_first_once_each_and_by_backend() {
        let recent = Recent::default();
        recent.note(Backend::Pg, &name("a"));
        recent.note(Backend::Redis, &name("a"));
        recent.note(Backend::Pg, &name("b"));
        recent.note(Backend::Pg, &name("a"));
        let all: Vec<(Backend, String)> = recent
            .list(None)
            .into_iter()
            .map(|n| (n.backend, n.name.to_string()))
            .collect();
        assert_eq!(
            all,
            [
                (Backend::Pg, "a".to_owned()),
                (Backend::Pg, "b".to_owned()),
                (Backend::Redis, "a".to_owned()),
            ]
        );
        assert_eq!(recent.list(Some(Backend::Redis)).len(), 1);
        assert!(recent.list(Some(Backend::Zookeeper)).is_empty());
    }

    #[test]
    fn the_oldest_grant_is_forgotten_past_the_capacity() {
        let recent = Recent::default();
        for i in 0..=Recent::CAPACITY {
            recent.note(Backend::Redis, &name(&format!("n{i}")));
        }
        let listed = recent.list(None);
        assert_eq!(listed.len(), Recent::CAPACITY);
        assert!(listed.iter().all(|n| n.name.as_str() != "n0"));
        assert_eq!(listed[0].name.as_str(), format!("n{}", Recent::CAPACITY));
    }

    #[test]
    fn a_listing_forgets_a_free_name_but_not_one_granted_again_since_it_looked() {
        let recent = Recent::default();
        recent.note(Backend::Pg, &name("free"));
        recent.note(Backend::Pg, &name("taken-again"));
        let seen = recent.list(None);
        // Granted again while the listing was asking the backend.
        recent.note(Backend::Pg, &name("taken-again"));
        for noted in &seen {
            recent.forget(noted);
        }
        let left: Vec<String> = recent
            .list(None)
            .into_iter()
            .map(|n| n.name.to_string())
            .collect();
        assert_eq!(left, ["taken-again"]);
    }
}
