//! Zookeeper 的有序节点 — the seed's ZooKeeper lock, step by step:
//!
//! - the lock is a directory, `/distlab/locks/<name>` (a container node: ZooKeeper removes it once empty);
//! - each caller creates an **ephemeral sequential** child `lease-<seq>` in its own ZooKeeper session;
//! - it lists the children: if its node has the lowest sequence it holds the lock, otherwise it watches
//!   **only its predecessor** and repeats when that node goes — so one release wakes one waiter, not all of
//!   them (羊群效应, the herd effect; [`Watch::AllChildren`] exists only to show the difference);
//! - releasing deletes the node; a holder whose session expires (its process died, or paused longer than
//!   the session timeout) loses the node to ZooKeeper itself (会话超时).
//!
//! Each lease has its own session, opened by this service on the holder's behalf, with the lease's TTL as
//! the session timeout (within the server's bounds). While the service runs, it closes the session when the
//! TTL passes without a renewal; if the service dies, ZooKeeper expires the session. The fencing token is
//! the node's `czxid`, the zxid of the transaction that created it: zxids only grow, and holders hold in
//! creation order, so each holder's token exceeds every earlier holder's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;
use zookeeper_client as zk;

use super::{LockError, Waiters};
use crate::lease::{Holder, Lease, LockName, Ttl, expires_in};

/// Prefix of every lease node's name; ZooKeeper appends the ten-digit sequence.
const NODE_PREFIX: &str = "lease-";
/// Session timeouts are kept within what the local ZooKeeper accepts (`minSessionTimeout`,
/// `maxSessionTimeout` of the stack's zoo.cfg); the service-side TTL timer handles the exact expiry.
const MIN_SESSION: Duration = Duration::from_secs(1);
const MAX_SESSION: Duration = Duration::from_secs(60);

/// What a waiter watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// The seed's way: only the node just before mine.
    Predecessor,
    /// The herd: every change of the lock's children wakes every waiter.
    AllChildren,
}

/// What a lease node stores.
#[derive(Debug, Serialize, Deserialize)]
struct NodeData {
    lease_id: Uuid,
    owner: String,
}

#[derive(Debug)]
struct HeldLease {
    name: LockName,
    client: zk::Client,
    path: String,
    token: u64,
    deadline: watch::Sender<Instant>,
}

/// The ZooKeeper backend.
#[derive(Debug, Clone)]
pub struct ZkLocks {
    cluster: String,
    root: String,
    watch: Watch,
    detached: bool,
    leases: Arc<Mutex<HashMap<Uuid, HeldLease>>>,
    made: Arc<Mutex<HashSet<String>>>,
    waiters: Waiters,
    observer: Arc<tokio::sync::Mutex<Option<zk::Client>>>,
}

fn zk_error(error: zk::Error) -> LockError {
    match error {
        zk::Error::ConnectionLoss
        | zk::Error::SessionExpired
        | zk::Error::NoHosts
        | zk::Error::Timeout
        | zk::Error::ClientClosed => {
            LockError::Unavailable(format!("zookeeper is not answering: {error}"))
        }
        other => LockError::Internal(anyhow::anyhow!("zookeeper: {other}")),
    }
}

