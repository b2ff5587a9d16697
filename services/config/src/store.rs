//! Durable storage of a node: the Raft log and vote in [redb](https://www.redb.org), the state machine in
//! memory with its snapshot in a file.
//!
//! - **Log and vote** (`raft.redb`): one redb write transaction per `append`, committed with
//!   `Durability::Immediate` (fsync) before openraft is told the entries are flushed. A leader counts an
//!   entry as replicated on a follower only once that follower has answered, and followers answer only after
//!   this fsync, so an acknowledged write is on disk on a majority, as with etcd. openraft hands `append`
//!   every entry that queued up while the previous fsync ran, so fsyncs are batched across writes under load.
//!   The commit index is kept in memory and written with the next append (it is only a hint for replaying
//!   the log at start-up: a lower one after a crash is re-learned from the leader).
//! - **State machine**: the [`KvState`] in memory. On start it is restored from the last snapshot and openraft
//!   re-applies the committed log after it, so nothing applied is lost.
//! - **Snapshots** (`snapshot.json`): written to a temporary file, fsynced and renamed over the old one.
//!   After a snapshot openraft purges the log up to it (keeping a tail), which is the log compaction.
//!
//! redb was chosen over RocksDB (a C++ build of several minutes, far more than a log needs) and sled (no
//! stable release for years): it is pure Rust, ACID, crash-safe with checksummed commits, and maintained.

// openraft's storage API returns its own (large) StorageError.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::kv::{KvSnapshot, KvState, Outcomes};
use crate::raft::{NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

fn io_err(e: impl std::error::Error + 'static) -> StorageIOError<NodeId> {
    StorageIOError::write(&e)
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(e).into()
}

/// The Raft log and vote, in one redb file. Cheap to clone (the reader openraft asks for is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last commit index openraft reported (for `/v1/cluster`).
    committed: Arc<AtomicU64>,
    /// The same as a log id, written durably with the next append.
    committed_id: Arc<std::sync::Mutex<Option<LogId<NodeId>>>>,
    /// The newest entries (at most [`TAIL_CACHE`]), a contiguous tail of the log: replication reads what
    /// was just appended, and is served from here instead of decoding it back from redb.
    tail: Arc<RwLock<BTreeMap<u64, Entry<TypeConfig>>>>,
}