impl ZkLocks {
    /// `cluster` as ZooKeeper clients write it (`127.0.0.1:12181`), `root` the directory of all locks.
    pub fn new(cluster: &str, root: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            root: root.trim_end_matches('/').to_owned(),
            watch: Watch::Predecessor,
            detached: false,
            leases: Arc::default(),
            made: Arc::default(),
            waiters: Waiters::default(),
            observer: Arc::default(),
        }
    }

    /// Waiters watch with `watch` (tests show the herd effect with [`Watch::AllChildren`]).
    pub fn with_watch(mut self, watch: Watch) -> Self {
        self.watch = watch;
        self
    }

    /// Sessions outlive a dropped lease, as a crashed holder's would: see [`Self::abandon`].
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    pub fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    fn dir(&self, name: &LockName) -> String {
        format!("{}/{name}", self.root)
    }

    async fn connect(&self, session: Duration) -> Result<zk::Client, LockError> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(session.clamp(MIN_SESSION, MAX_SESSION))
            .with_fail_eagerly();
        if self.detached {
            connector = connector.with_detached();
        }
        connector.connect(&self.cluster).await.map_err(zk_error)
    }

    /// A long-lived session for reads and for creating lock directories, opened again if it ended (an
    /// outage longer than its timeout expires it).
    async fn observer(&self) -> Result<zk::Client, LockError> {
        let mut observer = self.observer.lock().await;
        if let Some(client) = observer.as_ref().filter(|c| !c.state().is_terminated()) {
            return Ok(client.clone());
        }
        let client = self.connect(Duration::from_secs(30)).await?;
        *observer = Some(client.clone());
        Ok(client)
    }

    async fn ensure_dir(&self, dir: &str) -> Result<(), LockError> {
        if self
            .made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(dir)
        {
            return Ok(());
        }
        // Containers: ZooKeeper deletes a lock's directory once its last lease node is gone, so names used
        // once do not pile up (`acquire` recreates a directory reaped under it).
        let options = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
        match self.observer().await?.mkdir(dir, &options).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(error) => return Err(zk_error(error)),
        }
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_owned());
        Ok(())
    }

    pub async fn acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let deadline = Instant::now() + wait;
        let dir = self.dir(name);
        self.ensure_dir(&dir).await?;
        let client = self.connect(ttl.duration()).await?;
        let lease_id = Uuid::new_v4();
        let data = serde_json::to_vec(&NodeData {
            lease_id,
            owner: owner.to_owned(),
        })
        .map_err(anyhow::Error::from)?;
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let prefix = format!("{dir}/{NODE_PREFIX}");
        let (stat, sequence) = match client.create(&prefix, &data, &options).await {
            Err(zk::Error::NoNode) => {
                // The empty directory was reaped since we made it: make it again, once.
                self.made
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&dir);
                self.ensure_dir(&dir).await?;
                client.create(&prefix, &data, &options).await
            }
            created => created,
        }
        .map_err(zk_error)?;
        let mine = format!("{NODE_PREFIX}{sequence}");
        let path = format!("{dir}/{mine}");
        let mut wakeups = 0;
        let outcome = loop {
            match self.turn(&client, name, &mine, deadline).await {
                Ok(Turn::Mine) => break Ok(()),
                Ok(Turn::Woken) => wakeups += 1,
                Ok(Turn::Again) => {}
                Ok(Turn::TimedOut) => {
                    break Err(LockError::Held {
                        holder: self.holder(name).await.ok().flatten(),
                    });
                }
                Err(error) => break Err(error),
            }
        };
        if let Err(error) = outcome {
            // Give up our place: delete the node; the session closes as `client` drops.
            let _ = client.delete(&path, None).await;
            return Err(error);
        }
        let expires_at = Instant::now() + ttl.duration();
        let (deadline_tx, deadline_rx) = watch::channel(expires_at);
        let lease = Lease {
            lease_id,
            fencing_token: stat.czxid as u64,
            expires_at: expires_in(ttl.duration()),
            holds: 1,
            wakeups,
        };
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                lease_id,
                HeldLease {
                    name: name.clone(),
                    client: client.clone(),
                    path,
                    token: lease.fencing_token,
                    deadline: deadline_tx,
                },
            );
        self.spawn_expiry(lease_id, client.state_watcher(), deadline_rx);
        Ok(lease)
    }

    /// One look at the queue: is it my turn, or what do I wait for?
    async fn turn(
        &self,
        client: &zk::Client,
        name: &LockName,
        mine: &str,
        deadline: Instant,
    ) -> Result<Turn, LockError> {
        let dir = &self.dir(name);
        let (children, watcher) = match self.watch {
            Watch::Predecessor => (client.list_children(dir).await.map_err(zk_error)?, None),
            Watch::AllChildren => {
                let (children, watcher) = client
                    .list_and_watch_children(dir)
                    .await
                    .map_err(zk_error)?;
                (children, Some(watcher))
            }
        };
        let mut queue: Vec<&String> = children
            .iter()
            .filter(|c| c.starts_with(NODE_PREFIX))
            .collect();
        queue.sort();
        let Some(position) = queue.iter().position(|c| *c == mine) else {
            return Err(LockError::Unavailable(
                "our lease node vanished: the zookeeper session expired".into(),
            ));
        };
        if position == 0 {
            return Ok(Turn::Mine);
        }
        let watcher = match watcher {
            Some(all) => all,
            None => {
                let predecessor = format!("{dir}/{}", queue[position - 1]);
                match client
                    .check_and_watch_stat(&predecessor)
                    .await
                    .map_err(zk_error)?
                {
                    (None, _) => return Ok(Turn::Again),
                    (Some(_), watcher) => watcher,
                }
            }
        };
        let _waiting = self.waiters.enter(name.as_str());
        tokio::select! {
            _ = watcher.changed() => Ok(Turn::Woken),
            () = tokio::time::sleep_until(deadline) => Ok(Turn::TimedOut),
        }
    }

    /// Closes the lease's session when its TTL passes without a renewal, and forgets a lease whose
    /// session ended (expired: ZooKeeper already deleted its node).
    fn spawn_expiry(
        &self,
        lease_id: Uuid,
        mut state: zk::StateWatcher,
        mut deadline: watch::Receiver<Instant>,
    ) {
        let leases = self.leases.clone();
        tokio::spawn(async move {
            let lease = loop {
                let until = *deadline.borrow_and_update();
                let ended = tokio::select! {
                    () = tokio::time::sleep_until(until) => false,
                    changed = deadline.changed() => if changed.is_err() { return } else { continue },
                    s = state.changed() => if s.is_terminated() { true } else { continue },
                };
                // Decide under the map's lock, which a renewal also takes: a renewal that got in first wins.
                let mut leases = leases.lock().unwrap_or_else(|p| p.into_inner());
                let renewed = leases
                    .get(&lease_id)
                    .is_some_and(|l| *l.deadline.borrow() > Instant::now());
                if ended || !renewed {
                    break leases.remove(&lease_id);
                }
            };
            if let Some(lease) = lease {
                tracing::info!(lock = %lease.name, %lease_id, "zookeeper lease lapsed; closing its session");
                let _ = lease.client.delete(&lease.path, None).await;
            }
        });
    }

    fn take(&self, name: &LockName, lease_id: Uuid) -> Result<HeldLease, LockError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(&lease_id) {
            Some(lease) if lease.name == *name => {}
            _ => {
                return Err(LockError::NotFound(format!(
                    "lease {lease_id} does not hold lock {name} through this service: it lapsed, \
                     was released, or never existed"
                )));
            }
        }
        leases
            .remove(&lease_id)
            .ok_or_else(|| LockError::NotFound(format!("lease {lease_id} is gone")))
    }

    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Lease, LockError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lease) = leases.get(&lease_id).filter(|l| l.name == *name) else {
            return Err(LockError::NotFound(format!(
                "lease {lease_id} does not hold lock {name} through this service: it lapsed, \
                 was released, or never existed"
            )));
        };
        if lease.client.state().is_terminated() {
            leases.remove(&lease_id);
            return Err(LockError::NotFound(format!(
                "lease {lease_id}'s zookeeper session ended"
            )));
        }
        let _ = lease.deadline.send(Instant::now() + ttl.duration());
        Ok(Lease {
            lease_id,
            fencing_token: lease.token,
            expires_at: expires_in(ttl.duration()),
            holds: 1,
            wakeups: 0,
        })
    }

    pub async fn release(&self, name: &LockName, lease_id: Uuid) -> Result<u32, LockError> {
        let lease = self.take(name, lease_id)?;
        match lease.client.delete(&lease.path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(0),
            Err(error) => Err(zk_error(error)),
        }
        // Dropping `lease` closes its session.
    }

    /// A crashed holder, for tests: forget the lease without deleting its node or closing its session
    /// (with [`Self::detached`] the session then lives on until ZooKeeper expires it).
    pub fn abandon(&self, lease_id: Uuid) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lease_id)
            .is_some()
    }

    pub async fn holder(&self, name: &LockName) -> Result<Option<Holder>, LockError> {
        let dir = self.dir(name);
        let client = self.observer().await?;
        let children = match client.list_children(&dir).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(error) => return Err(zk_error(error)),
        };
        let Some(first) = children.iter().filter(|c| c.starts_with(NODE_PREFIX)).min() else {
            return Ok(None);
        };
        let path = format!("{dir}/{first}");
        let (data, stat) = match client.get_data(&path).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(error) => return Err(zk_error(error)),
        };
        let node: Option<NodeData> = serde_json::from_slice(&data).ok();
        let expires_at = node.as_ref().and_then(|n| {
            let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases.get(&n.lease_id).map(|l| {
                let left = l
                    .deadline
                    .borrow()
                    .saturating_duration_since(Instant::now());
                expires_in(left)
            })
        });
        Ok(Some(Holder {
            owner: node.map(|n| n.owner).unwrap_or_default(),
            fencing_token: stat.czxid as u64,
            expires_at,
        }))
    }

    pub async fn ping(&self) -> Result<(), LockError> {
        self.observer()
            .await?
            .check_stat("/")
            .await
            .map(|_| ())
            .map_err(zk_error)
    }
}

enum Turn {
    Mine,
    Woken,
    Again,
    TimedOut,
}