/// How many of the newest log entries [`LogStore`] keeps in memory.
const TAIL_CACHE: usize = 4_096;

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("raft.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let mut tail = BTreeMap::new();
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            for row in table.iter()?.rev().take(TAIL_CACHE) {
                let (index, bytes) = row?;
                tail.insert(index.value(), serde_json::from_slice(bytes.value())?);
            }
        }
        Ok(Self {
            db: Arc::new(db),
            committed: Arc::new(AtomicU64::new(0)),
            committed_id: Arc::default(),
            tail: Arc::new(RwLock::new(tail)),
        })
    }

    fn tail_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.tail.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tail_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.tail.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The commit index this node knows of.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn read_meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        let Some(bytes) = table.get(name).map_err(read_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(read_err)
    }

    /// Writes a metadata value durably (fsync; redb's default).
    async fn write_meta<T: Serialize>(&self, name: &'static str, value: &T) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(name, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// Runs redb work (which may fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> StorageResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(write_err),
        Err(join) => Err(write_err(join)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(i) => *i,
            std::ops::Bound::Excluded(i) => i.saturating_add(1),
            std::ops::Bound::Unbounded => 0,
        };
        {
            let tail = self.tail_read();
            if tail
                .first_key_value()
                .is_some_and(|(first, _)| *first <= start)
            {
                return Ok(tail.range(range).map(|(_, e)| e.clone()).collect());
            }
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let mut entries = Vec::new();
        for row in table.range(range).map_err(read_err)? {
            let (_, bytes) = row.map_err(read_err)?;
            entries.push(serde_json::from_slice(bytes.value()).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            match table.last().map_err(read_err)? {
                Some((_, bytes)) => {
                    let entry: Entry<TypeConfig> =
                        serde_json::from_slice(bytes.value()).map_err(read_err)?;
                    Some(entry.log_id)
                }
                None => None,
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        if let Some(log_id) = &committed {
            self.committed.store(log_id.index, Ordering::Relaxed);
        }
        // Kept in memory; the next append writes it, in its transaction. It is only a hint for replaying
        // the log at start-up, so no write (and no wait for one) on the commit path.
        *self.committed_id.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let committed: Option<Option<LogId<NodeId>>> = self.read_meta(COMMITTED)?;
        let committed = committed.flatten();
        if let Some(log_id) = &committed {
            self.committed.store(log_id.index, Ordering::Relaxed);
        }
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let committed = *self.committed_id.lock().unwrap_or_else(|p| p.into_inner());
        let committed = serde_json::to_vec(&committed).map_err(write_err)?;
        let mut rows = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            rows.push((
                entry.log_id.index,
                serde_json::to_vec(&entry).map_err(write_err)?,
            ));
            appended.push(entry);
        }
        let db = self.db.clone();
        let result = blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            txn.open_table(META)?
                .insert(COMMITTED, committed.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await;
        match result {
            Ok(()) => {
                let mut tail = self.tail_write();
                for entry in appended {
                    tail.insert(entry.log_id.index, entry);
                }
                while tail.len() > TAIL_CACHE {
                    tail.pop_first();
                }
                drop(tail);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.tail_write().split_off(&log_id.index);
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        {
            let mut tail = self.tail_write();
            *tail = tail.split_off(&(log_id.index + 1));
        }
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// What the state machine holds, shared with the HTTP handlers (reads, watches).
#[derive(Debug)]
pub struct Applied {
    pub kv: KvState,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
}

/// The state machine as the client API sees it: read it, or subscribe to its changes.
#[derive(Debug, Clone)]
pub struct SharedState {
    applied: Arc<RwLock<Applied>>,
    /// Bumped after every applied batch and every snapshot installed: a wake-up for watchers, which then
    /// look at the history themselves.
    changes: Arc<watch::Sender<u64>>,
}

impl SharedState {
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        let guard = self
            .applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Applied) -> T) -> T {
        let mut guard = self
            .applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Wakes up whenever the state machine changed. Subscribe before reading the history, so that
    /// nothing falls between.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A snapshot file: the state machine at `meta.last_log_id`.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: KvSnapshot,
}

/// openraft's view of the state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: SharedState,
    dir: PathBuf,
    snapshot_seq: Arc<AtomicU64>,
    /// Held while a snapshot file is written: openraft builds snapshots in a task of its own, so a build
    /// and an install from the leader may overlap. The older one must not replace the newer one.
    snapshot_file: Arc<tokio::sync::Mutex<Option<LogId<NodeId>>>>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, restored from its snapshot if there is one.
    pub fn open(dir: &Path, history_limit: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut applied = Applied {
            kv: KvState::new(history_limit),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        let mut on_disk = None;
        if let Some(file) = read_snapshot_file(&dir.join("snapshot.json"))? {
            on_disk = file.meta.last_log_id;
            applied.kv.restore(file.data);
            applied.last_applied = file.meta.last_log_id;
            applied.membership = file.meta.last_membership;
        }
        Ok(Self {
            shared: SharedState {
                applied: Arc::new(RwLock::new(applied)),
                changes: Arc::new(watch::Sender::new(0)),
            },
            dir: dir.to_owned(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshot_file: Arc::new(tokio::sync::Mutex::new(on_disk)),
        })
    }

    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }

    /// Writes `file` as the snapshot, unless the one on disk is newer: then that one is returned, and
    /// `false`.
    async fn save_snapshot(
        &self,
        file: SnapshotFile,
    ) -> StorageResult<(SnapshotFile, Vec<u8>, bool)> {
        let mut on_disk = self.snapshot_file.lock().await;
        if *on_disk > file.meta.last_log_id {
            let path = self.snapshot_path();
            let bytes = tokio::fs::read(&path).await.map_err(read_err)?;
            let newer: SnapshotFile = serde_json::from_slice(&bytes).map_err(read_err)?;
            return Ok((newer, bytes, false));
        }
        let bytes = serde_json::to_vec(&file).map_err(write_err)?;
        let path = self.snapshot_path();
        let dir = self.dir.clone();
        let to_write = bytes.clone();
        let written =
            tokio::task::spawn_blocking(move || write_atomically(&dir, &path, &to_write)).await;
        match written {
            Ok(Ok(())) => {
                *on_disk = file.meta.last_log_id;
                Ok((file, bytes, true))
            }
            Ok(Err(e)) => Err(write_err(e)),
            Err(e) => Err(write_err(e)),
        }
    }
}

fn read_snapshot_file(path: &Path) -> anyhow::Result<Option<SnapshotFile>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file, never a torn one.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_log_id, membership) = self
            .shared
            .read(|a| (a.kv.snapshot(), a.last_applied, a.membership.clone()));
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("none-{seq}"),
        };
        let file = SnapshotFile {
            meta: SnapshotMeta {
                last_log_id,
                last_membership: membership,
                snapshot_id,
            },
            data,
        };
        let (file, bytes, _) = self.save_snapshot(file).await?;
        tracing::info!(
            index = last_log_id.map_or(0, |l| l.index),
            bytes = bytes.len(),
            "snapshot built"
        );
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        Ok(self.shared.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcomes>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (outcomes, changes) = self.shared.write(|a| {
            let mut outcomes = Vec::new();
            let mut changes = false;
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => outcomes.push(Outcomes::default()),
                    EntryPayload::Membership(membership) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), membership);
                        outcomes.push(Outcomes::default());
                    }
                    EntryPayload::Normal(proposal) => {
                        let mut applied = Vec::with_capacity(proposal.0.len());
                        for command in proposal.0 {
                            let (outcome, change) = a.kv.apply(command);
                            changes |= change.is_some();
                            applied.push(outcome);
                        }
                        outcomes.push(Outcomes(applied));
                    }
                }
            }
            (outcomes, changes)
        });
        if changes {
            self.shared.notify();
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let received: SnapshotFile =
            serde_json::from_slice(snapshot.get_ref()).map_err(read_err)?;
        let data = received.data;
        let file = SnapshotFile {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save_snapshot(file).await?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.shared.write(|a| {
            a.kv.restore(data);
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        });
        // Watchers behind the snapshot must learn that the history restarted (they get `compacted`).
        self.shared.notify();
        tracing::info!(index, "snapshot installed from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let path = self.snapshot_path();
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(read_err)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! openraft's own storage suite (`openraft::testing::Suite`): every rule its Raft core relies on —
    //! vote persistence, log reads and truncation, purge, membership from log and state machine, snapshot
    //! build and install — checked on this node's redb log and state machine, each case in a fresh
    //! temporary directory.

    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;

    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(write_err)?;
            let log = LogStore::open(&dir.path().join("log"))
                .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
            let state = StateMachine::open(&dir.path().join("state"), 1_000)
                .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
            Ok((dir, log, state))
        }
    }

    #[test]
    fn the_redb_log_and_the_state_machine_pass_openraft_s_storage_suite() {
        Suite::test_all(OnDisk).expect("every case of the suite passes");
    }
}
